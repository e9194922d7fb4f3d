import Foundation
import HTTPServer
import PostgresClient
import RedisClient

/// `tollgate serve`: the HTTP API, with an embedded usage writer by default.
enum ServeCommand {
    static let help = """
        usage: tollgate serve [--listen HOST:PORT] [--no-writer] [--fail-open] [--threads N]

        Serves the v1 API (ops/openapi.yaml). Stops cleanly on SIGTERM/SIGINT: stops accepting, finishes the
        requests in flight and the writer's batch, exits 0.
        Environment: TOLLGATE_LISTEN, TOLLGATE_REDIS_URL, DATABASE_URL (or PRIVATE_DATABASE_URL),
        TOLLGATE_SERVICE_TOKEN, TOLLGATE_ADMIN_TOKEN, TOLLGATE_PRICING, TOLLGATE_RESERVATION_TTL,
        TOLLGATE_WRITER (on|off), TOLLGATE_FAIL_MODE (closed|open), TOLLGATE_HTTP_THREADS, TOLLGATE_PREFIX,
        TOLLGATE_PARTITIONS, TOLLGATE_UNLOCK_RESYNC.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["listen", "threads"], switches: ["no-writer", "fail-open", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        var config = try Configuration()
        if let listen = a.value("listen") {
            do { try config.setListen(listen) } catch { throw UsageError(error.message) }
        }
        if a.has("no-writer") { config.embeddedWriter = false }
        if a.has("fail-open") { config.failOpen = true }
        config.httpThreads = try a.int("threads", default: config.httpThreads, range: 1...256)
        try config.validateForServe()
        let pricing = try config.loadPricing()
        let postgresConfig = try config.requirePostgres()

        let redis = RedisPool(config.redis, lanes: config.redisConnections)
        let database = PostgresPool(postgresConfig, maxIdle: config.httpThreads)
        let engine = QuotaEngine(redis: redis, database: database, pricing: pricing, configuration: EngineConfiguration(config))
        let stop = StopSignal()
        ShutdownSignals.install(stop)

        var writerThread: Thread?
        var writer: UsageWriter?
        if config.embeddedWriter {
            var wc = WriterConfiguration()
            wc.consumer = (ProcessInfo.processInfo.hostName.isEmpty ? "tollgate" : ProcessInfo.processInfo.hostName) + "-serve-\(config.listenPort)"
            let w = UsageWriter(redis: config.redis, postgres: postgresConfig, prefix: config.prefix, partitions: config.partitions, configuration: wc)
            writer = w
            let t = Thread { w.run(until: stop) }
            t.name = "usage-writer"
            t.start()
            writerThread = t
        }
        // SQL edits of ai_user_unlock reach Redis at once: LISTEN, plus catch-up passes.
        let sync = UnlockSync(engine: engine, database: database)
        sync.resyncSeconds = Double(config.unlockResyncSeconds)
        let listener = Thread { sync.run(until: stop) }
        listener.name = "unlock-listener"
        listener.start()
        let api = API(engine: engine, redis: redis, database: database, serviceToken: config.serviceToken!,
                      adminToken: config.adminToken!, failOpen: config.failOpen, writerMetrics: writer?.metrics)
        var http = HTTPServerConfiguration()
        http.host = config.listenHost
        http.port = config.listenPort
        http.threads = config.httpThreads
        let server: HTTPServer
        do {
            server = try HTTPServer(http) { api.handle($0) }
        } catch {
            stop.set()
            throw CommandFailure("\(error)")
        }
        Log.info("tollgate serving", [
            "listen": "\(config.listenHost):\(config.listenPort)", "redis": "\(config.redis)", "postgres": "\(postgresConfig)",
            "writer": config.embeddedWriter ? "on" : "off", "failMode": config.failOpen ? "open" : "closed",
            "pricing": pricing.version,
        ])
        while !stop.isSet { Thread.sleep(forTimeInterval: 0.1) }
        Log.info("stopping: finishing requests in flight and the writer's batch")
        server.stop(graceSeconds: 10)
        while writerThread?.isExecuting == true || listener.isExecuting { Thread.sleep(forTimeInterval: 0.02) }
        Log.info("stopped")
    }
}
