import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore
import Synchronization

/// Hands jobs with `runs-on` labels to remote runners and keeps track of them: a queue of attempts,
/// runners long-polling for work (a job is handed to a waiting runner the moment it is queued), leases
/// with heartbeats, and fencing — a report naming a lease the broker has taken back is refused.
///
/// State lives in `RunnerBrokerState` behind a lock; continuations are resumed after the lock is let go.
public final class RunnerBroker: RemoteJobRunner, Sendable {
    public struct Settings: Sendable {
        /// A runner not heard from for this long is lost, and its attempts queued again.
        public var heartbeatTimeout: Duration
        /// Labels the server's own executor has: jobs whose `runs-on` it covers run on the server unless a
        /// connected runner matches them.
        public var localLabels: Set<String>

        public init(heartbeatTimeout: Duration = .seconds(5), localLabels: Set<String> = ["local", "linux"]) {
            self.heartbeatTimeout = heartbeatTimeout
            self.localLabels = localLabels
        }
    }

    public let settings: Settings
    let state: Mutex<RunnerBrokerState>
    let clock = ContinuousClock()

    public init(settings: Settings = Settings()) {
        self.settings = settings
        self.state = Mutex(RunnerBrokerState(timeout: settings.heartbeatTimeout))
    }

    // MARK: engine side

    public func takes(labels: [String]) -> Bool {
        let wanted = Set(labels)
        if !settings.localLabels.isSuperset(of: wanted) { return true }
        let now = clock.now
        return state.withLock { $0.hasLiveRunner(matching: wanted, now: now) }
    }

    public func run(_ attempt: RemoteAttempt) async -> AttemptOutcome {
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<AttemptOutcome, Never>) in
            let now = clock.now
            let handOff = state.withLock { $0.enqueue(attempt, continuation, now: now) }
            if let handOff { deliver(handOff) }
        }
        return outcome
    }

    // MARK: runner side

    public struct RunnerInfo: Sendable, Codable, Equatable {
        public var name: String
        public var labels: [String]
        public var capacity: Int
        public init(name: String, labels: [String], capacity: Int) {
            self.name = name
            self.labels = labels
            self.capacity = capacity
        }
    }

    /// Waits up to `wait` for an attempt this runner can take; nil when none came.
    public func lease(_ runner: RunnerInfo, wait: Duration) async -> RunnerAssignment? {
        let id = state.withLock { $0.nextWaiterID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<RunnerAssignment?, Never>) in
                let now = clock.now
                let handOff = state.withLock { $0.wait(id: id, runner: runner, continuation, deadline: now + wait, now: now) }
                if let handOff { deliver(handOff) }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.removeWaiter(id: id) }
            waiter?.resume(returning: nil)
        }
    }

    public struct HeartbeatReply: Sendable, Codable, Equatable {
        /// Leases the runner must stop: the run or job was cancelled.
        public var cancel: [Int64]
        /// Leases the runner must drop at once: taken back (it was thought lost), or never known.
        public var unknown: [Int64]
    }

    public func heartbeat(_ runner: RunnerInfo, leases: [Int64]) -> HeartbeatReply {
        let now = clock.now
        let (reply, forgotten) = state.withLock { $0.heartbeat(runner, leases: leases, now: now) }
        settle(forgotten)
        return reply
    }

    /// Lost leases end as `.runnerLost`: the engine queues them again (or fails them, per `retry.lost`).
    private func settle(_ lost: [RunnerBrokerState.Lost]) {
        for item in lost {
            let outcome = AttemptOutcome.failed(.runnerLost(item.reason), outputs: [:])
            try? item.attempt.store.appendEvent(RunEventRecord(runID: item.attempt.assignment.runID, jobKey: item.attempt.assignment.jobKey, kind: "runner-lost", message: item.reason))
            Self.record(item.attempt, outcome: outcome, tests: [])
            item.continuation.resume(returning: outcome)
        }
    }

    /// The attempt a lease is for, when the lease is current and held by `runner` (nil for anyone).
    public func attempt(lease: Int64, runner: String? = nil) -> RemoteAttempt? {
        let now = clock.now
        return state.withLock { $0.current(lease: lease, runner: runner, now: now) }
    }

    /// Ends a lease with the runner's result; false when the lease is no longer current (fenced).
    public func complete(lease: Int64, runner: String?, result: RunnerAttemptResult) -> Bool {
        guard let (attempt, continuation) = state.withLock({ $0.finish(lease: lease, runner: runner) }) else { return false }
        let outcome = result.outcome(declaredOutputs: attempt.assignment.resolved.outputs, masker: attempt.masker)
        Self.record(attempt, outcome: outcome, tests: result.tests)
        continuation.resume(returning: outcome)
        return true
    }

    /// Looks after queued and leased attempts until cancelled: cancellations, lost runners, long polls
    /// that ran out.
    public func run() async {
        while !Task.isCancelled {
            sweep()
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    /// One pass of the watchdog.
    func sweep() {
        let now = clock.now
        var cancelled: [(RemoteAttempt, CheckedContinuation<AttemptOutcome, Never>)] = []
        let (expired, lost) = state.withLock { state -> ([CheckedContinuation<RunnerAssignment?, Never>], [RunnerBrokerState.Lost]) in
            cancelled = state.removeCancelledPending()
            state.flagCancelledLeases()
            let silent = state.loseSilentRunners(now: now)
            return (state.expireWaiters(now: now) + silent.dropped, silent.lost)
        }
        for continuation in expired { continuation.resume(returning: nil) }
        for (attempt, continuation) in cancelled {
            Self.record(attempt, outcome: .cancelled, tests: [])
            continuation.resume(returning: .cancelled)
        }
        settle(lost)
    }

    private func deliver(_ handOff: RunnerBrokerState.HandOff) {
        try? handOff.attempt.store.appendEvent(RunEventRecord(runID: handOff.assignment.runID, jobKey: handOff.assignment.jobKey, kind: "leased",
                                                              message: "attempt \(handOff.assignment.attempt) leased to runner '\(handOff.runner)' (lease \(handOff.assignment.lease))"))
        handOff.waiter.resume(returning: handOff.assignment)
    }

    /// Ends the attempt's row and any step the runner left running, as the local executor does.
    static func record(_ attempt: RemoteAttempt, outcome: AttemptOutcome, tests: [TestResultRecord]) {
        let store = attempt.store
        if !tests.isEmpty {
            try? store.insertTestResults(tests.map { test in
                var test = test
                test.runID = attempt.assignment.runID
                test.jobKey = attempt.assignment.jobKey
                test.attempt = attempt.assignment.attempt
                test.message = test.message.map(attempt.masker.mask)
                return test
            })
        }
        guard var record = attempt.attemptRecord else { return }
        for var step in (try? store.steps(attemptID: record.id)) ?? [] where step.status == .running {
            step.status = .interrupted
            step.failure = "the attempt ended while this step ran"
            step.finishedAt = Date()
            try? store.updateStep(step)
        }
        record.finishedAt = Date()
        switch outcome {
        case .succeeded, .cacheHit: record.status = .success
        case .cancelled: record.status = .cancelled
        case .failed(let failure, _):
            record.status = .failure
            record.failure = attempt.masker.mask(failure.description)
        }
        try? store.updateAttempt(record)
    }

    // MARK: views

    public struct RunnerView: Sendable, Codable, Equatable {
        public var name: String
        public var labels: [String]
        public var capacity: Int
        public var leases: [Int64]
        public var secondsSinceSeen: Double
        public var online: Bool
    }

    public struct Snapshot: Sendable, Codable, Equatable {
        public var runners: [RunnerView]
        /// Attempts waiting for a runner, as "project #run job".
        public var queued: [String]
        public var leases: Int
        public var lostTotal: Int
        public var dispatchedTotal: Int
    }

    public func snapshot() -> Snapshot {
        let now = clock.now
        return state.withLock { $0.snapshot(now: now) }
    }
}

/// The broker's state: pure bookkeeping, no I/O; the broker acts on what its methods return.
struct RunnerBrokerState {
    struct Pending {
        var attempt: RemoteAttempt
        var continuation: CheckedContinuation<AttemptOutcome, Never>
        var queuedAt: ContinuousClock.Instant
    }

    struct Lease {
        var attempt: RemoteAttempt
        var continuation: CheckedContinuation<AttemptOutcome, Never>
        var runner: String
        var grantedAt: ContinuousClock.Instant
        var cancelRequested = false
    }

    struct Runner {
        var info: RunnerBroker.RunnerInfo
        var lastSeen: ContinuousClock.Instant
        var online = true
    }

    struct Waiter {
        var id: Int
        var runner: RunnerBroker.RunnerInfo
        var continuation: CheckedContinuation<RunnerAssignment?, Never>
        var deadline: ContinuousClock.Instant
    }

    struct HandOff {
        var waiter: CheckedContinuation<RunnerAssignment?, Never>
        var assignment: RunnerAssignment
        var attempt: RemoteAttempt
        var runner: String
    }

    struct Lost {
        var attempt: RemoteAttempt
        var continuation: CheckedContinuation<AttemptOutcome, Never>
        var reason: String
    }

    let timeout: Duration
    var pending: [Pending] = []
    var leases: [Int64: Lease] = [:]
    var runners: [String: Runner] = [:]
    var waiters: [Waiter] = []
    var waiterSequence = 0
    var lostTotal = 0
    var dispatchedTotal = 0
    /// Lease ids are random, so a runner from before a restart cannot hit a lease of the new process.
    var generator = SystemRandomNumberGenerator()

    init(timeout: Duration) { self.timeout = timeout }

    static func matches(_ runner: RunnerBroker.RunnerInfo, _ attempt: RemoteAttempt) -> Bool {
        Set(runner.labels).isSuperset(of: attempt.labels)
    }

    func hasLiveRunner(matching labels: Set<String>, now: ContinuousClock.Instant) -> Bool {
        runners.values.contains { $0.online && now - $0.lastSeen < timeout && Set($0.info.labels).isSuperset(of: labels) }
    }

    mutating func nextWaiterID() -> Int {
        waiterSequence += 1
        return waiterSequence
    }

    mutating func touch(_ info: RunnerBroker.RunnerInfo, now: ContinuousClock.Instant) {
        runners[info.name] = Runner(info: info, lastSeen: now)
    }

    /// Queues an attempt, or hands it at once to a waiting runner that matches.
    mutating func enqueue(_ attempt: RemoteAttempt, _ continuation: CheckedContinuation<AttemptOutcome, Never>, now: ContinuousClock.Instant) -> HandOff? {
        if let index = waiters.firstIndex(where: { waiter in
            Self.matches(waiter.runner, attempt) && isLive(waiter.runner.name, now: now) && activeLeases(of: waiter.runner.name) < max(1, waiter.runner.capacity)
        }) {
            let waiter = waiters.remove(at: index)
            return grant(attempt, continuation, to: waiter.runner, waiter: waiter.continuation, now: now)
        }
        pending.append(Pending(attempt: attempt, continuation: continuation, queuedAt: now))
        return nil
    }

    /// A runner asks for work: the oldest queued attempt it matches, or it waits.
    mutating func wait(id: Int, runner: RunnerBroker.RunnerInfo, _ continuation: CheckedContinuation<RunnerAssignment?, Never>, deadline: ContinuousClock.Instant, now: ContinuousClock.Instant) -> HandOff? {
        touch(runner, now: now)
        if activeLeases(of: runner.name) < max(1, runner.capacity), let index = pending.firstIndex(where: { Self.matches(runner, $0.attempt) }) {
            let item = pending.remove(at: index)
            return grant(item.attempt, item.continuation, to: runner, waiter: continuation, now: now)
        }
        waiters.append(Waiter(id: id, runner: runner, continuation: continuation, deadline: deadline))
        return nil
    }

    mutating func removeWaiter(id: Int) -> CheckedContinuation<RunnerAssignment?, Never>? {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return waiters.remove(at: index).continuation
    }

    func isLive(_ name: String, now: ContinuousClock.Instant) -> Bool {
        guard let runner = runners[name] else { return false }
        return runner.online && now - runner.lastSeen < timeout
    }

    func activeLeases(of runner: String) -> Int { leases.values.count { $0.runner == runner } }

    mutating func grant(_ attempt: RemoteAttempt, _ continuation: CheckedContinuation<AttemptOutcome, Never>, to runner: RunnerBroker.RunnerInfo, waiter: CheckedContinuation<RunnerAssignment?, Never>, now: ContinuousClock.Instant) -> HandOff {
        var id: Int64 = 0
        while id == 0 || leases[id] != nil { id = Int64.random(in: 1...(1 << 53), using: &generator) }
        var assignment = attempt.assignment
        assignment.lease = id
        leases[id] = Lease(attempt: attempt, continuation: continuation, runner: runner.name, grantedAt: now)
        runners[runner.name]?.lastSeen = now
        dispatchedTotal += 1
        return HandOff(waiter: waiter, assignment: assignment, attempt: attempt, runner: runner.name)
    }

    /// A heartbeat also settles leases the runner no longer reports (it restarted, or never got the
    /// assignment) once they are older than the timeout.
    mutating func heartbeat(_ runner: RunnerBroker.RunnerInfo, leases reported: [Int64], now: ContinuousClock.Instant) -> (RunnerBroker.HeartbeatReply, [Lost]) {
        touch(runner, now: now)
        var reply = RunnerBroker.HeartbeatReply(cancel: [], unknown: [])
        for id in reported {
            guard let lease = leases[id], lease.runner == runner.name else {
                reply.unknown.append(id)
                continue
            }
            if lease.cancelRequested { reply.cancel.append(id) }
        }
        let known = Set(reported)
        var forgotten: [Lost] = []
        for (id, lease) in leases where lease.runner == runner.name && !known.contains(id) && now - lease.grantedAt >= timeout {
            leases[id] = nil
            lostTotal += 1
            forgotten.append(Lost(attempt: lease.attempt, continuation: lease.continuation,
                                  reason: "runner '\(runner.name)' no longer runs lease \(id) of attempt \(lease.attempt.assignment.attempt) (it restarted or never got it)"))
        }
        return (reply, forgotten)
    }

    func current(lease id: Int64, runner: String?, now: ContinuousClock.Instant) -> RemoteAttempt? {
        guard let lease = leases[id], runner == nil || lease.runner == runner else { return nil }
        return lease.attempt
    }

    mutating func finish(lease id: Int64, runner: String?) -> (RemoteAttempt, CheckedContinuation<AttemptOutcome, Never>)? {
        guard let lease = leases[id], runner == nil || lease.runner == runner else { return nil }
        leases[id] = nil
        return (lease.attempt, lease.continuation)
    }

    mutating func removeCancelledPending() -> [(RemoteAttempt, CheckedContinuation<AttemptOutcome, Never>)] {
        var removed: [(RemoteAttempt, CheckedContinuation<AttemptOutcome, Never>)] = []
        pending.removeAll { item in
            guard item.attempt.isCancelled() else { return false }
            removed.append((item.attempt, item.continuation))
            return true
        }
        return removed
    }

    mutating func flagCancelledLeases() {
        for (id, lease) in leases where !lease.cancelRequested && lease.attempt.isCancelled() { leases[id]?.cancelRequested = true }
    }

    mutating func expireWaiters(now: ContinuousClock.Instant) -> [CheckedContinuation<RunnerAssignment?, Never>] {
        var expired: [CheckedContinuation<RunnerAssignment?, Never>] = []
        waiters.removeAll { waiter in
            guard waiter.deadline <= now else { return false }
            expired.append(waiter.continuation)
            return true
        }
        return expired
    }

    /// Runners silent for longer than the timeout are offline; their leases are taken back and their
    /// long polls answered (a live runner heartbeats while it polls, so a silent one is gone).
    mutating func loseSilentRunners(now: ContinuousClock.Instant) -> (lost: [Lost], dropped: [CheckedContinuation<RunnerAssignment?, Never>]) {
        var lost: [Lost] = []
        var dropped: [CheckedContinuation<RunnerAssignment?, Never>] = []
        for (name, runner) in runners where runner.online && now - runner.lastSeen >= timeout {
            runners[name]?.online = false
            waiters.removeAll { waiter in
                guard waiter.runner.name == name else { return false }
                dropped.append(waiter.continuation)
                return true
            }
            let silence = Double((now - runner.lastSeen).components.seconds) + Double((now - runner.lastSeen).components.attoseconds) / 1e18
            for (id, lease) in leases where lease.runner == name {
                leases[id] = nil
                lostTotal += 1
                lost.append(Lost(attempt: lease.attempt, continuation: lease.continuation,
                                 reason: String(format: "runner '%@' was lost (no heartbeat for %.1f s) while running attempt %d", name, silence, lease.attempt.assignment.attempt)))
            }
        }
        return (lost, dropped)
    }

    func snapshot(now: ContinuousClock.Instant) -> RunnerBroker.Snapshot {
        let views = runners.values.sorted { $0.info.name < $1.info.name }.map { runner in
            let seen = now - runner.lastSeen
            return RunnerBroker.RunnerView(name: runner.info.name, labels: runner.info.labels, capacity: runner.info.capacity,
                                           leases: leases.filter { $0.value.runner == runner.info.name }.keys.sorted(),
                                           secondsSinceSeen: Double(seen.components.seconds) + Double(seen.components.attoseconds) / 1e18,
                                           online: runner.online && seen < timeout)
        }
        let queued = pending.map { "\($0.attempt.assignment.project) #\($0.attempt.assignment.runNumber) \($0.attempt.assignment.jobKey)" }
        return .init(runners: views, queued: queued, leases: leases.count, lostTotal: lostTotal, dispatchedTotal: dispatchedTotal)
    }
}
