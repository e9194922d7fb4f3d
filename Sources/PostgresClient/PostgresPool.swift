import Synchronization

/// A small pool of Postgres connections that threads and tasks share: each call borrows one exclusively.
/// Connections are opened on demand; broken ones are dropped instead of returned.
public final class PostgresPool: Sendable {
    public let configuration: PostgresConfiguration
    private let idle = Mutex<[PostgresConnection]>([])
    private let maxIdle: Int

    /// - Parameter maxIdle: connections kept open between uses (default 4).
    public init(_ configuration: PostgresConfiguration, maxIdle: Int = 4) {
        self.configuration = configuration
        self.maxIdle = maxIdle
    }

    /// Runs `body` with a connection of its own.
    public func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let conn = try idle.withLock { $0.popLast() } ?? PostgresConnection(configuration)
        defer {
            if conn.isConnected { idle.withLock { if $0.count < maxIdle { $0.append(conn) } } }
        }
        return try body(conn)
    }

    /// Runs one statement on a pooled connection.
    @discardableResult
    public func query(_ sql: String, _ binds: [any PostgresBindable] = []) throws -> PostgresRows {
        try withConnection { try $0.query(sql, binds) }
    }

    /// Runs `body` in a transaction on a pooled connection.
    public func withTransaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try withConnection { try $0.withTransaction(body) }
    }
}
