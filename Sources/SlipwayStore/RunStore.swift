import Foundation
import SlipwayCore

/// Persistence for runs. Every call is durable when it returns: the engine writes before it acts.
public protocol RunStore: Sendable {
    func createRun(_ run: RunRecord) throws(StoreError) -> RunRecord
    /// Rewrites what the snapshot found: commit, branch, dirty flag and workspace.
    func updateRunDetails(_ run: RunRecord) throws(StoreError)
    func updateRun(id: Int64, status: RunStatus, finishedAt: Date?, pid: Int32?) throws(StoreError)
    func run(id: Int64) throws(StoreError) -> RunRecord?
    func run(number: Int64) throws(StoreError) -> RunRecord?
    func runs(limit: Int) throws(StoreError) -> [RunRecord]
    func latestUnfinishedRun() throws(StoreError) -> RunRecord?

    func insertJobs(_ jobs: [JobRecord]) throws(StoreError)
    func updateJob(_ job: JobRecord) throws(StoreError)
    /// Updates a job and appends an event in one transaction (one commit instead of two on the hot path).
    func updateJob(_ job: JobRecord, appending event: RunEventRecord) throws(StoreError)
    func jobs(runID: Int64) throws(StoreError) -> [JobRecord]
    func latestJobs(jobID: String, limit: Int) throws(StoreError) -> [(RunRecord, JobRecord)]

    func insertAttempt(_ attempt: AttemptRecord) throws(StoreError) -> AttemptRecord
    /// The job row marked running, its event and the new attempt, in one transaction.
    func startAttempt(_ job: JobRecord, appending event: RunEventRecord, attempt: Int) throws(StoreError) -> AttemptRecord
    func updateAttempt(_ attempt: AttemptRecord) throws(StoreError)
    func attempts(jobRowID: Int64) throws(StoreError) -> [AttemptRecord]

    func insertStep(_ step: StepRecord) throws(StoreError) -> StepRecord
    func updateStep(_ step: StepRecord) throws(StoreError)
    func steps(attemptID: Int64) throws(StoreError) -> [StepRecord]
    /// Steps still marked running in a run: what a killed process left behind.
    func runningSteps(runID: Int64) throws(StoreError) -> [StepRecord]

    func appendEvent(_ event: RunEventRecord) throws(StoreError)
    func events(runID: Int64) throws(StoreError) -> [RunEventRecord]

    func cacheEntry(key: String) throws(StoreError) -> CacheEntryRecord?
    func latestCacheEntry(jobKey: String) throws(StoreError) -> CacheEntryRecord?
    func putCacheEntry(_ entry: CacheEntryRecord) throws(StoreError)

    func insertTestResults(_ results: [TestResultRecord]) throws(StoreError)
    func testResults(runID: Int64) throws(StoreError) -> [TestResultRecord]
    func flakyCount(testID: String) throws(StoreError) -> Int
}

public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
