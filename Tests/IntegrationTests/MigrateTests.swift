import Foundation
import PostgresClient
import Testing
@testable import Tollgate

@Suite("tollgate migrate")
struct MigrateTests {
    static let guideColumns: [String: [String]] = [
        "ai_user_unlock": ["id", "user_id", "enabled", "max_cost_per_month", "notes", "created_at", "updated_at"],
        "ai_usage_log": ["id", "user_id", "model_id", "prompt_tokens", "completion_tokens", "total_tokens",
                         "estimated_cost", "metadata", "created_at"],
    ]

    func columns(_ c: PostgresConnection, _ table: String) throws -> Set<String> {
        Set(try c.query("SELECT column_name FROM information_schema.columns WHERE table_name = $1", [table])
            .map { $0["column_name"]! })
    }

    @Test("twice on a fresh database: the second run is a no-op")
    func twice() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        let first = try Migrator(database: c).run()
        #expect(first.applied == Migrator.migrations.map(\.name))
        #expect(!first.partitionsCreated.isEmpty)
        let schemaBefore = try c.query("SELECT count(*) AS n FROM pg_class")[0].decode("n", as: Int.self)
        let second = try Migrator(database: c).run()
        #expect(second.applied.isEmpty && second.partitionsCreated.isEmpty && second.notes.isEmpty)
        #expect(second.lines == ["schema up to date (version \(Migrator.migrations.last!.version))"])
        #expect(try c.query("SELECT count(*) AS n FROM pg_class")[0].decode("n", as: Int.self) == schemaBefore)
        for (table, cols) in Self.guideColumns {
            #expect(try columns(c, table).isSuperset(of: cols), "\(table) lacks a guide column")
        }
        #expect(try columns(c, "ai_usage_log").isSuperset(of: ["cost_nano", "price_version"]))
        #expect(try columns(c, "ai_user_unlock").contains("max_cost_nano"))
        // Partitioned by month, with this month's partition, and the troubleshooting indexes.
        let kind = try c.query("SELECT relkind::text AS k FROM pg_class WHERE relname = 'ai_usage_log'")[0]["k"]
        #expect(kind == "p")
        let idx = try c.query("SELECT indexdef FROM pg_indexes WHERE tablename = 'ai_usage_log'").map { $0["indexdef"]! }
        #expect(idx.contains { $0.contains("(user_id, created_at)") })
        #expect(idx.contains { $0.contains("(created_at)") })
        let month = try c.query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM') AS m")[0]["m"]!
        #expect(try !c.query("SELECT 1 FROM pg_class WHERE relname = $1", ["ai_usage_log_" + month]).isEmpty)
    }

    @Test("the guide's tables already holding rows: every row survives, exact columns are filled")
    func existingTables() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        // The tables as the app created them, per the guide.
        try c.execute(unsafeSQL: """
            CREATE TABLE ai_user_unlock (id text PRIMARY KEY, user_id text NOT NULL, enabled boolean NOT NULL,
              max_cost_per_month real, notes text, created_at timestamp NOT NULL, updated_at timestamp NOT NULL);
            CREATE TABLE ai_usage_log (id text PRIMARY KEY, user_id text NOT NULL, model_id text NOT NULL,
              prompt_tokens real NOT NULL, completion_tokens real NOT NULL, total_tokens real NOT NULL,
              estimated_cost real NOT NULL, metadata text, created_at timestamp NOT NULL);
            CREATE INDEX ai_usage_log_user_id_idx ON ai_usage_log (user_id);
            INSERT INTO ai_user_unlock VALUES ('unlock_1', 'alice', true, 10.00, 'Beta tester', now(), now()),
                                              ('unlock_2', 'bob', false, NULL, NULL, now(), now()),
                                              ('unlock_3', 'carol', true, 0.1, NULL, now(), now());
            INSERT INTO ai_usage_log VALUES ('u1', 'alice', 'anthropic/claude-sonnet-4.5', 1000, 500, 1500, 0.0105, '{"feature":"x"}', '2025-03-04 10:00:00'),
                                            ('u2', 'alice', 'openai/gpt-5.1', 10, 10, 20, 0.000125, NULL, now()),
                                            ('u3', 'bob', 'moonshotai/kimi-k2.5', 1, 1, 2, 0.25, NULL, '2024-12-31 23:59:59');
            """)
        let report = try Migrator(database: c).run()
        #expect(report.notes.contains { $0.contains("ai_user_unlock (3 rows)") && $0.contains("max_cost_nano") })
        #expect(report.notes.contains { $0.contains("plain ai_usage_log (3 rows)") && $0.contains("3 rows") })
        let unlocks = try c.query("SELECT user_id, max_cost_nano FROM ai_user_unlock ORDER BY user_id")
        #expect(unlocks.map { $0["user_id"]! } == ["alice", "bob", "carol"])
        #expect(unlocks.map { $0["max_cost_nano"] } == ["10000000000", nil, "100000000"])
        let usage = try c.query("SELECT id, cost_nano, created_at::text AS t FROM ai_usage_log ORDER BY id")
        #expect(usage.map { $0["id"]! } == ["u1", "u2", "u3"])
        #expect(usage[0]["t"] == "2025-03-04 10:00:00")
        #expect(try usage[2].decode("cost_nano", as: Int64.self) == 250_000_000)
        // Old rows landed in monthly partitions made for them.
        #expect(try !c.query("SELECT 1 FROM ai_usage_log_2025_03 WHERE id = 'u1'").isEmpty)
        #expect(try !c.query("SELECT 1 FROM ai_usage_log_2024_12 WHERE id = 'u3'").isEmpty)
        // The guide's Option B insert still works and gets its exact limit.
        try c.query("""
            INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, notes, created_at, updated_at)
            VALUES ('unlock_' || gen_random_uuid(), 'dave', true, 10.00, 'Beta tester', NOW(), NOW())
            """)
        #expect(try c.query("SELECT max_cost_nano FROM ai_user_unlock WHERE user_id = 'dave'")[0]["max_cost_nano"] == "10000000000")
        #expect(try Migrator(database: c).run().applied.isEmpty)
        #expect(try c.query("SELECT count(*) AS n FROM ai_usage_log")[0].decode("n", as: Int.self) == 3)
    }

    @Test("the CLI: exit 0 twice, 64 on bad usage, 1 with a clear line when Postgres is missing")
    func cli() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let ok = try runTollgate(["migrate"], env: ["DATABASE_URL": db.url])
        #expect(ok.status == 0)
        #expect(ok.stdout.contains("applied 001_core.sql"))
        let again = try runTollgate(["migrate", "--json"], env: ["DATABASE_URL": db.url])
        #expect(again.status == 0)
        #expect(again.stdout.contains("\"applied\":[]"))
        let bad = try runTollgate(["migrate", "--months-ahead", "x"], env: ["DATABASE_URL": db.url])
        #expect(bad.status == 64)
        #expect(bad.stderr.split(separator: "\n").count == 1)
        let none = try runTollgate(["migrate"], env: ["DATABASE_URL": ""])
        #expect(none.status == 1)
        #expect(none.stderr.contains("DATABASE_URL"))
    }
}

struct ProcessOutput {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs the built `tollgate` binary with extra environment, waiting for it to exit.
func runTollgate(_ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> ProcessOutput {
    let p = Process()
    p.executableURL = tollgateBinary()
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment["DATABASE_URL"] = nil
    environment["PRIVATE_DATABASE_URL"] = nil
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    if let stdin {
        let inp = Pipe()
        p.standardInput = inp
        inp.fileHandleForWriting.write(Data(stdin.utf8))
        try inp.fileHandleForWriting.close()
    }
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ProcessOutput(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// The `tollgate` executable built beside the test bundle.
func tollgateBinary() -> URL {
    var dir = Bundle.main.bundleURL
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("tollgate")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return TestServers.packageRoot.appendingPathComponent(".build/debug/tollgate")
}
