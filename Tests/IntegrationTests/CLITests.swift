import Foundation
import PostgresClient
import RedisClient
import Testing
import TollgateCore
@testable import Tollgate

@Suite("Admin CLI against real Redis and Postgres", .serialized)
struct CLITests {
    @Test("user enable/disable/show/usage, report, pricing: tables and --json")
    func commands() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let env = f.processEnvironment
        let en = try runTollgate(["user", "enable", "ada", "--limit", "10", "--notes", "Beta tester"], env: env)
        #expect(en.status == 0, "\(en.stderr)")
        #expect(en.stdout.contains("limit:     $10 per month") && en.stdout.contains("Beta tester"))
        let j = try runTollgate(["user", "enable", "bob", "--unlimited", "--json"], env: env)
        #expect(json(j.stdout)["maxCostPerMonth"] == .null && json(j.stdout)["enabled"] == .bool(true))
        // Some usage, flushed to Postgres.
        let e = try f.engine()
        for (user, cost) in [("ada", "8.5"), ("bob", "1.25"), ("ada", "0.25")] {
            _ = try await e.logUsage(UsageRequest(userId: user, modelId: "anthropic/claude-sonnet-4.5", promptTokens: 10, completionTokens: 5, cost: usd(cost)))
        }
        try f.writer().drain()

        let show = try runTollgate(["user", "show", "ada"], env: env)
        #expect(show.status == 0)
        #expect(show.stdout.contains("1. unlock record      [ok]"))
        #expect(show.stdout.contains("Redis $8.7500   Postgres $8.7500"))
        #expect(show.stdout.contains("used 87.50%"))
        #expect(show.stdout.contains("verdict: allowed"))
        let showJSON = json(try runTollgate(["user", "show", "ada", "--json"], env: env).stdout)
        #expect(showJSON["redisCost"] == .number("8.75") && showJSON["postgresCost"] == .number("8.75"))
        let nobody = try runTollgate(["user", "show", "nobody"], env: env)
        #expect(nobody.stdout.contains("verdict: AI access not enabled for this user"))

        let usage = json(try runTollgate(["user", "usage", "ada", "--json"], env: env).stdout)
        #expect(usage["totalRequests"] == .number("2") && usage["totalCost"] == .number("8.75") && usage["totalTokens"] == .number("30"))
        let usageText = try runTollgate(["user", "usage", "ada"], env: env).stdout
        #expect(usageText.contains("2 requests, 30 tokens, $8.7500"))

        let top = try runTollgate(["report", "top-users"], env: env)
        #expect(top.status == 0)
        let lines = top.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("userId") == true && lines[1].hasPrefix("ada") && lines[2].hasPrefix("bob"))
        let models = json(try runTollgate(["report", "models", "--json"], env: env).stdout)
        guard case .array(let rows)? = models["rows"], case .object(let r0) = rows.first else { Issue.record("no rows"); return }
        #expect(r0["modelId"] == .string("anthropic/claude-sonnet-4.5") && r0["totalCost"] == .number("10") && r0["requests"] == .number("3"))
        let near = try runTollgate(["report", "near-limit", "--csv"], env: env)
        #expect(near.stdout == "userId,email,limitUsd,currentCost,percentUsed\nada,,10,8.75,87.50\n")
        #expect(try runTollgate(["report", "near-limit", "--threshold", "90"], env: env).stdout == "no rows\n")

        // With the app's "user" table, email and name appear (the guide's JOIN, quoted).
        try f.db.connect().execute(unsafeSQL: """
            CREATE TABLE "user" (id text PRIMARY KEY, email text, name text);
            INSERT INTO "user" VALUES ('ada', 'ada@example.com', 'Ada'), ('bob', 'bob@example.com', 'Bob');
            """)
        let top2 = json(try runTollgate(["report", "top-users", "--json"], env: env).stdout)
        guard case .array(let t2)? = top2["rows"], case .object(let first) = t2.first else { Issue.record("no rows"); return }
        #expect(first["email"] == .string("ada@example.com") && first["name"] == .string("Ada") && first["totalCost"] == .number("8.75"))

        let pricing = try runTollgate(["pricing", "list"], env: env)
        #expect(pricing.stdout.contains("anthropic/claude-sonnet-4.5") && pricing.stdout.contains("15"))
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("pricing-\(UUID()).json")
        try #"{"version":"x","models":[{"id":"a/b","inputPerMillionUsd":"1","outputPerMillionUsd":"-2"}]}"#.write(to: tmp, atomically: true, encoding: .utf8)
        let bad = try runTollgate(["pricing", "check", tmp.path], env: env)
        #expect(bad.status == 1 && bad.stderr.contains("price of a/b"))
        let good = try runTollgate(["pricing", "check", TestServers.packageRoot.appendingPathComponent("ops/pricing.json").path], env: env)
        #expect(good.status == 0 && good.stdout.contains("valid, version 2026-02-openrouter, 4 models"))

        let dis = try runTollgate(["user", "disable", "ada"], env: env)
        #expect(dis.status == 0 && dis.stdout.contains("enabled:   false"))
        #expect(try runTollgate(["user", "show", "ada"], env: env).stdout.contains("verdict: AI access not enabled for this user"))
    }

    @Test("reconcile under live traffic finds no false drift; a counter changed by hand is found and repaired")
    func reconcileLive() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        for u in 0..<20 {
            try await engine.enable(userId: "user-\(u)", maxCostPerMonth: nil)
            _ = try await engine.logUsage(UsageRequest(userId: "user-\(u)", modelId: "x", promptTokens: 1, completionTokens: 1, cost: Money(nanos: 1)))
        }
        let stop = StopSignal()
        let writer = try f.writer("live", batchSize: 37, blockMs: 20)
        let writerThread = Thread { writer.run(until: stop) }
        writerThread.start()
        // Live traffic: commits keep flowing while reconcile runs.
        let traffic = Task {
            var i = 0
            while !stop.isSet {
                let user = "user-\(i % 20)"
                if case .granted(let r) = try await engine.reserve(ReserveRequest(userId: user, estimate: .amount(usd("0.01")))) {
                    _ = try await engine.commit(reservationId: r.id, CommitRequest(promptTokens: 1, completionTokens: 1, cost: Money(nanos: Int64(1_000 + i))))
                }
                i += 1
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let reconciler = Reconciler(engine: engine, database: f.postgres)
        for _ in 0..<5 {
            let report = try reconciler.run()
            #expect(report.usersChecked == 20)
            #expect(report.drifts.isEmpty, "false drift under live traffic: \(report.drifts)")
        }
        // Drift by hand: a counter bumped in Redis.
        let month = try await engine.currentMonth()
        try f.redis().send("HINCRBY", engine.keys.user("user-7"), "spent:" + month, "5000000")
        let found = try reconciler.run()
        #expect(found.drifts.map(\.userId) == ["user-7"] && found.totalDrift == Money(nanos: 5_000_000))
        let cli = try runTollgate(["reconcile"], env: f.processEnvironment)
        #expect(cli.status == 2 && cli.stdout.contains("1 with drift, total drift $0.005"), "\(cli.stdout) \(cli.stderr)")
        let repaired = try runTollgate(["reconcile", "--repair", "--json"], env: f.processEnvironment)
        #expect(repaired.status == 0 && json(repaired.stdout)["repaired"] == .bool(true))
        let clean = try reconciler.run()
        #expect(clean.drifts.isEmpty)
        stop.set()
        _ = try await traffic.value
        while writerThread.isExecuting { try await Task.sleep(for: .milliseconds(10)) }
        try writer.drain()
        #expect(try reconciler.run().drifts.isEmpty)
    }

    @Test("Redis loses everything, then rebuild: access decisions and monthly costs are what they were; reconcile is clean")
    func rebuild() async throws {
        var f = try EngineFixture()
        // A Redis database of its own, so FLUSHDB here touches no other test.
        f.redisDatabase = 9
        defer { f.cleanup() }
        let engine = try f.engine()
        try await engine.enable(userId: "capped", maxCostPerMonth: usd("1"))
        try await engine.enable(userId: "free", maxCostPerMonth: nil)
        try await engine.enable(userId: "off", maxCostPerMonth: usd("5"))
        try await engine.disable(userId: "off")
        _ = try await engine.logUsage(UsageRequest(userId: "capped", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("1")))
        _ = try await engine.logUsage(UsageRequest(userId: "free", modelId: "x", promptTokens: 1, completionTokens: 1, cost: usd("3.5")))
        try f.writer().drain()
        let before = try await ["capped", "free", "off"].asyncMap { try await engine.access(userId: $0) }
        try f.redis().send("FLUSHDB")
        let out = try runTollgate(["rebuild"], env: f.processEnvironment)
        #expect(out.status == 0 && out.stdout.contains("restored 3 unlock records"), "\(out.stdout)\(out.stderr)")
        let after = try await ["capped", "free", "off"].asyncMap { try await engine.access(userId: $0) }
        #expect(after == before)
        #expect(after[0].allowed == false && after[0].reason == .limitExceeded && after[1].currentCost == usd("3.5"))
        #expect(try runTollgate(["reconcile"], env: f.processEnvironment).status == 0)
    }

    @Test("archive: old partitions detached, current ones untouched; a dry run changes nothing")
    func archive() throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let db = try f.db.connect()
        try db.query("SELECT tollgate_ensure_usage_partition('2024-01-01')")
        try db.query("SELECT tollgate_ensure_usage_partition('2024-02-01')")
        try db.query("""
            INSERT INTO ai_usage_log (id, user_id, model_id, created_at, cost_nano) VALUES
              ('old-1', 'u', 'm', '2024-01-15', 5), ('old-2', 'u', 'm', '2024-02-15', 7), ('new-1', 'u', 'm', now() AT TIME ZONE 'UTC', 9)
            """)
        let partitions = { try db.query("SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'ai_usage_log'::regclass")[0].decode("n", as: Int.self) }
        let before = try partitions()
        let dry = try runTollgate(["archive"], env: f.processEnvironment)
        #expect(dry.status == 0 && dry.stdout.contains("would detach ai_usage_log_2024_01 (1 rows)") && dry.stdout.contains("dry run"))
        #expect(try partitions() == before)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("archive-\(UUID()).csv")
        let done = try runTollgate(["archive", "--older-than", "12", "--yes", "--file", file.path, "--json"], env: f.processEnvironment)
        #expect(done.status == 0, "\(done.stderr)")
        #expect(try partitions() == before - 2)
        #expect(try db.query("SELECT id FROM ai_usage_log ORDER BY id").map { $0["id"]! } == ["new-1"])
        #expect(try db.query("SELECT count(*) AS n FROM ai_usage_log_2024_01")[0]["n"] == "1")
        let csv = try String(contentsOf: file, encoding: .utf8)
        #expect(csv.contains("old-1") && csv.contains("old-2") && csv.hasPrefix("id,user_id"))
    }

    @Test("bad usage of every command: exit 64 and one readable line")
    func badUsage() throws {
        let env = ["DATABASE_URL": TestServers.databaseURL, "TOLLGATE_REDIS_URL": TestServers.redisURL]
        let cases: [[String]] = [
            ["nonsense"], ["migrate", "extra"], ["migrate", "--months-ahead", "-1"],
            ["serve", "--listen", "nowhere"], ["serve", "--bogus"],
            ["writer", "--batch", "0"], ["writer", "--name", ""],
            ["user"], ["user", "frobnicate", "x"], ["user", "enable"], ["user", "enable", "a", "--limit", "ten"],
            ["user", "enable", "a", "--limit", "5", "--unlimited"], ["user", "enable", "a", "--limit", "-5"],
            ["user", "disable"], ["user", "show"], ["user", "show", "a", "b"], ["user", "usage", "a", "--from", "2026-13-01"],
            ["user", "enable", String(repeating: "x", count: 200)],
            ["report"], ["report", "everything"], ["report", "models", "--month", "2026-1"], ["report", "near-limit", "--threshold", "x"],
            ["report", "models", "--json", "--csv"],
            ["reconcile", "--month", "soon"], ["reconcile", "extra"],
            ["rebuild", "--force"], ["archive", "--older-than", "0"], ["archive", "--older-than"],
            ["pricing"], ["pricing", "check"], ["pricing", "frob"], ["sync-unlocks", "now"],
            ["bench", "nothing"],
        ]
        for args in cases {
            let r = try runTollgate(args, env: env)
            let lines = r.stderr.split(separator: "\n")
            #expect(r.status == 64, "\(args): status \(r.status), \(r.stderr)")
            #expect(lines.count == 1 && lines[0].hasPrefix("tollgate"), "\(args): \(r.stderr)")
        }
        // Help is not an error.
        for cmd in ["migrate", "serve", "writer", "report", "reconcile", "rebuild", "archive", "sync-unlocks"] {
            #expect(try runTollgate([cmd, "--help"], env: env).status == 0, "\(cmd) --help")
        }
    }
}

extension Array {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}
