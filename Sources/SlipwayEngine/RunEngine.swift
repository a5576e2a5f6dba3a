#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayStore

/// How a run was asked for; stored with the run so `--resume` runs the same thing.
public struct RunOptions: Sendable, Codable, Equatable {
    public var targets: [String]
    public var event: String
    public var branch: String?
    public var envOverrides: [String: String]
    public var inputs: [String: String]
    public var useCache: Bool
    public var parallelism: Int
    public var clean: Bool
    /// Set by the server: the project directory is an export of exactly this commit, taken as the
    /// run's snapshot (moved, not copied).
    public var exportedCommit: String?
    /// Set by the server: the run request this run executes, so a restart can find the run again even
    /// if the request never got to record the run's number.
    public var requestID: Int64?

    public init(targets: [String] = [], event: String = "push", branch: String? = nil, envOverrides: [String: String] = [:], inputs: [String: String] = [:], useCache: Bool = true, parallelism: Int = ProcessInfo.processInfo.activeProcessorCount, clean: Bool = false, exportedCommit: String? = nil, requestID: Int64? = nil) {
        self.exportedCommit = exportedCommit
        self.requestID = requestID
        self.targets = targets
        self.event = event
        self.branch = branch
        self.envOverrides = envOverrides
        self.inputs = inputs
        self.useCache = useCache
        self.parallelism = parallelism
        self.clean = clean
    }
}

/// Executes runs: plans them, drives the `RunStateMachine`, persists every transition before acting on it.
public final class RunEngine: Sendable {
    public let store: RunStore
    public let layout: DataLayout
    public let project: String
    let secrets: [String: String]
    let masker: SecretMasker
    let observer: RunObserver?
    let live: LiveOutput?
    let gracePeriod: Duration
    let releases: ReleaseService?
    public let control = RunControl()
    /// The binary that runs `slipway agent` for deploy jobs (this process's own executable by default).
    public let agentExecutable: String

    public static func currentExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Variables of this process that steps must not see, their values masked like secrets (the server's
    /// webhook secrets).
    let hiddenVariables: [String]
    /// Runs jobs whose `runs-on` labels it takes on remote runners (the server's runner broker).
    let remote: RemoteJobRunner?
    /// The project's name as the server knows it (sent to remote runners).
    let projectName: String
    /// What `masker` masks. Remote runners get only the pipeline's secrets: the server's own hidden
    /// variables (webhook secrets, its token) never leave it, and steps cannot see them anyway.
    let maskedValues: [String]

    public init(store: RunStore, layout: DataLayout, project: String, secrets: [String: String], observer: RunObserver? = nil, live: LiveOutput? = nil, gracePeriod: Duration = .seconds(5), releases: ReleaseService? = nil, agentExecutable: String = RunEngine.currentExecutable(), hiddenVariables: [String] = [], remote: RemoteJobRunner? = nil, projectName: String = "") {
        self.hiddenVariables = hiddenVariables
        self.remote = remote
        self.projectName = projectName
        self.releases = releases
        self.agentExecutable = agentExecutable
        self.store = store
        self.layout = layout
        self.project = project
        self.secrets = secrets
        let environment = ProcessInfo.processInfo.environment
        self.maskedValues = Array(secrets.values) + hiddenVariables.compactMap { environment[$0] }.filter { !$0.isEmpty }
        self.masker = SecretMasker(secrets: maskedValues)
        self.observer = observer
        self.live = live
        self.gracePeriod = gracePeriod
    }

    /// Starts a new run of `pipeline` (loaded from `pipelineText`).
    /// `git`: what `git status` said of the project just before, when the caller asked it already.
    /// `listing`: the snapshot's file listing (`ProjectSnapshot.startListing`), when the caller started it.
    public func start(pipeline: Pipeline, pipelineText: String, options: RunOptions, git: GitInfo? = nil, listing: Helper.Running? = nil) async throws(EngineError) -> RunRecord {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let optionsJSON = String(decoding: (try? encoder.encode(options)) ?? Data("{}".utf8), as: UTF8.self)
        var run: RunRecord
        do {
            run = try store.createRun(RunRecord(pipelineName: pipeline.name.isEmpty ? "pipeline" : pipeline.name, file: pipeline.file, pipelineText: pipelineText, event: options.event, branch: options.branch, commit: nil, dirty: false, workspace: "", options: optionsJSON, pid: getpid()))
        } catch { throw EngineError(error.message) }
        // A new run number owns its directory: anything there is from a database that forgot it (a store
        // recreated or restored), and stale logs, sources or artifacts must not leak into this run.
        if FileManager.default.fileExists(atPath: layout.run(run.number)) {
            try? FileManager.default.removeItem(atPath: layout.run(run.number))
        }
        if options.exportedCommit != nil { _ = listing?.wait() }
        let snapshot = if let commit = options.exportedCommit {
            try ProjectSnapshot.adopt(export: project, commit: commit, branch: options.branch, into: layout.snapshot(run.number))
        } else {
            try ProjectSnapshot.capture(project: project, into: layout.snapshot(run.number), clean: options.clean, known: git, listing: listing)
        }
        run.commit = snapshot.commit
        run.branch = options.branch ?? snapshot.branch
        run.dirty = snapshot.dirty
        run.workspace = layout.run(run.number)
        // The run row is rewritten with what the snapshot found (commit, branch, dirty).
        do {
            try store.updateRunDetails(run)
        } catch { throw EngineError(error.message) }
        let plan = try makePlan(pipeline: pipeline, run: run, options: options)
        let jobRows: [JobRecord]
        do {
            jobRows = try store.insertJobs(plan.instances.map { JobRecord(runID: run.id, key: $0.key, jobID: $0.jobID) })
            try store.appendEvent(RunEventRecord(runID: run.id, jobKey: nil, kind: "run-started", message: "run #\(run.number) started: event \(run.event), branch \(run.branch ?? "-"), commit \(run.commit.map { String($0.prefix(12)) } ?? "-")\(run.dirty ? " + uncommitted changes" : "")"))
        } catch { throw EngineError(error.message) }
        observer?.progress(.runStarted(run: run, jobs: plan.instances.map(\.key), resumed: false))
        return try await execute(run: run, plan: plan, options: options, previous: [], jobRows: jobRows)
    }

    /// Continues an interrupted run: finished jobs keep their results, interrupted ones run again as new attempts.
    public func resume(run original: RunRecord) async throws(EngineError) -> RunRecord {
        var run = original
        let options = (try? JSONDecoder().decode(RunOptions.self, from: Data(run.options.utf8))) ?? RunOptions()
        let loaded = PipelineLoader.load(text: run.pipelineText, file: run.file)
        guard let pipeline = loaded.pipeline else { throw EngineError("the stored pipeline of run #\(run.number) no longer loads") }
        let plan = try makePlan(pipeline: pipeline, run: run, options: options)
        let leftovers = ProcessReaper.reap(runID: run.id, runDirectory: run.workspace.isEmpty ? layout.run(run.number) : run.workspace)
        var previous: [InstanceRecord] = []
        do {
            // Everything the dead process left open is closed in one transaction.
            var writes = try store.closingWrites(runID: run.id, as: .interrupted, step: "slipway stopped while this step ran",
                                                 attempt: "interrupted: slipway stopped during this attempt")
            // Lost runners are counted by their events: those attempts spend `retry.lost`, not `retry.max`.
            var lost: [String: Int] = [:]
            for event in try store.events(runID: run.id) where event.kind == "runner-lost" {
                if let key = event.jobKey { lost[key, default: 0] += 1 }
            }
            for job in try store.jobs(runID: run.id) {
                var job = job
                switch job.status {
                case .success, .failure, .cancelled, .skipped:
                    previous.append(InstanceRecord(key: job.key, result: JobResult(rawValue: job.status.rawValue), allowedFailure: job.allowedFailure, attempts: job.attempts, outputs: job.outputValues))
                case .running, .interrupted:
                    job.status = .interrupted
                    writes.append(.updateJob(job, event: nil))
                    previous.append(InstanceRecord(key: job.key, result: nil, attempts: job.attempts, lostAttempts: lost[job.key] ?? 0))
                case .pending:
                    previous.append(InstanceRecord(key: job.key, result: nil, attempts: job.attempts, lostAttempts: lost[job.key] ?? 0))
                }
            }
            try store.commit(writes)
            run.status = .running
            run.pid = getpid()
            try store.updateRun(id: run.id, status: .running, finishedAt: nil, pid: getpid())
            try store.appendEvent(RunEventRecord(runID: run.id, jobKey: nil, kind: "run-resumed", message: "run #\(run.number) resumed by process \(getpid())" + (leftovers > 0 ? "; ended \(leftovers) leftover process(es) of the interrupted run" : "")))
        } catch { throw EngineError(error.message) }
        observer?.progress(.runStarted(run: run, jobs: plan.instances.map(\.key), resumed: true))
        return try await execute(run: run, plan: plan, options: options, previous: previous)
    }

    static func masked(_ job: ResolvedJob, by masker: SecretMasker) -> ResolvedJob {
        guard !masker.isEmpty else { return job }
        var job = job
        job.env = job.env.mapValues(masker.mask)
        for index in job.steps.indices {
            job.steps[index].run = masker.mask(job.steps[index].run)
            job.steps[index].env = job.steps[index].env.mapValues(masker.mask)
        }
        job.matrix = job.matrix.mapValues(masker.mask)
        return job
    }

    func makePlan(pipeline: Pipeline, run: RunRecord, options: RunOptions) throws(EngineError) -> RunPlan {
        do {
            return try RunPlan(pipeline: pipeline, selecting: options.targets, matrixContext: baseContext(pipeline: pipeline, run: run, options: options))
        } catch { throw EngineError(error.message) }
    }

    func baseContext(pipeline: Pipeline, run: RunRecord, options: RunOptions) -> ExpressionContext {
        var inputs: [String: ExpressionValue] = [:]
        for input in pipeline.triggers.manualInputs ?? [] { if let value = input.defaultValue { inputs[input.name] = .string(value) } }
        for (name, value) in options.inputs { inputs[name] = .string(value) }
        var env: [String: ExpressionValue] = [:]
        for variable in pipeline.env { env[variable.name] = .string(variable.value) }
        return ExpressionContext(values: [
            "branch": run.branch.map { .string($0) } ?? .null,
            "event": .string(run.event),
            "commit": run.commit.map { .string($0) } ?? .null,
            "run": .object(["id": .number(Double(run.id)), "number": .number(Double(run.number)), "dirty": .bool(run.dirty)]),
            "env": .object(env),
            "secrets": .object(secrets.mapValues { .string($0) }),
            "inputs": .object(inputs),
        ])
    }

    /// The process environment for steps: Slipway's own, minus secrets (steps get secrets only through `${{ secrets.X }}`).
    func stepBaseEnvironment(options: RunOptions) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLIPWAY_") }
        for name in hiddenVariables { environment[name] = nil }
        for (name, value) in options.envOverrides { environment[name] = value }
        return environment
    }

    /// Whether an attempt goes to a remote runner: its job names `runs-on` labels a runner takes, and
    /// it neither deploys nor releases (those stay on the server, which holds the environments and the
    /// signing key).
    /// A job without labels never copies the runner out (a share of a no-op job's turn).
    func runsRemotely(resolved: ResolvedJob, runsOn: [String]) -> Bool {
        guard !runsOn.isEmpty, let remote else { return false }
        return resolved.deployEnvironment == nil && resolved.release == nil && remote.takes(labels: runsOn)
    }

    /// The attempt as remote runners get it, when it goes to one (`runsRemotely`).
    func remoteAttempt(for a: AttemptContext, pipeline: Pipeline, plan: RunPlan) -> RemoteAttempt? {
        guard let job = pipeline.job(a.instance.jobID), runsRemotely(resolved: a.resolved, runsOn: job.runsOn) else { return nil }
        let upstream = job.needs.flatMap { need in plan.instances.filter { $0.jobID == need }.map(\.key) }
        let assignment = RunnerAssignment(
            lease: 0, project: projectName, runID: a.run.id, runNumber: a.run.number, pipelineName: a.run.pipelineName, file: a.run.file,
            event: a.run.event, branch: a.run.branch, commit: a.run.commit, dirty: a.run.dirty, instance: a.instance, attempt: a.attempt,
            resolved: a.resolved, context: a.context, upstream: upstream, maskedValues: Array(secrets.values))
        let control = control
        let key = a.instance.key
        return RemoteAttempt(
            assignment: assignment, labels: job.runsOn, attemptRecord: a.attemptRecord, store: store, layout: layout, sourceDirectory: layout.snapshot(a.run.number),
            upstreamDirectories: upstream.map { layout.artifacts(a.run.number, job: $0) }, artifactsDirectory: layout.artifacts(a.run.number, job: key),
            masker: masker, isCancelled: { control.isCancelled(job: key) })
    }

    /// `jobRows`: the run's job rows when the caller has them (a new run's were just inserted).
    func execute(run: RunRecord, plan: RunPlan, options: RunOptions, previous: [InstanceRecord], jobRows stored: [JobRecord]? = nil) async throws(EngineError) -> RunRecord {
        let started = ContinuousClock.now
        var overrides = plan.pipeline
        // `--env K=V` overrides the pipeline's top-level env.
        for (name, value) in options.envOverrides {
            if let index = overrides.env.firstIndex(where: { $0.name == name }) { overrides.env[index].value = value } else { overrides.env.append(EnvironmentVariable(name: name, value: value)) }
        }
        let pipeline = overrides
        let executor = JobExecutor(store: store, layout: layout, masker: masker, baseEnvironment: StepEnvironment(stepBaseEnvironment(options: options)), live: live, observer: observer, gracePeriod: gracePeriod, control: control, releases: releases, builtins: BuiltinSteps(store: store, releaseStore: releases?.store),
                                   deployments: DeployContext(environments: Dictionary(pipeline.environments.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
                                                              specs: Dictionary(pipeline.jobs.compactMap { job in job.deploy.map { (job.id, $0) } }, uniquingKeysWith: { a, _ in a }),
                                                              agentExecutable: agentExecutable),
                                   workspaces: WorkspacePool(snapshot: layout.snapshot(run.number), root: layout.run(run.number) + "/ws",
                                                             reuse: ProcessInfo.processInfo.environment["SLIPWAY_KEEP_WORKSPACES"] != "1"))
        var jobRows: [String: JobRecord] = [:]
        do {
            jobRows.reserveCapacity(plan.instances.count)
            let rows: [JobRecord]
            if let stored { rows = stored } else { rows = try store.jobs(runID: run.id) }
            for job in rows { jobRows[job.key] = job }
        } catch { throw EngineError(error.message) }
        let machine = RunStateMachine(plan: plan, baseContext: baseContext(pipeline: pipeline, run: run, options: options), parallelism: options.parallelism, previous: previous)
        let driver = RunDriver(engine: self, run: run, plan: plan, options: options, pipeline: pipeline, machine: machine, jobRows: jobRows, executor: executor)
        let finalResult = await driver.drive()
        // Workspaces and the snapshot are only needed while a run can still resume; logs, outputs and
        // artifacts stay. SLIPWAY_KEEP_WORKSPACES=1 keeps them for debugging. The workspaces go while the
        // run's end is written (a resume makes new ones from the snapshot); the snapshot only once it is.
        let keep = ProcessInfo.processInfo.environment["SLIPWAY_KEEP_WORKSPACES"] == "1"
        let workspaces = layout.run(run.number) + "/ws"
        async let removed: Void = { if !keep { try? FileManager.default.removeItem(atPath: workspaces) } }()
        var finished = run
        finished.status = RunStatus(rawValue: finalResult.rawValue) ?? .failure
        finished.finishedAt = Date()
        finished.pid = nil
        do {
            try store.updateRun(id: run.id, status: finished.status, finishedAt: finished.finishedAt, pid: nil,
                                event: RunEventRecord(runID: run.id, jobKey: nil, kind: "run-finished", message: "run #\(run.number) finished: \(finalResult.rawValue)"))
        } catch {
            await removed
            throw EngineError(error.message)
        }
        await removed
        if !keep { try? FileManager.default.removeItem(atPath: layout.snapshot(run.number)) }
        observer?.progress(.runFinished(run: finished, result: finalResult, duration: ContinuousClock.now - started))
        return finished
    }
}
