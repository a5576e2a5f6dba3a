import Foundation
import SlipwayCore

/// The run store: runs, jobs, attempts, steps, events, the cache and test results (and, in extensions,
/// releases and rollouts) on a `SQLDatabase`. On SQLite: one file in WAL mode, one writer per process;
/// `synchronous = NORMAL` in WAL mode survives `kill -9` of the process (the WAL is in the OS page cache),
/// only a power loss can drop the last transactions. On PostgreSQL: one schema of a server.
public final class SQLRunStore: RunStore, SQLBackedStore {
    let database: any SQLDatabase
    /// On SQLite, the engine's hot path (`commit`, `insertStep`) goes to a journal applied in batches.
    let journal: RunJournal?

    public convenience init(database: any SQLDatabase) throws(StoreError) {
        try self.init(database: database, foldDelay: .milliseconds(100))
    }

    /// `foldDelay`: how long the journal's records may wait before they are applied, unless more come.
    init(database: any SQLDatabase, foldDelay: DispatchTimeInterval) throws(StoreError) {
        if let sqlite = database as? SQLiteDatabase {
            let journal = RunJournal(database: sqlite, foldDelay: foldDelay)
            self.journal = journal
            self.database = JournaledDatabase(journal: journal)
        } else {
            journal = nil
            self.database = database
        }
        try self.database.migrate(Self.migrations)
        // What killed processes left in their journals is applied before anything is read.
        try journal?.foldNow()
    }

    deinit { journal?.close() }

    public convenience init(path: String) throws(StoreError) {
        try self.init(database: SQLiteDatabase(path: path))
    }

    public var dialect: SQLDialect { database.dialect }

    /// Migrations are frozen once shipped: add new ones, never edit these. Written in SQLite's dialect and
    /// translated for PostgreSQL (`SQLDialect.translateDDL`); existing SQLite databases recorded these
    /// identifiers when they were migrated, so they carry on.
    static let migrations: [SQLMigration] = [v1] + releaseMigrations + rolloutMigrations + [journalMigration]

    /// How far each process's run journal (`RunJournal`) is applied to the tables.
    static let journalMigration = SQLMigration("v4-run-journal", "CREATE TABLE run_journal_fold (name TEXT PRIMARY KEY, applied INTEGER NOT NULL)")

    static let v1 = SQLMigration("v1", """
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

    // MARK: Runs

    public func createRun(_ run: RunRecord) throws(StoreError) -> RunRecord {
        try write { (db) throws(StoreError) in
            var run = run
            // SQLite has one writer at a time; on PostgreSQL, processes sharing the schema take turns here so
            // that two runs never compute the same number.
            if db.dialect == .postgres { try db.execute("LOCK TABLE run IN EXCLUSIVE MODE", []) }
            run.number = try db.queryOne("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM run")?["n"] ?? 1
            run.id = try db.insert("""
                INSERT INTO run (number, pipeline_name, file, pipeline_text, event, branch, "commit", dirty, status, workspace, options, created_at, finished_at, pid)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [run.number, run.pipelineName, run.file, run.pipelineText, run.event, run.branch, run.commit, run.dirty, run.status.rawValue,
                      run.workspace, run.options, run.createdAt, run.finishedAt, run.pid])
            return run
        }
    }

    public func updateRunDetails(_ run: RunRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in
            try db.execute("UPDATE run SET branch = ?, \"commit\" = ?, dirty = ?, workspace = ? WHERE id = ?",
                           [run.branch, run.commit, run.dirty, run.workspace, run.id])
        }
    }

    public func updateRun(id: Int64, status: RunStatus, finishedAt: Date?, pid: Int32?, event: RunEventRecord?) throws(StoreError) {
        let body = { (db: any SQLConnection) throws(StoreError) -> Void in
            try db.execute("UPDATE run SET status = ?, finished_at = ?, pid = ? WHERE id = ?", [status.rawValue, finishedAt, pid, id])
            if let event { try Self.append(event, in: db) }
        }
        if event == nil { try writeOne(body) } else { try write(body) }
    }

    /// Inserts `rows` in order, up to 64 a statement (a thousand-job run's jobs are 16 statements, not a
    /// thousand). Statements are made of 64, 32, … 1 rows, so a table has at most seven shapes in the
    /// connection's statement cache. `onConflict`: an `ON CONFLICT` clause's action. The rows inserted.
    @discardableResult
    static func insertRows(into table: String, _ columns: [String], _ rows: [[any SQLBindable]], onConflict: String? = nil,
                           in db: any SQLConnection) throws(StoreError) -> Int {
        let tuple = "(" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        let head = "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
        let tail = onConflict.map { " ON CONFLICT " + $0 } ?? ""
        var start = 0, inserted = 0
        while start < rows.count {
            var count = 64
            while count > rows.count - start { count /= 2 }
            var arguments: [any SQLBindable] = []
            arguments.reserveCapacity(count * columns.count)
            for row in rows[start..<(start + count)] { arguments += row }
            inserted += try db.execute(head + Array(repeating: tuple, count: count).joined(separator: ", ") + tail, arguments)
            start += count
        }
        return inserted
    }

    /// On SQLite, the run journal's waiting records are applied now rather than with the next batch.
    public func applyJournalSoon() {
        journal?.applySoon()
    }

    static func runRecord(_ row: SQLRow) throws(StoreError) -> RunRecord {
        RunRecord(id: try row.get("id"), number: try row.get("number"), pipelineName: try row.get("pipeline_name"), file: try row.get("file"),
                  pipelineText: try row.get("pipeline_text"), event: try row.get("event"), branch: row["branch"], commit: row["commit"],
                  dirty: try row.get("dirty"), status: RunStatus(rawValue: try row.get("status")) ?? .interrupted, workspace: try row.get("workspace"),
                  options: try row.get("options"), createdAt: try row.get("created_at"), finishedAt: row["finished_at"], pid: row["pid"])
    }

    public func run(id: Int64) throws(StoreError) -> RunRecord? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT * FROM run WHERE id = ?", [id]).map(Self.runRecord) }
    }

    public func run(number: Int64) throws(StoreError) -> RunRecord? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT * FROM run WHERE number = ?", [number]).map(Self.runRecord) }
    }

    public func runs(limit: Int) throws(StoreError) -> [RunRecord] {
        try readOne { (db) throws(StoreError) in try db.query("SELECT * FROM run ORDER BY number DESC LIMIT ?", [limit]).map(Self.runRecord) }
    }

    public func latestUnfinishedRun() throws(StoreError) -> RunRecord? {
        try readOne { (db) throws(StoreError) in
            try db.queryOne("SELECT * FROM run WHERE status IN ('running', 'interrupted') ORDER BY number DESC LIMIT 1").map(Self.runRecord)
        }
    }

    // MARK: Jobs

    @discardableResult
    public func insertJobs(_ jobs: [JobRecord]) throws(StoreError) -> [JobRecord] {
        try write { (db) throws(StoreError) -> [JobRecord] in
            let inserted = try Self.insertRows(
                into: "job", ["run_id", "key", "job_id", "status", "allowed_failure", "reason", "attempts", "outputs", "cache_key", "cache_components", "cache_hit",
                              "definition", "started_at", "finished_at"],
                jobs.map { job in
                    [job.runID, job.key, job.jobID, job.status.rawValue, job.allowedFailure, job.reason, job.attempts, job.outputs, job.cacheKey,
                     job.cacheComponents, job.cacheHit, job.definition, job.startedAt, job.finishedAt] as [any SQLBindable]
                }, onConflict: "DO NOTHING", in: db)
            let kept = inserted < jobs.count
            // New rows are as given but for their ids: two columns read back, not a thousand whole records.
            // A row that was already there (and kept) is read whole.
            var stored: [JobRecord] = []
            stored.reserveCapacity(jobs.count)
            var rowsByRun: [Int64: [String: SQLRow]] = [:]
            for runID in Set(jobs.map(\.runID)) {
                var rows: [String: SQLRow] = [:]
                for row in try db.query(kept ? "SELECT * FROM job WHERE run_id = ?" : "SELECT id, key FROM job WHERE run_id = ?", [runID]) {
                    rows[try row.get("key")] = row
                }
                rowsByRun[runID] = rows
            }
            for job in jobs {
                guard let row = rowsByRun[job.runID]?[job.key] else { throw StoreError("job \(job.key) of run \(job.runID) is missing after its insert") }
                if kept {
                    stored.append(try Self.jobRecord(row))
                } else {
                    var record = job
                    record.id = try row.get("id")
                    stored.append(record)
                }
            }
            return stored
        }
    }

    public func updateJob(_ job: JobRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in try Self.update(job, in: db) }
    }

    static func update(_ job: JobRecord, in db: any SQLConnection) throws(StoreError) {
        try db.execute("""
            UPDATE job SET status = ?, allowed_failure = ?, reason = ?, attempts = ?, outputs = ?, cache_key = ?, cache_components = ?, cache_hit = ?, definition = ?, started_at = ?, finished_at = ?
            WHERE run_id = ? AND key = ?
            """, [job.status.rawValue, job.allowedFailure, job.reason, job.attempts, job.outputs, job.cacheKey, job.cacheComponents, job.cacheHit,
                  job.definition, job.startedAt, job.finishedAt, job.runID, job.key])
    }

    static func jobRecord(_ row: SQLRow) throws(StoreError) -> JobRecord {
        JobRecord(id: try row.get("id"), runID: try row.get("run_id"), key: try row.get("key"), jobID: try row.get("job_id"),
                  status: WorkStatus(rawValue: try row.get("status")) ?? .pending, allowedFailure: try row.get("allowed_failure"), reason: row["reason"],
                  attempts: try row.get("attempts"), outputs: try row.get("outputs"), cacheKey: row["cache_key"], cacheComponents: row["cache_components"],
                  cacheHit: try row.get("cache_hit"), definition: row["definition"], startedAt: row["started_at"], finishedAt: row["finished_at"])
    }

    public func jobs(runID: Int64) throws(StoreError) -> [JobRecord] {
        try readOne { (db) throws(StoreError) in try db.query("SELECT * FROM job WHERE run_id = ? ORDER BY id", [runID]).map(Self.jobRecord) }
    }

    public func latestJobs(jobID: String, limit: Int) throws(StoreError) -> [(RunRecord, JobRecord)] {
        try read { (db) throws(StoreError) in
            let rows = try db.query("""
                SELECT job.* FROM job JOIN run ON run.id = job.run_id
                WHERE job.job_id = ? OR job.key = ? ORDER BY run.number DESC, job.id LIMIT ?
                """, [jobID, jobID, limit])
            var result: [(RunRecord, JobRecord)] = []
            for row in rows {
                let job = try Self.jobRecord(row)
                if let run = try db.queryOne("SELECT * FROM run WHERE id = ?", [job.runID]).map(Self.runRecord) {
                    result.append((run, job))
                }
            }
            return result
        }
    }

    // MARK: Attempts and steps

    static func insert(_ attempt: AttemptRecord, in db: any SQLConnection) throws(StoreError) -> Int64 {
        try db.insert("INSERT INTO attempt (job_row_id, number, status, failure, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                      [attempt.jobRowID, attempt.number, attempt.status.rawValue, attempt.failure, attempt.startedAt, attempt.finishedAt])
    }

    public func insertAttempt(_ attempt: AttemptRecord) throws(StoreError) -> AttemptRecord {
        try writeOne { (db) throws(StoreError) in
            var attempt = attempt
            attempt.id = try Self.insert(attempt, in: db)
            return attempt
        }
    }

    public func updateAttempt(_ attempt: AttemptRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in try Self.update(attempt, in: db) }
    }

    static func update(_ attempt: AttemptRecord, in db: any SQLConnection) throws(StoreError) {
        try db.execute("UPDATE attempt SET status = ?, failure = ?, finished_at = ? WHERE id = ?",
                       [attempt.status.rawValue, attempt.failure, attempt.finishedAt, attempt.id])
    }

    /// Applies `writes` in the caller's transaction; returns the attempts they started.
    static func apply(_ writes: [RunWrite], in db: any SQLConnection) throws(StoreError) -> [AttemptStart] {
        var started: [AttemptStart] = []
        for write in writes {
            switch write {
            case .updateStep(let step): try update(step, in: db)
            case .updateAttempt(let attempt): try update(attempt, in: db)
            case .updateJob(let job, let event):
                try update(job, in: db)
                if let event { try append(event, in: db) }
            case .startAttempt(let job, let event, let number, let firstStep):
                try update(job, in: db)
                try append(event, in: db)
                var record = AttemptRecord(jobRowID: job.id, number: number)
                record.id = try insert(record, in: db)
                var step = firstStep
                if var row = step {
                    row.attemptID = record.id
                    row.id = try insert(row, in: db)
                    step = row
                }
                started.append(AttemptStart(attempt: record, firstStep: step))
            case .appendEvent(let event): try append(event, in: db)
            }
        }
        return started
    }

    @discardableResult
    public func commit(_ writes: [RunWrite]) throws(StoreError) -> [AttemptStart] {
        guard !writes.isEmpty else { return [] }
        if let journal, case .done(let started, _) = try journal.append(writes, step: nil) { return started }
        if writes.count == 1, writes[0].statements == 1 {
            return try writeOne { (db) throws(StoreError) in try Self.apply(writes, in: db) }
        }
        return try write { (db) throws(StoreError) in try Self.apply(writes, in: db) }
    }

    static func attemptRecord(_ row: SQLRow) throws(StoreError) -> AttemptRecord {
        AttemptRecord(id: try row.get("id"), jobRowID: try row.get("job_row_id"), number: try row.get("number"),
                      status: WorkStatus(rawValue: try row.get("status")) ?? .pending, failure: row["failure"], startedAt: try row.get("started_at"),
                      finishedAt: row["finished_at"])
    }

    public func attempts(jobRowID: Int64) throws(StoreError) -> [AttemptRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM attempt WHERE job_row_id = ? ORDER BY number", [jobRowID]).map(Self.attemptRecord)
        }
    }

    public func insertStep(_ step: StepRecord, after writes: [RunWrite]) throws(StoreError) -> StepRecord {
        if let journal, case .done(_, let inserted?) = try journal.append(writes, step: step) { return inserted }
        let body = { (db: any SQLConnection) throws(StoreError) -> StepRecord in
            _ = try Self.apply(writes, in: db)
            var step = step
            step.id = try Self.insert(step, in: db)
            return step
        }
        return writes.isEmpty ? try writeOne(body) : try write(body)
    }

    static func insert(_ step: StepRecord, in db: any SQLConnection) throws(StoreError) -> Int64 {
        try db.insert("""
            INSERT INTO step (attempt_id, idx, name, status, exit_code, failure, log_path, process_group, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [step.attemptID, step.index, step.name, step.status.rawValue, step.exitCode, step.failure, step.logPath, step.processGroup,
                  step.startedAt, step.finishedAt])
    }

    public func updateStep(_ step: StepRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in try Self.update(step, in: db) }
    }

    static func update(_ step: StepRecord, in db: any SQLConnection) throws(StoreError) {
        try db.execute("UPDATE step SET status = ?, exit_code = ?, failure = ?, process_group = ?, started_at = ?, finished_at = ? WHERE id = ?",
                       [step.status.rawValue, step.exitCode, step.failure, step.processGroup, step.startedAt, step.finishedAt, step.id])
    }

    static func stepRecord(_ row: SQLRow) throws(StoreError) -> StepRecord {
        StepRecord(id: try row.get("id"), attemptID: try row.get("attempt_id"), index: try row.get("idx"), name: try row.get("name"),
                   status: WorkStatus(rawValue: try row.get("status")) ?? .pending, exitCode: row["exit_code"], failure: row["failure"],
                   logPath: try row.get("log_path"), processGroup: row["process_group"], startedAt: try row.get("started_at"), finishedAt: row["finished_at"])
    }

    public func steps(attemptID: Int64) throws(StoreError) -> [StepRecord] {
        try readOne { (db) throws(StoreError) in try db.query("SELECT * FROM step WHERE attempt_id = ? ORDER BY idx", [attemptID]).map(Self.stepRecord) }
    }

    public func runningSteps(runID: Int64) throws(StoreError) -> [StepRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("""
                SELECT step.* FROM step JOIN attempt ON attempt.id = step.attempt_id JOIN job ON job.id = attempt.job_row_id
                WHERE job.run_id = ? AND step.status = 'running' ORDER BY step.id
                """, [runID]).map(Self.stepRecord)
        }
    }

    // MARK: Events

    static func append(_ event: RunEventRecord, in db: any SQLConnection) throws(StoreError) {
        try db.execute("INSERT INTO event (run_id, at, job_key, kind, message) VALUES (?, ?, ?, ?, ?)",
                       [event.runID, event.at, event.jobKey, event.kind, event.message])
    }

    public func appendEvent(_ event: RunEventRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in try Self.append(event, in: db) }
    }

    public func events(runID: Int64) throws(StoreError) -> [RunEventRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM event WHERE run_id = ? ORDER BY id", [runID]).map { (row) throws(StoreError) in
                RunEventRecord(id: try row.get("id"), runID: try row.get("run_id"), at: try row.get("at"), jobKey: row["job_key"], kind: try row.get("kind"),
                               message: try row.get("message"))
            }
        }
    }

    // MARK: Cache

    /// For the tables the journal never writes (cache entries, test results): nothing to apply first, so a
    /// run's cache lookups do not turn into write transactions.
    func readUnjournaled<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        if let journal { return try journal.database.read(body) }
        return try readOne(body)
    }

    /// `single`: the body is one statement (PostgreSQL then needs no BEGIN/COMMIT; see `writeOne`).
    func writeUnjournaled<T>(single: Bool = false, _ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        if let journal { return try journal.database.write(body) }
        return single ? try writeOne(body) : try write(body)
    }

    static func cacheRecord(_ row: SQLRow) throws(StoreError) -> CacheEntryRecord {
        CacheEntryRecord(key: try row.get("key"), jobKey: try row.get("job_key"), components: try row.get("components"), outputs: try row.get("outputs"),
                         artifactsPath: row["artifacts_path"], artifactsDigest: row["artifacts_digest"], runID: try row.get("run_id"),
                         createdAt: try row.get("created_at"))
    }

    public func cacheEntry(key: String) throws(StoreError) -> CacheEntryRecord? {
        try readUnjournaled { (db) throws(StoreError) in try db.queryOne("SELECT * FROM cache_entry WHERE key = ?", [key]).map(Self.cacheRecord) }
    }

    public func latestCacheEntry(jobKey: String) throws(StoreError) -> CacheEntryRecord? {
        try readUnjournaled { (db) throws(StoreError) in
            try db.queryOne("SELECT * FROM cache_entry WHERE job_key = ? ORDER BY created_at DESC LIMIT 1", [jobKey]).map(Self.cacheRecord)
        }
    }

    /// Adds the entry or replaces the one with the same key.
    public func putCacheEntry(_ entry: CacheEntryRecord) throws(StoreError) {
        try writeUnjournaled(single: true) { (db) throws(StoreError) -> Void in
            try db.execute("""
                INSERT INTO cache_entry (key, job_key, components, outputs, artifacts_path, artifacts_digest, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (key) DO UPDATE SET job_key = excluded.job_key, components = excluded.components, outputs = excluded.outputs,
                    artifacts_path = excluded.artifacts_path, artifacts_digest = excluded.artifacts_digest, run_id = excluded.run_id, created_at = excluded.created_at
                """, [entry.key, entry.jobKey, entry.components, entry.outputs, entry.artifactsPath, entry.artifactsDigest, entry.runID, entry.createdAt])
        }
    }

    // MARK: Tests

    public func insertTestResults(_ results: [TestResultRecord]) throws(StoreError) {
        try writeUnjournaled { (db) throws(StoreError) -> Void in
            for r in results {
                try db.execute("""
                    INSERT INTO test_result (run_id, job_key, attempt, test_id, suite, name, status, duration, message, file, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, [r.runID, r.jobKey, r.attempt, r.testID, r.suite, r.name, r.status, r.duration, r.message, r.file, r.line])
            }
        }
    }

    public func testResults(runID: Int64) throws(StoreError) -> [TestResultRecord] {
        try readUnjournaled { (db) throws(StoreError) in
            try db.query("SELECT * FROM test_result WHERE run_id = ? ORDER BY id", [runID]).map { (row) throws(StoreError) in
                TestResultRecord(runID: try row.get("run_id"), jobKey: try row.get("job_key"), attempt: try row.get("attempt"), testID: try row.get("test_id"),
                                 suite: try row.get("suite"), name: try row.get("name"), status: try row.get("status"), duration: try row.get("duration"),
                                 message: row["message"], file: row["file"], line: row["line"])
            }
        }
    }

    /// Runs in which this test failed in one attempt and passed in a later attempt of the same job.
    public func flakyCount(testID: String) throws(StoreError) -> Int {
        try readUnjournaled { (db) throws(StoreError) in
            try db.queryOne("""
                SELECT COUNT(*) AS n FROM (
                    SELECT DISTINCT f.run_id, f.job_key FROM test_result f
                    JOIN test_result p ON p.run_id = f.run_id AND p.job_key = f.job_key AND p.test_id = f.test_id AND p.attempt > f.attempt
                    WHERE f.test_id = ? AND f.status IN ('failed', 'error') AND p.status = 'passed') AS flaky
                """, [testID])?["n"] ?? 0
        }
    }
}

extension RunWrite {
    /// How many statements it takes: a single one needs no BEGIN/COMMIT (`writeOne`).
    var statements: Int {
        switch self {
        case .updateJob(_, let event): event == nil ? 1 : 2
        case .startAttempt(_, _, _, let firstStep): firstStep == nil ? 3 : 4
        case .updateStep, .updateAttempt, .appendEvent: 1
        }
    }
}
