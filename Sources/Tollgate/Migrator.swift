import PostgresClient
import TollgateCore

/// Applies the versioned SQL files under `ops/migrations/` (embedded in the binary) in order, each in
/// its own transaction, recording them in `tollgate_schema_migrations`. Running it again is a no-op.
/// Concurrent runs serialize on an advisory lock.
public struct Migrator {
    public struct Migration: Sendable {
        public var version: Int
        public var name: String
        public var sql: String
    }

    /// The embedded migrations, ordered by version (the number that starts each file name).
    public static let migrations: [Migration] = EmbeddedResources.files
        .compactMap { path, sql -> Migration? in
            guard path.hasPrefix("ops/migrations/"), path.hasSuffix(".sql") else { return nil }
            let name = String(path.dropFirst("ops/migrations/".count))
            guard let version = Int(name.prefix { $0.isNumber }) else { return nil }
            return Migration(version: version, name: name, sql: sql)
        }
        .sorted { $0.version < $1.version }

    public let database: PostgresConnection

    public init(database: PostgresConnection) { self.database = database }

    /// What a run did, in plain words, one line each.
    public struct Report: Sendable {
        public var applied: [String] = []
        public var notes: [String] = []
        public var partitionsCreated: [String] = []
        public var lines: [String] {
            var out = notes
            out += applied.isEmpty ? ["schema up to date (version \(Migrator.migrations.last?.version ?? 0))"]
                : applied.map { "applied \($0)" }
            if !partitionsCreated.isEmpty { out.append("created partitions: " + partitionsCreated.joined(separator: ", ")) }
            return out
        }
    }

    /// Applies what is missing, then makes sure monthly partitions exist from last month to
    /// `monthsAhead` months ahead of now.
    public func run(monthsAhead: Int = 3) throws -> Report {
        var report = Report()
        try database.query("""
            CREATE TABLE IF NOT EXISTS tollgate_schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))
            """)
        let before = try inspect()
        for migration in Self.migrations {
            let applied: Bool = try database.withTransaction { db in
                try db.query("SELECT pg_advisory_xact_lock(hashtext('tollgate_migrate'))")
                let done = try db.query("SELECT 1 FROM tollgate_schema_migrations WHERE version = $1", [migration.version])
                if !done.isEmpty { return false }
                try db.execute(unsafeSQL: migration.sql)
                try db.query("INSERT INTO tollgate_schema_migrations (version, name) VALUES ($1, $2)",
                             [migration.version, migration.name])
                return true
            }
            if applied { report.applied.append(migration.name) }
        }
        let after = try inspect()
        report.notes = describeChanges(before: before, after: after)
        report.partitionsCreated = try ensurePartitions(monthsAhead: monthsAhead)
        return report
    }

    /// Creates missing monthly partitions from one month back to `monthsAhead` ahead (Postgres clock).
    /// Returns the names created.
    @discardableResult
    public func ensurePartitions(monthsAhead: Int = 3) throws -> [String] {
        let rows = try database.query("""
            SELECT m::date AS month,
                   tollgate_ensure_usage_partition(m::date) AS created
              FROM generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month',
                                   date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => $1::int),
                                   interval '1 month') AS m
            """, [monthsAhead])
        return try rows.compactMap { row in
            try row.decode("created", as: Bool.self)
                ? "ai_usage_log_" + (row["month"] ?? "").prefix(7).replacingOccurrences(of: "-", with: "_") : nil
        }
    }

    // MARK: Describing what happened to tables the app already had

    struct TableState: Equatable {
        var kind: String?  // "r" plain, "p" partitioned, nil missing
        var rows: Int
        var columns: Set<String>
    }

    func inspect() throws -> [String: TableState] {
        var out: [String: TableState] = [:]
        for table in ["ai_user_unlock", "ai_usage_log", "ai_usage_log_legacy"] {
            let kind = try database.query("""
                SELECT c.relkind::text AS kind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = $1 AND n.nspname = current_schema()
                """, [table]).first?["kind"]
            var rows = 0
            var columns: Set<String> = []
            if kind != nil {
                rows = try database.rowCount(of: table)
                columns = Set(try database.query("""
                    SELECT column_name FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                    """, [table]).map { $0["column_name"] ?? "" })
            }
            out[table] = TableState(kind: kind, rows: rows, columns: columns)
        }
        return out
    }

    func describeChanges(before: [String: TableState], after: [String: TableState]) -> [String] {
        var notes: [String] = []
        if let b = before["ai_user_unlock"], b.kind != nil, let a = after["ai_user_unlock"] {
            let added = a.columns.subtracting(b.columns).sorted()
            if !added.isEmpty {
                notes.append("found the app's ai_user_unlock (\(b.rows) rows): kept every row (\(a.rows) now), added columns \(added.joined(separator: ", "))")
            }
        }
        if let b = before["ai_usage_log"], b.kind == "r", let a = after["ai_usage_log"] {
            notes.append("found the app's plain ai_usage_log (\(b.rows) rows): converted to monthly partitions with \(a.rows) rows; the original is kept as ai_usage_log_legacy")
        }
        return notes
    }
}
