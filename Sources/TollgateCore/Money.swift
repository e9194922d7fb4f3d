/// An amount of US dollars as a whole number of nano-USD (1e-9 USD). All arithmetic is integer;
/// decimal USD appears only when parsing or printing at the edges (JSON, CLI, the seed's `real` columns).
public struct Money: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The amount in nano-USD.
    public var nanos: Int64

    public static let nanosPerUSD: Int64 = 1_000_000_000
    public static let zero = Money(nanos: 0)
    /// The largest monthly limit accepted: $1,000,000. Keeps every sum Redis's Lua sees below 2^53,
    /// where Lua numbers are exact.
    public static let maxLimit = Money(nanos: 1_000_000 * nanosPerUSD)
    /// The largest single cost accepted (a reservation, a provider-reported cost): $100,000.
    public static let maxRequestCost = Money(nanos: 100_000 * nanosPerUSD)

    public init(nanos: Int64) { self.nanos = nanos }

    /// Parses a plain decimal USD string exactly: `"10"`, `"0.25"`, `"0.000000001"`, `"-1.5"`.
    /// More than 9 decimal places, exponents, or values beyond ±$9,000,000,000 are rejected (nil).
    public init?(usd text: String) {
        var s = Substring(text)
        var negative = false
        if s.first == "-" { negative = true; s = s.dropFirst() } else if s.first == "+" { s = s.dropFirst() }
        let parts = s.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = parts[0]
        let frac = parts.count > 1 ? parts[1] : ""
        guard !(whole.isEmpty && frac.isEmpty), whole.count <= 10, frac.count <= 9,
              whole.allSatisfy({ $0.isASCII && $0.isNumber }), frac.allSatisfy({ $0.isASCII && $0.isNumber }),
              !(parts.count > 1 && frac.isEmpty && whole.isEmpty)
        else { return nil }
        let w = whole.isEmpty ? 0 : Int64(whole)!
        let f = Int64(String(frac) + String(repeating: "0", count: 9 - frac.count))!
        guard w <= 9_000_000_000 else { return nil }
        let n = w * Money.nanosPerUSD + f
        self.nanos = negative ? -n : n
    }

    /// Exact decimal USD with no trailing zeros: `1.5`, `0.000000001`, `10`.
    public var usd: String {
        let sign = nanos < 0 ? "-" : ""
        let m = nanos.magnitude
        let whole = m / UInt64(Money.nanosPerUSD)
        var frac = m % UInt64(Money.nanosPerUSD)
        if frac == 0 { return "\(sign)\(whole)" }
        var digits = 9
        while frac % 10 == 0 {
            frac /= 10
            digits -= 1
        }
        let f = String(frac)
        return "\(sign)\(whole)." + String(repeating: "0", count: digits - f.count) + f
    }

    /// USD rounded to 4 places for people (`$1.2346`), as the guide prints costs.
    public var display: String {
        let rounded = (nanos >= 0 ? nanos + 50_000 : nanos - 50_000) / 100_000
        let sign = rounded < 0 ? "-" : ""
        let m = rounded.magnitude
        let frac = String(m % 10_000)
        return "\(sign)$\(m / 10_000).\(String(repeating: "0", count: 4 - frac.count))\(frac)"
    }

    public var description: String { "$\(usd)" }

    public static func < (a: Money, b: Money) -> Bool { a.nanos < b.nanos }
    public static func + (a: Money, b: Money) -> Money { Money(nanos: a.nanos + b.nanos) }
    public static func - (a: Money, b: Money) -> Money { Money(nanos: a.nanos - b.nanos) }
}
