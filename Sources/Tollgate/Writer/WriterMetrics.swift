import Synchronization

/// Counters of a writer, read by the metrics endpoint and by tests.
public final class WriterMetrics: Sendable {
    let rows = Atomic<Int>(0)
    let alerts = Atomic<Int>(0)
    let batches = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    let deadLetters = Atomic<Int>(0)
    let postgresDown = Atomic<Bool>(false)

    public init() {}

    /// Usage rows inserted (replays that inserted nothing are not counted).
    public var rowsWritten: Int { rows.load(ordering: .relaxed) }
    public var alertsWritten: Int { alerts.load(ordering: .relaxed) }
    public var batchesWritten: Int { batches.load(ordering: .relaxed) }
    /// Failed attempts retried after a backoff.
    public var retryCount: Int { retries.load(ordering: .relaxed) }
    public var deadLetterCount: Int { deadLetters.load(ordering: .relaxed) }
    public var isPostgresDown: Bool { postgresDown.load(ordering: .relaxed) }
}

/// Unflushed events of one partition stream.
public struct Backlog: Sendable, Hashable {
    public var partition: Int
    /// Entries still in the stream (not yet written and acknowledged).
    public var length: Int
    /// Age of the oldest entry in seconds (0 when empty), by Redis time.
    public var oldestAgeSeconds: Double
}
