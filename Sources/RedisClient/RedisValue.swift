/// One reply from Redis, decoded from hiredis into plain Swift values.
public enum RedisValue: Sendable, Hashable, CustomStringConvertible {
    /// A bulk string: binary-safe bytes.
    case bulk([UInt8])
    /// A simple status reply such as `OK`.
    case status(String)
    case integer(Int64)
    case array([RedisValue])
    case null
    /// An error reply, e.g. `WRONGTYPE Operation against a key holding the wrong kind of value`.
    case error(String)

    /// The value as text: bulk strings (as UTF-8), statuses and integers; `nil` otherwise.
    public var string: String? {
        switch self {
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    /// The value as an integer: integer replies and bulk strings holding a decimal integer.
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    public var array: [RedisValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// Throws the error reply as a `RedisError`, or returns the value.
    @discardableResult
    public func orThrow() throws(RedisError) -> RedisValue {
        if case .error(let message) = self { throw RedisError(serverReply: message) }
        return self
    }

    public var description: String {
        switch self {
        case .bulk(let b): return "\"\(String(decoding: b, as: UTF8.self))\""
        case .status(let s): return s
        case .integer(let i): return "(integer) \(i)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .null: return "(nil)"
        case .error(let e): return "(error) \(e)"
        }
    }
}

/// A failure talking to Redis. Switch on `code`; `message` is for people and never holds a password.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The server could not be reached (refused, unknown host, connect timeout).
        case connectionFailed
        /// A command got no reply within the command timeout.
        case timeout
        /// The connection broke (EOF, reset, protocol error). The next call reconnects.
        case connectionLost
        /// Redis answered with an error reply; `serverCode` holds its first word (`WRONGTYPE`, `NOSCRIPT`, ...).
        case server
        /// The configuration (URL) is invalid.
        case badConfiguration
    }

    public var code: Code
    public var message: String
    /// For `.server` errors: the error prefix, such as `WRONGTYPE`, `NOSCRIPT`, `ERR`.
    public var serverCode: String?

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
        self.serverCode = nil
    }

    public init(serverReply: String) {
        self.code = .server
        self.message = serverReply
        let first = serverReply.split(separator: " ", maxSplits: 1).first.map(String.init) ?? "ERR"
        self.serverCode = first.allSatisfy({ $0.isUppercase || $0 == "_" }) ? first : "ERR"
    }

    public var description: String { "Redis: \(message)" }
}
