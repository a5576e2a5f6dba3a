import Foundation
import GRDB
import SlipwayCore

/// The embedded store: one SQLite file in WAL mode, one writer per process (GRDB's DatabaseQueue).
/// `synchronous = NORMAL` in WAL mode survives `kill -9` of the process (the WAL is in the OS page cache);
/// only a power loss can drop the last transactions.
public final class SQLiteRunStore: RunStore {
    let queue: DatabaseQueue

    public init(path: String) throws(StoreError) {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        configuration.journalMode = .wal
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(queue)
        } catch {
            throw StoreError("cannot open the state database \(path): \(error)")
        }
    }

    /// Migrations are frozen once shipped: add new ones, never edit these.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
            CREATE TABLE run (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                number INTEGER NOT NULL UNIQUE,
                pipeline_name TEXT NOT NULL, file TEXT NOT NULL, pipeline_text TEXT NOT NULL,
                event TEXT NOT NULL, branch TEXT, "commit" TEXT, dirty INTEGER NOT NULL,
                status TEXT NOT NULL, workspace TEXT NOT NULL, options TEXT NOT NULL,
                created_at DOUBLE NOT NULL, finished_at DOUBLE, pid INTEGER);
            CREATE TABLE job (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL REFERENCES run(id),
                key TEXT NOT NULL, job_id TEXT NOT NULL, status TEXT NOT NULL,
                allowed_failure INTEGER NOT NULL, reason TEXT, attempts INTEGER NOT NULL,
                outputs TEXT NOT NULL, cache_key TEXT, cache_components TEXT, cache_hit INTEGER NOT NULL,
                definition TEXT, started_at DOUBLE, finished_at DOUBLE,
                UNIQUE(run_id, key));
            CREATE INDEX job_by_job_id ON job(job_id, run_id);
            CREATE TABLE attempt (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_row_id INTEGER NOT NULL REFERENCES job(id),
                number INTEGER NOT NULL, status TEXT NOT NULL, failure TEXT,
                started_at DOUBLE NOT NULL, finished_at DOUBLE);
            CREATE INDEX attempt_by_job ON attempt(job_row_id);
            CREATE TABLE step (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                attempt_id INTEGER NOT NULL REFERENCES attempt(id),
                idx INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                exit_code INTEGER, failure TEXT, log_path TEXT NOT NULL, process_group INTEGER,
                started_at DOUBLE NOT NULL, finished_at DOUBLE);
            CREATE INDEX step_by_attempt ON step(attempt_id);
            CREATE TABLE event (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL REFERENCES run(id),
                at DOUBLE NOT NULL, job_key TEXT, kind TEXT NOT NULL, message TEXT NOT NULL);
            CREATE INDEX event_by_run ON event(run_id);
            CREATE TABLE cache_entry (
                key TEXT PRIMARY KEY, job_key TEXT NOT NULL, components TEXT NOT NULL, outputs TEXT NOT NULL,
                artifacts_path TEXT, artifacts_digest TEXT, run_id INTEGER NOT NULL, created_at DOUBLE NOT NULL);
            CREATE INDEX cache_by_job ON cache_entry(job_key, created_at);
            CREATE TABLE test_result (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL, job_key TEXT NOT NULL, attempt INTEGER NOT NULL,
                test_id TEXT NOT NULL, suite TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
                duration DOUBLE NOT NULL, message TEXT, file TEXT, line INTEGER);
            CREATE INDEX test_by_run ON test_result(run_id);
            CREATE INDEX test_by_id ON test_result(test_id);
            """)
        }
        registerReleaseMigrations(&migrator)
        registerRolloutMigrations(&migrator)
        return migrator
    }

    func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try queue.write(body) } catch { throw StoreError("database write failed: \(error)") }
    }

    func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try queue.read(body) } catch { throw StoreError("database read failed: \(error)") }
    }

    // MARK: Runs

    public func createRun(_ run: RunRecord) throws(StoreError) -> RunRecord {
        try write { db in
            var run = run
            run.number = (try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(number), 0) + 1 FROM run")) ?? 1
            try db.execute(sql: """
                INSERT INTO run (number, pipeline_name, file, pipeline_text, event, branch, "commit", dirty, status, workspace, options, created_at, finished_at, pid)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [run.number, run.pipelineName, run.file, run.pipelineText, run.event, run.branch, run.commit, run.dirty, run.status.rawValue, run.workspace, run.options, run.createdAt.timeIntervalSince1970, run.finishedAt?.timeIntervalSince1970, run.pid])
            run.id = db.lastInsertedRowID
            return run
        }
    }

    public func updateRunDetails(_ run: RunRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE run SET branch = ?, \"commit\" = ?, dirty = ?, workspace = ? WHERE id = ?",
                           arguments: [run.branch, run.commit, run.dirty, run.workspace, run.id])
        }
    }

    public func updateRun(id: Int64, status: RunStatus, finishedAt: Date?, pid: Int32?) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE run SET status = ?, finished_at = ?, pid = ? WHERE id = ?",
                           arguments: [status.rawValue, finishedAt?.timeIntervalSince1970, pid, id])
        }
    }

    static func runRecord(_ row: Row) -> RunRecord {
        RunRecord(id: row["id"], number: row["number"], pipelineName: row["pipeline_name"], file: row["file"], pipelineText: row["pipeline_text"], event: row["event"], branch: row["branch"], commit: row["commit"], dirty: row["dirty"], status: RunStatus(rawValue: row["status"]) ?? .interrupted, workspace: row["workspace"], options: row["options"], createdAt: Date(timeIntervalSince1970: row["created_at"]), finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)), pid: row["pid"])
    }

    public func run(id: Int64) throws(StoreError) -> RunRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM run WHERE id = ?", arguments: [id]).map(Self.runRecord) }
    }

    public func run(number: Int64) throws(StoreError) -> RunRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM run WHERE number = ?", arguments: [number]).map(Self.runRecord) }
    }

    public func runs(limit: Int) throws(StoreError) -> [RunRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM run ORDER BY number DESC LIMIT ?", arguments: [limit]).map(Self.runRecord) }
    }

    public func latestUnfinishedRun() throws(StoreError) -> RunRecord? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM run WHERE status IN ('running', 'interrupted') ORDER BY number DESC LIMIT 1").map(Self.runRecord)
        }
    }

    // MARK: Jobs

    public func insertJobs(_ jobs: [JobRecord]) throws(StoreError) {
        try write { db in
            for job in jobs {
                try db.execute(sql: """
                    INSERT OR IGNORE INTO job (run_id, key, job_id, status, allowed_failure, reason, attempts, outputs, cache_key, cache_components, cache_hit, definition, started_at, finished_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [job.runID, job.key, job.jobID, job.status.rawValue, job.allowedFailure, job.reason, job.attempts, job.outputs, job.cacheKey, job.cacheComponents, job.cacheHit, job.definition, job.startedAt?.timeIntervalSince1970, job.finishedAt?.timeIntervalSince1970])
            }
        }
    }

    public func updateJob(_ job: JobRecord, appending event: RunEventRecord) throws(StoreError) {
        try write { db in
            try Self.update(job, in: db)
            try db.cachedStatement(sql: "INSERT INTO event (run_id, at, job_key, kind, message) VALUES (?, ?, ?, ?, ?)").execute(
                           arguments: [event.runID, event.at.timeIntervalSince1970, event.jobKey, event.kind, event.message])
        }
    }

    public func startAttempt(_ job: JobRecord, appending event: RunEventRecord, attempt: Int) throws(StoreError) -> AttemptRecord {
        try write { db in
            try Self.update(job, in: db)
            try db.cachedStatement(sql: "INSERT INTO event (run_id, at, job_key, kind, message) VALUES (?, ?, ?, ?, ?)").execute(
                           arguments: [event.runID, event.at.timeIntervalSince1970, event.jobKey, event.kind, event.message])
            var record = AttemptRecord(jobRowID: job.id, number: attempt)
            try db.cachedStatement(sql: "INSERT INTO attempt (job_row_id, number, status, failure, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)").execute(
                           arguments: [record.jobRowID, record.number, record.status.rawValue, record.failure, record.startedAt.timeIntervalSince1970, record.finishedAt?.timeIntervalSince1970])
            record.id = db.lastInsertedRowID
            return record
        }
    }

    public func updateJob(_ job: JobRecord) throws(StoreError) {
        try write { db in try Self.update(job, in: db) }
    }

    static func update(_ job: JobRecord, in db: Database) throws {
        do {
            try db.cachedStatement(sql: """
                UPDATE job SET status = ?, allowed_failure = ?, reason = ?, attempts = ?, outputs = ?, cache_key = ?, cache_components = ?, cache_hit = ?, definition = ?, started_at = ?, finished_at = ?
                WHERE run_id = ? AND key = ?
                """).execute(arguments: [job.status.rawValue, job.allowedFailure, job.reason, job.attempts, job.outputs, job.cacheKey, job.cacheComponents, job.cacheHit, job.definition, job.startedAt?.timeIntervalSince1970, job.finishedAt?.timeIntervalSince1970, job.runID, job.key])
        }
    }

    static func jobRecord(_ row: Row) -> JobRecord {
        JobRecord(id: row["id"], runID: row["run_id"], key: row["key"], jobID: row["job_id"], status: WorkStatus(rawValue: row["status"]) ?? .pending, allowedFailure: row["allowed_failure"], reason: row["reason"], attempts: row["attempts"], outputs: row["outputs"], cacheKey: row["cache_key"], cacheComponents: row["cache_components"], cacheHit: row["cache_hit"], definition: row["definition"], startedAt: (row["started_at"] as Double?).map(Date.init(timeIntervalSince1970:)), finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    public func jobs(runID: Int64) throws(StoreError) -> [JobRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM job WHERE run_id = ? ORDER BY id", arguments: [runID]).map(Self.jobRecord) }
    }

    public func latestJobs(jobID: String, limit: Int) throws(StoreError) -> [(RunRecord, JobRecord)] {
        try read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT job.* FROM job JOIN run ON run.id = job.run_id
                WHERE job.job_id = ? OR job.key = ? ORDER BY run.number DESC, job.id LIMIT ?
                """, arguments: [jobID, jobID, limit])
            var result: [(RunRecord, JobRecord)] = []
            for row in rows {
                let job = Self.jobRecord(row)
                if let run = try Row.fetchOne(db, sql: "SELECT * FROM run WHERE id = ?", arguments: [job.runID]).map(Self.runRecord) {
                    result.append((run, job))
                }
            }
            return result
        }
    }

    // MARK: Attempts and steps

    public func insertAttempt(_ attempt: AttemptRecord) throws(StoreError) -> AttemptRecord {
        try write { db in
            try db.cachedStatement(sql: "INSERT INTO attempt (job_row_id, number, status, failure, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)").execute(
                           arguments: [attempt.jobRowID, attempt.number, attempt.status.rawValue, attempt.failure, attempt.startedAt.timeIntervalSince1970, attempt.finishedAt?.timeIntervalSince1970])
            var attempt = attempt
            attempt.id = db.lastInsertedRowID
            return attempt
        }
    }

    public func updateAttempt(_ attempt: AttemptRecord) throws(StoreError) {
        try write { db in
            try db.cachedStatement(sql: "UPDATE attempt SET status = ?, failure = ?, finished_at = ? WHERE id = ?").execute(
                           arguments: [attempt.status.rawValue, attempt.failure, attempt.finishedAt?.timeIntervalSince1970, attempt.id])
        }
    }

    public func attempts(jobRowID: Int64) throws(StoreError) -> [AttemptRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM attempt WHERE job_row_id = ? ORDER BY number", arguments: [jobRowID]).map { row in
                AttemptRecord(id: row["id"], jobRowID: row["job_row_id"], number: row["number"], status: WorkStatus(rawValue: row["status"]) ?? .pending, failure: row["failure"], startedAt: Date(timeIntervalSince1970: row["started_at"]), finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func insertStep(_ step: StepRecord) throws(StoreError) -> StepRecord {
        try write { db in
            try db.cachedStatement(sql: "INSERT INTO step (attempt_id, idx, name, status, exit_code, failure, log_path, process_group, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").execute(
                           arguments: [step.attemptID, step.index, step.name, step.status.rawValue, step.exitCode, step.failure, step.logPath, step.processGroup, step.startedAt.timeIntervalSince1970, step.finishedAt?.timeIntervalSince1970])
            var step = step
            step.id = db.lastInsertedRowID
            return step
        }
    }

    public func updateStep(_ step: StepRecord) throws(StoreError) {
        try write { db in
            try db.cachedStatement(sql: "UPDATE step SET status = ?, exit_code = ?, failure = ?, process_group = ?, finished_at = ? WHERE id = ?").execute(
                           arguments: [step.status.rawValue, step.exitCode, step.failure, step.processGroup, step.finishedAt?.timeIntervalSince1970, step.id])
        }
    }

    static func stepRecord(_ row: Row) -> StepRecord {
        StepRecord(id: row["id"], attemptID: row["attempt_id"], index: row["idx"], name: row["name"], status: WorkStatus(rawValue: row["status"]) ?? .pending, exitCode: row["exit_code"], failure: row["failure"], logPath: row["log_path"], processGroup: row["process_group"], startedAt: Date(timeIntervalSince1970: row["started_at"]), finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    public func steps(attemptID: Int64) throws(StoreError) -> [StepRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM step WHERE attempt_id = ? ORDER BY idx", arguments: [attemptID]).map(Self.stepRecord) }
    }

    public func runningSteps(runID: Int64) throws(StoreError) -> [StepRecord] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT step.* FROM step JOIN attempt ON attempt.id = step.attempt_id JOIN job ON job.id = attempt.job_row_id
                WHERE job.run_id = ? AND step.status = 'running'
                """, arguments: [runID]).map(Self.stepRecord)
        }
    }

    // MARK: Events

    public func appendEvent(_ event: RunEventRecord) throws(StoreError) {
        try write { db in
            try db.cachedStatement(sql: "INSERT INTO event (run_id, at, job_key, kind, message) VALUES (?, ?, ?, ?, ?)").execute(
                           arguments: [event.runID, event.at.timeIntervalSince1970, event.jobKey, event.kind, event.message])
        }
    }

    public func events(runID: Int64) throws(StoreError) -> [RunEventRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM event WHERE run_id = ? ORDER BY id", arguments: [runID]).map { row in
                RunEventRecord(id: row["id"], runID: row["run_id"], at: Date(timeIntervalSince1970: row["at"]), jobKey: row["job_key"], kind: row["kind"], message: row["message"])
            }
        }
    }

    // MARK: Cache

    static func cacheRecord(_ row: Row) -> CacheEntryRecord {
        CacheEntryRecord(key: row["key"], jobKey: row["job_key"], components: row["components"], outputs: row["outputs"], artifactsPath: row["artifacts_path"], artifactsDigest: row["artifacts_digest"], runID: row["run_id"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    public func cacheEntry(key: String) throws(StoreError) -> CacheEntryRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM cache_entry WHERE key = ?", arguments: [key]).map(Self.cacheRecord) }
    }

    public func latestCacheEntry(jobKey: String) throws(StoreError) -> CacheEntryRecord? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM cache_entry WHERE job_key = ? ORDER BY created_at DESC LIMIT 1", arguments: [jobKey]).map(Self.cacheRecord)
        }
    }

    public func putCacheEntry(_ entry: CacheEntryRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO cache_entry (key, job_key, components, outputs, artifacts_path, artifacts_digest, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           arguments: [entry.key, entry.jobKey, entry.components, entry.outputs, entry.artifactsPath, entry.artifactsDigest, entry.runID, entry.createdAt.timeIntervalSince1970])
        }
    }

    // MARK: Tests

    public func insertTestResults(_ results: [TestResultRecord]) throws(StoreError) {
        try write { db in
            for r in results {
                try db.execute(sql: "INSERT INTO test_result (run_id, job_key, attempt, test_id, suite, name, status, duration, message, file, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               arguments: [r.runID, r.jobKey, r.attempt, r.testID, r.suite, r.name, r.status, r.duration, r.message, r.file, r.line])
            }
        }
    }

    public func testResults(runID: Int64) throws(StoreError) -> [TestResultRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM test_result WHERE run_id = ? ORDER BY id", arguments: [runID]).map { row in
                TestResultRecord(runID: row["run_id"], jobKey: row["job_key"], attempt: row["attempt"], testID: row["test_id"], suite: row["suite"], name: row["name"], status: row["status"], duration: row["duration"], message: row["message"], file: row["file"], line: row["line"])
            }
        }
    }

    /// Runs in which this test failed in one attempt and passed in a later attempt of the same job.
    public func flakyCount(testID: String) throws(StoreError) -> Int {
        try read { db in
            try Int.fetchOne(db, sql: """
                SELECT COUNT(DISTINCT f.run_id || '/' || f.job_key) FROM test_result f
                JOIN test_result p ON p.run_id = f.run_id AND p.job_key = f.job_key AND p.test_id = f.test_id AND p.attempt > f.attempt
                WHERE f.test_id = ? AND f.status IN ('failed', 'error') AND p.status = 'passed'
                """, arguments: [testID]) ?? 0
        }
    }
}
