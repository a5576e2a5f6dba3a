import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore

struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "explain", abstract: "Say why a job ran, was skipped, failed, or hit or missed the cache.")

    @OptionGroup var project: ProjectOptions

    @Argument(help: "A job name or instance key, or an environment (explains its latest rollout).")
    var job: String

    @Option(help: "With an environment: the rollout number (see `slipway status ENV --json`).")
    var rollout: Int64?

    @Option(name: .customLong("run"), help: "The run number (default: the latest run with this job).")
    var runNumber: Int64?

    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        let lines: [ExplainLine]
        if let (url, token, name) = try remote.resolved() {
            lines = try await RemoteExplain.fetch(url: url, token: token, project: name, subject: job, run: runNumber, rollout: rollout)
        } else {
            let context = ProjectContext(project)
            let store = try context.openStore(create: false)
            do {
                lines = try JobExplainer.explain(job, runNumber: runNumber, rollout: rollout, store: store)
            } catch let error as EngineError {
                throw CLIError.badInput(error.message)
            }
        }
        for line in lines {
            switch line.style {
            case .title: Terminal.print(Terminal.bold(line.text))
            case .plain: Terminal.print(line.text)
            case .detail: Terminal.print(Terminal.dim(line.text))
            }
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
