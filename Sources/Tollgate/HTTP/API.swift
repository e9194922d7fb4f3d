import Dispatch
import Foundation
import HTTPServer
import Synchronization
import PostgresClient
import RedisClient
import TollgateCore

/// Who may call a route.
enum Access { case open, service, admin }

/// The v1 API (documented in ops/openapi.yaml) over the quota engine and the durable record.
final class API: Sendable {
    struct Route: Sendable {
        var method: String
        /// Path pattern with `{name}` segments, e.g. `/v1/reservations/{id}/commit`.
        var pattern: String
        var access: Access
        var handler: @Sendable (API, HTTPRequest, [String: String]) throws -> HTTPResponse
        /// The pattern's segments: a name for `{name}`, else the literal text.
        let segments: [(literal: Substring, parameter: String?)]

        init(method: String, pattern: String, access: Access,
             handler: @escaping @Sendable (API, HTTPRequest, [String: String]) throws -> HTTPResponse) {
            self.method = method
            self.pattern = pattern
            self.access = access
            self.handler = handler
            self.segments = pattern.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { p in
                p.hasPrefix("{") ? (p, String(p.dropFirst().dropLast())) : (p, nil)
            }
        }
    }

    let engine: QuotaEngine
    let records: UsageRecords
    let reports: Reports
    let metrics = ServiceMetrics()
    let writerMetrics: WriterMetrics?
    let serviceToken: [UInt8]
    let adminToken: [UInt8]
    let failOpen: Bool
    let redis: RedisPool
    let database: PostgresPool

    init(engine: QuotaEngine, redis: RedisPool, database: PostgresPool, serviceToken: String, adminToken: String,
         failOpen: Bool, writerMetrics: WriterMetrics?) {
        self.engine = engine
        self.redis = redis
        self.database = database
        self.records = UsageRecords(pool: database)
        self.reports = Reports(pool: database)
        self.serviceToken = Array(serviceToken.utf8)
        self.adminToken = Array(adminToken.utf8)
        self.failOpen = failOpen
        self.writerMetrics = writerMetrics
    }

    static let routes: [Route] = [
        Route(method: "POST", pattern: "/v1/reservations", access: .service) { api, r, _ in try api.reserve(r) },
        Route(method: "POST", pattern: "/v1/reservations/{id}/commit", access: .service) { api, r, p in try api.commit(r, p["id"]!) },
        Route(method: "POST", pattern: "/v1/reservations/{id}/release", access: .service) { api, r, p in try api.release(r, p["id"]!) },
        Route(method: "POST", pattern: "/v1/usage", access: .service) { api, r, _ in try api.logUsage(r) },
        Route(method: "GET", pattern: "/v1/users/{userId}/access", access: .service) { api, _, p in try api.access(p["userId"]!) },
        Route(method: "GET", pattern: "/v1/users/{userId}/usage", access: .service) { api, r, p in try api.usage(r, p["userId"]!) },
        Route(method: "PUT", pattern: "/v1/users/{userId}/unlock", access: .admin) { api, r, p in try api.putUnlock(r, p["userId"]!) },
        Route(method: "DELETE", pattern: "/v1/users/{userId}/unlock", access: .admin) { api, _, p in try api.deleteUnlock(p["userId"]!) },
        Route(method: "GET", pattern: "/v1/users/{userId}/unlock", access: .admin) { api, _, p in try api.getUnlock(p["userId"]!) },
        Route(method: "GET", pattern: "/v1/reports/top-users", access: .admin) { api, r, _ in try api.report(.topUsers, r) },
        Route(method: "GET", pattern: "/v1/reports/models", access: .admin) { api, r, _ in try api.report(.models, r) },
        Route(method: "GET", pattern: "/v1/reports/near-limit", access: .admin) { api, r, _ in try api.report(.nearLimit, r) },
        Route(method: "GET", pattern: "/healthz", access: .open) { _, _, _ in .json(200, #"{"status":"ok"}"#) },
        Route(method: "GET", pattern: "/readyz", access: .open) { api, _, _ in api.ready() },
        Route(method: "GET", pattern: "/metrics", access: .open) { api, _, _ in api.renderMetrics() },
    ]

    // MARK: Dispatch

    /// Request ids: a random prefix per process and a counter (cheaper than 128 random bits per request).
    private static let requestIdPrefix = String(IdGenerator.random128().prefix(10))
    private static let requestCounter = Atomic<Int>(0)
    static func nextRequestId() -> String {
        "\(requestIdPrefix)-\(requestCounter.add(1, ordering: .relaxed).newValue)"
    }

    /// Answers one request: route, auth, handler, errors as `{"error": ...}`, one JSON log line.
    func handle(_ request: HTTPRequest) -> HTTPResponse {
        let start = ContinuousClock.now
        let requestId = request.headers["x-request-id"].flatMap { Validation.isValidId($0) ? $0 : nil } ?? Self.nextRequestId()
        var routeName = "unmatched"
        var response: HTTPResponse
        do {
            let (route, params) = try match(request)
            routeName = route.pattern
            try authorize(request, route.access)
            if request.bodyTooLarge { throw APIError(413, "request body is larger than 64 KiB") }
            response = try route.handler(self, request, params)
        } catch let e as APIError {
            response = .json(e.status, JSONOut.object(["error": .string(e.message)]))
            response.headers += e.headers
        } catch let e as EngineError {
            response = errorResponse(e)
        } catch {
            response = .json(500, JSONOut.object(["error": .string("internal error")]))
            Log.warn("unexpected error", ["error": "\(error)", "requestId": requestId])
        }
        response.headers.append(("X-Request-Id", requestId))
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        metrics.request(route: routeName, status: response.status, seconds: seconds)
        if routeName != "/metrics" && routeName != "/healthz" {
            let micros = Int(seconds * 1_000_000)
            let millis = "\(micros / 1000)." + String(String(1000 + micros % 1000).dropFirst())
            Log.write("info", "request", [
                ("method", request.method), ("route", routeName), ("status", String(response.status)),
                ("durationMs", millis), ("requestId", requestId),
            ])
        }
        return response
    }

    func match(_ request: HTTPRequest) throws(APIError) -> (Route, [String: String]) {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        var allowed: [String] = []
        for route in Self.routes where route.segments.count == parts.count {
            var params: [String: String] = [:]
            var ok = true
            for (segment, value) in zip(route.segments, parts) {
                if let name = segment.parameter {
                    if value.isEmpty { ok = false; break }
                    params[name] = String(value)
                } else if segment.literal != value {
                    ok = false
                    break
                }
            }
            guard ok else { continue }
            if route.method == request.method { return (route, params) }
            allowed.append(route.method)
        }
        if !allowed.isEmpty {
            throw APIError(405, "method \(request.method) not allowed here (allowed: \(allowed.joined(separator: ", ")))",
                           headers: [("Allow", allowed.joined(separator: ", "))])
        }
        throw APIError(404, "Not found")
    }

    func authorize(_ request: HTTPRequest, _ access: Access) throws(APIError) {
        if access == .open { return }
        guard let header = request.headers["authorization"], header.hasPrefix("Bearer ") else {
            throw APIError(401, "Unauthorized", headers: [("WWW-Authenticate", "Bearer")])
        }
        let token = Array(header.dropFirst(7).utf8)
        if Self.constantTimeEqual(token, adminToken) { return }
        if Self.constantTimeEqual(token, serviceToken) {
            if access == .admin { throw APIError(403, "Forbidden") }
            return
        }
        throw APIError(401, "Unauthorized", headers: [("WWW-Authenticate", "Bearer")])
    }

    /// Compares without an early exit, so timing does not reveal how much of a token matched.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0 && !b.isEmpty
    }

    func errorResponse(_ e: EngineError) -> HTTPResponse {
        switch e.code {
        case .invalid: return .json(400, JSONOut.object(["error": .string(e.message)]))
        case .notFound: return .json(404, JSONOut.object(["error": .string(e.message)]))
        case .conflict: return .json(409, JSONOut.object(["error": .string(e.message)]))
        case .quotaStoreUnavailable:
            metrics.redisError()
            Log.warn("Redis unavailable", ["error": e.message])
            return .json(503, #"{"error":"Quota store unavailable"}"#)
        case .databaseUnavailable:
            metrics.postgresError()
            Log.warn("Postgres unavailable", ["error": e.message])
            return .json(503, #"{"error":"Database unavailable"}"#)
        }
    }

    // MARK: Handlers

    func reserve(_ r: HTTPRequest) throws -> HTTPResponse {
        let b = try RequestBody(r.body, allowed: ["userId", "modelId", "promptTokens", "maxCompletionTokens", "amountUsd", "reservationId", "ttlSeconds"])
        let userId = try b.id("userId")
        let estimate: Estimate
        if b.has("amountUsd") {
            if b.has("modelId") || b.has("promptTokens") || b.has("maxCompletionTokens") {
                throw APIError(400, "give either amountUsd, or modelId with promptTokens and maxCompletionTokens, not both")
            }
            estimate = .amount(try b.usd("amountUsd"))
        } else {
            guard b.has("modelId") else { throw APIError(400, "give amountUsd, or modelId with promptTokens and maxCompletionTokens") }
            estimate = .tokens(modelId: try b.id("modelId"), promptTokens: try b.tokens("promptTokens"),
                               maxCompletionTokens: try b.tokens("maxCompletionTokens"))
        }
        let request = ReserveRequest(userId: userId, estimate: estimate, idempotencyKey: try b.optionalId("reservationId"),
                                     ttlSeconds: try b.int("ttlSeconds", in: 1...engine.configuration.maxReservationTTLSeconds))
        let outcome: ReserveOutcome
        do {
            outcome = try engine.reserve(request)
        } catch let e as EngineError where e.code == .quotaStoreUnavailable && failOpen {
            metrics.decision("granted", reason: "fail_open")
            metrics.redisError()
            Log.warn("Redis unavailable: granting without a reservation (fail-open)", ["userId": userId])
            return .json(201, JSONOut.object([
                "reservationId": .null, "userId": .string(userId), "amountUsd": .null, "currentCost": .null,
                "reservedCost": .null, "maxCost": .null, "expiresAt": .null, "failOpen": .bool(true),
            ]))
        }
        switch outcome {
        case .granted(let g):
            metrics.decision("granted")
            return .json(g.replayed ? 200 : 201, JSONOut.object([
                "reservationId": .string(g.id), "userId": .string(g.userId), "amountUsd": .usd(g.amount),
                "currentCost": .usd(g.currentCost), "reservedCost": .usd(g.reservedCost), "maxCost": .usd(g.maxCost),
                "expiresAt": .string(Self.iso(ms: g.expiresAtMs)),
            ]))
        case .denied(let d):
            metrics.decision("denied", reason: d.reason.label)
            return .json(403, JSONOut.object(["error": .string(d.reason.rawValue)]))
        }
    }

    func commit(_ r: HTTPRequest, _ id: String) throws -> HTTPResponse {
        let b = try RequestBody(r.body, allowed: ["promptTokens", "completionTokens", "modelId", "costUsd", "metadata"])
        let request = CommitRequest(
            promptTokens: try b.tokens("promptTokens"), completionTokens: try b.tokens("completionTokens"),
            modelId: try b.optionalId("modelId"), cost: try b.optionalUSD("costUsd"), metadata: try b.metadata())
        let c = try engine.commit(reservationId: id, request)
        return .json(200, JSONOut.object([
            "reservationId": .string(c.reservationId), "costUsd": .usd(c.cost), "currentCost": .usd(c.currentCost),
            "maxCost": .usd(c.maxCost),
        ]))
    }

    func release(_ r: HTTPRequest, _ id: String) throws -> HTTPResponse {
        if !r.body.isEmpty { _ = try RequestBody(r.body, allowed: []) }
        let released = try engine.release(reservationId: id)
        return .json(200, JSONOut.object(["released": .bool(released)]))
    }

    func logUsage(_ r: HTTPRequest) throws -> HTTPResponse {
        let b = try RequestBody(r.body, allowed: ["userId", "modelId", "promptTokens", "completionTokens", "requestId", "costUsd", "metadata"])
        let request = UsageRequest(
            userId: try b.id("userId"), modelId: try b.id("modelId"), promptTokens: try b.tokens("promptTokens"),
            completionTokens: try b.tokens("completionTokens"), requestId: try b.optionalId("requestId"),
            cost: try b.optionalUSD("costUsd"), metadata: try b.metadata())
        let u = try engine.logUsage(request)
        return .json(u.replayed ? 200 : 201, JSONOut.object([
            "id": .string(u.id), "costUsd": .usd(u.cost), "currentCost": .usd(u.currentCost), "maxCost": .usd(u.maxCost),
        ]))
    }

    func access(_ userId: String) throws -> HTTPResponse {
        try Self.validId(userId, "userId")
        let a: AccessResult
        do {
            a = try engine.access(userId: userId)
        } catch let e as EngineError where e.code == .quotaStoreUnavailable && failOpen {
            metrics.redisError()
            return .json(200, JSONOut.object(["allowed": .bool(true), "currentCost": .null, "maxCost": .null, "failOpen": .bool(true)]))
        }
        var fields: [String: JSONValue] = ["allowed": .bool(a.allowed), "currentCost": .usd(a.currentCost), "maxCost": .usd(a.maxCost)]
        if let reason = a.reason { fields["reason"] = .string(reason.rawValue) }
        return .json(200, JSONOut.object(fields))
    }

    func usage(_ r: HTTPRequest, _ userId: String) throws -> HTTPResponse {
        try Self.validId(userId, "userId")
        for k in r.query.keys where !["from", "to", "limit", "cursor"].contains(k) {
            throw APIError(400, "unknown query parameter '\(k)'")
        }
        let month = Month(try engine.currentMonth())!
        let from = try Self.date(r.query["from"], "from") ?? month.firstDay
        let to = try Self.date(r.query["to"], "to") ?? month.lastDay
        guard from <= to else { throw APIError(400, "from must not be after to") }
        var limit = 100
        if let l = r.query["limit"] {
            guard let n = Int(l), (1...1000).contains(n) else { throw APIError(400, "limit must be a whole number from 1 to 1000") }
            limit = n
        }
        let stats = try databaseCall { try records.stats(userId: userId, from: from, to: to, limit: limit, cursor: r.query["cursor"]) }
        let logs: [JSONValue] = stats.logs.map { l in
            .object([
                "id": .string(l.id), "userId": .string(l.userId), "modelId": .string(l.modelId),
                "promptTokens": .int(l.promptTokens), "completionTokens": .int(l.completionTokens),
                "totalTokens": .int(l.totalTokens), "estimatedCost": .usd(l.cost),
                "metadata": l.metadata.flatMap { try? JSONValue.parse($0) } ?? .null, "createdAt": .string(l.createdAt),
            ])
        }
        return .json(200, JSONOut.object([
            "totalRequests": .int(stats.totalRequests), "totalCost": .usd(stats.totalCost), "totalTokens": .int(stats.totalTokens),
            "logs": .array(logs), "nextCursor": stats.nextCursor.map { .string($0) } ?? .null,
        ]))
    }

    func putUnlock(_ r: HTTPRequest, _ userId: String) throws -> HTTPResponse {
        try Self.validId(userId, "userId")
        let b = r.body.isEmpty ? nil : try RequestBody(r.body, allowed: ["enabled", "maxCostPerMonth", "notes"])
        let enabled = try b?.bool("enabled") ?? true
        var limit: Money?
        if let b, b.has("maxCostPerMonth") {
            limit = try b.usd("maxCostPerMonth")
            if limit! > Money.maxLimit { throw APIError(400, "maxCostPerMonth must be at most \(Money.maxLimit.usd)") }
        }
        let notes = try b?.optionalString("notes")
        let record = try engine.setUnlock(userId: userId, enabled: enabled, maxCostPerMonth: limit, notes: notes)
        return .json(200, Self.unlockJSON(record))
    }

    func deleteUnlock(_ userId: String) throws -> HTTPResponse {
        try Self.validId(userId, "userId")
        guard let record = try engine.disable(userId: userId) else {
            throw APIError(404, "no unlock record for this user")
        }
        return .json(200, Self.unlockJSON(record))
    }

    func getUnlock(_ userId: String) throws -> HTTPResponse {
        try Self.validId(userId, "userId")
        guard let record = try engine.unlockRecord(userId: userId) else { throw APIError(404, "no unlock record for this user") }
        return .json(200, Self.unlockJSON(record))
    }

    func report(_ kind: Reports.Kind, _ r: HTTPRequest) throws -> HTTPResponse {
        for k in r.query.keys where !["month", "threshold", "limit"].contains(k) {
            throw APIError(400, "unknown query parameter '\(k)'")
        }
        let options = try Reports.Options(month: r.query["month"], threshold: r.query["threshold"], limit: r.query["limit"])
        let table = try databaseCall { try reports.run(kind, options) }
        return .json(200, table.json)
    }

    func ready() -> HTTPResponse {
        var down: [String] = []
        do { _ = try redis.runBlocking(RedisCommand(["PING"])) } catch { down.append("redis") }
        do { _ = try database.query("SELECT 1") } catch { down.append("postgres") }
        if down.isEmpty { return .json(200, #"{"status":"ready"}"#) }
        return .json(503, JSONOut.object(["status": .string("unavailable"), "unavailable": .array(down.map { .string($0) }),
                                          "error": .string("not ready: " + down.joined(separator: " and ") + " unreachable")]))
    }

    func renderMetrics() -> HTTPResponse {
        var text = metrics.render()
        if let w = writerMetrics {
            text += "# TYPE tollgate_writer_rows_total counter\ntollgate_writer_rows_total \(w.rowsWritten)\n"
            text += "# TYPE tollgate_writer_batches_total counter\ntollgate_writer_batches_total \(w.batchesWritten)\n"
            text += "# TYPE tollgate_writer_retries_total counter\ntollgate_writer_retries_total \(w.retryCount)\n"
            text += "# TYPE tollgate_writer_dead_letters_total counter\ntollgate_writer_dead_letters_total \(w.deadLetterCount)\n"
            text += "# HELP tollgate_writer_limit_alerts_total Threshold alerts (80/90/100 % of a limit) written.\n"
            text += "# TYPE tollgate_writer_limit_alerts_total counter\ntollgate_writer_limit_alerts_total \(w.alertsWritten)\n"
            text += "# TYPE tollgate_writer_postgres_down gauge\ntollgate_writer_postgres_down \(w.isPostgresDown ? 1 : 0)\n"
        }
        // Users who crossed 80/90/100 % of their limit this month (from the alert events written so far).
        if let rows = try? database.query("""
            SELECT threshold_percent AS t, count(*) AS n FROM tollgate_alert
             WHERE month = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') GROUP BY threshold_percent
            """) {
            var counts: [String: String] = ["80": "0", "90": "0", "100": "0"]
            for r in rows { if let t = r["t"], let n = r["n"] { counts[t] = n } }
            text += "# HELP tollgate_users_over_limit_threshold Users who reached a percentage of their monthly limit this month.\n"
            text += "# TYPE tollgate_users_over_limit_threshold gauge\n"
            for t in ["80", "90", "100"] { text += "tollgate_users_over_limit_threshold{threshold=\"\(t)\"} \(counts[t]!)\n" }
        }
        if let backlog = try? redis.withConnection({ try UsageWriter.backlog(redis: $0, prefix: engine.configuration.prefix, partitions: engine.configuration.partitions) }) {
            text += "# HELP tollgate_writer_backlog_events Events in a partition stream not yet written to Postgres.\n# TYPE tollgate_writer_backlog_events gauge\n"
            for b in backlog { text += "tollgate_writer_backlog_events{partition=\"\(b.partition)\"} \(b.length)\n" }
            text += "# HELP tollgate_writer_backlog_age_seconds Age of the oldest unwritten event of a partition.\n# TYPE tollgate_writer_backlog_age_seconds gauge\n"
            for b in backlog { text += "tollgate_writer_backlog_age_seconds{partition=\"\(b.partition)\"} \(b.oldestAgeSeconds)\n" }
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4")], body: Array(text.utf8))
    }

    // MARK: Helpers

    func databaseCall<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as PostgresError where e.code == .connection {
            throw EngineError(.databaseUnavailable, e.message)
        }
    }

    static func validId(_ s: String, _ field: String) throws(APIError) {
        do { _ = try Validation.id(s, field: field) } catch { throw APIError(400, error.description) }
    }

    static func date(_ s: String?, _ field: String) throws(APIError) -> String? {
        guard let s else { return nil }
        let p = s.split(separator: "-")
        guard p.count == 3, p[0].count == 4, p[1].count == 2, p[2].count == 2, let y = Int(p[0]), let m = Int(p[1]), let d = Int(p[2]),
              (1970...9999).contains(y), (1...12).contains(m), (1...31).contains(d),
              Month.civil(fromDays: Month.days(year: y, month: m, day: d)) == (y, m, d)
        else { throw APIError(400, "\(field) must be a date YYYY-MM-DD") }
        return s
    }

    static func iso(ms: Int64) -> String {
        utcISO(ms: ms)
    }

    static func unlockJSON(_ r: UnlockRecord) -> String {
        JSONOut.object([
            "id": .string(r.id), "userId": .string(r.userId), "enabled": .bool(r.enabled), "maxCostPerMonth": .usd(r.maxCostPerMonth),
            "notes": r.notes.map { .string($0) } ?? .null, "createdAt": .string(r.createdAt), "updatedAt": .string(r.updatedAt),
        ])
    }
}

