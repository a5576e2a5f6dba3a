import Foundation
import Logging
import ServiceLifecycle
import SlipwayArtifacts
import SlipwayCore
import SlipwayEngine
import SlipwayStore
import Synchronization

/// Where the server keeps things: `server.db`, a bare mirror per project, and per project the same
/// state a local `.slipway/` holds (run database, logs, cache, releases) plus one checkout per run.
public struct ServerLayout: Sendable {
    public let root: String
    public init(root: String) { self.root = root }

    public var database: String { root + "/server.db" }
    /// Names the server database when it is not `server.db` (written by `serve --database`).
    public var databasePointer: String { root + "/database" }
    public func mirror(_ project: String) -> String { root + "/mirrors/" + FileTree.safeName(project) + ".git" }
    public func state(_ project: String) -> DataLayout { DataLayout(root: root + "/projects/" + FileTree.safeName(project) + "/state") }
    public func checkout(_ project: String, request: Int64) -> String { root + "/projects/" + FileTree.safeName(project) + "/checkouts/r\(request)" }
}

/// One run store per project for the whole process (one writer per database per process), shared by the
/// dispatcher and the API. With the server's state in PostgreSQL, each project's runs are in a schema of
/// their own next to it (logs, caches and artifacts stay in the data directory); otherwise in the project's
/// `state.db`.
public final class RunStores: Sendable {
    let layout: ServerLayout
    let postgres: PostgresDatabase.Settings?
    private let stores = Mutex<[String: SQLRunStore]>([:])

    public init(layout: ServerLayout, server: (any SQLDatabase)? = nil) {
        self.layout = layout
        postgres = (server as? PostgresDatabase)?.settings
    }

    /// The project's store; created (with its directory) when `create`, otherwise nil until the first run.
    public func store(for project: String, create: Bool) throws -> SQLRunStore? {
        if let store = stores.withLock({ $0[project] }) { return store }
        let state = layout.state(project)
        let opened: SQLRunStore
        if var settings = postgres {
            settings.schema = Self.schema(for: project, next: settings.schema)
            if !create, try !PostgresDatabase.schemaExists(settings) { return nil }
            try FileManager.default.createDirectory(atPath: state.root, withIntermediateDirectories: true)
            opened = try SQLRunStore(database: PostgresDatabase(settings: settings))
        } else {
            if !create, !FileManager.default.fileExists(atPath: state.database) { return nil }
            try FileManager.default.createDirectory(atPath: state.root, withIntermediateDirectories: true)
            opened = try SQLRunStore(path: state.database)
        }
        return stores.withLock { stores in
            if let existing = stores[project] { return existing }
            stores[project] = opened
            return opened
        }
    }

    /// `<server schema>_p_<project>_<hash of both>`: readable, distinct for names that differ only in case or
    /// punctuation or whose server schemas share a long prefix, and within PostgreSQL's 63 characters.
    static func schema(for project: String, next server: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (server + "\u{0}" + project).utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let readable = String(project.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" }.prefix(24))
        return "\(server.prefix(24))_p_\(readable)_\(String(hash, radix: 16).prefix(8))"
    }
}

/// Takes queued run requests and runs them with the same engine as `slipway run`, in a checkout of the
/// exact commit. Requests of one project run one at a time, in order; different projects in parallel up
/// to `capacity`. Everything is in the database first: after a crash, `recover()` resumes interrupted
/// runs and re-queues requests that had not started a run.
public final class RunDispatcher: Sendable {
    let store: ServerStore
    let layout: ServerLayout
    let capacity: Int
    let secrets: [String: String]
    let remote: RemoteJobRunner?
    public let runStores: RunStores
    private let wakeups = WakeSignal()
    private struct State {
        var running = 0
        var projects: Set<String> = []
        var engines: [Int64: RunEngine] = [:]
        var draining = false
        /// The `concurrency` of each project's most recently prepared pipeline.
        var policies: [String: ConcurrencyPolicy] = [:]
        /// Requests running now with their concurrency group.
        var groups: [Int64: (project: String, group: String)] = [:]
        /// Why a running request was cancelled by a newer one.
        var superseded: [Int64: String] = [:]
    }
    private let state = Mutex(State())

    public init(store: ServerStore, layout: ServerLayout, capacity: Int = max(2, ProcessInfo.processInfo.activeProcessorCount), secrets: [String: String] = [:], remote: RemoteJobRunner? = nil) {
        self.remote = remote
        self.store = store
        self.layout = layout
        self.capacity = max(1, capacity)
        self.secrets = secrets
        self.runStores = RunStores(layout: layout, server: store.database)
    }

    /// Something was queued or finished: look at the queue now rather than at the next tick.
    public func wake() { wakeups.signal() }

    public var runningCount: Int { state.withLock { $0.running } }

    /// Runs until cancelled, or until a graceful shutdown has drained: then it takes no more requests and
    /// waits up to `grace` for the runs in progress. Runs still going after that are left as they are —
    /// `onGraceExpired` is told (the server exits), and the next start resumes them as after a crash.
    /// Interrupted work of an earlier process is picked up first.
    public func run(grace: Duration = .seconds(30), onGraceExpired: @Sendable (Int) -> Void = { _ in }) async {
        await withGracefulShutdownHandler {
            await dispatch(grace: grace, onGraceExpired: onGraceExpired)
        } onGracefulShutdown: {
            self.state.withLock { $0.draining = true }
            self.wake()
        }
    }

    /// Stops taking requests; runs in progress go on.
    public func drain() {
        state.withLock { $0.draining = true }
        wake()
    }

    private func dispatch(grace: Duration, onGraceExpired: @Sendable (Int) -> Void) async {
        await withDiscardingTaskGroup { group in
            for (request, resume) in recover() {
                reserve(request.project)
                group.addTask { await self.execute(request, resuming: resume) }
            }
            while !Task.isCancelled, !state.withLock({ $0.draining }) {
                supersede()
                while state.withLock({ $0.running < capacity }) {
                    let busy = state.withLock { $0.projects }
                    guard let request = try? store.claimNext(excludingProjects: busy) else { break }
                    reserve(request.project)
                    group.addTask { await self.execute(request, resuming: nil) }
                }
                // A wake-up, or a tick: requests queued by another process (the CLI) are seen within 1 s.
                await wakeups.wait(atMost: .seconds(1))
            }
            guard !Task.isCancelled else { return }
            let deadline = ContinuousClock.now + grace
            while runningCount > 0, ContinuousClock.now < deadline, !Task.isCancelled {
                await wakeups.wait(atMost: .milliseconds(200))
            }
            let left = runningCount
            if left > 0 {
                // Steps still going are killed, and the caller exits at once (before the engine could record
                // them as failed): the resumed run does their jobs again. Stopping them instead would not
                // last: the kernel wakes stopped orphaned groups with SIGHUP and SIGCONT when the server exits.
                for engine in state.withLock({ Array($0.engines.values) }) { engine.control.killProcessesForExit() }
                onGraceExpired(left)
                group.cancelAll()
            }
        }
    }

    private func reserve(_ project: String) {
        state.withLock { state in
            state.running += 1
            state.projects.insert(project)
        }
    }

    /// Requests left `preparing` or `running` by a process that stopped: a started run is resumed,
    /// anything else goes back to the queue.
    func recover() -> [(RunRequestRecord, RunRecord)] {
        var resumable: [(RunRequestRecord, RunRecord)] = []
        for var request in (try? store.unfinishedClaims()) ?? [] {
            let runs = try? runStores.store(for: request.project, create: false)
            // A cancel (or supersession) asked before the stop is carried out now: the run ends, it is not resumed.
            if let reason = (try? store.cancelReason(id: request.id)) ?? nil {
                let run = request.runNumber.flatMap { number in runs.flatMap { try? $0.run(number: number) } }
                    ?? runs.flatMap { Self.unfinishedRun(of: request.id, in: $0) }
                if let runs, let run, !run.status.isFinal {
                    try? runs.updateRun(id: run.id, status: .cancelled, finishedAt: Date(), pid: nil)
                    try? runs.appendEvent(RunEventRecord(runID: run.id, jobKey: nil, kind: "run-finished", message: "run #\(run.number) finished: cancelled (\(reason))"))
                }
                request.status = "cancelled"
                request.reason = reason
                request.runNumber = request.runNumber ?? run?.number
                request.finishedAt = Date()
                try? store.update(request)
                continue
            }
            if request.status == "running", let number = request.runNumber,
               let runs, let run = try? runs.run(number: number), !run.status.isFinal {
                resumable.append((request, run))
                continue
            }
            // The engine may have created the run before the request recorded its number: the run
            // carries the request's id in its options.
            if request.runNumber == nil, let runs, let run = Self.unfinishedRun(of: request.id, in: runs) {
                request.status = "running"
                request.runNumber = run.number
                try? store.update(request)
                resumable.append((request, run))
                continue
            }
            if request.status == "running", let number = request.runNumber,
               let runs, let run = try? runs.run(number: number), run.status.isFinal {
                request.status = run.status.rawValue
                request.finishedAt = run.finishedAt ?? Date()
            } else {
                request.status = "queued"
                request.reason = "re-queued after the server restarted"
            }
            try? store.update(request)
        }
        return resumable
    }

    /// The unfinished run started for request `id`, among a project's recent runs.
    static func unfinishedRun(of id: Int64, in runs: SQLRunStore) -> RunRecord? {
        for run in (try? runs.runs(limit: 200)) ?? [] where !run.status.isFinal {
            if let options = try? JSONDecoder().decode(RunOptions.self, from: Data(run.options.utf8)), options.requestID == id { return run }
        }
        return nil
    }

    /// `concurrency` with `cancel-in-progress`: in each group only the newest request goes on — older
    /// queued ones are cancelled, a running one is stopped. The group of a queued request comes from the
    /// project's most recently prepared pipeline (its own file is read only when it starts).
    func supersede() {
        let (policies, groups) = state.withLock { ($0.policies, $0.groups) }
        for (project, policy) in policies where policy.cancelInProgress {
            guard let queued = try? store.queuedRequests(project: project), !queued.isEmpty else { continue }
            var newest: [String: Int64] = [:]
            var groupOf: [Int64: String] = [:]
            for request in queued {
                let inputs = request.inputValues
                guard let group = policy.groupName(event: request.event, branch: request.branch, tag: request.tag, inputs: inputs) else { continue }
                groupOf[request.id] = group
                newest[group] = max(newest[group] ?? 0, request.id)
            }
            for request in queued {
                guard let group = groupOf[request.id], let winner = newest[group], winner != request.id else { continue }
                _ = try? store.cancelQueued(id: request.id, reason: "superseded by request \(winner) (concurrency group '\(group)', cancel-in-progress)")
            }
            for (id, running) in groups where running.project == project {
                guard let winner = newest[running.group], winner > id else { continue }
                let reason = "superseded by request \(winner) (concurrency group '\(running.group)', cancel-in-progress)"
                let engine = state.withLock { state -> RunEngine? in
                    guard state.superseded[id] == nil else { return nil }
                    state.superseded[id] = reason
                    return state.engines[id]
                }
                if let engine {
                    try? store.requestCancel(id: id, reason: reason)
                    engine.control.cancel()
                }
            }
        }
    }

    /// Cancels the run a request started, if it is running here.
    public func cancel(request id: Int64, reason: String = "cancelled") -> Bool {
        guard let engine = state.withLock({ $0.engines[id] }) else { return false }
        // Durable first: if the server stops before the run has ended, the next start ends it.
        try? store.requestCancel(id: id, reason: reason)
        state.withLock { $0.superseded[id] = $0.superseded[id] ?? reason }
        engine.control.cancel()
        return true
    }

    /// Structured logs, one line per request transition, with its ids.
    static let logger = Logger(label: "slipway.dispatcher")

    func execute(_ claimed: RunRequestRecord, resuming: RunRecord?) async {
        var request = claimed
        var logger = Self.logger
        logger[metadataKey: "project"] = "\(request.project)"
        logger[metadataKey: "request"] = "\(request.id)"
        logger[metadataKey: "source"] = "\(request.source)"
        logger.info(resuming == nil ? "request started" : "request resumed", metadata: resuming.map { ["run": "\($0.number)"] })
        defer {
            var metadata: Logger.Metadata = ["status": "\(request.status)"]
            if let run = request.runNumber { metadata["run"] = "\(run)" }
            if let reason = request.reason { metadata["reason"] = "\(reason)" }
            logger.info("request finished", metadata: metadata)
        }
        defer {
            state.withLock { state in
                state.running -= 1
                state.projects.remove(request.project)
                state.engines[request.id] = nil
                state.groups[request.id] = nil
                state.superseded[request.id] = nil
            }
            wake()
        }
        do {
            let finished = try await perform(&request, resuming: resuming)
            request.status = finished.status.rawValue
            request.runNumber = finished.number
            request.finishedAt = Date()
            // The source archive runners fetched is made again on demand (a resume); kept, every run would
            // leave a copy of its tree behind.
            unlink(layout.state(request.project).run(finished.number) + "/source.tar")
            if let reason = state.withLock({ $0.superseded[request.id] }) { request.reason = reason }
            try? FileManager.default.removeItem(atPath: layout.checkout(request.project, request: request.id))
        } catch let outcome as Outcome {
            request.status = outcome.status
            request.reason = outcome.reason
            request.finishedAt = Date()
            try? FileManager.default.removeItem(atPath: layout.checkout(request.project, request: request.id))
        } catch {
            request.status = "error"
            request.reason = "\(error)"
            request.finishedAt = Date()
        }
        try? store.update(request)
    }

    /// A request that ended without a run (skipped by `on:`, or an error before the run started).
    struct Outcome: Error, Sendable {
        var status: String
        var reason: String
    }

    private func perform(_ request: inout RunRequestRecord, resuming: RunRecord?) async throws -> RunRecord {
        guard let project = try store.project(named: request.project) else {
            throw Outcome(status: "error", reason: "project '\(request.project)' no longer exists")
        }
        let projectState = layout.state(project.name)
        guard let runs = try runStores.store(for: project.name, create: true) else { throw ServerError("cannot open the run store of \(project.name)") }
        let checkout = layout.checkout(project.name, request: request.id)
        let requestID = request.id
        let observer = RequestObserver { [store] run in
            guard var current = try? store.request(id: requestID) else { return }
            current.status = "running"
            current.runNumber = run.number
            try? store.update(current)
        }
        // Webhook secrets and the database password live in the server's environment: no step sees them.
        let hidden = ((try? store.projects()) ?? []).compactMap(\.secretVariable) + ["SLIPWAY_TOKEN", "PGPASSWORD", "PGPASSFILE"]
        let engine = RunEngine(store: runs, layout: projectState, project: checkout, secrets: secrets, observer: observer,
                               releases: ReleaseService(store: runs, dataRoot: projectState.root), hiddenVariables: hidden,
                               remote: remote, projectName: project.name)
        state.withLock { $0.engines[requestID] = engine }
        if let resuming {
            return try await engine.resume(run: resuming)
        }

        let prepared = try await BlockingWork.run { [request, layout] in
            try Self.prepare(request, project: project, mirror: RepositoryMirror(source: project.repository, path: layout.mirror(project.name)), into: checkout)
        }
        request.commit = prepared.commit
        let inputs = request.inputValues
        let policy = prepared.pipeline.concurrency
        let group = policy?.groupName(event: request.event, branch: request.branch, tag: request.tag, inputs: inputs)
        let projectName = project.name
        state.withLock { state in
            state.policies[projectName] = policy
            if let group { state.groups[requestID] = (projectName, group) }
        }
        // A newer request of the same group may already be waiting.
        supersede()
        if state.withLock({ $0.superseded[requestID] != nil }) {
            throw Outcome(status: "cancelled", reason: state.withLock { $0.superseded[requestID] } ?? "superseded")
        }
        // A pull request is matched against `on:` with its base branch but runs as its own ref: it is
        // not the base branch (protection rules must not take it for one).
        let runBranch = request.event == "pull_request" ? "pull/" + (request.headRef ?? "head") : request.branch
        let options = RunOptions(event: request.event, branch: runBranch, inputs: inputs,
                                 parallelism: ProcessInfo.processInfo.activeProcessorCount, exportedCommit: prepared.commit, requestID: requestID)
        return try await engine.start(pipeline: prepared.pipeline, pipelineText: prepared.text, options: options)
    }

    struct Prepared: Sendable {
        var commit: String
        var pipeline: Pipeline
        var text: String
    }

    /// The commit exported into `directory`, its pipeline loaded and `on:` asked. Blocking (git), so it
    /// runs off the concurrency pool.
    static func prepare(_ request: RunRequestRecord, project: ProjectRecord, mirror: RepositoryMirror, into directory: String) throws -> Prepared {
        // A webhook names its commit: when the mirror has it already, no fetch is needed.
        // A webhook names its full commit: try it straight from the mirror (one git process) and fetch
        // only when the mirror does not have it yet.
        var exported: String?
        if let commit = request.commit, commit.count == 40, commit.allSatisfy(\.isHexDigit), (try? mirror.export(commit, into: directory)) != nil {
            exported = commit
        }
        if exported == nil {
            do { try mirror.update() } catch { throw Outcome(status: "error", reason: "cannot fetch \(RepositoryMirror.redacted(project.repository)): \(error.message)") }
            let revision = request.commit ?? request.branch.map { "refs/heads/" + $0 } ?? request.tag.map { "refs/tags/" + $0 } ?? "HEAD"
            guard let resolved = mirror.resolve(revision) else {
                throw Outcome(status: "error", reason: "\(request.commit.map { "commit \($0)" } ?? revision) is not in \(RepositoryMirror.redacted(project.repository))")
            }
            do { try mirror.export(resolved, into: directory) } catch { throw Outcome(status: "error", reason: error.message) }
            exported = resolved
        }
        let commit = exported!

        let fileURL = URL(fileURLWithPath: directory + "/" + project.file)
        let loaded = PipelineLoader.load(contentsOf: fileURL, displayName: project.file)
        guard let pipeline = loaded.pipeline else {
            let errors = loaded.errors.prefix(10).map { "\($0.location): \($0.message)" }.joined(separator: "; ")
            throw Outcome(status: "error", reason: "\(project.file) at \(commit.prefix(12)) has errors: \(errors)")
        }
        // Changed files only matter to path filters: git is asked only then.
        let filter = request.event == "push" ? pipeline.triggers.push : request.event == "pull_request" ? pipeline.triggers.pullRequest : nil
        var changed: [String]?
        if let filter, !filter.paths.isEmpty || !filter.pathsIgnore.isEmpty {
            changed = request.changedFiles.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
            if changed == nil {
                if request.event == "pull_request", let base = request.branch.flatMap({ mirror.resolve("refs/heads/" + $0) }) {
                    let mergeBase = Helper.run(["git", "--git-dir", mirror.path, "merge-base", base, commit], in: "/")
                    changed = mirror.changedFiles(from: mergeBase.status == 0 ? mergeBase.text : nil, to: commit)
                } else {
                    // The whole push (before..after), or the last commit when the previous head is unknown.
                    changed = mirror.changedFiles(from: request.before ?? mirror.resolve(commit + "~1"), to: commit)
                }
            }
        }
        let decision = TriggerMatcher.decide(pipeline.triggers, event: request.event, branch: request.branch, tag: request.tag, changedFiles: changed)
        guard decision.matches else { throw Outcome(status: "skipped", reason: decision.reason) }
        // A commit named together with a branch must be on that branch: the branch is what protection
        // rules (allowed branches for deploys) look at.
        if request.event != "pull_request", let named = request.commit, let branch = request.branch,
           let head = mirror.resolve("refs/heads/" + branch), head != commit {
            let ancestor = Helper.run(["git", "--git-dir", mirror.path, "merge-base", "--is-ancestor", commit, head], in: "/")
            guard ancestor.status == 0 else {
                throw Outcome(status: "error", reason: "commit \(named.prefix(12)) is not on branch \(branch)")
            }
        }
        let text = (try? String(contentsOf: fileURL, encoding: .utf8)) ?? ""
        return Prepared(commit: commit, pipeline: pipeline, text: text)
    }
}

/// Blocking work (git, file copies) off the concurrency pool, so it never holds up HTTP requests: each
/// call gets a serial queue of its own, which runs on dispatch's overcommit threads (made as needed,
/// reused). A shared concurrent queue would not do: on Linux it runs on the pool's own threads.
enum BlockingWork {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue(label: "slipway.server.blocking").async { continuation.resume(with: Result { try body() }) }
        }
    }
}

/// Records the run number on the request as soon as the engine has created the run.
struct RequestObserver: RunObserver {
    let started: @Sendable (RunRecord) -> Void
    func progress(_ event: RunProgress) {
        if case .runStarted(let run, _, _) = event { started(run) }
    }
}

/// A wake-up that is not lost when it comes before anyone waits.
final class WakeSignal: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns at the next signal (or at once if one is pending), after `timeout`, or when cancelled.
    func wait(atMost timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            // Cancelling the loser unregisters the signal waiter (see `waitForSignal`).
            group.cancelAll()
        }
    }

    private func waitForSignal() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
