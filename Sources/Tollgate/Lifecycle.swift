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

/// One JSON log line on stderr.
enum Log {
    static func write(_ level: String, _ message: String, _ fields: [String: String] = [:]) {
        var f = fields
        f["level"] = level
        f["msg"] = message
        f["time"] = ISO8601DateFormatter().string(from: Date())
        var line = "{"
        for (i, k) in f.keys.sorted().enumerated() {
            if i > 0 { line += "," }
            line += "\"\(k)\":"
            var v = ""
            TollgateJSON.writeString(f[k]!, to: &v)
            line += v
        }
        line += "}\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
    static func info(_ m: String, _ f: [String: String] = [:]) { write("info", m, f) }
    static func warn(_ m: String, _ f: [String: String] = [:]) { write("warn", m, f) }
}

import TollgateCore
typealias TollgateJSON = JSONValue
