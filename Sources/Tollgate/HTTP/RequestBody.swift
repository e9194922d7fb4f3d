import TollgateCore

/// A JSON request body with typed accessors that produce the 400 messages clients see.
struct RequestBody {
    let fields: [String: JSONValue]

    /// Parses an object body; `allowed` lists the field names accepted (others are an error).
    init(_ bytes: [UInt8], allowed: Set<String>) throws(APIError) {
        if bytes.isEmpty { throw APIError(400, "request body must be a JSON object") }
        let value: JSONValue
        do { value = try JSONValue.parse(bytes) } catch { throw APIError(400, "malformed JSON: \(error.message) at byte \(error.offset)") }
        guard case .object(let o) = value else { throw APIError(400, "request body must be a JSON object") }
        if let unknown = o.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError(400, "unknown field '\(unknown)'")
        }
        fields = o
    }

    func has(_ k: String) -> Bool {
        if let v = fields[k], v != .null { return true }
        return false
    }

    func string(_ k: String) throws(APIError) -> String {
        guard let v = fields[k], v != .null else { throw APIError(400, "\(k) is required") }
        guard case .string(let s) = v else { throw APIError(400, "\(k) must be a string") }
        return s
    }

    func optionalString(_ k: String) throws(APIError) -> String? { has(k) ? try string(k) : nil }

    /// An id: 1...128 bytes, no control characters.
    func id(_ k: String) throws(APIError) -> String {
        let s = try string(k)
        do { return try Validation.id(s, field: k) } catch { throw APIError(400, error.description) }
    }

    func optionalId(_ k: String) throws(APIError) -> String? { has(k) ? try id(k) : nil }

    /// A whole token count from 0 to `Pricing.maxTokens`.
    func tokens(_ k: String) throws(APIError) -> Int64 {
        guard let v = fields[k], v != .null else { throw APIError(400, "\(k) is required") }
        guard case .number(let text) = v else { throw APIError(400, "\(k) must be a number") }
        guard let n = Int64(text) else {
            if text.hasPrefix("-") { throw APIError(400, "\(k) must not be negative") }
            if text.allSatisfy({ $0.isNumber }) { throw APIError(400, "\(k) must be at most \(Pricing.maxTokens)") }
            throw APIError(400, "\(k) must be a whole number")
        }
        do { return try Validation.tokens(n, field: k) } catch { throw APIError(400, error.description) }
    }

    /// USD as a JSON number, read exactly (at most 9 decimals, no exponent).
    func usd(_ k: String) throws(APIError) -> Money {
        guard let v = fields[k], v != .null else { throw APIError(400, "\(k) is required") }
        guard case .number(let text) = v else { throw APIError(400, "\(k) must be a number of USD") }
        guard let m = Money(usd: text) else {
            throw APIError(400, "\(k) must be a plain decimal number of USD with at most 9 decimals")
        }
        if m < .zero { throw APIError(400, "\(k) must not be negative") }
        return m
    }

    func optionalUSD(_ k: String) throws(APIError) -> Money? { has(k) ? try usd(k) : nil }

    func int(_ k: String, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard has(k) else { return nil }
        guard case .number(let text) = fields[k]!, let n = Int(text), range.contains(n) else {
            throw APIError(400, "\(k) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    func bool(_ k: String) throws(APIError) -> Bool? {
        guard has(k) else { return nil }
        guard case .bool(let b) = fields[k]! else { throw APIError(400, "\(k) must be true or false") }
        return b
    }

    /// `metadata`: a JSON object, kept as compact text.
    func metadata() throws(APIError) -> String? {
        guard has("metadata") else { return nil }
        guard case .object = fields["metadata"]! else { throw APIError(400, "metadata must be a JSON object") }
        return fields["metadata"]!.serialized
    }
}

/// An HTTP error answer: status and the `{"error": "..."}` text.
struct APIError: Error {
    var status: Int
    var message: String
    var headers: [(String, String)] = []

    init(_ status: Int, _ message: String, headers: [(String, String)] = []) {
        self.status = status
        self.message = message
        self.headers = headers
    }
}
