import Foundation
import PostgresClient
import RedisClient
import TollgateCore

/// Everything Tollgate reads from the environment (and flags, which override it), validated in one place
/// before anything starts. Defaults are stated per field.
public struct Configuration: Sendable {
    /// `TOLLGATE_REDIS_URL`, default `redis://127.0.0.1:6379`.
    public var redis: RedisConfiguration
    /// `DATABASE_URL`, else `PRIVATE_DATABASE_URL`. Required by commands that touch Postgres.
    public var postgres: PostgresConfiguration?
    /// `TOLLGATE_PREFIX`: the Redis key prefix of this deployment, default `tg`.
    public var prefix: String
    /// `TOLLGATE_PARTITIONS`: partition count, fixed per deployment, default 16 (1...1024).
    public var partitions: Int
    /// `TOLLGATE_RESERVATION_TTL`: seconds a reservation holds money unless committed or released, default 120.
    public var reservationTTLSeconds: Int
    /// `TOLLGATE_MAX_RESERVATION_TTL`: the largest per-call TTL accepted, seconds, default 3600.
    public var maxReservationTTLSeconds: Int
    /// `TOLLGATE_IDEMPOTENCY_TTL`: seconds commit/release/usage ids are remembered, default 604800 (7 days).
    public var idempotencyTTLSeconds: Int
    /// `TOLLGATE_PRICING`: path of a pricing JSON file; default the embedded `ops/pricing.json`.
    public var pricingPath: String?
    /// `TOLLGATE_REDIS_CONNECTIONS`: pipelined Redis connections per process, default 2.
    public var redisConnections: Int

    /// `TOLLGATE_LISTEN`: `host:port` the HTTP server listens on, default `127.0.0.1:8080`.
    public var listenHost = "127.0.0.1"
    public var listenPort = 8080
    /// `TOLLGATE_SERVICE_TOKEN`: bearer token of chat servers (reservations, usage, access).
    public var serviceToken: String?
    /// `TOLLGATE_ADMIN_TOKEN`: bearer token of admins (everything).
    public var adminToken: String?
    /// `TOLLGATE_FAIL_MODE`: `closed` (default: 503 while Redis is down) or `open` (grant without holding).
    public var failOpen = false
    /// `TOLLGATE_WRITER`: `on` (default: `serve` runs a usage writer inside) or `off`.
    public var embeddedWriter = true
    /// `TOLLGATE_UNLOCK_RESYNC`: seconds between catch-up passes of the unlock listener, default 60.
    public var unlockResyncSeconds = 60
    /// `TOLLGATE_HTTP_THREADS`: HTTP worker threads, default 4 (measured best on 2 cores; more helps when Redis is far).
    public var httpThreads = 4

    public init(environment env: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) {
        func int(_ name: String, _ def: Int, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            guard let raw = env[name], !raw.isEmpty else { return def }
            guard let v = Int(raw), range.contains(v) else {
                throw ConfigurationError("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(raw)'")
            }
            return v
        }
        do {
            redis = try RedisConfiguration(url: env["TOLLGATE_REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? "redis://127.0.0.1:6379")
        } catch { throw ConfigurationError("TOLLGATE_REDIS_URL: \(error.message)") }
        do {
            postgres = try PostgresConfiguration.fromEnvironment(env)
        } catch { throw ConfigurationError("DATABASE_URL: \(error.message)") }
        prefix = env["TOLLGATE_PREFIX"].flatMap { $0.isEmpty ? nil : $0 } ?? "tg"
        guard prefix.count <= 32, prefix.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ":" }) else {
            throw ConfigurationError("TOLLGATE_PREFIX must be up to 32 letters, digits, '_', '-' or ':'")
        }
        partitions = try int("TOLLGATE_PARTITIONS", 16, 1...1024)
        reservationTTLSeconds = try int("TOLLGATE_RESERVATION_TTL", 120, 1...86_400)
        maxReservationTTLSeconds = try int("TOLLGATE_MAX_RESERVATION_TTL", 3600, 1...86_400)
        idempotencyTTLSeconds = try int("TOLLGATE_IDEMPOTENCY_TTL", 604_800, 3600...31_536_000)
        redisConnections = try int("TOLLGATE_REDIS_CONNECTIONS", 2, 1...64)
        pricingPath = env["TOLLGATE_PRICING"].flatMap { $0.isEmpty ? nil : $0 }
        if let listen = env["TOLLGATE_LISTEN"], !listen.isEmpty { try setListen(listen) }
        serviceToken = env["TOLLGATE_SERVICE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        adminToken = env["TOLLGATE_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        switch env["TOLLGATE_FAIL_MODE"] ?? "" {
        case "", "closed": failOpen = false
        case "open": failOpen = true
        case let other: throw ConfigurationError("TOLLGATE_FAIL_MODE must be 'open' or 'closed', got '\(other)'")
        }
        switch env["TOLLGATE_WRITER"] ?? "" {
        case "", "on": embeddedWriter = true
        case "off": embeddedWriter = false
        case let other: throw ConfigurationError("TOLLGATE_WRITER must be 'on' or 'off', got '\(other)'")
        }
        unlockResyncSeconds = try int("TOLLGATE_UNLOCK_RESYNC", 60, 1...86_400)
        httpThreads = try int("TOLLGATE_HTTP_THREADS", 4, 1...256)
        guard reservationTTLSeconds <= maxReservationTTLSeconds else {
            throw ConfigurationError("TOLLGATE_RESERVATION_TTL must not exceed TOLLGATE_MAX_RESERVATION_TTL")
        }
    }

    /// Sets the listen address from `host:port`.
    public mutating func setListen(_ text: String) throws(ConfigurationError) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port), !parts[0].isEmpty else {
            throw ConfigurationError("listen address must be host:port (e.g. 127.0.0.1:8080), got '\(text)'")
        }
        listenHost = String(parts[0])
        listenPort = port
    }

    /// Checks what `serve` needs: both tokens, at least 16 characters, and different.
    public func validateForServe() throws(ConfigurationError) {
        guard let s = serviceToken, let a = adminToken else {
            throw ConfigurationError("set TOLLGATE_SERVICE_TOKEN and TOLLGATE_ADMIN_TOKEN (ops/run generates them)")
        }
        guard s.count >= 16, a.count >= 16 else { throw ConfigurationError("tokens must be at least 16 characters") }
        guard s != a else { throw ConfigurationError("TOLLGATE_SERVICE_TOKEN and TOLLGATE_ADMIN_TOKEN must differ") }
        _ = try requirePostgres()
    }

    /// The Postgres configuration, or a readable error saying how to set it.
    public func requirePostgres() throws(ConfigurationError) -> PostgresConfiguration {
        guard let postgres else {
            throw ConfigurationError("set DATABASE_URL (or PRIVATE_DATABASE_URL) to a Postgres URL, e.g. postgres://user@127.0.0.1:5432/tollgate")
        }
        return postgres
    }

    /// Loads the pricing file named by `TOLLGATE_PRICING`, or the embedded default.
    public func loadPricing() throws(ConfigurationError) -> Pricing {
        if let path = pricingPath { return try Self.loadPricing(path: path) }
        do {
            return try Pricing(json: Array(EmbeddedResources.files["ops/pricing.json"]!.utf8))
        } catch { throw ConfigurationError("embedded pricing: \(error)") }
    }

    public static func loadPricing(path: String) throws(ConfigurationError) -> Pricing {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read pricing file \(path)")
        }
        do {
            return try Pricing(json: Array(data))
        } catch { throw ConfigurationError("\(path): \(error)") }
    }
}

/// A configuration problem, as one readable line.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
