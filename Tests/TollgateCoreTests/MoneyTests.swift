import Testing
import TollgateCore

@Suite("Money, pricing, months")
struct MoneyTests {
    @Test("USD text parses and prints exactly")
    func usd() {
        #expect(Money(usd: "10")?.nanos == 10_000_000_000)
        #expect(Money(usd: "0.000000001")?.nanos == 1)
        #expect(Money(usd: "1.5")?.usd == "1.5")
        #expect(Money(usd: "-0.25")?.nanos == -250_000_000)
        #expect(Money(usd: "0.1")!.nanos + Money(usd: "0.2")!.nanos == Money(usd: "0.3")!.nanos)
        for bad in ["", ".", "1.0000000001", "1e3", "abc", "1.2.3", "NaN", "99999999999"] {
            #expect(Money(usd: bad) == nil, "\(bad) must be rejected")
        }
        #expect(Money(nanos: 1_234_567_891).usd == "1.234567891")
        #expect(Money(nanos: 12_345_600).display == "$0.0123")
        #expect(Money(nanos: 0).usd == "0")
    }

    @Test("the guide's prices give exact costs, rounded once, up")
    func pricing() throws {
        let sonnet = ModelPrice(id: "anthropic/claude-sonnet-4.5", name: "Sonnet", aliases: [],
                                inputPerMillion: Money(usd: "3.00")!, outputPerMillion: Money(usd: "15.00")!)
        // The guide's example: 1000 prompt + 500 completion tokens.
        #expect(sonnet.cost(promptTokens: 1000, completionTokens: 500) == Money(usd: "0.0105"))
        let kimi = ModelPrice(id: "k", name: "k", aliases: [], inputPerMillion: Money(usd: "0.30")!, outputPerMillion: Money(usd: "0.60")!)
        // 1 token at $0.30/M = 300 nano-USD.
        #expect(kimi.cost(promptTokens: 1, completionTokens: 0).nanos == 300)
        // Sub-nano prices: 0.0007 + 0.0008 nano-USD round once, up, to 1 (not 1 + 1 per part).
        let tiny = ModelPrice(id: "t", name: "t", aliases: [], inputPerMillion: Money(nanos: 700), outputPerMillion: Money(nanos: 800))
        #expect(tiny.cost(promptTokens: 1, completionTokens: 1).nanos == 1)
        #expect(tiny.cost(promptTokens: 1_000_000, completionTokens: 1).nanos == 701)
        #expect(kimi.cost(promptTokens: 0, completionTokens: 0).nanos == 0)
        #expect(kimi.cost(promptTokens: Pricing.maxTokens, completionTokens: Pricing.maxTokens) == Money(usd: "90"))
    }

    @Test("pricing JSON: the four guide models, aliases, clear errors")
    func pricingJSON() throws {
        let p = try Pricing(json: Array("""
            {"version":"v1","models":[{"id":"a/b","aliases":["b"],"inputPerMillionUsd":"1.25","outputPerMillionUsd":5}]}
            """.utf8))
        #expect(p.model("b")?.id == "a/b")
        #expect(p.model("a/b")?.outputPerMillion == Money(usd: "5"))
        #expect(p.model("zzz") == nil)
        #expect(throws: TollgateCoreError.self) { try Pricing(json: Array("{}".utf8)) }
        #expect(throws: TollgateCoreError.self) {
            try Pricing(json: Array(#"{"version":"v","models":[{"id":"x","inputPerMillionUsd":"-1","outputPerMillionUsd":"1"}]}"#.utf8))
        }
        #expect(throws: TollgateCoreError.self) {
            try Pricing(json: Array(#"{"version":"v","models":[{"id":"x","inputPerMillionUsd":"1","outputPerMillionUsd":"1"},{"id":"x","inputPerMillionUsd":"1","outputPerMillionUsd":"1"}]}"#.utf8))
        }
    }

    @Test("months are UTC calendar months")
    func months() {
        #expect(Month(epochMs: 0).description == "1970-01")
        // 2026-01-31T23:59:59.999Z and the next millisecond.
        let lastMs = Int64(Month.days(year: 2026, month: 2, day: 1)) * 86_400_000 - 1
        #expect(Month(epochMs: lastMs).description == "2026-01")
        #expect(Month(epochMs: lastMs + 1).description == "2026-02")
        #expect(Month("2026-12")!.adding(months: 1).description == "2027-01")
        #expect(Month("2026-01")!.adding(months: -1).description == "2025-12")
        #expect(Month("2026-13") == nil && Month("26-01") == nil)
        #expect(Month("2024-02")!.lastDay == "2024-02-29" && Month("2026-02")!.lastDay == "2026-02-28")
        #expect(Month("2026-12")!.lastDay == "2026-12-31" && Month("2026-04")!.lastDay == "2026-04-30")
        #expect(Month("2024-02")!.startEpochMs == Int64(Month.days(year: 2024, month: 2, day: 1)) * 86_400_000)
    }

    @Test("JSON keeps numbers exact and rejects bad documents")
    func json() throws {
        let v = try JSONValue.parse(#"{"a": 0.000000001, "b": [true, null, "x\u00e9\n"], "c": {}}"#)
        #expect(v["a"] == .number("0.000000001"))
        #expect(v["b"] == .array([.bool(true), .null, .string("xé\n")]))
        for bad in ["", "{", "{\"a\":}", "[1,]", "NaN", "{\"a\":1,\"a\":2}", "01", "\"\u{01}\"", "1 2"] {
            #expect(throws: JSONValue.ParseError.self, "\(bad)") { try JSONValue.parse(bad) }
        }
        #expect(JSONValue.object(["k": .string("q\"")]).serialized == #"{"k":"q\""}"#)
    }

    @Test("ids and partitions")
    func ids() {
        #expect(Validation.isValidId("user-1"))
        #expect(!Validation.isValidId(""))
        #expect(!Validation.isValidId(String(repeating: "x", count: 129)))
        #expect(!Validation.isValidId("a\u{7}b"))
        let p = Partitioning.partition(of: "alice", count: 16)
        #expect(p == Partitioning.partition(of: "alice", count: 16) && (0..<16).contains(p))
        #expect(IdGenerator.random128().count == 26 && IdGenerator.random128() != IdGenerator.random128())
    }
}
