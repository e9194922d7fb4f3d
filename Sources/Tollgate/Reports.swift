import Foundation
import PostgresClient
import TollgateCore

/// The guide's three analytics queries over the durable record, with exact sums (nano-USD).
/// Email and name come from the app's `"user"` table when it exists (quoted: `user` is reserved).
public struct Reports: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case topUsers = "top-users"
        case models
        case nearLimit = "near-limit"
    }

    public struct Options: Sendable {
        /// Default: the current UTC month by the Postgres clock.
        public var month: Month?
        /// near-limit: percent of the limit used, above which a user is listed (default 80).
        public var threshold: Int = 80
        /// Most rows (default 10 for top-users, 100 otherwise).
        public var limit: Int?

        public init(month: Month? = nil, threshold: Int = 80, limit: Int? = nil) {
            self.month = month
            self.threshold = threshold
            self.limit = limit
        }

        /// From text (query string or CLI flags), with readable errors.
        init(month: String?, threshold: String?, limit: String?) throws(APIError) {
            if let month {
                guard let m = Month(month) else { throw APIError(400, "month must be YYYY-MM") }
                self.month = m
            }
            if let threshold {
                guard let t = Int(threshold), (0...1000).contains(t) else { throw APIError(400, "threshold must be a whole percent from 0 to 1000") }
                self.threshold = t
            }
            if let limit {
                guard let l = Int(limit), (1...10_000).contains(l) else { throw APIError(400, "limit must be a whole number from 1 to 10000") }
                self.limit = l
            }
        }
    }

    /// A result: named columns, rows of values (money as exact USD numbers).
    public struct Table: Sendable {
        public var columns: [String]
        public var rows: [[JSONValue]]

        public var json: String {
            JSONValue.object(["columns": .array(columns.map { .string($0) }),
                              "rows": .array(rows.map { r in .object(Dictionary(uniqueKeysWithValues: zip(columns, r))) })]).serialized
        }

        static func text(_ v: JSONValue) -> String {
            switch v {
            case .null: return ""
            case .string(let s): return s
            case .number(let n): return n
            case .bool(let b): return b ? "true" : "false"
            default: return v.serialized
            }
        }

        /// Aligned columns for a terminal.
        public var aligned: String {
            let cells = [columns] + rows.map { $0.map(Self.text) }
            let widths = columns.indices.map { i in cells.map { $0[i].count }.max() ?? 0 }
            return cells.map { row in
                row.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                    .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
            }.joined(separator: "\n")
        }

        /// RFC 4180 CSV.
        public var csv: String {
            func q(_ s: String) -> String {
                s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
            }
            return ([columns] + rows.map { $0.map(Self.text) }).map { $0.map(q).joined(separator: ",") }.joined(separator: "\n")
        }
    }

    public let pool: PostgresPool

    public init(pool: PostgresPool) { self.pool = pool }

    public func run(_ kind: Kind, _ o: Options) throws -> Table {
        try pool.withConnection { db in
            let users = try Self.hasUserTable(db)
            let month = o.month?.firstDay
            switch kind {
            case .topUsers:
                let rows = try db.query(users ? Self.topUsersJoined : Self.topUsersPlain, [month, o.limit ?? 10])
                return Table(columns: ["userId", "email", "name", "totalCost", "requestCount"], rows: try rows.map { r in
                    [.string(try r.decode("user_id")), Self.opt(r["email"]), Self.opt(r["name"]),
                     .usd(Money(nanos: try r.decode("total_nano"))), .number(try r.decode("requests", as: String.self))]
                })
            case .models:
                let rows = try db.query(Self.models, [month, o.limit ?? 100])
                return Table(columns: ["modelId", "requests", "totalTokens", "totalCost"], rows: try rows.map { r in
                    [.string(try r.decode("model_id")), .number(try r.decode("requests", as: String.self)),
                     .number(try r.decode("tokens", as: String.self)), .usd(Money(nanos: try r.decode("total_nano")))]
                })
            case .nearLimit:
                let rows = try db.query(users ? Self.nearLimitJoined : Self.nearLimitPlain, [month, o.threshold, o.limit ?? 100])
                return Table(columns: ["userId", "email", "limitUsd", "currentCost", "percentUsed"], rows: try rows.map { r in
                    [.string(try r.decode("user_id")), Self.opt(r["email"]), .usd(Money(nanos: try r.decode("limit_nano"))),
                     .usd(Money(nanos: try r.decode("current_nano"))), .number(try r.decode("percent_used", as: String.self))]
                })
            }
        }
    }

    static func opt(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }

    /// Whether the app's `"user"` table with id, email and name exists.
    static func hasUserTable(_ db: PostgresConnection) throws -> Bool {
        let n = try db.query("""
            SELECT count(*) AS n FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'user' AND column_name IN ('id', 'email', 'name')
            """)[0]
        return try n.decode("n", as: Int.self) == 3
    }

    // The month window: $1 is its first day, or NULL for the current UTC month.
    static let window = """
        al.created_at >= coalesce($1::date, date_trunc('month', now() AT TIME ZONE 'UTC'))
        AND al.created_at < coalesce($1::date, date_trunc('month', now() AT TIME ZONE 'UTC')) + interval '1 month'
        """

    static let topUsersPlain = """
        SELECT al.user_id, NULL AS email, NULL AS name, sum(al.cost_nano)::bigint AS total_nano, count(*) AS requests
          FROM ai_usage_log al WHERE \(window)
         GROUP BY al.user_id ORDER BY total_nano DESC, al.user_id LIMIT $2
        """
    static let topUsersJoined = """
        SELECT al.user_id, u.email, u.name, sum(al.cost_nano)::bigint AS total_nano, count(*) AS requests
          FROM ai_usage_log al LEFT JOIN "user" u ON u.id = al.user_id WHERE \(window)
         GROUP BY al.user_id, u.email, u.name ORDER BY total_nano DESC, al.user_id LIMIT $2
        """
    static let models = """
        SELECT al.model_id, count(*) AS requests, sum(al.total_tokens)::bigint AS tokens, sum(al.cost_nano)::bigint AS total_nano
          FROM ai_usage_log al WHERE \(window)
         GROUP BY al.model_id ORDER BY total_nano DESC, al.model_id LIMIT $2
        """
    static let nearLimitBody = """
          FROM ai_user_unlock auu
          LEFT JOIN (SELECT al.user_id, sum(al.cost_nano) AS spent FROM ai_usage_log al WHERE \(window) GROUP BY al.user_id) s
                 ON s.user_id = auu.user_id
        """
    static let nearLimitPlain = """
        SELECT auu.user_id, NULL AS email, auu.max_cost_nano AS limit_nano, coalesce(s.spent, 0)::bigint AS current_nano,
               round(coalesce(s.spent, 0) * 100.0 / nullif(auu.max_cost_nano, 0), 2)::text AS percent_used
        \(nearLimitBody)
         WHERE auu.enabled AND auu.max_cost_nano IS NOT NULL
           AND coalesce(s.spent, 0) * 100 > $2::int * auu.max_cost_nano
         ORDER BY coalesce(s.spent, 0) * 1.0 / nullif(auu.max_cost_nano, 0) DESC NULLS FIRST, auu.user_id LIMIT $3
        """
    static let nearLimitJoined = """
        SELECT auu.user_id, u.email, auu.max_cost_nano AS limit_nano, coalesce(s.spent, 0)::bigint AS current_nano,
               round(coalesce(s.spent, 0) * 100.0 / nullif(auu.max_cost_nano, 0), 2)::text AS percent_used
        \(nearLimitBody)
          LEFT JOIN "user" u ON u.id = auu.user_id
         WHERE auu.enabled AND auu.max_cost_nano IS NOT NULL
           AND coalesce(s.spent, 0) * 100 > $2::int * auu.max_cost_nano
         ORDER BY coalesce(s.spent, 0) * 1.0 / nullif(auu.max_cost_nano, 0) DESC NULLS FIRST, auu.user_id LIMIT $3
        """
}
