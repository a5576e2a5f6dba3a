import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "List runs, or show one run's jobs, attempts and events.")

    @OptionGroup var project: ProjectOptions
    @OptionGroup var remote: RemoteOptions

    @Argument(help: "A run number: show its jobs, attempts and timeline.")
    var runNumber: Int64?

    @Option(help: "How many runs to list.")
    var limit: Int = 20

    func run() async throws {
        if let (url, token, name) = try remote.resolved() {
            guard runNumber == nil else { throw CLIError.badInput("with --server, `history` lists runs; see one with `slipway logs RUN --server …`") }
            try await RemoteHistory.list(url: url, token: token, project: name, limit: limit)
            return
        }
        let context = ProjectContext(project)
        let store = try context.openStore(create: false)
        if let number = runNumber {
            try Self.showRun(try context.findRun(store, number: number), store: store)
            return
        }
        let runs = try store.runs(limit: limit)
        if runs.isEmpty {
            Terminal.print("no runs yet; start one with `slipway run`")
            return
        }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        Terminal.print(Terminal.bold("RUN    STATUS       EVENT         BRANCH           COMMIT      STARTED              DURATION  JOBS"))
        for run in runs {
            let jobs = try store.jobs(runID: run.id)
            var counts: [String: Int] = [:]
            for job in jobs { counts[job.status.rawValue, default: 0] += 1 }
            let summary = counts.keys.sorted().map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
            let duration = run.finishedAt.map { Terminal.formatDuration($0.timeIntervalSince(run.createdAt)) } ?? "-"
            let commit = (run.commit.map { String($0.prefix(10)) } ?? "-") + (run.dirty ? "*" : "")
            Terminal.print("#\(String(run.number).padding(toLength: 5, withPad: " ", startingAt: 0)) \(statusText(run).padding(toLength: 12, withPad: " ", startingAt: 0)) \(run.event.padding(toLength: 13, withPad: " ", startingAt: 0)) \((run.branch ?? "-").padding(toLength: 16, withPad: " ", startingAt: 0)) \(commit.padding(toLength: 11, withPad: " ", startingAt: 0)) \(formatter.string(from: run.createdAt))  \(duration.padding(toLength: 9, withPad: " ", startingAt: 0)) \(summary)")
        }
    }

    /// A run marked running whose process is gone was interrupted (kill -9, power loss).
    func statusText(_ run: RunRecord) -> String {
        if run.status == .running, !(run.pid.map(ProcessReaper.isSlipwayProcess) ?? false) { return "interrupted" }
        return run.status.rawValue
    }

    static func showRun(_ run: RunRecord, store: SQLRunStore) throws {
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss.SSS"
        Terminal.print(Terminal.bold("run #\(run.number) of \(run.pipelineName): \(run.status.rawValue)"))
        Terminal.print("  event \(run.event), branch \(run.branch ?? "-"), commit \(run.commit ?? "-")\(run.dirty ? " + uncommitted changes" : "")")
        Terminal.print("  file \(run.file), workspace \(run.workspace)")
        Terminal.print(Terminal.bold("jobs"))
        for job in try store.jobs(runID: run.id) {
            let cached = job.cacheHit ? " (cache hit)" : ""
            Terminal.print("  \(job.key): \(job.status.rawValue)\(cached)\(job.reason.map { " — \($0)" } ?? "")")
            for attempt in try store.attempts(jobRowID: job.id) {
                let duration = attempt.finishedAt.map { Terminal.formatDuration($0.timeIntervalSince(attempt.startedAt)) } ?? "-"
                Terminal.print("    attempt \(attempt.number): \(attempt.status.rawValue) \(duration)\(attempt.failure.map { " — \($0)" } ?? "")")
                for step in try store.steps(attemptID: attempt.id) {
                    let stepDuration = step.finishedAt.map { Terminal.formatDuration($0.timeIntervalSince(step.startedAt)) } ?? "-"
                    Terminal.print(Terminal.dim("      \(step.index + 1). \(step.name): \(step.status.rawValue) \(stepDuration)\(step.failure.map { " — \($0)" } ?? "")"))
                }
            }
        }
        Terminal.print(Terminal.bold("timeline"))
        for event in try store.events(runID: run.id) {
            Terminal.print("  \(formatter.string(from: event.at))  \(event.kind.padding(toLength: 16, withPad: " ", startingAt: 0)) \(event.jobKey.map { "[\($0)] " } ?? "")\(event.message)")
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Show the logs of a run, or of one job in it.")

    @OptionGroup var project: ProjectOptions

    @Argument(help: "The run number (default: the latest run).")
    var runNumber: Int64?

    @Argument(help: "A job name or instance key, e.g. build or \"test (1)\".")
    var job: String?

    @Option(help: "Only this attempt (default: all).")
    var attempt: Int?

    @Flag(help: "Prefix each line with its time.")
    var timestamps = false

    @Flag(name: [.short, .long], help: "Keep following the logs of a run in progress.")
    var follow = false

    @OptionGroup var remote: RemoteOptions

    func run() async throws {
        if let (url, token, name) = try remote.resolved() {
            try await RemoteLogs.show(url: url, token: token, project: name, run: runNumber, job: job, follow: follow)
            return
        }
        let context = ProjectContext(project)
        let store = try context.openStore(create: false)
        let run = try context.findRun(store, number: runNumber)
        var printed: [String: Int] = [:]
        while true {
            let jobs = try store.jobs(runID: run.id).filter { job == nil || $0.jobID == job || $0.key == job }
            if jobs.isEmpty, let job {
                let names = try store.jobs(runID: run.id).map(\.key)
                throw CLIError.badInput("run #\(run.number) has no job '\(job)'" + (Suggestion.nearest(to: job, in: names).map { "; did you mean '\($0)'?" } ?? "; jobs: \(names.joined(separator: ", "))"))
            }
            let formatter = DateFormatter()
            formatter.dateFormat = "HH:mm:ss.SSS"
            for record in jobs {
                for attemptRecord in try store.attempts(jobRowID: record.id) where attempt == nil || attemptRecord.number == attempt {
                    for step in try store.steps(attemptID: attemptRecord.id) {
                        let id = "\(record.key)/\(attemptRecord.number)/\(step.index)"
                        let data = FileManager.default.contents(atPath: step.logPath) ?? Data()  // a step that printed nothing has no file
                        let lines = LogReader.lines(of: data)
                        let already = printed[id] ?? -1
                        if already < 0 {
                            Terminal.print(Terminal.bold("── \(record.key) · attempt \(attemptRecord.number) · step \(step.index + 1): \(step.name)") + Terminal.dim(" (\(step.status.rawValue))"))
                        }
                        var output = ""
                        for line in lines.dropFirst(max(0, already)) {
                            if timestamps, let time = line.time { output += Terminal.dim("[\(formatter.string(from: time))] ") }
                            output += (line.stream == "e" ? Terminal.yellow(String(line.text)) : String(line.text)) + "\n"
                        }
                        Terminal.write(Array(output.utf8))
                        printed[id] = lines.count
                    }
                }
            }
            guard follow, let current = try store.run(id: run.id), current.status == .running,
                  let pid = current.pid, ProcessReaper.isSlipwayProcess(pid) else { break }
            try await Task.sleep(for: .milliseconds(250))
        }
    }
}
