import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SlipwayCore
import SlipwayEngine
@testable import SlipwayServer
import SlipwayStore
import Synchronization
import Testing

/// The broker with a real run store: leasing by labels, long polls, lost runners and fencing.
@Suite(.serialized) struct RunnerBrokerTests {
    let directory = NSTemporaryDirectory() + "slipway-broker-" + UUID().uuidString
    let runs: SQLRunStore
    let layout: DataLayout

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        layout = DataLayout(root: directory + "/state")
        try FileManager.default.createDirectory(atPath: layout.root, withIntermediateDirectories: true)
        runs = try SQLRunStore(path: layout.database)
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: directory) }

    /// An attempt of job `key` needing `labels`, with its rows in the store as the engine writes them.
    func attempt(_ key: String, labels: [String], outputs: [String] = [], secrets: [String] = [], cancelled: @escaping @Sendable () -> Bool = { false }) throws -> RemoteAttempt {
        let declared = outputs.isEmpty ? "" : "    outputs: [\(outputs.joined(separator: ", "))]\n"
        let text = "jobs:\n  \(key):\n    runs-on: [\(labels.joined(separator: ", "))]\n\(declared)    steps: [ { run: 'true' } ]\n"
        let pipeline = try #require(PipelineLoader.load(text: text, file: "slipway.yml").pipeline)
        let run = try runs.createRun(RunRecord(pipelineName: "p", file: "slipway.yml", pipelineText: text, event: "push", branch: "main", commit: nil, dirty: false, workspace: "", options: "{}"))
        try runs.insertJobs([JobRecord(runID: run.id, key: key, jobID: key)])
        let row = try #require(try runs.jobs(runID: run.id).first)
        let record = try runs.startAttempt(row, appending: RunEventRecord(runID: run.id, jobKey: key, kind: "attempt-started", message: "attempt 1"), attempt: 1)
        let instance = JobInstance(jobID: key)
        let resolved = try ResolvedJob.resolve(instance, in: pipeline, context: ExpressionContext())
        let assignment = RunnerAssignment(lease: 0, project: "demo", runID: run.id, runNumber: run.number, pipelineName: "p", file: "slipway.yml", event: "push",
                                          branch: "main", commit: nil, dirty: false, instance: instance, attempt: 1, resolved: resolved, context: ExpressionContext(),
                                          upstream: [], maskedValues: [])
        return RemoteAttempt(assignment: assignment, labels: labels, attemptRecord: record, store: runs, layout: layout, sourceDirectory: layout.snapshot(run.number),
                             upstreamDirectories: [], artifactsDirectory: layout.artifacts(run.number, job: key), masker: SecretMasker(secrets: secrets), isCancelled: cancelled)
    }

    @Test func aRunnerGetsOnlyJobsItsLabelsCoverAndAWaitingRunnerGetsOneAtOnce() async throws {
        defer { cleanUp() }
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .seconds(30), localLabels: []))
        // The watchdog ends long polls that ran out; cancelled when the test's scope ends.
        async let _: Void = broker.run()
        let linux = RunnerBroker.RunnerInfo(name: "l1", labels: ["linux", "x86"], capacity: 1)
        let gpuJob = try attempt("train", labels: ["gpu"])
        let linuxJob = try attempt("build", labels: ["linux"])
        async let gpuOutcome = broker.run(gpuJob)
        try await Task.sleep(for: .milliseconds(50))
        // Nothing for this runner yet: its long poll ends empty.
        #expect(await broker.lease(linux, wait: .milliseconds(100)) == nil)
        // A runner already waiting gets a job the moment it is queued.
        async let waiting = broker.lease(linux, wait: .seconds(10))
        try await Task.sleep(for: .milliseconds(50))
        let clock = ContinuousClock()
        let queuedAt = clock.now
        async let linuxOutcome = broker.run(linuxJob)
        let assignment = try #require(await waiting)
        #expect(clock.now - queuedAt < .seconds(2))
        #expect(assignment.jobKey == "build")
        #expect(assignment.lease != 0)
        #expect(broker.snapshot().queued == ["demo #1 train"])
        #expect(broker.snapshot().leases == 1)
        #expect(broker.complete(lease: assignment.lease, runner: "l1", result: RunnerAttemptResult(status: .success, outputs: ["v": "1"])))
        #expect(await linuxOutcome == .succeeded(outputs: ["v": "1"]))
        let record = try #require(try runs.attempts(jobRowID: linuxJob.attemptRecord!.jobRowID).first)
        #expect(record.status == .success)
        // Completing twice is refused: the lease is over.
        #expect(!broker.complete(lease: assignment.lease, runner: "l1", result: RunnerAttemptResult(status: .failure)))

        let gpu = RunnerBroker.RunnerInfo(name: "g1", labels: ["gpu"], capacity: 1)
        let gpuAssignment = try #require(await broker.lease(gpu, wait: .seconds(1)))
        #expect(gpuAssignment.jobKey == "train")
        // Another runner cannot report into g1's lease.
        #expect(!broker.complete(lease: gpuAssignment.lease, runner: "l1", result: RunnerAttemptResult(status: .success)))
        #expect(broker.complete(lease: gpuAssignment.lease, runner: "g1", result: RunnerAttemptResult(status: .failure, failure: .exit(3))))
        #expect(await gpuOutcome == .failed(.exit(3), outputs: [:]))
    }

    @Test func aSilentRunnerLosesItsLeaseAndCannotReportIntoItAfterwards() async throws {
        defer { cleanUp() }
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .milliseconds(300), localLabels: []))
        let job = try attempt("build", labels: ["linux"])
        async let outcome = broker.run(job)
        let runner = RunnerBroker.RunnerInfo(name: "r1", labels: ["linux"], capacity: 1)
        let assignment = try #require(await broker.lease(runner, wait: .seconds(5)))
        #expect(broker.heartbeat(runner, leases: [assignment.lease]) == .init(cancel: [], unknown: []))
        // The runner writes a step, then goes silent.
        _ = try runs.insertStep(StepRecord(attemptID: job.attemptRecord!.id, index: 0, name: "true", logPath: "/dev/null"))
        try await Task.sleep(for: .milliseconds(450))
        broker.sweep()
        guard case .failed(.runnerLost(let reason), _) = await outcome else {
            Issue.record("expected a lost runner")
            return
        }
        #expect(reason.contains("runner 'r1' was lost"))
        let record = try #require(try runs.attempts(jobRowID: job.attemptRecord!.jobRowID).first)
        #expect(record.status == .failure)
        #expect(record.failure?.contains("r1") == true)
        #expect(try runs.steps(attemptID: record.id).first?.status == .interrupted)
        #expect(try runs.events(runID: job.assignment.runID).contains { $0.kind == "runner-lost" })
        #expect(broker.snapshot().lostTotal == 1)
        #expect(broker.snapshot().runners.first?.online == false)

        // Back again: told to drop the lease, and its reports are refused (409 over HTTP).
        #expect(broker.heartbeat(runner, leases: [assignment.lease]).unknown == [assignment.lease])
        #expect(!broker.complete(lease: assignment.lease, runner: "r1", result: RunnerAttemptResult(status: .success)))
        let server = ServerLayout(root: directory + "/server")
        let store = try SlipwayServer.openStore(server, database: TestDatabase.location())
        let token = try store.createToken(name: "r1", role: .runner).1
        let services = ServerServices(store: store, layout: server, dispatcher: RunDispatcher(store: store, layout: server), broker: broker)
        let app = Application(router: ServerRoutes.router(services))
        try await app.test(.router) { client in
            let headers: HTTPFields = [.authorization: "Bearer " + token, .contentType: "application/json", HTTPField.Name("Slipway-Runner")!: "r1"]
            try await client.execute(uri: "/api/runner/leases/\(assignment.lease)/complete", method: .post, headers: headers,
                                     body: ByteBuffer(string: #"{"status":"success","outputs":{},"tests":[]}"#)) { response in
                #expect(response.status == .conflict)
                #expect(String(buffer: response.body).contains("taken back"))
            }
            try await client.execute(uri: "/api/runner/leases/\(assignment.lease)/progress", method: .post, headers: headers,
                                     body: ByteBuffer(string: #"{"steps":[],"logs":[]}"#)) { response in
                #expect(response.status == .conflict)
            }
            try await client.execute(uri: "/api/runner/lease", method: .post, headers: headers, body: ByteBuffer(string: #"{"name":"../x","labels":[]}"#)) { response in
                #expect(response.status == .badRequest)
            }
        }
        #expect(try runs.attempts(jobRowID: job.attemptRecord!.jobRowID).first?.status == .failure, "the refused report changed nothing")
    }

    @Test func aCancelledJobLeavesTheQueueAndALeasedOneIsCancelledThroughTheHeartbeat() async throws {
        defer { cleanUp() }
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .seconds(30), localLabels: []))
        let flag = CancelFlag()
        let queued = try attempt("queued", labels: ["nobody"], cancelled: { flag.isSet })
        async let queuedOutcome = broker.run(queued)
        let leased = try attempt("leased", labels: ["linux"], cancelled: { flag.isSet })
        async let leasedOutcome = broker.run(leased)
        let runner = RunnerBroker.RunnerInfo(name: "r1", labels: ["linux"], capacity: 1)
        let assignment = try #require(await broker.lease(runner, wait: .seconds(5)))
        flag.set()
        broker.sweep()
        #expect(await queuedOutcome == .cancelled)
        #expect(broker.heartbeat(runner, leases: [assignment.lease]).cancel == [assignment.lease])
        #expect(broker.complete(lease: assignment.lease, runner: "r1", result: RunnerAttemptResult(status: .cancelled)))
        #expect(await leasedOutcome == .cancelled)
    }

    /// Outputs a runner reports are kept as a local job's: only the declared ones, secrets masked.
    @Test func runnerOutputsAreMaskedAndLimitedToTheDeclaredOnes() async throws {
        defer { cleanUp() }
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .seconds(30), localLabels: []))
        let secret = "hunter2-very-secret"
        let declared = try attempt("build", labels: ["linux"], outputs: ["version"], secrets: [secret])
        async let declaredOutcome = broker.run(declared)
        let runner = RunnerBroker.RunnerInfo(name: "r1", labels: ["linux"], capacity: 2)
        let first = try #require(await broker.lease(runner, wait: .seconds(5)))
        let reported = ["version": "1.0-\(secret)", "stolen": secret]
        #expect(broker.complete(lease: first.lease, runner: "r1", result: RunnerAttemptResult(status: .success, outputs: reported)))
        #expect(await declaredOutcome == .succeeded(outputs: ["version": "1.0-***"]))

        // Without declared outputs every one is kept, still masked; so is a failure's message.
        let open = try attempt("test", labels: ["linux"], secrets: [secret])
        async let openOutcome = broker.run(open)
        let second = try #require(await broker.lease(runner, wait: .seconds(5)))
        #expect(broker.complete(lease: second.lease, runner: "r1", result: RunnerAttemptResult(status: .failure, failure: .error("saw \(secret)"), outputs: reported)))
        #expect(await openOutcome == .failed(.error("saw ***"), outputs: ["version": "1.0-***", "stolen": "***"]))
    }

    /// Step rows exist for the job's steps only: index `steps.count` is one past the last (the job has one step).
    @Test func progressForAStepPastTheLastIsIgnored() async throws {
        defer { cleanUp() }
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .seconds(30), localLabels: []))
        let job = try attempt("build", labels: ["linux"])
        async let outcome = broker.run(job)
        let runner = RunnerBroker.RunnerInfo(name: "r1", labels: ["linux"], capacity: 1)
        let assignment = try #require(await broker.lease(runner, wait: .seconds(5)))
        let server = ServerLayout(root: directory + "/server")
        let store = try SlipwayServer.openStore(server, database: TestDatabase.location())
        let token = try store.createToken(name: "r1", role: .runner).1
        let services = ServerServices(store: store, layout: server, dispatcher: RunDispatcher(store: store, layout: server), broker: broker)
        let app = Application(router: ServerRoutes.router(services))
        try await app.test(.router) { client in
            let headers: HTTPFields = [.authorization: "Bearer " + token, .contentType: "application/json", HTTPField.Name("Slipway-Runner")!: "r1"]
            for index in [1, 0] {
                let body = #"{"steps":[{"index":\#(index),"name":"s","status":"success","exitCode":0,"startedAt":1700000000}],"logs":[]}"#
                try await client.execute(uri: "/api/runner/leases/\(assignment.lease)/progress", method: .post, headers: headers, body: ByteBuffer(string: body)) { response in
                    #expect(response.status == .ok)
                }
            }
        }
        #expect(try runs.steps(attemptID: job.attemptRecord!.id).map(\.index) == [0])
        #expect(broker.complete(lease: assignment.lease, runner: "r1", result: RunnerAttemptResult(status: .success)))
        _ = await outcome
    }

    @Test func aRunnerCannotClaimItsOwnLossToDodgeRetryRules() {
        let claimed = RunnerAttemptResult(status: .failure, failure: .runnerLost("runner 'x' was lost"))
        #expect(claimed.outcome == .failed(.error("runner 'x' was lost"), outputs: [:]))
    }

    @Test func theServerRunsLabelsItCoversItselfUnlessARunnerMatches() {
        let broker = RunnerBroker(settings: .init(heartbeatTimeout: .seconds(30), localLabels: ["local", "linux"]))
        #expect(!broker.takes(labels: ["linux"]))
        #expect(broker.takes(labels: ["gpu"]))
        _ = broker.heartbeat(.init(name: "r", labels: ["linux", "big"], capacity: 1), leases: [])
        #expect(broker.takes(labels: ["linux"]))
    }
}

final class CancelFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
