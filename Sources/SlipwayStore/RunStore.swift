import Foundation
import SlipwayCore

/// Persistence for runs. Every call is durable when it returns: the engine writes before it acts.
public protocol RunStore: Sendable {
    func createRun(_ run: RunRecord) throws(StoreError) -> RunRecord
    /// Rewrites what the snapshot found: commit, branch, dirty flag and workspace.
    func updateRunDetails(_ run: RunRecord) throws(StoreError)
    /// Sets a run's status, with `event` in the same transaction when given.
    func updateRun(id: Int64, status: RunStatus, finishedAt: Date?, pid: Int32?, event: RunEventRecord?) throws(StoreError)
    func run(id: Int64) throws(StoreError) -> RunRecord?
    func run(number: Int64) throws(StoreError) -> RunRecord?
    func runs(limit: Int) throws(StoreError) -> [RunRecord]
    func latestUnfinishedRun() throws(StoreError) -> RunRecord?

    /// Inserts the jobs not there yet (a key already there keeps its row); returns every job as stored.
    @discardableResult
    func insertJobs(_ jobs: [JobRecord]) throws(StoreError) -> [JobRecord]
    func updateJob(_ job: JobRecord) throws(StoreError)
    func jobs(runID: Int64) throws(StoreError) -> [JobRecord]
    func latestJobs(jobID: String, limit: Int) throws(StoreError) -> [(RunRecord, JobRecord)]

    func insertAttempt(_ attempt: AttemptRecord) throws(StoreError) -> AttemptRecord
    func updateAttempt(_ attempt: AttemptRecord) throws(StoreError)
    func attempts(jobRowID: Int64) throws(StoreError) -> [AttemptRecord]

    /// Inserts a step after `writes` (the previous step's end, held back), in one transaction.
    func insertStep(_ step: StepRecord, after writes: [RunWrite]) throws(StoreError) -> StepRecord
    func updateStep(_ step: StepRecord) throws(StoreError)
    func steps(attemptID: Int64) throws(StoreError) -> [StepRecord]
    /// Steps still marked running in a run: what a killed process left behind.
    func runningSteps(runID: Int64) throws(StoreError) -> [StepRecord]

    func appendEvent(_ event: RunEventRecord) throws(StoreError)
    /// Commits `writes` in one transaction, in order; returns the attempts they started, in order.
    @discardableResult
    func commit(_ writes: [RunWrite]) throws(StoreError) -> [AttemptStart]
    func events(runID: Int64) throws(StoreError) -> [RunEventRecord]

    func cacheEntry(key: String) throws(StoreError) -> CacheEntryRecord?
    func latestCacheEntry(jobKey: String) throws(StoreError) -> CacheEntryRecord?
    func putCacheEntry(_ entry: CacheEntryRecord) throws(StoreError)

    func insertTestResults(_ results: [TestResultRecord]) throws(StoreError)
    func testResults(runID: Int64) throws(StoreError) -> [TestResultRecord]
    func flakyCount(testID: String) throws(StoreError) -> Int

    /// A hint that the run's last writes are near: what waits to be applied in batches is applied now.
    func applyJournalSoon()
}

extension RunStore {
    public func updateRun(id: Int64, status: RunStatus, finishedAt: Date?, pid: Int32?) throws(StoreError) {
        try updateRun(id: id, status: status, finishedAt: finishedAt, pid: pid, event: nil)
    }

    /// A store that writes everything at once has nothing to apply.
    public func applyJournalSoon() {}
}

/// An attempt a `RunWrite.startAttempt` recorded, and its first step's row when one was given.
public struct AttemptStart: Sendable {
    public var attempt: AttemptRecord
    public var firstStep: StepRecord?
}

/// One write of the engine's hot path. The engine gathers what one turn of its loop writes (jobs that
/// finished, attempts that start) and commits it at once, and it holds back the end of a step or an
/// attempt (a fact already true that nothing acts on) until its next write: a no-op job costs two
/// commits instead of five. A crash before such a commit loses only ends; the job then runs again, as
/// it does after a crash during its step.
public enum RunWrite: Sendable {
    case updateStep(StepRecord)
    case updateAttempt(AttemptRecord)
    case updateJob(JobRecord, event: RunEventRecord?)
    /// The job row marked running, its event and a new attempt numbered `attempt`, with its first
    /// step's row when the step is known to start (its `attemptID` is filled in).
    case startAttempt(JobRecord, event: RunEventRecord, attempt: Int, firstStep: StepRecord? = nil)
    case appendEvent(RunEventRecord)
}

extension RunStore {
    /// Updates a job and appends an event in one transaction.
    public func updateJob(_ job: JobRecord, appending event: RunEventRecord) throws(StoreError) {
        try commit([.updateJob(job, event: event)])
    }

    /// The job row marked running, its event and the new attempt, in one transaction.
    public func startAttempt(_ job: JobRecord, appending event: RunEventRecord, attempt: Int) throws(StoreError) -> AttemptRecord {
        guard let started = try commit([.startAttempt(job, event: event, attempt: attempt)]).first else { throw StoreError("no attempt was recorded") }
        return started.attempt
    }

    public func insertStep(_ step: StepRecord) throws(StoreError) -> StepRecord {
        try insertStep(step, after: [])
    }

    /// The writes that close what a stopped run left open: its running steps, and the running attempts of
    /// its running or interrupted jobs, marked `status` with the reason given for each.
    public func closingWrites(runID: Int64, as status: WorkStatus, step stepReason: String, attempt attemptReason: String, at now: Date = Date()) throws(StoreError) -> [RunWrite] {
        var writes: [RunWrite] = []
        for var step in try runningSteps(runID: runID) {
            step.status = status
            step.failure = stepReason
            step.finishedAt = now
            writes.append(.updateStep(step))
        }
        for job in try jobs(runID: runID) where job.status == .running || job.status == .interrupted {
            for var attempt in try attempts(jobRowID: job.id) where attempt.status == .running {
                attempt.status = status
                attempt.failure = attemptReason
                attempt.finishedAt = now
                writes.append(.updateAttempt(attempt))
            }
        }
        return writes
    }
}

public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// SQLite's extended result code, when SQLite refused a statement.
    public var sqliteCode: Int32?
    public init(_ message: String, sqliteCode: Int32? = nil) {
        self.message = message
        self.sqliteCode = sqliteCode
    }
    /// A constraint (UNIQUE, FOREIGN KEY, NOT NULL, CHECK) refused the statement: the data, not the database.
    public var isConstraint: Bool { sqliteCode.map { $0 & 0xff == 19 } ?? false }
    public var description: String { message }
}
