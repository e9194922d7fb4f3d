import TollgateCore

/// Why a request is denied, in the guide's exact words (the 403 bodies).
public enum DenialReason: String, Sendable, Hashable, CaseIterable {
    case notEnabled = "AI access not enabled for this user"
    case limitExceeded = "Monthly cost limit exceeded"

    init?(code: String) {
        switch code {
        case "NOT_ENABLED": self = .notEnabled
        case "LIMIT_EXCEEDED": self = .limitExceeded
        default: return nil
        }
    }

    /// A short label for metrics.
    public var label: String { self == .notEnabled ? "not_enabled" : "limit_exceeded" }
}

/// How much to hold: tokens priced with a model, or an amount.
public enum Estimate: Sendable, Hashable {
    /// Prompt tokens and the most completion tokens the request may produce, priced by the model.
    case tokens(modelId: String, promptTokens: Int64, maxCompletionTokens: Int64)
    case amount(Money)
}

public struct ReserveRequest: Sendable {
    public var userId: String
    public var estimate: Estimate
    /// A client idempotency key: a retried reserve with the same key returns the same reservation.
    public var idempotencyKey: String?
    /// Hold time in seconds; default from configuration, at most the configured maximum.
    public var ttlSeconds: Int?

    public init(userId: String, estimate: Estimate, idempotencyKey: String? = nil, ttlSeconds: Int? = nil) {
        self.userId = userId
        self.estimate = estimate
        self.idempotencyKey = idempotencyKey
        self.ttlSeconds = ttlSeconds
    }
}

/// A granted reservation.
public struct Reservation: Sendable, Hashable {
    public var id: String
    public var userId: String
    public var amount: Money
    /// Committed spend this month.
    public var currentCost: Money
    /// Open holds of the user, this one included.
    public var reservedCost: Money
    /// nil = unlimited.
    public var maxCost: Money?
    public var expiresAtMs: Int64
    public var month: String
    /// True when this answers a retry with the same idempotency key.
    public var replayed: Bool
}

public struct Denial: Sendable, Hashable {
    public var reason: DenialReason
    public var currentCost: Money
    public var reservedCost: Money
    public var maxCost: Money?
}

public enum ReserveOutcome: Sendable, Hashable {
    case granted(Reservation)
    case denied(Denial)
}

public struct CommitRequest: Sendable {
    public var promptTokens: Int64
    public var completionTokens: Int64
    /// The model actually used; default the reservation's.
    public var modelId: String?
    /// The provider-reported cost; when nil, the tokens are priced.
    public var cost: Money?
    /// A JSON object, as text.
    public var metadata: String?

    public init(promptTokens: Int64, completionTokens: Int64, modelId: String? = nil, cost: Money? = nil, metadata: String? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.modelId = modelId
        self.cost = cost
        self.metadata = metadata
    }
}

public struct CommitResult: Sendable, Hashable {
    public var reservationId: String
    public var cost: Money
    public var currentCost: Money
    public var maxCost: Money?
    public var month: String
    public var replayed: Bool
    /// Redis time of the commit, ms since the epoch: the usage row's created_at.
    public var createdAtMs: Int64
}

/// The guide's logAIUsage input.
public struct UsageRequest: Sendable {
    public var userId: String
    public var modelId: String
    public var promptTokens: Int64
    public var completionTokens: Int64
    /// Idempotency key: a retry with the same key records nothing new.
    public var requestId: String?
    public var cost: Money?
    public var metadata: String?

    public init(userId: String, modelId: String, promptTokens: Int64, completionTokens: Int64,
                requestId: String? = nil, cost: Money? = nil, metadata: String? = nil) {
        self.userId = userId
        self.modelId = modelId
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.requestId = requestId
        self.cost = cost
        self.metadata = metadata
    }
}

public struct UsageResult: Sendable, Hashable {
    /// The usage row id in ai_usage_log.
    public var id: String
    public var cost: Money
    public var currentCost: Money
    public var maxCost: Money?
    public var month: String
    public var replayed: Bool
    public var createdAtMs: Int64
}

/// The guide's canUserAccessAI result.
public struct AccessResult: Sendable, Hashable {
    public var allowed: Bool
    public var currentCost: Money
    public var maxCost: Money?
    public var reason: DenialReason?
    /// Open holds (may include expired ones not yet swept).
    public var reservedCost: Money
    public var month: String
}

/// The unlock record of a user, as in `ai_user_unlock`.
public struct UnlockRecord: Sendable, Hashable {
    public var id: String
    public var userId: String
    public var enabled: Bool
    /// nil = unlimited.
    public var maxCostPerMonth: Money?
    public var notes: String?
    /// UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    public var createdAt: String
    public var updatedAt: String
    /// updated_at in microseconds: newer changes win in Redis.
    public var version: Int64
}

/// An engine failure a caller can switch on.
public struct EngineError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// Bad input (HTTP 400).
        case invalid
        /// No such reservation or record (404).
        case notFound
        /// The operation conflicts with the reservation's state, e.g. commit after release (409).
        case conflict
        /// Redis is unreachable or failing (503 "Quota store unavailable").
        case quotaStoreUnavailable
        /// Postgres is unreachable (503).
        case databaseUnavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
