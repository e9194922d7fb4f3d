import RedisClient

/// The Lua scripts of `lua/`, embedded at build time, one per operation.
enum Scripts {
    static let reserve = load("reserve")
    static let commit = load("commit")
    static let release = load("release")
    static let logUsage = load("log_usage")
    static let access = load("access")
    static let setUnlock = load("set_unlock")
    static let reconcileSnapshot = load("reconcile_snapshot")

    private static func load(_ name: String) -> RedisScript {
        guard let source = EmbeddedResources.files["lua/\(name).lua"] else {
            fatalError("lua/\(name).lua was not embedded at build time")
        }
        return RedisScript(source: source)
    }
}

/// Redis key names. Every key of a user carries the hash tag of the user's partition, `{P}`, so one
/// script touches one slot and Redis Cluster needs no change.
struct Keys: Sendable {
    let prefix: String
    let partitions: Int

    func partition(of userId: String) -> Int { Partitioning.partition(of: userId, count: partitions) }

    /// `<prefix>:{P}:`, the base every key of partition P starts with.
    func base(_ p: Int) -> String { "\(prefix):{\(p)}:" }
    func user(_ userId: String) -> String { base(partition(of: userId)) + "u:" + userId }
    func holds(_ userId: String) -> String { base(partition(of: userId)) + "h:" + userId }
    func reservation(_ handle: ReservationHandle) -> String { base(handle.partition) + "r:" + handle.text }
    func reserveKey(_ userId: String, _ key: String) -> String {
        base(partition(of: userId)) + "rk:\(userId.utf8.count):\(userId):\(key)"
    }
    func usageKey(_ userId: String, _ key: String) -> String {
        base(partition(of: userId)) + "uk:\(userId.utf8.count):\(userId):\(key)"
    }
    func stream(_ p: Int) -> String { base(p) + "events" }
    var allStreams: [String] { (0..<partitions).map(stream) }
}

import TollgateCore

/// A reservation id as handed to clients: `<partition>-<26 random base32 characters>`. The partition
/// lets a commit find the reservation's keys from the id alone.
public struct ReservationHandle: Sendable, Hashable, CustomStringConvertible {
    public let partition: Int
    public let text: String

    init(partition: Int) {
        self.partition = partition
        self.text = "\(partition)-\(IdGenerator.random128())"
    }

    /// Parses a client-supplied id; nil when it cannot be one of ours for `partitions`.
    public init?(_ text: String, partitions: Int) {
        guard text.utf8.count <= 40, let dash = text.firstIndex(of: "-"), let p = Int(text[..<dash]),
              (0..<partitions).contains(p)
        else { return nil }
        let rest = text[text.index(after: dash)...]
        guard rest.count == 26, rest.allSatisfy({ ("a"..."z").contains($0) || ("2"..."7").contains($0) }) else { return nil }
        self.partition = p
        self.text = text
    }

    public var description: String { text }
}
