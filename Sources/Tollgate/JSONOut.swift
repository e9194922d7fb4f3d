import TollgateCore

/// Builds compact JSON text for output (CLI `--json`, HTTP bodies).
enum JSONOut {
    static func object(_ fields: [String: JSONValue]) -> String { JSONValue.object(fields).serialized }
}

extension JSONValue {
    /// A money amount as an exact decimal JSON number of USD.
    static func usd(_ m: Money) -> JSONValue { .number(m.usd) }
    static func usd(_ m: Money?) -> JSONValue { m.map { .number($0.usd) } ?? .null }
    static func int(_ i: Int64) -> JSONValue { .number(String(i)) }
    static func int(_ i: Int) -> JSONValue { .number(String(i)) }
}
