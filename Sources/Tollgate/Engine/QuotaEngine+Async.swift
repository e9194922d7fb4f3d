import Dispatch
import TollgateCore

/// The async face of the engine. Decisions (access, reserve, commit, release, log usage) are pipelined:
/// many tasks' scripts share a few connections, one round trip per batch. Calls that touch Postgres run
/// the blocking version on a thread of their own, so tasks never hold the cooperative pool.
extension QuotaEngine {
    private static let queue = DispatchQueue(label: "tollgate.engine", attributes: .concurrent)

    func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
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
        try await perform(accessCall(userId: userId))
    }

    public func reserve(_ request: ReserveRequest) async throws -> ReserveOutcome {
        try await perform(reserveCall(request))
    }

    public func commit(reservationId: String, _ request: CommitRequest) async throws -> CommitResult {
        try await perform(commitCall(reservationId: reservationId, request))
    }

    public func release(reservationId: String) async throws -> Bool {
        try await perform(releaseCall(reservationId: reservationId))
    }

    public func logUsage(_ request: UsageRequest) async throws -> UsageResult {
        try await perform(logUsageCall(request))
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
