import Foundation
import Testing
@testable import SlipwayStore

/// The run store (runs, jobs, attempts, steps, events, cache, tests, releases, rollouts) against every
/// database it runs on (SQLite always; PostgreSQL when `SLIPWAY_TEST_POSTGRES` names one): the same calls
/// must give the same answers. Dates have exact binary fractions so that they round-trip exactly.
@Suite struct RunStoreDatabaseTests {
    typealias Fixture = TestDatabase.Fixture<SQLRunStore>

    static let t0 = Date(timeIntervalSince1970: 1_790_000_000.5)
    static func at(_ offset: Double) -> Date { Date(timeIntervalSince1970: 1_790_000_000.5 + offset) }

    static func run(_ name: String = "ci", created: Date = t0) -> RunRecord {
        RunRecord(pipelineName: name, file: "slipway.yml", pipelineText: "jobs: {}\n", event: "push", branch: "main", commit: "abc123",
                  dirty: true, workspace: "/tmp/ws", options: #"{"parallelism":2}"#, createdAt: created, pid: 4242)
    }

    @Test(arguments: TestDatabase.dialects)
    func migrationsRunOnceAndAReopenedStoreSeesTheSameData(_ dialect: SQLDialect) throws {
        let fixture = try Fixture(dialect) { try SQLRunStore(database: $0) }
        #expect(fixture.store.dialect == dialect)
        let created = try fixture.store.createRun(Self.run())
        let reopened = try SQLRunStore(database: fixture.location.open())
        #expect(try reopened.run(id: created.id) == created)
        let applied = try reopened.database.read { (db) throws(StoreError) in
            try db.query(dialect == .sqlite ? "SELECT identifier FROM grdb_migrations ORDER BY identifier" : "SELECT identifier FROM slipway_migrations ORDER BY identifier", [])
                .map { (row) throws(StoreError) -> String in try row.get("identifier") }
        }
        #expect(applied == ["v1", "v2-releases", "v3-rollouts", "v4-run-journal"])
        #expect(SQLRunStore.migrations.map(\.identifier) == ["v1", "v2-releases", "v3-rollouts", "v4-run-journal"])
    }

    /// The engine's batched writes: a turn's ends and starts in one commit, step 0's row with its attempt, a
    /// step's end riding on the next step's row, and a batch that fails part-way leaving nothing behind.
    @Test(arguments: TestDatabase.dialects)
    func batchedWritesCommitTogetherOrNotAtAll(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try SQLRunStore(database: $0) }.store
        let run = try store.createRun(Self.run())
        try store.insertJobs([JobRecord(runID: run.id, key: "a", jobID: "a"), JobRecord(runID: run.id, key: "b", jobID: "b")])
        let jobs = try store.jobs(runID: run.id)
        func event(_ key: String, _ kind: String, _ at: Double) -> RunEventRecord {
            RunEventRecord(runID: run.id, at: Self.at(at), jobKey: key, kind: kind, message: "\(key) \(kind)")
        }

        // Turn 1: a starts, with its first step's row.
        var a = jobs[0]
        a.status = .running
        a.attempts = 1
        a.startedAt = Self.at(1)
        let first = try store.commit([.startAttempt(a, event: event("a", "attempt-started", 1), attempt: 1,
                                                    firstStep: StepRecord(attemptID: 0, index: 0, name: "make", logPath: "/logs/a.0.log", startedAt: Self.at(1)))])
        #expect(first.count == 1)
        let attemptA = try #require(first.first).attempt
        let step0 = try #require(first.first?.firstStep)
        #expect(attemptA.jobRowID == a.id)
        #expect(step0.attemptID == attemptA.id)
        #expect(step0.id > 0)
        #expect(try store.steps(attemptID: attemptA.id) == [step0])
        #expect(try store.runningSteps(runID: run.id) == [step0])

        // Step 0's end, held back, goes in with step 1's row.
        var done0 = step0
        done0.status = .success
        done0.exitCode = 0
        done0.processGroup = 4321
        done0.finishedAt = Self.at(2)
        let step1 = try store.insertStep(StepRecord(attemptID: attemptA.id, index: 1, name: "test", logPath: "/logs/a.1.log", startedAt: Self.at(2)), after: [.updateStep(done0)])
        #expect(try store.steps(attemptID: attemptA.id) == [done0, step1])

        // Turn 2: a's ends (step, attempt, job) and b's start, in one commit.
        var done1 = step1
        done1.startedAt = Self.at(2.5)  // an end also carries the real start (step 0's row is written before it)
        done1.status = .success
        done1.exitCode = 0
        done1.finishedAt = Self.at(3)
        var finishedA = attemptA
        finishedA.status = .success
        finishedA.finishedAt = Self.at(3)
        var succeededA = a
        succeededA.status = .success
        succeededA.finishedAt = Self.at(3)
        var b = jobs[1]
        b.status = .running
        b.attempts = 1
        b.startedAt = Self.at(3)
        let second = try store.commit([.updateStep(done1), .updateAttempt(finishedA), .updateJob(succeededA, event: event("a", "job-success", 3)),
                                       .startAttempt(b, event: event("b", "attempt-started", 3), attempt: 1)])
        #expect(second.count == 1)
        #expect(second.first?.attempt.jobRowID == b.id)
        #expect(second.first?.firstStep == nil)
        #expect(try store.steps(attemptID: attemptA.id) == [done0, done1])
        #expect(try store.runningSteps(runID: run.id).isEmpty)
        var storedA = try #require(try store.attempts(jobRowID: a.id).first)
        storedA.startedAt = finishedA.startedAt  // stamped with Date(): round-trips to the microsecond only
        #expect(storedA == finishedA)
        #expect(try store.jobs(runID: run.id) == [succeededA, b])

        // A batch that fails part-way (an attempt for a job row that does not exist) leaves nothing of itself.
        var failedB = b
        failedB.status = .failure
        failedB.finishedAt = Self.at(4)
        var ghost = b
        ghost.id = 999_999
        #expect(throws: StoreError.self) {
            try store.commit([.updateJob(failedB, event: event("b", "job-failure", 4)), .startAttempt(ghost, event: event("b", "attempt-started", 4), attempt: 2)])
        }
        #expect(try store.jobs(runID: run.id) == [succeededA, b])
        #expect(try store.events(runID: run.id).map(\.kind) == ["attempt-started", "job-success", "attempt-started"])
        #expect(try store.commit([]).isEmpty)
    }

    @Test func doubleBecomesDoublePrecisionOnPostgres() {
        let ddl = "a DOUBLE NOT NULL, b DOUBLE, c REAL, d DOUBLE PRECISION, e INTEGER, f BLOB, g DOUBLED"
        #expect(SQLDialect.postgres.translateDDL(ddl)
            == "a DOUBLE PRECISION NOT NULL, b DOUBLE PRECISION, c DOUBLE PRECISION, d DOUBLE PRECISION, e BIGINT, f BYTEA, g DOUBLED")
        #expect(SQLDialect.sqlite.translateDDL(ddl) == ddl)
    }

    @Test(arguments: TestDatabase.dialects)
    func runsJobsAttemptsStepsAndEvents(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try SQLRunStore(database: $0) }.store

        // Runs are numbered 1, 2, … and come back as written.
        let first = try store.createRun(Self.run())
        let second = try store.createRun(Self.run("nightly", created: Self.at(60)))
        #expect(first.number == 1)
        #expect(second.number == 2)
        #expect(second.id > first.id)
        var expected = Self.run()
        expected.id = first.id
        expected.number = 1
        #expect(first == expected)
        #expect(try store.run(id: first.id) == first)
        #expect(try store.run(number: 2) == second)
        #expect(try store.run(number: 3) == nil)
        #expect(try store.runs(limit: 10) == [second, first])
        #expect(try store.runs(limit: 1) == [second])
        #expect(try store.latestUnfinishedRun() == second)

        var details = first
        details.branch = nil
        details.commit = "def456"
        details.dirty = false
        details.workspace = "/tmp/ws2"
        try store.updateRunDetails(details)
        #expect(try store.run(id: first.id) == details)

        try store.updateRun(id: second.id, status: .success, finishedAt: Self.at(120), pid: nil)
        var finished = second
        finished.status = .success
        finished.finishedAt = Self.at(120)
        finished.pid = nil
        #expect(try store.run(id: second.id) == finished)
        #expect(try store.latestUnfinishedRun() == details)
        try store.updateRun(id: first.id, status: .interrupted, finishedAt: nil, pid: Int32.max)
        #expect(try store.latestUnfinishedRun()?.pid == Int32.max)
        try store.updateRun(id: first.id, status: .failure, finishedAt: Self.at(30), pid: nil)
        #expect(try store.latestUnfinishedRun() == nil)

        // Jobs: inserting the same keys twice keeps the first rows.
        let build = JobRecord(runID: first.id, key: "build", jobID: "build", definition: "{}")
        let test = JobRecord(runID: first.id, key: "test[os=linux]", jobID: "test", allowedFailure: true, reason: "matrix")
        let inserted = try store.insertJobs([build, test])
        // What the insert returns is what is stored, and a kept row comes back as it was, not as offered.
        #expect(try inserted == store.jobs(runID: first.id))
        let again = try store.insertJobs([build, JobRecord(runID: first.id, key: "test[os=linux]", jobID: "other")])
        #expect(again == inserted)
        var jobs = try store.jobs(runID: first.id)
        #expect(jobs.count == 2)
        #expect(jobs.map(\.key) == ["build", "test[os=linux]"])
        var expectedBuild = build
        expectedBuild.id = jobs[0].id
        #expect(jobs[0] == expectedBuild)
        var expectedTest = test
        expectedTest.id = jobs[1].id
        #expect(jobs[1] == expectedTest)
        try store.insertJobs([JobRecord(runID: second.id, key: "build", jobID: "build")])
        #expect(try store.jobs(runID: second.id).count == 1)

        // The engine's hot path.
        var running = jobs[0]
        running.status = .running
        running.attempts = 1
        running.startedAt = Self.at(1)
        let attempt = try store.startAttempt(running, appending: RunEventRecord(runID: first.id, at: Self.at(1), jobKey: "build", kind: "job", message: "started"), attempt: 1)
        #expect(attempt.id > 0)
        #expect(attempt.jobRowID == running.id)
        #expect(attempt.number == 1)
        #expect(attempt.status == .running)
        // startAttempt stamps the attempt with Date(), which round-trips only to the microsecond.
        var storedAttempt = try #require(try store.attempts(jobRowID: running.id).first)
        #expect(abs(storedAttempt.startedAt.timeIntervalSince(attempt.startedAt)) < 0.001)
        storedAttempt.startedAt = attempt.startedAt
        #expect(storedAttempt == attempt)
        #expect(try store.attempts(jobRowID: running.id).count == 1)
        #expect(try store.jobs(runID: first.id)[0] == running)

        let step0 = try store.insertStep(StepRecord(attemptID: attempt.id, index: 0, name: "checkout", logPath: "/logs/0.log", processGroup: 777, startedAt: Self.at(2)))
        let step1 = try store.insertStep(StepRecord(attemptID: attempt.id, index: 1, name: "compile", logPath: "/logs/1.log", processGroup: 778, startedAt: Self.at(3)))
        #expect(step1.id > step0.id)
        #expect(try store.steps(attemptID: attempt.id) == [step0, step1])
        #expect(try store.runningSteps(runID: first.id) == [step0, step1])
        #expect(try store.runningSteps(runID: second.id).isEmpty)

        var done0 = step0
        done0.status = .success
        done0.exitCode = 0
        done0.processGroup = nil
        done0.finishedAt = Self.at(2.5)
        try store.updateStep(done0)
        var failed1 = step1
        failed1.status = .failure
        failed1.exitCode = -9
        failed1.failure = "killed"
        failed1.finishedAt = Self.at(4.25)
        try store.updateStep(failed1)
        #expect(try store.steps(attemptID: attempt.id) == [done0, failed1])
        #expect(try store.runningSteps(runID: first.id).isEmpty)

        var failedAttempt = attempt
        failedAttempt.status = .failure
        failedAttempt.failure = "step compile failed"
        failedAttempt.finishedAt = Self.at(5)
        try store.updateAttempt(failedAttempt)
        let retry = try store.insertAttempt(AttemptRecord(jobRowID: running.id, number: 2, startedAt: Self.at(6)))
        #expect(retry.id > attempt.id)
        var attempts = try store.attempts(jobRowID: running.id)
        #expect(attempts.count == 2)
        attempts[0].startedAt = attempt.startedAt
        #expect(attempts == [failedAttempt, retry])

        var succeeded = running
        succeeded.status = .success
        succeeded.attempts = 2
        succeeded.outputs = #"{"version":"1.2.3"}"#
        succeeded.cacheKey = "k1"
        succeeded.cacheComponents = "[]"
        succeeded.cacheHit = true
        succeeded.finishedAt = Self.at(7.75)
        try store.updateJob(succeeded, appending: RunEventRecord(runID: first.id, at: Self.at(7.75), jobKey: "build", kind: "job", message: "success"))
        var skipped = jobs[1]
        skipped.status = .skipped
        skipped.reason = nil
        try store.updateJob(skipped)
        jobs = try store.jobs(runID: first.id)
        #expect(jobs == [succeeded, skipped])
        #expect(jobs[0].outputValues == ["version": "1.2.3"])

        try store.appendEvent(RunEventRecord(runID: first.id, at: Self.at(8), jobKey: nil, kind: "run", message: "failure"))
        try store.appendEvent(RunEventRecord(runID: second.id, at: Self.at(9), jobKey: nil, kind: "run", message: "other run"))
        let events = try store.events(runID: first.id)
        #expect(events.map(\.message) == ["started", "success", "failure"])
        #expect(events.map(\.id) == events.map(\.id).sorted())
        #expect(events[0] == RunEventRecord(id: events[0].id, runID: first.id, at: Self.at(1), jobKey: "build", kind: "job", message: "started"))
        #expect(events[2] == RunEventRecord(id: events[2].id, runID: first.id, at: Self.at(8), jobKey: nil, kind: "run", message: "failure"))

        // History of a job: newest run first, by job id or key.
        let history = try store.latestJobs(jobID: "build", limit: 10)
        #expect(history.map(\.0.number) == [2, 1])
        #expect(history[1].1 == succeeded)
        #expect(history[1].0 == (try store.run(id: first.id)))
        #expect(try store.latestJobs(jobID: "build", limit: 1).map(\.0.number) == [2])
        #expect(try store.latestJobs(jobID: "test[os=linux]", limit: 10).map(\.1.key) == ["test[os=linux]"])
        #expect(try store.latestJobs(jobID: "test", limit: 10).map(\.1.key) == ["test[os=linux]"])
        #expect(try store.latestJobs(jobID: "nothing", limit: 10).isEmpty)
    }

    @Test(arguments: TestDatabase.dialects)
    func cacheAndTestResults(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try SQLRunStore(database: $0) }.store
        let run = try store.createRun(Self.run())

        let entry = CacheEntryRecord(key: "k1", jobKey: "build", components: #"{"a":1}"#, outputs: "{}", artifactsPath: "/cache/k1", artifactsDigest: "d1",
                                     runID: run.id, createdAt: Self.at(1))
        try store.putCacheEntry(entry)
        #expect(try store.cacheEntry(key: "k1") == entry)
        #expect(try store.cacheEntry(key: "k2") == nil)
        // The same key again replaces the entry.
        let replaced = CacheEntryRecord(key: "k1", jobKey: "build", components: #"{"a":2}"#, outputs: #"{"x":"y"}"#, artifactsPath: nil, artifactsDigest: nil,
                                        runID: run.id, createdAt: Self.at(2))
        try store.putCacheEntry(replaced)
        #expect(try store.cacheEntry(key: "k1") == replaced)
        let other = CacheEntryRecord(key: "k2", jobKey: "build", components: "{}", outputs: "{}", artifactsPath: "/cache/k2", artifactsDigest: "d2",
                                     runID: run.id, createdAt: Self.at(3))
        try store.putCacheEntry(other)
        #expect(try store.latestCacheEntry(jobKey: "build") == other)
        try store.putCacheEntry(CacheEntryRecord(key: "k1", jobKey: "build", components: "{}", outputs: "{}", artifactsPath: nil, artifactsDigest: nil,
                                                 runID: run.id, createdAt: Self.at(4)))
        #expect(try store.latestCacheEntry(jobKey: "build")?.key == "k1")
        #expect(try store.latestCacheEntry(jobKey: "test") == nil)

        // Test results; flaky = failed in one attempt and passed in a later one of the same job, per run.
        func result(_ run: Int64, _ job: String, _ attempt: Int, _ test: String, _ status: String) -> TestResultRecord {
            TestResultRecord(runID: run, jobKey: job, attempt: attempt, testID: test, suite: "Suite", name: test, status: status, duration: 0.125,
                             message: status == "passed" ? nil : "boom", file: status == "passed" ? nil : "a.swift", line: status == "passed" ? nil : 42)
        }
        let second = try store.createRun(Self.run(created: Self.at(10)))
        let firstResults = [result(run.id, "test", 1, "T.a", "failed"), result(run.id, "test", 2, "T.a", "passed"),
                            result(run.id, "test", 1, "T.b", "passed"), result(run.id, "lint", 1, "T.a", "error"),
                            result(run.id, "lint", 3, "T.a", "passed")]
        try store.insertTestResults(firstResults)
        try store.insertTestResults([result(second.id, "test", 1, "T.a", "error"), result(second.id, "test", 2, "T.a", "passed"),
                                     result(second.id, "test", 1, "T.b", "failed")])
        #expect(try store.testResults(runID: run.id) == firstResults)
        #expect(try store.testResults(runID: second.id).count == 3)
        #expect(try store.testResults(runID: 999).isEmpty)
        #expect(try store.flakyCount(testID: "T.a") == 3)
        #expect(try store.flakyCount(testID: "T.b") == 0)
        #expect(try store.flakyCount(testID: "T.none") == 0)
    }

    @Test(arguments: TestDatabase.dialects)
    func releasesDeploymentsAndFindings(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try SQLRunStore(database: $0) }.store
        let run = try store.createRun(Self.run())
        func release(_ name: String, _ version: String, digest: String = "sha-1", created: Date = Self.t0) -> ReleaseRecord {
            ReleaseRecord(name: name, version: version, digest: digest, size: 5_000_000_000, kind: "file", commit: "abc", runID: run.id, runNumber: run.number,
                          job: "release", createdAt: created, keyID: "key1", envelopePath: "/rel/\(name)-\(version).dsse", envelopeDigest: "env",
                          sbomDigest: nil, pipelineDigest: "pipe")
        }
        let (created, isNew) = try store.recordRelease(release("shop", "1.0.0"))
        #expect(isNew)
        #expect(created.id > 0)
        var expected = release("shop", "1.0.0")
        expected.id = created.id
        #expect(created == expected)
        let (again, isNewAgain) = try store.recordRelease(release("shop", "1.0.0", created: Self.at(99)))
        #expect(!isNewAgain)
        #expect(again == created)
        do throws(StoreError) {
            _ = try store.recordRelease(release("shop", "1.0.0", digest: "sha-2"))
            Issue.record("another digest for a released version must be refused")
        } catch {
            #expect(error.message.contains("already released") && error.message.contains("bump the version"))
        }
        var withSBOM = release("shop", "1.1.0", created: Self.at(10))
        withSBOM.sbomDigest = "sbom"
        withSBOM.commit = nil
        let (newer, _) = try store.recordRelease(withSBOM)
        let (api, _) = try store.recordRelease(release("api", "0.1.0", created: Self.at(5)))
        #expect(try store.release(name: "shop", version: "1.1.0") == newer)
        #expect(newer.sbomDigest == "sbom")
        #expect(try store.release(name: "shop", version: "9") == nil)
        #expect(try store.releases(name: "shop") == [newer, created])
        #expect(try store.releases(name: nil) == [api, newer, created])

        let deployment = DeploymentRecord(environment: "production", releaseID: created.id, status: "success", createdAt: Self.at(20))
        try store.recordDeployment(deployment)
        try store.recordDeployment(DeploymentRecord(environment: "staging", releaseID: created.id, status: "failure", createdAt: Self.at(21)))
        #expect(try store.deployments(releaseID: created.id) == [deployment, DeploymentRecord(environment: "staging", releaseID: created.id, status: "failure", createdAt: Self.at(21))])
        #expect(try store.deployments(releaseID: api.id).isEmpty)
        try store.deleteRelease(id: api.id)
        #expect(try store.releases(name: nil) == [newer, created])

        let findings = [ScanFindingRecord(runID: run.id, jobKey: "scan", scanner: "secrets", severity: "high", location: "a.env:1", message: "AWS key"),
                        ScanFindingRecord(runID: run.id, jobKey: "deps", scanner: "dependencies", severity: "low", location: "Package.resolved", message: "old"),
                        ScanFindingRecord(runID: run.id, jobKey: "scan", scanner: "secrets", severity: "medium", location: "b.env:2", message: "token")]
        try store.insertFindings(findings)
        #expect(try store.findings(runID: run.id, jobKey: nil) == findings)
        #expect(try store.findings(runID: run.id, jobKey: "scan") == [findings[0], findings[2]])
        #expect(try store.findings(runID: 999, jobKey: nil).isEmpty)
    }

    @Test(arguments: TestDatabase.dialects)
    func rolloutsCommandsAndApprovals(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try SQLRunStore(database: $0) }.store
        let rollout = RolloutRecord(environment: "production", release: "shop", version: "1.1.0", stable: "1.0.0", strategy: "canary", phase: "starting",
                                    state: Data([0, 1, 2, 255]), controller: Data(#"{"desired":"canary"}"#.utf8), ownerPID: 31337, runID: 7, job: "deploy",
                                    createdAt: Self.t0, updatedAt: Self.at(1))
        let inserted = try store.insertRollout(rollout)
        #expect(inserted.id > 0)
        var expected = rollout
        expected.id = inserted.id
        #expect(inserted == expected)
        #expect(try store.rollout(id: inserted.id) == inserted)
        #expect(try store.rollout(id: inserted.id + 100) == nil)
        #expect(try store.activeRollout(environment: "production") == inserted)
        #expect(try store.activeRollout(environment: "staging") == nil)

        let before = Date()
        var updated = inserted
        updated.phase = "done"
        updated.state = Data()
        updated.ownerPID = nil
        updated.runID = nil
        updated.job = nil
        updated.stable = nil
        updated.finishedAt = Self.at(50)
        updated.outcome = "promoted"
        try store.updateRollout(updated)
        let stored = try #require(try store.rollout(id: inserted.id))
        #expect(stored.updatedAt >= before.addingTimeInterval(-1))
        updated.updatedAt = stored.updatedAt
        #expect(stored == updated)
        #expect(try store.activeRollout(environment: "production") == nil)

        let staging = try store.insertRollout(RolloutRecord(environment: "staging", release: "shop", version: "1.2.0", stable: nil, strategy: "blue-green",
                                                            phase: "starting", state: Data("{}".utf8), controller: Data("{}".utf8), ownerPID: nil, runID: nil,
                                                            job: nil, createdAt: Self.at(60), updatedAt: Self.at(60)))
        #expect(try store.rollouts(environment: nil, limit: 10) == [staging, stored])
        #expect(try store.rollouts(environment: nil, limit: 1) == [staging])
        #expect(try store.rollouts(environment: "production", limit: 10) == [stored])

        let event = RolloutEventRecord(rolloutID: inserted.id, at: Self.at(2), kind: "measure", text: "error rate 0.1%", detail: Data(#"{"p":0.001}"#.utf8))
        try store.appendRolloutEvent(event)
        try store.appendRolloutEvent(RolloutEventRecord(rolloutID: inserted.id, at: Self.at(3), kind: "step", text: "50%"))
        try store.appendRolloutEvent(RolloutEventRecord(rolloutID: staging.id, at: Self.at(4), kind: "step", text: "other"))
        let events = try store.rolloutEvents(rolloutID: inserted.id)
        #expect(events.count == 2)
        var expectedEvent = event
        expectedEvent.id = events[0].id
        #expect(events[0] == expectedEvent)
        #expect(events[1] == RolloutEventRecord(id: events[1].id, rolloutID: inserted.id, at: Self.at(3), kind: "step", text: "50%"))

        // Commands are handed out once.
        try store.queueCommand(environment: "production", op: "pause", actor: "alice")
        try store.queueCommand(environment: "production", op: "promote", actor: "bob")
        try store.queueCommand(environment: "staging", op: "abort", actor: "carol")
        let commands = try store.takeCommands(environment: "production")
        #expect(commands.map(\.op) == ["pause", "promote"])
        #expect(commands.map(\.actor) == ["alice", "bob"])
        #expect(commands.allSatisfy { $0.environment == "production" && $0.createdAt >= before.addingTimeInterval(-1) })
        #expect(commands[1].id > commands[0].id)
        #expect(try store.takeCommands(environment: "production").isEmpty)
        #expect(try store.takeCommands(environment: "staging").map(\.op) == ["abort"])
        try store.queueCommand(environment: "production", op: "resume", actor: "alice")
        #expect(try store.takeCommands(environment: "production").map(\.op) == ["resume"])

        // Approvals: the same approver counts once; "*" approves every job of the run.
        #expect(try store.addApproval(runID: 1, job: "deploy", approver: "alice"))
        #expect(!(try store.addApproval(runID: 1, job: "deploy", approver: "alice")))
        #expect(try store.addApproval(runID: 1, job: "deploy", approver: "bob"))
        #expect(try store.addApproval(runID: 1, job: "*", approver: "carol"))
        #expect(try store.addApproval(runID: 2, job: "deploy", approver: "dave"))
        let approvals = try store.approvals(runID: 1, job: "deploy")
        #expect(approvals.map(\.approver) == ["alice", "bob", "carol"])
        #expect(approvals.allSatisfy { $0.runID == 1 && $0.createdAt >= before.addingTimeInterval(-1) })
        #expect(approvals.map(\.job) == ["deploy", "deploy", "*"])
        #expect(try store.approvals(runID: 1, job: "other").map(\.approver) == ["carol"])
        #expect(try store.approvals(runID: 3, job: "deploy").isEmpty)
    }
}

/// Statements bound and stepped in C on GRDB's prepared statements (the store's write path on SQLite):
/// every kind of value round-trips exactly, and mistakes are errors that name the statement.
@Suite struct SQLiteWritePathTests {
    func database() throws -> SQLiteDatabase {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-sqlite-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let database = try SQLiteDatabase(path: directory + "/test.db")
        _ = try database.write { (db) throws(StoreError) in
            try db.execute("CREATE TABLE value (id INTEGER PRIMARY KEY, t TEXT, i INTEGER, r DOUBLE, b BLOB, n TEXT)", [])
        }
        return database
    }

    @Test func valuesOfEveryKindRoundTrip() throws {
        let database = try database()
        let texts = ["", "plain", "naïve – ünïcödé ✓ 🚀", String(repeating: "long ", count: 20_000)]
        for (index, text) in texts.enumerated() {
            let blob = Data((0..<(index * 300)).map { UInt8(truncatingIfNeeded: $0 * 7) })
            let id = try database.write { (db) throws(StoreError) in
                try db.insert("INSERT INTO value (t, i, r, b, n) VALUES (?, ?, ?, ?, ?)",
                              [text, Int64.min + Int64(index), Double(index) + 0.25, blob, Optional<String>.none])
            }
            let row = try #require(try database.read { (db) throws(StoreError) in try db.queryOne("SELECT * FROM value WHERE id = ?", [id]) })
            #expect(try row.get("t") as String == text)
            #expect(try row.get("i") as Int64 == Int64.min + Int64(index))
            #expect(try row.get("r") as Double == Double(index) + 0.25)
            #expect((row["b"] as Data?) ?? Data() == blob)
            #expect(row["n"] as String? == nil)
        }
        let changed = try database.write { (db) throws(StoreError) in try db.execute("UPDATE value SET i = ? WHERE i < ?", [7, Int64.min + 3]) }
        #expect(changed == 3)
    }

    @Test func aWrongArgumentCountOrAConstraintIsAnErrorNamingTheStatement() throws {
        let database = try database()
        #expect {
            try database.write { (db) throws(StoreError) in try db.execute("INSERT INTO value (t, i) VALUES (?, ?)", ["only one"]) }
        } throws: { error in
            "\(error)".contains("INSERT INTO value (t, i) VALUES (?, ?)") && "\(error)".contains("takes 2 arguments, not 1")
        }
        _ = try database.write { (db) throws(StoreError) in try db.execute("INSERT INTO value (id, t) VALUES (?, ?)", [1, "a"]) }
        #expect {
            try database.write { (db) throws(StoreError) in
                try db.execute("INSERT INTO value (id, t) VALUES (?, ?)", [2, "b"])
                try db.execute("INSERT INTO value (id, t) VALUES (?, ?)", [1, "again"])
            }
        } throws: { error in
            "\(error)".contains("UNIQUE constraint failed")
        }
        // The failed transaction left nothing behind, and the statement it failed in still works.
        let count = try database.read { (db) throws(StoreError) in try db.queryOne("SELECT COUNT(*) AS n FROM value")?.get("n") as Int64? }
        #expect(count == 1)
        _ = try database.write { (db) throws(StoreError) in try db.execute("INSERT INTO value (id, t) VALUES (?, ?)", [3, "c"]) }
    }
}
