import Foundation
import RedisClient
import Testing
import TollgateCore
@testable import Tollgate

@Suite("HTTP service: tollgate serve processes", .serialized)
struct HTTPTests {
    @Test("three serve processes, one Redis, 96 clients on one $1.00 user: committed <= $1.00, every commit is a row")
    func threeInstances() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let servers = [try await ServeProcess(environment: f.processEnvironment),
                       try await ServeProcess(environment: f.processEnvironment),
                       try await ServeProcess(environment: f.processEnvironment)]
        let (s, _) = try await http("PUT", servers[0].base + "/v1/users/shared/unlock", token: adminToken, body: #"{"maxCostPerMonth": 1.00}"#)
        #expect(s == 200)
        let commits = Counter(), denials = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<96 {
                let base = servers[c % 3].base
                group.addTask {
                    while true {
                        let (status, body) = try await http("POST", base + "/v1/reservations", token: serviceToken,
                            body: #"{"userId":"shared","modelId":"anthropic/claude-sonnet-4.5","promptTokens":1000,"maxCompletionTokens":1000}"#)
                        if status == 403 {
                            #expect(body == #"{"error":"Monthly cost limit exceeded"}"#)
                            denials.add(1)
                            return
                        }
                        #expect(status == 201, "\(body)")
                        guard case .string(let id)? = json(body)["reservationId"] else { return }
                        let (cs, cb) = try await http("POST", base + "/v1/reservations/\(id)/commit", token: serviceToken,
                                                      body: #"{"promptTokens":1000,"completionTokens":500}"#)
                        #expect(cs == 200, "\(cb)")
                        commits.add(1)
                    }
                }
            }
            try await group.waitForAll()
        }
        let (_, a) = try await http("GET", servers[1].base + "/v1/users/shared/access", token: serviceToken)
        guard case .number(let spentText)? = json(a)["currentCost"], let spent = Money(usd: spentText) else {
            Issue.record("no currentCost in \(a)"); return
        }
        #expect(spent <= usd("1.00"))
        #expect(spent == Money(nanos: 10_500_000 * Int64(commits.value)))
        // The last reservation attempt of all was denied with nothing else held, so no further $0.018 fit.
        #expect(spent + usd("0.018") > usd("1.00"))
        #expect(denials.value == 96)
        // The embedded writers drain the streams: every commit is a row.
        for _ in 0..<200 where try f.streamLength() > 0 { try await Task.sleep(for: .milliseconds(50)) }
        let rows = try f.db.connect().query("SELECT count(*) AS n, sum(cost_nano)::bigint AS s FROM ai_usage_log")[0]
        #expect(try rows.decode("n", as: Int.self) == commits.value)
        #expect(try rows.decode("s", as: Int64.self) == spent.nanos)
        for s in servers { #expect(s.stop() == 0) }
        #expect(servers[0].log.contains("\"route\":\"/v1/reservations\""))
    }

    /// Everything bad input could touch: Redis user state, holds, streams, Postgres rows.
    func snapshot(_ f: EngineFixture) throws -> String {
        let r = try f.redis()
        let engine = try f.engine()
        var out = ""
        for u in ["victim", ""] where !u.isEmpty {
            out += "\(try r.send("HGETALL", engine.keys.user(u)))|\(try r.send("ZCARD", engine.keys.holds(u)))|"
        }
        out += "\(try f.streamLength())|"
        let db = try f.db.connect()
        out += try db.query("SELECT count(*) AS n FROM ai_usage_log")[0]["n"]! + "|"
        out += try db.query("SELECT string_agg(user_id || enabled::text || coalesce(max_cost_nano::text, 'null'), ',' ORDER BY user_id) AS s FROM ai_user_unlock")[0]["s"] ?? ""
        return out
    }

    @Test("bad input: a 4xx with a clear error, and nothing changes in Redis or Postgres")
    func badInput() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let server = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        defer { server.stop() }
        let base = server.base
        _ = try await http("PUT", base + "/v1/users/victim/unlock", token: adminToken, body: #"{"maxCostPerMonth": 5}"#)
        let (_, rb) = try await http("POST", base + "/v1/reservations", token: serviceToken, body: #"{"userId":"victim","amountUsd":0.5}"#)
        guard case .string(let rid)? = json(rb)["reservationId"] else { Issue.record("no reservation: \(rb)"); return }
        let long = String(repeating: "x", count: 129)
        let huge = #"{"userId":"victim","amountUsd":0.1,"pad":""# + String(repeating: "a", count: 70_000) + #""}"#
        // (method, path, body, status, error text contained)
        let cases: [(String, String, String?, Int, String)] = [
            ("POST", "/v1/reservations", "{", 400, "malformed JSON"),
            ("POST", "/v1/reservations", "[1]", 400, "must be a JSON object"),
            ("POST", "/v1/reservations", "", 400, "must be a JSON object"),
            ("POST", "/v1/reservations", #"{"userId":5,"amountUsd":1}"#, 400, "userId must be a string"),
            ("POST", "/v1/reservations", #"{"amountUsd":1}"#, 400, "userId is required"),
            ("POST", "/v1/reservations", #"{"userId":"victim"}"#, 400, "give amountUsd"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":-1,"maxCompletionTokens":5}"#, 400, "promptTokens must not be negative"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":1.5,"maxCompletionTokens":5}"#, 400, "promptTokens must be a whole number"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":10,"maxCompletionTokens":1000000000000}"#, 400, "maxCompletionTokens must be at most"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":1e3,"maxCompletionTokens":5}"#, 400, "promptTokens must be a whole number"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":"10","maxCompletionTokens":5}"#, 400, "promptTokens must be a number"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":NaN}"#, 400, "malformed JSON"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":-0.01}"#, 400, "amountUsd must not be negative"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":0.0000000001}"#, 400, "at most 9 decimals"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":1000000}"#, 400, "amountUsd must be at most"),
            ("POST", "/v1/reservations", #"{"userId":"victim","modelId":"acme/unknown","promptTokens":1,"maxCompletionTokens":1}"#, 400, "unknown model 'acme/unknown'"),
            ("POST", "/v1/reservations", #"{"userId":"","amountUsd":1}"#, 400, "userId must not be empty"),
            ("POST", "/v1/reservations", #"{"userId":"\#(long)","amountUsd":1}"#, 400, "at most 128 bytes"),
            ("POST", "/v1/reservations", #"{"userId":"vic\u0001tim","amountUsd":1}"#, 400, "control characters"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":1,"userID":"x"}"#, 400, "unknown field 'userID'"),
            ("POST", "/v1/reservations", #"{"userId":"victim","amountUsd":1,"ttlSeconds":0}"#, 400, "ttlSeconds"),
            ("POST", "/v1/reservations", huge, 413, "larger than 64 KiB"),
            ("POST", "/v1/reservations/\(rid)/commit", #"{"promptTokens":1,"completionTokens":1,"metadata":"x"}"#, 400, "metadata must be a JSON object"),
            ("POST", "/v1/reservations/\(rid)/commit", #"{"promptTokens":1}"#, 400, "completionTokens is required"),
            ("POST", "/v1/reservations/\(rid)/commit", #"{"promptTokens":1,"completionTokens":1,"costUsd":-1}"#, 400, "costUsd must not be negative"),
            ("POST", "/v1/reservations/\(rid)/commit", #"{"promptTokens":1,"completionTokens":1,"modelId":"acme/unknown"}"#, 400, "unknown model"),
            ("POST", "/v1/reservations/0-nosuchreservationxxxxxxxxx/commit", #"{"promptTokens":1,"completionTokens":1}"#, 404, "Reservation not found"),
            ("POST", "/v1/usage", #"{"userId":"victim","modelId":"acme/unknown","promptTokens":1,"completionTokens":1}"#, 400, "unknown model"),
            ("POST", "/v1/usage", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":1,"completionTokens":-4}"#, 400, "completionTokens must not be negative"),
            ("POST", "/v1/usage", #"{"userId":"victim","modelId":"openai/gpt-5.1","promptTokens":1,"completionTokens":1,"metadata":[1]}"#, 400, "metadata must be a JSON object"),
            ("PUT", "/v1/users/victim/unlock", #"{"maxCostPerMonth":-5}"#, 400, "maxCostPerMonth must not be negative"),
            ("PUT", "/v1/users/victim/unlock", #"{"maxCostPerMonth":"5"}"#, 400, "maxCostPerMonth must be a number"),
            ("PUT", "/v1/users/victim/unlock", #"{"enabled":"yes"}"#, 400, "enabled must be true or false"),
            ("PUT", "/v1/users/\(long)/unlock", #"{}"#, 400, "at most 128 bytes"),
            ("GET", "/v1/users/victim/usage?from=2026-02-30", nil, 400, "from must be a date"),
            ("GET", "/v1/users/victim/usage?limit=0", nil, 400, "limit must be"),
            ("GET", "/v1/users/victim/usage?bogus=1", nil, 400, "unknown query parameter"),
            ("GET", "/v1/nowhere", nil, 404, "Not found"),
            ("GET", "/v1/reservations", nil, 405, "not allowed"),
            ("DELETE", "/v1/usage", nil, 405, "not allowed"),
        ]
        let before = try snapshot(f)
        for (method, path, body, status, text) in cases {
            let (s, b) = try await http(method, base + path, token: adminToken, body: body)
            #expect(s == status, "\(method) \(path) \(body?.prefix(80) ?? ""): \(b)")
            guard case .string(let message)? = json(b)["error"] else {
                Issue.record("\(method) \(path): no {\"error\"} body: \(b)"); continue
            }
            #expect(message.contains(text), "\(method) \(path): '\(message)' lacks '\(text)'")
        }
        #expect(try snapshot(f) == before)
    }

    @Test("auth matrix: every route x {no token, wrong token, service token, admin token}")
    func authMatrix() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let server = try await ServeProcess(environment: f.processEnvironment, extraArgs: ["--no-writer"])
        defer { server.stop() }
        for route in API.routes {
            let path = route.pattern.replacingOccurrences(of: "{id}", with: "0-aaaaaaaaaaaaaaaaaaaaaaaaaa")
                .replacingOccurrences(of: "{userId}", with: "someone")
            let body = route.method == "GET" || route.method == "DELETE" ? nil : "{}"
            for (token, label) in [(nil, "none"), ("wrong-token-xxxxxxxxxxxxx", "wrong"), (serviceToken, "service"), (adminToken, "admin")] as [(String?, String)] {
                let (s, b) = try await http(route.method, server.base + path, token: token, body: body)
                let where_ = "\(route.method) \(route.pattern) with \(label) token: \(s) \(b)"
                switch (route.access, label) {
                case (.open, _):
                    #expect(s == 200, "\(where_)")
                case (_, "none"), (_, "wrong"):
                    #expect(s == 401 && b == #"{"error":"Unauthorized"}"#, "\(where_)")
                case (.admin, "service"):
                    #expect(s == 403 && b == #"{"error":"Forbidden"}"#, "\(where_)")
                default:
                    #expect(s != 401 && s != 403 && s != 405, "\(where_)")
                }
            }
        }
    }

    @Test("Redis stopped: 503 Quota store unavailable, /readyz 503; the service recovers when Redis is back")
    func redisDown() async throws {
        let f = try EngineFixture()
        defer {
            try? TestServers.services("start-outage-redis")
            f.cleanup()
        }
        var env = f.processEnvironment
        env["TOLLGATE_REDIS_URL"] = TestServers.outageRedisURL
        let server = try await ServeProcess(environment: env, extraArgs: ["--no-writer"])
        defer { server.stop() }
        let (s0, _) = try await http("PUT", server.base + "/v1/users/r/unlock", token: adminToken, body: #"{"maxCostPerMonth": 1}"#)
        #expect(s0 == 200)
        try TestServers.services("stop-outage-redis")
        let (s1, b1) = try await http("POST", server.base + "/v1/reservations", token: serviceToken, body: #"{"userId":"r","amountUsd":0.1}"#)
        #expect(s1 == 503 && b1 == #"{"error":"Quota store unavailable"}"#, "\(s1) \(b1)")
        let (s2, b2) = try await http("GET", server.base + "/readyz")
        #expect(s2 == 503 && b2.contains("redis") && !b2.contains("postgres"), "\(b2)")
        let (s3, _) = try await http("GET", server.base + "/healthz")
        #expect(s3 == 200)
        try TestServers.services("start-outage-redis")
        // A fresh Redis: the unlock is loaded from Postgres on first use.
        let (s4, b4) = try await http("POST", server.base + "/v1/reservations", token: serviceToken, body: #"{"userId":"r","amountUsd":0.1}"#)
        #expect(s4 == 201, "\(b4)")
        let (s5, _) = try await http("GET", server.base + "/readyz")
        #expect(s5 == 200)
        let (_, metrics) = try await http("GET", server.base + "/metrics")
        #expect(metrics.contains("tollgate_redis_errors_total 1"))
    }

    @Test("reports over HTTP and usage stats, as the admin sees them")
    func reportsOverHTTP() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        let server = try await ServeProcess(environment: f.processEnvironment)
        defer { server.stop() }
        _ = try await http("PUT", server.base + "/v1/users/rita/unlock", token: adminToken, body: #"{"maxCostPerMonth": 2}"#)
        let (s1, b1) = try await http("POST", server.base + "/v1/usage", token: serviceToken,
            body: #"{"userId":"rita","modelId":"openai/gpt-5.1","promptTokens":100000,"completionTokens":150000,"requestId":"r-1","metadata":{"feature":"x"}}"#)
        #expect(s1 == 201 && json(b1)["costUsd"] == .number("1.75"), "\(b1)")
        let (s2, b2) = try await http("POST", server.base + "/v1/usage", token: serviceToken,
            body: #"{"userId":"rita","modelId":"openai/gpt-5.1","promptTokens":100000,"completionTokens":150000,"requestId":"r-1"}"#)
        #expect(s2 == 200 && json(b2)["id"] == json(b1)["id"], "a retry returns the first result")
        for _ in 0..<100 where try f.streamLength() > 0 { try await Task.sleep(for: .milliseconds(50)) }
        let (_, near) = try await http("GET", server.base + "/v1/reports/near-limit", token: adminToken)
        #expect(near == #"{"columns":["userId","email","limitUsd","currentCost","percentUsed"],"rows":[{"currentCost":1.75,"email":null,"limitUsd":2,"percentUsed":87.50,"userId":"rita"}]}"#)
        let (_, usage) = try await http("GET", server.base + "/v1/users/rita/usage?limit=1", token: serviceToken)
        #expect(json(usage)["totalRequests"] == .number("1") && json(usage)["totalCost"] == .number("1.75"), "\(usage)")
        let (_, metrics) = try await http("GET", server.base + "/metrics")
        #expect(metrics.contains("tollgate_users_over_limit_threshold{threshold=\"80\"} 1"))
        #expect(metrics.contains("tollgate_users_over_limit_threshold{threshold=\"90\"} 0"))
        #expect(metrics.contains("tollgate_writer_rows_total 1"))
        let (sq, bq) = try await http("GET", server.base + "/v1/reports/models?month=13", token: adminToken)
        #expect(sq == 400 && bq.contains("month must be YYYY-MM"))
    }

    @Test("fail-open: with Redis down, reservations are granted without a hold and say so")
    func failOpen() async throws {
        let f = try EngineFixture()
        defer { f.cleanup() }
        var env = f.processEnvironment
        env["TOLLGATE_REDIS_URL"] = "redis://127.0.0.1:1"
        env["TOLLGATE_FAIL_MODE"] = "open"
        let server = try await ServeProcess(environment: env, extraArgs: ["--no-writer"])
        defer { server.stop() }
        let (s, b) = try await http("POST", server.base + "/v1/reservations", token: serviceToken, body: #"{"userId":"u","amountUsd":1}"#)
        #expect(s == 201 && json(b)["failOpen"] == .bool(true) && json(b)["reservationId"] == .null, "\(b)")
        let (sa, ba) = try await http("GET", server.base + "/v1/users/u/access", token: serviceToken)
        #expect(sa == 200 && json(ba)["allowed"] == .bool(true))
        // Commits still need Redis: they fail loudly, never silently.
        let (sc, bc) = try await http("POST", server.base + "/v1/usage", token: serviceToken,
                                      body: #"{"userId":"u","modelId":"openai/gpt-5.1","promptTokens":1,"completionTokens":1}"#)
        #expect(sc == 503 && bc == #"{"error":"Quota store unavailable"}"#)
    }

    @Test("ops/openapi.yaml and the server's routes agree")
    func openAPI() throws {
        let text = try String(contentsOf: TestServers.packageRoot.appendingPathComponent("ops/openapi.yaml"), encoding: .utf8)
        var documented = Set<String>()
        var inPaths = false, current = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" { inPaths = true; continue }
            guard inPaths else { continue }
            if line.hasPrefix("  /") { current = String(line.dropFirst(2).dropLast()) }
            let t = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("    "), !line.hasPrefix("     "), ["get:", "post:", "put:", "delete:", "patch:"].contains(t) {
                documented.insert(t.dropLast().uppercased() + " " + current)
            }
        }
        let served = Set(API.routes.map { "\($0.method) \($0.pattern)" })
        #expect(documented == served, "documented only: \(documented.subtracting(served)); served only: \(served.subtracting(documented))")
    }
}
