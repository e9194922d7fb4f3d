import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import TollgateCore
@testable import Tollgate

let serviceToken = "service-token-for-tests-0001"
let adminToken = "admin-token-for-tests-00001"

/// A `tollgate serve` child process on its own port.
final class ServeProcess: @unchecked Sendable {
    let port: Int
    let logURL: URL
    var base: String { "http://127.0.0.1:\(port)" }

    init(environment: [String: String], extraArgs: [String] = []) async throws {
        var lastError = ""
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...60_000)
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-serve-\(port)-\(UUID().uuidString).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let p = Process()
            p.executableURL = tollgateBinary()
            p.arguments = ["serve", "--listen", "127.0.0.1:\(port)"] + extraArgs
            var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            env["TOLLGATE_SERVICE_TOKEN"] = serviceToken
            env["TOLLGATE_ADMIN_TOKEN"] = adminToken
            p.environment = env
            p.standardError = try FileHandle(forWritingTo: log)
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            for _ in 0..<100 {
                if !p.isRunning { break }
                if let (status, _) = try? await http("GET", "http://127.0.0.1:\(port)/healthz"), status == 200 {
                    self.port = port
                    self.logURL = log
                    self.child = p
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            lastError = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if p.isRunning { p.terminate() }
        }
        Issue.record("tollgate serve did not start: \(lastError)")
        throw CancellationError()
    }

    private var child: Process?

    /// SIGTERM, then wait; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard let child else { return -1 }
        if child.isRunning { kill(child.processIdentifier, SIGTERM) }
        while child.isRunning { Thread.sleep(forTimeInterval: 0.02) }
        return child.terminationStatus
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    deinit {
        if let child, child.isRunning { kill(child.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: logURL)
    }
}

let httpSession: URLSession = {
    let c = URLSessionConfiguration.ephemeral
    c.httpMaximumConnectionsPerHost = 128
    c.timeoutIntervalForRequest = 30
    return URLSession(configuration: c)
}()

/// One HTTP call; returns the status and the body text.
func http(_ method: String, _ url: String, token: String? = nil, body: String? = nil, bodyBytes: Data? = nil) async throws -> (Int, String) {
    var r = URLRequest(url: URL(string: url)!)
    r.httpMethod = method
    if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    if let body { r.httpBody = Data(body.utf8) }
    if let bodyBytes { r.httpBody = bodyBytes }
    if r.httpBody != nil { r.setValue("application/json", forHTTPHeaderField: "Content-Type") }
    let (data, response) = try await httpSession.data(for: r)
    return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
}

/// The JSON body as a dictionary (or an empty one).
func json(_ text: String) -> [String: JSONValue] {
    if case .object(let o)? = try? JSONValue.parse(text) { return o }
    return [:]
}
