import Foundation
import RedisClient
import Testing

@Suite("Redis client against a real Redis")
struct RedisTests {
    @Test("binary-safe argv: NUL bytes and UTF-8 round-trip exactly")
    func binarySafe() throws {
        let c = try TestServers.redisConnection()
        let key = "t-bin-\(UUID().uuidString)"
        defer { _ = try? c.send("DEL", key) }
        let value: [UInt8] = [0, 1, 2, 0, 255, 10, 13] + Array("żółw 🐢 \0 end".utf8)
        try c.send(RedisCommand(bytes: [Array("SET".utf8), Array(key.utf8), value]))
        #expect(try c.send("GET", key) == .bulk(value))
        #expect(try c.send("STRLEN", key).int == Int64(value.count))
    }

    @Test("a pipeline of 1,000 commands returns 1,000 replies in order")
    func pipeline() throws {
        let c = try TestServers.redisConnection()
        let key = "t-pipe-\(UUID().uuidString)"
        defer { _ = try? c.send("DEL", key) }
        let replies = try c.pipelineRaw((1...1000).map { _ in RedisCommand(["INCR", key]) })
        #expect(replies.count == 1000)
        #expect(replies.map(\.int) == (1...1000).map { Int64($0) })
    }

    @Test("a script still runs after SCRIPT FLUSH (NOSCRIPT is loaded and retried)")
    func noscript() async throws {
        let c = try TestServers.redisConnection()
        let script = RedisScript(source: "return {KEYS[1], ARGV[1], 'nonce-\(UUID().uuidString)'}")
        try c.send("SCRIPT", "FLUSH")
        let r = try c.evaluate(script, keys: ["k"], args: ["v"])
        #expect(r.array?.prefix(2).map(\.string) == ["k", "v"])
        #expect(try c.send("SCRIPT", "EXISTS", script.sha1).array == [.integer(1)])
        // The SHA1 we compute is the one Redis computes.
        try c.send("SCRIPT", "FLUSH")
        #expect(try c.send("SCRIPT", "LOAD", script.source).string == script.sha1)
        // Through the pool too.
        try c.send("SCRIPT", "FLUSH")
        let pool = RedisPool(try TestServers.redis())
        let r2 = try await pool.evaluate(script, keys: ["a"], args: ["b"])
        #expect(r2.array?.prefix(2).map(\.string) == ["a", "b"])
    }

    @Test("WRONGTYPE surfaces as a typed server error")
    func wrongType() throws {
        let c = try TestServers.redisConnection()
        let key = "t-wt-\(UUID().uuidString)"
        defer { _ = try? c.send("DEL", key) }
        try c.send("SET", key, "x")
        do {
            try c.send("LPUSH", key, "y")
            Issue.record("LPUSH on a string must fail")
        } catch {
            #expect(error.code == .server)
            #expect(error.serverCode == "WRONGTYPE")
        }
        // The connection is still usable after an error reply.
        #expect(try c.send("GET", key).string == "x")
    }

    @Test("connection refused fails fast with a clear error")
    func refused() throws {
        let start = Date()
        do {
            _ = try RedisConnection(RedisConfiguration(url: "redis://127.0.0.1:1", connectTimeoutMs: 500))
            Issue.record("connecting to port 1 must fail")
        } catch {
            #expect(error.code == .connectionFailed)
            #expect(error.message.contains("127.0.0.1:1"))
        }
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test("a command that outlives the command timeout fails with .timeout, and the client reconnects")
    func commandTimeout() throws {
        var config = try TestServers.redis()
        config.commandTimeoutMs = 200
        let c = try RedisConnection(config)
        let start = Date()
        do {
            try c.send("BLPOP", "t-never-\(UUID().uuidString)", "2")
            Issue.record("BLPOP for 2 s must time out at 200 ms")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.message.contains("200 ms"))
        }
        #expect(Date().timeIntervalSince(start) < 1.9)
        #expect(try c.send("PING").string == "PONG")
    }

    @Test("AUTH failure and bad URLs give readable errors without the password")
    func badConfig() throws {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h:99999") }
        let c = try RedisConfiguration(url: "redis://:s3cret@127.0.0.1:6390/2")
        #expect(c.database == 2 && c.password == "s3cret")
        #expect(!c.description.contains("s3cret"))
        let unix = try RedisConfiguration(url: "/tmp/redis.sock")
        #expect(unix.endpoint == .unix(path: "/tmp/redis.sock"))
        var wrong = try TestServers.redis()
        wrong.password = "definitely-wrong"
        do {
            _ = try RedisConnection(wrong)
            Issue.record("AUTH with a password on a server without one must fail")
        } catch {
            #expect(error.code == .connectionFailed)
            #expect(!error.message.contains("definitely-wrong"))
        }
    }

    @Test("a unix socket path and a unix:// URL connect like TCP")
    func unixSocket() throws {
        let path = ProcessInfo.processInfo.environment["TOLLGATE_TEST_REDIS_SOCKET"]
            ?? TestServers.packageRoot.appendingPathComponent(".data/test/redis/redis.sock").path
        let bare = try RedisConnection(RedisConfiguration(url: path))
        #expect(try bare.send("PING").string == "PONG")
        let url = try RedisConnection(RedisConfiguration(url: "unix://\(path)?db=3"))
        let key = "t-unix-\(UUID().uuidString)"
        defer { _ = try? url.send("DEL", key) }
        try url.send("SET", key, "via socket")
        #expect(try TestServers.redisConnection(database: 3).send("GET", key).string == "via socket")
    }

    @Test("stream replies decode straight into entries; no reply and error replies are handled")
    func streams() throws {
        let c = try TestServers.redisConnection()
        let key = "t-stream-\(UUID().uuidString)"
        defer { _ = try? c.send("DEL", key) }
        try c.send("XADD", key, "1-1", "type", "usage", "meta", "{\"a\":\"ż\\n\"}")
        try c.send("XADD", key, "1-2", "n", "42")
        let all = try c.readStreams(RedisCommand(["XREAD", "COUNT", "10", "STREAMS", key, "0"]))
        #expect(all.map(\.id) == ["1-1", "1-2"] && all.allSatisfy { $0.stream == key })
        #expect(all[0]["meta"] == "{\"a\":\"ż\\n\"}" && all[1]["n"] == "42" && all[1]["type"] == nil)
        // Nothing new within the block time: an empty list, not an error.
        #expect(try c.readStreams(RedisCommand(["XREAD", "BLOCK", "10", "STREAMS", key, "$"])).isEmpty)
        do {
            _ = try c.readStreams(RedisCommand(["XREADGROUP", "GROUP", "nogroup", "me", "STREAMS", key, ">"]))
            Issue.record("a missing group must fail")
        } catch {
            #expect(error.code == .server && error.serverCode == "NOGROUP")
        }
    }

    @Test("SELECT picks the database from the URL")
    func selectDatabase() throws {
        let c3 = try TestServers.redisConnection(database: 3)
        let c0 = try TestServers.redisConnection(database: 0)
        let key = "t-db-\(UUID().uuidString)"
        defer { _ = try? c3.send("DEL", key) }
        try c3.send("SET", key, "three")
        #expect(try c0.send("GET", key) == .null)
        #expect(try c3.send("GET", key).string == "three")
    }

    @Test("a pool shared by 32 concurrent tasks gives each its own replies")
    func poolConcurrency() async throws {
        let pool = RedisPool(try TestServers.redis(), lanes: 2)
        let prefix = "t-pool-\(UUID().uuidString)"
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<32 {
                group.addTask {
                    for i in 0..<50 {
                        let key = "\(prefix):\(t)"
                        let n = try await pool.run("INCR", key).int
                        #expect(n == Int64(i + 1))
                        let echoed = try await pool.run("ECHO", "task \(t) call \(i)").string
                        #expect(echoed == "task \(t) call \(i)")
                    }
                }
            }
            try await group.waitForAll()
        }
        // Threads (not tasks) share it too.
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            #expect((try? pool.runBlocking(RedisCommand(["ECHO", "thread \(t)"])).string) == "thread \(t)")
        }
        // Exclusive connections for blocking commands.
        let r = try pool.withConnection { try $0.send("ECHO", "mine") }
        #expect(r.string == "mine")
        for t in 0..<32 { _ = try await pool.run("DEL", "\(prefix):\(t)") }
    }

    @Test("a connection killed by the server is replaced on the next call")
    func reconnect() throws {
        let c = try TestServers.redisConnection()
        let name = "victim-\(UUID().uuidString.prefix(8))"
        try c.send("CLIENT", "SETNAME", name)
        let admin = try TestServers.redisConnection()
        let list = try admin.send("CLIENT", "LIST").string ?? ""
        let id = list.split(separator: "\n").first { $0.contains("name=\(name)") }?
            .split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3)
        try admin.send("CLIENT", "KILL", "ID", String(id!))
        #expect(throws: RedisError.self) { try c.send("PING") }
        #expect(try c.send("PING").string == "PONG")
    }
}
