internal import CMicroHTTPD
import Foundation
import Synchronization

/// An HTTP request as the handler sees it. Header names are lowercase; query values are URL-decoded.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query string, e.g. `/v1/reservations`.
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    public var body: [UInt8]
    /// True when the body was larger than the server's limit (the body is then empty).
    public var bodyTooLarge: Bool
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON response with `Content-Type: application/json`.
    public static func json(_ status: Int, _ text: String) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")], body: Array(text.utf8))
    }
}

/// Settings of the server. Defaults are stated per field.
public struct HTTPServerConfiguration: Sendable {
    /// IPv4 address to listen on, default `127.0.0.1`.
    public var host = "127.0.0.1"
    /// TCP port, default 8080.
    public var port = 8080
    /// Worker threads answering requests (libmicrohttpd thread pool), default 4.
    public var threads = 4
    /// Largest request body accepted, bytes (default 64 KiB); larger bodies get `bodyTooLarge`.
    public var maxBodyBytes = 64 * 1024
    /// Idle connections (keep-alive included) are closed after this many seconds, default 30.
    public var connectionTimeoutSeconds = 30
    /// Most open connections, default 1024.
    public var maxConnections = 1024

    public init() {}
}

public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// A libmicrohttpd daemon with an internal thread pool, calling `handler` on its worker threads
/// (so the handler may block). Keep-alive, request-size and time limits come from the configuration.
public final class HTTPServer: @unchecked Sendable {
    public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

    public let configuration: HTTPServerConfiguration
    private let context: ServerContext
    private var daemon: OpaquePointer?
    /// The port actually bound.
    public private(set) var port: Int = 0

    public init(_ configuration: HTTPServerConfiguration, handler: @escaping Handler) throws {
        self.configuration = configuration
        self.context = ServerContext(handler: handler, maxBody: configuration.maxBodyBytes)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(configuration.port).bigEndian)
        guard inet_pton(AF_INET, configuration.host, &addr.sin_addr) == 1 else {
            throw HTTPServerError(message: "listen address must be an IPv4 address, got '\(configuration.host)'")
        }
        // MHD_USE_INTERNAL_POLLING_THREAD (8) | MHD_USE_EPOLL (512) | MHD_USE_ITC (1024, needed by quiesce)
        // | MHD_USE_TURBO (4096: fewer syscalls per connection; measured ~20 % more requests/s here).
        // MHD_FLAG's members do not import as Swift names.
        let flags: UInt32 = 8 | 512 | 1024 | 4096
        let cls = Unmanaged.passUnretained(context).toOpaque()
        let completed: MHD_RequestCompletedCallback = Callbacks.completed
        let addrPointer = UnsafeMutablePointer<sockaddr_in>.allocate(capacity: 1)
        defer { addrPointer.deallocate() }
        addrPointer.initialize(to: addr)
        let sa = UnsafeRawPointer(addrPointer)
        let completedPointer = unsafeBitCast(completed, to: UnsafeRawPointer.self)
        var options: [CVarArg] = []
        options += [MHD_OPTION.SOCK_ADDR.rawValue, OpaquePointer(sa)]
        options += [MHD_OPTION.THREAD_POOL_SIZE.rawValue, UInt32(configuration.threads)]
        options += [MHD_OPTION.CONNECTION_TIMEOUT.rawValue, UInt32(configuration.connectionTimeoutSeconds)]
        options += [MHD_OPTION.CONNECTION_LIMIT.rawValue, UInt32(configuration.maxConnections)]
        options += [MHD_OPTION.NOTIFY_COMPLETED.rawValue, OpaquePointer(completedPointer), OpaquePointer(cls)]
        // SO_REUSEADDR, so a restarted server binds while old connections linger in TIME_WAIT.
        options += [MHD_OPTION.LISTENING_ADDRESS_REUSE.rawValue, UInt32(1)]
        options.append(MHD_OPTION.END.rawValue)
        let access: MHD_AccessHandlerCallback = Callbacks.access
        let listenPort = UInt16(configuration.port)
        daemon = withVaList(options) { args in
            MHD_start_daemon_va(flags, listenPort, nil, nil, access, cls, args)
        }
        guard daemon != nil else {
            throw HTTPServerError(message: "cannot listen on \(configuration.host):\(configuration.port) (in use, or not permitted)")
        }
        port = configuration.port
    }

    /// Requests being answered right now.
    public var inFlight: Int { context.inFlight.load(ordering: .relaxed) }

    /// Stops accepting connections, waits up to `graceSeconds` for requests in flight, then stops.
    public func stop(graceSeconds: Double = 10) {
        guard let daemon else { return }
        _ = MHD_quiesce_daemon(daemon)
        let end = Date().addingTimeInterval(graceSeconds)
        while context.inFlight.load(ordering: .relaxed) > 0, Date() < end { Thread.sleep(forTimeInterval: 0.01) }
        MHD_stop_daemon(daemon)
        self.daemon = nil
    }

    deinit { stop(graceSeconds: 0) }
}

/// What the C callbacks reach through their `cls` pointer.
final class ServerContext: @unchecked Sendable {
    let handler: HTTPServer.Handler
    let maxBody: Int
    let inFlight = Atomic<Int>(0)

    init(handler: @escaping HTTPServer.Handler, maxBody: Int) {
        self.handler = handler
        self.maxBody = maxBody
    }
}

/// Per-request state kept across the access-handler calls that deliver the body.
final class RequestState {
    var body: [UInt8] = []
    var tooLarge = false
}

/// The C callbacks. They live in a type of their own (not in top-level code), so they are nonisolated and
/// safe to run on libmicrohttpd's worker threads.
enum Callbacks {
    static let access: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadSize, conCls in
        guard let cls, let connection, let conCls, let uploadSize else { return MHD_Result.NO }
        let server = Unmanaged<ServerContext>.fromOpaque(cls).takeUnretainedValue()
        // First call: headers only. Allocate the body buffer.
        guard let raw = conCls.pointee else {
            conCls.pointee = Unmanaged.passRetained(RequestState()).toOpaque()
            return MHD_Result.YES
        }
        let state = Unmanaged<RequestState>.fromOpaque(raw).takeUnretainedValue()
        if uploadSize.pointee > 0 {
            if !state.tooLarge, let uploadData {
                if state.body.count + uploadSize.pointee > server.maxBody {
                    state.tooLarge = true
                    state.body = []
                } else {
                    state.body.append(contentsOf: UnsafeRawBufferPointer(start: uploadData, count: uploadSize.pointee))
                }
            }
            uploadSize.pointee = 0
            return MHD_Result.YES
        }
        // Last call: the whole request is here.
        server.inFlight.add(1, ordering: .relaxed)
        defer { server.inFlight.subtract(1, ordering: .relaxed) }
        let fullURL = url.map { String(cString: $0) } ?? "/"
        let path = String(fullURL.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "/")
        let request = HTTPRequest(
            method: method.map { String(cString: $0) } ?? "GET", path: path,
            query: values(connection, MHD_ValueKind.GET_ARGUMENT_KIND, lowercase: false),
            headers: values(connection, MHD_ValueKind.HEADER_KIND, lowercase: true),
            body: state.body, bodyTooLarge: state.tooLarge)
        let response = server.handler(request)
        return send(response, on: connection)
    }

    static let completed: MHD_RequestCompletedCallback = { _, _, conCls, _ in
        guard let conCls, let raw = conCls.pointee else { return }
        Unmanaged<RequestState>.fromOpaque(raw).release()
        conCls.pointee = nil
    }

    static func send(_ response: HTTPResponse, on connection: OpaquePointer) -> MHD_Result {
        var body = response.body
        let r = body.withUnsafeMutableBytes { buf in
            MHD_create_response_from_buffer(buf.count, buf.baseAddress, MHD_ResponseMemoryMode.RESPMEM_MUST_COPY)
        }
        guard let r else { return MHD_Result.NO }
        defer { MHD_destroy_response(r) }
        for (name, value) in response.headers { _ = MHD_add_response_header(r, name, value) }
        return MHD_queue_response(connection, UInt32(response.status), r)
    }

    /// Collects a kind of connection values (headers or query arguments) into a dictionary.
    static func values(_ connection: OpaquePointer, _ kind: MHD_ValueKind, lowercase: Bool) -> [String: String] {
        final class Box { var values: [String: String] = [:]; var lowercase = false }
        let box = Box()
        box.lowercase = lowercase
        let iterator: MHD_KeyValueIterator = { cls, _, key, value in
            guard let cls, let key else { return MHD_Result.YES }
            let b = Unmanaged<Box>.fromOpaque(cls).takeUnretainedValue()
            let k = String(cString: key)
            b.values[b.lowercase ? k.lowercased() : k] = value.map { String(cString: $0) } ?? ""
            return MHD_Result.YES
        }
        withExtendedLifetime(box) {
            _ = MHD_get_connection_values(connection, kind, iterator, Unmanaged.passUnretained(box).toOpaque())
        }
        return box.values
    }
}
