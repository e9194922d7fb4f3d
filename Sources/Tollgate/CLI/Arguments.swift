/// Bad command-line usage: exit 64 with one readable line.
public struct UsageError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A command failure: exit with `status` (1 unless said otherwise) and one readable line.
public struct CommandFailure: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var status: Int32
    public init(_ message: String, status: Int32 = 1) {
        self.message = message
        self.status = status
    }
    public var description: String { message }
}

/// Parsed arguments: positionals, `--name value` options and `--flag` switches, checked against what a
/// command declares so that unknown or missing pieces are usage errors.
struct Arguments {
    private(set) var positionals: [String] = []
    private var options: [String: String] = [:]
    private var flags: Set<String> = []

    /// - Parameters:
    ///   - valued: option names that take a value (without `--`).
    ///   - switches: option names that take none.
    init(_ args: [String], valued: Set<String> = [], switches: Set<String> = []) throws(UsageError) {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" {
                positionals += args[(i + 1)...]
                break
            }
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2))
                var inline: String?
                if let eq = name.firstIndex(of: "=") {
                    inline = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                if valued.contains(name) {
                    if let inline {
                        options[name] = inline
                    } else {
                        guard i + 1 < args.count else { throw UsageError("--\(name) needs a value") }
                        options[name] = args[i + 1]
                        i += 1
                    }
                } else if switches.contains(name) {
                    guard inline == nil else { throw UsageError("--\(name) takes no value") }
                    flags.insert(name)
                } else {
                    throw UsageError("unknown option --\(name)")
                }
            } else {
                positionals.append(a)
            }
            i += 1
        }
    }

    func value(_ name: String) -> String? { options[name] }
    func has(_ name: String) -> Bool { flags.contains(name) }

    /// Exactly `names.count` positionals, named for the error message.
    func positionals(_ names: String...) throws(UsageError) -> [String] {
        if positionals.count < names.count { throw UsageError("missing <\(names[positionals.count])>") }
        if positionals.count > names.count { throw UsageError("unexpected argument '\(positionals[names.count])'") }
        return positionals
    }

    func int(_ name: String, default def: Int, range: ClosedRange<Int>) throws(UsageError) -> Int {
        guard let raw = options[name] else { return def }
        guard let v = Int(raw), range.contains(v) else {
            throw UsageError("--\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(raw)'")
        }
        return v
    }
}
