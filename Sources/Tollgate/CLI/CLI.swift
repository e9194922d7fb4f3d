import Foundation
import PostgresClient
import RedisClient
import TollgateCore

/// The `tollgate` command. Exit status: 0 success, 1 failure, 2 drift found (reconcile), 64 bad usage.
public enum TollgateCLI {
    static let usage = """
        usage: tollgate <command> [options]

        commands:
          serve              the HTTP API (with an embedded usage writer)
          migrate            create or update the Postgres schema (idempotent)
          user               enable, disable, show (troubleshoot), usage
          report             top-users, models, near-limit (the guide's analytics)
          reconcile          compare Redis with Postgres; --repair fixes Redis
          rebuild            restore Redis from Postgres after it lost its data
          sync-unlocks       apply every ai_user_unlock row to Redis
          archive            detach monthly partitions older than N months
          pricing            list prices; check a pricing file
          writer             move usage events from Redis streams into Postgres
          bench engine       measure the quota engine beside redis-benchmark
          help               show this text

        Every command reads TOLLGATE_REDIS_URL and DATABASE_URL (or PRIVATE_DATABASE_URL).
        Run `tollgate <command> --help` for a command's options.
        """

    public static func main() async {
        let status = await run(Array(CommandLine.arguments.dropFirst()))
        Log.flush()
        exit(status)
    }

    /// Runs one command line and returns the exit status. Errors are printed as one line on stderr.
    public static func run(_ args: [String]) async -> Int32 {
        guard let command = args.first else {
            printErr(usage)
            return 64
        }
        let rest = Array(args.dropFirst())
        do {
            switch command {
            case "migrate": try MigrateCommand.run(rest)
            case "bench": try await BenchCommand.run(rest)
            case "writer": try WriterCommand.run(rest)
            case "serve": try ServeCommand.run(rest)
            case "user": try UserCommand.run(rest)
            case "report": try ReportCommand.run(rest)
            case "reconcile": try ReconcileCommand.run(rest)
            case "rebuild": try RebuildCommand.run(rest)
            case "sync-unlocks": try SyncUnlocksCommand.run(rest)
            case "archive": try ArchiveCommand.run(rest)
            case "pricing": try PricingCommand.run(rest)
            case "help", "--help", "-h": print(usage)
            default: throw UsageError("unknown command '\(command)' (see `tollgate help`)")
            }
            return 0
        } catch let e as UsageError {
            printErr("tollgate \(command): \(e.message)")
            return 64
        } catch let e as CommandFailure {
            printErr("tollgate \(command): \(e.message)")
            return e.status
        } catch let e as EngineError {
            printErr("tollgate \(command): \(e.message)")
            return e.code == .invalid ? 64 : 1
        } catch let e as PostgresError {
            printErr("tollgate \(command): \(e.description)")
            return 1
        } catch let e as RedisError {
            printErr("tollgate \(command): \(e.description)")
            return 1
        } catch let e as ConfigurationError {
            printErr("tollgate \(command): \(e.message)")
            return 1
        } catch {
            printErr("tollgate \(command): \(error)")
            return 1
        }
    }

    static func printErr(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}

enum MigrateCommand {
    static let help = """
        usage: tollgate migrate [--months-ahead N] [--json]

        Applies the SQL migrations under ops/migrations (embedded) in order, recording each in
        tollgate_schema_migrations; a second run changes nothing. Keeps every row of the guide's tables
        if the app created them already, and says what it changed. Creates monthly partitions of
        ai_usage_log from last month to N months ahead (default 3).
        """

    static func run(_ args: [String]) throws {
        let a = try Arguments(args, valued: ["months-ahead"], switches: ["json", "help"])
        if a.has("help") { print(help); return }
        _ = try a.positionals()
        let ahead = try a.int("months-ahead", default: 3, range: 0...120)
        let config = try Configuration()
        let db = try PostgresConnection(config.requirePostgres())
        let report = try Migrator(database: db).run(monthsAhead: ahead)
        if a.has("json") {
            print(JSONOut.object([
                "applied": .array(report.applied.map { .string($0) }),
                "notes": .array(report.notes.map { .string($0) }),
                "partitionsCreated": .array(report.partitionsCreated.map { .string($0) }),
            ]))
        } else {
            for line in report.lines { print(line) }
        }
    }
}
