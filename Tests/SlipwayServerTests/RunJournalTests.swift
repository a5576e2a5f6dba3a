import Foundation
import SlipwayTestSupport
import Testing
import GRDB
@testable import SlipwayStore

/// The run store's journal on SQLite (`RunJournal`): the engine's writes go to a file of its process and are
/// applied to the tables in batches. Whatever the batching, every reader sees what a store writing straight to
/// the tables would show, each record is applied once, and what a killed process left is applied on open.
@Suite struct RunJournalTests {
    /// A directory kept for the test's length, with the database path in it.
    final class Directory {
        let path = NSTemporaryDirectory() + "slipway-journal-" + UUID().uuidString
        var database: String { path + "/state.db" }
        var journal: String { database + ".journal" }
        init() throws { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        func journalFiles() -> [String] { ((try? RunJournal.entries(of: journal))?.journals ?? []).sorted() }
    }

    /// SQLite without the journal: the store then writes straight to the tables, as on PostgreSQL.
    final class Unjournaled: SQLDatabase {
        let inner: SQLiteDatabase
        init(path: String) throws { inner = try SQLiteDatabase(path: path) }
        var dialect: SQLDialect { .sqlite }
        func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try inner.write(body) }
        func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try inner.read(body) }
        func migrate(_ migrations: [SQLMigration]) throws(StoreError) { try inner.migrate(migrations) }
    }

    static let t0 = Date(timeIntervalSince1970: 1_790_000_000.5)
    static func at(_ offset: Double) -> Date { Date(timeIntervalSince1970: 1_790_000_000.5 + offset) }

    static func newRun() -> RunRecord {
        RunRecord(pipelineName: "ci", file: "slipway.yml", pipelineText: "jobs: {}\n", event: "push", branch: "main", commit: "abc", dirty: false,
                  workspace: "/tmp/ws", options: "{}", createdAt: t0)
    }

    /// A store whose journal folds only when told (or read), with a run holding one job `a`.
    static func storeWithOneJob(in directory: Directory) throws -> (SQLRunStore, RunRecord, JobRecord) {
        let store = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try store.createRun(newRun())
        try store.insertJobs([JobRecord(runID: run.id, key: "a", jobID: "a")])
        return (store, run, try #require(try store.jobs(runID: run.id).first))
    }

    /// Rows of a table as text, straight from the file (no store, no journal applied).
    static func rows(_ path: String, _ sql: String) throws -> [String] {
        try SQLiteDatabase(path: path).read { (db) throws(StoreError) in
            try db.query(sql, []).map { row in
                row.columns.keys.sorted().map { name in
                    switch row.columns[name]! {
                    case .integer(let number): "\(name)=\(number)"
                    case .text(let text): "\(name)=\(text)"
                    case let other: "\(name)=\(other)"
                    }
                }.joined(separator: " ")
            }
        }
    }

    /// Everything a run's readers see, with the attempts' start stamps (taken with `Date()`) left out.
    static func snapshot(_ store: SQLRunStore, run: Int64) throws -> String {
        var lines: [String] = []
        for job in try store.jobs(runID: run) {
            lines.append("job \(job)")
            for var attempt in try store.attempts(jobRowID: job.id) {
                attempt.startedAt = t0
                lines.append("  attempt \(attempt)")
                for step in try store.steps(attemptID: attempt.id) { lines.append("    step \(step)") }
            }
        }
        for var event in try store.events(runID: run) {
            event.id = 0
            lines.append("event \(event)")
        }
        lines.append("running \(try store.runningSteps(runID: run).map(\.id))")
        return lines.joined(separator: "\n")
    }

    @Test func writesAreSeenAtOnceAndReachTheTablesWithTheirIDs() throws {
        let directory = try Directory()
        var (store, run, job) = try Self.storeWithOneJob(in: directory)
        job.status = .running
        job.attempts = 1
        let started = try store.commit([.startAttempt(job, event: RunEventRecord(runID: run.id, at: Self.at(1), jobKey: "a", kind: "attempt-started", message: "go"),
                                                      attempt: 1, firstStep: StepRecord(attemptID: 0, index: 0, name: "build", logPath: "/l/0", startedAt: Self.at(1)))])
        let step = try #require(started.first?.firstStep)
        // On record in the journal, not yet in the tables.
        #expect(directory.journalFiles().count == 1)
        #expect(try Self.rows(directory.database, "SELECT id FROM step").isEmpty)
        // A read applies it first.
        #expect(try store.runningSteps(runID: run.id) == [step])
        #expect(try Self.rows(directory.database, "SELECT id, attempt_id FROM step") == ["attempt_id=\(step.attemptID) id=\(step.id)"])
        // A row inserted straight to the table gets an id above the block the journal holds.
        let direct = try store.insertAttempt(AttemptRecord(jobRowID: job.id, number: 2))
        #expect(direct.id > step.attemptID + RunJournal.idBlock - 1)
    }

    @Test func anotherStoreSeesALiveJournalAndEachRecordIsAppliedOnce() throws {
        let directory = try Directory()
        let writer = try SQLRunStore(path: directory.database)
        let run = try writer.createRun(Self.newRun())
        for n in 1...5 {
            try writer.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])
        }
        let reader = try SQLRunStore(path: directory.database)
        #expect(try reader.events(runID: run.id).map(\.message) == ["1", "2", "3", "4", "5"])
        try writer.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(6), jobKey: nil, kind: "tick", message: "6"))])
        // The writer applies what the reader has not; neither applies a record twice.
        #expect(try writer.events(runID: run.id).map(\.message) == ["1", "2", "3", "4", "5", "6"])
        #expect(try reader.events(runID: run.id).map(\.message) == ["1", "2", "3", "4", "5", "6"])
        // The writer is alive: its journal stays until it closes, then it is removed.
        #expect(directory.journalFiles().count == 1)
        writer.journal?.close()
        #expect(directory.journalFiles().isEmpty)
        #expect(try Self.rows(directory.database, "SELECT name FROM run_journal_fold").isEmpty)
    }

    /// Random turns written through the journal, applied at random moments, read the same as the same turns
    /// written straight to the tables.
    @Test(arguments: 1...6)
    func theJournalReadsTheSameAsTheTables(seed: UInt64) throws {
        let directory = try Directory()
        let journaled = try SQLRunStore(path: directory.database)
        let plain = try SQLRunStore(database: Unjournaled(path: directory.path + "/plain.db"))
        #expect(journaled.journal != nil && plain.journal == nil)
        var random = SplitMix64(seed: seed)
        let runs = (try journaled.createRun(Self.newRun()).id, try plain.createRun(Self.newRun()).id)
        #expect(runs.0 == runs.1)
        let run = runs.0
        let keys = (0..<8).map { "job\($0)" }
        for store in [journaled, plain] { try store.insertJobs(keys.map { JobRecord(runID: run, key: $0, jobID: $0) }) }
        var jobs = try journaled.jobs(runID: run)
        #expect(jobs == (try plain.jobs(runID: run)))
        var attempts: [Int: AttemptRecord] = [:]
        var steps: [Int: StepRecord] = [:]
        var clock = 1.0
        for _ in 0..<60 {
            clock += 1
            var writes: [RunWrite] = []
            var startedJobs: [Int] = []
            var stepAfter: (job: Int, step: StepRecord)?
            for index in jobs.indices where random.next() % 3 == 0 {
                switch (attempts[index], steps[index]) {
                case (nil, _):
                    jobs[index].status = .running
                    jobs[index].attempts += 1
                    jobs[index].startedAt = Self.at(clock)
                    let first = random.next() % 2 == 0 ? StepRecord(attemptID: 0, index: 0, name: "s0", logPath: "/l/\(index)", startedAt: Self.at(clock)) : nil
                    writes.append(.startAttempt(jobs[index], event: RunEventRecord(runID: run, at: Self.at(clock), jobKey: jobs[index].key, kind: "attempt-started", message: "\(index)"),
                                                attempt: jobs[index].attempts, firstStep: first))
                    startedJobs.append(index)
                case (let attempt?, let step):
                    if var step, step.status == .running {
                        step.status = random.next() % 4 == 0 ? .failure : .success
                        step.exitCode = step.status == .success ? 0 : 1
                        step.processGroup = Int32(100 + index)
                        step.finishedAt = Self.at(clock)
                        steps[index] = step
                        writes.append(.updateStep(step))
                    } else if stepAfter == nil, random.next() % 2 == 0 {
                        stepAfter = (index, StepRecord(attemptID: attempt.id, index: (step?.index ?? -1) + 1, name: "s", logPath: "/l/\(index)", startedAt: Self.at(clock)))
                    } else {
                        var ended = attempt
                        ended.status = .success
                        ended.finishedAt = Self.at(clock)
                        writes.append(.updateAttempt(ended))
                        jobs[index].status = random.next() % 2 == 0 ? .success : .failure
                        jobs[index].finishedAt = Self.at(clock)
                        jobs[index].outputs = #"{"n":"\#(index)"}"#
                        writes.append(.updateJob(jobs[index], event: RunEventRecord(runID: run, at: Self.at(clock), jobKey: jobs[index].key, kind: "job-end", message: "é \(index)")))
                        attempts[index] = nil
                        steps[index] = nil
                    }
                }
            }
            if random.next() % 5 == 0 { writes.append(.appendEvent(RunEventRecord(runID: run, at: Self.at(clock), jobKey: nil, kind: "note", message: "turn \(clock)"))) }
            let results = try [journaled, plain].map { (store) throws -> ([AttemptStart], StepRecord?) in
                if let (_, step) = stepAfter { return ([AttemptStart](), Optional(try store.insertStep(step, after: writes))) }
                return (try store.commit(writes), StepRecord?.none)
            }
            #expect(results[0].1 == results[1].1)
            #expect(results[0].0.map(\.attempt.id) == results[1].0.map(\.attempt.id))
            #expect(results[0].0.map(\.firstStep) == results[1].0.map(\.firstStep))
            for (index, started) in zip(startedJobs, results[0].0) {
                attempts[index] = started.attempt
                steps[index] = started.firstStep
            }
            if let (index, step) = stepAfter { steps[index] = results[0].1 ?? step }
            switch random.next() % 4 {
            case 0: #expect(try Self.snapshot(journaled, run: run) == (try Self.snapshot(plain, run: run)))
            case 1: try journaled.journal?.foldNow()
            default: break
            }
        }
        #expect(try Self.snapshot(journaled, run: run) == (try Self.snapshot(plain, run: run)))
    }

    /// What a killed process left: its whole records are applied when the database is next opened, a record cut
    /// short is left out, and the file is removed.
    @Test func aDeadProcessesJournalIsAppliedOnOpenWithoutItsTornTail() throws {
        let directory = try Directory()
        let run = try SQLRunStore(path: directory.database).createRun(Self.newRun())
        let records = (1...3).map { n in
            RunJournalCodec.record([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])!
        }
        try FileManager.default.createDirectory(atPath: directory.journal, withIntermediateDirectories: true)
        let torn = records[0] + records[1] + records[2].prefix(records[2].count - 3)
        #expect(FileManager.default.createFile(atPath: directory.journal + "/1-dead.log", contents: Data(torn)))
        let store = try SQLRunStore(path: directory.database)
        #expect(try store.events(runID: run.id).map(\.message) == ["1", "2"])
        #expect(directory.journalFiles().isEmpty)
        // Its bookkeeping row goes with the next transaction, and nothing is applied twice.
        #expect(try store.events(runID: run.id).map(\.message) == ["1", "2"])
        #expect(try Self.rows(directory.database, "SELECT name FROM run_journal_fold").isEmpty)
    }

    @Test func aWriteTheTablesRefuseLosesOnlyItself() throws {
        let directory = try Directory()
        let store = try SQLRunStore(path: directory.database)
        let run = try store.createRun(Self.newRun())
        try store.insertJobs([JobRecord(runID: run.id, key: "a", jobID: "a")])
        var job = try #require(try store.jobs(runID: run.id).first)
        var ghost = job
        ghost.id = 999_999
        ghost.key = "gone"
        job.status = .failure
        try store.commit([.updateJob(job, event: RunEventRecord(runID: run.id, at: Self.at(1), jobKey: "a", kind: "job-failure", message: "")),
                          .startAttempt(ghost, event: RunEventRecord(runID: run.id, at: Self.at(1), jobKey: "a", kind: "attempt-started", message: ""), attempt: 1)])
        try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(2), jobKey: nil, kind: "later", message: ""))])
        #expect(try store.jobs(runID: run.id).map(\.status) == [.failure])
        #expect(try store.attempts(jobRowID: ghost.id).isEmpty)
        #expect(try store.events(runID: run.id).map(\.kind) == ["job-failure", "attempt-started", "later"])
    }

    @Test func aJournalFromANewerSlipwayIsAClearError() throws {
        let directory = try Directory()
        _ = try SQLRunStore(path: directory.database)
        var record = RunJournalCodec.record([])!
        record[RunJournalCodec.headerSize] = 9
        let checksum = record.withUnsafeBytes { RunJournalCodec.fnv1a(UnsafeRawBufferPointer(rebasing: $0[RunJournalCodec.headerSize...])) }
        withUnsafeBytes(of: checksum.littleEndian) { record.replaceSubrange(4..<12, with: $0) }
        try FileManager.default.createDirectory(atPath: directory.journal, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: directory.journal + "/2-new.log", contents: Data(record)))
        let error = #expect(throws: StoreError.self) { try SQLRunStore(path: directory.database) }
        #expect(error?.message.contains("newer slipway (format 9)") == true)
        #expect(directory.journalFiles() == ["2-new.log"])
    }

    /// A fold inserts new rows many to a statement (64, 32, … 1 at a time): every row arrives, in order.
    @Test func aLargeFoldInsertsEveryRowInOrder() throws {
        let directory = try Directory()
        let store = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try store.createRun(Self.newRun())
        let keys = (1...71).map { "j\($0)" }
        let jobs = try store.insertJobs(keys.map { JobRecord(runID: run.id, key: $0, jobID: $0) })
        var started: [AttemptStart] = []
        for var job in jobs {
            job.status = .running
            job.attempts = 1
            started += try store.commit([.startAttempt(job, event: RunEventRecord(runID: run.id, at: Self.at(1), jobKey: job.key, kind: "attempt-started", message: job.key),
                                                       attempt: 1, firstStep: StepRecord(attemptID: 0, index: 0, name: job.key, logPath: "/l/\(job.key)", startedAt: Self.at(1)))])
        }
        for n in 1...130 {
            try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])
        }
        #expect(store.journal?.pendingRecords == 201)
        try store.journal?.foldNow()
        #expect(try Self.rows(directory.database, "SELECT count(*) AS n FROM attempt") == ["n=71"])
        #expect(try Self.rows(directory.database, "SELECT count(*) AS n FROM step") == ["n=71"])
        // In the journal's order, across statements and kinds.
        let expected: [String] = keys + (1...130).map { "\($0)" }
        #expect(try store.events(runID: run.id).map(\.message) == expected)
        for start in started {
            let step = try #require(start.firstStep)
            #expect(try store.steps(attemptID: start.attempt.id) == [step])
        }
    }

    /// `applyJournalSoon` has the folder apply what waits without waiting for its batch to fill or its delay.
    @Test func applySoonAppliesWaitingRecordsWithoutTheDelay() throws {
        let directory = try Directory()
        let store = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try store.createRun(Self.newRun())
        for n in 1...3 {
            try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])
        }
        // The folder waits for its batch (or 600 s): nothing reaches the tables by itself.
        Thread.sleep(forTimeInterval: 0.2)
        #expect(try Self.rows(directory.database, "SELECT message FROM event WHERE kind = 'tick'").isEmpty)
        store.applyJournalSoon()
        let deadline = Date().addingTimeInterval(10)
        while store.journal?.pendingRecords != 0, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(store.journal?.pendingRecords == 0)
        #expect(try Self.rows(directory.database, "SELECT message FROM event WHERE kind = 'tick' ORDER BY id") == ["message=1", "message=2", "message=3"])
        // With nothing waiting it is a no-op, and records that come later wait for their batch again.
        store.applyJournalSoon()
        try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(4), jobKey: nil, kind: "tick", message: "4"))])
        Thread.sleep(forTimeInterval: 0.2)
        #expect(store.journal?.pendingRecords == 1)
        #expect(try Self.rows(directory.database, "SELECT message FROM event WHERE kind = 'tick' ORDER BY id") == ["message=1", "message=2", "message=3"])
    }

    /// A row the tables refuse inside a fold of many rows a statement loses only itself; the rows around it,
    /// in the same statements, arrive in order.
    @Test func aRefusedRowInALargeFoldLosesOnlyItself() throws {
        let directory = try Directory()
        var (store, run, ghost) = try Self.storeWithOneJob(in: directory)
        ghost.id = 999_999
        ghost.key = "gone"
        func tick(_ n: Int) throws {
            try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])
        }
        for n in 1...40 { try tick(n) }
        let started = try store.commit([.startAttempt(ghost, event: RunEventRecord(runID: run.id, at: Self.at(41), jobKey: "gone", kind: "attempt-started", message: "ghost"), attempt: 1)])
        for n in 42...70 { try tick(n) }
        #expect(store.journal?.pendingRecords == 70)
        try store.journal?.foldNow()
        #expect(store.journal?.pendingRecords == 0)
        let expected: [String] = (1...40).map { "\($0)" } + ["ghost"] + (42...70).map { "\($0)" }
        #expect(try store.events(runID: run.id).map(\.message) == expected)
        let attempt = try #require(started.first?.attempt)
        #expect(try Self.rows(directory.database, "SELECT count(*) AS n FROM attempt WHERE id = \(attempt.id)") == ["n=0"])
    }

    /// A run's end and its last event are one write: both are there, and the event is the run's last.
    @Test func aRunsEndAndItsEventAreWrittenTogether() throws {
        let directory = try Directory()
        let store = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try store.createRun(Self.newRun())
        try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(1), jobKey: nil, kind: "tick", message: "1"))])
        try store.updateRun(id: run.id, status: .success, finishedAt: Self.at(2), pid: nil,
                            event: RunEventRecord(runID: run.id, at: Self.at(2), jobKey: nil, kind: "run-finished", message: "done"))
        // Straight from the tables: the journal's record was applied in the same transaction.
        #expect(try Self.rows(directory.database, "SELECT kind FROM event ORDER BY id") == ["kind=tick", "kind=run-finished"])
        #expect(try Self.rows(directory.database, "SELECT status FROM run") == ["status=success"])
        let ghost = #expect(throws: StoreError.self) {
            try store.updateRun(id: run.id, status: .failure, finishedAt: nil, pid: nil,
                                event: RunEventRecord(runID: 999_999, at: Self.at(3), jobKey: nil, kind: "run-finished", message: "no such run"))
        }
        #expect(ghost != nil)
        // Refused together: the status did not change either.
        #expect(try Self.rows(directory.database, "SELECT status FROM run") == ["status=success"])
    }

    /// Records another reader applied are not left counted as pending (the folder would wake forever).
    @Test func recordsAppliedByAnotherReaderLeaveNothingPending() throws {
        let directory = try Directory()
        let writer = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try writer.createRun(Self.newRun())
        let reader = try SQLRunStore(path: directory.database)
        for n in 1...5 {
            try writer.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))])
            #expect(try reader.events(runID: run.id).count == n)
        }
        #expect(writer.journal?.pendingRecords == 5)
        try writer.journal?.foldNow()
        #expect(writer.journal?.pendingRecords == 0)
        #expect(writer.journal?.mayHavePending() == false)
    }

    /// A journal directory that cannot be listed is an error, never a silent stale read, and it forgets
    /// nothing of what was applied: once it can be listed again nothing is applied twice.
    @Test func anUnreadableJournalDirectoryIsAnErrorAndForgetsNothing() throws {
        let directory = try Directory()
        let writer = try SQLRunStore(database: SQLiteDatabase(path: directory.database), foldDelay: .seconds(600))
        let run = try writer.createRun(Self.newRun())
        let reader = try SQLRunStore(path: directory.database)
        func tick(_ n: Int) throws { try writer.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(Double(n)), jobKey: nil, kind: "tick", message: "\(n)"))]) }
        for n in 1...3 { try tick(n) }
        #expect(try reader.events(runID: run.id).map(\.message) == ["1", "2", "3"])
        try tick(4)
        try FileManager.default.moveItem(atPath: directory.journal, toPath: directory.path + "/aside")
        #expect(FileManager.default.createFile(atPath: directory.journal, contents: Data("not a directory".utf8)))
        let error = #expect(throws: StoreError.self) { try reader.events(runID: run.id) }
        #expect(error?.message.contains("cannot list the run journals") == true)
        try FileManager.default.removeItem(atPath: directory.journal)
        try FileManager.default.moveItem(atPath: directory.path + "/aside", toPath: directory.journal)
        #expect(try reader.events(runID: run.id).map(\.message) == ["1", "2", "3", "4"])
        #expect(try writer.events(runID: run.id).map(\.message) == ["1", "2", "3", "4"])
    }

    /// A full disk while records are applied fails the transaction; nothing is counted as applied, and the
    /// records are applied once there is room.
    @Test func aFullDiskDuringAFoldLosesNothing() throws {
        let directory = try Directory()
        let sqlite = try SQLiteDatabase(path: directory.database)
        let store = try SQLRunStore(database: sqlite, foldDelay: .seconds(600))
        let run = try store.createRun(Self.newRun())
        let big = String(repeating: "x", count: 200_000)
        try store.commit([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(1), jobKey: nil, kind: "big", message: big))])
        let pages: Int = try sqlite.queue.inDatabase { db in try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0 }
        try sqlite.queue.inDatabase { db in try db.execute(sql: "PRAGMA max_page_count = \(pages)") }
        #expect(throws: StoreError.self) { try store.events(runID: run.id) }
        try sqlite.queue.inDatabase { db in try db.execute(sql: "PRAGMA max_page_count = 1073741823") }
        #expect(try store.events(runID: run.id).map(\.message) == [big])
    }

    /// Zeros at the end of a dead writer's journal (a power loss) are a torn tail; other damage stops the
    /// database from opening with a message that says what to do.
    @Test func zerosEndADeadJournalButOtherDamageIsReported() throws {
        let directory = try Directory()
        let run = try SQLRunStore(path: directory.database).createRun(Self.newRun())
        let record = try #require(RunJournalCodec.record([.appendEvent(RunEventRecord(runID: run.id, at: Self.at(1), jobKey: nil, kind: "tick", message: "1"))]))
        try FileManager.default.createDirectory(atPath: directory.journal, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: directory.journal + "/3-zeros.log", contents: Data(record + [UInt8](repeating: 0, count: 100))))
        #expect(try SQLRunStore(path: directory.database).events(runID: run.id).map(\.message) == ["1"])
        #expect(directory.journalFiles().isEmpty)
        var garbage = record
        garbage[RunJournalCodec.headerSize + 2] ^= 0xff
        #expect(FileManager.default.createFile(atPath: directory.journal + "/4-bad.log", contents: Data(record + garbage)))
        let error = #expect(throws: StoreError.self) { try SQLRunStore(path: directory.database) }
        #expect(error?.message.contains("is damaged") == true)
    }

    @Test func recordsRoundTripAndDamageIsTold() throws {
        let writes: [JournalWrite] = [
            .insertAttempt(AttemptRecord(id: 7, jobRowID: 3, number: 2, status: .running, failure: nil, startedAt: Self.at(1), finishedAt: nil)),
            .insertStep(StepRecord(id: 9, attemptID: 7, index: 1, name: "make ✓", status: .running, exitCode: nil, failure: nil, logPath: "/l", processGroup: -5,
                                   startedAt: Self.at(2), finishedAt: Self.at(3))),
            .updateAttempt(AttemptRecord(id: 7, jobRowID: 3, number: 2, status: .failure, failure: "exit 1", startedAt: Self.at(1), finishedAt: Self.at(4))),
            .updateStep(StepRecord(id: 9, attemptID: 7, index: 1, name: "", status: .success, exitCode: 0, failure: "", logPath: "", startedAt: Self.at(2))),
            .updateJob(JobRecord(id: 3, runID: 1, key: "k (x: 1)", jobID: "k", status: .success, allowedFailure: true, reason: "r", attempts: 2, outputs: "{}",
                                 cacheKey: "c", cacheComponents: nil, cacheHit: true, definition: String(repeating: "d", count: 70_000), startedAt: nil, finishedAt: Self.at(5))),
            .appendEvent(RunEventRecord(id: 0, runID: 1, at: Self.at(6), jobKey: nil, kind: "k", message: "line\nline")),
        ]
        let bytes = try #require(RunJournalCodec.record(writes)) + (try #require(RunJournalCodec.record([])))
        let whole = try RunJournalCodec.records(in: bytes).get()
        #expect(whole.records == [writes, []])
        #expect(whole.length == bytes.count && !whole.damaged)
        for cut in [1, RunJournalCodec.headerSize, bytes.count - RunJournalCodec.headerSize - 1] {
            let parsed = try RunJournalCodec.records(in: Array(bytes.prefix(cut))).get()
            #expect(parsed.records.count <= 1 && !parsed.damaged)
        }
        var flipped = bytes
        flipped[40] ^= 0x20
        let damaged = try RunJournalCodec.records(in: flipped).get()
        #expect(damaged.records.isEmpty && damaged.length == 0 && damaged.damaged)
    }
}
