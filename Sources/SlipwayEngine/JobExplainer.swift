import Foundation
import SlipwayCore
import SlipwayStore

/// One line of what `slipway explain` says, with its role so each front end can style it.
public struct ExplainLine: Sendable, Codable, Equatable {
    public enum Style: String, Sendable, Codable { case title, plain, detail }
    public var style: Style
    public var text: String
    public init(_ style: Style, _ text: String) {
        self.style = style
        self.text = text
    }
}

/// Why a job ran, was skipped, failed, or hit or missed the cache (naming the input that changed), or how an
/// environment's rollout went: the same words for `slipway explain` on a local store and through the API.
public enum JobExplainer {
    /// `subject` is a job name or instance key, or an environment (its latest rollout, or `rollout`).
    /// Throws when nothing by that name exists.
    public static func explain(_ subject: String, runNumber: Int64?, rollout: Int64?, store: SQLRunStore) throws -> [ExplainLine] {
        var lines: [ExplainLine] = []
        let history = try store.latestJobs(jobID: subject, limit: 500)
        if history.isEmpty || rollout != nil, try explainRollout(subject, rollout: rollout, store: store, into: &lines) { return lines }
        var matches = history
        if let runNumber { matches = history.filter { $0.0.number == runNumber } }
        guard let (run, _) = matches.first else {
            throw EngineError("no run has a job '\(subject)'\(runNumber.map { " in run #\($0)" } ?? ""); see `slipway history`")
        }
        for (_, record) in matches.filter({ $0.0.id == run.id }) {
            explain(record, run: run, store: store, history: history, into: &lines)
        }
        // A deploy job is usually named after its environment: its rollout follows.
        _ = try explainRollout(subject, rollout: nil, store: store, into: &lines)
        return lines
    }

    /// An environment's rollout: every step, command and measurement with the numbers that decided it.
    static func explainRollout(_ subject: String, rollout: Int64?, store: SQLRunStore, into lines: inout [ExplainLine]) throws -> Bool {
        let rollouts = try store.rollouts(environment: subject, limit: 1000)
        guard let record = rollout.map({ n in rollouts.first { $0.id == n } }) ?? rollouts.first else { return false }
        let machine = try? JSONDecoder().decode(RolloutStateMachine.self, from: record.state)
        lines.append(.init(.title, "rollout #\(record.id) of \(record.reference) to \(record.environment): \(record.phase)"))
        lines.append(.init(.plain, "  strategy \(record.strategy)" + (record.stable.map { ", over \($0)" } ?? ", first release in this environment")
                           + (record.runID.map { _ in ", from job \(record.job ?? "?")" } ?? ", from `slipway deploy`")))
        if let outcome = record.outcome { lines.append(.init(.plain, "  why: \(outcome)")) }
        if let machine, !machine.phase.isFinal {
            lines.append(.init(.plain, "  now: step \(machine.stepIndex + 1), traffic \(machine.weights.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)%" }.joined(separator: ", "))"))
        }
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss"
        for event in try store.rolloutEvents(rolloutID: record.id) {
            lines.append(.init(.plain, "  \(formatter.string(from: event.at))  \(event.text)"))
            guard event.kind == "measurement", let detail = event.detail,
                  let measurement = try? JSONDecoder().decode(SlipwayCore.Measurement.self, from: detail), let c = measurement.comparison else { continue }
            var numbers = "canary n=\(c.canaryCount) mean \(Statistics.format(c.canaryMean)), baseline n=\(c.baselineCount) mean \(Statistics.format(c.baselineMean)), effect \(Statistics.format(c.effectSize))"
            if let p = c.pValue { numbers += ", p \(Statistics.format(p))" }
            if let lo = c.lowerConfidence, let hi = c.upperConfidence { numbers += ", CI [\(Statistics.format(lo)), \(Statistics.format(hi))]" }
            lines.append(.init(.detail, "            \(numbers)"))
        }
        return true
    }

    static func explain(_ record: JobRecord, run: RunRecord, store: SQLRunStore, history: [(RunRecord, JobRecord)], into lines: inout [ExplainLine]) {
        lines.append(.init(.title, "\(record.key) in run #\(run.number): \(record.status.rawValue)\(record.allowedFailure ? " (allowed by continue-on-error)" : "")"))
        if let reason = record.reason { lines.append(.init(.plain, "  why: \(reason)")) }
        let attempts = (try? store.attempts(jobRowID: record.id)) ?? []
        for attempt in attempts {
            lines.append(.init(.plain, "  attempt \(attempt.number): \(attempt.status.rawValue)\(attempt.failure.map { " — \($0)" } ?? "")"))
            for step in (try? store.steps(attemptID: attempt.id)) ?? [] where step.status != .success {
                lines.append(.init(.plain, "    step \(step.index + 1) '\(step.name)': \(step.status.rawValue)\(step.failure.map { " — \($0)" } ?? "")"))
            }
        }
        if let findings = try? store.findings(runID: run.id, jobKey: record.key), !findings.isEmpty {
            lines.append(.init(.plain, "  scan findings (\(findings.count)):"))
            for finding in findings.prefix(100) {
                lines.append(.init(.plain, "    [\(finding.scanner)] \(finding.severity) \(finding.location): \(finding.message)"))
            }
            if findings.count > 100 { lines.append(.init(.plain, "    … and \(findings.count - 100) more")) }
        }
        guard let componentsJSON = record.cacheComponents,
              let key = try? JSONDecoder().decode(CacheKey.self, from: Data(componentsJSON.utf8)) else {
            lines.append(.init(.plain, "  cache: not used (the job has no `cache: { inputs: [...] }`, or the run used --no-cache)"))
            return
        }
        let short = String(key.digest.prefix(16))
        if record.cacheHit {
            let origin = (try? store.cacheEntry(key: key.digest)).flatMap { $0 }.map { " saved by run id \($0.runID)" } ?? ""
            lines.append(.init(.plain, "  cache: hit on key \(short)…\(origin); outputs and artifacts were restored and no step ran"))
            return
        }
        // A miss: compare with the most recent earlier run of the same instance that recorded a key.
        let earlier = history.first { $0.0.number < run.number && $0.1.key == record.key && $0.1.cacheComponents != nil }
        guard let (previousRun, previousRecord) = earlier,
              let previousJSON = previousRecord.cacheComponents,
              let previousKey = try? JSONDecoder().decode(CacheKey.self, from: Data(previousJSON.utf8)) else {
            lines.append(.init(.plain, "  cache: miss on key \(short)… — no earlier run of this job to compare with"))
            return
        }
        let changes = key.differences(from: previousKey)
        if changes.isEmpty {
            let why = previousRecord.status == .success ? "that run's entry is missing (its artifacts were removed?)" : "that run did not succeed, so nothing was cached"
            lines.append(.init(.plain, "  cache: miss on key \(short)… — same key as run #\(previousRun.number), but \(why)"))
        } else {
            lines.append(.init(.plain, "  cache: miss on key \(short)… — compared with run #\(previousRun.number):"))
            for change in changes.prefix(50) { lines.append(.init(.plain, "    - \(change)")) }
            if changes.count > 50 { lines.append(.init(.plain, "    … and \(changes.count - 50) more")) }
        }
    }
}
