import PostgresClient
import RedisClient
import TollgateCore

/// Settings of the quota engine. Defaults are stated per field.
public struct EngineConfiguration: Sendable {
    /// Redis key prefix, default `tg`.
    public var prefix = "tg"
    /// Partition count, fixed per deployment, default 16.
    public var partitions = 16
    /// Default hold time of a reservation, seconds (default 120).
    public var reservationTTLSeconds = 120
    /// Largest per-call hold time, seconds (default 3600).
    public var maxReservationTTLSeconds = 3600
    /// How long a reservation's details outlive its hold, so a late commit is still charged (default 24 h).
    public var lateCommitWindowSeconds = 86_400
    /// How long commit, release and usage ids are remembered for retries (default 7 days).
    public var idempotencyTTLSeconds = 604_800
    /// How long a user without an unlock record is remembered as such before Postgres is asked again (30 s).
    public var absentRecheckSeconds = 30
    /// Added to Redis time inside every script. Always 0 in production; tests use it to move to other
    /// months without waiting. Not settable from the environment.
    public var clockOffsetMs: Int64 = 0

    public init() {}

    public init(_ c: Configuration) {
        prefix = c.prefix
        partitions = c.partitions
        reservationTTLSeconds = c.reservationTTLSeconds
        maxReservationTTLSeconds = c.maxReservationTTLSeconds
        idempotencyTTLSeconds = c.idempotencyTTLSeconds
    }
}

/// The guide's service layer over Redis (hot state, atomic Lua) and Postgres (the truth for unlock records):
/// enable, disable, canUserAccessAI, reserve, commit, release, logUsage, monthly cost.
///
/// Safe to share between any number of tasks and threads; any number of engines (processes) may share one
/// Redis: every decision is one script.
///
/// Every operation comes twice: blocking (for threads, such as the HTTP workers: the calling thread does the
/// Redis round trip on a pooled connection, with no thread hop) and `async` (for tasks: the same call on a
/// thread of its own, so tasks never block the cooperative pool). In async code the async one is chosen.
public final class QuotaEngine: Sendable {
    public let configuration: EngineConfiguration
    public let pricing: Pricing
    let redis: RedisPool
    let unlocks: UnlockStore
    let keys: Keys

    public init(redis: RedisPool, database: PostgresPool, pricing: Pricing, configuration: EngineConfiguration = .init()) {
        self.redis = redis
        self.unlocks = UnlockStore(pool: database)
        self.pricing = pricing
        self.configuration = configuration
        self.keys = Keys(prefix: configuration.prefix, partitions: configuration.partitions)
    }

    private var offset: String { String(configuration.clockOffsetMs) }
    private var idempotencyMs: String { String(configuration.idempotencyTTLSeconds * 1000) }

    // MARK: Unlock records (Postgres first, then Redis)

    /// The guide's enableAIForUser: creates or updates the record (enabled, `maxCostPerMonth` nil = unlimited,
    /// `notes` nil keeps existing notes), then applies it to Redis.
    @discardableResult
    public func enable(userId: String, maxCostPerMonth: Money?, notes: String? = nil) throws -> UnlockRecord {
        try setUnlock(userId: userId, enabled: true, maxCostPerMonth: maxCostPerMonth, notes: notes)
    }

    /// Creates or updates a record with the given state, Postgres first (the truth), then Redis.
    @discardableResult
    public func setUnlock(userId: String, enabled: Bool, maxCostPerMonth: Money?, notes: String? = nil) throws -> UnlockRecord {
        try validUser(userId)
        if let m = maxCostPerMonth { _ = try invalid { try Validation.limit(m, field: "maxCostPerMonth") } }
        if let n = notes, n.utf8.count > 4096 { throw EngineError(.invalid, "notes must be at most 4096 bytes") }
        let record = try database { try unlocks.upsert(userId: userId, enabled: enabled, limit: .some(maxCostPerMonth), notes: notes) }
        try apply(record)
        return record
    }

    /// The guide's disableAIForUser. Returns nil when the user has no record.
    @discardableResult
    public func disable(userId: String) throws -> UnlockRecord? {
        try validUser(userId)
        guard let record = try database({ try unlocks.disable(userId: userId) }) else { return nil }
        try apply(record)
        return record
    }

    /// The unlock record in Postgres, or nil.
    public func unlockRecord(userId: String) throws -> UnlockRecord? {
        try validUser(userId)
        return try database { try unlocks.find(userId: userId) }
    }

    /// Writes a record's state into Redis (older versions never overwrite newer ones).
    func apply(_ record: UnlockRecord) throws {
        _ = try command(Scripts.setUnlock.evalsha(keys: [keys.user(record.userId)], args: [
            record.enabled ? "1" : "0", String(record.maxCostPerMonth?.nanos ?? -1), String(record.version), "0", offset,
        ]))
    }

    /// Marks a user with no record as such in Redis (denied; Postgres is asked again after a while).
    func applyAbsent(userId: String, version: Int64 = 0) throws {
        _ = try command(Scripts.setUnlock.evalsha(keys: [keys.user(userId)], args: [
            "absent", "-1", String(version), String(configuration.absentRecheckSeconds * 1000), offset,
        ]))
    }

    /// Loads a user's unlock state from Postgres into Redis (when Redis has none). A user without a record
    /// is marked absent as of the Postgres clock now, newer than any earlier record of theirs.
    func load(userId: String) throws {
        if let record = try database({ try unlocks.find(userId: userId) }) {
            try apply(record)
        } else {
            let now = try database { try unlocks.nowVersion() }
            try applyAbsent(userId: userId, version: now)
        }
    }

    /// A user's holds that have not expired (by Redis time).
    public func openReservations(userId: String) throws -> [(id: String, amount: Money, expiresAtMs: Int64)] {
        try validUser(userId)
        let now = try redisTimeMs()
        let members = try command(RedisCommand(["ZRANGEBYSCORE", keys.holds(userId), String(now), "+inf", "WITHSCORES"])).array ?? []
        var out: [(id: String, amount: Money, expiresAtMs: Int64)] = []
        for i in stride(from: 0, to: members.count - 1, by: 2) {
            let parts = (members[i].string ?? "").split(separator: "|")
            guard parts.count == 2, let amount = Int64(parts[1]) else { continue }
            // Scores are expiry times in whole ms, which Redis prints as integers.
            let expiresAtMs = members[i + 1].int ?? 0
            out.append((String(parts[0]), Money(nanos: amount), expiresAtMs))
        }
        return out
    }

    // MARK: Decisions

    /// The guide's canUserAccessAI: allowed, this month's committed cost, the limit, and the reason if not.
    public func access(userId: String) throws -> AccessResult { try perform(accessCall(userId: userId)) }

    func accessCall(userId: String) throws -> Call<AccessResult> {
        try validUser(userId)
        return Call(loads: userId, Scripts.access.evalsha(keys: [keys.user(userId)], args: [offset])) { r in
            let reason = DenialReason(code: r[1].string ?? "")
            return AccessResult(
                allowed: r[0].int == 1, currentCost: Money(nanos: r[2].int ?? 0), maxCost: Self.limit(r[3]),
                reason: reason, reservedCost: Money(nanos: max(0, r[4].int ?? 0)), month: r[5].string ?? "")
        }
    }

    /// Holds an estimated cost if the user's limit allows it, atomically for all instances.
    public func reserve(_ request: ReserveRequest) throws -> ReserveOutcome { try perform(reserveCall(request)) }

    func reserveCall(_ request: ReserveRequest) throws -> Call<ReserveOutcome> {
        try validUser(request.userId)
        if let key = request.idempotencyKey { _ = try invalid { try Validation.id(key, field: "reservationId") } }
        let ttl = request.ttlSeconds ?? configuration.reservationTTLSeconds
        guard ttl >= 1, ttl <= configuration.maxReservationTTLSeconds else {
            throw EngineError(.invalid, "ttlSeconds must be from 1 to \(configuration.maxReservationTTLSeconds)")
        }
        var amount: Money
        var model = "", pin = "", pout = "", pver = ""
        switch request.estimate {
        case .amount(let a):
            amount = try invalid { try Validation.requestAmount(a, field: "amountUsd") }
        case .tokens(let modelId, let prompt, let completion):
            _ = try invalid { try Validation.tokens(prompt, field: "promptTokens") }
            _ = try invalid { try Validation.tokens(completion, field: "maxCompletionTokens") }
            let price = try price(of: modelId)
            amount = price.cost(promptTokens: prompt, completionTokens: completion)
            (model, pin, pout, pver) = (price.id, String(price.inputPerMillion.nanos), String(price.outputPerMillion.nanos), pricing.version)
        }
        let handle = ReservationHandle(partition: keys.partition(of: request.userId))
        let key = request.idempotencyKey
        let scriptKeys = [
            keys.user(request.userId), keys.holds(request.userId), keys.reservation(handle),
            keys.reserveKey(request.userId, key ?? ""),
        ]
        let args = [
            request.userId, handle.text, String(amount.nanos), String(ttl * 1000),
            String(configuration.lateCommitWindowSeconds * 1000), idempotencyMs,
            model, pin, pout, pver, offset, key == nil ? "0" : "1",
        ]
        let userId = request.userId
        return Call(loads: userId, Scripts.reserve.evalsha(keys: scriptKeys, args: args)) { r in
            if r[0].int == 1 {
                return .granted(Reservation(
                    id: r[1].string ?? "", userId: userId, amount: Money(nanos: r[2].int ?? 0),
                    currentCost: Money(nanos: r[3].int ?? 0), reservedCost: Money(nanos: r[4].int ?? 0),
                    maxCost: Self.limit(r[5]), expiresAtMs: r[6].int ?? 0, month: r[7].string ?? "", replayed: r[8].int == 1))
            }
            guard let reason = DenialReason(code: r[1].string ?? "") else {
                throw EngineError(.quotaStoreUnavailable, "unexpected reply from reserve: \(r)")
            }
            return .denied(Denial(
                reason: reason, currentCost: Money(nanos: r[2].int ?? 0), reservedCost: Money(nanos: max(0, r[3].int ?? 0)),
                maxCost: Self.limit(r[4])))
        }
    }

    /// Replaces a reservation by the actual cost and records the usage event, atomically. Idempotent:
    /// a retry returns the first result. A commit after the hold expired is still charged (within
    /// `lateCommitWindowSeconds`). A commit after release is a `.conflict`.
    public func commit(reservationId: String, _ request: CommitRequest) throws -> CommitResult {
        try perform(commitCall(reservationId: reservationId, request))
    }

    func commitCall(reservationId: String, _ request: CommitRequest) throws -> Call<CommitResult> {
        let handle = try parseHandle(reservationId)
        _ = try invalid { try Validation.tokens(request.promptTokens, field: "promptTokens") }
        _ = try invalid { try Validation.tokens(request.completionTokens, field: "completionTokens") }
        var cost = "", model = "", pver = ""
        if let c = request.cost {
            cost = String(try invalid { try Validation.requestAmount(c, field: "costUsd") }.nanos)
            if let m = request.modelId { model = try invalid { try Validation.id(m, field: "modelId") } }
            pver = "provider"
        } else if let m = request.modelId {
            let price = try price(of: m)
            cost = String(price.cost(promptTokens: request.promptTokens, completionTokens: request.completionTokens).nanos)
            (model, pver) = (price.id, pricing.version)
        }
        let command = Scripts.commit.evalsha(keys: [keys.reservation(handle), keys.stream(handle.partition)], args: [
            keys.base(handle.partition), handle.text, String(request.promptTokens), String(request.completionTokens),
            cost, model, pver, request.metadata ?? "", idempotencyMs, offset,
        ])
        return Call(loads: nil, command) { r in
            if r[0].int != 1 {
                switch r[1].string {
                case "NO_SUCH_RESERVATION": throw EngineError(.notFound, "Reservation not found")
                case "RELEASED": throw EngineError(.conflict, "Reservation was released; record the usage with POST /v1/usage instead")
                case "NO_PRICE": throw EngineError(.invalid, "this reservation has no model: give modelId or costUsd")
                default: throw EngineError(.quotaStoreUnavailable, "unexpected reply from commit: \(r)")
                }
            }
            return CommitResult(
                reservationId: r[1].string ?? "", cost: Money(nanos: r[2].int ?? 0), currentCost: Money(nanos: r[3].int ?? 0),
                maxCost: Self.limit(r[4]), month: r[5].string ?? "", replayed: r[6].int == 1, createdAtMs: r[7].int ?? 0)
        }
    }

    /// Frees a reservation's hold (the request failed before any cost). Returns whether money was still
    /// held. Idempotent. Releasing a committed reservation changes nothing and returns false.
    public func release(reservationId: String) throws -> Bool { try perform(releaseCall(reservationId: reservationId)) }

    func releaseCall(reservationId: String) throws -> Call<Bool> {
        let handle = try parseHandle(reservationId)
        let command = Scripts.release.evalsha(keys: [keys.reservation(handle)], args: [
            keys.base(handle.partition), handle.text, idempotencyMs,
        ])
        return Call(loads: nil, command) { r in
            if r[0].int == 1 { return r[1].int == 1 }
            switch r[1].string {
            case "COMMITTED": return false
            case "NO_SUCH_RESERVATION": throw EngineError(.notFound, "Reservation not found")
            default: throw EngineError(.quotaStoreUnavailable, "unexpected reply from release: \(r)")
            }
        }
    }

    /// The guide's logAIUsage: records spend that already happened (never refused). Idempotent on `requestId`.
    public func logUsage(_ request: UsageRequest) throws -> UsageResult { try perform(logUsageCall(request)) }

    func logUsageCall(_ request: UsageRequest) throws -> Call<UsageResult> {
        try validUser(request.userId)
        _ = try invalid { try Validation.tokens(request.promptTokens, field: "promptTokens") }
        _ = try invalid { try Validation.tokens(request.completionTokens, field: "completionTokens") }
        var cost: Money
        var model = try invalid { try Validation.id(request.modelId, field: "modelId") }
        var pver = "provider"
        if let c = request.cost {
            cost = try invalid { try Validation.requestAmount(c, field: "costUsd") }
        } else {
            let price = try price(of: request.modelId)
            cost = price.cost(promptTokens: request.promptTokens, completionTokens: request.completionTokens)
            (model, pver) = (price.id, pricing.version)
        }
        if let id = request.requestId { _ = try invalid { try Validation.id(id, field: "requestId") } }
        let p = keys.partition(of: request.userId)
        let usageId = "\(p)-\(IdGenerator.random128())"
        // Without a client key the id itself is the key: unique, so nothing is ever replayed by accident.
        let idemKey = keys.usageKey(request.userId, request.requestId ?? usageId)
        let args = [
            request.userId, usageId, model, String(request.promptTokens), String(request.completionTokens),
            String(cost.nanos), pver, request.metadata ?? "", idempotencyMs, offset,
        ]
        let command = Scripts.logUsage.evalsha(keys: [keys.user(request.userId), idemKey, keys.stream(p)], args: args)
        return Call(loads: request.userId, command) { r in
            UsageResult(
                id: r[1].string ?? "", cost: Money(nanos: r[2].int ?? 0), currentCost: Money(nanos: r[3].int ?? 0),
                maxCost: Self.limit(r[4]), month: r[5].string ?? "", replayed: r[6].int == 1, createdAtMs: r[7].int ?? 0)
        }
    }

    /// Committed spend of a user in a month (default: the current month, by Redis time), from Redis:
    /// includes events not yet flushed to Postgres.
    public func monthlyCost(userId: String, month: Month? = nil) throws -> Money {
        try validUser(userId)
        var m = month?.description ?? ""
        if month == nil { m = try currentMonth() }
        let v = try command(RedisCommand(["HGET", keys.user(userId), "spent:" + m]))
        return Money(nanos: v.int ?? 0)
    }

    /// The current UTC month by Redis time (plus the clock offset).
    public func currentMonth() throws -> String {
        Month(epochMs: try redisTimeMs()).description
    }

    /// Redis time in ms since the epoch, plus the clock offset.
    public func redisTimeMs() throws -> Int64 {
        let t = try command(RedisCommand(["TIME"])).array ?? []
        guard t.count == 2, let s = t[0].int, let us = t[1].int else {
            throw EngineError(.quotaStoreUnavailable, "unexpected TIME reply")
        }
        return s * 1000 + us / 1000 + configuration.clockOffsetMs
    }

    // MARK: Helpers

    /// One decision: a script call, and how to read its reply. The same call runs blocking (`perform`) or
    /// pipelined for tasks (the async `perform`).
    struct Call<T>: Sendable {
        /// When set, the script may answer NOT_LOADED for this user: load the unlock state, retry once.
        let loads: String?
        let command: RedisCommand
        let interpret: @Sendable ([RedisValue]) throws -> T

        init(loads: String?, _ command: RedisCommand, _ interpret: @escaping @Sendable ([RedisValue]) throws -> T) {
            self.loads = loads
            self.command = command
            self.interpret = interpret
        }
    }

    /// Runs a call on the calling thread.
    func perform<T>(_ call: Call<T>) throws -> T {
        var reply = try Self.array(command(call.command))
        if reply.first?.int == -1, let user = call.loads {
            try load(userId: user)
            reply = try Self.array(command(call.command))
            if reply.first?.int == -1 { throw Self.loadFailed }
        }
        return try call.interpret(reply)
    }

    /// Runs a call from a task, pipelined with other callers' on the pool's shared connections.
    func perform<T>(_ call: Call<T>) async throws -> T {
        var reply = try Self.array(await commandPipelined(call.command))
        if reply.first?.int == -1, let user = call.loads {
            try await offload { try self.load(userId: user) }
            reply = try Self.array(await commandPipelined(call.command))
            if reply.first?.int == -1 { throw Self.loadFailed }
        }
        return try call.interpret(reply)
    }

    static let loadFailed = EngineError(.quotaStoreUnavailable, "unlock state for the user could not be loaded into Redis")

    static func array(_ v: RedisValue) throws -> [RedisValue] {
        guard let a = v.array else { throw EngineError(.quotaStoreUnavailable, "unexpected script reply: \(v)") }
        return a
    }

    func commandPipelined(_ c: RedisCommand) async throws -> RedisValue {
        do {
            return try await redis.run(c)
        } catch {
            throw EngineError(.quotaStoreUnavailable, "Quota store unavailable: \(error.message)")
        }
    }

    func command(_ c: RedisCommand) throws -> RedisValue {
        do {
            return try redis.runDirect(c)
        } catch {
            throw EngineError(.quotaStoreUnavailable, "Quota store unavailable: \(error.message)")
        }
    }

    private func database<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as PostgresError where e.code == .connection {
            throw EngineError(.databaseUnavailable, "Database unavailable: \(e.message)")
        }
    }

    static func limit(_ v: RedisValue) -> Money? {
        guard let n = v.int, n >= 0 else { return nil }
        return Money(nanos: n)
    }

    private func price(of modelId: String) throws -> ModelPrice {
        _ = try invalid { try Validation.id(modelId, field: "modelId") }
        guard let p = pricing.model(modelId) else {
            throw EngineError(.invalid, "unknown model '\(modelId)': give costUsd, or add it to the pricing file")
        }
        return p
    }

    private func parseHandle(_ id: String) throws -> ReservationHandle {
        guard let h = ReservationHandle(id, partitions: configuration.partitions) else {
            throw EngineError(.notFound, "Reservation not found")
        }
        return h
    }

    private func validUser(_ userId: String) throws {
        _ = try invalid { try Validation.id(userId, field: "userId") }
    }

    private func invalid<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as TollgateCoreError {
            throw EngineError(.invalid, e.description)
        }
    }
}
