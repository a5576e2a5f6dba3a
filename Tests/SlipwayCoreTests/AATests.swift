import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayCore

/// A/A: the same version as canary and stable. Every rollback is a false one. Simulates the router's windows
/// (binomial errors, log-normal latencies, the canary's share of 50 requests/s) measured every 2 s,
/// cumulatively, over a 60 s canary, through the real judge and the real state machine.
@Suite struct AATests {
    struct Traffic {
        var rng: SplitMix64
        mutating func uniform() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        mutating func normal() -> Double {
            let u1 = max(uniform(), 1e-12), u2 = uniform()
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
        /// One request: failed? and its latency in ms.
        mutating func request(errorRate: Double, medianMs: Double, sigma: Double) -> (Bool, Double) {
            (uniform() < errorRate, medianMs * exp(sigma * normal()))
        }
    }

    static let metrics = [
        MetricCheck(name: "errors", source: .router(metric: "error-rate"), compareBaseline: true),
        MetricCheck(name: "latency", source: .router(metric: "latency-p99"), compareBaseline: true),
    ]

    /// Runs one canary of `seconds` (analysis every 2 s, as the controller does it: cumulative window, looks
    /// counted from the first with enough data); the time of the rollback, or nil when it was promoted.
    static func rollback(_ traffic: inout Traffic, errorRate: Double, canaryErrorRate: Double, seconds: Int = 30,
                         medianMs: Double = 20, sigma: Double = 0.5) -> Double? {
        var machine = RolloutStateMachine(stable: "v1", candidate: "v1-again", instances: 5,
                                          plan: .canary(steps: [.weight(20), .pause(Double(seconds)), .weight(100)], backgroundAnalysis: true),
                                          analysis: .init(interval: 2, failureLimit: 0, inconclusiveLimit: 1000))
        _ = machine.handle(.start(now: 0))
        _ = machine.handle(.healthy(version: "v1-again", count: 1, now: 0))
        var canary = TrafficWindow(requests: 0, errors: 0, latencies: [], seconds: 0)
        var stable = canary
        var looks = 0
        for tick in 1...(seconds / 2) {
            let now = Double(tick * 2)
            // 100 requests per 2 s (50 rps), 20 % to the canary by weight.
            for _ in 0..<100 {
                let toCanary = traffic.uniform() < 0.2
                let (failed, ms) = traffic.request(errorRate: toCanary ? canaryErrorRate : errorRate, medianMs: medianMs, sigma: sigma)
                if toCanary {
                    canary.requests += 1; canary.errors += failed ? 1 : 0; canary.latencies.append(ms)
                } else {
                    stable.requests += 1; stable.errors += failed ? 1 : 0; stable.latencies.append(ms)
                }
            }
            canary.seconds = now
            stable.seconds = now
            let actions = machine.handle(.tick(now: now))
            if actions.contains(where: { if case .analyze = $0 { true } else { false } }) {
                if AnalysisJudge.canCompare(canary) { looks += 1 }
                let measurements = metrics.map { AnalysisJudge.judge($0, canary: canary, baseline: stable, look: max(1, looks)) }
                _ = machine.handle(.measured(measurements, now: now))
            }
            if machine.phase == .rolledBack { return now }
            if machine.phase.isFinal { return nil }
        }
        return machine.phase == .rolledBack ? Double(seconds) : nil
    }

    @Test("A/A over 400 canaries of 60 s: false rollbacks ≤ 1 %")
    func falseRollbacks() {
        var traffic = Traffic(rng: SplitMix64(seed: 0xA0A0))
        var rollbacks = 0
        let runs = 400
        for _ in 0..<runs where Self.rollback(&traffic, errorRate: 0.005, canaryErrorRate: 0.005, seconds: 60) != nil { rollbacks += 1 }
        let rate = Double(rollbacks) / Double(runs)
        #expect(rate <= 0.01, "\(rollbacks) false rollbacks in \(runs) A/A canaries")
    }

    @Test("the same procedure catches a canary with +5 % errors at 50 rps: ≥ 95 % within 60 s, most within 30 s (power)")
    func power() {
        var traffic = Traffic(rng: SplitMix64(seed: 0xB0B0))
        var times: [Double] = []
        let runs = 100
        for _ in 0..<runs {
            if let t = Self.rollback(&traffic, errorRate: 0.005, canaryErrorRate: 0.055, seconds: 60) { times.append(t) }
        }
        times.sort()
        #expect(times.count >= 95, "caught \(times.count) of \(runs) bad canaries")
        let median = times.isEmpty ? .infinity : times[times.count / 2]
        #expect(median <= 30, "median time to rollback \(median) s; times \(times)")
    }
}

extension AATests {
    @Test("a latency increase that is significant but under 1 ms (a fresh process's colder first requests) passes; +40 ms fails")
    func tinyLatencyShiftsPass() {
        var traffic = Traffic(rng: SplitMix64(seed: 7))
        let check = MetricCheck(name: "latency", source: .router(metric: "latency-p99"), compareBaseline: true)
        func window(_ medianMs: Double, _ n: Int) -> TrafficWindow {
            TrafficWindow(requests: n, errors: 0, latencies: (0..<n).map { _ in traffic.request(errorRate: 0, medianMs: medianMs, sigma: 0.2).1 }, seconds: 10)
        }
        // Seen in bench/deploy.sh: 0.30 ms vs 0.19 ms means, clearly "significant", not worth a rollback.
        let tiny = AnalysisJudge.judge(check, canary: window(0.30, 300), baseline: window(0.19, 1200))
        #expect(tiny.outcome == .pass, "\(tiny.reason)")
        #expect(tiny.reason.contains("under the 1 ms that counts"))
        let slow = AnalysisJudge.judge(check, canary: window(40, 300), baseline: window(1, 1200))
        #expect(slow.outcome == .fail, "\(slow.reason)")
    }
}
