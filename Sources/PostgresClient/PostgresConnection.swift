internal import CLibpq
import Foundation

/// One blocking connection to Postgres over libpq. Used by one thread at a time; it may move between
/// threads (the pool hands it over), hence `@unchecked Sendable`.
///
/// Statements take parameters as `$n` binds only; the one entry point that runs SQL text without binds
/// says so in its name (`execute(unsafeSQL:)`). A broken connection is reset on the next call.
public final class PostgresConnection: @unchecked Sendable {
    public let configuration: PostgresConfiguration
    private var conn: OpaquePointer?

    public init(_ configuration: PostgresConfiguration) throws(PostgresError) {
        self.configuration = configuration
        try connect()
    }

    deinit {
        if let conn { PQfinish(conn) }
    }

    // MARK: Statements

    /// Runs one statement with `$1...$n` bound to `binds` (text format; `nil` is NULL) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ binds: [any PostgresBindable] = []) throws(PostgresError) -> PostgresRows {
        let c = try ensureConnected()
        let texts = binds.map { $0.postgresText }
        let result = withCStrings(texts) { values in
            PQexecParams(c, sql, Int32(texts.count), nil, values, nil, nil, 0)
        }
        return try consume(result, sql: sql)
    }

    /// Exact row count of a table named at run time. The name is bound, and quoted by the server with
    /// `format('%I')`, so it never becomes SQL text built here.
    public func rowCount(of table: String) throws(PostgresError) -> Int {
        let rows = try query("""
            SELECT (xpath('/row/n/text()',
                    query_to_xml(format('SELECT count(*) AS n FROM %I', $1::text), false, true, '')))[1]::text::bigint AS n
            """, [table])
        return try rows[0].decode("n")
    }

    /// Runs SQL text as is, possibly several statements, with no binds. Only for trusted text such as
    /// the migrations embedded in the binary; never for anything built from input.
    public func execute(unsafeSQL sql: String) throws(PostgresError) {
        let c = try ensureConnected()
        _ = try consume(PQexec(c, sql), sql: sql)
    }

    /// Runs `body` in a transaction: commits if it returns, rolls back if it throws (and rethrows).
    public func withTransaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try query("BEGIN")
        do {
            let value = try body(self)
            try query("COMMIT")
            return value
        } catch {
            if PQtransactionStatus(conn) != PQTRANS_UNKNOWN { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    /// Streams rows into `COPY ... FROM STDIN` (text format: tab-separated, `\N` for NULL, escaped).
    /// Returns the number of rows copied.
    @discardableResult
    public func copyIn(_ copySQL: String, data: String) throws(PostgresError) -> Int {
        let c = try ensureConnected()
        _ = try consume(PQexec(c, copySQL), sql: copySQL, allowCopyIn: true)
        var bytes = Array(data.utf8)
        let sent = bytes.withUnsafeMutableBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(buf.count, 1)) {
                PQputCopyData(c, $0, Int32(buf.count))
            }
        }
        if sent != 1 { throw connectionError("COPY data could not be sent") }
        if PQputCopyEnd(c, nil) != 1 { throw connectionError("COPY could not be finished") }
        var copied = 0
        while let result = PQgetResult(c) {
            copied = try consume(result, sql: copySQL).affectedRows
        }
        return copied
    }

    /// Runs `COPY ... TO STDOUT` and hands each chunk of output (text or CSV, as the statement says) to `body`.
    /// Returns the number of rows copied.
    @discardableResult
    public func copyOut(_ copySQL: String, _ body: ([UInt8]) throws -> Void) throws -> Int {
        let c = try ensureConnected()
        let start = PQexec(c, copySQL)
        guard PQresultStatus(start) == PGRES_COPY_OUT else {
            _ = try consume(start, sql: copySQL)
            throw PostgresError(code: .statement, message: "not a COPY ... TO STDOUT statement")
        }
        PQclear(start)
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(c, &buffer, 0)
            if n > 0, let buffer {
                let bytes = Array(UnsafeRawBufferPointer(start: buffer, count: Int(n)))
                PQfreemem(buffer)
                try body(bytes)
            } else if n == -1 {
                break
            } else {
                throw connectionError("COPY out failed")
            }
        }
        var copied = 0
        while let result = PQgetResult(c) {
            copied = try consume(result, sql: copySQL).affectedRows
        }
        return copied
    }

    /// Whether the connection is currently usable.
    public var isConnected: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    // MARK: Notifications

    /// A notification received on a channel this connection LISTENs to.
    public struct Notification: Sendable {
        public var channel: String
        public var payload: String
    }

    /// Waits up to `timeoutMs` for notifications (after `LISTEN channel`) and returns those that arrived.
    public func waitForNotifications(timeoutMs: Int) throws(PostgresError) -> [Notification] {
        let c = try ensureConnected()
        var found = drainNotifications(c)
        if !found.isEmpty { return found }
        var pfd = pollfd(fd: PQsocket(c), events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeoutMs))
        if ready < 0 && errno != EINTR { throw connectionError("poll on the Postgres socket failed") }
        if ready > 0 {
            if PQconsumeInput(c) != 1 { throw connectionError("connection lost while listening") }
            found = drainNotifications(c)
        }
        return found
    }

    private func drainNotifications(_ c: OpaquePointer) -> [Notification] {
        var out: [Notification] = []
        while let n = PQnotifies(c) {
            out.append(Notification(channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra)))
            PQfreemem(n)
        }
        return out
    }

    // MARK: Connection management

    private func connect() throws(PostgresError) {
        if let conn { PQfinish(conn) }
        conn = PQconnectdb(configuration.conninfo)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { Self.text(PQerrorMessage($0)) } ?? "out of memory"
            if let conn { PQfinish(conn) }
            self.conn = nil
            throw PostgresError(code: .connection, message: "cannot connect to \(configuration): \(message)")
        }
        // Quiet NOTICEs (e.g. "relation already exists, skipping") instead of printing them to stderr.
        _ = query_silently(conn, "SET client_min_messages TO warning; SET TIME ZONE 'UTC'")
    }

    private func query_silently(_ c: OpaquePointer, _ sql: String) -> Bool {
        let r = PQexec(c, sql)
        defer { PQclear(r) }
        return PQresultStatus(r) == PGRES_COMMAND_OK
    }

    private func ensureConnected() throws(PostgresError) -> OpaquePointer {
        if let conn, PQstatus(conn) == CONNECTION_OK { return conn }
        try connect()
        return conn!
    }

    /// Turns a libpq result into rows or a typed error, and frees it.
    private func consume(_ result: OpaquePointer?, sql: String, allowCopyIn: Bool = false) throws(PostgresError) -> PostgresRows {
        guard let result else { throw connectionError("no result") }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            let nfields = Int(PQnfields(result)), ntuples = Int(PQntuples(result))
            let columns = (0..<nfields).map { String(cString: PQfname(result, Int32($0))) }
            var cells: [[String?]] = []
            cells.reserveCapacity(ntuples)
            for r in 0..<ntuples {
                var row: [String?] = []
                row.reserveCapacity(nfields)
                for f in 0..<nfields {
                    if PQgetisnull(result, Int32(r), Int32(f)) == 1 {
                        row.append(nil)
                    } else {
                        row.append(String(cString: PQgetvalue(result, Int32(r), Int32(f))))
                    }
                }
                cells.append(row)
            }
            let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
            return PostgresRows(columns: columns, cells: cells, affectedRows: affected)
        case PGRES_COPY_IN where allowCopyIn:
            return PostgresRows(columns: [], cells: [], affectedRows: 0)
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            let detail = PQresultErrorField(result, Int32(UInt8(ascii: "D"))).map { String(cString: $0) }
            // Class 08 (connection exception) and 57P (server shutting down, e.g. terminated by an
            // administrator) mean the session is gone, whatever PQstatus says yet.
            if PQstatus(conn) != CONNECTION_OK || state?.hasPrefix("08") == true || state?.hasPrefix("57P") == true {
                if PQstatus(conn) == CONNECTION_OK { PQfinish(conn); conn = nil }
                throw connectionError(primary ?? "connection lost")
            }
            var message = primary ?? Self.text(PQresultErrorMessage(result))
            if let detail { message += " (\(detail))" }
            throw PostgresError(code: .statement, sqlState: state, message: message)
        }
    }

    private func connectionError(_ what: String) -> PostgresError {
        let detail = conn.map { Self.text(PQerrorMessage($0)) } ?? ""
        return PostgresError(
            code: .connection,
            message: "\(what) on \(configuration)" + (detail.isEmpty ? "" : ": \(detail)"))
    }

    private static func text(_ p: UnsafePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(cString: p).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Hands libpq an array of C strings (or NULLs) that live for the duration of `body`.
    private func withCStrings<R>(_ values: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        let copies = values.map { $0.map { strdup($0)! } }
        defer { for c in copies { free(c) } }
        let pointers = copies.map { $0.map { UnsafePointer($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
