import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayStore
import Synchronization

/// Drives one run's jobs on the engine's lanes (`EngineLoop.run(lanes:)`): a turn — an attempt's end, what the
/// state machine makes of it, its writes, the attempts it starts — runs on the lane where that attempt ran,
/// under one lock, and the lane goes straight on with the first attempt the turn started. On two cores two
/// lanes each take their own steps' ends: a step's end no longer waits for the one thread that did all the
/// bookkeeping, busy on the other core, while its own core idles (bench/RESULTS.md, 2026-11-25).
final class RunDriver: Sendable {
    /// An attempt a turn started, with what its task needs (a class: it is handed on, and an attempt's
    /// context is a large value).
    final class Launch: Sendable {
        let key: String
        let attempt: Int
        /// The job could not be resolved: the attempt fails at once with this.
        let failure: String?
        let context: AttemptContext?
        let useCache: Bool
        let remote: RemoteAttempt?
        let needOutputs: [String: [[String: String]]]

        init(key: String, attempt: Int, failure: String? = nil, context: AttemptContext? = nil, useCache: Bool = false, remote: RemoteAttempt? = nil,
             needOutputs: [String: [[String: String]]] = [:]) {
            self.key = key
            self.attempt = attempt
            self.failure = failure
            self.context = context
            self.useCache = useCache
            self.remote = remote
            self.needOutputs = needOutputs
        }
    }

    /// What an attempt's task hands back to its turn.
    struct Landed: Sendable {
        var key: String
        var attempt: Int
        var outcome: AttemptOutcome
        var cacheKey: CacheKey?
        /// The attempt's held-back writes (its last step's end, its own end), committed with the turn.
        var deferred: [RunWrite]
    }

    struct State {
        var machine: RunStateMachine
        var jobRows: [String: JobRecord]
        var finalResult: JobResult = .failure
        var cancelFed = false
        var tailApplied = false
        /// Attempts running or handed out on each lane.
        var laneLoad: [Int] = []
        /// Tasks that run attempts (a task goes on from attempt to attempt on its lane).
        var runners = 0
        /// Attempts started by turns for the driving task to give a task of their own.
        var unplaced: [Launch] = []
        var done = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    let engine: RunEngine
    let run: RunRecord
    let plan: RunPlan
    let options: RunOptions
    let pipeline: Pipeline
    let jobsByID: JobTable
    let instances: [String: JobInstance]
    let executor: JobExecutor
    let cacheStore: JobCache
    let snapshotIndex: SnapshotIndex
    let state: Mutex<State>

    init(engine: RunEngine, run: RunRecord, plan: RunPlan, options: RunOptions, pipeline: Pipeline, machine: RunStateMachine,
         jobRows: [String: JobRecord], executor: JobExecutor) {
        self.engine = engine
        self.run = run
        self.plan = plan
        self.options = options
        self.pipeline = pipeline
        jobsByID = pipeline.jobsByID
        instances = Dictionary(plan.instances.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        self.executor = executor
        cacheStore = JobCache(store: engine.store, layout: engine.layout)
        snapshotIndex = SnapshotIndex(root: engine.layout.snapshot(run.number))
        state = Mutex(State(machine: machine, jobRows: jobRows))
    }

    /// Runs every job; returns the run's result.
    func drive() async -> JobResult {
        let laneCount = Self.laneCount(parallelism: options.parallelism)
        await EngineLoop.run(lanes: laneCount) { lanes in
            await withDiscardingTaskGroup { group in
                var placed = state.withLock { state -> [(Launch, Int)] in
                    state.laneLoad = Array(repeating: 0, count: max(1, lanes.count))
                    let launches = turn(&state, actions: state.machine.handle(.start), writes: [])
                    if state.machine.isFinished || launches.isEmpty { state.done = true }
                    return Self.place(launches, in: &state)
                }
                while true {
                    for (launch, lane) in placed {
                        let loop = lanes.isEmpty ? nil : lanes[lane]
                        group.addTask(executorPreference: loop) {
                            if let loop {
                                await loop.adopt { await self.runAttempts(from: launch, lane: lane) }
                            } else {
                                await self.runAttempts(from: launch, lane: lane)
                            }
                        }
                    }
                    // Until a turn starts more than its task goes on with, or the run is over.
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        let ready = state.withLock { state -> Bool in
                            guard state.unplaced.isEmpty, !state.done else { return true }
                            state.waiter = continuation
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                    let (more, done) = state.withLock { state -> ([(Launch, Int)], Bool) in
                        defer { state.unplaced = [] }
                        return (Self.place(state.unplaced, in: &state), state.done)
                    }
                    if done, more.isEmpty { break }
                    placed = more
                }
            }
        }
        return state.withLock { $0.finalResult }
    }

    /// One lane per CPU, no more than jobs may run at once; `SLIPWAY_ENGINE_LANES` sets the number (tests use it
    /// to run several lanes on any machine).
    static func laneCount(parallelism: Int) -> Int {
        if let text = ProcessInfo.processInfo.environment["SLIPWAY_ENGINE_LANES"], let count = Int(text), count > 0 { return min(count, 64) }
        return max(1, min(parallelism, ProcessInfo.processInfo.activeProcessorCount, 16))
    }

    /// Gives each launch the least loaded lane, counted as running there (and as a task) from now on, so the
    /// run is not taken for over while launches are on their way to a task.
    private static func place(_ launches: [Launch], in state: inout State) -> [(Launch, Int)] {
        launches.map { launch in
            let lane = state.laneLoad.indices.min { state.laneLoad[$0] < state.laneLoad[$1] } ?? 0
            state.laneLoad[lane] += 1
            state.runners += 1
            return (launch, lane)
        }
    }

    /// A task's attempts on one lane: the one it was started with, then each first attempt its turns start.
    private func runAttempts(from first: Launch, lane: Int) async {
        var next: Launch? = first
        while let launch = next {
            let landed = await perform(launch)
            let waiter: CheckedContinuation<Void, Never>?
            (next, waiter) = state.withLock { state -> (Launch?, CheckedContinuation<Void, Never>?) in
                state.laneLoad[lane] -= 1
                var actions: [RunStateMachine.Action] = []
                if engine.control.isCancelled, !state.cancelFed {
                    state.cancelFed = true
                    actions = state.machine.handle(.cancelRequested)
                }
                if var row = state.jobRows[landed.key] {
                    if let cacheKey = landed.cacheKey {
                        row.cacheKey = cacheKey.digest
                        row.cacheComponents = String(decoding: (try? JSONEncoder().encode(cacheKey)) ?? Data(), as: UTF8.self)
                    }
                    if case .cacheHit = landed.outcome { row.cacheHit = true }
                    state.jobRows[landed.key] = row
                }
                actions += state.machine.handle(.attemptFinished(key: landed.key, attempt: landed.attempt, outcome: landed.outcome))
                var launches = turn(&state, actions: actions, writes: landed.deferred)
                var mine: Launch?
                if !launches.isEmpty {
                    mine = launches.removeFirst()
                    state.laneLoad[lane] += 1
                } else {
                    state.runners -= 1
                }
                state.unplaced += launches
                // Nothing left running and nothing to start: the run is over (or stuck, which ends it too).
                if state.machine.isFinished || (state.runners == 0 && state.unplaced.isEmpty) { state.done = true }
                guard !state.unplaced.isEmpty || state.done, let waiter = state.waiter else { return (mine, nil) }
                state.waiter = nil
                return (mine, waiter)
            }
            waiter?.resume()
        }
    }

    /// One attempt: from the cache, on a remote runner, or here.
    private func perform(_ launch: Launch) async -> Landed {
        guard let attemptContext = launch.context else {
            return Landed(key: launch.key, attempt: launch.attempt, outcome: .failed(.error(launch.failure ?? "the job could not start"), outputs: [:]), deferred: [])
        }
        let key = launch.key, runNumber = run.number, runID = run.id, layout = engine.layout, cacheStore = cacheStore
        var cacheKey: CacheKey?
        if launch.useCache {
            // Hashing inputs and copying artifacts block: off the run's loop.
            let (computed, restored) = await EngineLoop.offloaded {
                let computed = cacheStore.key(for: attemptContext, needOutputs: launch.needOutputs, snapshot: snapshotIndex)
                return (computed, cacheStore.restore(key: computed, into: layout.artifacts(runNumber, job: key)))
            }
            cacheKey = computed
            if let outputs = restored {
                var finished: [RunWrite] = []
                if var record = attemptContext.attemptRecord {
                    record.status = .success
                    record.finishedAt = Date()
                    finished.append(.updateAttempt(record))
                }
                return Landed(key: key, attempt: launch.attempt, outcome: .cacheHit(outputs: outputs), cacheKey: computed, deferred: finished)
            }
        }
        let end = if let remoteAttempt = launch.remote, let remote = engine.remote {
            JobExecutor.AttemptEnd(outcome: await remote.run(remoteAttempt), deferred: [])
        } else {
            await executor.runAttempt(attemptContext)
        }
        if let cacheKey, case .succeeded(let outputs) = end.outcome {
            await EngineLoop.offloaded {
                cacheStore.save(key: cacheKey, jobKey: key, outputs: outputs, artifacts: layout.artifacts(runNumber, job: key), runID: runID)
            }
        }
        return Landed(key: key, attempt: launch.attempt, outcome: end.outcome, cacheKey: cacheKey, deferred: end.deferred)
    }

    /// What a turn does once its writes are committed, in the order the machine asked.
    private enum Committed {
        case start(key: String, attempt: Int, instance: JobInstance, row: JobRecord, resolved: ResolvedJob, context: ExpressionContext, remotely: Bool)
        case failedStart(key: String, attempt: Int, message: String)
        case cancel(key: String)
        case finished(RunProgress)
    }

    /// Carries out the machine's actions: one transaction for the jobs that finished and the attempts that
    /// start (with `writes` held back from before), then the attempts to launch. Called under the lock.
    private func turn(_ state: inout State, actions: [RunStateMachine.Action], writes held: [RunWrite]) -> [Launch] {
        let store = engine.store, masker = engine.masker, layout = engine.layout
        var writes = held
        var committed: [Committed] = []
        for action in actions {
            switch action {
            case .startAttempt(let key, let attempt, let reason):
                guard let instance = instances[key], var row = state.jobRows[key] else { continue }
                let context = state.machine.context(for: instance)
                var resolved: ResolvedJob
                var runsOn: [String] = []
                do {
                    guard let job = jobsByID[instance.jobID] else { throw CoreError("unknown job '\(instance.jobID)'") }
                    runsOn = job.runsOn
                    resolved = try ResolvedJob.resolve(instance, job: job, in: pipeline, context: context)
                    // Step names come from commands, which may hold rendered secrets.
                    for index in resolved.steps.indices { resolved.steps[index].name = masker.mask(resolved.steps[index].name) }
                } catch {
                    committed.append(.failedStart(key: key, attempt: attempt, message: masker.mask((error as? CoreError)?.message ?? "\(error)")))
                    continue
                }
                row.status = .running
                row.attempts = attempt
                row.startedAt = row.startedAt ?? Date()
                // Mask before encoding: JSON escaping would otherwise hide a secret from the masker.
                row.definition = String(decoding: RunEngine.masked(resolved, by: masker).canonicalJSON(), as: UTF8.self)
                let maskedReason = masker.mask(reason)
                row.reason = maskedReason
                state.jobRows[key] = row
                // Step 0's row goes with the attempt when the step will start here and now.
                let remotely = engine.runsRemotely(resolved: resolved, runsOn: runsOn)
                var firstStep: StepRecord?
                if let step = resolved.steps.first, !(options.useCache && resolved.cacheInputs != nil), !remotely {
                    firstStep = StepRecord(attemptID: 0, index: 0, name: step.name, logPath: layout.log(run.number, job: key, attempt: attempt, step: 0))
                }
                writes.append(.startAttempt(row, event: RunEventRecord(runID: run.id, jobKey: key, kind: "attempt-started", message: "attempt \(attempt): \(maskedReason)"), attempt: attempt, firstStep: firstStep))
                committed.append(.start(key: key, attempt: attempt, instance: instance, row: row, resolved: resolved, context: context, remotely: remotely))
            case .cancelAttempt(let key, let reason):
                writes.append(.appendEvent(RunEventRecord(runID: run.id, jobKey: key, kind: "cancel", message: reason)))
                committed.append(.cancel(key: key))
            case .finishInstance(let key, let result, let allowed, let reason):
                guard var row = state.jobRows[key] else { continue }
                row.status = WorkStatus(rawValue: result.rawValue) ?? .failure
                row.allowedFailure = allowed
                row.reason = masker.mask(reason)
                row.finishedAt = Date()
                if let outputs = state.machine.outputs[key], !outputs.isEmpty {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = .sortedKeys
                    row.outputs = String(decoding: (try? encoder.encode(outputs)) ?? Data("{}".utf8), as: UTF8.self)
                } else {
                    row.outputs = "{}"
                }
                state.jobRows[key] = row
                writes.append(.updateJob(row, event: RunEventRecord(runID: run.id, jobKey: key, kind: "job-\(result.rawValue)", message: row.reason ?? "")))
                let duration: Duration? = row.startedAt.map { .milliseconds(Int64(Date().timeIntervalSince($0) * 1000)) }
                committed.append(.finished(.jobFinished(key: key, result: result, allowedFailure: allowed, reason: row.reason ?? "", cacheHit: row.cacheHit, duration: result == .skipped ? nil : duration)))
            case .finishRun(let result):
                state.finalResult = result
            }
        }
        // When the turn's commit fails, each write is tried on its own, so one bad write loses only itself; an
        // attempt whose start was not recorded writes its own record.
        var startedAttempts: [AttemptStart?] = []
        if let started = try? store.commit(writes) {
            startedAttempts = started
        } else {
            for write in writes {
                let started = try? store.commit([write])
                if case .startAttempt = write { startedAttempts.append(started?.first) }
            }
        }
        var nextStarted = startedAttempts.makeIterator()
        var progress: [RunProgress] = []
        var launches: [Launch] = []
        for item in committed {
            switch item {
            case .finished(let finished):
                progress.append(finished)
            case .cancel(let key):
                engine.control.cancelJob(key)
            case .failedStart(let key, let attempt, let message):
                engine.control.clearJob(key)
                launches.append(Launch(key: key, attempt: attempt, failure: message))
            case .start(let key, let attempt, let instance, let row, let resolved, let context, let remotely):
                // A cancel of an earlier attempt (fail-fast) no longer holds; one a later turn sends does, even
                // if it comes before this attempt's task gets going.
                engine.control.clearJob(key)
                let started = nextStarted.next() ?? nil
                progress.append(.jobStarted(key: key, attempt: attempt, reason: row.reason ?? ""))
                let needs = jobsByID[instance.jobID]?.needs ?? []
                let upstream = needs.flatMap { need in
                    plan.instances.filter { $0.jobID == need }.map { layout.artifacts(run.number, job: $0.key) }
                }
                let attemptContext = AttemptContext(run: run, instance: instance, jobRowID: row.id, attempt: attempt, attemptRecord: started?.attempt, firstStep: started?.firstStep, resolved: resolved, context: context, upstreamArtifacts: upstream)
                let useCache = options.useCache && resolved.cacheInputs != nil
                // Decided once, with the writes: step 0's row is written only for a local attempt.
                let remote = remotely ? engine.remoteAttempt(for: attemptContext, pipeline: pipeline, plan: plan) : nil
                var needOutputs: [String: [[String: String]]] = [:]
                if useCache {
                    for need in needs { needOutputs[need] = plan.instances.filter { $0.jobID == need }.map { state.machine.outputs[$0.key] ?? [:] } }
                }
                launches.append(Launch(key: key, attempt: attempt, context: attemptContext, useCache: useCache, remote: remote, needOutputs: needOutputs))
            }
        }
        if !progress.isEmpty { engine.observer?.progress(batch: progress) }
        // The run's tail: the journal's batch is applied while the last jobs run, not after them.
        if !state.tailApplied, !state.machine.hasPending, !state.machine.isFinished {
            state.tailApplied = true
            store.applyJournalSoon()
        }
        return launches
    }
}
