import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayStore

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "explain", abstract: "Say why a job ran, was skipped, failed, or hit or missed the cache.")

    @OptionGroup var project: ProjectOptions

    @Argument(help: "A job name or instance key, or an environment (explains its latest rollout).")
    var job: String

    @Option(help: "With an environment: the rollout number (see `slipway status ENV --json`).")
    var rollout: Int64?

    @Option(name: .customLong("run"), help: "The run number (default: the latest run with this job).")
    var runNumber: Int64?

    func run() throws {
        let context = ProjectContext(project)
        let store = try context.openStore(create: false)
        let history = try store.latestJobs(jobID: job, limit: 500)
        if history.isEmpty || rollout != nil, try explainRollout(store: store) { return }
        var matches = history
        if let runNumber { matches = history.filter { $0.0.number == runNumber } }
        guard let (run, _) = matches.first else {
            throw CLIError.badInput("no run has a job '\(job)'\(runNumber.map { " in run #\($0)" } ?? ""); see `slipway history`")
        }
        for (_, record) in matches.filter({ $0.0.id == run.id }) {
            explain(record, run: run, store: store, history: history)
        }
        // A deploy job is usually named after its environment: its rollout follows.
        _ = try explainRollout(store: store)
    }

    /// An environment's rollout: every step, command and measurement with the numbers that decided it.
    func explainRollout(store: SQLRunStore) throws -> Bool {
        let rollouts = try store.rollouts(environment: job, limit: 1000)
        guard let record = rollout.map({ n in rollouts.first { $0.id == n } }) ?? rollouts.first else { return false }
        let machine = try? JSONDecoder().decode(RolloutStateMachine.self, from: record.state)
        Terminal.print(Terminal.bold("rollout #\(record.id) of \(record.reference) to \(record.environment): \(record.phase)"))
        Terminal.print("  strategy \(record.strategy)" + (record.stable.map { ", over \($0)" } ?? ", first release in this environment")
                       + (record.runID.map { _ in ", from job \(record.job ?? "?")" } ?? ", from `slipway deploy`"))
        if let outcome = record.outcome { Terminal.print("  why: \(outcome)") }
        if let machine, !machine.phase.isFinal {
            Terminal.print("  now: step \(machine.stepIndex + 1), traffic \(machine.weights.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)%" }.joined(separator: ", "))")
        }
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss"
        for event in try store.rolloutEvents(rolloutID: record.id) {
            Terminal.print("  \(formatter.string(from: event.at))  \(event.text)")
            guard event.kind == "measurement", let detail = event.detail,
                  let measurement = try? JSONDecoder().decode(SlipwayCore.Measurement.self, from: detail), let c = measurement.comparison else { continue }
            var numbers = "canary n=\(c.canaryCount) mean \(Statistics.format(c.canaryMean)), baseline n=\(c.baselineCount) mean \(Statistics.format(c.baselineMean)), effect \(Statistics.format(c.effectSize))"
            if let p = c.pValue { numbers += ", p \(Statistics.format(p))" }
            if let lo = c.lowerConfidence, let hi = c.upperConfidence { numbers += ", CI [\(Statistics.format(lo)), \(Statistics.format(hi))]" }
            Terminal.print(Terminal.dim("            \(numbers)"))
        }
        return true
    }

    func explain(_ record: JobRecord, run: RunRecord, store: SQLRunStore, history: [(RunRecord, JobRecord)]) {
        Terminal.print(Terminal.bold("\(record.key) in run #\(run.number): \(record.status.rawValue)\(record.allowedFailure ? " (allowed by continue-on-error)" : "")"))
        if let reason = record.reason { Terminal.print("  why: \(reason)") }
        let attempts = (try? store.attempts(jobRowID: record.id)) ?? []
        for attempt in attempts {
            Terminal.print("  attempt \(attempt.number): \(attempt.status.rawValue)\(attempt.failure.map { " — \($0)" } ?? "")")
            for step in (try? store.steps(attemptID: attempt.id)) ?? [] where step.status != .success {
                Terminal.print("    step \(step.index + 1) '\(step.name)': \(step.status.rawValue)\(step.failure.map { " — \($0)" } ?? "")")
            }
        }
        if let findings = try? store.findings(runID: run.id, jobKey: record.key), !findings.isEmpty {
            Terminal.print("  scan findings (\(findings.count)):")
            for finding in findings.prefix(100) {
                Terminal.print("    [\(finding.scanner)] \(finding.severity) \(finding.location): \(finding.message)")
            }
            if findings.count > 100 { Terminal.print("    … and \(findings.count - 100) more") }
        }
        guard let componentsJSON = record.cacheComponents,
              let key = try? JSONDecoder().decode(CacheKey.self, from: Data(componentsJSON.utf8)) else {
            Terminal.print("  cache: not used (the job has no `cache: { inputs: [...] }`, or the run used --no-cache)")
            return
        }
        let short = String(key.digest.prefix(16))
        if record.cacheHit {
            let origin = (try? store.cacheEntry(key: key.digest)).flatMap { $0 }.map { " saved by run id \($0.runID)" } ?? ""
            Terminal.print("  cache: hit on key \(short)…\(origin); outputs and artifacts were restored and no step ran")
            return
        }
        // A miss: compare with the most recent earlier run of the same instance that recorded a key.
        let earlier = history.first { $0.0.number < run.number && $0.1.key == record.key && $0.1.cacheComponents != nil }
        guard let (previousRun, previousRecord) = earlier,
              let previousJSON = previousRecord.cacheComponents,
              let previousKey = try? JSONDecoder().decode(CacheKey.self, from: Data(previousJSON.utf8)) else {
            Terminal.print("  cache: miss on key \(short)… — no earlier run of this job to compare with")
            return
        }
        let changes = key.differences(from: previousKey)
        if changes.isEmpty {
            let why = previousRecord.status == .success ? "that run's entry is missing (its artifacts were removed?)" : "that run did not succeed, so nothing was cached"
            Terminal.print("  cache: miss on key \(short)… — same key as run #\(previousRun.number), but \(why)")
        } else {
            Terminal.print("  cache: miss on key \(short)… — compared with run #\(previousRun.number):")
            for change in changes.prefix(50) { Terminal.print("    - \(change)") }
            if changes.count > 50 { Terminal.print("    … and \(changes.count - 50) more") }
        }
    }
}

struct TestsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tests", abstract: "Show the test results of a run (JUnit reports), with flaky tests.")

    @OptionGroup var project: ProjectOptions

    @Argument(help: "The run number (default: the latest run).")
    var runNumber: Int64?

    func run() throws {
        let context = ProjectContext(project)
        let store = try context.openStore(create: false)
        let run = try context.findRun(store, number: runNumber)
        if !Self.printSummary(store: store, run: run, compact: false) {
            Terminal.print("run #\(run.number) has no test reports (add `reports: { junit: \"path/*.xml\" }` to a job)")
        }
    }

    /// Prints totals, failures with their location, and flaky tests; false when the run has no results.
    @discardableResult
    static func printSummary(store: SQLRunStore, run: RunRecord, compact: Bool) -> Bool {
        guard let results = try? store.testResults(runID: run.id), !results.isEmpty else { return false }
        // The final verdict of a test is its last attempt in its job.
        var latest: [String: TestResultRecord] = [:]
        var history: [String: [TestResultRecord]] = [:]
        for result in results {
            let id = result.jobKey + "\u{0}" + result.testID
            history[id, default: []].append(result)
            if let existing = latest[id], existing.attempt > result.attempt { continue }
            latest[id] = result
        }
        let finals = latest.values.sorted { ($0.jobKey, $0.testID) < ($1.jobKey, $1.testID) }
        let failed = finals.filter { $0.status == "failed" || $0.status == "error" }
        let skipped = finals.filter { $0.status == "skipped" }
        let flaky = history.values.compactMap { records -> TestResultRecord? in
            let sorted = records.sorted { $0.attempt < $1.attempt }
            guard let last = sorted.last, last.status == "passed",
                  sorted.dropLast().contains(where: { $0.status == "failed" || $0.status == "error" }) else { return nil }
            return last
        }.sorted { $0.testID < $1.testID }
        let total = finals.count
        let duration = finals.reduce(0) { $0 + $1.duration }
        let line = "tests: \(total) total, \(total - failed.count - skipped.count) passed, \(failed.count) failed, \(skipped.count) skipped, \(flaky.count) flaky (\(Terminal.formatDuration(duration)))"
        Terminal.print(failed.isEmpty ? Terminal.green(line) : Terminal.red(line))
        for test in failed.prefix(compact ? 10 : 1000) {
            let location = test.file.map { " at \($0)\(test.line.map { ":\($0)" } ?? "")" } ?? ""
            Terminal.print("  \(Terminal.red("✗")) \(test.testID) [\(test.jobKey)]\(location)")
            if let message = test.message { Terminal.print(Terminal.dim("      \(message.prefix(300))")) }
        }
        if compact, failed.count > 10 { Terminal.print("  … \(failed.count - 10) more: `slipway tests \(run.number)`") }
        for test in flaky {
            let count = (try? store.flakyCount(testID: test.testID)) ?? 1
            Terminal.print("  \(Terminal.yellow("~")) flaky: \(test.testID) [\(test.jobKey)] failed, then passed on retry; flaky in \(count) run\(count == 1 ? "" : "s")")
        }
        return true
    }
}
