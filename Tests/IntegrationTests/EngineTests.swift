import Foundation
import RedisClient
import Synchronization
import Testing
import TollgateCore
@testable import Tollgate

@Suite("Quota engine: atomic reservations in Redis Lua", .serialized)
struct EngineTests {
    // MARK: Concurrency (invariant 1)

    /// 4 engines x 16 tasks reserve and commit for one $1.00 user until denied.
    /// - costFor: the actual cost of a granted reservation.
    func race(overrun: @escaping @Sendable (Int) -> Money) async throws -> (spent: Money, grants: Int, overrunTotal: Money, f: EngineFixture, engine: QuotaEngine) {
        let f = try EngineFixture()
        let engines = try (0..<4).map { _ in try f.engine() }
        try await engines[0].enable(userId: "racer", maxCostPerMonth: usd("1.00"))
        let grants = Counter(), overrunNanos = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<64 {
                let engine = engines[t % 4]
                group.addTask {
                    while true {
                        let outcome = try await engine.reserve(ReserveRequest(userId: "racer", estimate: .amount(usd("0.01"))))
                        guard case .granted(let r) = outcome else {
                            guard case .denied(let d) = outcome else { return }
                            #expect(d.reason == .limitExceeded)
                            return
                        }
                        let n = grants.add(1)
                        let actual = overrun(n)
                        if actual > r.amount { overrunNanos.add(Int((actual - r.amount).nanos)) }
                        _ = try await engine.commit(reservationId: r.id, CommitRequest(promptTokens: 10, completionTokens: 10, cost: actual))
                    }
                }
            }
            try await group.waitForAll()
        }
        let spent = try await engines[1].monthlyCost(userId: "racer")
        return (spent, grants.value, Money(nanos: Int64(overrunNanos.value)), f, engines[2])
    }

    @Test("4 instances x 64 tasks, actual == reserved: exactly 100 grants of $0.01 and exactly $1.00 committed")
    func concurrentExact() async throws {
        let r = try await race { _ in usd("0.01") }
        defer { r.f.cleanup() }
        #expect(r.spent == usd("1.00"))
        #expect(r.grants == 100)
        #expect(try await r.engine.access(userId: "racer").reason == .limitExceeded)
    }

    @Test("actual below reserved: committed stays <= $1.00 and the last denial is what the arithmetic says")
    func concurrentUnder() async throws {
        let r = try await race { n in Money(nanos: 4_000_000 + Int64(n % 7) * 1_000_000) }
        defer { r.f.cleanup() }
        #expect(r.spent <= usd("1.00"))
        // Nothing is held now: a reservation is granted iff it still fits.
        let fits = r.spent + usd("0.01") <= usd("1.00")
        let outcome = try await r.engine.reserve(ReserveRequest(userId: "racer", estimate: .amount(usd("0.01"))))
        if case .granted = outcome { #expect(fits) } else { #expect(!fits) }
    }

    @Test("commits that overrun: committed <= limit + sum of (actual - reserved) of the overruns")
    func concurrentOverrun() async throws {
        let r = try await race { n in n % 3 == 0 ? usd("0.025") : usd("0.005") }
        defer { r.f.cleanup() }
        #expect(r.overrunTotal > .zero)
        #expect(r.spent <= usd("1.00") + r.overrunTotal)
        #expect(r.spent > usd("1.00") - usd("0.01"))
    }

    // MARK: Decisions and the guide's texts

    @Test("denials carry the guide's exact reasons; unlimited, disabled, unknown and raised limits")
    func denials() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        // No record at all.
        let unknown = try await e.reserve(ReserveRequest(userId: "nobody", estimate: .amount(usd("0.01"))))
        #expect(unknown == .denied(Denial(reason: .notEnabled, currentCost: .zero, reservedCost: .zero, maxCost: nil)))
        #expect(DenialReason.notEnabled.rawValue == "AI access not enabled for this user")
        #expect(DenialReason.limitExceeded.rawValue == "Monthly cost limit exceeded")
        let a = try await e.access(userId: "nobody")
        #expect(!a.allowed && a.reason == .notEnabled)

        // Unlimited.
        try await e.enable(userId: "free", maxCostPerMonth: nil, notes: "Beta tester")
        for _ in 0..<3 {
            guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "free", estimate: .amount(usd("50000")))) else {
                Issue.record("unlimited user denied"); return
            }
            #expect(r.maxCost == nil)
            _ = try await e.commit(reservationId: r.id, CommitRequest(promptTokens: 1, completionTokens: 1, cost: usd("50000")))
        }
        let fa = try await e.access(userId: "free")
        #expect(fa.allowed && fa.maxCost == nil && fa.currentCost == usd("150000"))

        // Limit, then raised mid-month.
        try await e.enable(userId: "capped", maxCostPerMonth: usd("1.00"))
        guard case .granted(let big) = try await e.reserve(ReserveRequest(userId: "capped", estimate: .amount(usd("0.90")))) else {
            Issue.record("0.90 of 1.00 must be granted"); return
        }
        let over = try await e.reserve(ReserveRequest(userId: "capped", estimate: .amount(usd("0.11"))))
        guard case .denied(let d) = over else { Issue.record("must be denied"); return }
        #expect(d.reason == .limitExceeded && d.reservedCost == usd("0.90") && d.maxCost == usd("1.00"))
        try await e.enable(userId: "capped", maxCostPerMonth: usd("2.00"))
        guard case .granted = try await e.reserve(ReserveRequest(userId: "capped", estimate: .amount(usd("0.11")))) else {
            Issue.record("the raised limit must take effect at once"); return
        }
        _ = try await e.commit(reservationId: big.id, CommitRequest(promptTokens: 0, completionTokens: 0, cost: usd("2.00")))
        let ca = try await e.access(userId: "capped")
        #expect(!ca.allowed && ca.reason == .limitExceeded && ca.currentCost == usd("2.00"))

        // Disabled.
        try await e.disable(userId: "capped")
        let dis = try await e.reserve(ReserveRequest(userId: "capped", estimate: .amount(usd("0.01"))))
        guard case .denied(let dd) = dis else { Issue.record("disabled must be denied"); return }
        #expect(dd.reason == .notEnabled)
        #expect(try await e.access(userId: "capped").reason == .notEnabled)
        #expect(try e.unlockRecord(userId: "capped")?.enabled == false)
        #expect(try e.unlockRecord(userId: "capped")?.maxCostPerMonth == usd("2.00"))
    }

    @Test("a fresh Redis never denies an unlocked user: state is loaded from Postgres")
    func loadsFromPostgres() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "u1", maxCostPerMonth: usd("5"))
        try f.redis().send("DEL", e.keys.user("u1"))
        guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "u1", estimate: .amount(usd("1")))) else {
            Issue.record("must be granted after a reload"); return
        }
        #expect(r.maxCost == usd("5"))
        // Inserted with the guide's SQL, never seen by Tollgate before.
        try f.db.connect().query("""
            INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, notes, created_at, updated_at)
            VALUES ('unlock_' || gen_random_uuid(), 'sql-user', true, 10.00, 'Beta tester', NOW(), NOW())
            """)
        let a = try await e.access(userId: "sql-user")
        #expect(a.allowed && a.maxCost == usd("10"))
    }

    // MARK: Reservations: expiry, late commits, idempotency

    @Test("an expired reservation frees its amount; a late commit after expiry is still charged")
    func expiry() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "u", maxCostPerMonth: usd("1.00"))
        guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("1.00")), ttlSeconds: 2)) else {
            Issue.record("must be granted"); return
        }
        guard case .denied = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("0.01")))) else {
            Issue.record("the hold must count"); return
        }
        try await Task.sleep(for: .milliseconds(2200))
        guard case .granted(let r2) = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("0.40")))) else {
            Issue.record("the expired hold must be freed"); return
        }
        #expect(r2.reservedCost == usd("0.40"))
        let late = try await e.commit(reservationId: r.id, CommitRequest(promptTokens: 5, completionTokens: 5, cost: usd("0.30")))
        #expect(late.cost == usd("0.30") && late.currentCost == usd("0.30"))
        // The late commit freed nothing (already swept); the open 0.40 hold still counts.
        guard case .denied = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("0.31")))) else {
            Issue.record("0.30 + 0.40 + 0.31 > 1.00 must be denied"); return
        }
        await #expect(throws: EngineError.self) {
            _ = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("1")), ttlSeconds: 999_999))
        }
    }

    @Test("commit retried 3 times counts once; release after commit changes nothing; commit after release is a conflict")
    func idempotency() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "u", maxCostPerMonth: usd("10"))
        guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "u", estimate: .tokens(modelId: "anthropic/claude-sonnet-4.5", promptTokens: 1000, maxCompletionTokens: 1000))) else {
            Issue.record("must be granted"); return
        }
        #expect(r.amount == usd("0.018"))
        var results: [CommitResult] = []
        for _ in 0..<3 {
            results.append(try await e.commit(reservationId: r.id, CommitRequest(promptTokens: 1000, completionTokens: 500)))
        }
        #expect(results.map(\.cost) == [usd("0.0105"), usd("0.0105"), usd("0.0105")])
        #expect(results.map(\.replayed) == [false, true, true])
        #expect(try await e.monthlyCost(userId: "u") == usd("0.0105"))
        #expect(try f.streamEvents().filter { $0["type"] == "usage" }.count == 1)
        // A retry with other numbers still returns the first result.
        let other = try await e.commit(reservationId: r.id, CommitRequest(promptTokens: 9, completionTokens: 9, cost: usd("5")))
        #expect(other.cost == usd("0.0105"))
        #expect(try await e.release(reservationId: r.id) == false)
        #expect(try await e.monthlyCost(userId: "u") == usd("0.0105"))

        guard case .granted(let r2) = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("1")))) else { return }
        #expect(try await e.release(reservationId: r2.id) == true)
        #expect(try await e.release(reservationId: r2.id) == true)
        do {
            _ = try await e.commit(reservationId: r2.id, CommitRequest(promptTokens: 1, completionTokens: 1, cost: usd("1")))
            Issue.record("commit after release must fail")
        } catch let err as EngineError {
            #expect(err.code == .conflict)
        }
        #expect(try await e.access(userId: "u").reservedCost == .zero)
        // Unknown and malformed ids.
        await #expect(throws: EngineError(.notFound, "Reservation not found")) {
            _ = try await e.commit(reservationId: "0-aaaaaaaaaaaaaaaaaaaaaaaaaa", CommitRequest(promptTokens: 1, completionTokens: 1))
        }
        await #expect(throws: EngineError(.notFound, "Reservation not found")) { _ = try await e.release(reservationId: "garbage") }

        // A client idempotency key on reserve returns the same reservation.
        let k1 = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("0.5")), idempotencyKey: "req-42"))
        let k2 = try await e.reserve(ReserveRequest(userId: "u", estimate: .amount(usd("0.5")), idempotencyKey: "req-42"))
        guard case .granted(let g1) = k1, case .granted(let g2) = k2 else { Issue.record("must be granted"); return }
        #expect(g1.id == g2.id && !g1.replayed && g2.replayed)
        #expect(try await e.access(userId: "u").reservedCost == usd("0.5"))

        // logUsage with a request id counts once.
        let u1 = try await e.logUsage(UsageRequest(userId: "u", modelId: "openai/gpt-5.1", promptTokens: 100, completionTokens: 100, requestId: "log-1"))
        let u2 = try await e.logUsage(UsageRequest(userId: "u", modelId: "openai/gpt-5.1", promptTokens: 100, completionTokens: 100, requestId: "log-1"))
        #expect(u1.id == u2.id && u1.cost == usd("0.00125") && u2.replayed)
        #expect(try await e.monthlyCost(userId: "u") == usd("0.0105") + usd("0.00125"))
    }

    // MARK: Events

    @Test("threshold alerts: exactly one each for 80, 90 and 100 % in a month")
    func thresholds() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "u", maxCostPerMonth: usd("1.00"))
        for amount in ["0.5", "0.29", "0.01", "0.05", "0.05", "0.04", "0.2", "0.3"] {
            _ = try await e.logUsage(UsageRequest(userId: "u", modelId: "x/model", promptTokens: 1, completionTokens: 1, cost: usd(amount)))
        }
        let alerts = try f.streamEvents().filter { $0["type"] == "alert" }
        #expect(alerts.map { $0["threshold"]! } == ["80", "90", "100"])
        #expect(alerts.map { $0["spent"]! } == ["800000000", "900000000", "1140000000"])
        #expect(alerts.allSatisfy { $0["limit"] == "1000000000" && $0["user"] == "u" })
    }

    @Test("usage events carry everything a usage row needs, with exact nano-USD cost")
    func events() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "ev", maxCostPerMonth: nil)
        guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "ev", estimate: .tokens(modelId: "kimi-k2.5", promptTokens: 3, maxCompletionTokens: 10))) else { return }
        let c = try await e.commit(reservationId: r.id, CommitRequest(promptTokens: 3, completionTokens: 7, metadata: #"{"feature":"animation-generation"}"#))
        let ev = try #require(try f.streamEvents().first { $0["type"] == "usage" })
        #expect(ev["id"] == r.id && ev["user"] == "ev" && ev["model"] == "moonshotai/kimi-k2.5")
        #expect(ev["prompt"] == "3" && ev["completion"] == "7" && ev["total"] == "10")
        #expect(ev["cost"] == "5100")  // 3 x 300 + 7 x 600 nano-USD
        #expect(c.cost == Money(nanos: 5100))
        #expect(ev["pver"] == f.pricing.version && ev["meta"] == #"{"feature":"animation-generation"}"#)
        #expect(ev["ts"] == String(c.createdAtMs) && ev["month"] == c.month)
    }

    @Test("Lua prices tokens exactly as Swift does, rounded once, up")
    func luaPricingMatchesSwift() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let e = try f.engine()
        try await e.enable(userId: "p", maxCostPerMonth: nil)
        var rng = SystemRandomNumberGenerator()
        for model in f.pricing.models {
            for _ in 0..<10 {
                let p = Int64.random(in: 0...Pricing.maxTokens, using: &rng), c = Int64.random(in: 0...5_000, using: &rng)
                guard case .granted(let r) = try await e.reserve(ReserveRequest(userId: "p", estimate: .tokens(modelId: model.id, promptTokens: 1, maxCompletionTokens: 1))) else { return }
                let done = try await e.commit(reservationId: r.id, CommitRequest(promptTokens: p, completionTokens: c))
                #expect(done.cost == model.cost(promptTokens: p, completionTokens: c), "\(model.id) \(p) \(c)")
            }
        }
    }

    // MARK: Months (invariant 6)

    @Test("a new month starts from zero; last month's spend stays readable")
    func rollover() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let now = try f.engine()
        try await now.enable(userId: "m", maxCostPerMonth: usd("1"))
        _ = try await now.logUsage(UsageRequest(userId: "m", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("1")))
        #expect(try await now.access(userId: "m").allowed == false)
        let thisMonth = try await now.currentMonth()
        // The same Redis seen 32 days later: a new UTC month by Redis time.
        let later = try f.engine(clockOffsetMs: 32 * 86_400_000)
        let nextMonth = try await later.currentMonth()
        #expect(nextMonth == Month(thisMonth)!.adding(months: 1).description || nextMonth == Month(thisMonth)!.adding(months: 2).description)
        let a = try await later.access(userId: "m")
        #expect(a.allowed && a.currentCost == .zero && a.month == nextMonth)
        guard case .granted = try await later.reserve(ReserveRequest(userId: "m", estimate: .amount(usd("1")))) else {
            Issue.record("a new month must start at zero"); return
        }
        #expect(try await later.monthlyCost(userId: "m", month: Month(thisMonth)) == usd("1"))
    }
}
