import Foundation
import PostgresClient
import RedisClient
import TollgateCore

/// What admin commands share: configuration, pools and the engine, built once from the environment.
struct Runtime {
    let config: Configuration
    let redis: RedisPool
    let database: PostgresPool
    let engine: QuotaEngine

    init() throws {
        config = try Configuration()
        redis = RedisPool(config.redis, lanes: 1)
        database = PostgresPool(try config.requirePostgres())
        engine = QuotaEngine(redis: redis, database: database, pricing: try config.loadPricing(),
                             configuration: EngineConfiguration(config))
    }
}

func parseUSD(_ text: String, option: String) throws(UsageError) -> Money {
    guard let m = Money(usd: text), m >= .zero, m <= Money.maxLimit else {
        throw UsageError("\(option) must be a USD amount from 0 to \(Money.maxLimit.usd), e.g. 10.00")
    }
    return m
}

func validUserArg(_ s: String) throws(UsageError) -> String {
    do { return try Validation.id(s, field: "userId") } catch { throw UsageError(error.description) }
}

func unlockLines(_ r: UnlockRecord) -> String {
    """
    user:      \(r.userId)
    enabled:   \(r.enabled)
    limit:     \(r.maxCostPerMonth.map { "$" + $0.usd + " per month" } ?? "unlimited")
    notes:     \(r.notes ?? "")
    updated:   \(r.updatedAt)
    """
}

/// A progress line on stderr, only when it is a terminal.
struct Progress {
    let label: String
    let enabled = isatty(2) == 1
    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let width = 30, filled = width * done / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(done)/\(total)".utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

// MARK: - user

enum UserCommand {
    static let help = """
        usage: tollgate user enable <userId> [--limit <usd> | --unlimited] [--notes <text>] [--json]
               tollgate user disable <userId> [--json]
               tollgate user show <userId> [--json]
               tollgate user usage <userId> [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--limit N] [--json]

        enable creates or updates the unlock record (Postgres first, then Redis); without --limit the user is
        unlimited. show walks the guide's troubleshooting checklist in one screen. usage prints the guide's
        usage stats from Postgres (default: this month).
        """

    static func run(_ args: [String]) throws {
        guard let sub = args.first else { throw UsageError("missing command: enable, disable, show or usage (see tollgate user --help)") }
        if sub == "--help" { print(help); return }
        let rest = Array(args.dropFirst())
        switch sub {
        case "enable": try enable(rest)
        case "disable": try disable(rest)
        case "show": try show(rest)
        case "usage": try usage(rest)
        default: throw UsageError("unknown user command '\(sub)' (enable, disable, show, usage)")
        }
    }

    static func enable(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["limit", "notes"], switches: ["unlimited", "json", "help"])
        if a.has("help") { print(help); return }
        let user = try validUserArg(a.positionals("userId")[0])
        if a.value("limit") != nil && a.has("unlimited") { throw UsageError("give --limit or --unlimited, not both") }
        let limit = try a.value("limit").map { s throws(UsageError) in try parseUSD(s, option: "--limit") }
        if let n = a.value("notes"), n.utf8.count > 4096 { throw UsageError("--notes must be at most 4096 bytes") }
        let rt = try Runtime()
        let r = try rt.engine.enable(userId: user, maxCostPerMonth: limit, notes: a.value("notes"))
        print(a.has("json") ? API.unlockJSON(r) : "enabled\n" + unlockLines(r))
    }

    static func disable(_ args: [String]) throws {
        let a = try Arguments(args, switches: ["json", "help"])
        if a.has("help") { print(help); return }
        let user = try validUserArg(a.positionals("userId")[0])
        let rt = try Runtime()
        guard let r = try rt.engine.disable(userId: user) else { throw CommandFailure("no unlock record for \(user)") }
        print(a.has("json") ? API.unlockJSON(r) : "disabled\n" + unlockLines(r))
    }

    static func show(_ args: [String]) throws {
        let a = try Arguments(args, switches: ["json", "help"])
        if a.has("help") { print(help); return }
        let user = try validUserArg(a.positionals("userId")[0])
        let rt = try Runtime()
        let record = try rt.engine.unlockRecord(userId: user)
        let access = try rt.engine.access(userId: user)
        let month = Month(access.month)!
        let pgCost = try UsageRecords(pool: rt.database).monthlyCost(userId: user, month: month)
        let holds = try rt.engine.openReservations(userId: user)
        let recent = try UsageRecords(pool: rt.database).stats(userId: user, from: month.firstDay, to: month.lastDay, limit: 5)
        let verdict = access.allowed ? "allowed" : (access.reason?.rawValue ?? "denied")
        if a.has("json") {
            print(JSONOut.object([
                "userId": .string(user), "unlock": record.map { try! JSONValue.parse(API.unlockJSON($0)) } ?? .null,
                "month": .string(access.month), "redisCost": .usd(access.currentCost), "postgresCost": .usd(pgCost),
                "maxCost": .usd(access.maxCost), "openReservations": .array(holds.map { h in
                    .object(["reservationId": .string(h.id), "amountUsd": .usd(h.amount), "expiresAt": .string(API.iso(ms: h.expiresAtMs))])
                }),
                "allowed": .bool(access.allowed), "reason": access.reason.map { .string($0.rawValue) } ?? .null,
                "recentUsage": .array(recent.logs.map { l in
                    .object(["id": .string(l.id), "modelId": .string(l.modelId), "costUsd": .usd(l.cost), "createdAt": .string(l.createdAt)])
                }),
            ]))
            return
        }
        let check = { (ok: Bool) in ok ? "[ok]" : "[!!]" }
        print("Troubleshooting \(user), month \(access.month) (UTC)")
        print("1. unlock record      \(check(record != nil)) \(record.map { "id \($0.id), updated \($0.updatedAt)" } ?? "none: INSERT one or run `tollgate user enable \(user)`")")
        print("2. enabled            \(check(record?.enabled == true)) \(record.map { String($0.enabled) } ?? "-")")
        print("3. this month's spend     Redis \(access.currentCost.display)   Postgres \(pgCost.display)" +
              (access.currentCost == pgCost ? "" : "   (difference \((access.currentCost - pgCost).display): events not yet flushed, or drift: run tollgate reconcile)"))
        print("4. limit              \(check(access.reason != .limitExceeded)) \(access.maxCost.map { $0.display + " per month" } ?? "unlimited")" +
              (access.maxCost.map { "   used \(percent(access.currentCost, of: $0))" } ?? ""))
        print("   open reservations  \(holds.count), holding \(holds.reduce(Money.zero) { $0 + $1.amount }.display)")
        print("verdict: \(verdict)")
        print(recent.logs.isEmpty ? "no usage this month" : "last usage:")
        for l in recent.logs { print("  \(l.createdAt)  \(l.modelId)  \(l.totalTokens) tokens  \(l.cost.display)") }
    }

    static func percent(_ part: Money, of whole: Money) -> String {
        guard whole.nanos > 0 else { return "-" }
        let basis = Int64((Int128(part.nanos) * 10_000) / Int128(whole.nanos))
        return "\(basis / 100).\(String(format: "%02d", Int(basis % 100)))%"
    }

    static func usage(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["from", "to", "limit"], switches: ["json", "help"])
        if a.has("help") { print(help); return }
        let user = try validUserArg(a.positionals("userId")[0])
        let limit = try a.int("limit", default: 100, range: 1...1000)
        let from: String?, to: String?
        do {
            from = try API.date(a.value("from"), "--from")
            to = try API.date(a.value("to"), "--to")
        } catch { throw UsageError(error.message) }
        let rt = try Runtime()
        let month = Month(try rt.engine.currentMonth())!
        let f = from ?? month.firstDay
        let t = to ?? month.lastDay
        guard f <= t else { throw UsageError("--from must not be after --to") }
        let stats = try UsageRecords(pool: rt.database).stats(userId: user, from: f, to: t, limit: limit)
        if a.has("json") {
            print(JSONOut.object([
                "totalRequests": .int(stats.totalRequests), "totalCost": .usd(stats.totalCost), "totalTokens": .int(stats.totalTokens),
                "logs": .array(stats.logs.map { l in
                    .object(["id": .string(l.id), "modelId": .string(l.modelId), "promptTokens": .int(l.promptTokens),
                             "completionTokens": .int(l.completionTokens), "totalTokens": .int(l.totalTokens),
                             "estimatedCost": .usd(l.cost), "createdAt": .string(l.createdAt)])
                }),
            ]))
            return
        }
        print("\(user) from \(f) to \(t): \(stats.totalRequests) requests, \(stats.totalTokens) tokens, \(stats.totalCost.display) ($\(stats.totalCost.usd))")
        let table = Reports.Table(columns: ["createdAt", "modelId", "promptTokens", "completionTokens", "cost"], rows: stats.logs.map { l in
            [.string(l.createdAt), .string(l.modelId), .int(l.promptTokens), .int(l.completionTokens), .usd(l.cost)]
        })
        if !stats.logs.isEmpty { print(table.aligned) }
        if stats.nextCursor != nil { print("(showing the newest \(limit); use --limit for more)") }
    }
}

// MARK: - report

enum ReportCommand {
    static let help = """
        usage: tollgate report top-users|models|near-limit [--month YYYY-MM] [--threshold 80] [--limit N] [--json | --csv]

        The guide's analytics queries over Postgres, with exact sums. Email and name come from the app's
        "user" table when it exists.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["month", "threshold", "limit"], switches: ["json", "csv", "help"])
        if a.has("help") { print(help); return }
        let which = try a.positionals("report")[0]
        guard let kind = Reports.Kind(rawValue: which) else { throw UsageError("unknown report '\(which)' (top-users, models, near-limit)") }
        if a.has("json") && a.has("csv") { throw UsageError("give --json or --csv, not both") }
        let options: Reports.Options
        do { options = try Reports.Options(month: a.value("month"), threshold: a.value("threshold"), limit: a.value("limit")) } catch {
            throw UsageError("--" + error.message)
        }
        let config = try Configuration()
        let table = try Reports(pool: PostgresPool(try config.requirePostgres())).run(kind, options)
        if a.has("json") { print(table.json) } else if a.has("csv") { print(table.csv) } else {
            print(table.rows.isEmpty ? "no rows" : table.aligned)
        }
    }
}

// MARK: - reconcile and rebuild

enum ReconcileCommand {
    static let help = """
        usage: tollgate reconcile [--month YYYY-MM] [--repair] [--json] [--metrics-file PATH]

        For every user with spend in the month (default: this month), compares Redis committed spend with
        Postgres plus events not yet flushed, exactly, under live traffic. --repair sets Redis to the truth.
        Exit status: 0 no drift (or repaired), 2 drift found and not repaired, 1 failure.
        --metrics-file writes Prometheus gauges (users with drift, total drift, time of the run) for
        node_exporter's textfile collector.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["month", "metrics-file"], switches: ["repair", "json", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let month = try a.value("month").map { s throws(UsageError) -> Month in
            guard let m = Month(s) else { throw UsageError("--month must be YYYY-MM") }
            return m
        }
        let rt = try Runtime()
        let progress = Progress(label: "reconciling")
        let report = try Reconciler(engine: rt.engine, database: rt.database).run(month: month, repair: a.has("repair"), progress: progress.update)
        try printReport(report, json: a.has("json"))
        if let path = a.value("metrics-file") {
            let remaining = report.repaired ? 0 : report.drifts.count
            let text = """
                # HELP tollgate_reconcile_drift_users Users whose Redis spend differed from Postgres at the last run (after repair).
                # TYPE tollgate_reconcile_drift_users gauge
                tollgate_reconcile_drift_users \(remaining)
                # HELP tollgate_reconcile_drift_usd Total drift found at the last run, USD.
                # TYPE tollgate_reconcile_drift_usd gauge
                tollgate_reconcile_drift_usd \(report.totalDrift.usd)
                # TYPE tollgate_reconcile_users_checked gauge
                tollgate_reconcile_users_checked \(report.usersChecked)
                # TYPE tollgate_reconcile_last_run_timestamp_seconds gauge
                tollgate_reconcile_last_run_timestamp_seconds \(Int(Date().timeIntervalSince1970))

                """
            // Written aside and renamed, so the collector never reads half a file.
            let tmp = path + ".tmp"
            guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)), rename(tmp, path) == 0 else {
                throw CommandFailure("cannot write \(path)")
            }
        }
        if !report.drifts.isEmpty && !report.repaired { throw CommandFailure("drift remains (run with --repair to fix Redis)", status: 2) }
    }

    static func printReport(_ report: Reconciler.Report, json: Bool) throws {
        if json {
            print(JSONOut.object([
                "month": .string(report.month), "usersChecked": .int(report.usersChecked), "usersWithDrift": .int(report.drifts.count),
                "totalDrift": .usd(report.totalDrift), "repaired": .bool(report.repaired),
                "drifts": .array(report.drifts.map { d in
                    .object(["userId": .string(d.userId), "redis": .usd(d.redis), "postgres": .usd(d.postgres),
                             "unflushed": .usd(d.unflushed), "drift": .usd(d.drift)])
                }),
            ]))
            return
        }
        print("month \(report.month): \(report.usersChecked) users checked, \(report.drifts.count) with drift, total drift $\(report.totalDrift.usd)" +
              (report.repaired ? " (repaired)" : ""))
        if !report.drifts.isEmpty {
            print(Reports.Table(columns: ["userId", "redis", "postgres", "unflushed", "drift"], rows: report.drifts.map { d in
                [.string(d.userId), .usd(d.redis), .usd(d.postgres), .usd(d.unflushed), .usd(d.drift)]
            }).aligned)
        }
    }
}

enum RebuildCommand {
    static let help = """
        usage: tollgate rebuild [--json]

        After Redis lost its data: restores every unlock flag and limit from ai_user_unlock, then this
        month's committed spend and request counts from ai_usage_log (as `reconcile --repair` does), so
        access decisions and monthly costs are what they were.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, switches: ["json", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let rt = try Runtime()
        let synced = try UnlockSync(engine: rt.engine, database: rt.database).full(progress: Progress(label: "unlock records").update)
        let report = try Reconciler(engine: rt.engine, database: rt.database).run(repair: true, progress: Progress(label: "spend").update)
        if a.has("json") {
            print(JSONOut.object(["unlockRecords": .int(synced), "month": .string(report.month), "usersChecked": .int(report.usersChecked),
                                  "usersRestored": .int(report.drifts.count), "restored": .usd(Money(nanos: -report.totalDrift.nanos))]))
        } else {
            print("restored \(synced) unlock records; month \(report.month): \(report.usersChecked) users checked, \(report.drifts.count) restored ($\(Money(nanos: -report.totalDrift.nanos).usd))")
        }
    }
}

// MARK: - archive

enum ArchiveCommand {
    static let help = """
        usage: tollgate archive [--older-than MONTHS] [--file PATH] [--yes] [--json]

        Detaches monthly partitions of ai_usage_log that end more than MONTHS (default 12) months before
        this month, as the guide's best practices ask. A dry run by default: it lists what it would do;
        --yes acts. --file writes the rows of each detached partition to PATH as CSV first. Detached
        partitions stay as tables of their own (drop or dump them as you see fit).
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["older-than", "file"], switches: ["yes", "json", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let months = try a.int("older-than", default: 12, range: 1...1200)
        let config = try Configuration()
        let db = try PostgresConnection(config.requirePostgres())
        let current = Month(try db.query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS m")[0].decode("m", as: String.self))!
        let cutoff = current.adding(months: -months)
        let parts = try db.query("""
            SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'ai_usage_log'::regclass AND c.relname ~ '^ai_usage_log_[0-9]{4}_[0-9]{2}$'
             ORDER BY c.relname
            """).compactMap { $0["name"] }
        let old = parts.filter { name in
            let m = Month(String(name.suffix(7)).replacingOccurrences(of: "_", with: "-"))!
            return m < cutoff
        }
        var handle: FileHandle?
        if let path = a.value("file"), a.has("yes") {
            guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
                throw CommandFailure("cannot write \(path)")
            }
            handle = h
        }
        var detached: [(String, Int)] = []
        for name in old {
            let rows = try db.rowCount(of: name)
            if a.has("yes") {
                if let handle {
                    // The partition name comes from pg_inherits and matched ^ai_usage_log_YYYY_MM$ above.
                    try db.copyOut("COPY \(name) TO STDOUT WITH (FORMAT csv, HEADER true)") { handle.write(Data($0)) }
                }
                try db.query("SELECT 1 FROM pg_class WHERE relname = $1", [name])
                try db.execute(unsafeSQL: "ALTER TABLE ai_usage_log DETACH PARTITION \(name)")
            }
            detached.append((name, rows))
        }
        try handle?.close()
        if a.has("json") {
            print(JSONOut.object(["cutoff": .string(cutoff.description), "dryRun": .bool(!a.has("yes")),
                                  "partitions": .array(detached.map { .object(["name": .string($0.0), "rows": .int($0.1)]) })]))
            return
        }
        if detached.isEmpty { print("nothing older than \(cutoff) to archive"); return }
        for (name, rows) in detached { print("\(a.has("yes") ? "detached" : "would detach") \(name) (\(rows) rows)") }
        if !a.has("yes") { print("dry run: nothing changed; add --yes to detach") }
    }
}

// MARK: - pricing

enum PricingCommand {
    static let help = """
        usage: tollgate pricing list [--json]
               tollgate pricing check <file> [--json]

        list shows the prices in use (TOLLGATE_PRICING, or the embedded ops/pricing.json) and their version.
        check validates a pricing file and exits 1 with the problem if it is not valid.
        """

    static func run(_ args: [String]) throws {
        guard let sub = args.first else { throw UsageError("missing command: list or check (see tollgate pricing --help)") }
        if sub == "--help" { print(help); return }
        let a = try Arguments(Array(args.dropFirst()), switches: ["json", "help"])
        switch sub {
        case "list":
            _ = try a.positionals()
            let p = try Configuration().loadPricing()
            if a.has("json") {
                print(JSONOut.object(["version": .string(p.version), "models": .array(p.models.map { m in
                    .object(["id": .string(m.id), "name": .string(m.name), "aliases": .array(m.aliases.map { .string($0) }),
                             "inputPerMillionUsd": .usd(m.inputPerMillion), "outputPerMillionUsd": .usd(m.outputPerMillion)])
                })]))
            } else {
                print("pricing version \(p.version) (USD per 1M tokens)")
                print(Reports.Table(columns: ["model", "name", "input", "output", "aliases"], rows: p.models.map { m in
                    [.string(m.id), .string(m.name), .usd(m.inputPerMillion), .usd(m.outputPerMillion), .string(m.aliases.joined(separator: ", "))]
                }).aligned)
            }
        case "check":
            let file = try a.positionals("file")[0]
            let p = try Configuration.loadPricing(path: file)
            print(a.has("json") ? JSONOut.object(["file": .string(file), "valid": .bool(true), "version": .string(p.version), "models": .int(p.models.count)])
                  : "\(file): valid, version \(p.version), \(p.models.count) models")
        default:
            throw UsageError("unknown pricing command '\(sub)' (list, check)")
        }
    }
}

// MARK: - sync-unlocks

enum SyncUnlocksCommand {
    static let help = """
        usage: tollgate sync-unlocks [--json]

        Applies every ai_user_unlock row (and every deletion) to Redis. serve and writer do this by themselves
        (LISTEN plus a catch-up pass every TOLLGATE_UNLOCK_RESYNC seconds); this is the full pass on demand.
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, switches: ["json", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let rt = try Runtime()
        let n = try UnlockSync(engine: rt.engine, database: rt.database).full(progress: Progress(label: "unlock records").update)
        print(a.has("json") ? JSONOut.object(["applied": .int(n)]) : "applied \(n) unlock records to Redis")
    }
}
