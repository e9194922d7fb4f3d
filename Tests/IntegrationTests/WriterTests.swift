import Foundation
import PostgresClient
import RedisClient
import Testing
import TollgateCore
@testable import Tollgate

@Suite("Usage writer: Redis Streams to Postgres, exactly once", .serialized)
struct WriterTests {
    /// Commits `count` requests over `users` users from 32 concurrent tasks; returns nothing, Redis holds the truth.
    func commit(_ count: Int, users: Int, engine: QuotaEngine) async throws {
        for u in 0..<users { try await engine.enable(userId: "user-\(u)", maxCostPerMonth: nil) }
        let next = NextIndex()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    while true {
                        let i = next.take()
                        if i >= count { return }
                        let user = "user-\(i % users)"
                        if i % 4 == 0 {
                            _ = try await engine.logUsage(UsageRequest(userId: user, modelId: "openai/gpt-5.1", promptTokens: Int64(i), completionTokens: 7, metadata: #"{"i":\#(i)}"#))
                        } else {
                            guard case .granted(let r) = try await engine.reserve(ReserveRequest(userId: user, estimate: .tokens(modelId: "kimi-k2.5", promptTokens: 1000, maxCompletionTokens: 1000))) else {
                                Issue.record("unlimited user denied"); return
                            }
                            _ = try await engine.commit(reservationId: r.id, CommitRequest(promptTokens: Int64(i % 1000), completionTokens: 3))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Every user's Redis spend this month equals the exact sum in Postgres, and ids are unique.
    func expectAgreement(_ f: EngineFixture, engine: QuotaEngine, users: Int, rows: Int) async throws {
        let db = try f.writerDB.connect()
        let counts = try db.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM ai_usage_log")[0]
        #expect(try counts.decode("n", as: Int.self) == rows)
        #expect(try counts.decode("d", as: Int.self) == rows)
        let sums = try db.query("SELECT user_id, sum(cost_nano)::bigint AS s FROM ai_usage_log GROUP BY user_id")
        var byUser: [String: Int64] = [:]
        for r in sums { byUser[try r.decode("user_id")] = try r.decode("s") }
        for u in 0..<users {
            let redis = try await engine.monthlyCost(userId: "user-\(u)")
            #expect(Money(nanos: byUser["user-\(u)"] ?? 0) == redis, "user-\(u)")
        }
    }

    @Test("20,000 commits from concurrent tasks, then a writer run to empty: exactly 20,000 rows, sums equal Redis")
    func twentyThousand() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        try await commit(20_000, users: 25, engine: engine)
        let writer = try f.writer()
        #expect(try writer.drain() >= 20_000)
        #expect(writer.metrics.rowsWritten == 20_000)
        #expect(try f.streamLength() == 0)
        try await expectAgreement(f, engine: engine, users: 25, rows: 20_000)
        // A second run finds nothing to do.
        #expect(try f.writer().drain() == 0)
        // Rows carry the guide's columns and the exact ones.
        let row = try f.db.connect().query("SELECT * FROM ai_usage_log WHERE metadata = $1", [#"{"i":4}"#])[0]
        #expect(row["model_id"] == "openai/gpt-5.1" && row["prompt_tokens"] == "4" && row["completion_tokens"] == "7")
        #expect(row["total_tokens"] == "11" && row["cost_nano"] == "80000" && row["estimated_cost"] == "8e-05")
    }

    @Test("SIGKILL a standalone writer mid-batch, several times, and restart it: no row lost, none duplicated")
    func sigkill() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        var total = 0
        for round in 0..<4 {
            try await commit(3_000, users: 5, engine: engine)
            total += 3_000
            let p = Process()
            p.executableURL = tollgateBinary()
            p.arguments = ["writer", "--name", "killme", "--batch", "100", "--block-ms", "100"]
            p.environment = ProcessInfo.processInfo.environment.merging(f.processEnvironment) { $1 }
            p.standardError = FileHandle.nullDevice
            try p.run()
            try await Task.sleep(for: .milliseconds(Int.random(in: 150...600)))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            #expect(p.terminationReason == .uncaughtSignal, "round \(round)")
        }
        // Restarted under the same name, it drains what is left, its own pending entries first.
        let done = try runTollgate(["writer", "--name", "killme", "--drain"], env: f.processEnvironment)
        #expect(done.status == 0, "\(done.stderr)")
        #expect(try f.streamLength() == 0)
        try await expectAgreement(f, engine: engine, users: 5, rows: total)
    }

    @Test("SIGTERM: a standalone writer finishes the batch in hand, acknowledges it and exits 0")
    func sigterm() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        let p = Process()
        p.executableURL = tollgateBinary()
        p.arguments = ["writer", "--name", "polite", "--batch", "50", "--block-ms", "100"]
        p.environment = ProcessInfo.processInfo.environment.merging(f.processEnvironment) { $1 }
        p.standardError = FileHandle.nullDevice
        try p.run()
        try await commit(2_000, users: 3, engine: engine)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 0)
        // Nothing it wrote is left unacknowledged: what remains pending is what it never wrote.
        let written = try f.db.connect().query("SELECT count(*) AS n FROM ai_usage_log")[0].decode("n", as: Int.self)
        let left = try f.streamLength()
        #expect(written + left == 2_000, "\(written) written, \(left) left in the streams")
        try f.writer("polite").drain()
        try await expectAgreement(f, engine: engine, users: 3, rows: 2_000)
    }

    @Test("two writers at once over the same streams: all rows, no duplicates")
    func twoWriters() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        let stop = StopSignal()
        let a = try f.writer("a", batchSize: 50), b = try f.writer("b", batchSize: 50)
        let threads = [a, b].map { w in
            let t = Thread { w.run(until: stop) }
            t.start()
            return t
        }
        try await commit(6_000, users: 10, engine: engine)
        // Wait for the writers to empty the streams.
        for _ in 0..<200 where try f.streamLength() > 0 { try await Task.sleep(for: .milliseconds(50)) }
        stop.set()
        while threads.contains(where: { $0.isExecuting }) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(a.metrics.rowsWritten > 0 && b.metrics.rowsWritten > 0)
        #expect(a.metrics.rowsWritten + b.metrics.rowsWritten == 6_000)
        try await expectAgreement(f, engine: engine, users: 10, rows: 6_000)
    }

    @Test("Postgres stopped while commits continue, then started: every row arrives; the writer neither crashes nor spins")
    func postgresOutage() async throws {
        let f = try EngineFixture()
        f.writerDB = try ScratchDatabase(migrated: true, serverURL: TestServers.outageDatabaseURL)
        defer {
            try? TestServers.services("start-outage-postgres")
            f.cleanup()
        }
        let engine = try f.engine()
        let writer = try f.writer()
        let stop = StopSignal()
        let thread = Thread { writer.run(until: stop) }
        thread.start()
        try await commit(1_000, users: 4, engine: engine)
        try TestServers.services("stop-outage-postgres")
        let outageStart = Date()
        // Chat traffic goes on: reserve and commit do not need Postgres.
        try await commit(2_000, users: 4, engine: engine)
        try await Task.sleep(for: .seconds(2))
        #expect(writer.metrics.isPostgresDown)
        let retriesDuringOutage = writer.metrics.retryCount
        let outageSeconds = Date().timeIntervalSince(outageStart)
        // Backoff, not a spin: after the first few tries, one every 0.5 s (the test's ceiling) at most.
        #expect(retriesDuringOutage >= 1 && Double(retriesDuringOutage) <= 6 + outageSeconds * 2.5,
                "\(retriesDuringOutage) retries in \(outageSeconds) s")
        #expect(try f.streamLength() > 0)
        try TestServers.services("start-outage-postgres")
        for _ in 0..<300 where try f.streamLength() > 0 { try await Task.sleep(for: .milliseconds(50)) }
        stop.set()
        while thread.isExecuting { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!writer.metrics.isPostgresDown)
        try await expectAgreement(f, engine: engine, users: 4, rows: 3_000)
    }

    @Test("a malformed stream entry lands in the dead-letter table; the entries around it are written")
    func poison() async throws {
        let f = try EngineFixture(partitions: 1)
        defer { f.cleanup() }
        let engine = try f.engine()
        try await engine.enable(userId: "user-0", maxCostPerMonth: nil)
        _ = try await engine.logUsage(UsageRequest(userId: "user-0", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("0.01")))
        try f.redis().send("XADD", "\(f.config.prefix):{0}:events", "*", "type", "usage", "id", "bad-1", "user", "user-0", "cost", "12.5")
        try f.redis().send("XADD", "\(f.config.prefix):{0}:events", "*", "garbage", "yes")
        _ = try await engine.logUsage(UsageRequest(userId: "user-0", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("0.02")))
        let writer = try f.writer()
        try writer.drain()
        #expect(try f.streamLength() == 0)
        let db = try f.db.connect()
        #expect(try db.query("SELECT sum(cost_nano)::bigint AS s FROM ai_usage_log")[0].decode("s", as: Int64.self) == 30_000_000)
        let dead = try db.query("SELECT entry_id, fields, reason FROM tollgate_dead_letter ORDER BY entry_id")
        #expect(dead.count == 2)
        #expect(dead[0]["fields"]?.contains("bad-1") == true)
        #expect(dead[0]["reason"]?.contains("token counts") == true || dead[0]["reason"]?.contains("model") == true)
        #expect(dead[1]["reason"]?.contains("unknown event type") == true)
        #expect(writer.metrics.deadLetterCount == 2)
    }

    @Test("month boundary: an event stamped just before midnight UTC lands in that month's partition")
    func monthBoundary() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let probe = try f.engine()
        let now = try await probe.redisTimeMs()
        // Five months ahead, 1.5 s before the month ends: a partition migrate did not make ahead.
        let target = Month(epochMs: now).adding(months: 6).startEpochMs - 1_500
        let engine = try f.engine(clockOffsetMs: target - now)
        try await engine.enable(userId: "late", maxCostPerMonth: nil)
        let r = try await engine.logUsage(UsageRequest(userId: "late", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("1")))
        let expected = Month(epochMs: target)
        #expect(r.month == expected.description)
        try f.writer().drain()
        let row = try f.db.connect().query("SELECT tableoid::regclass::text AS part, created_at::text AS t FROM ai_usage_log")[0]
        #expect(row["part"] == "ai_usage_log_" + expected.description.replacingOccurrences(of: "-", with: "_"))
        #expect(row["t"]?.hasPrefix(utcTimestamp(ms: target).prefix(16)) == true)
        // The guide's monthly cost from Postgres sees it in that month, not the next.
        let records = UsageRecords(pool: f.postgres)
        #expect(try records.monthlyCost(userId: "late", month: expected) == usd("1"))
        #expect(try records.monthlyCost(userId: "late", month: expected.adding(months: 1)) == .zero)
    }

    @Test("getUserUsageStats: totals over the range, rows paged newest first")
    func stats() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        try await engine.enable(userId: "s", maxCostPerMonth: nil)
        for i in 1...25 {
            _ = try await engine.logUsage(UsageRequest(userId: "s", modelId: "anthropic/claude-sonnet-4.5", promptTokens: Int64(i), completionTokens: 10))
        }
        try f.writer().drain()
        let records = UsageRecords(pool: f.postgres)
        let month = Month(try await engine.currentMonth())!
        let to = month.lastDay
        var page = try records.stats(userId: "s", from: month.firstDay, to: to, limit: 10)
        #expect(page.totalRequests == 25 && page.totalTokens == 325 + 250)
        let redisCost = try await engine.monthlyCost(userId: "s")
        #expect(page.totalCost == redisCost)
        var seen = page.logs
        while let c = page.nextCursor {
            page = try records.stats(userId: "s", from: month.firstDay, to: to, limit: 10, cursor: c)
            seen += page.logs
        }
        #expect(seen.count == 25 && Set(seen.map(\.id)).count == 25)
        #expect(seen.map(\.createdAt) == seen.map(\.createdAt).sorted(by: >))
        #expect(try records.monthlyCost(userId: "s") == page.totalCost)
    }
}
