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
        let jobsByID = pipeline.jobsByID
        var machine = RunStateMachine(plan: plan, baseContext: baseContext(pipeline: pipeline, run: run, options: options), parallelism: options.parallelism, previous: previous)
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
        let instances = Dictionary(plan.instances.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var finalResult: JobResult = .failure
        var cancelFed = false
        let cacheStore = JobCache(store: store, layout: layout)
        let snapshotIndex = SnapshotIndex(root: layout.snapshot(run.number))

        /// What a turn of the loop does once its writes are committed, in the order the machine asked.
        enum Committed {
            case start(key: String, attempt: Int, reason: String, instance: JobInstance, row: JobRecord, resolved: ResolvedJob, context: ExpressionContext, remotely: Bool)
            case cancel(key: String)
            case finished(RunProgress)
        }

        // The run's tasks and their step processes on one thread of their own (see EngineLoop).
        await EngineLoop.run { await withTaskGroup(of: (String, Int, AttemptOutcome, CacheKey?, [RunWrite]).self) { group in
            var actions = machine.handle(.start)
            var tailApplied = false
            // Attempts' ends (and their last steps'), committed with the first write their outcome leads to.
            var deferred: [RunWrite] = []
            while true {
                // One transaction per turn: the jobs that finished and the attempts that start.
                var writes = deferred
                var committed: [Committed] = []
                for action in actions {
                    switch action {
                    case .startAttempt(let key, let attempt, let reason):
                        guard let instance = instances[key], var row = jobRows[key] else { continue }
                        let context = machine.context(for: instance)
                        var resolved: ResolvedJob
                        var runsOn: [String] = []
                        do {
                            guard let job = jobsByID[instance.jobID] else { throw CoreError("unknown job '\(instance.jobID)'") }
                            runsOn = job.runsOn
                            resolved = try ResolvedJob.resolve(instance, job: job, in: pipeline, context: context)
                            // Step names come from commands, which may hold rendered secrets.
                            for index in resolved.steps.indices { resolved.steps[index].name = masker.mask(resolved.steps[index].name) }
                        } catch {
                            let message = masker.mask((error as? CoreError)?.message ?? "\(error)")
                            group.addTask { (key, attempt, .failed(.error(message), outputs: [:]), nil, []) }
                            continue
                        }
                        row.status = .running
                        row.attempts = attempt
                        row.startedAt = row.startedAt ?? Date()
                        // Mask before encoding: JSON escaping would otherwise hide a secret from the masker.
                        row.definition = String(decoding: Self.masked(resolved, by: masker).canonicalJSON(), as: UTF8.self)
                        row.reason = masker.mask(reason)
                        jobRows[key] = row
                        // Step 0's row goes with the attempt when the step will start here and now.
                        let remotely = runsRemotely(resolved: resolved, runsOn: runsOn)
                        var firstStep: StepRecord?
                        if let step = resolved.steps.first, !(options.useCache && resolved.cacheInputs != nil), !remotely {
                            firstStep = StepRecord(attemptID: 0, index: 0, name: step.name, logPath: layout.log(run.number, job: key, attempt: attempt, step: 0))
                        }
                        writes.append(.startAttempt(row, event: RunEventRecord(runID: run.id, jobKey: key, kind: "attempt-started", message: "attempt \(attempt): \(masker.mask(reason))"), attempt: attempt, firstStep: firstStep))
                        committed.append(.start(key: key, attempt: attempt, reason: reason, instance: instance, row: row, resolved: resolved, context: context, remotely: remotely))
                    case .cancelAttempt(let key, let reason):
                        writes.append(.appendEvent(RunEventRecord(runID: run.id, jobKey: key, kind: "cancel", message: reason)))
                        committed.append(.cancel(key: key))
                    case .finishInstance(let key, let result, let allowed, let reason):
                        guard var row = jobRows[key] else { continue }
                        row.status = WorkStatus(rawValue: result.rawValue) ?? .failure
                        row.allowedFailure = allowed
                        row.reason = masker.mask(reason)
                        row.finishedAt = Date()
                        if let outputs = machine.outputs[key], !outputs.isEmpty {
                            let encoder = JSONEncoder()
                            encoder.outputFormatting = .sortedKeys
                            row.outputs = String(decoding: (try? encoder.encode(outputs)) ?? Data("{}".utf8), as: UTF8.self)
                        } else {
                            row.outputs = "{}"
                        }
                        jobRows[key] = row
                        writes.append(.updateJob(row, event: RunEventRecord(runID: run.id, jobKey: key, kind: "job-\(result.rawValue)", message: row.reason ?? "")))
                        let duration: Duration? = row.startedAt.map { .milliseconds(Int64(Date().timeIntervalSince($0) * 1000)) }
                        committed.append(.finished(.jobFinished(key: key, result: result, allowedFailure: allowed, reason: row.reason ?? "", cacheHit: row.cacheHit, duration: result == .skipped ? nil : duration)))
                    case .finishRun(let result):
                        finalResult = result
                    }
                }
                // When the turn's commit fails, each write is tried on its own, so one bad write loses only
                // itself; an attempt whose start was not recorded writes its own record.
                var startedAttempts: [AttemptStart?] = []
                if let started = try? store.commit(writes) {
                    startedAttempts = started
                } else {
                    for write in writes {
                        let started = try? store.commit([write])
                        if case .startAttempt = write { startedAttempts.append(started?.first) }
                    }
                }
                deferred = []
                var nextStarted = startedAttempts.makeIterator()
                var progress: [RunProgress] = []
                for item in committed {
                    switch item {
                    case .finished(let finished):
                        progress.append(finished)
                    case .cancel(let key):
                        control.cancelJob(key)
                    case .start(let key, let attempt, let reason, let instance, let row, let resolved, let context, let remotely):
                        let started = nextStarted.next() ?? nil
                        let attemptRecord = started?.attempt
                        progress.append(.jobStarted(key: key, attempt: attempt, reason: masker.mask(reason)))
                        let needs = jobsByID[instance.jobID]?.needs ?? []
                        let upstream = needs.flatMap { need in
                            plan.instances.filter { $0.jobID == need }.map { layout.artifacts(run.number, job: $0.key) }
                        }
                        let attemptContext = AttemptContext(run: run, instance: instance, jobRowID: row.id, attempt: attempt, attemptRecord: attemptRecord, firstStep: started?.firstStep, resolved: resolved, context: context, upstreamArtifacts: upstream)
                        let useCache = options.useCache && resolved.cacheInputs != nil
                        // Decided once, with the writes: step 0's row is written only for a local attempt.
                        let remoteAttempt = remotely ? remoteAttempt(for: attemptContext, pipeline: pipeline, plan: plan) : nil
                        let needOutputs = Dictionary(uniqueKeysWithValues: needs.map { need in
                            (need, plan.instances.filter { $0.jobID == need }.map { machine.outputs[$0.key] ?? [:] })
                        })
                        group.addTask {
                            var cacheKey: CacheKey?
                            if useCache {
                                // Hashing inputs and copying artifacts block: off the run's loop.
                                let (computed, restored) = await EngineLoop.offloaded {
                                    let computed = cacheStore.key(for: attemptContext, needOutputs: needOutputs, snapshot: snapshotIndex)
                                    return (computed, cacheStore.restore(key: computed, into: self.layout.artifacts(run.number, job: key)))
                                }
                                cacheKey = computed
                                if let outputs = restored {
                                    var finished: [RunWrite] = []
                                    if var record = attemptRecord {
                                        record.status = .success
                                        record.finishedAt = Date()
                                        finished.append(.updateAttempt(record))
                                    }
                                    return (key, attempt, .cacheHit(outputs: outputs), computed, finished)
                                }
                            }
                            let end = if let remoteAttempt, let remote = self.remote {
                                JobExecutor.AttemptEnd(outcome: await remote.run(remoteAttempt), deferred: [])
                            } else {
                                await executor.runAttempt(attemptContext)
                            }
                            if let cacheKey, case .succeeded(let outputs) = end.outcome {
                                await EngineLoop.offloaded {
                                    cacheStore.save(key: cacheKey, jobKey: key, outputs: outputs, artifacts: self.layout.artifacts(run.number, job: key), runID: run.id)
                                }
                            }
                            return (key, attempt, end.outcome, cacheKey, end.deferred)
                        }
                    }
                }
                if !progress.isEmpty { observer?.progress(batch: progress) }
                if machine.isFinished { break }
                // The run's tail: the journal's batch is applied while the last jobs run, not after them.
                if !tailApplied, !machine.hasPending {
                    tailApplied = true
                    store.applyJournalSoon()
                }
                guard let (key, attempt, outcome, cacheKey, written) = await group.next() else { break }
                deferred += written
                if control.isCancelled, !cancelFed {
                    cancelFed = true
                    actions = machine.handle(.cancelRequested)
                } else {
                    actions = []
                }
                if var row = jobRows[key] {
                    if let cacheKey {
                        row.cacheKey = cacheKey.digest
                        row.cacheComponents = String(decoding: (try? JSONEncoder().encode(cacheKey)) ?? Data(), as: UTF8.self)
                    }
                    if case .cacheHit = outcome { row.cacheHit = true }
                    jobRows[key] = row
                }
                actions += machine.handle(.attemptFinished(key: key, attempt: attempt, outcome: outcome))
            }
        } }
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
