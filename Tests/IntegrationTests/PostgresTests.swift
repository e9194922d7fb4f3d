import Foundation
import PostgresClient
import Testing

@Suite("Postgres client against a real Postgres")
struct PostgresTests {
    @Test("binds carry NULL, unicode and an SQL-injection string as plain data")
    func binds() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        try c.query("CREATE TABLE t (id int PRIMARY KEY, name text, n bigint)")
        let evil = "x'); DROP TABLE t; --"
        try c.query("INSERT INTO t VALUES ($1, $2, $3)", [1, evil, Int64?.none])
        try c.query("INSERT INTO t VALUES ($1, $2, $3)", [2, "żółw 🐢 \u{00e9}", Int64(9_000_000_000_000_000_000)])
        let rows = try c.query("SELECT id, name, n FROM t ORDER BY id")
        #expect(rows.count == 2)
        #expect(try rows[0].decode("name", as: String.self) == evil)
        #expect(rows[0]["n"] == nil)
        #expect(try rows[0].decodeIfPresent("n", as: Int64.self) == nil)
        #expect(try rows[1].decode("name", as: String.self) == "żółw 🐢 é")
        #expect(try rows[1].decode("n", as: Int64.self) == 9_000_000_000_000_000_000)
        #expect(throws: PostgresError.self) { try rows[0].decode("n", as: Int64.self) }
    }

    @Test("a failing statement inside withTransaction rolls everything back")
    func rollback() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        try c.query("CREATE TABLE t (id int PRIMARY KEY)")
        #expect(throws: PostgresError.self) {
            try c.withTransaction { tx in
                try tx.query("INSERT INTO t VALUES ($1)", [1])
                try tx.query("INSERT INTO t VALUES ($1)", [2])
                try tx.query("INSERT INTO nope VALUES ($1)", [3])
            }
        }
        #expect(try c.query("SELECT count(*) AS n FROM t")[0].decode("n", as: Int.self) == 0)
        try c.withTransaction { tx in try tx.query("INSERT INTO t VALUES ($1)", [7]) }
        #expect(try c.query("SELECT count(*) AS n FROM t")[0].decode("n", as: Int.self) == 1)
    }

    @Test("a unique violation carries SQLSTATE 23505")
    func uniqueViolation() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        try c.query("CREATE TABLE t (id int PRIMARY KEY)")
        try c.query("INSERT INTO t VALUES ($1)", [1])
        do {
            try c.query("INSERT INTO t VALUES ($1)", [1])
            Issue.record("duplicate insert must fail")
        } catch {
            #expect(error.sqlState == "23505")
            #expect(error.isUniqueViolation)
            #expect(error.code == .statement)
        }
    }

    @Test("configuration: URL or conninfo, env names, no password in messages")
    func configuration() throws {
        let env = ["PRIVATE_DATABASE_URL": "postgres://u:hunter2@127.0.0.1:1/x"]
        let c = try #require(try PostgresConfiguration.fromEnvironment(env))
        #expect(!c.description.contains("hunter2"))
        do {
            _ = try PostgresConnection(c)
            Issue.record("port 1 must refuse")
        } catch {
            #expect(error.code == .connection)
            #expect(!error.message.contains("hunter2"))
        }
        #expect(try PostgresConfiguration.fromEnvironment([:]) == nil)
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "mysql://x") }
        _ = try PostgresConfiguration(url: "host=127.0.0.1 dbname=x password=p")
        #expect(PostgresConfiguration.redact("host=h password=p") == "host=h password=***")
    }

    @Test("a connection terminated by the server reconnects on the next call")
    func reconnect() throws {
        let db = try ScratchDatabase()
        defer { db.drop() }
        let c = try db.connect()
        let pid = try c.query("SELECT pg_backend_pid() AS p")[0].decode("p", as: Int.self)
        let admin = try TestServers.postgresAdmin()
        try admin.query("SELECT pg_terminate_backend($1)", [pid])
        Thread.sleep(forTimeInterval: 0.2)
        #expect(throws: PostgresError.self) { try c.query("SELECT 1") }
        #expect(try c.query("SELECT 2 AS v")[0].decode("v", as: Int.self) == 2)
    }
}
