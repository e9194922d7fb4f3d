import PostgresClient
import RedisClient
import TollgateCore

/// Compares, per user and month, Redis committed spend with Postgres plus the events not yet flushed
/// (invariant 7), exactly and under live traffic, and can repair Redis to the truth.
///
/// How a request in flight never shows as drift: one Lua script reads a group of users' spend and request
/// count *and* their events still in the stream, at one instant T. Every event carries `seq`, the user's
/// request count after it, so Postgres rows with `seq <= count` are exactly those counted in that spend;
/// rows committed after T (higher seq) are left out, and stream events already flushed by the time
/// Postgres is asked are recognised by id and counted once. Rows with a higher seq stamped before T
/// (Redis lost them) are counted, so lost state shows as drift.
public struct Reconciler: Sendable {
    public struct Drift: Sendable, Hashable {
        public var userId: String
        /// Committed spend in Redis at the snapshot.
        public var redis: Money
        /// Rows in Postgres covered by the snapshot.
        public var postgres: Money
        /// Events in the stream not yet in Postgres.
        public var unflushed: Money
        /// redis - (postgres + unflushed).
        public var drift: Money { redis - postgres - unflushed }
    }

    public struct Report: Sendable {
        public var month: String
        public var usersChecked = 0
        public var drifts: [Drift] = []
        public var repaired = false
        public var totalDrift: Money { drifts.reduce(.zero) { $0 + $1.drift } }
    }

    let engine: QuotaEngine
    let pool: PostgresPool

    public init(engine: QuotaEngine, database: PostgresPool) {
        self.engine = engine
        self.pool = database
    }

    /// Checks every user with spend in `month` (default: the current month by Redis time), in Redis or in
    /// Postgres. With `repair`, adds the difference to Redis (an increment, so requests committed meanwhile
    /// are kept). `progress(done, total)` is called as users are checked.
    public func run(month: Month? = nil, repair: Bool = false, progress: (Int, Int) -> Void = { _, _ in }) throws -> Report {
        let m = try month ?? Month(engine.currentMonth())!
        var report = Report(month: m.description)
        let users = try usersWithSpend(m)
        var byPartition: [Int: [String]] = [:]
        for u in users { byPartition[engine.keys.partition(of: u), default: []].append(u) }
        var done = 0
        for (p, list) in byPartition.sorted(by: { $0.key < $1.key }) {
            for start in stride(from: 0, to: list.count, by: 500) {
                let chunk = Array(list[start..<min(start + 500, list.count)])
                report.drifts += try check(chunk, partition: p, month: m, repair: repair)
                done += chunk.count
                report.usersChecked = done
                progress(done, users.count)
            }
        }
        report.repaired = repair && !report.drifts.isEmpty
        return report
    }

    /// Users with spend in the month: rows in Postgres, or a spend field in Redis.
    func usersWithSpend(_ m: Month) throws -> [String] {
        var users = Set(try pool.query("""
            SELECT DISTINCT user_id FROM ai_usage_log
             WHERE created_at >= $1::date AND created_at < $1::date + interval '1 month'
            """, [m.firstDay]).compactMap { $0["user_id"] })
        let prefix = engine.configuration.prefix
        let field = "spent:" + m.description
        try engine.redis.withConnection { conn in
            try conn.scanKeys(matching: "\(prefix):{*}:u:*") { keys in
                let spent = try conn.pipelineRaw(keys.map { RedisCommand(["HGET", $0, field]) })
                for (k, v) in zip(keys, spent) where !v.isNull {
                    if let r = k.range(of: "}:u:") { users.insert(String(k[r.upperBound...])) }
                }
            }
        }
        return users.sorted()
    }

    private func check(_ users: [String], partition p: Int, month m: Month, repair: Bool) throws -> [Drift] {
        let keys = engine.keys
        let snapshot = try engine.command(Scripts.reconcileSnapshot.evalsha(
            keys: users.map { keys.user($0) } + [keys.stream(p)], args: [m.description, String(engine.configuration.clockOffsetMs)] + users))
        guard let parts = snapshot.array, parts.count == 3, let flat = parts[0].array, let evs = parts[1].array,
              let nowMs = parts[2].int, flat.count == users.count * 2
        else { throw EngineError(.quotaStoreUnavailable, "unexpected reconcile snapshot reply") }
        var spent: [String: Int64] = [:], count: [String: Int64] = [:]
        for (i, u) in users.enumerated() {
            spent[u] = flat[2 * i].int ?? 0
            count[u] = flat[2 * i + 1].int ?? 0
        }
        var events: [(id: String, user: String, cost: Int64)] = []
        for i in stride(from: 0, to: evs.count - 3, by: 4) {
            events.append((evs[i].string ?? "", evs[i + 1].string ?? "", evs[i + 2].int ?? 0))
        }
        // Postgres at the snapshot's point: rows counted in Redis's spend (seq <= count), rows without a
        // seq, and rows stamped before the snapshot (which Redis must know of). Both queries read one
        // Postgres snapshot, so an event flushed meanwhile is counted exactly once.
        let (sums, flushedRows) = try pool.withConnection { db in
            try db.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            defer { _ = try? db.query("COMMIT") }
            let sums = try db.query("""
                SELECT u.user_id, coalesce(sum(l.cost_nano), 0)::bigint AS total, count(l.id) AS n
                  FROM unnest($1::text[], $2::bigint[]) AS u(user_id, maxseq)
                  LEFT JOIN ai_usage_log l
                    ON l.user_id = u.user_id
                   AND l.created_at >= $3::date AND l.created_at < $3::date + interval '1 month'
                   AND (l.seq IS NULL OR l.seq <= u.maxseq OR l.created_at < $4::timestamp)
                 GROUP BY u.user_id
                """, [PostgresArray.literal(users), PostgresArray.literal(users.map { count[$0]! }), m.firstDay,
                      utcTimestamp(ms: nowMs)])
            let flushed = try db.query("""
                SELECT id FROM ai_usage_log
                 WHERE id = ANY($1::text[]) AND created_at >= $2::date AND created_at < $2::date + interval '1 month'
                """, [PostgresArray.literal(events.map(\.id)), m.firstDay])
            return (sums, flushed)
        }
        var postgres: [String: Int64] = [:], rows: [String: Int64] = [:]
        for row in sums {
            postgres[try row.decode("user_id")] = try row.decode("total")
            rows[try row.decode("user_id")] = try row.decode("n")
        }
        let flushed = Set(flushedRows.compactMap { $0["id"] })
        var unflushed: [String: Int64] = [:], unflushedCount: [String: Int64] = [:]
        for e in events where !flushed.contains(e.id) {
            unflushed[e.user, default: 0] += e.cost
            unflushedCount[e.user, default: 0] += 1
        }

        var drifts: [Drift] = []
        for u in users {
            let d = Drift(userId: u, redis: Money(nanos: spent[u]!), postgres: Money(nanos: postgres[u] ?? 0),
                          unflushed: Money(nanos: unflushed[u] ?? 0))
            guard d.drift != .zero else { continue }
            drifts.append(d)
            if repair {
                var commands = [RedisCommand(["HINCRBY", keys.user(u), "spent:" + m.description, String(-d.drift.nanos)])]
                // Keep the request count (and so future seq numbers) at least as high as the record's.
                let missing = (rows[u] ?? 0) + (unflushedCount[u] ?? 0) - count[u]!
                if missing > 0 { commands.append(RedisCommand(["HINCRBY", keys.user(u), "count:" + m.description, String(missing)])) }
                for c in commands { _ = try engine.command(c) }
            }
        }
        return drifts
    }
}
