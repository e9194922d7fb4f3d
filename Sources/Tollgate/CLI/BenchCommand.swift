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
        usage: tollgate bench engine [--requests N] [--concurrency 1,16,64] [--lanes N]

        Measures the quota engine against the Redis at TOLLGATE_REDIS_URL (use a throwaway one: it writes
        keys under the prefix tgbench-<random> and deletes them after). Needs redis-benchmark on PATH.
        """

    static func run(_ args: [String]) async throws {
        let a = try Arguments(args, valued: ["requests", "concurrency", "lanes"], switches: ["help"])
        if a.has("help") { print(help); return }
        let what = try a.positionals("what")[0]
        guard what == "engine" else { throw UsageError("unknown benchmark '\(what)' (try: engine)") }
        let requests = try a.int("requests", default: 30_000, range: 100...10_000_000)
        let lanes = try a.int("lanes", default: 2, range: 1...64)
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
        let redis = RedisPool(config.redis, lanes: lanes)
        // The benchmark user is set up in Redis directly; Postgres is not touched.
        let unusedDatabase = PostgresPool(try config.postgres ?? PostgresConfiguration(url: "postgres://127.0.0.1:1/unused"))
        let engine = QuotaEngine(redis: redis, database: unusedDatabase, pricing: try config.loadPricing(), configuration: ec)
        defer { cleanup(redis: config.redis, prefix: ec.prefix) }
        let users = (0..<64).map { "bench-user-\($0)" }
        for u in users {
            try await engine.apply(UnlockRecord(id: "bench", userId: u, enabled: true, maxCostPerMonth: nil, notes: nil,
                                                createdAt: "", updatedAt: "", version: 1))
        }
        // Load the script so redis-benchmark's EVALSHA finds it.
        try await redis.run(RedisCommand(["SCRIPT", "LOAD", Scripts.reserve.source]))

        print("engine benchmark: \(requests) requests per row, \(lanes) pipelined Redis connections, Redis \(host):\(port)")
        print(pad("concurrency", 12) + pad("reserve/s", 12) + pad("reserve+commit/s", 18) + pad("redis-benchmark EVALSHA/s", 27) + "reserve ratio")
        for c in levels {
            let reserveRate = try await measure(requests: requests, concurrency: c) { i in
                _ = try await engine.reserve(ReserveRequest(userId: users[i % users.count], estimate: .amount(Money(nanos: 1000))))
            }
            let pairRate = try await measure(requests: requests / 2, concurrency: c) { i in
                if case .granted(let r) = try await engine.reserve(ReserveRequest(userId: users[i % users.count], estimate: .amount(Money(nanos: 1000)))) {
                    _ = try await engine.commit(reservationId: r.id, CommitRequest(promptTokens: 1, completionTokens: 1, cost: Money(nanos: 900)))
                }
            }
            let raw = try redisBenchmark(host: host, port: port, clients: c, requests: requests, engine: engine, user: users[0])
            print(pad("\(c)", 12) + pad(String(format: "%.0f", reserveRate), 12) + pad(String(format: "%.0f", pairRate * 2) + " ops", 18)
                  + pad(String(format: "%.0f", raw), 27) + String(format: "%.2fx", reserveRate / raw))
        }
        print("reserve+commit/s counts both calls; ratio = in-process reserve / redis-benchmark EVALSHA of lua/reserve.lua")
    }

    /// Runs `body` `requests` times from `concurrency` tasks; returns calls per second.
    static func measure(requests: Int, concurrency: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
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
        let elapsed = ContinuousClock.now - start
        return Double(requests) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
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
        var cursor = "0"
        repeat {
            guard let parts = (try? c.send("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "5000"))?.array, parts.count == 2 else { return }
            cursor = parts[0].string ?? "0"
            let keys = parts[1].array?.compactMap(\.string) ?? []
            if !keys.isEmpty { _ = try? c.send(RedisCommand(["UNLINK"] + keys)) }
        } while cursor != "0"
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
}

/// Hands out increasing indexes to concurrent workers.
final class NextIndex: Sendable {
    private let counter = Atomic<Int>(0)
    func take() -> Int { counter.add(1, ordering: .relaxed).oldValue }
}
