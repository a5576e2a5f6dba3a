/// The final result of a job instance, as shown to users and exposed as `needs.J.result`.
public enum JobResult: String, Sendable, Codable, Equatable {
    case success, failure, cancelled, skipped
}

/// What happened to one attempt of a job instance.
public enum AttemptOutcome: Sendable, Equatable {
    case succeeded(outputs: [String: String])
    case cacheHit(outputs: [String: String])
    case failed(AttemptFailure, outputs: [String: String])
    case cancelled
}

/// The state of a job instance as persisted; used to rebuild the machine on resume.
public struct InstanceRecord: Sendable, Equatable {
    public var key: String
    public var result: JobResult?
    public var allowedFailure: Bool
    public var attempts: Int
    public var outputs: [String: String]
    /// How many of `attempts` ended because their runner was lost (they do not count against `retry.max`,
    /// only against `retry.lost`, across restarts too).
    public var lostAttempts: Int

    public init(key: String, result: JobResult?, allowedFailure: Bool = false, attempts: Int, outputs: [String: String] = [:], lostAttempts: Int = 0) {
        self.key = key
        self.result = result
        self.allowedFailure = allowedFailure
        self.attempts = attempts
        self.outputs = outputs
        self.lostAttempts = lostAttempts
    }
}

/// Decides what runs next. Pure: events in, actions out; the engine performs the actions and
/// persists them before acting (`persist` actions come first in every batch).
public struct RunStateMachine: Sendable {
    public enum Event: Sendable, Equatable {
        case start
        case attemptFinished(key: String, attempt: Int, outcome: AttemptOutcome)
        case cancelRequested
    }

    public enum Action: Sendable, Equatable {
        /// Run attempt `attempt` (1-based) of an instance with this expression context.
        case startAttempt(key: String, attempt: Int, reason: String)
        /// Stop a running attempt (fail-fast or run cancellation).
        case cancelAttempt(key: String, reason: String)
        /// Record a final result for an instance.
        case finishInstance(key: String, result: JobResult, allowedFailure: Bool, reason: String)
        case finishRun(JobResult)
    }

    enum State: Equatable {
        case pending
        case running(attempt: Int)
        case finished(JobResult, allowedFailure: Bool)
    }

    public let plan: RunPlan
    public let baseContext: ExpressionContext
    /// `baseContext` with empty `needs` and `matrix`: a job without either shares its storage (no copy).
    let plainJobContext: ExpressionContext
    public let parallelism: Int
    // Per instance, by its index in `plan.instances`: arrays, not tables keyed by name, so an event costs one
    // lookup of its key rather than one a field.
    var states: [State]
    var attempts: [Int]
    /// Attempts that ended because their runner was lost; they do not count against `retry.max`.
    var lostAttempts: [Int]
    /// Per instance: its job's position in `jobs.jobs`, -1 for a job the pipeline does not have.
    let instanceJob: [Int]
    /// Per instance: it is the first with its key (the others never run; see `init`).
    let canonical: [Bool]
    public private(set) var outputs: [String: [String: String]] = [:]
    var cancelling = false
    var runFinished = false
    /// Instance indices of each job.
    var instancesByJob: [String: [Int]] = [:]
    let ancestors: [String: Set<String>]
    let jobs: JobTable
    let instanceIndex: [String: Int]
    /// Indices into `plan.instances` still pending, in plan order; kept small so a 1000-job DAG
    /// does not rescan finished work after every event.
    var pending: [Int] = []
    /// `pending[..<pendingHead]` are decided: only `pending[pendingHead...]` still wait.
    var pendingHead = 0
    /// How many of `pending` are not plain: once those are passed and the slots are full, the rest can only wait.
    var pendingNotPlain = 0
    /// Per instance: its job has no needs and no `if` (see `schedule`).
    let plainInstances: [Bool]
    var running = 0
    /// Attempts running, per job (by position in `jobs.jobs`).
    var runningByJob: [Int]

    public init(plan: RunPlan, baseContext: ExpressionContext, parallelism: Int, previous: [InstanceRecord] = []) {
        self.plan = plan
        self.baseContext = baseContext
        var plainJobContext = baseContext
        plainJobContext.values["needs"] = .object([:])
        plainJobContext.values["matrix"] = .object([:])
        self.plainJobContext = plainJobContext
        self.parallelism = max(1, parallelism)
        var ancestors: [String: Set<String>] = [:]
        for job in plan.pipeline.jobs { ancestors[job.id] = DAG.ancestors(of: job.id, edges: plan.needs) }
        self.ancestors = ancestors
        let jobs = plan.pipeline.jobsByID
        self.jobs = jobs
        var position: [String: Int] = [:]
        for (index, job) in jobs.jobs.enumerated() where position[job.id] == nil { position[job.id] = index }
        let instanceJob = plan.instances.map { position[$0.jobID] ?? -1 }
        self.instanceJob = instanceJob
        self.plainInstances = instanceJob.map { $0 >= 0 && jobs.jobs[$0].needs.isEmpty && jobs.jobs[$0].condition == nil }
        self.instanceIndex = Dictionary(plan.instances.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { first, _ in first })
        runningByJob = Array(repeating: 0, count: jobs.jobs.count)
        states = Array(repeating: .pending, count: plan.instances.count)
        attempts = Array(repeating: 0, count: plan.instances.count)
        lostAttempts = Array(repeating: 0, count: plan.instances.count)
        // Instances with the same key (a matrix that lists a value twice) are one instance: the first.
        let instanceIndex = self.instanceIndex
        let canonical = plan.instances.indices.map { instanceIndex[plan.instances[$0].key] == $0 }
        self.canonical = canonical
        for (index, instance) in plan.instances.enumerated() where canonical[index] { instancesByJob[instance.jobID, default: []].append(index) }
        for record in previous {
            guard let index = instanceIndex[record.key] else { continue }
            attempts[index] = record.attempts
            lostAttempts[index] = record.lostAttempts
            if let result = record.result {
                states[index] = .finished(result, allowedFailure: record.allowedFailure)
                outputs[record.key] = record.outputs
            }
        }
        let states = states
        pending = plan.instances.indices.filter { canonical[$0] && states[$0] == .pending }
        pendingNotPlain = pending.reduce(0) { $0 + (plainInstances[$1] ? 0 : 1) }
    }

    public var isFinished: Bool { runFinished }
    public var runningCount: Int { running }
    /// Whether some job has still to start or be decided (retries of running jobs aside).
    public var hasPending: Bool { pendingHead < pending.count }

    mutating func setState(_ index: Int, _ state: State) {
        let job = instanceJob[index]
        if case .running = states[index] {
            running -= 1
            if job >= 0 { runningByJob[job] -= 1 }
        }
        if case .running = state {
            running += 1
            if job >= 0 { runningByJob[job] += 1 }
        }
        states[index] = state
    }

    public func result(of key: String) -> JobResult? {
        if let index = instanceIndex[key], case .finished(let result, _) = states[index] { return result }
        return nil
    }

    public mutating func handle(_ event: Event) -> [Action] {
        guard !runFinished else { return [] }
        var actions: [Action] = []
        switch event {
        case .start:
            break
        case .cancelRequested:
            cancelling = true
            // Pending jobs are decided by `schedule()`: cancelled, unless their `if` asks for always().
            for (index, instance) in plan.instances.enumerated() where canonical[index] {
                if case .running = states[index] {
                    actions.append(.cancelAttempt(key: instance.key, reason: "the run was cancelled"))
                }
            }
        case .attemptFinished(let key, let attempt, let outcome):
            guard let index = instanceIndex[key], case .running(let current) = states[index], current == attempt, instanceJob[index] >= 0 else { return [] }
            switch outcome {
            case .succeeded(let produced), .cacheHit(let produced):
                outputs[key] = produced
                setState(index, .finished(.success, allowedFailure: false))
                let reason = if case .cacheHit = outcome { "restored from the cache" } else { "all steps succeeded" }
                actions.append(.finishInstance(key: key, result: .success, allowedFailure: false, reason: reason))
            case .cancelled:
                setState(index, .finished(.cancelled, allowedFailure: false))
                actions.append(.finishInstance(key: key, result: .cancelled, allowedFailure: false, reason: cancelling ? "the run was cancelled" : "cancelled by fail-fast"))
            case .failed(let failure, let produced):
                let job = jobs.jobs[instanceJob[index]]
                if case .runnerLost(let why) = failure, !cancelling, lostAttempts[index] < job.retry.lost {
                    lostAttempts[index] += 1
                    attempts[index] = attempt + 1
                    setState(index, .running(attempt: attempt + 1))
                    actions.append(.startAttempt(key: key, attempt: attempt + 1, reason: "queued again: \(why)"))
                    return actions
                }
                // A lost runner past its `retry.lost` budget fails the job; it does not fall back on `retry.max`.
                var lostRunner = false
                if case .runnerLost = failure { lostRunner = true }
                if !cancelling, !lostRunner, attempt - lostAttempts[index] <= job.retry.max, job.retry.allows(failure) {
                    attempts[index] = attempt + 1
                    setState(index, .running(attempt: attempt + 1))
                    actions.append(.startAttempt(key: key, attempt: attempt + 1, reason: "retry \(attempt - lostAttempts[index]) of \(job.retry.max) after \(failure)"))
                    return actions
                }
                outputs[key] = produced
                let allowed = job.continueOnError
                setState(index, .finished(.failure, allowedFailure: allowed))
                let retried = attempt > 1 ? " after \(attempt) attempts" : ""
                actions.append(.finishInstance(key: key, result: .failure, allowedFailure: allowed, reason: "\(failure)\(retried)" + (allowed ? " (continue-on-error)" : "")))
                if !allowed, job.failFast, job.matrix != nil {
                    for sibling in instancesByJob[job.id] ?? [] where sibling != index {
                        let siblingKey = plan.instances[sibling].key
                        switch states[sibling] {
                        case .running: actions.append(.cancelAttempt(key: siblingKey, reason: "fail-fast: '\(key)' failed"))
                        case .pending:
                            setState(sibling, .finished(.cancelled, allowedFailure: false))
                            actions.append(.finishInstance(key: siblingKey, result: .cancelled, allowedFailure: false, reason: "fail-fast: '\(key)' failed"))
                        default: break
                        }
                    }
                }
            }
        }
        actions.append(contentsOf: schedule())
        return actions
    }

    /// The result of a job across its instances, as `needs.J.result` reports it.
    public func jobResult(_ jobID: String) -> (result: JobResult, allowedFailure: Bool)? {
        var results: [(JobResult, Bool)] = []
        for index in instancesByJob[jobID] ?? [] {
            guard case .finished(let result, let allowed) = states[index] else { return nil }
            results.append((result, allowed))
        }
        if results.isEmpty { return nil }
        if results.contains(where: { $0.0 == .failure && !$0.1 }) { return (.failure, false) }
        if results.contains(where: { $0.0 == .cancelled }) { return (.cancelled, false) }
        if results.contains(where: { $0.0 == .failure }) { return (.success, true) }
        if results.allSatisfy({ $0.0 == .skipped }) { return (.skipped, false) }
        return (.success, false)
    }

    /// Expression context for an instance: base contexts plus `needs` and `matrix`.
    public func context(for instance: JobInstance) -> ExpressionContext {
        var context = plainJobContext
        let needs = jobs[instance.jobID]?.needs ?? []
        if !needs.isEmpty {
            var needsValue: [String: ExpressionValue] = [:]
            for need in needs {
                var merged: [String: ExpressionValue] = [:]
                for sibling in instancesByJob[need] ?? [] {
                    for (name, value) in outputs[plan.instances[sibling].key] ?? [:] { merged[name] = .string(value) }
                }
                let result = jobResult(need)?.result.rawValue ?? "skipped"
                needsValue[need] = .object(["outputs": .object(merged), "result": .string(result)])
            }
            context.values["needs"] = .object(needsValue)
        }
        if let matrix = instance.matrix { context.values["matrix"] = matrix.expressionValue }
        var failed = false, cancelled = false
        for ancestor in ancestors[instance.jobID] ?? [] {
            switch jobResult(ancestor)?.result {
            case .failure?: failed = true
            case .cancelled?: cancelled = true
            default: break
            }
        }
        context.status = JobStatus(anyNeedFailed: failed, anyNeedCancelled: cancelled, runCancelled: cancelling)
        return context
    }

    mutating func schedule() -> [Action] {
        var actions: [Action] = []
        var progressed = true
        while progressed {
            progressed = false
            // The instances passed over that stay pending, in order; they go back just before where the pass
            // stopped, so a pass that starts one job and stops moves a few indices, not the whole list.
            var kept: [Int] = []
            var notPlainSeen = 0, notPlainKept = 0
            var position = pendingHead
            while position < pending.count {
                let index = pending[position]
                // A job with no needs and no `if` can only wait while every slot is taken: skip the
                // lookups, and once no other kind is left, leave the rest where it is, so a 1000-job wide
                // DAG costs a few moves per event, not a pass of dictionaries.
                if running >= parallelism, !cancelling {
                    if notPlainSeen == pendingNotPlain { break }
                    if plainInstances[index] {
                        kept.append(index)
                        position += 1
                        continue
                    }
                }
                position += 1
                if !plainInstances[index] { notPlainSeen += 1 }
                let jobPosition = instanceJob[index]
                guard case .pending = states[index], jobPosition >= 0 else { continue }
                // Wait until every need has a final result.
                var needsOK = true
                var ready = true
                if !plainInstances[index] {
                    for need in jobs.jobs[jobPosition].needs {
                        guard let result = jobResult(need) else { ready = false; break }
                        if result.result != .success { needsOK = false }
                    }
                }
                let limitReached = running >= parallelism || (jobs.jobs[jobPosition].maxParallel.map { runningByJob[jobPosition] >= $0 } ?? false)
                // Without an `if`, a ready job with good needs just waits for a slot: no context needed.
                if !ready || (limitReached && jobs.jobs[jobPosition].condition == nil && needsOK && !cancelling) {
                    kept.append(index)
                    if !plainInstances[index] { notPlainKept += 1 }
                    continue
                }
                let (shouldRun, reason) = decide(jobAt: jobPosition, needsOK: needsOK, instance: index)
                if !shouldRun {
                    let result: JobResult = cancelling ? .cancelled : .skipped
                    setState(index, .finished(result, allowedFailure: false))
                    actions.append(.finishInstance(key: plan.instances[index].key, result: result, allowedFailure: false, reason: reason))
                    progressed = true
                    continue
                }
                if limitReached {
                    kept.append(index)
                    if !plainInstances[index] { notPlainKept += 1 }
                    continue
                }
                let attempt = attempts[index] + 1
                attempts[index] = attempt
                setState(index, .running(attempt: attempt))
                let why = attempt > 1 ? "attempt \(attempt) (the previous attempt was interrupted)" : reason
                actions.append(.startAttempt(key: plan.instances[index].key, attempt: attempt, reason: why))
                progressed = true
            }
            // Every kept index came from pending[pendingHead..<position]: they fit just before `position`.
            let head = position - kept.count
            for (offset, index) in kept.enumerated() { pending[head + offset] = index }
            pendingHead = head
            pendingNotPlain = notPlainKept
        }
        if running == 0, pendingHead == pending.count, states.indices.allSatisfy({ index in
            if !canonical[index] { return true }
            if case .finished = states[index] { return true }
            return false
        }) {
            runFinished = true
            actions.append(.finishRun(overallResult()))
        }
        return actions
    }

    /// Whether a ready job runs, with the reason — GitHub Actions semantics for `if` and status functions.
    func decide(jobAt position: Int, needsOK: Bool, instance index: Int) -> (Bool, String) {
        guard let condition = jobs.jobs[position].condition else {
            if cancelling { return (false, "the run was cancelled") }
            if needsOK { return (true, jobs.jobs[position].needs.isEmpty ? "no needs" : "all needs succeeded") }
            return (false, "skipped because a needed job did not succeed (add `if: ${{ always() }}` to run anyway)")
        }
        if !condition.usesStatusFunction, !needsOK {
            return (false, "skipped because a needed job did not succeed; its `if` has no status function such as always()")
        }
        if cancelling, !condition.usesStatusFunction { return (false, "the run was cancelled") }
        do {
            let value = try condition.evaluate(in: context(for: plan.instances[index]))
            if value.isTruthy { return (true, "`if: \(condition.source)` was true") }
            return (false, "`if: \(condition.source)` was false")
        } catch {
            return (false, "`if: \(condition.source)` could not be evaluated: \(error.message)")
        }
    }

    func overallResult() -> JobResult {
        var sawCancelled = false
        for (index, state) in states.enumerated() where canonical[index] {
            if case .finished(let result, let allowed) = state {
                if result == .failure, !allowed { return .failure }
                if result == .cancelled { sawCancelled = true }
            }
        }
        return sawCancelled || cancelling ? .cancelled : .success
    }
}
