import Foundation

/// A value that can be bound to a `$n` parameter (sent as text; `nil` is SQL NULL).
public protocol PostgresBindable: Sendable {
    var postgresText: String? { get }
}

extension String: PostgresBindable { public var postgresText: String? { self } }
extension Int: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int64: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int32: PostgresBindable { public var postgresText: String? { String(self) } }
extension Bool: PostgresBindable { public var postgresText: String? { self ? "t" : "f" } }
extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    public var postgresText: String? { self?.postgresText }
}

/// A value that can be read from a result column (received as text).
public protocol PostgresDecodable {
    init?(postgresText: String)
}

extension String: PostgresDecodable { public init?(postgresText: String) { self = postgresText } }
extension Int: PostgresDecodable { public init?(postgresText: String) { self.init(postgresText) } }
extension Int64: PostgresDecodable { public init?(postgresText: String) { self.init(postgresText) } }
extension Int32: PostgresDecodable { public init?(postgresText: String) { self.init(postgresText) } }
extension Bool: PostgresDecodable {
    public init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

/// Rows of a result, fully read into Swift memory (the libpq result is freed at once).
public struct PostgresRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let cells: [[String?]]
    /// Rows affected, for INSERT/UPDATE/DELETE (`PQcmdTuples`), else 0.
    public let affectedRows: Int

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(i: Int) -> PostgresRow { PostgresRow(columns: columns, cells: cells[i]) }
}

/// One row. Read a column by name: `try row.decode("user_id", as: String.self)`.
public struct PostgresRow: Sendable {
    public let columns: [String]
    let cells: [String?]

    /// The raw text of a column, `nil` for SQL NULL. Traps on an unknown column name (a programming error).
    public subscript(_ column: String) -> String? {
        guard let i = columns.firstIndex(of: column) else { preconditionFailure("no column \(column) in \(columns)") }
        return cells[i]
    }

    public subscript(_ index: Int) -> String? { cells[index] }

    /// Decodes a non-NULL column; a NULL or unparseable value throws `.decoding`.
    public func decode<T: PostgresDecodable>(_ column: String, as: T.Type = T.self) throws(PostgresError) -> T {
        guard let text = self[column] else {
            throw PostgresError(code: .decoding, message: "column \(column) is NULL, expected \(T.self)")
        }
        guard let value = T(postgresText: text) else {
            throw PostgresError(code: .decoding, message: "column \(column) holds '\(text)', not a \(T.self)")
        }
        return value
    }

    /// Decodes a column that may be NULL.
    public func decodeIfPresent<T: PostgresDecodable>(_ column: String, as: T.Type = T.self) throws(PostgresError) -> T? {
        guard self[column] != nil else { return nil }
        return try decode(column, as: T.self)
    }
}
