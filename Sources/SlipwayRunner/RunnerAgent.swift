#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import SlipwayDeploy
import SlipwayEngine
import SlipwayStore
import Synchronization

/// `slipway runner`: leases jobs from a server (long poll), runs them with the engine's own executor,
/// ships step records and logs as they happen, uploads artifacts and reports the result; heartbeats
/// every second. A lease the server answers 409 for (taken back) is dropped and its processes killed.
public final class RunnerAgent: Sendable {
    public struct Configuration: Sendable {
        public var server: String
        public var token: String
        public var name: String
        public var labels: [String]
        public var capacity: Int
        /// Scratch store, sources and workspaces.
        public var workDirectory: String
        public var heartbeatInterval: Duration = .seconds(1)
        /// How long one lease request waits on the server.
        public var pollSeconds: Int = 25
        /// How often step records and logs go to the server while a job runs.
        public var progressInterval: Duration = .milliseconds(200)

        public init(server: String, token: String, name: String, labels: [String], capacity: Int, workDirectory: String) {
            self.server = server
            self.token = token
            self.name = name
            self.labels = labels
            self.capacity = capacity
            self.workDirectory = workDirectory
        }
    }

    public let configuration: Configuration
    let http = HTTPClient(maxBodyBytes: 1 << 31)
    let active = Mutex<[Int64: ActiveLease]>([:])
    let log: @Sendable (String) -> Void

    final class ActiveLease: Sendable {
        let control = RunControl()
        /// Set when the server no longer knows the lease: nothing more is reported.
        let dropped = Atomic<Bool>(false)
    }

    public init(configuration: Configuration, log: @escaping @Sendable (String) -> Void) {
        self.configuration = configuration
        self.log = log
    }

    var headers: [(String, String)] {
        [("Authorization", "Bearer \(configuration.token)"), ("Content-Type", "application/json"), ("Slipway-Runner", configuration.name)]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// 409: the lease was taken back.
        var fenced = false
    }

    /// Runs until cancelled.
    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.workDirectory, withIntermediateDirectories: true)
        // One runner per work directory: the next one would reap the first one's steps and wipe its store.
        let lock = open(configuration.workDirectory + "/runner.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            if lock >= 0 { close(lock) }
            throw Failure(description: "another runner is using \(configuration.workDirectory); give this one its own --work")
        }
        defer { close(lock) }
        let layout = DataLayout(root: configuration.workDirectory)
        // Work of an earlier process of this runner is gone with it (the server queued it again):
        // its step processes end and its files go.
        let leftovers = ProcessReaper.reap(workspacesUnder: layout.root + "/runs")
        if leftovers > 0 { log("ended \(leftovers) leftover step process(es) of an earlier runner process") }
        try? FileManager.default.removeItem(atPath: layout.root + "/runs")
        try? FileManager.default.removeItem(atPath: layout.database)
        let store = try SQLRunStore(path: layout.database)
        let execution = RemoteJobExecution(store: store, layout: layout, runnerName: configuration.name)
        log("runner '\(configuration.name)' (labels: \(configuration.labels.joined(separator: ",")), capacity \(configuration.capacity)) polling \(configuration.server)")
        await withDiscardingTaskGroup { group in
            group.addTask { await self.heartbeats() }
            for _ in 0..<max(1, configuration.capacity) {
                group.addTask { await self.work(execution) }
            }
        }
    }

    func post(_ path: String, json: some Encodable, timeout: Duration = .seconds(30)) async throws -> SlipwayDeploy.HTTPResponse {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        let body = try encoder.encode(json)
        return try await http.request(method: .POST, url: configuration.server + path, headers: headers, body: Array(body), timeout: timeout)
    }

    struct Hello: Encodable {
        var name: String
        var labels: [String]
        var capacity: Int
        var leases: [Int64]?
        var wait: Double?
    }

    func heartbeats() async {
        while !Task.isCancelled {
            let leases = active.withLock { Array($0.keys) }
            if let response = try? await post("/api/runner/heartbeat", json: Hello(name: configuration.name, labels: configuration.labels, capacity: configuration.capacity, leases: leases), timeout: .seconds(5)),
               response.status == 200, let reply = try? JSONDecoder().decode(HeartbeatReply.self, from: Data(response.body)) {
                for id in reply.cancel { active.withLock { $0[id] }?.control.cancel() }
                for id in reply.unknown { drop(id, why: "the server no longer knows it") }
            }
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    struct HeartbeatReply: Decodable {
        var cancel: [Int64]
        var unknown: [Int64]
    }

    func drop(_ id: Int64, why: String) {
        guard let lease = active.withLock({ $0[id] }) else { return }
        if !lease.dropped.exchange(true, ordering: .relaxed) {
            log("lease \(id) dropped: \(why); stopping its processes")
            lease.control.killAll()
        }
    }

    func work(_ execution: RemoteJobExecution) async {
        var failures = 0
        while !Task.isCancelled {
            let hello = Hello(name: configuration.name, labels: configuration.labels, capacity: configuration.capacity, wait: Double(configuration.pollSeconds))
            do {
                let response = try await post("/api/runner/lease", json: hello, timeout: .seconds(Int64(configuration.pollSeconds) + 15))
                failures = 0
                switch response.status {
                case 200:
                    let assignment = try JSONDecoder().decode(RunnerAssignment.self, from: Data(response.body))
                    await execute(assignment, execution)
                case 204: continue
                default:
                    log("the server refused a lease request: \(response.status) \(response.text.prefix(300))")
                    try? await Task.sleep(for: .seconds(2))
                }
            } catch {
                failures += 1
                if failures == 1 || failures % 30 == 0 { log("cannot reach \(configuration.server): \(error)") }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    func execute(_ assignment: RunnerAssignment, _ execution: RemoteJobExecution) async {
        let lease = ActiveLease()
        let id = assignment.lease
        active.withLock { $0[id] = lease }
        defer { active.withLock { $0[id] = nil } }
        log("lease \(id): \(assignment.project) #\(assignment.runNumber) \(assignment.jobKey) attempt \(assignment.attempt)")
        let clock = ContinuousClock()
        let received = clock.now
        let prepared: RemoteJobExecution.Prepared
        do { prepared = try execution.prepare(assignment) } catch {
            await complete(id, RunnerAttemptResult(status: .failure, failure: .error("the runner could not prepare the job: \(error.message)")), lease: lease)
            return
        }
        defer { try? FileManager.default.removeItem(atPath: prepared.directory) }
        let preparedAt = clock.now
        do {
            try await fetch("/api/runner/leases/\(id)/source", into: prepared.sourceDirectory, scratch: prepared.directory + "/source.tar")
            for index in assignment.upstream.indices {
                try await fetch("/api/runner/leases/\(id)/upstream/\(index)", into: prepared.upstreamDirectory(index), scratch: prepared.directory + "/upstream-\(index).tar")
            }
        } catch let failure as Failure {
            if failure.fenced { drop(id, why: failure.description) }
            await complete(id, RunnerAttemptResult(status: .failure, failure: .error("the runner could not fetch the job's files: \(failure.description)")), lease: lease)
            return
        } catch {
            await complete(id, RunnerAttemptResult(status: .failure, failure: .error("the runner could not fetch the job's files: \(error)")), lease: lease)
            return
        }
        let fetchedAt = clock.now
        log("lease \(id): prepared in \(Self.milliseconds(preparedAt - received)), files fetched in \(Self.milliseconds(fetchedAt - preparedAt))")
        let shipper = ProgressShipper(execution: execution, prepared: prepared)
        let result = await withTaskGroup(of: RunnerAttemptResult?.self) { group in
            group.addTask { await execution.run(prepared, control: lease.control, observer: nil) }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.configuration.progressInterval)
                    if lease.dropped.load(ordering: .relaxed) { return nil }
                    await self.ship(shipper, lease: id, state: lease)
                }
                return nil
            }
            var result: RunnerAttemptResult?
            while let next = await group.next() {
                if let next {
                    result = next
                    group.cancelAll()
                }
            }
            return result ?? RunnerAttemptResult(status: .cancelled)
        }
        // Everything logged goes before the result (bounded: a server that stays away gets the rest never).
        for _ in 0..<100 where !lease.dropped.load(ordering: .relaxed) {
            if await ship(shipper, lease: id, state: lease) { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        guard !lease.dropped.load(ordering: .relaxed) else { return }
        if result.status == .success, FileManager.default.fileExists(atPath: prepared.artifactsDirectory) {
            let file = prepared.directory + "/artifacts.tar"
            do {
                try TarArchive.create(from: prepared.artifactsDirectory, to: file)
                let body = try Data(contentsOf: URL(fileURLWithPath: file))
                let response = try await http.request(method: .PUT, url: configuration.server + "/api/runner/leases/\(id)/artifacts", headers: headers, body: Array(body), timeout: .seconds(600))
                if response.status == 409 { drop(id, why: "the server took the lease back"); return }
                guard response.status == 200 else { throw Failure(description: "upload answered \(response.status)") }
            } catch {
                await complete(id, RunnerAttemptResult(status: .failure, failure: .error("the runner could not upload the artifacts: \(error)")), lease: lease)
                return
            }
        }
        await complete(id, result, lease: lease)
        log("lease \(id): \(result.status.rawValue)")
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(format: "%.1f ms", Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15)
    }

    /// Downloads a tar archive and unpacks it.
    func fetch(_ path: String, into directory: String, scratch: String) async throws {
        let response = try await http.request(method: .GET, url: configuration.server + path, headers: headers, timeout: .seconds(600))
        guard response.status == 200 else { throw Failure(description: "\(path) answered \(response.status)", fenced: response.status == 409) }
        try FileManager.default.createDirectory(atPath: (scratch as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: scratch, contents: Data(response.body)) else { throw Failure(description: "cannot write \(scratch)") }
        defer { unlink(scratch) }
        try TarArchive.extract(scratch, into: directory)
    }

    /// Sends what changed; true when there was nothing more to send.
    @discardableResult
    func ship(_ shipper: ProgressShipper, lease id: Int64, state: ActiveLease) async -> Bool {
        guard let body = shipper.collect() else { return true }
        guard !state.dropped.load(ordering: .relaxed), let response = try? await post("/api/runner/leases/\(id)/progress", json: body) else { return false }
        if response.status == 409 { drop(id, why: "the server took the lease back") }
        if response.status == 200 { shipper.acknowledge(body) }
        return false
    }

    /// Reports the result, retrying while the server cannot be reached (it may be restarting; if it
    /// took the lease back meanwhile, it answers 409 and the result is dropped).
    func complete(_ id: Int64, _ result: RunnerAttemptResult, lease: ActiveLease) async {
        for attempt in 0..<60 where !lease.dropped.load(ordering: .relaxed) {
            if let response = try? await post("/api/runner/leases/\(id)/complete", json: result) {
                if response.status == 409 { drop(id, why: "the server took the lease back before it completed") }
                return
            }
            try? await Task.sleep(for: .milliseconds(min(200 * (attempt + 1), 2000)))
        }
    }
}

/// Collects what changed since the last report: step records from the scratch store and new log bytes.
final class ProgressShipper: Sendable {
    let execution: RemoteJobExecution
    let prepared: RemoteJobExecution.Prepared
    private struct Sent {
        var steps: [Int: RunnerProgress.Step] = [:]
        var offsets: [Int: Int] = [:]
    }
    private let sent = Mutex(Sent())
    /// Log bytes per report, all steps together: base64 of it stays well under the server's 16 MiB body
    /// limit; the rest goes in the next report.
    static let maxChunk = 4 << 20

    init(execution: RemoteJobExecution, prepared: RemoteJobExecution.Prepared) {
        self.execution = execution
        self.prepared = prepared
    }

    /// What changed since the last acknowledged report; nil when nothing did.
    func collect() -> RunnerProgress? {
        let records = execution.steps(of: prepared)
        let already = sent.withLock { $0 }
        var body = RunnerProgress()
        var budget = Self.maxChunk
        for record in records {
            let report = RunnerProgress.Step(record)
            if already.steps[record.index] != report { body.steps.append(report) }
            let offset = already.offsets[record.index] ?? 0
            guard let handle = FileHandle(forReadingAtPath: record.logPath) else { continue }
            defer { try? handle.close() }
            try? handle.seek(toOffset: UInt64(offset))
            guard budget > 0, let data = try? handle.read(upToCount: budget), !data.isEmpty else { continue }
            budget -= data.count
            body.logs.append(.init(step: record.index, offset: offset, data: data))
        }
        return body.steps.isEmpty && body.logs.isEmpty ? nil : body
    }

    /// The server has `body`: the next report starts after it.
    func acknowledge(_ body: RunnerProgress) {
        sent.withLock { sent in
            for step in body.steps { sent.steps[step.index] = step }
            for chunk in body.logs { sent.offsets[chunk.step] = chunk.offset + chunk.count }
        }
    }
}
