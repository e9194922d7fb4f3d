import Foundation

/// Where and how to reach Redis.
///
/// Accepts `redis://[[user]:password@]host[:port][/db]` (default port 6379, db 0), `unix:///path/to/socket[?db=N]`,
/// or a bare socket path starting with `/`.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    public var username: String?
    public var password: String?
    /// Database number selected after connecting. Default 0.
    public var database: Int
    /// Connect timeout in milliseconds. Default 2,000.
    public var connectTimeoutMs: Int
    /// Per-command reply timeout in milliseconds. Default 5,000.
    public var commandTimeoutMs: Int

    public init(url: String, connectTimeoutMs: Int = 2_000, commandTimeoutMs: Int = 5_000) throws(RedisError) {
        self.connectTimeoutMs = connectTimeoutMs
        self.commandTimeoutMs = commandTimeoutMs
        self.database = 0
        guard connectTimeoutMs > 0, commandTimeoutMs > 0 else {
            throw RedisError(code: .badConfiguration, message: "Redis timeouts must be positive")
        }
        if url.hasPrefix("/") {
            endpoint = .unix(path: url)
            return
        }
        guard let parts = URLComponents(string: url), let scheme = parts.scheme else {
            throw RedisError(code: .badConfiguration, message: "not a Redis URL: \(Self.redact(url))")
        }
        username = parts.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
        password = parts.password?.removingPercentEncoding
        switch scheme {
        case "redis":
            let host = parts.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
            let port = parts.port ?? 6379
            guard (1...65535).contains(port) else {
                throw RedisError(code: .badConfiguration, message: "Redis port out of range in \(Self.redact(url))")
            }
            endpoint = .tcp(host: host, port: port)
            let path = parts.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else {
                    throw RedisError(code: .badConfiguration, message: "Redis database must be a number in \(Self.redact(url))")
                }
                database = db
            }
        case "unix":
            guard !parts.path.isEmpty else {
                throw RedisError(code: .badConfiguration, message: "unix Redis URL needs a socket path")
            }
            endpoint = .unix(path: parts.path)
            if let db = parts.queryItems?.first(where: { $0.name == "db" })?.value {
                guard let n = Int(db), n >= 0 else {
                    throw RedisError(code: .badConfiguration, message: "Redis database must be a number")
                }
                database = n
            }
        default:
            throw RedisError(code: .badConfiguration, message: "unsupported Redis URL scheme '\(scheme)' (use redis:// or unix://)")
        }
    }

    /// The URL with any password replaced by `***`.
    public var description: String {
        let auth = password == nil ? "" : "\(username ?? ""):***@"
        switch endpoint {
        case .tcp(let host, let port): return "redis://\(auth)\(host):\(port)/\(database)"
        case .unix(let path): return "unix://\(path)?db=\(database)"
        }
    }

    static func redact(_ url: String) -> String {
        guard var parts = URLComponents(string: url), parts.password != nil else { return url }
        parts.password = "***"
        return parts.string ?? "<redacted>"
    }
}
