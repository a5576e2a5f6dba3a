import Foundation
import SlipwayCore
import Synchronization

/// Open-loop HTTP load (`uses: slipway/load`): requests start on a fixed schedule whatever the latency, like a
/// stream of real users, so a slow version cannot slow its own load down and hide (coordinated omission).
public struct LoadGenerator: Sendable {
    public struct Report: Sendable, Equatable {
        public var requests: Int
        public var errors: Int
        /// Requests that never got a response (connect failure, timeout).
        public var failures: Int
        public var statuses: [Int: Int]
        public var latencies: [Double]
        public var seconds: Double

        public var errorPercent: Double { requests == 0 ? 0 : Double(errors) / Double(requests) * 100 }
        public func percentile(_ p: Double) -> Double { AnalysisJudge.percentile(latencies, p) ?? 0 }

        public var summary: String {
            let statusText = statuses.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
            return "\(requests) requests in \(String(format: "%.1f", seconds)) s (\(String(format: "%.1f", Double(requests) / max(seconds, 0.001))) rps), "
                + "\(errors) errors (\(String(format: "%.2f", errorPercent))%), latency p50 \(String(format: "%.1f", percentile(50))) ms, "
                + "p90 \(String(format: "%.1f", percentile(90))) ms, p99 \(String(format: "%.1f", percentile(99))) ms"
                + (statusText.isEmpty ? "" : "; statuses \(statusText)") + (failures > 0 ? "; \(failures) without response" : "")
        }
    }

    public var url: String
    public var rps: Double
    public var duration: Duration
    public var headers: [(String, String)]
    public var timeout: Duration
    /// Requests in flight at most; beyond it a request is counted as failed rather than queued.
    public var maxInFlight: Int

    public init(url: String, rps: Double, duration: Duration, headers: [(String, String)] = [], timeout: Duration = .seconds(5), maxInFlight: Int = 512) {
        self.url = url
        self.rps = rps
        self.duration = duration
        self.headers = headers
        self.timeout = timeout
        self.maxInFlight = maxInFlight
    }

    private final class Tally: Sendable {
        let report = Mutex(Report(requests: 0, errors: 0, failures: 0, statuses: [:], latencies: [], seconds: 0))
        let inFlight = Atomic<Int>(0)

        func record(status: Int?, milliseconds: Double) {
            report.withLock { r in
                r.requests += 1
                if let status {
                    r.statuses[status, default: 0] += 1
                    r.latencies.append(milliseconds)
                    if status >= 500 { r.errors += 1 }
                } else {
                    r.failures += 1
                    r.errors += 1
                }
            }
        }
    }

    public func run() async -> Report {
        let client = HTTPClient(maxBodyBytes: 1 << 20)
        let total = max(1, Int((rps * duration.seconds).rounded()))
        let interval = 1.0 / max(rps, 0.001)
        let clock = ContinuousClock()
        let start = clock.now
        let tally = Tally()
        await withDiscardingTaskGroup { group in
            for index in 0..<total {
                let due = start + .milliseconds(Int64(Double(index) * interval * 1000))
                if clock.now < due { try? await Task.sleep(until: due, clock: clock) }
                if Task.isCancelled { break }
                if tally.inFlight.load(ordering: .relaxed) >= maxInFlight {
                    tally.record(status: nil, milliseconds: 0)
                    continue
                }
                tally.inFlight.add(1, ordering: .relaxed)
                let url = self.url, headers = self.headers, timeout = self.timeout
                group.addTask {
                    let response = try? await client.get(url, headers: headers, timeout: timeout)
                    tally.record(status: response?.status, milliseconds: response?.milliseconds ?? 0)
                    tally.inFlight.subtract(1, ordering: .relaxed)
                }
            }
        }
        var report = tally.report.withLock { $0 }
        report.seconds = (clock.now - start).seconds
        return report
    }
}
