import Foundation
import Synchronization

/// Prometheus counters and a latency histogram of the HTTP service, rendered as text at /metrics.
final class ServiceMetrics: Sendable {
    static let latencyBuckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]

    private struct State {
        var requests: [String: Int] = [:]          // "route|status"
        var decisions: [String: Int] = [:]         // "outcome|reason"
        var latencyCounts = [Int](repeating: 0, count: ServiceMetrics.latencyBuckets.count + 1)
        var latencySum = 0.0
        var redisErrors = 0
        var postgresErrors = 0
    }
    private let state = Mutex(State())

    func request(route: String, status: Int, seconds: Double) {
        state.withLock { s in
            s.requests["\(route)|\(status)", default: 0] += 1
            let i = Self.latencyBuckets.firstIndex { seconds <= $0 } ?? Self.latencyBuckets.count
            s.latencyCounts[i] += 1
            s.latencySum += seconds
        }
    }

    func decision(_ outcome: String, reason: String = "") {
        state.withLock { $0.decisions["\(outcome)|\(reason)", default: 0] += 1 }
    }

    func redisError() { state.withLock { $0.redisErrors += 1 } }
    func postgresError() { state.withLock { $0.postgresErrors += 1 } }

    /// The text exposition format, with writer figures appended by the caller.
    func render() -> String {
        let s = state.withLock { $0 }
        var out = "# HELP tollgate_http_requests_total HTTP requests by route and status.\n# TYPE tollgate_http_requests_total counter\n"
        for (k, v) in s.requests.sorted(by: { $0.key < $1.key }) {
            let p = k.split(separator: "|", maxSplits: 1)
            out += "tollgate_http_requests_total{route=\"\(p[0])\",status=\"\(p[1])\"} \(v)\n"
        }
        out += "# HELP tollgate_http_request_duration_seconds Time to answer a request.\n# TYPE tollgate_http_request_duration_seconds histogram\n"
        var cumulative = 0
        for (i, b) in Self.latencyBuckets.enumerated() {
            cumulative += s.latencyCounts[i]
            out += "tollgate_http_request_duration_seconds_bucket{le=\"\(b)\"} \(cumulative)\n"
        }
        cumulative += s.latencyCounts.last!
        out += "tollgate_http_request_duration_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "tollgate_http_request_duration_seconds_sum \(s.latencySum)\ntollgate_http_request_duration_seconds_count \(cumulative)\n"
        out += "# HELP tollgate_decisions_total Reservation decisions by outcome and reason.\n# TYPE tollgate_decisions_total counter\n"
        for (k, v) in s.decisions.sorted(by: { $0.key < $1.key }) {
            let p = k.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false)
            out += "tollgate_decisions_total{outcome=\"\(p[0])\",reason=\"\(p.count > 1 ? p[1] : "")\"} \(v)\n"
        }
        out += "# HELP tollgate_redis_errors_total Requests that failed because Redis was unreachable or failing.\n# TYPE tollgate_redis_errors_total counter\n"
        out += "tollgate_redis_errors_total \(s.redisErrors)\n"
        out += "# HELP tollgate_postgres_errors_total Requests that failed because Postgres was unreachable.\n# TYPE tollgate_postgres_errors_total counter\n"
        out += "tollgate_postgres_errors_total \(s.postgresErrors)\n"
        return out
    }
}
