import Foundation
import Testing
@testable import SlipwayCore

struct RolloutStateMachineTests {
    typealias M = RolloutStateMachine

    static func weights(_ actions: [M.Action]) -> [String: Int]? {
        actions.reversed().compactMap { if case .setWeights(let w) = $0 { w } else { nil } }.first
    }

    static func started(_ actions: [M.Action]) -> Int? {
        actions.compactMap { if case .startInstances(_, let n) = $0 { n } else { nil } }.last
    }

    static func finished(_ actions: [M.Action]) -> M.Phase? {
        actions.compactMap { if case .finished(let p, _) = $0 { p } else { nil } }.first
    }

    let canarySteps: [M.CanaryStep] = [.weight(10), .pause(30), .weight(50), .pause(60), .weight(100)]

    @Test func canaryWalksWeightsPausesAndScalesUp() {
        var m = M(stable: "v1", candidate: "v2", instances: 4, plan: .canary(steps: canarySteps, backgroundAnalysis: false))
        #expect(Self.started(m.handle(.start(now: 0))) == 1)
        #expect(Self.weights(m.handle(.healthy(version: "v2", count: 1, now: 5))) == ["v1": 90, "v2": 10])
        #expect(m.handle(.tick(now: 20)).isEmpty)
        // The pause ends; 50 % needs 2 instances first.
        #expect(Self.started(m.handle(.tick(now: 36))) == 2)
        #expect(Self.weights(m.handle(.healthy(version: "v2", count: 2, now: 40))) == ["v1": 50, "v2": 50])
        #expect(Self.started(m.handle(.tick(now: 101))) == 4)
        let end = m.handle(.healthy(version: "v2", count: 4, now: 110))
        #expect(Self.weights(end) == ["v2": 100])
        #expect(end.contains(.stopInstances(version: "v1", count: 4)))
        #expect(Self.finished(end) == .promoted)
        #expect(m.phase == .promoted)
    }

    @Test func failedAnalysisRollsBackAfterTheFailureLimit() {
        let policy = M.AnalysisPolicy(interval: 10, failureLimit: 1)
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .canary(steps: canarySteps, backgroundAnalysis: true), analysis: policy)
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 1))
        let analyze = m.handle(.tick(now: 11))
        #expect(analyze.contains(.analyze(since: 1)))
        let bad = Measurement(metric: "errors", outcome: .fail, reason: "canary 5.1% vs baseline 0.2%, p=1e-7")
        let first = m.handle(.measured([bad], now: 11.5))
        #expect(Self.finished(first) == nil, "one failure is tolerated with failure-limit 1")
        _ = m.handle(.tick(now: 21))
        let second = m.handle(.measured([bad], now: 21.5))
        #expect(Self.weights(second) == ["v1": 100])
        #expect(second.contains(.stopInstances(version: "v2", count: 1)))
        #expect(Self.finished(second) == .rolledBack)
        #expect(m.history.last?.contains("rolled back to v1") == true)
    }

    @Test func passingAnalysisGateAdvances() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .canary(steps: [.weight(20), .analysis, .weight(100)], backgroundAnalysis: false), analysis: .init(interval: 5))
        _ = m.handle(.start(now: 0))
        let gate = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(!gate.contains { if case .analyze = $0 { true } else { false } }, "the gate measures after one interval, not at once")
        #expect(m.handle(.tick(now: 5)).isEmpty)
        #expect(m.handle(.tick(now: 6)).contains(.analyze(since: 1)))
        let pass = Measurement(metric: "p99", outcome: .pass, reason: "p99 120ms ≤ 250ms")
        let end = m.handle(.measured([pass], now: 6))
        #expect(Self.finished(end) == .promoted)
    }

    @Test func tooManyInconclusiveResultsHoldForAHuman() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .canary(steps: [.weight(10), .pause(1000), .weight(100)], backgroundAnalysis: true), analysis: .init(interval: 10, inconclusiveLimit: 1))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 0))
        let unsure = Measurement(metric: "errors", outcome: .inconclusive, reason: "12 requests < 100")
        #expect(m.handle(.measured([unsure], now: 10)).allSatisfy { if case .askHuman = $0 { false } else { true } })
        let held = m.handle(.measured([unsure], now: 20))
        #expect(held.contains { if case .askHuman = $0 { true } else { false } })
        #expect(m.phase == .heldForHuman)
        #expect(Self.weights(m.handle(.abort(reason: "operator", now: 25))) == ["v1": 100])
        #expect(m.phase == .aborted)
    }

    @Test func manualPauseWaitsForPromote() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .canary(steps: [.weight(10), .pause(nil), .weight(100)], backgroundAnalysis: false))
        _ = m.handle(.start(now: 0))
        let ask = m.handle(.healthy(version: "v2", count: 1, now: 0))
        #expect(ask.contains { if case .askHuman = $0 { true } else { false } })
        #expect(m.handle(.tick(now: 10_000)).isEmpty)
        #expect(Self.finished(m.handle(.promote(now: 10_001))) == .promoted)
    }

    @Test func irreversibleReleaseIsHeldNotRolledBack() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .canary(steps: canarySteps, backgroundAnalysis: true), analysis: .init(interval: 10, failureLimit: 0), reversible: false)
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 0))
        let actions = m.handle(.measured([Measurement(metric: "errors", outcome: .fail, reason: "bad")], now: 10))
        #expect(Self.weights(actions) == ["v1": 100, "v2": 0])
        #expect(!actions.contains(.stopInstances(version: "v2", count: 1)))
        #expect(m.phase == .heldForHuman)
    }

    @Test func unhealthyCandidateFailsAndKeepsStable() {
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .canary(steps: canarySteps, backgroundAnalysis: false))
        _ = m.handle(.start(now: 0))
        let actions = m.handle(.unhealthy(version: "v2", reason: "GET /healthz: connection refused", now: 60))
        #expect(Self.weights(actions) == ["v1": 100])
        #expect(Self.finished(actions) == .failed)
    }

    @Test func blueGreenSwitchesAtOnceAndScalesDownLater() {
        var m = M(stable: "v1", candidate: "v2", instances: 3, plan: .blueGreen(autoPromote: true, scaleDownDelay: 30, preAnalysis: false, postAnalysis: false))
        #expect(Self.started(m.handle(.start(now: 0))) == 3)
        #expect(Self.weights(m.handle(.healthy(version: "v2", count: 3, now: 4))) == ["v2": 100, "v1": 0])
        #expect(m.handle(.tick(now: 20)).isEmpty)
        let end = m.handle(.tick(now: 35))
        #expect(end.contains(.stopInstances(version: "v1", count: 3)))
        #expect(Self.finished(end) == .promoted)
    }

    @Test func blueGreenPostPromotionAnalysisSwitchesBackWhileTheOldVersionIsWarm() {
        let plan = M.Plan.blueGreen(autoPromote: true, scaleDownDelay: 60, preAnalysis: false, postAnalysis: true)
        let bad = Measurement(metric: "errors", outcome: .fail, reason: "5.0% > 1%")
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: plan, analysis: .init(interval: 5, failureLimit: 0))
        _ = m.handle(.start(now: 0))
        #expect(Self.weights(m.handle(.healthy(version: "v2", count: 2, now: 1))) == ["v2": 100, "v1": 0])
        #expect(m.phase == .promoting)
        #expect(m.handle(.tick(now: 3)).isEmpty, "the first measurement comes one interval after the switch")
        #expect(m.handle(.tick(now: 6)).contains(.analyze(since: 1)))
        let failed = m.handle(.measured([bad], now: 6.5))
        #expect(Self.weights(failed) == ["v1": 100], "traffic goes back to the warm old version")
        #expect(failed.contains(.stopInstances(version: "v2", count: 2)))
        #expect(Self.finished(failed) == .rolledBack)

        // Passing measurements: the old version stops when the scale-down delay ends.
        let good = Measurement(metric: "errors", outcome: .pass, reason: "0.0% ≤ 1%")
        var n = M(stable: "v1", candidate: "v2", instances: 2, plan: plan, analysis: .init(interval: 5))
        _ = n.handle(.start(now: 0))
        _ = n.handle(.healthy(version: "v2", count: 2, now: 1))
        #expect(n.handle(.tick(now: 6)).contains(.analyze(since: 1)))
        #expect(Self.finished(n.handle(.measured([good], now: 6.5))) == nil)
        let end = n.handle(.tick(now: 62))
        #expect(end.contains(.stopInstances(version: "v1", count: 2)))
        #expect(Self.finished(end) == .promoted)
    }

    @Test func blueGreenPrePromotionAndPostPromotionAnalysesKeepTheirOwnPolicies() {
        let plan = M.Plan.blueGreen(autoPromote: true, scaleDownDelay: 120, preAnalysis: true, postAnalysis: true)
        let bad = Measurement(metric: "errors", outcome: .fail, reason: "5.0% > 1%")
        let good = Measurement(metric: "smoke", outcome: .pass, reason: "exit 0")
        // Pre-promotion: every 5 s, tolerates one failure. Post-promotion: every 20 s after 10 s, tolerates none.
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: plan, analysis: .init(interval: 5, failureLimit: 1),
                  postPromotionAnalysis: .init(interval: 20, initialDelay: 10, failureLimit: 0))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(m.activeAnalysis?.interval == 5)
        #expect(m.handle(.tick(now: 6)).contains(.analyze(since: 1)))
        #expect(Self.finished(m.handle(.measured([bad], now: 6.5))) == nil, "one pre-promotion failure is within its limit")
        #expect(m.failures == 1)
        #expect(m.handle(.tick(now: 11)).contains(.analyze(since: 1)))
        #expect(Self.weights(m.handle(.measured([good], now: 11.5))) == ["v2": 100, "v1": 0])
        #expect(m.phase == .promoting)
        #expect(m.activeAnalysis?.interval == 20)
        #expect(m.failures == 0, "the post-promotion analysis starts with no failures")
        // Its first look is initial delay + interval after the switch, not the pre-promotion interval.
        #expect(m.handle(.tick(now: 17)).isEmpty)
        #expect(m.handle(.tick(now: 40)).isEmpty)
        #expect(m.handle(.tick(now: 41.5)).contains(.analyze(since: 11.5)))
        // Pausing keeps the phase's policy; its limit of 0 failures switches back at the first failure.
        _ = m.handle(.pause(now: 42))
        #expect(m.activeAnalysis?.interval == 20)
        _ = m.handle(.resume(now: 43))
        let failed = m.handle(.measured([bad], now: 44))
        #expect(Self.weights(failed) == ["v1": 100])
        #expect(Self.finished(failed) == .rolledBack)

        // The same rollout state written by a version without the post-promotion policy still decodes.
        var json = try! JSONSerialization.jsonObject(with: JSONEncoder().encode(M(stable: "v1", candidate: "v2", instances: 1, plan: plan,
                                                                                        analysis: .init(interval: 5)))) as! [String: Any]
        json.removeValue(forKey: "postPromotionAnalysis")
        let old = try! JSONDecoder().decode(M.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old.postPromotionAnalysis == nil)
        #expect(old.activeAnalysis?.interval == 5)
    }

    @Test func promotingAHeldPostPromotionAnalysisEndsTheAnalysisAndKeepsTheOldVersionWarm() {
        let plan = M.Plan.blueGreen(autoPromote: true, scaleDownDelay: 60, preAnalysis: true, postAnalysis: true)
        let pass = Measurement(metric: "smoke", outcome: .pass, reason: "exit 0")
        let unsure = Measurement(metric: "live", outcome: .inconclusive, reason: "too little traffic")
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: plan, analysis: .init(interval: 5, inconclusiveLimit: 5),
                  postPromotionAnalysis: .init(interval: 5, inconclusiveLimit: 0))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 1))
        _ = m.handle(.tick(now: 6))
        #expect(Self.weights(m.handle(.measured([pass], now: 6))) == ["v2": 100, "v1": 0])
        #expect(m.handle(.tick(now: 11)).contains(.analyze(since: 6)))
        let held = m.handle(.measured([unsure], now: 11))
        #expect(m.phase == .heldForHuman)
        #expect(held.contains { if case .askHuman = $0 { true } else { false } })
        // The human accepts v2: no more analysis (neither policy), and v1 stays warm for the rest of the delay.
        let promoted = m.handle(.promote(now: 12))
        #expect(m.phase == .promoting)
        #expect(Self.weights(promoted) == nil, "traffic is already on v2")
        #expect(!m.handle(.tick(now: 30)).contains { if case .analyze = $0 { true } else { false } })
        #expect(m.handle(.tick(now: 40)).isEmpty)
        let end = m.handle(.tick(now: 66))
        #expect(end.contains(.stopInstances(version: "v1", count: 1)))
        #expect(Self.finished(end) == .promoted)
    }

    @Test func anIrreversibleReleaseHeldOnTheOldVersionNeverScalesTheOldVersionDown() {
        let plan = M.Plan.blueGreen(autoPromote: true, scaleDownDelay: 30, preAnalysis: false, postAnalysis: true)
        let bad = Measurement(metric: "errors", outcome: .fail, reason: "5.0% > 1%")
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: plan, analysis: .init(interval: 5, failureLimit: 0), reversible: false)
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 2, now: 1))
        _ = m.handle(.tick(now: 6))
        let held = m.handle(.measured([bad], now: 6))
        #expect(Self.weights(held) == ["v1": 100, "v2": 0], "traffic is held on the old version")
        #expect(m.phase == .heldForHuman)
        // The scale-down delay passes while a human decides: v1 serves all traffic and must keep running.
        let later = m.handle(.tick(now: 100))
        #expect(!later.contains(.stopInstances(version: "v1", count: 2)), "\(later)")
        #expect(m.phase == .heldForHuman)
        // Paused after the switch: the old version also stays warm until the rollout resumes.
        var p = M(stable: "v1", candidate: "v2", instances: 1, plan: plan, analysis: .init(interval: 5))
        _ = p.handle(.start(now: 0))
        _ = p.handle(.healthy(version: "v2", count: 1, now: 1))
        _ = p.handle(.pause(now: 2))
        #expect(p.handle(.tick(now: 40)).isEmpty)
        _ = p.handle(.resume(now: 41))
        #expect(Self.finished(p.handle(.tick(now: 42))) == .promoted)
    }

    // MARK: Safety: traffic never goes to nothing, rollbacks leave nothing behind, no event is lost

    @Test func rollingBackAfterEveryOldInstanceWasReplacedStartsThemBeforeStoppingTheCandidate() {
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .rolling(batch: 1), maxUnavailable: 1)
        _ = m.handle(.start(now: 0))
        let next = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(Self.weights(next) == ["v2": 100], "max-unavailable stopped the last v1 before the weights were set")
        let abort = m.handle(.abort(reason: "by alice", now: 2))
        #expect(m.phase == .rollingBack)
        #expect(abort.contains(.startInstances(version: "v1", count: 2)))
        #expect(!abort.contains { if case .stopInstances(let v, _) = $0 { v == "v2" } else { false } }, "v2 serves until v1 is back: \(abort)")
        #expect(Self.weights(abort) == nil)
        let back = m.handle(.healthy(version: "v1", count: 2, now: 10))
        #expect(Self.weights(back) == ["v1": 100])
        #expect(back.contains(.stopInstances(version: "v2", count: 2)), "every v2 asked for, healthy or not")
        #expect(Self.finished(back) == .aborted)

        // If v1 cannot come back, v2 keeps the traffic and the rollout fails instead of going dark.
        var n = M(stable: "v1", candidate: "v2", instances: 2, plan: .rolling(batch: 1), maxUnavailable: 1)
        _ = n.handle(.start(now: 0))
        _ = n.handle(.healthy(version: "v2", count: 1, now: 1))
        _ = n.handle(.unhealthy(version: "v2", reason: "timeout", now: 60))
        let failed = n.handle(.unhealthy(version: "v1", reason: "exit 1", now: 120))
        #expect(Self.finished(failed) == .failed)
        #expect(Self.weights(failed) == nil && n.weights == ["v2": 100])
    }

    @Test func aRollbackStopsEveryCandidateInstanceAskedFor() {
        let steps: [M.CanaryStep] = [.weight(10), .pause(30), .weight(100)]
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .canary(steps: steps, backgroundAnalysis: false))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 5))
        #expect(Self.started(m.handle(.tick(now: 36))) == 2)
        let aborted = m.handle(.abort(reason: "by bob", now: 37))
        #expect(aborted.contains(.stopInstances(version: "v2", count: 2)), "the one still starting too: \(aborted)")
        #expect(Self.weights(aborted) == ["v1": 100])
    }

    @Test func anIrreversibleReleaseThatGoesUnhealthyIsHeldNotRolledBack() {
        let steps: [M.CanaryStep] = [.weight(10), .pause(30), .weight(100)]
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .canary(steps: steps, backgroundAnalysis: false), reversible: false)
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 5))
        _ = m.handle(.tick(now: 36))
        let held = m.handle(.unhealthy(version: "v2", reason: "timeout", now: 96))
        #expect(m.phase == .heldForHuman)
        #expect(Self.weights(held) == ["v1": 100, "v2": 0])
        #expect(!held.contains { if case .stopInstances = $0 { true } else { false } }, "\(held)")
        #expect(Self.finished(held) == nil)
    }

    @Test func aHealthyReportThatArrivesWhilePausedIsHandledOnResume() {
        var m = M(stable: "v1", candidate: "v2", instances: 4, plan: .canary(steps: canarySteps, backgroundAnalysis: false))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 5))
        #expect(Self.started(m.handle(.tick(now: 36))) == 2)
        _ = m.handle(.pause(now: 37))
        #expect(m.handle(.healthy(version: "v2", count: 2, now: 40)).isEmpty)
        #expect(Self.weights(m.handle(.resume(now: 41))) == ["v1": 50, "v2": 50], "the rollout goes on instead of waiting forever")
    }

    @Test func blueGreenIsNotSwitchedToACandidateThatIsNotHealthy() {
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .blueGreen(autoPromote: false, scaleDownDelay: 10, preAnalysis: false, postAnalysis: false))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.pause(now: 1))
        let refused = m.handle(.promote(now: 2))
        #expect(Self.weights(refused) == nil, "\(refused)")
        #expect(m.weights == ["v1": 100])
        #expect(Self.finished(m.handle(.tick(now: 30))) == nil)
    }

    @Test func aGateIsJudgedOnlyByMeasurementsOfItsOwnWindow() {
        let steps: [M.CanaryStep] = [.weight(10), .pause(30), .weight(50), .analysis, .weight(100)]
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .canary(steps: steps, backgroundAnalysis: true), analysis: .init(interval: 10))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 0))
        #expect(m.handle(.tick(now: 10)).contains(.analyze(since: 0)))
        _ = m.handle(.measured([Measurement(metric: "e", outcome: .pass, reason: "ok")], now: 10))
        _ = m.handle(.tick(now: 20))
        _ = m.handle(.measured([Measurement(metric: "e", outcome: .pass, reason: "ok")], now: 20))
        // The pause ends and the gate opens in the same tick as a background look would be due.
        let opened = m.handle(.tick(now: 30))
        #expect(Self.weights(opened) == ["v1": 50, "v2": 50])
        #expect(!opened.contains { if case .analyze = $0 { true } else { false } }, "no look over the old window: \(opened)")
        #expect(m.handle(.tick(now: 40)).contains(.analyze(since: 30)))
        // And a look that measured nothing is inconclusive: it passes no gate.
        _ = m.handle(.measured([], now: 40))
        #expect(m.inconclusives == 1)
        #expect(m.weights == ["v1": 50, "v2": 50])
    }

    @Test func blueGreenWithOnlyAPrePromotionAnalysisStopsMeasuringWhenTrafficSwitches() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .blueGreen(autoPromote: true, scaleDownDelay: 60, preAnalysis: true, postAnalysis: false),
                  analysis: .init(interval: 5))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 1))
        _ = m.handle(.tick(now: 6))
        #expect(Self.weights(m.handle(.measured([Measurement(metric: "smoke", outcome: .pass, reason: "ok")], now: 6))) == ["v2": 100, "v1": 0])
        #expect(!m.handle(.tick(now: 20)).contains { if case .analyze = $0 { true } else { false } })
        #expect(Self.finished(m.handle(.tick(now: 70))) == .promoted)
    }

    @Test func blueGreenWithoutAutoPromoteWaitsForAHuman() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .blueGreen(autoPromote: false, scaleDownDelay: 0, preAnalysis: false, postAnalysis: false))
        _ = m.handle(.start(now: 0))
        #expect(m.handle(.healthy(version: "v2", count: 1, now: 1)).contains { if case .askHuman = $0 { true } else { false } })
        #expect(Self.weights(m.handle(.promote(now: 2))) == ["v2": 100, "v1": 0])
    }

    @Test func rollingReplacesInBatches() {
        var m = M(stable: "v1", candidate: "v2", instances: 3, plan: .rolling(batch: 1))
        #expect(Self.started(m.handle(.start(now: 0))) == 1)
        let first = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(first.contains(.stopInstances(version: "v1", count: 1)))
        #expect(Self.started(first) == 2)
        _ = m.handle(.healthy(version: "v2", count: 2, now: 2))
        let last = m.handle(.healthy(version: "v2", count: 3, now: 3))
        #expect(Self.weights(last) == ["v2": 100])
        #expect(Self.finished(last) == .promoted)
        #expect(m.stableInstances == 0)
    }

    @Test func recreateStopsFirstThenStarts() {
        var m = M(stable: "v1", candidate: "v2", instances: 2, plan: .recreate)
        let start = m.handle(.start(now: 0))
        #expect(start.firstIndex(of: .stopInstances(version: "v1", count: 2))! < start.firstIndex(of: .startInstances(version: "v2", count: 2))!)
        #expect(Self.finished(m.handle(.healthy(version: "v2", count: 2, now: 3))) == .promoted)
    }

    @Test func firstReleaseGoesStraightToFullSize() {
        var m = M(stable: nil, candidate: "v1", instances: 2, plan: .canary(steps: canarySteps, backgroundAnalysis: true), analysis: .init())
        #expect(Self.started(m.handle(.start(now: 0))) == 2)
        #expect(Self.finished(m.handle(.healthy(version: "v1", count: 2, now: 1))) == .promoted)
    }

    @Test func stateSurvivesARestartMidRollout() throws {
        var m = M(stable: "v1", candidate: "v2", instances: 4, plan: .canary(steps: canarySteps, backgroundAnalysis: false))
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 5))
        // Persist, "kill -9", load: the pause keeps its deadline.
        let saved = try JSONEncoder().encode(m)
        var restored = try JSONDecoder().decode(M.self, from: saved)
        #expect(restored == m)
        #expect(restored.pauseUntil == 35)
        #expect(restored.handle(.tick(now: 30)).isEmpty)
        #expect(Self.started(restored.handle(.tick(now: 36))) == 2)
    }

    @Test func finalStatesIgnoreFurtherEvents() {
        var m = M(stable: "v1", candidate: "v2", instances: 1, plan: .recreate)
        _ = m.handle(.start(now: 0))
        _ = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(m.handle(.abort(reason: "late", now: 2)).isEmpty)
        #expect(m.phase == .promoted)
    }
}

extension RolloutStateMachineTests {
    @Test func rollingWithMaxUnavailableReplacesInsteadOfAdding() {
        var m = RolloutStateMachine(stable: "v1", candidate: "v2", instances: 4, plan: .rolling(batch: 1), maxUnavailable: 1)
        let start = m.handle(.start(now: 0))
        #expect(start == [.stopInstances(version: "v1", count: 1), .startInstances(version: "v2", count: 1)], "room first, then the batch")
        var alive = 3 + 1
        var candidates = 1
        for step in 1...8 where m.phase != .promoted {
            let actions = m.handle(.healthy(version: "v2", count: candidates, now: Double(step)))
            for action in actions {
                if case .stopInstances(_, let n) = action { alive -= n }
                if case .startInstances(_, let n) = action { alive += n - candidates; candidates = n }
            }
            #expect(alive <= 4, "never more than the full size: \(alive)")
            #expect(alive >= 3, "never more than max-unavailable (1) below it: \(alive)")
        }
        #expect(m.phase == .promoted)
        #expect(m.candidateInstances == 4 && m.stableInstances == 0)
    }

    @Test func rollingWithAllUnavailableStillReachesFullSizeBeforePromoting() {
        var m = RolloutStateMachine(stable: "v1", candidate: "v2", instances: 3, plan: .rolling(batch: 1), maxUnavailable: 3)
        #expect(m.handle(.start(now: 0)) == [.stopInstances(version: "v1", count: 3), .startInstances(version: "v2", count: 1)])
        let next = m.handle(.healthy(version: "v2", count: 1, now: 1))
        #expect(Self.finished(next) == nil, "1 of 3 is not promoted")
        #expect(next.contains(.startInstances(version: "v2", count: 2)))
        _ = m.handle(.healthy(version: "v2", count: 2, now: 2))
        #expect(Self.finished(m.handle(.healthy(version: "v2", count: 3, now: 3))) == .promoted)
    }
}
