import Foundation
import PostgresClient
import RedisClient
import TollgateCore

/// Settings of a writer. Defaults are stated per field.
public struct WriterConfiguration: Sendable {
    /// Consumer group shared by all writers of a deployment.
    public var group = "tollgate-writer"
    /// This writer's consumer name. A writer restarted with the same name takes its own pending entries
    /// first. Default `<hostname>-writer`.
    public var consumer = (ProcessInfo.processInfo.hostName.isEmpty ? "tollgate" : ProcessInfo.processInfo.hostName) + "-writer"
    /// Most entries read per stream per round trip (default 1000).
    public var batchSize = 1000
    /// Longest wait for new entries before a read returns empty, ms (default 1000).
    public var blockMs = 1000
    /// Entries pending on another consumer for this long are claimed (XAUTOCLAIM), ms (default 30,000).
    public var claimIdleMs = 30_000
    /// An entry that failed to insert this many times goes to the dead-letter table (default 5).
    public var maxDeliveries = 5
    /// Longest backoff between retries while Postgres or Redis is down, ms (default 5,000).
    public var maxBackoffMs = 5_000

    public init() {}
}

/// Moves usage and alert events from the partition streams into Postgres, exactly once in effect:
/// a consumer group per stream; each batch is inserted in one transaction, idempotent on the event id
/// (a replayed batch inserts nothing twice); entries are acknowledged only after the transaction
/// committed, then deleted (streams are never trimmed by length). Any number of writers may run at once.
public final class UsageWriter: @unchecked Sendable {
    public let configuration: WriterConfiguration
    public let metrics: WriterMetrics
    let redisConfig: RedisConfiguration
    let postgresConfig: PostgresConfiguration
    let keys: Keys
    // Used by the writer's own thread only.
    private var redis: RedisConnection?
    /// Reads the next batch while the current one is written (see `processNew`).
    private var reader: RedisConnection?
    private var readAhead: ReadAhead?
    /// Entries whose batch committed in Postgres, acknowledged with the next read.
    private var committedUnacknowledged: [Entry] = []
    private var database: PostgresConnection?
    private var knownPartitions: Set<String> = []
    private var lastClaim = Date.distantPast
    private var failing: String?

    public init(redis: RedisConfiguration, postgres: PostgresConfiguration, prefix: String, partitions: Int,
                configuration: WriterConfiguration = .init(), metrics: WriterMetrics = .init()) {
        var rc = redis
        rc.commandTimeoutMs = max(rc.commandTimeoutMs, configuration.blockMs + 5_000)
        self.redisConfig = rc
        self.postgresConfig = postgres
        self.keys = Keys(prefix: prefix, partitions: partitions)
        self.configuration = configuration
        self.metrics = metrics
    }

    // MARK: Running

    /// Runs until `stop` is set, finishing the batch in hand. Survives Redis and Postgres outages
    /// (retrying with backoff, logging once per state change).
    public func run(until stop: StopSignal) {
        var backoffMs = 100
        var ownPendingDone = false
        while !stop.isSet {
            do {
                if !ownPendingDone {
                    try setUp()
                    // Entries delivered to this consumer name before a crash come first.
                    _ = try processPending()
                    ownPendingDone = true
                }
                _ = try processNew()
                if failing != nil {
                    Log.info("writer recovered", ["consumer": configuration.consumer, "after": failing!])
                    failing = nil
                    metrics.postgresDown.store(false, ordering: .relaxed)
                }
                backoffMs = 100
            } catch {
                let what = "\(error)"
                if failing == nil {
                    Log.warn("writer cannot write, retrying with backoff", ["consumer": configuration.consumer, "error": what])
                    failing = what
                }
                if error is PostgresError { metrics.postgresDown.store(true, ordering: .relaxed) }
                // The failed batch (and any read ahead) is still pending on this consumer: take it again first.
                flushAcknowledgements()
                ownPendingDone = false
                metrics.retries.add(1, ordering: .relaxed)
                stop.sleep(Double(backoffMs) / 1000)
                backoffMs = min(backoffMs * 2, configuration.maxBackoffMs)
            }
        }
        // The batch in hand is written; acknowledge it before returning.
        flushAcknowledgements()
    }

    /// Writes everything currently in the streams and returns the number of entries handled; for
    /// `tollgate writer --drain`, tests and benchmarks. Claims entries idle on other consumers at once.
    @discardableResult
    public func drain(claimIdleMs: Int = 0) throws -> Int {
        try setUp()
        var total = try processPending()
        // Entries left pending by other consumers, once (later claims would take this writer's read-ahead).
        total += try claimAndProcess(minIdleMs: claimIdleMs)
        lastClaim = Date()
        while true {
            let n = try processNew(block: false)
            total += n
            if n == 0 { break }
        }
        return total
    }

    /// Creates the consumer group on every stream (from the start of the stream).
    func setUp() throws {
        let r = try redisConnection()
        for stream in keys.allStreams {
            let reply = try r.sendRaw(RedisCommand(["XGROUP", "CREATE", stream, configuration.group, "0", "MKSTREAM"]))
            if case .error(let e) = reply, !e.hasPrefix("BUSYGROUP") { throw RedisError(serverReply: e) }
        }
    }

    /// Writes this consumer's pending entries (delivered before a crash or restart), walking each
    /// stream's pending list once from the start. Returns entries handled.
    func processPending() throws -> Int {
        let streams = keys.allStreams
        var cursors = Array(repeating: "0", count: streams.count)
        var total = 0
        while true {
            let entries = try read(streams: streams, ids: cursors, block: false)
            if entries.isEmpty { return total }
            for e in entries { if let i = streams.firstIndex(of: e.stream) { cursors[i] = e.id } }
            try write(entries)
            total += entries.count
        }
    }

    /// Reads one batch of new entries (waiting up to `blockMs` when `block`) and writes it. Every
    /// `claimIdleMs / 2` it first claims entries idle on other consumers. Returns entries handled.
    func processNew(block: Bool = true) throws -> Int {
        if Date().timeIntervalSince(lastClaim) * 1000 >= Double(configuration.claimIdleMs) / 2 {
            lastClaim = Date()
            _ = try claimAndProcess(minIdleMs: configuration.claimIdleMs)
        }
        let streams = keys.allStreams
        let ids = Array(repeating: ">", count: streams.count)
        // The batch read ahead during the previous write, if any; else read now.
        let entries: [Entry]
        if let ahead = readAhead {
            readAhead = nil
            entries = try ahead.wait()
        } else {
            entries = try read(streams: streams, ids: ids, block: block, on: redisConnection())
        }
        // The previous batch, committed in Postgres, is acknowledged with the next read (one round trip).
        let acks = committedUnacknowledged
        committedUnacknowledged = []
        if entries.isEmpty {
            try acknowledge(acks)
            return 0
        }
        // While Postgres takes this batch, the next one comes from Redis on a second connection. Entries
        // read ahead are pending on this consumer: if the writer stops or fails before writing them, its
        // own-pending pass (or another writer's claim) takes them; nothing is lost.
        let reader = try readerConnection()
        let ahead = ReadAhead()
        DispatchQueue.global().async { [self] in
            ahead.finish(Result {
                try self.acknowledge(acks, on: reader)
                return try self.read(streams: streams, ids: ids, block: block, on: reader)
            })
        }
        do {
            committedUnacknowledged = try insertAll(entries)
        } catch {
            _ = try? ahead.wait()
            throw error
        }
        readAhead = ahead
        return entries.count
    }

    /// Acknowledges what was committed but not yet acknowledged (at stop, or after a failure).
    func flushAcknowledgements() {
        if let ahead = readAhead { _ = try? ahead.wait() }
        readAhead = nil
        if !committedUnacknowledged.isEmpty, (try? acknowledge(committedUnacknowledged)) != nil {
            committedUnacknowledged = []
        }
    }

    /// A batch being read on the reader connection.
    final class ReadAhead: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<[Entry], any Error>?
        func finish(_ r: Result<[Entry], any Error>) {
            result = r
            done.signal()
        }
        func wait() throws -> [Entry] {
            done.wait()
            return try result!.get()
        }
    }

    private func read(streams: [String], ids: [String], block: Bool) throws -> [Entry] {
        try read(streams: streams, ids: ids, block: block, on: redisConnection())
    }

    private func read(streams: [String], ids: [String], block: Bool, on conn: RedisConnection) throws -> [Entry] {
        var args = ["XREADGROUP", "GROUP", configuration.group, configuration.consumer, "COUNT", String(configuration.batchSize)]
        if block { args += ["BLOCK", String(configuration.blockMs)] }
        args += ["STREAMS"] + streams + ids
        return try conn.readStreams(RedisCommand(args)).map(Entry.init)
    }

    /// Claims entries idle on any consumer for at least `minIdleMs` (crashed writers) and writes them.
    func claimAndProcess(minIdleMs: Int) throws -> Int {
        var total = 0
        for stream in keys.allStreams {
            var start = "0-0"
            repeat {
                let reply = try redisConnection().send(RedisCommand([
                    "XAUTOCLAIM", stream, configuration.group, configuration.consumer, String(minIdleMs), start,
                    "COUNT", String(configuration.batchSize),
                ]))
                guard let parts = reply.array, parts.count >= 2 else { break }
                start = parts[0].string ?? "0-0"
                let entries = (parts[1].array ?? []).compactMap { Entry(stream: stream, reply: $0) }
                try write(entries)
                total += entries.count
            } while start != "0-0"
        }
        return total
    }

    // MARK: Writing a batch

    struct Entry {
        var stream: String
        var id: String
        var fields: [(String, String)]
        var event: StreamEvent

        init(_ e: StreamEntry) {
            stream = e.stream
            id = e.id
            fields = e.fields
            event = e.fields.isEmpty ? .malformed(reason: "entry has no fields") : StreamEvent(fields: e.fields)
        }

        /// From a generic reply (XAUTOCLAIM).
        init?(stream: String, reply: RedisValue) {
            guard let parts = reply.array, parts.count == 2, let id = parts[0].string else { return nil }
            let flat = parts[1].array ?? []
            var pairs: [(String, String)] = []
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let k = flat[i].string, let v = flat[i + 1].string { pairs.append((k, v)) }
            }
            self.init(StreamEntry(stream: stream, id: id, fields: pairs))
        }
    }

    /// Inserts a batch in one transaction, then acknowledges and deletes its entries. If the batch is
    /// rejected by Postgres (not a connection problem), entries are tried one by one; one that keeps
    /// failing goes to the dead-letter table after `maxDeliveries` deliveries.
    func write(_ entries: [Entry]) throws {
        try acknowledge(insertAll(entries))
    }

    /// Inserts a batch in one transaction and returns the entries to acknowledge (all of them, once the
    /// transaction committed). If Postgres rejects the batch (not a connection problem), entries are tried
    /// one by one; one that keeps failing goes to the dead-letter table after `maxDeliveries` deliveries,
    /// and one that may still succeed is left pending.
    func insertAll(_ entries: [Entry]) throws -> [Entry] {
        if entries.isEmpty { return [] }
        let db = try databaseConnection()
        try ensurePartitions(for: entries, db: db)
        do {
            let (rows, alerts) = try db.withTransaction { tx in try insert(entries, tx) }
            metrics.rows.add(rows, ordering: .relaxed)
            metrics.alerts.add(alerts, ordering: .relaxed)
            metrics.batches.add(1, ordering: .relaxed)
            return entries
        } catch let e as PostgresError where e.code != .connection {
            var done: [Entry] = []
            for entry in entries {
                do {
                    let (rows, alerts) = try db.withTransaction { tx in try insert([entry], tx) }
                    metrics.rows.add(rows, ordering: .relaxed)
                    metrics.alerts.add(alerts, ordering: .relaxed)
                    done.append(entry)
                } catch let one as PostgresError where one.code != .connection {
                    if try deliveries(of: entry) >= configuration.maxDeliveries {
                        try db.withTransaction { tx in try deadLetter(entry, reason: "insert failed: \(one.description)", tx) }
                        done.append(entry)
                    }
                }
            }
            return done
        }
    }

    /// Inserts usage rows (via COPY into a staging table, then INSERT ... ON CONFLICT DO NOTHING), alerts,
    /// and dead letters for malformed entries. Returns (usage rows inserted, alerts inserted).
    private func insert(_ entries: [Entry], _ tx: PostgresConnection) throws -> (Int, Int) {
        var copy = ""
        var alerts = 0
        for entry in entries {
            switch entry.event {
            case .usage(let u):
                // Columns in the order of `columns` below; NULL is \N (metadata, seq).
                let text: [String] = [
                    Self.copyEscape(u.id), Self.copyEscape(u.userId), Self.copyEscape(u.modelId),
                    String(u.promptTokens), String(u.completionTokens), String(u.totalTokens), u.cost.usd,
                ]
                let rest: [String] = [
                    u.metadata.map(Self.copyEscape) ?? "\\N", utcTimestamp(ms: u.createdAtMs), String(u.cost.nanos),
                    Self.copyEscape(u.priceVersion), u.seq.map { String($0) } ?? "\\N",
                ]
                copy += (text + rest).joined(separator: "\t")
                copy += "\n"
            case .alert(let a):
                alerts += try tx.query("""
                    INSERT INTO tollgate_alert (id, user_id, month, threshold_percent, spent_nano, limit_nano, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7::timestamp) ON CONFLICT DO NOTHING
                    """, [a.id, a.userId, a.month, a.threshold, a.spent.nanos, a.limit.nanos, utcTimestamp(ms: a.createdAtMs)]).affectedRows
            case .malformed(let reason):
                try deadLetter(entry, reason: reason, tx)
            }
        }
        guard !copy.isEmpty else { return (0, alerts) }
        let columns = """
            (id, user_id, model_id, prompt_tokens, completion_tokens, total_tokens,
             estimated_cost, metadata, created_at, cost_nano, price_version, seq)
            """
        // Fast path: COPY straight into ai_usage_log. A replayed batch (after a crash between commit and
        // XACK) hits the primary key; then the batch goes through a staging table and ON CONFLICT DO NOTHING.
        if let n = try Self.copyUnlessReplayed(copy, columns: columns, tx) { return (n, alerts) }
        try tx.query("""
            CREATE TEMP TABLE IF NOT EXISTS tollgate_staging
              (LIKE ai_usage_log INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
            """)
        try tx.copyIn("COPY tollgate_staging \(columns) FROM STDIN", data: copy)
        let inserted = try tx.query("""
            INSERT INTO ai_usage_log SELECT * FROM tollgate_staging ON CONFLICT DO NOTHING
            """).affectedRows
        return (inserted, alerts)
    }

    /// COPY into ai_usage_log under a savepoint; nil (and rolled back) if a row already exists.
    private static func copyUnlessReplayed(_ copy: String, columns: String, _ tx: PostgresConnection) throws -> Int? {
        try tx.query("SAVEPOINT tollgate_copy")
        let result = Result<Int, PostgresError> { () throws(PostgresError) -> Int in
            try tx.copyIn("COPY ai_usage_log \(columns) FROM STDIN", data: copy)
        }
        switch result {
        case .success(let n):
            try tx.query("RELEASE SAVEPOINT tollgate_copy")
            return n
        case .failure(let e) where e.isUniqueViolation:
            try tx.query("ROLLBACK TO SAVEPOINT tollgate_copy")
            return nil
        case .failure(let e):
            throw e
        }
    }

    private func deadLetter(_ entry: Entry, reason: String, _ tx: PostgresConnection) throws {
        var object: [String: JSONValue] = [:]
        for (k, v) in entry.fields where object[k] == nil { object[k] = .string(v) }
        let fields = JSONValue.object(object).serialized
        let deliveries = (try? self.deliveries(of: entry)) ?? 1
        try tx.query("""
            INSERT INTO tollgate_dead_letter (stream, entry_id, fields, reason, deliveries)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
            """, [entry.stream, entry.id, fields, reason, deliveries])
        metrics.deadLetters.add(1, ordering: .relaxed)
        Log.warn("stream entry moved to the dead-letter table", ["stream": entry.stream, "entry": entry.id, "reason": reason])
    }

    /// How many times the group delivered this entry.
    private func deliveries(of entry: Entry) throws -> Int {
        let r = try redisConnection().send(RedisCommand(["XPENDING", entry.stream, configuration.group, entry.id, entry.id, "1"]))
        return Int(r.array?.first?.array?[3].int ?? 1)
    }

    /// XACK then XDEL, per stream, in one round trip: written entries leave the stream.
    private func acknowledge(_ entries: [Entry]) throws {
        try acknowledge(entries, on: redisConnection())
    }

    private func acknowledge(_ entries: [Entry], on conn: RedisConnection) throws {
        if entries.isEmpty { return }
        var byStream: [String: [String]] = [:]
        for e in entries { byStream[e.stream, default: []].append(e.id) }
        var commands: [RedisCommand] = []
        for (stream, ids) in byStream {
            commands.append(RedisCommand(["XACK", stream, configuration.group] + ids))
            commands.append(RedisCommand(["XDEL", stream] + ids))
        }
        for reply in try conn.pipelineRaw(commands) { try reply.orThrow() }
    }

    private func ensurePartitions(for entries: [Entry], db: PostgresConnection) throws {
        for entry in entries {
            guard case .usage(let u) = entry.event else { continue }
            let month = Month(epochMs: u.createdAtMs).firstDay
            if knownPartitions.contains(month) { continue }
            try db.query("SELECT tollgate_ensure_usage_partition($1::date)", [month])
            knownPartitions.insert(month)
        }
    }

    /// COPY text format: backslash, tab, newline and carriage return escaped.
    static func copyEscape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) else { return s }
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    // MARK: Connections (reopened after failures)

    private func redisConnection() throws -> RedisConnection {
        if let redis, redis.isConnected { return redis }
        let c = try RedisConnection(redisConfig)
        redis = c
        return c
    }

    private func readerConnection() throws -> RedisConnection {
        if let reader, reader.isConnected { return reader }
        let c = try RedisConnection(redisConfig)
        reader = c
        return c
    }

    private func databaseConnection() throws -> PostgresConnection {
        if let database, database.isConnected { return database }
        let c = try PostgresConnection(postgresConfig)
        database = c
        knownPartitions = []
        return c
    }

    // MARK: Observability

    /// Length and age of the oldest entry of every partition stream.
    public static func backlog(redis: RedisConnection, prefix: String, partitions: Int) throws -> [Backlog] {
        let keys = Keys(prefix: prefix, partitions: partitions)
        var commands = [RedisCommand(["TIME"])]
        for s in keys.allStreams {
            commands.append(RedisCommand(["XLEN", s]))
            commands.append(RedisCommand(["XRANGE", s, "-", "+", "COUNT", "1"]))
        }
        let replies = try redis.pipelineRaw(commands)
        let t = replies[0].array ?? []
        let nowMs = (t.first?.int ?? 0) * 1000 + (t.count > 1 ? (t[1].int ?? 0) / 1000 : 0)
        return (0..<partitions).map { p in
            let len = Int(replies[1 + 2 * p].int ?? 0)
            var age = 0.0
            if let first = replies[2 + 2 * p].array?.first?.array?.first?.string,
               let ms = Int64(first.split(separator: "-").first ?? "") {
                age = max(0, Double(nowMs - ms) / 1000)
            }
            return Backlog(partition: p, length: len, oldestAgeSeconds: age)
        }
    }
}
