/// A failure talking to Postgres. `sqlState` carries the server's SQLSTATE (e.g. `23505` for a unique
/// violation) when the server reported one. Messages never contain the connection password.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// Could not connect, or the connection broke. The next call reconnects.
        case connection
        /// The server rejected a statement; see `sqlState`.
        case statement
        /// A value in a row could not be decoded to the asked type.
        case decoding
        /// The configuration (URL, conninfo) is invalid.
        case badConfiguration
    }

    public var code: Code
    public var sqlState: String?
    public var message: String

    public init(code: Code, sqlState: String? = nil, message: String) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
    }

    /// True for `23505`, unique violation.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    public var description: String {
        if let sqlState { return "Postgres [\(sqlState)]: \(message)" }
        return "Postgres: \(message)"
    }
}
