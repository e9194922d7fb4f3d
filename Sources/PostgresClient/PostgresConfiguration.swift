import Foundation

/// How to reach Postgres: a `postgres://` / `postgresql://` URL or a libpq conninfo string
/// (`host=... dbname=...`).
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    /// The connection string handed to libpq.
    public let conninfo: String

    public init(url: String) throws(PostgresError) {
        let trimmed = url.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else {
            throw PostgresError(code: .badConfiguration, message: "empty Postgres URL")
        }
        if trimmed.contains("://") {
            guard let parts = URLComponents(string: trimmed), ["postgres", "postgresql"].contains(parts.scheme ?? "") else {
                throw PostgresError(
                    code: .badConfiguration,
                    message: "not a Postgres URL (want postgres://...): \(Self.redact(trimmed))")
            }
        } else if !trimmed.contains("=") {
            throw PostgresError(
                code: .badConfiguration,
                message: "not a Postgres URL or conninfo: \(Self.redact(trimmed))")
        }
        self.conninfo = trimmed
    }

    /// Reads `DATABASE_URL`, or else `PRIVATE_DATABASE_URL` (the name the app's deployments use).
    /// Returns nil when neither is set.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws(PostgresError) -> PostgresConfiguration? {
        for name in ["DATABASE_URL", "PRIVATE_DATABASE_URL"] {
            if let value = env[name], !value.isEmpty { return try PostgresConfiguration(url: value) }
        }
        return nil
    }

    public var description: String { Self.redact(conninfo) }

    /// Hides the password of a URL (`user:***@`) or of a conninfo (`password=***`).
    public static func redact(_ s: String) -> String {
        if s.contains("://") {
            guard var parts = URLComponents(string: s) else { return "<unparseable URL>" }
            if parts.password != nil { parts.password = "***" }
            if var items = parts.queryItems {
                items = items.map { $0.name == "password" ? URLQueryItem(name: "password", value: "***") : $0 }
                parts.queryItems = items
            }
            return parts.string ?? "<redacted>"
        }
        return s.split(separator: " ").map { $0.hasPrefix("password=") ? "password=***" : String($0) }
            .joined(separator: " ")
    }
}
