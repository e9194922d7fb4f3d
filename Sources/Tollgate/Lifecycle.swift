import Dispatch
import Foundation
import Synchronization

/// A stop request shared by long-running parts (HTTP server, writer, listener): they `run()` until it
/// is set, finish the work in hand, and return.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public var isSet: Bool { flag.load(ordering: .relaxed) }
    public func set() { flag.store(true, ordering: .relaxed) }

    /// Sleeps up to `seconds`, waking early when stopped.
    public func sleep(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while !isSet, Date() < end { Thread.sleep(forTimeInterval: min(0.05, max(0, end.timeIntervalSinceNow))) }
    }
}

/// Sets a `StopSignal` on SIGTERM or SIGINT.
enum ShutdownSignals {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func install(_ stop: StopSignal, onSignal: @escaping @Sendable (Int32) -> Void = { _ in }) {
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                onSignal(sig)
                stop.set()
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// JSON log lines on stderr. Lines are buffered and written by a background thread every 50 ms (or at
/// 64 KiB), so a request never waits on a write(2); `flush()` writes what is pending at once.
enum Log {
    private static let buffer = Mutex<[UInt8]>([])
    private static let flusher: Void = {
        let t = Thread {
            while true {
                Thread.sleep(forTimeInterval: 0.05)
                Log.flush()
            }
        }
        t.name = "log-flusher"
        t.start()
    }()

    /// One line: time, level, msg, then `fields` in the order given.
    static func write(_ level: String, _ message: String, _ fields: [(String, String)]) {
        var line = "{\"time\":\""
        line += utcISO(ms: Int64(Date().timeIntervalSince1970 * 1000))
        line += "\",\"level\":\"" + level + "\",\"msg\":"
        TollgateJSON.writeString(message, to: &line)
        for (k, v) in fields {
            line += ",\"" + k + "\":"
            TollgateJSON.writeString(v, to: &line)
        }
        line += "}\n"
        _ = flusher
        let full = buffer.withLock { b in
            b.append(contentsOf: line.utf8)
            return b.count >= 65_536
        }
        if full || level != "info" { flush() }
    }

    static func write(_ level: String, _ message: String, _ fields: [String: String] = [:]) {
        write(level, message, fields.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    /// Writes pending lines now.
    static func flush() {
        let pending = buffer.withLock { b -> [UInt8] in
            let out = b
            b.removeAll(keepingCapacity: true)
            return out
        }
        if !pending.isEmpty { FileHandle.standardError.write(Data(pending)) }
    }

    static func info(_ m: String, _ f: [String: String] = [:]) { write("info", m, f) }
    static func warn(_ m: String, _ f: [String: String] = [:]) { write("warn", m, f) }
}

import TollgateCore
typealias TollgateJSON = JSONValue
