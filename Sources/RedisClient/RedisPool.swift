import Foundation
import Synchronization

/// A pool of Redis connections that any number of threads and tasks share safely.
///
/// Two ways in:
/// - `run(_:)` / `runBlocking(_:)` queue a command on one of `lanes` connections. Each lane's thread sends
///   everything queued since its last round trip as one pipeline, so many concurrent callers cost few
///   round trips. Scripts answered with `NOSCRIPT` are loaded and re-sent, once.
/// - `withConnection(_:)` lends a connection exclusively, for blocking commands (XREADGROUP BLOCK) and
///   MULTI; it is returned to an idle list afterwards (at most `maxIdle` kept).
public final class RedisPool: Sendable {
    public let configuration: RedisConfiguration
    private let lanes: [Lane]
    private let next = Atomic<Int>(0)
    private let idle = Mutex<[RedisConnection]>([])
    private let maxIdle: Int

    /// - Parameters:
    ///   - lanes: connections used for pipelined commands (default 2).
    ///   - maxBatch: most commands sent in one round trip per lane (default 256).
    ///   - maxIdle: exclusive connections kept for reuse (default 64; one per thread that calls at once).
    public init(_ configuration: RedisConfiguration, lanes: Int = 2, maxBatch: Int = 256, maxIdle: Int = 64) {
        self.configuration = configuration
        self.maxIdle = maxIdle
        self.lanes = (0..<max(1, lanes)).map { Lane(configuration: configuration, maxBatch: maxBatch, index: $0) }
    }

    deinit {
        for lane in lanes { lane.stop() }
    }

    // MARK: Pipelined commands

    /// Runs one command on a shared, pipelined connection. Error replies are thrown as `.server` errors.
    @discardableResult
    public func run(_ command: RedisCommand) async throws(RedisError) -> RedisValue {
        let lane = pickLane()
        let result: Result<RedisValue, RedisError> = await withCheckedContinuation { continuation in
            lane.enqueue(command) { continuation.resume(returning: $0) }
        }
        return try result.get().orThrow()
    }

    /// Convenience for text arguments.
    @discardableResult
    public func run(_ args: String...) async throws(RedisError) -> RedisValue {
        try await run(RedisCommand(args))
    }

    /// Runs a script by SHA1 on a shared connection (loads it on NOSCRIPT).
    public func evaluate(_ script: RedisScript, keys: [String], args: [String]) async throws(RedisError) -> RedisValue {
        try await run(script.evalsha(keys: keys, args: args))
    }

    /// Same as `run(_:)` for callers on plain threads (HTTP workers): blocks the calling thread.
    @discardableResult
    public func runBlocking(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        let box = ResultBox()
        pickLane().enqueue(command) { box.set($0) }
        return try box.wait().get().orThrow()
    }

    /// Blocking script evaluation for plain threads.
    public func evaluateBlocking(_ script: RedisScript, keys: [String], args: [String]) throws(RedisError) -> RedisValue {
        try runBlocking(script.evalsha(keys: keys, args: args))
    }

    private func pickLane() -> Lane {
        let i = next.add(1, ordering: .relaxed).oldValue
        return lanes[i % lanes.count]
    }

    /// Runs one command on the calling thread over a pooled connection of its own (no thread hop; no
    /// pipelining with other callers). Scripts answered NOSCRIPT are loaded and retried once. Error replies
    /// are thrown as `.server` errors.
    @discardableResult
    public func runDirect(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        do {
            return try runDirectOnce(command)
        } catch let e where e.code == .connectionLost {
            // An idle connection went stale (Redis restarted, or an idle timeout closed it): the command
            // never reached a live server. The other idle connections are likely stale too: drop them, and
            // retry once on a fresh connection.
            idle.withLock { $0.removeAll() }
            return try runDirectOnce(command)
        }
    }

    private func runDirectOnce(_ command: RedisCommand) throws(RedisError) -> RedisValue {
        do {
            return try withConnection { conn in
                let reply = try conn.sendRaw(command)
                if case .error(let e) = reply, e.hasPrefix("NOSCRIPT"), let script = command.script {
                    try conn.send(RedisCommand(["SCRIPT", "LOAD", script.source]))
                    return try conn.sendRaw(command).orThrow()
                }
                return try reply.orThrow()
            }
        } catch let e as RedisError {
            throw e
        } catch {
            throw RedisError(code: .connectionLost, message: "\(error)")
        }
    }

    // MARK: Exclusive connections

    /// Lends a connection for the duration of `body`. Broken connections are not returned to the pool.
    public func withConnection<T>(_ body: (RedisConnection) throws -> T) throws -> T {
        let conn = try idle.withLock { $0.popLast() } ?? RedisConnection(configuration)
        defer {
            if conn.isConnected {
                idle.withLock { if $0.count < maxIdle { $0.append(conn) } }
            }
        }
        return try body(conn)
    }
}

/// A one-shot result handed from a lane thread to a blocked caller.
private final class ResultBox: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var result: Result<RedisValue, RedisError>?

    func set(_ r: Result<RedisValue, RedisError>) {
        result = r
        semaphore.signal()
    }

    func wait() -> Result<RedisValue, RedisError> {
        semaphore.wait()
        return result!
    }
}

/// One connection with its own thread, sending queued commands as pipelines.
private final class Lane: @unchecked Sendable {
    typealias Completion = @Sendable (Result<RedisValue, RedisError>) -> Void

    private let configuration: RedisConfiguration
    private let maxBatch: Int
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [(RedisCommand, Completion)] = []
    private var stopped = false

    init(configuration: RedisConfiguration, maxBatch: Int, index: Int) {
        self.configuration = configuration
        self.maxBatch = maxBatch
        // The thread keeps its lane alive until `stop()` lets the loop end.
        let thread = Thread { [self] in self.loop() }
        thread.name = "redis-lane-\(index)"
        thread.start()
    }

    func enqueue(_ command: RedisCommand, _ completion: @escaping Completion) {
        condition.lock()
        if stopped {
            condition.unlock()
            completion(.failure(RedisError(code: .connectionLost, message: "Redis pool is shut down")))
            return
        }
        queue.append((command, completion))
        if queue.count == 1 { condition.signal() }
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        var connection: RedisConnection?
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if queue.isEmpty && stopped {
                condition.unlock()
                return
            }
            let take = min(queue.count, maxBatch)
            let batch = Array(queue.prefix(take))
            queue.removeFirst(take)
            condition.unlock()

            do {
                if connection == nil { connection = try RedisConnection(configuration) }
                let replies = try Self.sendBatch(batch.map(\.0), on: connection!)
                for (i, reply) in replies.enumerated() { batch[i].1(.success(reply)) }
            } catch {
                // A broken connection fails the whole batch; the next batch reconnects.
                if connection?.isConnected == false { connection = nil }
                for item in batch { item.1(.failure(error as! RedisError)) }
            }
        }
    }

    /// Sends a pipeline; any EVALSHA answered NOSCRIPT is loaded and re-sent (it did not run).
    private static func sendBatch(_ commands: [RedisCommand], on conn: RedisConnection) throws -> [RedisValue] {
        var replies = try conn.pipelineRaw(commands)
        var retry: [Int] = []
        for (i, reply) in replies.enumerated() {
            if case .error(let e) = reply, e.hasPrefix("NOSCRIPT"), commands[i].script != nil { retry.append(i) }
        }
        if retry.isEmpty { return replies }
        var loaded = Set<String>()
        var loads: [RedisCommand] = []
        for i in retry {
            let script = commands[i].script!
            if loaded.insert(script.sha1).inserted { loads.append(RedisCommand(["SCRIPT", "LOAD", script.source])) }
        }
        let again = try conn.pipelineRaw(loads + retry.map { commands[$0] })
        for (k, i) in retry.enumerated() { replies[i] = again[loads.count + k] }
        return replies
    }
}
