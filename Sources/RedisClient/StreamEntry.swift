internal import CHiredis

/// One entry of a stream reply: the stream it came from, its id, and its field/value pairs as text.
public struct StreamEntry: Sendable {
    public var stream: String
    public var id: String
    /// In the order Redis stores them. Empty for an entry that was deleted while pending.
    public var fields: [(String, String)]

    public init(stream: String, id: String, fields: [(String, String)]) {
        self.stream = stream
        self.id = id
        self.fields = fields
    }

    /// The value of the first field named `name`.
    public subscript(_ name: String) -> String? {
        for (k, v) in fields where k == name { return v }
        return nil
    }
}

extension RedisConnection {
    /// Sends XREADGROUP (or XREAD) and decodes the reply straight into entries, without building a reply
    /// tree first: the usage writer reads tens of thousands of entries a second this way.
    public func readStreams(_ command: RedisCommand) throws(RedisError) -> [StreamEntry] {
        try sendDecoding(command) { reply -> Result<[StreamEntry], RedisError> in
            let r = reply.pointee
            if r.type == REDIS_REPLY_ERROR {
                return .failure(RedisError(serverReply: Self.text(reply)))
            }
            guard r.type == REDIS_REPLY_ARRAY else { return .success([]) }  // nil: nothing arrived in time
            var out: [StreamEntry] = []
            for s in 0..<r.elements {
                guard let streamReply = r.element[s], streamReply.pointee.type == REDIS_REPLY_ARRAY,
                      streamReply.pointee.elements == 2,
                      let name = streamReply.pointee.element[0], let entries = streamReply.pointee.element[1],
                      entries.pointee.type == REDIS_REPLY_ARRAY
                else { continue }
                let stream = Self.text(name)
                out.reserveCapacity(out.count + entries.pointee.elements)
                for e in 0..<entries.pointee.elements {
                    guard let entry = entries.pointee.element[e], entry.pointee.type == REDIS_REPLY_ARRAY,
                          entry.pointee.elements == 2, let idReply = entry.pointee.element[0]
                    else { continue }
                    var fields: [(String, String)] = []
                    if let flat = entry.pointee.element[1], flat.pointee.type == REDIS_REPLY_ARRAY {
                        let n = flat.pointee.elements
                        fields.reserveCapacity(n / 2)
                        var i = 0
                        while i + 1 < n {
                            if let k = flat.pointee.element[i], let v = flat.pointee.element[i + 1] {
                                fields.append((Self.text(k), Self.text(v)))
                            }
                            i += 2
                        }
                    }
                    out.append(StreamEntry(stream: stream, id: Self.text(idReply), fields: fields))
                }
            }
            return .success(out)
        }.get()
    }

    static func text(_ reply: UnsafeMutablePointer<redisReply>) -> String {
        let r = reply.pointee
        if r.type == REDIS_REPLY_INTEGER { return String(r.integer) }
        guard let str = r.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: r.len), as: UTF8.self)
    }
}
