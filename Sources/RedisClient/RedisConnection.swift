internal import CHiredis
import Foundation

/// One blocking connection to Redis over hiredis. Used by one thread at a time (the pool ensures it); it may
/// move between threads, hence `@unchecked Sendable`.
///
/// A connection that breaks (timeout, EOF, protocol error) is closed; the next call reconnects once.
public final class RedisConnection: @unchecked Sendable {
    public let configuration: RedisConfiguration
    private var context: UnsafeMutablePointer<redisContext>?

    /// Connects, authenticates and selects the database. Throws `.connectionFailed` within the connect timeout.
    public init(_ configuration: RedisConfiguration) throws(RedisError) {
        self.configuration = configuration
        try connect()
    }

    deinit {
        if let context { redisFree(context) }
    }

    /// Whether the connection is currently open (it reconnects on the next call if not).
    public var isConnected: Bool { context != nil }

    // MARK: Commands

    /// Sends one command and waits for its reply. Error replies come back as `.error`;
    /// use `send(_:)` to have them thrown.
    public func sendRaw(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        try pipelineRaw([command])[0]
    }

    /// Sends one command; an error reply is thrown as a `.server` `RedisError`.
    @discardableResult
    public func send(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        try sendRaw(command).orThrow()
    }

    /// Convenience for text arguments: `try conn.send("SET", "k", "v")`.
    @discardableResult
    public func send(_ args: String...) throws(RedisError) -> RedisValue {
        try send(RedisCommand(args))
    }

    /// Sends many commands in one round trip and returns their replies in order. Error replies are
    /// returned as `.error` values, one per failed command; a broken connection throws.
    public func pipelineRaw(_ commands: [RedisCommand]) throws(RedisError) -> [RedisValue] {
        if commands.isEmpty { return [] }
        let ctx = try ensureConnected()
        for command in commands {
            let rc = withArgv(command.arguments) { argc, argv, lens in
                redisAppendCommandArgv(ctx, argc, argv, lens)
            }
            if rc != REDIS_OK { throw fail() }
        }
        var replies: [RedisValue] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil { throw fail() }
            defer { freeReplyObject(raw) }
            replies.append(Self.decode(raw!.assumingMemoryBound(to: redisReply.self)))
        }
        return replies
    }

    /// Sends one command and hands its raw reply to `decode` (freed right after). For decoders in this
    /// module that skip the generic reply tree.
    func sendDecoding<T>(_ command: RedisCommand, _ decode: (UnsafeMutablePointer<redisReply>) -> T) throws(RedisError) -> T {
        let ctx = try ensureConnected()
        let rc = withArgv(command.arguments) { argc, argv, lens in redisAppendCommandArgv(ctx, argc, argv, lens) }
        if rc != REDIS_OK { throw fail() }
        var raw: UnsafeMutableRawPointer?
        if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil { throw fail() }
        defer { freeReplyObject(raw) }
        return decode(raw!.assumingMemoryBound(to: redisReply.self))
    }

    /// Runs a script by its SHA1 (EVALSHA); if Redis does not know it (`NOSCRIPT`), loads it and retries once.
    public func evaluate(_ script: RedisScript, keys: [String], args: [String]) throws(RedisError) -> RedisValue {
        let reply = try sendRaw(script.evalsha(keys: keys, args: args))
        if case .error(let e) = reply, e.hasPrefix("NOSCRIPT") {
            try send(RedisCommand(["SCRIPT", "LOAD", script.source]))
            return try send(script.evalsha(keys: keys, args: args))
        }
        return try reply.orThrow()
    }

    /// Visits every key matching a glob pattern, a batch at a time (SCAN, so Redis is never blocked).
    public func scanKeys(matching pattern: String, batch: Int = 1000, _ body: ([String]) throws -> Void) throws {
        var cursor = "0"
        repeat {
            let reply = try send("SCAN", cursor, "MATCH", pattern, "COUNT", String(batch))
            guard let parts = reply.array, parts.count == 2 else { return }
            cursor = parts[0].string ?? "0"
            let keys = parts[1].array?.compactMap(\.string) ?? []
            if !keys.isEmpty { try body(keys) }
        } while cursor != "0"
    }

    /// Closes the connection; the next call reconnects.
    public func close() {
        if let context { redisFree(context) }
        context = nil
    }

    // MARK: Connection management

    private func ensureConnected() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        if context == nil { try connect() }
        return context!
    }

    private func connect() throws(RedisError) {
        close()
        let tv = Self.timeval(ms: configuration.connectTimeoutMs)
        let ctx: UnsafeMutablePointer<redisContext>?
        switch configuration.endpoint {
        case .tcp(let host, let port): ctx = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): ctx = redisConnectUnixWithTimeout(path, tv)
        }
        guard let ctx else {
            throw RedisError(code: .connectionFailed, message: "cannot allocate a Redis context")
        }
        if ctx.pointee.err != 0 {
            let message = Self.errstr(ctx)
            redisFree(ctx)
            throw RedisError(
                code: .connectionFailed,
                message: "cannot connect to \(configuration): \(message)")
        }
        guard redisSetTimeout(ctx, Self.timeval(ms: configuration.commandTimeoutMs)) == REDIS_OK else {
            redisFree(ctx)
            throw RedisError(code: .connectionFailed, message: "cannot set the command timeout on \(configuration)")
        }
        context = ctx
        var setup: [RedisCommand] = []
        if let password = configuration.password {
            setup.append(RedisCommand(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]))
        }
        if configuration.database != 0 {
            setup.append(RedisCommand(["SELECT", String(configuration.database)]))
        }
        do throws(RedisError) {
            for reply in try pipelineRaw(setup) {
                if case .error(let e) = reply {
                    close()
                    throw RedisError(code: .connectionFailed, message: "Redis at \(configuration) refused setup: \(e)")
                }
            }
        } catch {
            close()
            throw error.code == .connectionFailed ? error
                : RedisError(code: .connectionFailed, message: "cannot set up \(configuration): \(error.message)")
        }
    }

    /// Turns the context's error into a typed error and closes the connection: hiredis contexts
    /// are unusable after an error.
    private func fail() -> RedisError {
        guard let ctx = context else { return RedisError(code: .connectionLost, message: "connection closed") }
        let message = Self.errstr(ctx)
        let err = ctx.pointee.err
        let isTimeout = err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK || message.contains("temporarily unavailable"))
        close()
        if isTimeout {
            return RedisError(
                code: .timeout,
                message: "no reply from \(configuration) within \(configuration.commandTimeoutMs) ms")
        }
        return RedisError(code: .connectionLost, message: "connection to \(configuration) lost: \(message)")
    }

    private static func errstr(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
    }

    private static func timeval(ms: Int) -> Glibc.timeval {
        Glibc.timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
    }

    private static func decode(_ reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulk(Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements { items.append(decode(r.element[i]!)) }
            return .array(items)
        default:
            return .null
        }
    }

    /// Hands hiredis an argv of binary-safe arguments that live for the duration of `body`.
    private func withArgv<R>(
        _ args: [[UInt8]],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        let total = args.reduce(0) { $0 + $1.count }
        var flat = [CChar](repeating: 0, count: max(total, 1))
        var lengths = [Int](repeating: 0, count: args.count)
        var offsets = [Int](repeating: 0, count: args.count)
        var at = 0
        for (i, arg) in args.enumerated() {
            offsets[i] = at
            lengths[i] = arg.count
            for b in arg { flat[at] = CChar(bitPattern: b); at += 1 }
        }
        return flat.withUnsafeBufferPointer { base in
            var argv = offsets.map { Optional(base.baseAddress! + $0) }
            return argv.withUnsafeMutableBufferPointer { argvBuf in
                lengths.withUnsafeBufferPointer { lens in
                    body(Int32(args.count), argvBuf.baseAddress!, lens.baseAddress!)
                }
            }
        }
    }
}

/// A command as binary-safe arguments.
public struct RedisCommand: Sendable, Hashable {
    public var arguments: [[UInt8]]
    /// The script to load when this is an EVALSHA that Redis answers with NOSCRIPT.
    public var script: RedisScript?

    public init(_ arguments: [String]) {
        self.arguments = arguments.map { Array($0.utf8) }
    }

    public init(bytes arguments: [[UInt8]]) {
        self.arguments = arguments
    }
}
