/// Rules for identifiers and amounts that every entry point (HTTP, CLI, library) applies the same way.
public enum Validation {
    /// Longest id accepted, in UTF-8 bytes.
    public static let maxIdBytes = 128

    /// An id (user, model, reservation, request) is 1...128 UTF-8 bytes with no control characters.
    public static func isValidId(_ s: String) -> Bool {
        let utf8 = s.utf8
        guard !utf8.isEmpty, utf8.count <= maxIdBytes else { return false }
        // Fast path: printable ASCII needs no Unicode tables.
        if utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return true }
        return !s.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    /// Throws a readable error naming `field` when `value` is not a valid id.
    public static func id(_ value: String, field: String) throws(TollgateCoreError) -> String {
        if value.isEmpty { throw .invalid("\(field) must not be empty") }
        if value.utf8.count > maxIdBytes { throw .invalid("\(field) must be at most \(maxIdBytes) bytes") }
        if !isValidId(value) { throw .invalid("\(field) must not contain control characters") }
        return value
    }

    /// A token count: a whole number from 0 to `Pricing.maxTokens`.
    public static func tokens(_ value: Int64, field: String) throws(TollgateCoreError) -> Int64 {
        guard value >= 0 else { throw .invalid("\(field) must not be negative") }
        guard value <= Pricing.maxTokens else { throw .invalid("\(field) must be at most \(Pricing.maxTokens)") }
        return value
    }

    /// An amount of money for one request: from $0 to `Money.maxRequestCost`.
    public static func requestAmount(_ value: Money, field: String) throws(TollgateCoreError) -> Money {
        guard value >= .zero else { throw .invalid("\(field) must not be negative") }
        guard value <= Money.maxRequestCost else { throw .invalid("\(field) must be at most \(Money.maxRequestCost.usd)") }
        return value
    }

    /// A monthly limit: from $0 to `Money.maxLimit`.
    public static func limit(_ value: Money, field: String) throws(TollgateCoreError) -> Money {
        guard value >= .zero else { throw .invalid("\(field) must not be negative") }
        guard value <= Money.maxLimit else { throw .invalid("\(field) must be at most \(Money.maxLimit.usd)") }
        return value
    }
}

/// Stable mapping of a user to one of the deployment's partitions (FNV-1a 64 of the UTF-8 user id).
public enum Partitioning {
    public static func partition(of userId: String, count: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in userId.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return Int(h % UInt64(count))
    }
}

/// Random, unguessable ids: 128 bits in lowercase base32 (26 characters).
public enum IdGenerator {
    public static func random128() -> String {
        var rng = SystemRandomNumberGenerator()
        let a = rng.next() as UInt64, b = rng.next() as UInt64
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var out = ""
        var bits = (UInt128(a) << 64) | UInt128(b)
        for _ in 0..<26 {
            out.append(alphabet[Int(bits & 31)])
            bits >>= 5
        }
        return out
    }
}

/// A UTC calendar month, e.g. `2026-12`. Months are named, never reset: the month is part of the key.
public struct Month: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    /// 1...12
    public var month: Int

    public init(year: Int, month: Int) {
        self.year = year
        self.month = month
    }

    /// The month holding `epochMs` (milliseconds since 1970-01-01T00:00:00Z).
    public init(epochMs: Int64) {
        let days = Int(epochMs >= 0 ? epochMs / 86_400_000 : (epochMs - 86_399_999) / 86_400_000)
        let (y, m, _) = Month.civil(fromDays: days)
        self.init(year: y, month: m)
    }

    /// Parses `YYYY-MM`.
    public init?(_ text: String) {
        let p = text.split(separator: "-")
        guard p.count == 2, p[0].count == 4, p[1].count == 2, let y = Int(p[0]), let m = Int(p[1]),
              (1...12).contains(m), y >= 1970
        else { return nil }
        self.init(year: y, month: m)
    }

    public var description: String {
        let mm = month < 10 ? "0\(month)" : "\(month)"
        return "\(year)-\(mm)"
    }

    /// `YYYY-MM-01`, the first day, for SQL.
    public var firstDay: String { "\(description)-01" }

    /// `YYYY-MM-DD`, the last day.
    public var lastDay: String {
        let (_, _, d) = Month.civil(fromDays: Month.days(year: adding(months: 1).year, month: adding(months: 1).month, day: 1) - 1)
        return "\(description)-" + (d < 10 ? "0\(d)" : "\(d)")
    }

    public func adding(months n: Int) -> Month {
        let total = year * 12 + (month - 1) + n
        return Month(year: total / 12, month: total % 12 + 1)
    }

    /// Epoch milliseconds of the first instant of the month (UTC).
    public var startEpochMs: Int64 { Int64(Month.days(year: year, month: month, day: 1)) * 86_400_000 }

    public static func < (a: Month, b: Month) -> Bool { (a.year, a.month) < (b.year, b.month) }

    /// Days since 1970-01-01 to y-m-d (proleptic Gregorian).
    public static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// y-m-d of a day count since 1970-01-01.
    public static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
