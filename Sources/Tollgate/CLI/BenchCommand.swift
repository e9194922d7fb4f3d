import Foundation
import PostgresClient
import RedisClient
import Synchronization
import TollgateCore

/// `tollgate bench engine`: in-process reserve and reserve+commit throughput at several concurrency
/// levels, side by side with `redis-benchmark` running EVALSHA of the same reserve script at the same
/// concurrency, in the same run. Prints rates and ratios (figures, not pass/fail).
enum BenchCommand {
    static let help = """
        usage: tollgate bench engine [--requests N] [--concurrency 1,16,64]
               tollgate bench writer [--events N]

        engine: the quota engine against the Redis at TOLLGATE_REDIS_URL beside redis-benchmark EVALSHA of
        the same script (keys under tgbench-<random>, deleted after). Needs redis-benchmark on PATH.
        writer: fills the streams with N events (default 200,000), times the writer draining them into
        Postgres, and times COPY of the same rows into an identical table. Uses two throwaway databases on
        the DATABASE_URL server (created and dropped).
        """

    static func run(_ args: [String]) async throws {
        let a = try Arguments(args, valued: ["requests", "concurrency", "events"], switches: ["help"])
        if a.has("help") { print(help); return }
        let what = try a.positionals("what")[0]
        if what == "writer" { return try writer(events: try a.int("events", default: 200_000, range: 1_000...10_000_000)) }
        guard what == "engine" else { throw UsageError("unknown benchmark '\(what)' (try: engine, writer)") }
        let requests = try a.int("requests", default: 30_000, range: 100...10_000_000)
        let levels = try (a.value("concurrency") ?? "1,16,64").split(separator: ",").map { s throws(UsageError) -> Int in
            guard let n = Int(s), (1...1024).contains(n) else { throw UsageError("--concurrency takes numbers from 1 to 1024, e.g. 1,16,64") }
            return n
        }
        let config = try Configuration()
        guard case .tcp(let host, let port) = config.redis.endpoint else {
            throw CommandFailure("bench needs a TCP Redis URL (redis-benchmark is run against it)")
        }
        var ec = EngineConfiguration(config)
        ec.prefix = "tgbench-" + IdGenerator.random128().prefix(8)
        let lanes = 2
        let redis = RedisPool(config.redis, lanes: lanes)
        // The benchmark user is set up in Redis directly; Postgres is not touched.
        let unusedDatabase = PostgresPool(try config.postgres ?? PostgresConfiguration(url: "postgres://127.0.0.1:1/unused"))
        let engine = QuotaEngine(redis: redis, database: unusedDatabase, pricing: try config.loadPricing(), configuration: ec)
        defer { cleanup(redis: config.redis, prefix: ec.prefix) }
        let users = (0..<64).map { "bench-user-\($0)" }
        for u in users {
            try engine.apply(UnlockRecord(id: "bench", userId: u, enabled: true, maxCostPerMonth: nil, notes: nil,
                                                createdAt: "", updatedAt: "", version: 1))
        }
        // Load the script so redis-benchmark's EVALSHA finds it.
        try redis.runDirect(RedisCommand(["SCRIPT", "LOAD", Scripts.reserve.source]))

        print("engine benchmark: \(requests) requests per row against Redis \(host):\(port)")
        print("  tasks: concurrent tasks on the async API (scripts pipelined over \(lanes) shared connections)")
        print("  threads: threads on the blocking API (one connection each, as HTTP workers call it)")
        print(pad("callers", 9) + pad("tasks reserve/s", 17) + pad("tasks reserve+commit/s", 24) + pad("threads reserve/s", 19)
              + pad("redis-benchmark/s", 19) + "ratios (tasks, threads)")
        for c in levels {
            let taskRate = try await measureTasks(requests: requests, concurrency: c) { i in
                _ = try await engine.reserve(ReserveRequest(userId: users[i % users.count], estimate: .amount(Money(nanos: 1000))))
            }
            let pairRate = try await measureTasks(requests: requests / 2, concurrency: c) { i in
                if case .granted(let r) = try await engine.reserve(ReserveRequest(userId: users[i % users.count], estimate: .amount(Money(nanos: 1000)))) {
                    _ = try await engine.commit(reservationId: r.id, CommitRequest(promptTokens: 1, completionTokens: 1, cost: Money(nanos: 900)))
                }
            }
            let threadRate = try await measure(requests: requests, concurrency: c) { i in
                _ = try engine.reserve(ReserveRequest(userId: users[i % users.count], estimate: .amount(Money(nanos: 1000))))
            }
            let raw = try redisBenchmark(host: host, port: port, clients: c, requests: requests, engine: engine, user: users[0])
            print(pad("\(c)", 9) + pad(String(format: "%.0f", taskRate), 17) + pad(String(format: "%.0f ops", pairRate * 2), 24)
                  + pad(String(format: "%.0f", threadRate), 19) + pad(String(format: "%.0f", raw), 19)
                  + String(format: "%.2fx, %.2fx", taskRate / raw, threadRate / raw))
        }
        print("reserve+commit counts both calls; ratios = in-process reserve / redis-benchmark EVALSHA of lua/reserve.lua")
    }

    /// Runs `body` `requests` times from `concurrency` tasks; returns calls per second.
    static func measureTasks(requests: Int, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
        let next = NextIndex()
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while true {
                        let i = next.take()
                        if i >= requests { return }
                        try await body(i)
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(requests) / seconds(ContinuousClock.now - start)
    }

    /// The writer against raw COPY of the same rows.
    static func writer(events: Int) throws {
        let config = try Configuration()
        let server = try config.requirePostgres()
        let admin = try PostgresConnection(server)
        let tag = IdGenerator.random128().prefix(8)
        let names = ["tollgate_bench_writer_\(tag)", "tollgate_bench_copy_\(tag)"]
        var urls: [PostgresConfiguration] = []
        for name in names {
            // Database names cannot be bound; these are generated above from [a-z2-7].
            try admin.execute(unsafeSQL: "CREATE DATABASE \(name)")
            urls.append(try PostgresConfiguration(url: server.conninfo.contains("://")
                ? replacingDatabase(in: server.conninfo, with: name) : server.conninfo + " dbname=\(name)"))
        }
        defer { for name in names { try? admin.execute(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") } }
        for url in urls { _ = try Migrator(database: PostgresConnection(url)).run() }
        let prefix = "tgbench-\(tag)"
        defer { cleanup(redis: config.redis, prefix: prefix) }
        let partitions = config.partitions
        let keys = Keys(prefix: prefix, partitions: partitions)
        let redis = try RedisConnection(config.redis)

        print("writer benchmark: \(events) events over \(partitions) partition streams")
        var copyText = ""
        var batch: [RedisCommand] = []
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        for i in 0..<events {
            let user = "bench-user-\(i % 500)", id = "\(i % partitions)-bench-\(i)"
            let cost = Int64(1000 + i % 9000), ts = nowMs - Int64(events - i)
            batch.append(RedisCommand(["XADD", keys.stream(i % partitions), "*", "type", "usage", "id", id, "user", user,
                                       "model", "anthropic/claude-sonnet-4.5", "prompt", "100", "completion", "20", "total", "120",
                                       "cost", String(cost), "pver", "bench", "meta", #"{"feature":"bench"}"#, "ts", String(ts),
                                       "month", Month(epochMs: ts).description, "seq", String(i / 500 + 1)]))
            copyText += "\(id)\t\(user)\tanthropic/claude-sonnet-4.5\t100\t20\t120\t\(Money(nanos: cost).usd)\t{\"feature\":\"bench\"}\t\(utcTimestamp(ms: ts))\t\(cost)\tbench\t\(i / 500 + 1)\n"
            if batch.count == 1000 {
                for r in try redis.pipelineRaw(batch) { try r.orThrow() }
                batch.removeAll(keepingCapacity: true)
            }
        }
        for r in try redis.pipelineRaw(batch) { try r.orThrow() }

        var wc = WriterConfiguration()
        wc.consumer = "bench"
        wc.batchSize = 1000
        let w = UsageWriter(redis: config.redis, postgres: urls[0], prefix: prefix, partitions: partitions, configuration: wc)
        let t0 = ContinuousClock.now
        try w.drain()
        let writerSeconds = seconds(ContinuousClock.now - t0)
        guard w.metrics.rowsWritten == events else {
            throw CommandFailure("writer wrote \(w.metrics.rowsWritten) rows, expected \(events)")
        }

        let copyDB = try PostgresConnection(urls[1])
        let t1 = ContinuousClock.now
        _ = try copyDB.withTransaction { tx in
            try tx.copyIn("""
                COPY ai_usage_log (id, user_id, model_id, prompt_tokens, completion_tokens, total_tokens,
                                   estimated_cost, metadata, created_at, cost_nano, price_version, seq) FROM STDIN
                """, data: copyText)
        }
        let copySeconds = seconds(ContinuousClock.now - t1)
        let writerRate = Double(events) / writerSeconds, copyRate = Double(events) / copySeconds
        print(pad("path", 34) + pad("seconds", 10) + "rows/s")
        print(pad("writer (streams -> ai_usage_log)", 34) + pad(String(format: "%.2f", writerSeconds), 10) + String(format: "%.0f", writerRate))
        print(pad("COPY (one transaction)", 34) + pad(String(format: "%.2f", copySeconds), 10) + String(format: "%.0f", copyRate))
        print(String(format: "ratio writer / COPY: %.2fx", writerRate / copyRate))
    }

    static func replacingDatabase(in url: String, with name: String) -> String {
        guard var parts = URLComponents(string: url) else { return url }
        parts.path = "/" + name
        return parts.string ?? url
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Runs `body` `requests` times from `concurrency` threads calling the engine's blocking API (the one
    /// HTTP workers use); returns calls per second.
    static func measure(requests: Int, concurrency: Int, _ body: @escaping @Sendable (Int) throws -> Void) async throws -> Double {
        let next = NextIndex()
        let failures = NextIndex()
        let start = ContinuousClock.now
        let threads = (0..<concurrency).map { _ in
            Thread {
                while true {
                    let i = next.take()
                    if i >= requests { return }
                    do { try body(i) } catch { _ = failures.take() }
                }
            }
        }
        for t in threads { t.start() }
        while threads.contains(where: { !$0.isFinished }) { try await Task.sleep(for: .milliseconds(2)) }
        let elapsed = ContinuousClock.now - start
        if failures.take() > 0 { throw CommandFailure("some benchmark calls failed (is Redis up?)") }
        return Double(requests) / seconds(elapsed)
    }

    /// redis-benchmark running EVALSHA of the reserve script with the engine's own keys and arguments.
    static func redisBenchmark(host: String, port: Int, clients: Int, requests: Int, engine: QuotaEngine, user: String) throws -> Double {
        let k = engine.keys
        let p = k.partition(of: user)
        let handle = "\(p)-__rand_int__"
        let args = ["-h", host, "-p", String(port), "-c", String(clients), "-n", String(requests), "-r", "100000000", "--csv",
                    "EVALSHA", Scripts.reserve.sha1, "4", k.user(user), k.holds(user), k.base(p) + "r:" + handle, k.reserveKey(user, ""),
                    user, handle, "1000", "120000", "86400000", "604800000", "", "", "", "", "0", "0"]
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        proc.arguments = ["redis-benchmark"] + args
        let out = Pipe()
        proc.standardOutput = out
        proc.standardError = FileHandle.nullDevice
        do { try proc.run() } catch { throw CommandFailure("cannot run redis-benchmark: \(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        proc.waitUntilExit()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        guard proc.terminationStatus == 0, lines.count >= 2 else {
            throw CommandFailure("redis-benchmark failed (is it installed? apt-get install redis-tools)")
        }
        let fields = lines[1].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        guard fields.count > 1, let rps = Double(fields[1]) else { throw CommandFailure("cannot read redis-benchmark output: \(lines[1])") }
        return rps
    }

    static func cleanup(redis: RedisConfiguration, prefix: String) {
        guard let c = try? RedisConnection(redis) else { return }
        try? c.scanKeys(matching: prefix + "*", batch: 5000) { keys in try c.send(RedisCommand(["UNLINK"] + keys)) }
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
}

/// Hands out increasing indexes to concurrent workers.
final class NextIndex: Sendable {
    private let counter = Atomic<Int>(0)
    func take() -> Int { counter.add(1, ordering: .relaxed).oldValue }
}
