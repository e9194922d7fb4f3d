/// Model prices, kept exactly: nano-USD per one million tokens, for input and output.
public struct ModelPrice: Sendable, Hashable {
    /// The canonical (OpenRouter) model id, e.g. `anthropic/claude-sonnet-4.5`.
    public var id: String
    /// Display name, e.g. `Claude Sonnet 4.5`.
    public var name: String
    public var aliases: [String]
    /// Price of one million prompt tokens.
    public var inputPerMillion: Money
    /// Price of one million completion tokens.
    public var outputPerMillion: Money

    public init(id: String, name: String, aliases: [String], inputPerMillion: Money, outputPerMillion: Money) {
        self.id = id
        self.name = name
        self.aliases = aliases
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
    }

    /// The cost of a request: `(prompt x input + completion x output) / 1e6`, computed exactly and
    /// rounded once, up, to whole nano-USD.
    public func cost(promptTokens: Int64, completionTokens: Int64) -> Money {
        let raw = Int128(promptTokens) * Int128(inputPerMillion.nanos)
            + Int128(completionTokens) * Int128(outputPerMillion.nanos)
        let (q, r) = raw.quotientAndRemainder(dividingBy: 1_000_000)
        return Money(nanos: Int64(q + (r > 0 ? 1 : 0)))
    }
}

/// A versioned price list, read from JSON (the default one is `ops/pricing.json`, embedded in the binary):
///
/// ```json
/// {"version": "2026-02", "models": [
///   {"id": "anthropic/claude-sonnet-4.5", "name": "Claude Sonnet 4.5", "aliases": ["claude-sonnet-4.5"],
///    "inputPerMillionUsd": "3.00", "outputPerMillionUsd": "15.00"}]}
/// ```
/// Prices are decimal strings so they stay exact.
public struct Pricing: Sendable {
    /// Largest price accepted: $10,000 per million tokens (keeps Lua arithmetic exact).
    public static let maxPricePerMillion = Money(nanos: 10_000 * Money.nanosPerUSD)
    /// Largest token count accepted in one field of one request: 100,000,000.
    public static let maxTokens: Int64 = 100_000_000

    public let version: String
    public let models: [ModelPrice]
    private let byName: [String: ModelPrice]

    public init(version: String, models: [ModelPrice]) throws(TollgateCoreError) {
        guard !version.isEmpty, version.count <= 64 else {
            throw TollgateCoreError.invalid("pricing version must be 1 to 64 characters")
        }
        var index: [String: ModelPrice] = [:]
        for model in models {
            guard Validation.isValidId(model.id) else { throw .invalid("pricing: bad model id '\(model.id)'") }
            for p in [model.inputPerMillion, model.outputPerMillion] where p < .zero || p > Pricing.maxPricePerMillion {
                throw .invalid("pricing: price of \(model.id) must be between $0 and \(Pricing.maxPricePerMillion.usd) per 1M tokens")
            }
            for name in [model.id] + model.aliases {
                if index[name] != nil { throw .invalid("pricing: model name '\(name)' is listed twice") }
                index[name] = model
            }
        }
        guard !models.isEmpty else { throw .invalid("pricing: no models") }
        self.version = version
        self.models = models
        self.byName = index
    }

    /// Finds a model by id or alias.
    public func model(_ name: String) -> ModelPrice? { byName[name] }

    /// Parses the JSON format above; any problem is one readable error.
    public init(json: [UInt8]) throws(TollgateCoreError) {
        guard case .object(let root)? = try? JSONValue.parse(json) else {
            throw .invalid("pricing: not a JSON object")
        }
        guard case .string(let version)? = root["version"] else { throw .invalid("pricing: missing \"version\" string") }
        guard case .array(let list)? = root["models"] else { throw .invalid("pricing: missing \"models\" array") }
        var models: [ModelPrice] = []
        for (i, item) in list.enumerated() {
            guard case .object(let m) = item, case .string(let id)? = m["id"] else {
                throw .invalid("pricing: models[\(i)] needs an \"id\" string")
            }
            func price(_ key: String) throws(TollgateCoreError) -> Money {
                let text: String
                switch m[key] {
                case .string(let s)?: text = s
                case .number(let s)?: text = s
                default: throw .invalid("pricing: \(id) needs \"\(key)\" (decimal USD per 1M tokens)")
                }
                guard let money = Money(usd: text) else { throw .invalid("pricing: \(id) \(key) '\(text)' is not a decimal USD amount") }
                return money
            }
            var aliases: [String] = []
            if case .array(let a)? = m["aliases"] {
                for alias in a {
                    guard case .string(let s) = alias else { throw .invalid("pricing: \(id) aliases must be strings") }
                    aliases.append(s)
                }
            }
            var name = id
            if case .string(let n)? = m["name"] { name = n }
            models.append(ModelPrice(
                id: id, name: name, aliases: aliases,
                inputPerMillion: try price("inputPerMillionUsd"), outputPerMillion: try price("outputPerMillionUsd")))
        }
        try self.init(version: version, models: models)
    }
}

public enum TollgateCoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let m): return m }
    }
}
