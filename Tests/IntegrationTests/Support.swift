import Foundation
import Synchronization
import PostgresClient
import RedisClient
import Testing
import TollgateCore
@testable import Tollgate

/// The real servers `ops/test` starts. A test that cannot reach one fails naming the server and URL.
enum TestServers {
    static var redisURL: String {
        ProcessInfo.processInfo.environment["TOLLGATE_TEST_REDIS_URL"] ?? "redis://127.0.0.1:6390"
    }
    static var databaseURL: String {
        ProcessInfo.processInfo.environment["TOLLGATE_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5440/tollgate"
    }
    /// `ops/services`, to stop and start a server mid-test.
    static var servicesScript: String {
        ProcessInfo.processInfo.environment["TOLLGATE_TEST_SERVICES"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("ops/services").path
    }
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A second Redis and Postgres that tests may stop and start (see ops/services).
    static var outageRedisURL: String {
        ProcessInfo.processInfo.environment["TOLLGATE_TEST_OUTAGE_REDIS_URL"] ?? "redis://127.0.0.1:6391"
    }
    static var outageDatabaseURL: String {
        ProcessInfo.processInfo.environment["TOLLGATE_TEST_OUTAGE_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5441/tollgate"
    }

    /// Runs `ops/services <command>` and fails the test if it fails.
    static func services(_ command: String) throws {
        // system(3), not Process: the script leaves a daemon behind, which Process's wait can trip over.
        let status = system("bash '\(servicesScript)' \(command) >/dev/null")
        if status != 0 {
            Issue.record("ops/services \(command) failed with status \(status)")
            throw CancellationError()
        }
    }

    static func redis(database: Int = 0) throws -> RedisConfiguration {
        var c = try RedisConfiguration(url: redisURL)
        c.database = database
        return c
    }

    static func redisConnection(database: Int = 0) throws -> RedisConnection {
        do {
            return try RedisConnection(redis(database: database))
        } catch {
            Issue.record("cannot reach the test Redis at \(redisURL) (start it with ops/test or ops/services start): \(error)")
            throw error
        }
    }

    static func postgresAdmin() throws -> PostgresConnection {
        do {
            return try PostgresConnection(PostgresConfiguration(url: databaseURL))
        } catch {
            Issue.record("cannot reach the test Postgres at \(databaseURL) (start it with ops/test or ops/services start): \(error)")
            throw error
        }
    }
}

/// A database of its own for one test, dropped afterwards.
final class ScratchDatabase: @unchecked Sendable {
    let name: String
    let url: String
    let config: PostgresConfiguration

    let adminURL: String

    init(migrated: Bool = false, serverURL: String = TestServers.databaseURL) throws {
        name = "t_" + IdGenerator.random128().prefix(12)
        adminURL = serverURL
        let admin = try Self.admin(serverURL)
        try admin.query("SELECT 1")
        // CREATE DATABASE cannot take binds; the name is generated above from [a-z2-7].
        try admin.execute(unsafeSQL: "CREATE DATABASE \(name)")
        var parts = URLComponents(string: serverURL)!
        parts.path = "/" + name
        url = parts.string!
        config = try PostgresConfiguration(url: url)
        if migrated { _ = try Migrator(database: connect()).run() }
    }

    func connect() throws -> PostgresConnection { try PostgresConnection(config) }

    static func admin(_ url: String) throws -> PostgresConnection {
        do {
            return try PostgresConnection(PostgresConfiguration(url: url))
        } catch {
            Issue.record("cannot reach the test Postgres at \(url) (start it with ops/test or ops/services start): \(error)")
            throw error
        }
    }

    func drop() {
        guard let admin = try? Self.admin(adminURL) else { return }
        try? admin.execute(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }
}

/// A unique Redis key prefix for one test; its keys are deleted afterwards.
struct ScratchPrefix {
    let prefix = "t" + IdGenerator.random128().prefix(10)

    func cleanup() {
        guard let c = try? TestServers.redisConnection() else { return }
        try? c.scanKeys(matching: "\(prefix)*") { keys in try c.send(RedisCommand(["DEL"] + keys)) }
    }
}

/// A migrated scratch database, a scratch key prefix, and engines over them.
final class EngineFixture: @unchecked Sendable {
    let db: ScratchDatabase
    /// Where the writer writes; the same database unless a test points it elsewhere.
    var writerDB: ScratchDatabase
    let scratch = ScratchPrefix()
    let pricing: Pricing
    let postgres: PostgresPool
    var config: EngineConfiguration
    /// The Redis database (SELECT) this fixture uses; 0 unless a test needs one of its own.
    var redisDatabase = 0

    init(partitions: Int = 4) throws {
        db = try ScratchDatabase(migrated: true)
        writerDB = db
        pricing = try Configuration(environment: [:]).loadPricing()
        postgres = PostgresPool(db.config)
        config = EngineConfiguration()
        config.prefix = scratch.prefix
        config.partitions = partitions
    }

    /// A new engine with its own Redis connections (as a separate instance would have).
    func engine(clockOffsetMs: Int64 = 0, lanes: Int = 2) throws -> QuotaEngine {
        var c = config
        c.clockOffsetMs = clockOffsetMs
        return QuotaEngine(redis: RedisPool(try TestServers.redis(database: redisDatabase), lanes: lanes), database: postgres, pricing: pricing, configuration: c)
    }

    func redis() throws -> RedisConnection { try TestServers.redisConnection(database: redisDatabase) }

    func writer(_ name: String = "w1", batchSize: Int = 1000, blockMs: Int = 200, metrics: WriterMetrics = .init()) throws -> UsageWriter {
        var wc = WriterConfiguration()
        wc.consumer = name
        wc.batchSize = batchSize
        wc.blockMs = blockMs
        wc.maxBackoffMs = 500
        return UsageWriter(redis: try TestServers.redis(database: redisDatabase), postgres: writerDB.config, prefix: config.prefix,
                           partitions: config.partitions, configuration: wc, metrics: metrics)
    }

    /// Environment for a `tollgate` child process over this fixture.
    var processEnvironment: [String: String] {
        ["TOLLGATE_REDIS_URL": TestServers.redisURL + "/\(redisDatabase)", "DATABASE_URL": writerDB.url, "TOLLGATE_PREFIX": config.prefix,
         "TOLLGATE_PARTITIONS": String(config.partitions)]
    }

    /// Entries left in all partition streams.
    func streamLength() throws -> Int {
        let c = try redis()
        return try (0..<config.partitions).reduce(0) { $0 + Int(try c.send("XLEN", "\(config.prefix):{\($1)}:events").int ?? 0) }
    }

    /// All entries of all partition streams, as field dictionaries.
    func streamEvents() throws -> [[String: String]] {
        let c = try redis()
        var out: [[String: String]] = []
        for p in 0..<config.partitions {
            let entries = try c.send("XRANGE", "\(config.prefix):{\(p)}:events", "-", "+").array ?? []
            for e in entries {
                let fields = e.array?[1].array ?? []
                var d: [String: String] = [:]
                for i in stride(from: 0, to: fields.count, by: 2) { d[fields[i].string!] = fields[i + 1].string! }
                out.append(d)
            }
        }
        return out
    }

    func cleanup() {
        if redisDatabase != 0 { _ = try? redis().send("FLUSHDB") }
        scratch.cleanup()
        db.drop()
        if writerDB !== db { writerDB.drop() }
    }
}

func usd(_ s: String) -> Money { Money(usd: s)! }

/// A counter shared by concurrent tasks.
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    @discardableResult
    func add(_ n: Int) -> Int { atomic.add(n, ordering: .relaxed).newValue }
    var value: Int { atomic.load(ordering: .relaxed) }
}
