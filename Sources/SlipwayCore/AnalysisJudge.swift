/// Traffic of one version over an analysis window, as the router measures it.
public struct TrafficWindow: Sendable, Equatable, Codable {
    public var requests: Int
    public var errors: Int
    /// Milliseconds, one per request.
    public var latencies: [Double]
    public var seconds: Double
    /// Mean latency in milliseconds when only an average is known (HAProxy's `rtime`); nil: the samples' mean.
    public var meanLatency: Double?

    public init(requests: Int, errors: Int, latencies: [Double], seconds: Double, meanLatency: Double? = nil) {
        self.requests = requests
        self.errors = errors
        self.latencies = latencies
        self.seconds = seconds
        self.meanLatency = meanLatency
    }

    /// Error rate in percent.
    public var errorRate: Double { requests == 0 ? 0 : Double(errors) / Double(requests) * 100 }
}

/// Turns a metric check and measured traffic into a `Measurement` that says why: thresholds on the
/// canary's own numbers, and `compare: baseline` with the statistics Kayenta uses (latency) or a count
/// test (errors). Pure, so every verdict can be reproduced from what was stored.
public enum AnalysisJudge {
    /// Fewer canary requests than this make a threshold check inconclusive rather than a guess.
    public static let minimumRequests = 20

    /// The false-alarm rate (α) of the first look at a window; look k gets α·6/(π²k²), so the looks of a
    /// cumulative window together never exceed α (alpha spending: repeated looks at growing data would
    /// otherwise turn a 1 % test into a ~3 % one, measured by the A/A tests). Looks are counted from the first
    /// one with enough data (`canCompare`), so early, inconclusive looks spend nothing.
    public static let alpha = 0.01
    /// Canary/baseline mean latency ratio needed before a significant increase fails.
    public static let latencyAllowedIncrease = 1.1
    /// And by at least this many milliseconds in the mean.
    public static let latencyMinimumDifference = 1.0

    /// Enough canary traffic for a baseline comparison (below it the comparisons are Inconclusive).
    public static func canCompare(_ canary: TrafficWindow) -> Bool {
        canary.requests >= ErrorRateComparison.minimumCanaryRequests
    }

    public static func alpha(look: Int) -> Double {
        let k = Double(max(1, look))
        return alpha * 6 / (Double.pi * Double.pi * k * k)
    }

    public static func judge(_ check: MetricCheck, canary: TrafficWindow, baseline: TrafficWindow?, look: Int = 1) -> Measurement {
        guard case .router(let metric) = check.source else {
            return Measurement(metric: check.name, outcome: .inconclusive, reason: "not a router metric; measure it with its source and call judge(_:value:)")
        }
        if check.compareBaseline {
            guard let baseline else {
                return Measurement(metric: check.name, outcome: .inconclusive, reason: "no baseline traffic to compare with")
            }
            var comparison: MetricComparison
            switch metric {
            case "error-rate":
                comparison = ErrorRateComparison.compare(canaryErrors: canary.errors, canaryTotal: canary.requests, baselineErrors: baseline.errors, baselineTotal: baseline.requests,
                                                         alpha: alpha(look: look))
            case "request-rate":
                comparison = LatencyComparison.compare(canary: [Double(canary.requests) / max(canary.seconds, 1e-9)], baseline: [Double(baseline.requests) / max(baseline.seconds, 1e-9)], config: .init(direction: .decrease))
            default:
                // A latency increase must also matter: at least 10 % in the mean (Kayenta's allowedIncrease), so a
                // fresh process's colder caches (+0.04 ms on a 1 ms service, seen in bench/deploy.sh) do not roll back.
                comparison = LatencyComparison.compare(canary: canary.latencies, baseline: baseline.latencies,
                                                       config: .init(confidenceLevel: 1 - 2 * alpha(look: look), allowedIncrease: latencyAllowedIncrease))
            }

            if metric.hasPrefix("latency"), comparison.verdict == .high, comparison.canaryMean - comparison.baselineMean < latencyMinimumDifference {
                // Significant but too small to matter to anyone: a fresh process's first requests are a little
                // slower (bench/deploy.sh saw 0.30 vs 0.19 ms roll an A/A canary back).
                comparison.verdict = .pass
                comparison.reason += "; but the means differ by \(Statistics.format(comparison.canaryMean - comparison.baselineMean)) ms, under the \(Statistics.format(latencyMinimumDifference)) ms that counts: Pass"
            }
            let outcome: Measurement.Outcome = switch comparison.verdict {
            case .high: .fail
            case .inconclusive: .inconclusive
            case .pass, .low: .pass
            }
            let measured = thresholdCheck(check, metric: metric, canary: canary)
            // A threshold failure is a failure even when the comparison passes.
            if let measured, measured.outcome == .fail { return measured }
            return Measurement(metric: check.name, outcome: outcome, reason: "\(metric) vs baseline: \(comparison.reason)", value: value(of: metric, in: canary), comparison: comparison)
        }
        return thresholdCheck(check, metric: metric, canary: canary)
            ?? Measurement(metric: check.name, outcome: .inconclusive, reason: "nothing to check")
    }

    /// A value from another source (prometheus, http, command) against `max`/`min`.
    public static func judge(_ check: MetricCheck, value: Double?, error: String? = nil) -> Measurement {
        guard let value, value.isFinite else {
            return Measurement(metric: check.name, outcome: .inconclusive, reason: error ?? "no value")
        }
        return bounds(check, value: value, unit: "")
    }

    static func value(of metric: String, in window: TrafficWindow) -> Double? {
        switch metric {
        case "error-rate": return window.requests == 0 ? nil : window.errorRate
        case "request-rate": return window.seconds > 0 ? Double(window.requests) / window.seconds : nil
        case "latency-p50": return percentile(window.latencies, 0.50)
        case "latency-p90": return percentile(window.latencies, 0.90)
        case "latency-p99": return percentile(window.latencies, 0.99)
        case "latency-mean":
            if let mean = window.meanLatency { return mean }
            let finite = window.latencies.filter(\.isFinite)
            return finite.isEmpty ? nil : finite.reduce(0, +) / Double(finite.count)
        default: return nil
        }
    }

    static func thresholdCheck(_ check: MetricCheck, metric: String, canary: TrafficWindow) -> Measurement? {
        guard check.max != nil || check.min != nil else { return nil }
        if metric != "request-rate", canary.requests < minimumRequests {
            return Measurement(metric: check.name, outcome: .inconclusive, reason: "\(canary.requests) canary requests in the window, fewer than \(minimumRequests)")
        }
        guard let value = value(of: metric, in: canary) else {
            return Measurement(metric: check.name, outcome: .inconclusive, reason: "no \(metric) measured")
        }
        let unit = metric.hasPrefix("latency") ? " ms" : metric == "error-rate" ? " %" : "/s"
        var measurement = bounds(check, value: value, unit: unit)
        measurement.reason = "\(metric) " + measurement.reason + " over \(canary.requests) requests"
        return measurement
    }

    static func bounds(_ check: MetricCheck, value: Double, unit: String) -> Measurement {
        let shown = format(value) + unit
        if let max = check.max, value > max {
            return Measurement(metric: check.name, outcome: .fail, reason: "\(shown) > max \(format(max))\(unit)", value: value)
        }
        if let min = check.min, value < min {
            return Measurement(metric: check.name, outcome: .fail, reason: "\(shown) < min \(format(min))\(unit)", value: value)
        }
        let limits = [check.max.map { "≤ max \(format($0))\(unit)" }, check.min.map { "≥ min \(format($0))\(unit)" }].compactMap { $0 }
        return Measurement(metric: check.name, outcome: .pass, reason: "\(shown) \(limits.joined(separator: ", "))", value: value)
    }

    /// Nearest-rank percentile.
    public static func percentile(_ values: [Double], _ p: Double) -> Double? {
        let finite = values.filter(\.isFinite).sorted()
        guard !finite.isEmpty else { return nil }
        let rank = Int((p * Double(finite.count)).rounded(.up))
        return finite[min(finite.count - 1, max(0, rank - 1))]
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e12 { return String(Int(value)) }
        let text = String(value)
        if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > 4 {
            return String(text[..<text.index(dot, offsetBy: 4)])
        }
        return text
    }
}
