import TollgateCore

/// One entry of a partition stream, parsed. Entries the scripts append are either usage or alert events;
/// anything else is malformed and goes to the dead-letter table with the reason.
enum StreamEvent {
    case usage(UsageRow)
    case alert(AlertRow)
    case malformed(reason: String)

    /// A usage row for ai_usage_log.
    struct UsageRow {
        var id: String
        var userId: String
        var modelId: String
        var promptTokens: Int64
        var completionTokens: Int64
        var totalTokens: Int64
        var cost: Money
        var priceVersion: String
        var metadata: String?
        /// Redis time of the commit, ms since the epoch: the row's created_at.
        var createdAtMs: Int64
        /// The user's request count this month after this event (nil for events without one).
        var seq: Int64?
    }

    struct AlertRow {
        var id: String
        var userId: String
        var month: String
        var threshold: Int
        var spent: Money
        var limit: Money
        var createdAtMs: Int64
    }

    /// Parses an entry's field/value pairs (a handful, so a linear lookup beats hashing).
    init(fields pairs: [(String, String)]) {
        let fields = FieldLookup(pairs: pairs)
        func int(_ k: String) -> Int64? { fields[k].flatMap { Int64($0) } }
        func text(_ k: String) -> String? { fields[k].flatMap { Validation.isValidId($0) ? $0 : nil } }
        switch fields["type"] {
        case "usage":
            guard let id = text("id") else { self = .malformed(reason: "usage event without a valid id"); return }
            guard let user = text("user") else { self = .malformed(reason: "usage event \(id) without a valid user"); return }
            guard let model = fields["model"], !model.isEmpty, model.utf8.count <= 256 else {
                self = .malformed(reason: "usage event \(id) without a model"); return
            }
            guard let p = int("prompt"), let c = int("completion"), p >= 0, c >= 0 else {
                self = .malformed(reason: "usage event \(id) has bad token counts"); return
            }
            guard let cost = int("cost"), cost >= 0 else { self = .malformed(reason: "usage event \(id) has no integer cost"); return }
            guard let ts = int("ts"), ts > 0 else { self = .malformed(reason: "usage event \(id) has no timestamp"); return }
            let meta = fields["meta"].flatMap { $0.isEmpty ? nil : $0 }
            self = .usage(UsageRow(
                id: id, userId: user, modelId: model, promptTokens: p, completionTokens: c,
                totalTokens: int("total") ?? p + c, cost: Money(nanos: cost), priceVersion: fields["pver"] ?? "",
                metadata: meta, createdAtMs: ts, seq: int("seq")))
        case "alert":
            guard let id = fields["id"], !id.isEmpty, let user = text("user"), let month = fields["month"], Month(month) != nil,
                  let th = int("threshold"), let spent = int("spent"), let limit = int("limit"), let ts = int("ts")
            else { self = .malformed(reason: "alert event with missing or bad fields"); return }
            self = .alert(AlertRow(id: id, userId: user, month: month, threshold: Int(th), spent: Money(nanos: spent),
                                   limit: Money(nanos: limit), createdAtMs: ts))
        default:
            self = .malformed(reason: "unknown event type '\(fields["type"] ?? "")'")
        }
    }
}

private struct FieldLookup {
    let pairs: [(String, String)]
    subscript(_ name: String) -> String? {
        for (k, v) in pairs where k == name { return v }
        return nil
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS.mmm` of epoch milliseconds, for timestamp columns.
func utcTimestamp(ms: Int64) -> String { utcText(ms: ms, separator: " ", suffix: "") }

/// ISO 8601 UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` of epoch milliseconds, for JSON and logs.
func utcISO(ms: Int64) -> String { utcText(ms: ms, separator: "T", suffix: "Z") }

private func utcText(ms: Int64, separator: Character, suffix: String) -> String {
    let days = Int(ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000)
    let (y, m, d) = Month.civil(fromDays: days)
    let rem = Int(ms - Int64(days) * 86_400_000)
    let h = rem / 3_600_000, mi = rem / 60_000 % 60, s = rem / 1000 % 60, milli = rem % 1000
    var out = ""
    out.reserveCapacity(24)
    func pad(_ n: Int, _ width: Int) {
        let t = String(n)
        for _ in t.count..<width { out.append("0") }
        out += t
    }
    pad(y, 4); out.append("-"); pad(m, 2); out.append("-"); pad(d, 2)
    out.append(separator)
    pad(h, 2); out.append(":"); pad(mi, 2); out.append(":"); pad(s, 2); out.append("."); pad(milli, 3)
    out += suffix
    return out
}
