import Testing
@testable import SlipwayCore

struct AnalysisJudgeTests {
    func window(requests: Int, errors: Int, latency: (Int) -> Double = { _ in 20 }, seconds: Double = 30) -> TrafficWindow {
        TrafficWindow(requests: requests, errors: errors, latencies: (0..<requests).map(latency), seconds: seconds)
    }

    @Test func errorRateComparedWithBaselineFailsABadCanary() {
        let check = MetricCheck(name: "errors", source: .router(metric: "error-rate"), compareBaseline: true)
        // +5 points of errors at 50 rps over 30 s, split 50/50.
        let bad = AnalysisJudge.judge(check, canary: window(requests: 750, errors: 40), baseline: window(requests: 750, errors: 2))
        #expect(bad.outcome == .fail, "\(bad.reason)")
        #expect(bad.comparison?.pValue.map { $0 < 1e-6 } == true)
        let same = AnalysisJudge.judge(check, canary: window(requests: 750, errors: 3), baseline: window(requests: 750, errors: 2))
        #expect(same.outcome == .pass, "\(same.reason)")
        let quiet = AnalysisJudge.judge(check, canary: window(requests: 10, errors: 1), baseline: window(requests: 750, errors: 2))
        #expect(quiet.outcome == .inconclusive, "\(quiet.reason)")
    }

    @Test func latencyThresholdUsesThePercentileInMilliseconds() {
        let check = MetricCheck(name: "p99", source: .router(metric: "latency-p99"), max: 250)
        let fast = AnalysisJudge.judge(check, canary: window(requests: 200, errors: 0, latency: { Double($0 % 100) }), baseline: nil)
        #expect(fast.outcome == .pass)
        #expect(fast.value == 98)  // nearest rank: the 198th of 200 sorted values
        #expect(fast.reason.contains("≤ max 250 ms"), "\(fast.reason)")
        let slow = AnalysisJudge.judge(check, canary: window(requests: 200, errors: 0, latency: { $0 >= 190 ? 900 : 10 }), baseline: nil)
        #expect(slow.outcome == .fail)
        #expect(slow.reason.contains("> max 250 ms"), "\(slow.reason)")
        #expect(AnalysisJudge.judge(check, canary: window(requests: 5, errors: 0), baseline: nil).outcome == .inconclusive)
    }

    @Test func latencyMeanComesFromTheSamplesOrFromAReportedAverage() {
        let check = MetricCheck(name: "mean", source: .router(metric: "latency-mean"), max: 30)
        // Samples (the built-in router): 0…99 ms, mean 49.5.
        let sampled = AnalysisJudge.judge(check, canary: window(requests: 200, errors: 0, latency: { Double($0 % 100) }), baseline: nil)
        #expect(sampled.outcome == .fail)
        #expect(sampled.value == 49.5)
        #expect(sampled.reason.contains("latency-mean 49.5 ms > max 30 ms over 200 requests"), "\(sampled.reason)")
        // An average only (HAProxy's rtime): the average is the value; percentiles stay unmeasured.
        let reported = TrafficWindow(requests: 120, errors: 0, latencies: [], seconds: 10, meanLatency: 12)
        let passed = AnalysisJudge.judge(check, canary: reported, baseline: nil)
        #expect(passed.outcome == .pass, "\(passed.reason)")
        #expect(passed.value == 12)
        let p99 = AnalysisJudge.judge(MetricCheck(name: "p99", source: .router(metric: "latency-p99"), max: 30), canary: reported, baseline: nil)
        #expect(p99.outcome == .inconclusive)
        // Too little traffic is inconclusive, as for every threshold.
        #expect(AnalysisJudge.judge(check, canary: TrafficWindow(requests: 3, errors: 0, latencies: [], seconds: 10, meanLatency: 500), baseline: nil).outcome == .inconclusive)
    }

    @Test func haproxyCannotMeasurePercentilesOrCompareLatency() {
        #expect(MetricCheck.haproxyProblem(metric: "latency-p99", compareBaseline: false) != nil)
        #expect(MetricCheck.haproxyProblem(metric: "latency-mean", compareBaseline: true) != nil)
        #expect(MetricCheck.haproxyProblem(metric: "latency-mean", compareBaseline: false) == nil)
        #expect(MetricCheck.haproxyProblem(metric: "error-rate", compareBaseline: true) == nil)
        #expect(MetricCheck.haproxyProblem(metric: "request-rate", compareBaseline: false) == nil)
    }

    @Test func latencyComparedWithBaselineFlagsASlowerCanary() {
        let check = MetricCheck(name: "latency", source: .router(metric: "latency-p50"), compareBaseline: true)
        let slower = AnalysisJudge.judge(check, canary: window(requests: 300, errors: 0, latency: { 40 + Double($0 % 17) }), baseline: window(requests: 300, errors: 0, latency: { 20 + Double($0 % 17) }))
        #expect(slower.outcome == .fail, "\(slower.reason)")
        let same = AnalysisJudge.judge(check, canary: window(requests: 300, errors: 0, latency: { 20 + Double($0 % 17) }), baseline: window(requests: 300, errors: 0, latency: { 20 + Double(($0 + 5) % 17) }))
        #expect(same.outcome == .pass, "\(same.reason)")
    }

    @Test func thresholdFailureWinsOverAPassingComparison() {
        let check = MetricCheck(name: "errors", source: .router(metric: "error-rate"), compareBaseline: true, max: 1)
        // Both versions are equally bad: the comparison passes, the absolute limit does not.
        let result = AnalysisJudge.judge(check, canary: window(requests: 1000, errors: 50), baseline: window(requests: 1000, errors: 50))
        #expect(result.outcome == .fail)
        #expect(result.reason.contains("> max 1 %"), "\(result.reason)")
    }

    @Test func externalValuesAgainstBounds() {
        let check = MetricCheck(name: "5xx", source: .prometheus(address: "http://127.0.0.1:9090", query: "q"), max: 0.5)
        #expect(AnalysisJudge.judge(check, value: 0.2).outcome == .pass)
        #expect(AnalysisJudge.judge(check, value: 0.7).outcome == .fail)
        #expect(AnalysisJudge.judge(check, value: nil, error: "prometheus: connection refused").reason == "prometheus: connection refused")
        #expect(AnalysisJudge.judge(check, value: .nan).outcome == .inconclusive)
    }

    @Test func percentileIsNearestRank() {
        #expect(AnalysisJudge.percentile([5, 1, 3, 2, 4], 0.5) == 3)
        #expect(AnalysisJudge.percentile([1, 2, 3, 4], 0.99) == 4)
        #expect(AnalysisJudge.percentile([], 0.5) == nil)
        #expect(AnalysisJudge.percentile([.nan, 7], 0.5) == 7)
    }
}
