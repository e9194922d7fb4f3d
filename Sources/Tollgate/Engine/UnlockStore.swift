import PostgresClient
import TollgateCore

/// `ai_user_unlock` in Postgres: the truth for who may use AI and their limit.
struct UnlockStore: Sendable {
    let pool: PostgresPool

    static let columns = """
        id, user_id, enabled, max_cost_nano, max_cost_per_month::text AS max_cost_real, notes,
        to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
        to_char(updated_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at,
        (extract(epoch FROM updated_at) * 1000000)::bigint AS version
        """

    /// Sets `enabled = false`, keeping limit and notes. Returns nil when the user has no record.
    func disable(userId: String) throws -> UnlockRecord? {
        let rows = try pool.query("""
            UPDATE ai_user_unlock
               SET enabled = false,
                   updated_at = greatest(clock_timestamp() AT TIME ZONE 'UTC', updated_at + interval '1 microsecond')
             WHERE user_id = $1
            RETURNING \(Self.columns)
            """, [userId])
        return try rows.first.map(Self.decode)
    }

    /// Upsert; `limit` .none keeps the current limit (on update), `.some(nil)` sets unlimited.
    func upsert(userId: String, enabled: Bool, limit: Money??, notes: String?) throws -> UnlockRecord {
        let keepLimit = limit == nil
        let nanos: Int64? = limit.flatMap { $0?.nanos }
        let rows = try pool.query("""
            INSERT INTO ai_user_unlock (id, user_id, enabled, max_cost_per_month, max_cost_nano, notes, created_at, updated_at)
            VALUES ($1, $2, $3, $4::bigint / 1000000000.0, $4::bigint, $5,
                    now() AT TIME ZONE 'UTC', clock_timestamp() AT TIME ZONE 'UTC')
            ON CONFLICT (user_id) DO UPDATE SET
                enabled = EXCLUDED.enabled,
                max_cost_per_month = CASE WHEN $6::boolean THEN ai_user_unlock.max_cost_per_month ELSE EXCLUDED.max_cost_per_month END,
                max_cost_nano = CASE WHEN $6::boolean THEN ai_user_unlock.max_cost_nano ELSE EXCLUDED.max_cost_nano END,
                notes = coalesce(EXCLUDED.notes, ai_user_unlock.notes),
                updated_at = greatest(clock_timestamp() AT TIME ZONE 'UTC', ai_user_unlock.updated_at + interval '1 microsecond')
            RETURNING \(Self.columns)
            """, ["unlock_" + IdGenerator.random128(), userId, enabled, nanos, notes, keepLimit])
        return try Self.decode(rows[0])
    }

    /// The Postgres clock now, in microseconds: the version of "no record as of now".
    func nowVersion() throws -> Int64 {
        try pool.query("SELECT (extract(epoch FROM clock_timestamp() AT TIME ZONE 'UTC') * 1000000)::bigint AS v")[0].decode("v")
    }

    func find(userId: String) throws -> UnlockRecord? {
        try pool.query("SELECT \(Self.columns) FROM ai_user_unlock WHERE user_id = $1", [userId]).first.map(Self.decode)
    }

    static func decode(_ row: PostgresRow) throws -> UnlockRecord {
        var limit: Money?
        if let nanos = try row.decodeIfPresent("max_cost_nano", as: Int64.self) {
            limit = Money(nanos: nanos)
        } else if let real = row["max_cost_real"] {
            // A row written by SQL before the trigger existed: fall back to the guide's real column.
            limit = Money(usd: real)
        }
        return UnlockRecord(
            id: try row.decode("id"), userId: try row.decode("user_id"), enabled: try row.decode("enabled"),
            maxCostPerMonth: limit, notes: row["notes"], createdAt: try row.decode("created_at"),
            updatedAt: try row.decode("updated_at"), version: try row.decode("version"))
    }
}
