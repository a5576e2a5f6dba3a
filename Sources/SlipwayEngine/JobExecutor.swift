#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayStore
import Synchronization

/// Everything one attempt needs to run, fixed before it starts.
struct AttemptContext: Sendable {
    var run: RunRecord
    var instance: JobInstance
    var jobRowID: Int64
    var attempt: Int
    /// The attempt's row, inserted with the job's start; nil when that write failed.
    var attemptRecord: AttemptRecord?
    /// Step 0's row, written with the attempt's start (local attempts that do not look at the cache).
    var firstStep: StepRecord?
    var resolved: ResolvedJob
    var context: ExpressionContext
    /// Artifact directories of the jobs this one needs, copied into its workspace.
    var upstreamArtifacts: [String]
    /// Set last in the steps' environment (a remote runner shows the server's run id and number).
    var environmentOverrides: [String: String] = [:]
}

/// Runs one attempt of a job instance: fresh workspace, steps as real processes, outputs, artifacts, reports.
/// A class: each attempt's task captures it, and a struct of this many references (existentials among them)
/// costs a retain and a release of each per capture.
final class JobExecutor: Sendable {
    let store: RunStore
    let layout: DataLayout
    let masker: SecretMasker
    let baseEnvironment: StepEnvironment
    let live: LiveOutput?
    let observer: RunObserver?
    let gracePeriod: Duration
    let control: RunControl
    let releases: ReleaseService?
    let builtins: BuiltinSteps
    /// The run's logs and outputs directories, made (and found writable) once rather than once a job.
    let directories = PreparedDirectories()
    let deployments: DeployContext
    /// This run's workspaces, reused from job to job.
    let workspaces: WorkspacePool

    init(store: RunStore, layout: DataLayout, masker: SecretMasker, baseEnvironment: StepEnvironment, live: LiveOutput?, observer: RunObserver?,
         gracePeriod: Duration, control: RunControl, releases: ReleaseService?, builtins: BuiltinSteps, deployments: DeployContext, workspaces: WorkspacePool) {
        self.store = store
        self.layout = layout
        self.masker = masker
        self.baseEnvironment = baseEnvironment
        self.live = live
        self.observer = observer
        self.gracePeriod = gracePeriod
        self.control = control
        self.releases = releases
        self.builtins = builtins
        self.deployments = deployments
        self.workspaces = workspaces
    }

    /// What an attempt ended with, and the store writes it held back (the last step's end, the attempt's
    /// end) for the caller to commit with its next write.
    struct AttemptEnd: Sendable {
        var outcome: AttemptOutcome
        var deferred: [RunWrite]
    }

    func runAttempt(_ a: AttemptContext) async -> AttemptEnd {
        let key = a.instance.key
        let number = a.run.number
        let attemptRecord: AttemptRecord
        if let existing = a.attemptRecord {
            attemptRecord = existing
        } else {
            do {
                attemptRecord = try store.insertAttempt(AttemptRecord(jobRowID: a.jobRowID, number: a.attempt))
            } catch {
                return AttemptEnd(outcome: .failed(.error(error.message), outputs: [:]), deferred: [])
            }
        }
        // A step's end is written with the next step's start, or the attempt's end with the job's.
        var deferred: [RunWrite] = []
        var firstStep = a.firstStep
        /// The step's row: step 0's was written with the attempt; others are inserted with the ends held back.
        func stepRow(_ record: StepRecord) -> StepRecord? {
            if record.index == 0, var row = firstStep {
                firstStep = nil
                row.startedAt = record.startedAt
                if record.status != .running {
                    row.status = record.status
                    row.failure = record.failure
                    row.finishedAt = record.finishedAt
                    deferred.append(.updateStep(row))
                }
                return row
            }
            guard let inserted = try? store.insertStep(record, after: deferred) else { return nil }
            deferred = []
            return inserted
        }
        var failure: AttemptFailure?
        var cancelled = false
        var outputs: [String: String] = [:]
        var processGroups: [pid_t] = []
        var workspace = layout.workspace(number, job: key)
        var lease: WorkspacePool.Lease?
        let outputFile = layout.outputFile(number, job: key, attempt: a.attempt)
        do {
            // A free workspace is taken at once; a new one is a copy of the snapshot, made off the loop.
            let pool = workspaces
            let name = FileTree.safeName(key)
            let checkedOut: WorkspacePool.Lease
            if let free = pool.takeFree() {
                checkedOut = free
            } else {
                checkedOut = try await EngineLoop.offloaded { () throws -> WorkspacePool.Lease in try pool.checkOut(name: name) }
            }
            lease = checkedOut
            workspace = checkedOut.path
            if !a.upstreamArtifacts.isEmpty {
                let workspace = workspace
                try await EngineLoop.offloaded { () throws -> Void in
                    for directory in a.upstreamArtifacts where FileManager.default.fileExists(atPath: directory) {
                        try FileTree.copyContents(of: directory, into: workspace)
                    }
                }
            }
            // The output file itself is created by the first step that writes to it: one file less per job.
            // None is there yet: the name is this attempt's (a resumed job runs as a new attempt, a new run
            // number starts from an emptied directory), and the attempt's end removes what its steps wrote.
            try directories.prepare(FileTree.parent(outputFile))
        } catch {
            failure = .error("cannot prepare the workspace: \(error.localizedDescription)")
        }

        let clock = ContinuousClock()
        let jobDeadline = a.resolved.timeoutMilliseconds.map { clock.now + .milliseconds($0) }
        var environment = baseEnvironment
        for (name, value) in a.resolved.env { environment[name] = value }
        environment["SLIPWAY"] = "true"
        environment["CI"] = "true"
        environment["SLIPWAY_RUN_ID"] = String(a.run.id)
        environment["SLIPWAY_RUN_NUMBER"] = String(a.run.number)
        environment["SLIPWAY_JOB"] = a.instance.jobID
        environment["SLIPWAY_JOB_KEY"] = key
        environment["SLIPWAY_ATTEMPT"] = String(a.attempt)
        environment["SLIPWAY_EVENT"] = a.run.event
        environment["SLIPWAY_BRANCH"] = a.run.branch ?? ""
        environment["SLIPWAY_COMMIT"] = a.run.commit ?? ""
        environment["SLIPWAY_WORKSPACE"] = workspace
        environment["SLIPWAY_OUTPUT"] = outputFile
        for entry in a.instance.matrix?.entries ?? [] {
            environment["SLIPWAY_MATRIX_" + entry.name.uppercased().replacingOccurrences(of: "-", with: "_")] = entry.value
        }
        for (name, value) in a.environmentOverrides { environment[name] = value }

        for (index, step) in a.resolved.steps.enumerated() {
            let logPath = layout.log(number, job: key, attempt: a.attempt, step: index)
            // A step named after its command may hold a resolved `${{ secrets.X }}`: masked before it is stored or shown.
            let stepName = masker.mask(step.name)
            // Step conditions: by default a step runs only while all before it succeeded.
            var stepContext = a.context
            stepContext.status.anyNeedFailed = failure != nil
            let jobCancelled = cancelled || control.isCancelled(job: key)
            stepContext.status.runCancelled = jobCancelled
            var shouldRun = failure == nil && !jobCancelled
            var skipReason = jobCancelled ? "the job was cancelled" : "an earlier step failed"
            if let source = step.condition, let condition = try? Expression(parsing: source) {
                if condition.usesStatusFunction || shouldRun {
                    shouldRun = ((try? condition.evaluate(in: stepContext)) ?? .bool(false)).isTruthy
                    if !shouldRun { skipReason = "`if: \(source)` was false" }
                }
            }
            if !shouldRun {
                if jobCancelled { cancelled = true }
                _ = stepRow(StepRecord(attemptID: attemptRecord.id, index: index, name: stepName, status: .skipped, failure: skipReason, logPath: logPath, finishedAt: Date()))
                observer?.progress(.stepFinished(key: key, index: index, name: stepName, status: .skipped, detail: skipReason))
                continue
            }
            var timeout = step.timeoutMilliseconds.map { Duration.milliseconds($0) }
            if let jobDeadline {
                let remaining = jobDeadline - clock.now
                timeout = min(timeout ?? remaining, remaining)
            }
            var stepEnvironment = environment
            for (name, value) in step.env { stepEnvironment[name] = value }
            var directory = workspace
            if let sub = step.workingDirectory {
                directory = workspace + "/" + sub
                if !FileManager.default.fileExists(atPath: directory) {
                    let message = "working-directory '\(sub)' does not exist in the workspace"
                    _ = stepRow(StepRecord(attemptID: attemptRecord.id, index: index, name: stepName, status: .failure, failure: message, logPath: logPath, finishedAt: Date()))
                    observer?.progress(.stepFinished(key: key, index: index, name: stepName, status: .failure, detail: message))
                    if !step.continueOnError { failure = .error(message) }
                    continue
                }
            }
            let log: StepLog
            do {
                try directories.prepare(FileTree.parent(logPath))
                log = try StepLog(path: logPath, jobKey: key, masker: masker, live: live, directoryReady: true)
            } catch {
                _ = stepRow(StepRecord(attemptID: attemptRecord.id, index: index, name: stepName, status: .failure, failure: error.message, logPath: logPath, finishedAt: Date()))
                failure = .error(error.message)
                continue
            }
            observer?.progress(.stepStarted(key: key, index: index, name: stepName))
            if let builtin = step.uses {
                var record = stepRow(StepRecord(attemptID: attemptRecord.id, index: index, name: stepName, logPath: logPath))
                let outcome = await EngineLoop.offloaded { await builtins.run(builtin, with: step.with ?? [:], workspace: directory, runID: a.run.id, jobKey: key) }
                for line in outcome.lines { log.write(line) }
                if let releaseStore = builtins.releaseStore, !outcome.findings.isEmpty { try? releaseStore.insertFindings(outcome.findings) }
                if let problem = outcome.failure {
                    log.note("slipway: \(stepName) failed: \(problem)" + (step.continueOnError ? " (continue-on-error)" : ""))
                    if !step.continueOnError { failure = .error(problem) }
                }
                log.finish()
                record?.status = outcome.failure == nil ? .success : .failure
                record?.failure = outcome.failure.map(masker.mask)
                record?.finishedAt = Date()
                if let record { deferred.append(.updateStep(record)) }
                observer?.progress(.stepFinished(key: key, index: index, name: stepName, status: outcome.failure == nil ? .success : .failure, detail: outcome.failure))
                continue
            }
            let processControl = ProcessControl()
            let registration = control.register(processControl, job: key)
            // On record before it starts (a leftover of a killed run is found by its environment, so
            // the process group can wait for the step's end).
            let stepRecord = stepRow(StepRecord(attemptID: attemptRecord.id, index: index, name: stepName, logPath: logPath))
            let termination: ProcessTermination
            do {
                termination = try await StepProcess.run(
                    Self.processConfiguration(step.run,
                          environment: stepEnvironment, workingDirectory: directory, timeout: timeout, gracePeriod: gracePeriod),
                    control: processControl, sink: log)
            } catch {
                control.unregister(registration)
                log.note("slipway: \(error.description)")
                if var record = stepRecord {
                    record.status = .failure
                    record.failure = error.description
                    record.finishedAt = Date()
                    deferred.append(.updateStep(record))
                }
                if !step.continueOnError { failure = .error(error.description) }
                continue
            }
            control.unregister(registration)
            // No group when the step was cancelled before it started: kill(-0) would signal Slipway's own group.
            let processGroup = processControl.processGroup > 0 ? processControl.processGroup : nil
            if let processGroup { processGroups.append(processGroup) }
            var status: WorkStatus = .success
            var exitCode: Int32?
            var stepFailure: AttemptFailure?
            switch termination {
            case .exited(0): break
            case .exited(let code):
                exitCode = code
                stepFailure = .exit(code)
            case .signalled(let signal): stepFailure = .signal(signal)
            case .timedOut: stepFailure = .timeout
            case .cancelled:
                cancelled = true
                status = .cancelled
            }
            if let stepFailure {
                status = .failure
                log.note("slipway: step '\(stepName)' failed: \(stepFailure)" + (step.continueOnError ? " (continue-on-error)" : ""))
                if !step.continueOnError { failure = stepFailure }
            }
            if var record = stepRecord {
                record.processGroup = processGroup
                record.status = status
                record.exitCode = exitCode ?? (termination == .exited(0) ? 0 : nil)
                record.failure = stepFailure?.description
                record.finishedAt = Date()
                deferred.append(.updateStep(record))
            }
            observer?.progress(.stepFinished(key: key, index: index, name: stepName, status: status, detail: stepFailure?.description ?? (status == .failure ? nil : log.lastLine)))
        }

        // Step 0's row, written with the attempt, never stays running, whatever path the loop took.
        if var row = firstStep {
            row.status = .skipped
            row.failure = "the step did not start"
            row.finishedAt = Date()
            deferred.append(.updateStep(row))
        }

        // Outputs: only the declared ones when the job declares any; masked before they are stored.
        let outputsDirectory = directories.descriptor(FileTree.parent(outputFile))
        if let data = FileTree.contentsIfPresent(outputFile, in: outputsDirectory) {
            let parsed = KeyValueFile.parse(String(decoding: data, as: UTF8.self))
            let declared = Set(a.resolved.outputs)
            for (name, value) in parsed.values where declared.isEmpty || declared.contains(name) {
                outputs[name] = masker.mask(value)
            }
            // The raw file may hold unmasked secrets; its (masked) values now live in the database.
            FileTree.removeFile(outputFile, in: outputsDirectory)
        } else if errno != ENOENT {
            FileTree.removeFile(outputFile, in: outputsDirectory)
        }
        // Work that takes long or writes on its own comes after the steps' ends are on record.
        if a.resolved.deployEnvironment != nil || a.resolved.release != nil || !a.resolved.artifacts.isEmpty || !a.resolved.junitReports.isEmpty,
           (try? store.commit(deferred)) != nil {
            deferred = []
        }
        if failure == nil, !cancelled, let environment = a.resolved.deployEnvironment {
            if let problem = await EngineLoop.offloaded({ await deploy(environment: environment, a, attemptID: attemptRecord.id) }) { failure = .error(problem) }
        }
        if failure == nil, !cancelled, let spec = a.resolved.release {
            let workspace = workspace
            var released = outputs
            let problem = await EngineLoop.offloaded { release(spec, a, workspace: workspace, attemptID: attemptRecord.id, outputs: &released) }
            outputs = released
            if let problem { failure = .error(problem) }
        }
        if failure == nil, !cancelled {
            let workspace = workspace
            if !a.resolved.artifacts.isEmpty, let problem = await EngineLoop.offloaded({ saveArtifacts(a, workspace: workspace) }) { failure = .error(problem) }
        }
        if !a.resolved.junitReports.isEmpty {
            let workspace = workspace
            await EngineLoop.offloaded { collectTestReports(a, workspace: workspace) }
        }

        var finished = attemptRecord
        finished.finishedAt = Date()
        let outcome: AttemptOutcome
        if cancelled && failure == nil {
            finished.status = .cancelled
            outcome = .cancelled
        } else if let failure {
            finished.status = .failure
            finished.failure = masker.mask(failure.description)
            outcome = .failed(failure, outputs: outputs)
        } else {
            finished.status = .success
            outcome = .succeeded(outputs: outputs)
        }
        deferred.append(.updateAttempt(finished))
        // Background processes a step left behind end with the job; a workspace one of them might
        // still write to is not handed to another job. A reset walks the workspace and deletes what the job
        // left, however large: off the loop unless it is a few `lstat`s.
        var survivors = false
        for group in processGroups where Glibc.kill(-group, SIGKILL) == 0 { survivors = true }
        if let lease {
            let pool = workspaces
            if !survivors, lease.resetsQuickly {
                pool.checkIn(lease, reusable: true, quick: true)
            } else {
                await EngineLoop.offloaded { pool.checkIn(lease, reusable: !survivors) }
            }
        }
        return AttemptEnd(outcome: outcome, deferred: deferred)
    }

    /// `bash -e -o pipefail -c SCRIPT`, or the program itself when the script has no shell syntax
    /// and the program is on the step's PATH (as make does).
    static func processConfiguration(_ script: String, environment: StepEnvironment, workingDirectory: String, timeout: Duration?, gracePeriod: Duration) -> StepProcess.Configuration {
        if let arguments = SimpleCommand.arguments(script), let program = resolve(arguments[0], path: environment["PATH"], directory: workingDirectory) {
            return .init(executable: program, arguments: Array(arguments.dropFirst()), variables: environment, workingDirectory: workingDirectory, timeout: timeout, gracePeriod: gracePeriod)
        }
        return .init(executable: "/bin/bash", arguments: ["--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script], variables: environment, workingDirectory: workingDirectory, timeout: timeout, gracePeriod: gracePeriod)
    }

    static func resolve(_ program: String, path: String?, directory: String) -> String? {
        if program.utf8.contains(UInt8(ascii: "/")) {
            let full = program.hasPrefix("/") ? program : directory + "/" + program
            return access(full, X_OK) == 0 ? full : nil
        }
        for entry in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !entry.isEmpty {
            let candidate = entry.hasPrefix("/") ? "\(entry)/\(program)" : "\(directory)/\(entry)/\(program)"
            var info = stat()
            if stat(candidate, &info) == 0, info.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Releases `spec` from the workspace: a step of its own in the logs; the digest and the reference
    /// become the job's outputs `digest` and `release`.
    func release(_ spec: ReleaseSpec, _ a: AttemptContext, workspace: String, attemptID: Int64, outputs: inout [String: String]) -> String? {
        let index = a.resolved.steps.count
        let name = masker.mask("release \(spec.name)@\(spec.version)")
        let logPath = layout.log(a.run.number, job: a.instance.key, attempt: a.attempt, step: index)
        guard let releases else { return "releases are not available in this mode" }
        let log = try? StepLog(path: logPath, jobKey: a.instance.key, masker: masker, live: live)
        observer?.progress(.stepStarted(key: a.instance.key, index: index, name: name))
        var record = try? store.insertStep(StepRecord(attemptID: attemptID, index: index, name: name, logPath: logPath))
        var materials: [String: String] = [:]
        for directory in a.upstreamArtifacts where FileManager.default.fileExists(atPath: directory) {
            for file in FileTree.files(under: directory) { materials[file] = FileTree.sha256(ofFile: directory + "/" + file) }
        }
        let build = ReleaseService.BuildContext(
            runID: a.run.id, runNumber: a.run.number, job: a.instance.key, commit: a.run.commit, branch: a.run.branch,
            event: a.run.event, dirty: a.run.dirty, pipelineFile: a.run.file, pipelineText: a.run.pipelineText,
            jobDefinition: RunEngine.masked(a.resolved, by: masker).canonicalJSON(), materials: materials, startedOn: Date())
        var problem: String?
        log?.write("releasing \(spec.path) as \(spec.name)@\(spec.version)")
        do {
            let (release, created) = try releases.release(spec, workspace: workspace, build: build)
            outputs["digest"] = release.digest
            outputs["release"] = release.reference
            log?.write(created
                ? "released \(release.reference): sha256:\(release.digest) (\(release.size) bytes, \(release.kind)), signed by key \(release.keyID)"
                : "\(release.reference) was already released with the same content (sha256:\(release.digest)); nothing to do")
            if let sbom = release.sbomDigest { log?.write("SBOM (CycloneDX 1.5): sha256:\(sbom)") }
            log?.write("provenance: \(release.envelopePath)")
        } catch {
            problem = masker.mask(error.message)
            log?.note("slipway: release failed: \(problem!)")
        }
        log?.finish()
        record?.status = problem == nil ? .success : .failure
        record?.failure = problem
        record?.finishedAt = Date()
        if let record { try? store.updateStep(record) }
        observer?.progress(.stepFinished(key: a.instance.key, index: index, name: name, status: problem == nil ? .success : .failure, detail: problem))
        return problem
    }

    /// Copies the declared artifact paths into the run's artifact store; a missing path fails the job.
    func saveArtifacts(_ a: AttemptContext, workspace: String) -> String? {
        guard !a.resolved.artifacts.isEmpty else { return nil }
        let destination = layout.artifacts(a.run.number, job: a.instance.key)
        if access(destination, F_OK) == 0 { try? FileManager.default.removeItem(atPath: destination) }
        for path in a.resolved.artifacts {
            let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
            let glob = Glob(trimmed)
            var matches: [String] = []
            if glob.hasWildcards {
                matches = FileTree.files(under: workspace).filter { glob.matches($0) }
            } else if FileManager.default.fileExists(atPath: workspace + "/" + trimmed) {
                matches = [trimmed]
            }
            if matches.isEmpty { return "artifact '\(path)' was not produced (nothing at that path in the workspace)" }
            do {
                for match in matches {
                    let target = destination + "/" + match
                    try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    var isDirectory: ObjCBool = false
                    if FileManager.default.fileExists(atPath: workspace + "/" + match, isDirectory: &isDirectory), isDirectory.boolValue {
                        try FileTree.copyContents(of: workspace + "/" + match, into: target)
                    } else {
                        try? FileManager.default.removeItem(atPath: target)
                        try FileManager.default.copyItem(atPath: workspace + "/" + match, toPath: target)
                    }
                }
            } catch {
                return "cannot save artifact '\(path)': \(error.localizedDescription)"
            }
        }
        return nil
    }

    func collectTestReports(_ a: AttemptContext, workspace: String) {
        guard !a.resolved.junitReports.isEmpty else { return }
        let files = FileTree.files(under: workspace).filter { Glob.matchesList(a.resolved.junitReports, $0) }
        var records: [TestResultRecord] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: workspace + "/" + file) else { continue }
            do {
                for test in try JUnitReport.parse(data, fileName: file) {
                    records.append(TestResultRecord(runID: a.run.id, jobKey: a.instance.key, attempt: a.attempt, testID: test.id, suite: test.suite, name: test.name, status: test.status.rawValue, duration: test.duration, message: test.message.map(masker.mask), file: test.file, line: test.line))
                }
            } catch {
                try? store.appendEvent(RunEventRecord(runID: a.run.id, jobKey: a.instance.key, kind: "report-error", message: masker.mask(error.description)))
            }
        }
        try? store.insertTestResults(records)
    }
}

/// Every running process of a run, by job, so Ctrl-C or fail-fast can stop them.
public final class RunControl: Sendable {
    struct State {
        var next = 0
        var processes: [Int: (job: String, control: ProcessControl)] = [:]
        var cancelledJobs: Set<String> = []
        var cancelled = false
        var killed = false
    }
    let state = Mutex(State())

    public init() {}

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    func isCancelled(job: String) -> Bool { state.withLock { $0.cancelled || $0.cancelledJobs.contains(job) } }

    func register(_ process: ProcessControl, job: String) -> Int {
        let (id, cancelled, killed) = state.withLock { s in
            s.next += 1
            s.processes[s.next] = (job, process)
            return (s.next, s.cancelled || s.cancelledJobs.contains(job), s.killed)
        }
        if killed { process.killImmediately() } else if cancelled { process.cancel() }
        return id
    }

    func unregister(_ id: Int) {
        _ = state.withLock { $0.processes.removeValue(forKey: id) }
    }

    /// Stops one job (fail-fast): its running step gets SIGTERM and no further step starts.
    func cancelJob(_ job: String) {
        let processes = state.withLock { s in
            s.cancelledJobs.insert(job)
            return s.processes.values.filter { $0.job == job }.map(\.control)
        }
        for process in processes { process.cancel() }
    }

    /// Kills every running step's process group, for a server about to exit at once and leave the run
    /// to be resumed: the next start runs their jobs again.
    public func killProcessesForExit() {
        let groups = state.withLock { s in s.processes.values.map(\.control.processGroup) }
        for group in groups where group > 1 { _ = Glibc.kill(-group, SIGKILL) }
    }

    /// A new attempt of a job starts clean.
    func clearJob(_ job: String) {
        _ = state.withLock { $0.cancelledJobs.remove(job) }
    }

    /// First Ctrl-C: stop every step gracefully; no new work starts.
    public func cancel() {
        let processes = state.withLock { s in
            s.cancelled = true
            return s.processes.values.map(\.control)
        }
        for process in processes { process.cancel() }
    }

    /// Second Ctrl-C: SIGKILL everything now.
    public func killAll() {
        let processes = state.withLock { s in
            s.cancelled = true
            s.killed = true
            return s.processes.values.map(\.control)
        }
        for process in processes { process.killImmediately() }
    }
}

/// Directories a run writes into from every job, each made and checked once: a job then costs no mkdir
/// or access(2) of its own.
final class PreparedDirectories: Sendable {
    /// Each prepared directory, with a descriptor of it when one could be opened: names in it are
    /// then looked up from there, not from `/` (a step's outputs file, read at every job's end).
    private let ready = Mutex<[String: Int32]>([:])

    func prepare(_ directory: String) throws(EngineError) {
        if ready.withLock({ $0[directory] != nil }) { return }
        do { try FileTree.makeDirectories(directory) } catch { throw EngineError("cannot create \(directory): \(error.localizedDescription)") }
        guard access(directory, W_OK) == 0 else { throw EngineError("cannot write into \(directory): \(String(cString: strerror(errno)))") }
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let kept = ready.withLock { ready -> Bool in
            guard ready[directory] == nil else { return false }
            ready[directory] = descriptor
            return true
        }
        if !kept, descriptor >= 0 { close(descriptor) }
    }

    /// The descriptor of a prepared directory, or nil (not prepared, or it could not be opened).
    func descriptor(_ directory: String) -> Int32? {
        ready.withLock { $0[directory] }.flatMap { $0 >= 0 ? $0 : nil }
    }

    deinit {
        for descriptor in ready.withLock({ Array($0.values) }) where descriptor >= 0 { close(descriptor) }
    }
}
