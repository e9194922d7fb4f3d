import Foundation
import Testing
import TollgateCore
@testable import Tollgate

@Suite("SQL edits of ai_user_unlock reach Redis: LISTEN/NOTIFY and catch-up passes", .serialized)
struct SyncTests {
    /// Runs SQL through psql, as an admin following the guide would.
    func psql(_ f: EngineFixture, _ sql: String) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tg-\(UUID()).sql")
        try sql.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let status = system("psql -q -v ON_ERROR_STOP=1 '\(f.db.url)' -f '\(file.path)' >/dev/null")
        #expect(status == 0, "psql failed: \(sql)")
    }

    /// Polls a reservation until `expected` (201 or 403 with a body) or 2 s pass; returns (status, body, seconds).
    func reserveUntil(_ server: ServeProcess, user: String, amount: String = "0.5", status expected: Int, body: String? = nil) async throws -> (Int, String, Double) {
        let start = Date()
        var last = (0, "")
        while Date().timeIntervalSince(start) < 2.0 {
            last = try await http("POST", server.base + "/v1/reservations", token: serviceToken, body: #"{"userId":"\#(user)","amountUsd":\#(amount)}"#)
            // Every hold a probe gets is released at once, so probes never hold money the next step needs.
            if last.0 == 201, case .string(let id)? = json(last.1)["reservationId"] {
                _ = try await http("POST", server.base + "/v1/reservations/\(id)/release", token: serviceToken)
            }
            if last.0 == expected && (body == nil || last.1 == body) {
                return (last.0, last.1, Date().timeIntervalSince(start))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return (last.0, last.1, Date().timeIntervalSince(start))
    }

    @Test("with serve running: the guide's INSERT, UPDATE enabled = false, a lowered limit and DELETE apply within 2 s")
    func guideSQL() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let server = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        defer { server.stop() }
        // Seen (and denied) first, so Redis holds "no record" for this user.
        let (s0, b0) = try await http("POST", server.base + "/v1/reservations", token: serviceToken, body: #"{"userId":"sql-user","amountUsd":0.5}"#)
        #expect(s0 == 403 && b0 == #"{"error":"AI access not enabled for this user"}"#)

        try psql(f, """
            INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, notes, created_at, updated_at)
            VALUES (
              'unlock_' || gen_random_uuid(),
              'sql-user',
              true,
              10.00, -- Monthly limit in USD, or NULL for unlimited
              'Beta tester',
              NOW(),
              NOW()
            );
            """)
        let granted = try await reserveUntil(server, user: "sql-user", status: 201)
        #expect(granted.0 == 201, "Option B insert not applied within 2 s: \(granted.1)")

        try psql(f, "UPDATE ai_user_unlock SET enabled = false, updated_at = NOW() WHERE user_id = 'sql-user';")
        let denied = try await reserveUntil(server, user: "sql-user", status: 403, body: #"{"error":"AI access not enabled for this user"}"#)
        #expect(denied.0 == 403, "disable not applied within 2 s: \(denied.1)")

        try psql(f, "UPDATE ai_user_unlock SET enabled = true, max_cost_per_month = 0.25 WHERE user_id = 'sql-user';")
        let limited = try await reserveUntil(server, user: "sql-user", amount: "0.5", status: 403, body: #"{"error":"Monthly cost limit exceeded"}"#)
        #expect(limited.0 == 403, "lowered limit not applied within 2 s: \(limited.1)")
        let small = try await reserveUntil(server, user: "sql-user", amount: "0.2", status: 201)
        #expect(small.0 == 201)

        try psql(f, "DELETE FROM ai_user_unlock WHERE user_id = 'sql-user';")
        let gone = try await reserveUntil(server, user: "sql-user", amount: "0.01", status: 403, body: #"{"error":"AI access not enabled for this user"}"#)
        #expect(gone.0 == 403, "delete not applied within 2 s: \(gone.1)")
    }

    @Test("the listener away while edits happen: the catch-up pass on start applies them, deletions included")
    func listenerRestart() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let engine = try f.engine()
        try await engine.enable(userId: "a", maxCostPerMonth: usd("1"))
        try await engine.enable(userId: "b", maxCostPerMonth: usd("1"))
        var server = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        #expect(server.stop() == 0)
        // Edits while no listener runs.
        try psql(f, """
            UPDATE ai_user_unlock SET enabled = false WHERE user_id = 'a';
            DELETE FROM ai_user_unlock WHERE user_id = 'b';
            INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, notes, created_at, updated_at)
            VALUES ('unlock_c', 'c', true, NULL, NULL, NOW(), NOW());
            """)
        // Redis still says the old things.
        #expect(try await engine.access(userId: "a").allowed)
        #expect(try await engine.access(userId: "b").allowed)
        server = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        defer { server.stop() }
        let a = try await reserveUntil(server, user: "a", status: 403, body: #"{"error":"AI access not enabled for this user"}"#)
        let b = try await reserveUntil(server, user: "b", status: 403, body: #"{"error":"AI access not enabled for this user"}"#)
        let c = try await reserveUntil(server, user: "c", amount: "1000", status: 201)
        #expect(a.0 == 403 && b.0 == 403 && c.0 == 201)
        // The on-demand full pass agrees.
        let full = try runTollgate(["sync-unlocks"], env: f.processEnvironment)
        #expect(full.status == 0 && full.stdout.contains("applied 2 unlock records"))
    }

    @Test("two serve instances listening: no flapping; the final state equals Postgres")
    func twoListeners() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let s1 = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        let s2 = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        defer { s1.stop(); s2.stop() }
        // A burst of edits to a few users, in SQL and through both servers' API.
        var sql = ""
        for i in 0..<40 {
            let u = "u\(i % 4)"
            sql += i % 3 == 0
                ? "INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, created_at, updated_at) VALUES ('x\(i)', '\(u)', true, \(i), NOW(), NOW()) ON CONFLICT (user_id) DO UPDATE SET max_cost_per_month = \(i), enabled = \(i % 2 == 0);\n"
                : "UPDATE ai_user_unlock SET enabled = \(i % 2 == 0), max_cost_per_month = \(i) WHERE user_id = '\(u)';\n"
        }
        try psql(f, sql)
        for i in 0..<8 {
            let server = i % 2 == 0 ? s1 : s2
            _ = try await http("PUT", server.base + "/v1/users/u\(i % 4)/unlock", token: adminToken,
                               body: #"{"enabled": \#(i % 3 != 0), "maxCostPerMonth": \#(i + 100)}"#)
        }
        try await Task.sleep(for: .seconds(1.5))
        // Redis equals Postgres for every user, and stays so.
        let engine = try f.engine()
        for _ in 0..<3 {
            for u in ["u0", "u1", "u2", "u3"] {
                let record = try #require(try engine.unlockRecord(userId: u))
                let redis = try f.redis().send("HMGET", engine.keys.user(u), "enabled", "limit").array ?? []
                #expect(redis[0].string == (record.enabled ? "1" : "0"), "\(u) enabled")
                #expect(redis[1].int == record.maxCostPerMonth?.nanos ?? -1, "\(u) limit")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }
}
