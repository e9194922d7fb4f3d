import Foundation
import PostgresClient
import RedisClient
import TollgateCore

/// Keeps Redis's unlock state in step with `ai_user_unlock`, whoever edits it (the API, the guide's SQL,
/// the app): LISTEN for the trigger's notifications and apply each changed row; on start and every
/// `resyncSeconds`, apply the rows (and deletions) changed since the last pass, for anything missed while
/// no listener was connected. Applying a row twice is harmless; versions keep older rows from winning.
public final class UnlockSync: @unchecked Sendable {
    let engine: QuotaEngine
    let database: PostgresPool
    /// Seconds between catch-up passes (default 60).
    public var resyncSeconds: Double = 60
    /// Postgres time (UTC text) of the last catch-up pass; changes at or after it (minus a margin) are read again.
    private var lastPass: String?

    public init(engine: QuotaEngine, database: PostgresPool) {
        self.engine = engine
        self.database = database
    }

    // MARK: Passes

    /// Applies every unlock record and every deletion. Returns the records applied.
    @discardableResult
    public func full(progress: (Int, Int) -> Void = { _, _ in }) throws -> Int {
        try catchUp(since: nil, progress: progress)
    }

    /// Applies rows changed (and rows deleted) since `since` (UTC timestamp text), or all when nil.
    /// Returns the number of rows applied.
    @discardableResult
    func catchUp(since: String?, progress: (Int, Int) -> Void = { _, _ in }) throws -> Int {
        let started = try database.query("SELECT (clock_timestamp() AT TIME ZONE 'UTC')::text AS now")[0].decode("now", as: String.self)
        let rows = try database.query("""
            SELECT \(UnlockStore.columns) FROM ai_user_unlock
             WHERE $1::timestamp IS NULL OR updated_at >= $1::timestamp - interval '5 seconds'
            """, [since])
        let records = try rows.map(UnlockStore.decode)
        let tombstones = try database.query("""
            SELECT t.user_id, (extract(epoch FROM t.deleted_at) * 1000000)::bigint AS version
              FROM tollgate_unlock_tombstone t
             WHERE ($1::timestamp IS NULL OR t.deleted_at >= $1::timestamp - interval '5 seconds')
               AND NOT EXISTS (SELECT 1 FROM ai_user_unlock u WHERE u.user_id = t.user_id)
            """, [since])
        let total = records.count + tombstones.count
        var done = 0
        for r in records {
            try engine.apply(r)
            done += 1
            if done % 100 == 0 { progress(done, total) }
        }
        for t in tombstones {
            try engine.applyAbsent(userId: try t.decode("user_id"), version: try t.decode("version"))
            done += 1
        }
        progress(total, total)
        lastPass = started
        return records.count
    }

    /// Applies the current state of one user's row (or its absence).
    public func apply(userId: String) throws {
        if let r = try engine.unlockRecord(userId: userId) {
            try engine.apply(r)
            return
        }
        let v = try database.query("""
            SELECT coalesce((SELECT (extract(epoch FROM deleted_at) * 1000000)::bigint FROM tollgate_unlock_tombstone WHERE user_id = $1),
                            (extract(epoch FROM clock_timestamp() AT TIME ZONE 'UTC') * 1000000)::bigint) AS version
            """, [userId])[0].decode("version", as: Int64.self)
        try engine.applyAbsent(userId: userId, version: v)
    }

    // MARK: Listening

    /// LISTENs until `stop` is set: a catch-up pass on (re)connect and every `resyncSeconds`, each
    /// notification applied as it comes. Reconnects with backoff; logs once per state change.
    public func run(until stop: StopSignal) {
        var failing = false
        while !stop.isSet {
            do {
                let conn = try PostgresConnection(database.configuration)
                try conn.query("LISTEN tollgate_unlock")
                try catchUp(since: lastPass)
                if failing { Log.info("unlock listener reconnected") }
                failing = false
                var nextPass = Date().addingTimeInterval(resyncSeconds)
                while !stop.isSet {
                    let notes = try conn.waitForNotifications(timeoutMs: 250)
                    for userId in Set(notes.map(\.payload)) where Validation.isValidId(userId) {
                        try apply(userId: userId)
                    }
                    if Date() >= nextPass {
                        try catchUp(since: lastPass)
                        nextPass = Date().addingTimeInterval(resyncSeconds)
                    }
                }
            } catch {
                if !failing { Log.warn("unlock listener lost its connection, retrying", ["error": "\(error)"]) }
                failing = true
                stop.sleep(1)
            }
        }
    }
}
