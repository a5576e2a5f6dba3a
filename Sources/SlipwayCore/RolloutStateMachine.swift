/// One measurement of a metric during a rollout, with everything needed to explain it.
public struct Measurement: Sendable, Equatable, Codable {
    public enum Outcome: String, Sendable, Codable { case pass, fail, inconclusive }
    public var metric: String
    public var outcome: Outcome
    /// A sentence with the numbers: counts, statistic, p-value, threshold.
    public var reason: String
    public var value: Double?
    public var comparison: MetricComparison?

    public init(metric: String, outcome: Outcome, reason: String, value: Double? = nil, comparison: MetricComparison? = nil) {
        self.metric = metric
        self.outcome = outcome
        self.reason = reason
        self.value = value
        self.comparison = comparison
    }
}

/// Drives one rollout of `candidate` over `stable` with a strategy. Pure: events in, actions out; the
/// deploy controller performs the actions, persists the state after every event (it is Codable) and
/// feeds back what happened. Time comes in through events, so tests control it.
public struct RolloutStateMachine: Sendable, Equatable, Codable {
    public enum Phase: String, Sendable, Codable {
        case starting, waitingHealthy, stepping, paused, promoting, rollingBack, promoted, rolledBack, aborted, failed, heldForHuman
        public var isFinal: Bool { [.promoted, .rolledBack, .aborted, .failed].contains(self) }
    }

    public enum Event: Sendable, Equatable {
        case start(now: Double)
        /// `count` instances of `version` are healthy and may take traffic.
        case healthy(version: String, count: Int, now: Double)
        /// Instances of `version` did not become healthy before the deadline.
        case unhealthy(version: String, reason: String, now: Double)
        case tick(now: Double)
        case measured([Measurement], now: Double)
        case promote(now: Double)
        case abort(reason: String, now: Double)
        case pause(now: Double)
        case resume(now: Double)
    }

    public enum Action: Sendable, Equatable {
        case startInstances(version: String, count: Int)
        case stopInstances(version: String, count: Int)
        /// Percent of traffic per version; sums to 100.
        case setWeights([String: Int])
        /// Run every metric of the analysis over traffic since `since` (seconds, same clock as events).
        case analyze(since: Double)
        case record(String)
        /// A human must decide (`slipway promote` / `slipway abort`).
        case askHuman(String)
        case finished(Phase, String)
    }

    public enum Plan: Sendable, Equatable, Codable {
        case recreate
        case rolling(batch: Int)
        case blueGreen(autoPromote: Bool, scaleDownDelay: Double, preAnalysis: Bool, postAnalysis: Bool)
        /// Steps: weight (0...100), pause seconds (nil = wait for promote), or an analysis gate.
        case canary(steps: [CanaryStep], backgroundAnalysis: Bool)
    }

    public enum CanaryStep: Sendable, Equatable, Codable {
        case weight(Int)
        case pause(Double?)
        case analysis
    }

    public struct AnalysisPolicy: Sendable, Equatable, Codable {
        public var interval: Double
        public var initialDelay: Double
        public var failureLimit: Int
        public var inconclusiveLimit: Int
        public init(interval: Double = 10, initialDelay: Double = 0, failureLimit: Int = 1, inconclusiveLimit: Int = 3) {
            self.interval = interval
            self.initialDelay = initialDelay
            self.failureLimit = failureLimit
            self.inconclusiveLimit = inconclusiveLimit
        }
    }

    public let stable: String?
    public let candidate: String
    public let instances: Int
    public let plan: Plan
    public let analysis: AnalysisPolicy?
    /// Blue-green with both analyses: the post-promotion one's interval and limits once traffic has switched.
    public let postPromotionAnalysis: AnalysisPolicy?
    /// A release that ran irreversible changes (a schema migration) is never rolled back automatically.
    public let reversible: Bool
    /// Rolling: stable instances that may be stopped before their replacements are healthy (nil or 0: none).
    public private(set) var maxUnavailable: Int?

    public private(set) var phase: Phase = .starting
    public private(set) var stepIndex = 0
    public private(set) var weights: [String: Int] = [:]
    public private(set) var candidateInstances = 0
    public private(set) var stableInstances: Int
    public private(set) var pauseUntil: Double?
    public private(set) var nextAnalysisAt: Double?
    public private(set) var analysisWindowStart: Double?
    public private(set) var failures = 0
    public private(set) var inconclusives = 0
    public private(set) var history: [String] = []
    var awaitingAnalysisGate = false
    var phaseBeforePause: Phase?
    var scaleDownAt: Double?
    // Optional so that states saved before they existed still decode.
    /// The most candidate instances asked for: a rollback stops them all, healthy or not.
    var candidateRequested: Int?
    /// Rolling back while the old version is being started again: how the rollout ends once it is healthy.
    var rollbackFinal: Phase?
    var rollbackReason: String?
    /// A `healthy` event that came while paused, handled on resume.
    var healthyWhilePaused: HealthyReport?

    struct HealthyReport: Sendable, Equatable, Codable {
        var version: String
        var count: Int
    }

    public init(stable: String?, candidate: String, instances: Int, plan: Plan, analysis: AnalysisPolicy? = nil,
                postPromotionAnalysis: AnalysisPolicy? = nil, reversible: Bool = true, maxUnavailable: Int = 0) {
        self.maxUnavailable = maxUnavailable > 0 ? maxUnavailable : nil
        self.stable = stable
        self.candidate = candidate
        self.instances = max(1, instances)
        self.plan = plan
        self.analysis = analysis
        self.postPromotionAnalysis = postPromotionAnalysis
        self.reversible = reversible
        self.stableInstances = stable == nil ? 0 : max(1, instances)
        if let stable { weights = [stable: 100] }
    }

    // MARK: Events

    public mutating func handle(_ event: Event) -> [Action] {
        if phase.isFinal { return [] }
        switch event {
        case .start(let now):
            return begin(now)
        case .healthy(let version, let count, let now):
            if phase == .paused {
                // Handled on resume: dropping it would leave the rollout waiting for an event already past.
                healthyWhilePaused = HealthyReport(version: version, count: count)
                return []
            }
            if phase == .rollingBack, version == stable { return finishRollback(count: count) }
            guard version == candidate, phase == .waitingHealthy || phase == .stepping || phase == .promoting else { return [] }
            candidateInstances = count
            return afterHealthy(now)
        case .unhealthy(let version, let reason, let now):
            if phase == .rollingBack, version == stable {
                // The old version cannot come back: the candidate keeps the traffic it has, and a human decides.
                phase = .failed
                note("rollback failed: \(version) did not become healthy: \(reason)")
                return [.finished(.failed, "\(rollbackReason ?? "rolling back"); but \(version) did not become healthy again (\(reason)), so \(candidate) keeps serving")]
            }
            guard version == candidate else { return [] }
            return fail("\(version) did not become healthy: \(reason)", now: now)
        case .tick(let now):
            return tick(now)
        case .measured(let measurements, let now):
            return judge(measurements, now: now)
        case .promote(let now):
            switch phase {
            case .paused, .heldForHuman, .stepping:
                if case .blueGreen = plan, weights[candidate] != 100, candidateInstances < instances {
                    return [.record("not promoted: \(candidateInstances)/\(instances) × \(candidate) healthy; traffic switches only to a healthy version")]
                }
                note("promoted by a human")
                pauseUntil = nil
                if case .blueGreen = plan {
                    if weights[candidate] != 100 { return switchToCandidate(now) }
                    // Traffic has switched (the post-promotion analysis held or was paused): the human accepts the
                    // version, so no more analysis; the old version stays warm until the scale-down delay ends.
                    phase = .promoting
                    nextAnalysisAt = nil
                    awaitingAnalysisGate = false
                    return [.record("post-promotion analysis ended by a human; \(stable ?? "the old version") stops when the scale-down delay ends")]
                }
                if phase == .heldForHuman || phase == .paused { phase = .stepping }
                if case .canary = plan, stepIndex < canarySteps.count, case .pause = canarySteps[stepIndex] { stepIndex += 1 }
                return advance(now)
            default: return []
            }
        case .abort(let reason, let now):
            note("aborted: \(reason)")
            return rollBack(reason: reason, final: .aborted, now: now)
        case .pause:
            guard !phase.isFinal, phase != .paused else { return [] }
            phaseBeforePause = phase
            phase = .paused
            note("paused by a human")
            return [.record("paused")]
        case .resume(let now):
            guard phase == .paused else { return [] }
            phase = phaseBeforePause ?? .stepping
            note("resumed")
            if let report = healthyWhilePaused {
                healthyWhilePaused = nil
                return handle(.healthy(version: report.version, count: report.count, now: now))
            }
            return advance(now)
        }
    }

    /// Blue-green after the traffic switch (also while a human has paused that phase): the post-promotion
    /// analysis, with its own metrics and policy, is the one that runs.
    public var inPostPromotion: Bool {
        guard case .blueGreen = plan else { return false }
        return (phase == .paused ? phaseBeforePause ?? phase : phase) == .promoting
    }

    /// The policy of the analysis running now: the post-promotion one when it has its own, else the rollout's.
    public var activeAnalysis: AnalysisPolicy? {
        inPostPromotion ? postPromotionAnalysis ?? analysis : analysis
    }

    var canarySteps: [CanaryStep] {
        if case .canary(let steps, _) = plan { return steps }
        return []
    }

    mutating func note(_ text: String) { history.append(text) }

    mutating func startCandidate(_ count: Int) -> Action {
        candidateRequested = max(candidateRequested ?? 0, count)
        return .startInstances(version: candidate, count: count)
    }

    mutating func begin(_ now: Double) -> [Action] {
        phase = .waitingHealthy
        switch plan {
        case .recreate:
            var actions: [Action] = []
            if let stable {
                actions.append(.setWeights([candidate: 100]))
                actions.append(.stopInstances(version: stable, count: stableInstances))
                stableInstances = 0
            }
            note("recreate: stopped \(stable ?? "nothing"), starting \(instances) × \(candidate)")
            return actions + [startCandidate(instances)]
        case .rolling(let batch):
            let first = stable == nil ? instances : min(batch, instances)
            note("rolling: starting \(first) × \(candidate)")
            return makeRoom() + [startCandidate(first)]
        case .blueGreen:
            note("blue-green: starting \(instances) × \(candidate) beside \(stable ?? "nothing")")
            return [startCandidate(instances)]
        case .canary:
            guard stable != nil else {
                // Nothing to compare with: the first release goes straight to full size.
                note("canary: no stable version yet, so \(candidate) starts at full size")
                return [startCandidate(instances)]
            }
            let firstWeight = canarySteps.compactMap { if case .weight(let w) = $0 { w } else { nil } }.first ?? 100
            let count = canaryInstances(forWeight: firstWeight)
            note("canary: starting \(count) × \(candidate)")
            return [startCandidate(count)]
        }
    }

    /// Rolling with `max-unavailable` k > 0: stop up to k stable instances before the next batch starts, so a
    /// batch replaces instead of adding (capacity dips by at most k); with k = 0 batches are added first.
    mutating func makeRoom() -> [Action] {
        guard let stable, let k = maxUnavailable, k > 0, stableInstances > 0 else { return [] }
        let stop = min(k, stableInstances)
        stableInstances -= stop
        return [.stopInstances(version: stable, count: stop)]
    }

    func canaryInstances(forWeight weight: Int) -> Int {
        max(1, Int((Double(instances) * Double(weight) / 100).rounded(.up)))
    }

    mutating func afterHealthy(_ now: Double) -> [Action] {
        switch plan {
        case .recreate:
            return promoteFully(now, reason: "\(candidateInstances) instance(s) healthy")
        case .rolling(let batch):
            guard let stable else { return promoteFully(now, reason: "first release: all instances healthy") }
            // Replace as many stable instances as candidates are healthy, then start the next batch.
            var stops: [Action] = []
            let stop = min(stableInstances, max(0, candidateInstances - (instances - stableInstances)))
            if stop > 0 {
                stableInstances -= stop
                stops.append(.stopInstances(version: stable, count: stop))
            }
            let done = stableInstances == 0 && candidateInstances >= instances
            // Made before the weights are set, so no weight is left on stable instances it stops.
            let room = done ? [] : makeRoom()
            let total = candidateInstances + stableInstances
            weights = stableInstances == 0 ? [candidate: 100] : [candidate: Int((Double(candidateInstances) / Double(total) * 100).rounded()), stable: 0]
            if stableInstances > 0 { weights[stable] = 100 - weights[candidate]! }
            note("rolling: \(candidateInstances) × \(candidate), \(stableInstances) × \(stable)")
            if done {
                phase = .promoted
                return [.setWeights(weights)] + stops + [.finished(.promoted, "all \(instances) instances run \(candidate)")]
            }
            phase = .waitingHealthy
            return [.setWeights(weights)] + stops + room + [startCandidate(min(instances, candidateInstances + batch))]
        case .blueGreen(let autoPromote, _, let preAnalysis, _):
            guard stable != nil else { return promoteFully(now, reason: "first release") }
            phase = .stepping
            if preAnalysis, analysis != nil {
                awaitingAnalysisGate = true
                analysisWindowStart = now
                nextAnalysisAt = now + (analysis?.initialDelay ?? 0) + (analysis?.interval ?? 10)
                note("blue-green: \(candidate) is up on the preview; pre-promotion analysis")
                return [.record("pre-promotion analysis started")]
            }
            if autoPromote { return switchToCandidate(now) }
            phase = .heldForHuman
            return [.askHuman("\(candidate) is ready on the preview; `slipway promote` switches traffic")]
        case .canary:
            guard stable != nil else { return promoteFully(now, reason: "first release") }
            if phase == .promoting { return finishPromotion(now) }
            if phase == .waitingHealthy {
                phase = .stepping
                if analysis != nil, analysisWindowStart == nil, case .canary(_, true) = plan {
                    analysisWindowStart = now
                    nextAnalysisAt = now + (analysis?.initialDelay ?? 0) + (analysis?.interval ?? 10)
                }
            }
            return advance(now)
        }
    }

    /// Walks canary steps until one has to wait.
    mutating func advance(_ now: Double) -> [Action] {
        guard case .canary = plan, phase == .stepping else { return [] }
        var actions: [Action] = []
        while stepIndex < canarySteps.count {
            switch canarySteps[stepIndex] {
            case .weight(let weight):
                guard let stable else { return actions + finishPromotion(now) }
                let needed = canaryInstances(forWeight: weight)
                if needed > candidateInstances {
                    phase = .waitingHealthy
                    return actions + [startCandidate(needed)]
                }
                weights = [stable: 100 - weight, candidate: weight]
                note("step \(stepIndex + 1): \(weight)% to \(candidate)")
                actions.append(.setWeights(weights))
                stepIndex += 1
                if weight == 100 { return actions + finishPromotion(now) }
            case .pause(let seconds):
                if let seconds {
                    if let until = pauseUntil {
                        if now < until { return actions }
                        pauseUntil = nil
                        stepIndex += 1
                    } else {
                        pauseUntil = now + seconds
                        note("step \(stepIndex + 1): pause \(Int(seconds))s")
                        return actions + [.record("paused for \(Int(seconds))s")]
                    }
                } else {
                    phase = .heldForHuman
                    note("step \(stepIndex + 1): waiting for `slipway promote`")
                    return actions + [.askHuman("canary at \(weights[candidate] ?? 0)%: `slipway promote` continues, `slipway abort` rolls back")]
                }
            case .analysis:
                if !awaitingAnalysisGate {
                    // Measured over the traffic at this step only, after the first interval (and initial delay).
                    awaitingAnalysisGate = true
                    analysisWindowStart = now
                    nextAnalysisAt = now + (analysis?.initialDelay ?? 0) + (analysis?.interval ?? 10)
                    note("step \(stepIndex + 1): analysis gate")
                    return actions + [.record("analysis gate: first measurement in \(Int((analysis?.initialDelay ?? 0) + (analysis?.interval ?? 10)))s")]
                }
                return actions
            }
        }
        return actions + finishPromotion(now)
    }


    mutating func tick(_ now: Double) -> [Action] {
        var actions: [Action] = []
        // Only a promotion in progress scales down: paused or held for a human, the old version stays warm.
        if phase == .promoting, let at = scaleDownAt, now >= at, let stable, stableInstances > 0 {
            scaleDownAt = nil
            let count = stableInstances
            stableInstances = 0
            actions.append(.stopInstances(version: stable, count: count))
            phase = .promoted
            return actions + [.finished(.promoted, "\(candidate) serves all traffic; \(stable) stopped")]
        }
        // A pause that ends first: a gate it opens starts a new window, which no earlier measurement may pass.
        if phase == .stepping, let until = pauseUntil, now >= until {
            actions += advance(now)
        }
        if phase == .stepping || phase == .promoting, let next = nextAnalysisAt, now >= next, let policy = activeAnalysis {
            nextAnalysisAt = now + policy.interval
            // Cumulative since the window started: each measurement sees all the canary's traffic so far, so a
            // small error increase becomes significant as requests accumulate instead of staying inconclusive.
            actions.append(.analyze(since: analysisWindowStart ?? now - policy.interval))
        }
        return actions
    }

    mutating func judge(_ measurements: [Measurement], now: Double) -> [Action] {
        guard let policy = activeAnalysis, !phase.isFinal else { return [] }
        // Nothing measured proves nothing: it must not pass a gate.
        let measurements = measurements.isEmpty ? [Measurement(metric: "analysis", outcome: .inconclusive, reason: "no metric was measured")] : measurements
        var actions: [Action] = []
        let failed = measurements.filter { $0.outcome == .fail }
        let inconclusive = measurements.filter { $0.outcome == .inconclusive }
        for m in measurements { actions.append(.record("\(m.metric): \(m.outcome.rawValue) — \(m.reason)")) }
        if !failed.isEmpty {
            failures += 1
            note("analysis failed (\(failures)/\(policy.failureLimit + 1)): \(failed.map(\.metric).joined(separator: ", "))")
            if failures > policy.failureLimit {
                let reason = "analysis failed \(failures) time(s): " + failed.map { "\($0.metric): \($0.reason)" }.joined(separator: "; ")
                return actions + rollBack(reason: reason, final: .rolledBack, now: now)
            }
        } else if !inconclusive.isEmpty {
            inconclusives += 1
            if inconclusives > policy.inconclusiveLimit {
                phase = .heldForHuman
                note("analysis inconclusive \(inconclusives) times: holding for a human")
                return actions + [.askHuman("analysis was inconclusive \(inconclusives) times (too little traffic?): `slipway promote` or `slipway abort`")]
            }
        }
        if awaitingAnalysisGate, failed.isEmpty {
            if inconclusive.isEmpty || inconclusives <= policy.inconclusiveLimit {
                if inconclusive.isEmpty {
                    awaitingAnalysisGate = false
                    if case .canary(_, false) = plan { nextAnalysisAt = nil }
                    if case .blueGreen(let autoPromote, _, _, _) = plan, weights[candidate] != 100 {
                        if autoPromote { return actions + switchToCandidate(now) }
                        phase = .heldForHuman
                        return actions + [.askHuman("pre-promotion analysis passed; `slipway promote` switches traffic")]
                    }
                    stepIndex += 1
                    return actions + advance(now)
                }
                // Inconclusive: the next tick measures again over a longer window.
                return actions
            }
        }
        return actions
    }

    mutating func switchToCandidate(_ now: Double) -> [Action] {
        guard case .blueGreen(_, let delay, _, let postAnalysis) = plan, let stable else { return promoteFully(now, reason: "switched") }
        weights = [candidate: 100, stable: 0]
        phase = .promoting
        scaleDownAt = now + delay
        note("blue-green: traffic switched to \(candidate); \(stable) kept warm for \(Int(delay))s")
        if !postAnalysis {
            nextAnalysisAt = nil  // the pre-promotion analysis is over; production traffic is not its to judge
        } else if let policy = activeAnalysis {
            // A new analysis: its own window, delay and limits; the pre-promotion one's counts do not carry over.
            analysisWindowStart = now
            nextAnalysisAt = now + policy.initialDelay + policy.interval
            failures = 0
            inconclusives = 0
        }
        return [.setWeights(weights)]
    }

    mutating func finishPromotion(_ now: Double) -> [Action] {
        var actions: [Action] = []
        if candidateInstances < instances {
            phase = .promoting
            // Scale the candidate to full size first; stable stops once it is healthy.
            return [startCandidate(instances)]
        }
        actions.append(.setWeights([candidate: 100]))
        weights = [candidate: 100]
        if let stable, stableInstances > 0 {
            actions.append(.stopInstances(version: stable, count: stableInstances))
            stableInstances = 0
        }
        phase = .promoted
        note("promoted \(candidate)")
        return actions + [.finished(.promoted, "\(candidate) serves all traffic")]
    }

    mutating func promoteFully(_ now: Double, reason: String) -> [Action] {
        weights = [candidate: 100]
        phase = .promoted
        var actions: [Action] = [.setWeights(weights)]
        if let stable, stableInstances > 0 {
            actions.append(.stopInstances(version: stable, count: stableInstances))
            stableInstances = 0
        }
        note("promoted \(candidate): \(reason)")
        return actions + [.finished(.promoted, reason)]
    }

    mutating func fail(_ reason: String, now: Double) -> [Action] {
        rollBack(reason: reason, final: .failed, now: now)
    }

    /// Traffic back to stable at once; candidate instances stop (the controller drains them first).
    mutating func rollBack(reason: String, final: Phase, now: Double) -> [Action] {
        // Traffic goes back to the old version: it must not be scaled down later.
        scaleDownAt = nil
        guard let stable else {
            phase = final
            return stopEveryCandidate() + [.finished(final, reason + " (no previous version to return to)")]
        }
        if !reversible, final != .aborted {
            // Irreversible release: keep the safest state (no new traffic to the candidate) and ask.
            phase = .heldForHuman
            note("not rolled back automatically: the release is marked reversible: false")
            guard stableInstances > 0 else {
                return [.askHuman("\(reason). The release is irreversible and \(stable) has no instances left, so \(candidate) keeps serving: `slipway abort` or `slipway promote`")]
            }
            weights = [stable: 100, candidate: 0]
            return [.setWeights(weights), .askHuman("\(reason). The release is irreversible, so traffic is held on \(stable) with \(candidate) still running: `slipway abort` or `slipway promote`")]
        }
        if stableInstances == 0 {
            // Rolling replaced every old instance: start them again first; the candidate serves until they are healthy.
            phase = .rollingBack
            rollbackFinal = final
            rollbackReason = reason
            stableInstances = instances
            note("rolling back: starting \(instances) × \(stable) before \(candidate) stops: \(reason)")
            return [.startInstances(version: stable, count: instances), .record("rolling back: \(stable) starts again; \(candidate) serves until it is healthy")]
        }
        var restart: [Action] = []
        if stableInstances < instances {
            // Old instances that rolling already replaced start again (traffic goes to the healthy ones meanwhile).
            restart.append(.startInstances(version: stable, count: instances))
            stableInstances = instances
        }
        note("rolled back to \(stable): \(reason)")
        return returnTraffic(to: stable, then: restart, final: final, reason: reason)
    }

    /// The old version is healthy again: the rollback that waited for it ends.
    mutating func finishRollback(count: Int) -> [Action] {
        guard let stable else { return [] }
        let reason = rollbackReason ?? "rolled back"
        note("rolled back to \(stable) (\(count) healthy again): \(reason)")
        return returnTraffic(to: stable, then: [], final: rollbackFinal ?? .rolledBack, reason: reason)
    }

    /// All traffic to `stable`, every candidate instance asked for stops, and the rollout ends as `final`.
    mutating func returnTraffic(to stable: String, then extra: [Action], final: Phase, reason: String) -> [Action] {
        weights = [stable: 100]
        phase = final
        return [.setWeights(weights)] + extra + stopEveryCandidate() + [.finished(final, reason)]
    }

    /// Stops every candidate instance asked for, healthy or still starting.
    mutating func stopEveryCandidate() -> [Action] {
        let count = max(candidateInstances, candidateRequested ?? 0)
        candidateInstances = 0
        return count > 0 ? [.stopInstances(version: candidate, count: count)] : []
    }
}
