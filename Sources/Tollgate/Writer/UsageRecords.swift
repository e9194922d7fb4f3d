import PostgresClient
import TollgateCore

/// One row of ai_usage_log.
public struct UsageLog: Sendable, Hashable {
    public var id: String
    public var userId: String
    public var modelId: String
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var totalTokens: Int64
    public var cost: Money
    /// JSON object text, or nil.
    public var metadata: String?
    /// UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    public var createdAt: String
}

/// The guide's getUserUsageStats result: totals over the whole range, rows one page at a time.
public struct UsageStats: Sendable {
    public var totalRequests: Int
    public var totalCost: Money
    public var totalTokens: Int64
    /// Newest first.
    public var logs: [UsageLog]
    /// Pass back as `cursor` for the next page; nil on the last page.
    public var nextCursor: String?
}

/// Reads the durable record in Postgres: the guide's getUserUsageStats and getMonthlyUsageCost.
public struct UsageRecords: Sendable {
    public let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    /// Totals and rows of a user between two UTC dates, both inclusive (`YYYY-MM-DD`).
    /// - Parameters:
    ///   - limit: rows per page, 1...1000.
    ///   - cursor: `nextCursor` of the previous page.
    public func stats(userId: String, from: String, to: String, limit: Int = 100, cursor: String? = nil) throws -> UsageStats {
        let totals = try pool.query("""
            SELECT count(*) AS n, coalesce(sum(cost_nano), 0)::bigint AS cost, coalesce(sum(total_tokens), 0)::bigint AS tokens
              FROM ai_usage_log
             WHERE user_id = $1 AND created_at >= $2::date AND created_at < $3::date + 1
            """, [userId, from, to])[0]
        var after: (String, String)?
        if let cursor {
            let parts = cursor.split(separator: "|", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw EngineError(.invalid, "cursor is not one this server gave out") }
            after = (parts[0], parts[1])
        }
        let rows = try pool.query("""
            SELECT id, user_id, model_id, prompt_tokens::bigint AS p, completion_tokens::bigint AS c,
                   total_tokens::bigint AS t, cost_nano, metadata,
                   to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created, created_at::text AS raw_created
              FROM ai_usage_log
             WHERE user_id = $1 AND created_at >= $2::date AND created_at < $3::date + 1
               AND ($4::timestamp IS NULL OR (created_at, id) < ($4::timestamp, $5::text))
             ORDER BY created_at DESC, id DESC
             LIMIT $6
            """, [userId, from, to, after?.0, after?.1, limit + 1])
        var logs: [UsageLog] = []
        var next: String?
        for (i, row) in rows.enumerated() {
            if i == limit {
                let last = rows[i - 1]
                next = "\(last["raw_created"] ?? "")|\(last["id"] ?? "")"
                break
            }
            logs.append(UsageLog(
                id: try row.decode("id"), userId: try row.decode("user_id"), modelId: try row.decode("model_id"),
                promptTokens: try row.decode("p"), completionTokens: try row.decode("c"), totalTokens: try row.decode("t"),
                cost: Money(nanos: try row.decode("cost_nano")), metadata: row["metadata"], createdAt: try row.decode("created")))
        }
        return UsageStats(
            totalRequests: try totals.decode("n"), totalCost: Money(nanos: try totals.decode("cost")),
            totalTokens: try totals.decode("tokens"), logs: logs, nextCursor: next)
    }

    /// The guide's getMonthlyUsageCost: exact committed cost of a user in a UTC month (default: the
    /// current month by the Postgres clock), from the durable record (flushed events only).
    public func monthlyCost(userId: String, month: Month? = nil) throws -> Money {
        let m = month?.firstDay
        let rows = try pool.query("""
            SELECT coalesce(sum(cost_nano), 0)::bigint AS cost FROM ai_usage_log
             WHERE user_id = $1
               AND created_at >= coalesce($2::date, date_trunc('month', now() AT TIME ZONE 'UTC'))
               AND created_at < coalesce($2::date, date_trunc('month', now() AT TIME ZONE 'UTC')) + interval '1 month'
            """, [userId, m])
        return Money(nanos: try rows[0].decode("cost"))
    }
}
