import Dispatch
import TollgateCore

/// The async face of the engine: each call runs the blocking one on a thread of its own, so awaiting
/// tasks never hold the cooperative pool while Redis or Postgres answers.
extension QuotaEngine {
    private static let queue = DispatchQueue(label: "tollgate.engine", attributes: .concurrent)

    private func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Self.queue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    @discardableResult
    public func enable(userId: String, maxCostPerMonth: Money?, notes: String? = nil) async throws -> UnlockRecord {
        try await offload { try self.enable(userId: userId, maxCostPerMonth: maxCostPerMonth, notes: notes) }
    }

    @discardableResult
    public func setUnlock(userId: String, enabled: Bool, maxCostPerMonth: Money?, notes: String? = nil) async throws -> UnlockRecord {
        try await offload { try self.setUnlock(userId: userId, enabled: enabled, maxCostPerMonth: maxCostPerMonth, notes: notes) }
    }

    @discardableResult
    public func disable(userId: String) async throws -> UnlockRecord? {
        try await offload { try self.disable(userId: userId) }
    }

    public func access(userId: String) async throws -> AccessResult {
        try await offload { try self.access(userId: userId) }
    }

    public func reserve(_ request: ReserveRequest) async throws -> ReserveOutcome {
        try await offload { try self.reserve(request) }
    }

    public func commit(reservationId: String, _ request: CommitRequest) async throws -> CommitResult {
        try await offload { try self.commit(reservationId: reservationId, request) }
    }

    public func release(reservationId: String) async throws -> Bool {
        try await offload { try self.release(reservationId: reservationId) }
    }

    public func logUsage(_ request: UsageRequest) async throws -> UsageResult {
        try await offload { try self.logUsage(request) }
    }

    public func monthlyCost(userId: String, month: Month? = nil) async throws -> Money {
        try await offload { try self.monthlyCost(userId: userId, month: month) }
    }

    public func currentMonth() async throws -> String {
        try await offload { try self.currentMonth() }
    }

    public func redisTimeMs() async throws -> Int64 {
        try await offload { try self.redisTimeMs() }
    }
}
