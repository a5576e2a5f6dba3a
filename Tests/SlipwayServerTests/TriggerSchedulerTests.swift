import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore
import Synchronization
import Testing
@testable import SlipwayServer

/// Cron and polling against a real git repository and the real server database; the wall clock is injected.
@Suite(.serialized) struct TriggerSchedulerTests {
    let root: String
    let repo: String
    let layout: ServerLayout
    let store: ServerStore
    // 2026-11-23 06:00:00 UTC
    static let six: Int64 = 1_795_413_600

    init() throws {
        root = NSTemporaryDirectory() + "slipway-scheduler-" + UUID().uuidString
        repo = root + "/repo"
        layout = ServerLayout(root: root + "/data")
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        store = try SlipwayServer.openStore(layout, database: TestDatabase.location())
        try git("init", "-q", "-b", "main")
        try write("slipway.yml", """
            name: nightly
            on:
              schedule:
                - cron: "*/5 * * * *"
              push: {}
            jobs:
              a:
                steps:
                  - run: "true"
            """)
        try git("add", "-A")
        try git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: root) }

    func write(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: repo + "/" + path))
    }

    @discardableResult
    func git(_ arguments: String...) throws -> String {
        let output = Helper.run(["git"] + arguments, in: repo)
        guard output.status == 0 else { throw ServerError("git \(arguments) failed: \(output.stderr)") }
        return output.text
    }

    @Test func cronFiresOncePerTickAcrossRestartsAndCollapsesMissedTicks() throws {
        defer { cleanUp() }
        try store.addProject(ProjectRecord(name: "nightly", repository: repo))
        let clock = Mutex<Int64>(Self.six + 2 * 60)
        func scheduler() -> TriggerScheduler { TriggerScheduler(store: store, layout: layout, now: { clock.withLock { $0 } }) }
        let first = scheduler()
        #expect(first.tick() == 0, "06:02: first sighting sets the baseline")
        clock.withLock { $0 = Self.six + 5 * 60 + 3 }
        #expect(first.tick() == 1, "06:05 fires")
        #expect(first.tick() == 0, "and only once")
        // A new process (restart) within the same minute: nothing again.
        #expect(scheduler().tick() == 0)
        // Down until 06:31: 06:10 … 06:30 missed; one run, for 06:30.
        clock.withLock { $0 = Self.six + 31 * 60 }
        let afterRestart = scheduler()
        #expect(afterRestart.tick() == 1)
        #expect(afterRestart.tick() == 0)
        let requests = try store.requests(project: "nightly")
        #expect(requests.map(\.event) == ["schedule", "schedule"])
        #expect(requests.map(\.branch) == ["main", "main"])
        #expect(requests.first?.source == "schedule:*/5 * * * *@\(Self.six + 30 * 60)")
    }

    /// Path filters see the whole push (before..after), not only its last commit.
    @Test func pathFiltersUseEveryCommitOfAPush() throws {
        defer { cleanUp() }
        try write("slipway.yml", "name: paths\non:\n  push:\n    paths: [\"src/**\"]\njobs:\n  a:\n    steps:\n      - run: \"true\"\n")
        try git("commit", "-q", "-a", "-m", "paths")
        let before = try git("rev-parse", "HEAD")
        try FileManager.default.createDirectory(atPath: repo + "/src", withIntermediateDirectories: true)
        try write("src/app.txt", "code")
        try git("add", "-A")
        try git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code")
        try write("README", "docs")
        try git("add", "-A")
        try git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "docs")
        let after = try git("rev-parse", "HEAD")
        let project = ProjectRecord(name: "paths", repository: repo)
        let mirror = RepositoryMirror(source: repo, path: layout.mirror("paths"))
        let whole = RunRequestRecord(project: "paths", event: "push", branch: "main", commit: after, source: "test", before: before)
        let prepared = try RunDispatcher.prepare(whole, project: project, mirror: mirror, into: root + "/export-1")
        #expect(prepared.commit == after)
        // Without `before` only the last commit counts: it touched no src/ file.
        let lastOnly = RunRequestRecord(project: "paths", event: "push", branch: "main", commit: after, source: "test")
        #expect(throws: RunDispatcher.Outcome.self) { try RunDispatcher.prepare(lastOnly, project: project, mirror: mirror, into: root + "/export-2") }
    }

    @Test func pollingQueuesMovedBranchHeadsOnlyAfterTheBaseline() throws {
        defer { cleanUp() }
        try store.addProject(ProjectRecord(name: "polled", repository: repo, pollSeconds: 1))
        // No schedule in this pipeline: only polling counts.
        try write("slipway.yml", "name: polled\njobs:\n  a:\n    steps:\n      - run: \"true\"\n")
        try git("commit", "-q", "-a", "-m", "no schedule")
        let scheduler = TriggerScheduler(store: store, layout: layout)
        #expect(scheduler.poll(try #require(try store.project(named: "polled"))) == 0, "the first poll is the baseline")
        try write("file.txt", "change")
        try git("add", "-A")
        try git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "two")
        try git("branch", "feature")
        let head = try git("rev-parse", "HEAD")
        let previous = try git("rev-parse", "HEAD~1")
        let project = try #require(try store.project(named: "polled"))
        #expect(scheduler.poll(project) == 2, "main moved and feature is new")
        #expect(scheduler.poll(project) == 0, "nothing moved since")
        let requests = try store.requests(project: "polled").sorted { ($0.branch ?? "") < ($1.branch ?? "") }
        #expect(requests.map(\.branch) == ["feature", "main"])
        #expect(requests.allSatisfy { $0.commit == head && $0.event == "push" })
        #expect(requests.map(\.before) == [nil, previous], "a moved head remembers where it was; a new branch has no before")
    }
}

@Suite struct RepositoryMirrorTests {
    @Test func credentialsNeverAppearInMessages() {
        #expect(RepositoryMirror.redacted("https://user:s3cret@git.example.com/acme/shop.git") == "https://***@git.example.com/acme/shop.git")
        #expect(RepositoryMirror.redacted("fatal: could not read from https://x-token:ghp_abc@github.com/a/b") == "fatal: could not read from https://***@github.com/a/b")
        #expect(RepositoryMirror.redacted("https://git.example.com/acme/shop.git") == "https://git.example.com/acme/shop.git")
        #expect(RepositoryMirror.redacted("git@github.com:acme/shop.git") == "git@github.com:acme/shop.git")
        #expect(RepositoryMirror.redacted("/srv/git/shop.git") == "/srv/git/shop.git")
    }
}

/// Recovery after a kill -9 between the engine creating a run and the request recording its number.
@Suite struct DispatcherRecoveryTests {
    @Test func aRunTheRequestNeverRecordedIsFoundByItsRequestIDAndResumed() throws {
        let root = NSTemporaryDirectory() + "slipway-recover-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let layout = ServerLayout(root: root)
        let store = try SlipwayServer.openStore(layout, database: TestDatabase.location())
        try store.addProject(ProjectRecord(name: "p", repository: "/nowhere"))
        let orphanRequest = try store.enqueue(RunRequestRecord(project: "p", event: "manual", source: "test"))
        let unstarted = try store.enqueue(RunRequestRecord(project: "p", event: "manual", source: "test"))
        _ = try store.claimNext()
        _ = try store.claimNext(excludingProjects: [])
        let dispatcher = RunDispatcher(store: store, layout: layout)
        let runs = try #require(try dispatcher.runStores.store(for: "p", create: true))
        let options = """
            {"targets":[],"event":"manual","envOverrides":{},"inputs":{},"useCache":true,"parallelism":2,"clean":false,"requestID":\(orphanRequest.id)}
            """
        let run = try runs.createRun(RunRecord(pipelineName: "x", file: "slipway.yml", pipelineText: "", event: "manual", branch: nil, commit: nil,
                                               dirty: false, workspace: "", options: options))
        let resumable = dispatcher.recover()
        #expect(resumable.map(\.0.id) == [orphanRequest.id])
        #expect(resumable.first?.1.number == run.number)
        #expect(try store.request(id: orphanRequest.id)?.runNumber == run.number)
        #expect(try store.request(id: orphanRequest.id)?.status == "running")
        // A request whose run never started goes back to the queue.
        #expect(try store.request(id: unstarted.id)?.status == "queued")
    }

    @Test func aCancelAskedBeforeTheStopEndsTheRunInsteadOfResumingIt() throws {
        let root = NSTemporaryDirectory() + "slipway-recover-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let layout = ServerLayout(root: root)
        let store = try SlipwayServer.openStore(layout, database: TestDatabase.location())
        try store.addProject(ProjectRecord(name: "p", repository: "/nowhere"))
        var request = try store.enqueue(RunRequestRecord(project: "p", event: "manual", source: "test"))
        _ = try store.claimNext()
        let dispatcher = RunDispatcher(store: store, layout: layout)
        let runs = try #require(try dispatcher.runStores.store(for: "p", create: true))
        let run = try runs.createRun(RunRecord(pipelineName: "x", file: "slipway.yml", pipelineText: "", event: "manual", branch: nil, commit: nil,
                                               dirty: false, workspace: "", options: "{}"))
        request = try #require(try store.request(id: request.id))
        request.status = "running"
        request.runNumber = run.number
        try store.update(request)
        try store.requestCancel(id: request.id, reason: "cancelled by ci")
        #expect(dispatcher.recover().isEmpty, "a cancelled run is not resumed")
        #expect(try store.request(id: request.id)?.status == "cancelled")
        #expect(try store.request(id: request.id)?.reason == "cancelled by ci")
        #expect(try runs.run(number: run.number)?.status == .cancelled)
    }
}
