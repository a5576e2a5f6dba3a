#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayEngine
import SlipwayStore

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the pipeline locally.",
        discussion: "Exit codes: 0 success, 1 the pipeline failed or was cancelled, 2 bad input."
    )

    @OptionGroup var project: ProjectOptions

    @Option(name: .customLong("job"), help: "Run only this job and what it needs (repeatable).")
    var jobs: [String] = []

    @Option(help: "The event to simulate: push, pull_request, schedule, manual. Checked against `on:`.")
    var event: String?

    @Option(help: "The branch to simulate (default: the current git branch). Checked against `on:`.")
    var branch: String?

    @Option(name: .customLong("env"), help: "Override or add a top-level env variable, K=V (repeatable).")
    var envOverrides: [String] = []

    @Option(name: .customLong("input"), help: "A manual input, k=v (repeatable).")
    var inputs: [String] = []

    @Option(name: .customLong("jobs"), help: "How many jobs run at once (default: number of cores).")
    var parallelism: Int?

    @Flag(help: "Continue the latest interrupted run (or --run N) instead of starting a new one.")
    var resume = false

    @Option(name: .customLong("run"), help: "With --resume: the run number to continue.")
    var runNumber: Int64?

    @Flag(name: .customLong("no-cache"), help: "Run every job even when its cache key matches.")
    var noCache = false

    @Flag(help: "Run the HEAD commit only, without uncommitted changes.")
    var clean = false

    @Option(name: .customLong("grace"), help: "How long a cancelled or timed-out step gets after SIGTERM before SIGKILL.")
    var grace: String = "5s"

    @Flag(name: .customLong("plain"), help: "Plain prefixed output even on a terminal.")
    var plain = false

    /// The parsed command line as plain values.
    var invocation: RunInvocation {
        RunInvocation(file: project.file, dataDirectory: project.dataDirectory, jobs: jobs, event: event, branch: branch, envOverrides: envOverrides,
                      inputs: inputs, parallelism: parallelism, resume: resume, runNumber: runNumber, noCache: noCache, clean: clean, grace: grace, plain: plain)
    }

    func validate() throws { try invocation.validate() }

    func run() async throws { try await invocation.run() }
}

/// `slipway run` as plain values. The common command lines are read by `init?(fastParsing:)` without
/// ArgumentParser, whose reflection over every command's properties costs ~4 ms of a run's start-up;
/// anything else (help, short or unknown names, bad values) goes through `RunCommand` as before.
struct RunInvocation: Equatable {
    var file = "slipway.yml"
    var dataDirectory: String?
    var jobs: [String] = []
    var event: String?
    var branch: String?
    var envOverrides: [String] = []
    var inputs: [String] = []
    var parallelism: Int?
    var resume = false
    var runNumber: Int64?
    var noCache = false
    var clean = false
    var grace = "5s"
    var plain = false

    func validate() throws {
        if let parallelism, parallelism < 1 { throw ValidationError("--jobs must be at least 1") }
        if DurationParser.parse(grace) == nil { throw ValidationError("--grace '\(grace)' is not a duration (e.g. 5s)") }
        if let event, !TriggerMatcher.events.contains(event) {
            throw ValidationError("unknown event '\(event)'; use one of \(TriggerMatcher.events.joined(separator: ", "))")
        }
    }

    /// The live view shows no log lines, so show the end of each failed step's log after the run.
    static func printFailedLogTails(store: SQLRunStore, run: RunRecord, lines: Int = 15) {
        guard let jobs = try? store.jobs(runID: run.id) else { return }
        for job in jobs where job.status == .failure {
            guard let attempt = (try? store.attempts(jobRowID: job.id))?.last,
                  let step = (try? store.steps(attemptID: attempt.id))?.last(where: { $0.status == .failure }),
                  let data = FileManager.default.contents(atPath: step.logPath) else { continue }
            let tail = LogReader.lines(of: data).suffix(lines)
            Terminal.print(Terminal.bold("── \(job.key) · step '\(step.name)' · last \(tail.count) lines (slipway logs \(run.number) \"\(job.key)\")"))
            Terminal.print(tail.map { String($0.text) }.joined(separator: "\n"))
        }
    }

    static func keyValues(_ items: [String], option: String) throws -> [String: String] {
        var result: [String: String] = [:]
        for item in items {
            guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                throw CLIError.badInput("\(option) '\(item)' must look like NAME=value")
            }
            result[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        return result
    }

    func run() async throws {
        let context = ProjectContext(file: file, dataDirectory: dataDirectory)
        let secrets = try context.loadSecrets()
        // A new run's `git status` and the store's opening go on while the pipeline file is parsed.
        let gitStatus = resume || branch != nil ? nil : GitInfo.start(context.projectDirectory)
        let listing = resume || clean ? nil : ProjectSnapshot.startListing(context.projectDirectory)
        async let opening = context.openStore(create: true)
        let loaded = resume ? nil : try context.loadPipeline()
        let store = try await opening
        Terminal.startQueue()
        defer { Terminal.drainQueue() }
        let live = !plain && Terminal.stdoutIsTTY
        let reporter: Reporter = live ? LiveReporter() : PlainReporter()
        let engine = RunEngine(store: store, layout: context.layout, project: context.projectDirectory, secrets: secrets,
                               observer: reporter, live: reporter.lineSink, gracePeriod: DurationParser.parse(grace) ?? .seconds(5),
                               releases: ReleaseService(store: store, dataRoot: context.layout.root))
        let interrupts = InterruptHandler(control: engine.control, store: store)
        let finished: RunRecord
        if resume {
            let target: RunRecord
            if let runNumber {
                guard let found = try store.run(number: runNumber) else { throw CLIError.badInput("there is no run #\(runNumber)") }
                target = found
            } else {
                guard let found = try store.latestUnfinishedRun() else { throw CLIError.badInput("no interrupted run to resume; see `slipway history`") }
                target = found
            }
            if target.status.isFinal { throw CLIError.badInput("run #\(target.number) already finished (\(target.status.rawValue)); nothing to resume") }
            if let pid = target.pid, pid != getpid(), ProcessReaper.isSlipwayProcess(pid) {
                throw CLIError.badInput("run #\(target.number) is still running in process \(pid); stop it first")
            }
            interrupts.install(runID: target.id)
            do { finished = try await engine.resume(run: target) } catch { throw CLIError.failure(error.message) }
        } else {
            guard let loaded else { return }
            let (pipeline, text) = loaded
            // An unknown --job is bad input (exit 2), caught before a run is recorded.
            let ids = pipeline.jobs.map(\.id)
            for job in jobs where pipeline.job(job) == nil {
                throw CLIError.badInput("no job named '\(job)' in \(context.displayName)" + (Suggestion.nearest(to: job, in: ids).map { "; did you mean '\($0)'?" } ?? "; jobs: \(ids.joined(separator: ", "))"))
            }
            let env = try Self.keyValues(envOverrides, option: "--env")
            let inputValues = try Self.keyValues(inputs, option: "--input")
            let git = gitStatus.flatMap { GitInfo.parse($0.wait()) }
            let currentBranch = branch ?? git?.branch
            let eventName = event ?? "push"
            let decision = TriggerMatcher.decide(pipeline.triggers, event: eventName, branch: currentBranch)
            if !decision.matches {
                if event != nil || branch != nil {
                    Terminal.print("not triggered: \(decision.reason)")
                    return
                }
                Terminal.print(Terminal.dim("note: \(decision.reason); running anyway because no --event or --branch was given"))
            }
            if let manual = pipeline.triggers.manualInputs, eventName == "manual" {
                for input in manual where input.required && inputValues[input.name] == nil && input.defaultValue == nil {
                    throw CLIError.badInput("manual input '\(input.name)' is required; pass --input \(input.name)=VALUE")
                }
            }
            let options = RunOptions(targets: jobs, event: eventName, branch: currentBranch, envOverrides: env, inputs: inputValues,
                                     useCache: !noCache, parallelism: parallelism ?? ProcessInfo.processInfo.activeProcessorCount, clean: clean)
            interrupts.install(runID: nil)
            do { finished = try await engine.start(pipeline: pipeline, pipelineText: text, options: options, git: git, listing: listing) } catch { throw CLIError.failure(error.message) }
        }
        reporter.finish()
        if live { Self.printFailedLogTails(store: store, run: finished) }
        TestsCommand.printSummary(store: store, run: finished, compact: true)
        switch finished.status {
        case .success: return
        case .cancelled: throw ExitCode(interrupts.wasInterrupted ? 130 : 1)
        default: throw ExitCode(1)
        }
    }
}

/// Ctrl-C once: cancel gracefully. Twice: kill everything and exit at once.
final class InterruptHandler: @unchecked Sendable {
    // Mutated only on `queue`.
    let control: RunControl
    let store: SQLRunStore
    let queue = DispatchQueue(label: "slipway.signals")
    var sources: [DispatchSourceSignal] = []
    var count = 0
    var runID: Int64?
    private(set) var wasInterrupted = false

    init(control: RunControl, store: SQLRunStore) {
        self.control = control
        self.store = store
    }

    func install(runID: Int64?) {
        self.runID = runID
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { [self] in handle(signalNumber) }
            source.resume()
            sources.append(source)
        }
    }

    func handle(_ signalNumber: Int32) {
        count += 1
        wasInterrupted = true
        if count == 1 {
            Terminal.write(Array("\nslipway: cancelling (steps get SIGTERM); press Ctrl-C again to kill them now\n".utf8), fd: 2)
            control.cancel()
        } else {
            Terminal.write(Array("\nslipway: killing all steps\n".utf8), fd: 2)
            control.killAll()
            if let latest = try? store.latestUnfinishedRun() {
                try? store.updateRun(id: latest.id, status: .cancelled, finishedAt: Date(), pid: nil)
                // The run is never resumed: what was running (or ended, held back) is closed here.
                let now = Date()
                let reason = "killed by a second interrupt"
                var writes = (try? store.closingWrites(runID: latest.id, as: .cancelled, step: reason, attempt: reason, at: now)) ?? []
                for var job in (try? store.jobs(runID: latest.id)) ?? [] where job.status == .running {
                    job.status = .cancelled
                    job.finishedAt = now
                    writes.append(.updateJob(job, event: nil))
                }
                writes.append(.appendEvent(RunEventRecord(runID: latest.id, jobKey: nil, kind: "run-killed", message: reason)))
                _ = try? store.commit(writes)
            }
            exit(130)
        }
    }
}

// In an extension, so the memberwise initializer `RunCommand.invocation` uses stays.
extension RunInvocation {
    /// `--name value`, `--name=value` and the flags; nil for whatever ArgumentParser should judge (so its
    /// messages and exit codes stay the only ones): unknown or repeated single options, missing or
    /// non-numeric or empty values, values that look like options, and settings `validate()` rejects.
    init?(fastParsing arguments: some Collection<String>) {
        var seen: Set<String> = []
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--") else { return nil }
            var name = argument
            var inline: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            }
            let repeatable = ["--job", "--env", "--input"].contains(name)
            guard repeatable || seen.insert(name).inserted else { return nil }
            func value() -> String? {
                if let inline { return inline.isEmpty ? nil : inline }
                guard let next = rest.first, !next.hasPrefix("-") else { return nil }
                rest.removeFirst()
                return next
            }
            switch name {
            case "--plain", "--resume", "--no-cache", "--clean":
                guard inline == nil else { return nil }
                switch name {
                case "--plain": plain = true
                case "--resume": resume = true
                case "--no-cache": noCache = true
                default: clean = true
                }
            case "--file": guard let v = value() else { return nil }; file = v
            case "--data-dir": guard let v = value() else { return nil }; dataDirectory = v
            case "--job": guard let v = value() else { return nil }; jobs.append(v)
            case "--event": guard let v = value() else { return nil }; event = v
            case "--branch": guard let v = value() else { return nil }; branch = v
            case "--env": guard let v = value() else { return nil }; envOverrides.append(v)
            case "--input": guard let v = value() else { return nil }; inputs.append(v)
            case "--grace": guard let v = value() else { return nil }; grace = v
            case "--jobs": guard let v = value().flatMap({ Int($0) }) else { return nil }; parallelism = v
            case "--run": guard let v = value().flatMap({ Int64($0) }) else { return nil }; runNumber = v
            default: return nil
            }
        }
        guard (try? validate()) != nil else { return nil }
    }
}
