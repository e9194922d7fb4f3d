import Foundation
import PostgresClient
import RedisClient

/// `tollgate writer`: the usage writer on its own.
enum WriterCommand {
    static let help = """
        usage: tollgate writer [--name NAME] [--batch N] [--block-ms MS] [--claim-idle-ms MS] [--drain]

        Moves usage events from the Redis streams into Postgres until SIGTERM/SIGINT (it finishes the batch in
        hand first). Any number of writers may run at once. --name is the consumer name (default
        <hostname>-writer; a writer restarted under the same name takes its own pending entries first).
        --drain writes what is in the streams now, claiming entries of other consumers at once, and exits.
        Environment: TOLLGATE_REDIS_URL, DATABASE_URL, TOLLGATE_PREFIX, TOLLGATE_PARTITIONS.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["name", "batch", "block-ms", "claim-idle-ms"], switches: ["drain", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let config = try Configuration()
        var wc = WriterConfiguration()
        if let name = a.value("name") {
            guard !name.isEmpty, name.count <= 128 else { throw UsageError("--name must be 1 to 128 characters") }
            wc.consumer = name
        }
        wc.batchSize = try a.int("batch", default: wc.batchSize, range: 1...100_000)
        wc.blockMs = try a.int("block-ms", default: wc.blockMs, range: 10...60_000)
        wc.claimIdleMs = try a.int("claim-idle-ms", default: wc.claimIdleMs, range: 100...86_400_000)
        let writer = UsageWriter(redis: config.redis, postgres: try config.requirePostgres(), prefix: config.prefix,
                                 partitions: config.partitions, configuration: wc)
        if a.has("drain") {
            let n = try writer.drain()
            print("drained \(n) entries (\(writer.metrics.rowsWritten) new usage rows, \(writer.metrics.deadLetterCount) dead letters)")
            return
        }
        let stop = StopSignal()
        ShutdownSignals.install(stop)
        // The writer also carries SQL edits of ai_user_unlock to Redis, so they apply even without serve.
        let rt = try Runtime()
        let sync = UnlockSync(engine: rt.engine, database: rt.database)
        sync.resyncSeconds = Double(config.unlockResyncSeconds)
        let listener = Thread { sync.run(until: stop) }
        listener.start()
        Log.info("writer started", ["consumer": wc.consumer, "redis": "\(config.redis)", "postgres": "\(config.postgres!)"])
        writer.run(until: stop)
        while listener.isExecuting { Thread.sleep(forTimeInterval: 0.02) }
        Log.info("writer stopped", ["consumer": wc.consumer, "rows": String(writer.metrics.rowsWritten)])
    }
}
