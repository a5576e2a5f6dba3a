import Foundation
import Hummingbird
import SlipwayDeploy
import SlipwayCore
import SlipwayEngine
import SlipwayStore

/// The JSON API under `/api`, `/health` and `/metrics`.
struct APIController: Sendable {
    let services: ServerServices
    var store: ServerStore { services.store }

    struct Health: Encodable {
        var status = "ok"
        var queued: Int
        var running: Int
    }

    @Sendable func health(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(Health(queued: (try? store.queueDepth()) ?? 0, running: services.dispatcher.runningCount))
    }

    @Sendable func openAPI(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let data = try JSONSerialization.data(withJSONObject: ServerRoutes.openAPIDocument(), options: [.sortedKeys])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    struct ProjectView: Encodable {
        var name: String
        var repository: String
        var file: String
        var webhookSecretVariable: String?
        var webhookSecretSet: Bool
        var createdAt: Date
    }

    func view(_ project: ProjectRecord) -> ProjectView {
        ProjectView(name: project.name, repository: RepositoryMirror.redacted(project.repository), file: project.file, webhookSecretVariable: project.secretVariable,
                    webhookSecretSet: project.secretVariable.map { !(services.environment[$0] ?? "").isEmpty } ?? false, createdAt: project.createdAt)
    }

    @Sendable func projects(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(try guarded { try store.projects() }.map(view))
    }

    func project(named name: String?) throws -> ProjectRecord {
        guard let name, let project = try guarded({ try store.project(named: name) }) else {
            throw HTTPError(.notFound, message: "no project named '\(name ?? "")'")
        }
        return project
    }

    @Sendable func project(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(view(try project(named: context.parameters.get("project"))))
    }

    @Sendable func requests(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let limit = min(max(Int(request.uri.queryParameters.get("limit") ?? "") ?? 50, 1), 500)
        return try JSONResponse.make(try guarded { try store.requests(project: project.name, limit: limit) })
    }

    struct TriggerBody: Decodable {
        var branch: String?
        var tag: String?
        var commit: String?
        var event: String?
        var inputs: [String: String]?
    }

    @Sendable func trigger(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let buffer = try await request.body.collect(upTo: 64 * 1024)
        var body = TriggerBody()
        if buffer.readableBytes > 0 {
            do { body = try JSONDecoder().decode(TriggerBody.self, from: Data(buffer: buffer)) } catch {
                throw HTTPError(.badRequest, message: "the body must be a JSON object with optional branch, tag, commit, event, inputs (strings)")
            }
        }
        let event = body.event ?? "manual"
        guard TriggerMatcher.events.contains(event) else {
            throw HTTPError(.badRequest, message: "unknown event '\(event)'; events are \(TriggerMatcher.events.joined(separator: ", "))")
        }
        if let commit = body.commit, commit.isEmpty || commit.count > 64 || !commit.allSatisfy(\.isHexDigit) {
            throw HTTPError(.badRequest, message: "commit must be a hex commit id")
        }
        for name in [body.branch, body.tag].compactMap({ $0 }) where name.isEmpty || name.hasPrefix("-") || name.contains("..") || name.contains(where: { $0.isNewline || $0 == " " }) {
            throw HTTPError(.badRequest, message: "'\(name)' is not a valid branch or tag name")
        }
        let inputs = body.inputs.flatMap { try? JSONEncoder().encode($0) }.map { String(decoding: $0, as: UTF8.self) }
        let queued = try guarded {
            try store.enqueue(RunRequestRecord(project: project.name, event: event, branch: body.branch, tag: body.tag, commit: body.commit,
                                               inputs: inputs, source: "api:\(context.token?.name ?? "?")"))
        }
        services.dispatcher.wake()
        return try JSONResponse.make(queued, status: .accepted)
    }

    func requestRecord(_ context: ServerRequestContext) throws -> RunRequestRecord {
        guard let id = context.parameters.get("id").flatMap(Int64.init), let record = try guarded({ try store.request(id: id) }) else {
            throw HTTPError(.notFound, message: "no such request")
        }
        return record
    }

    @Sendable func request(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(try requestRecord(context))
    }

    @Sendable func cancel(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let record = try requestRecord(context)
        if record.isFinal { throw HTTPError(.conflict, message: "request \(record.id) already finished (\(record.status))") }
        let reason = "cancelled by \(context.token?.name ?? "?") before it started"
        // Only if still queued: a dispatcher that claimed it meanwhile is asked to stop it instead.
        if record.status == "queued", try guarded({ try store.cancelQueued(id: record.id, reason: reason) }) {
            return try JSONResponse.make(try requestRecord(context), status: .accepted)
        }
        guard services.dispatcher.cancel(request: record.id, reason: "cancelled by \(context.token?.name ?? "?")") else {
            throw HTTPError(.conflict, message: "request \(record.id) is \((try? requestRecord(context))?.status ?? record.status) and not running here; try again")
        }
        return try JSONResponse.make(try requestRecord(context), status: .accepted)
    }

    func runStore(_ project: ProjectRecord) throws -> SQLRunStore {
        let store: SQLRunStore?
        do { store = try services.dispatcher.runStores.store(for: project.name, create: false) } catch {
            throw HTTPError(.internalServerError, message: "cannot open the runs of \(project.name): \(error)")
        }
        guard let store else { throw HTTPError(.notFound, message: "project '\(project.name)' has no runs yet") }
        return store
    }

    struct RunView: Encodable {
        var number: Int64
        var pipeline: String
        var event: String
        var branch: String?
        var commit: String?
        var status: String
        var createdAt: Date
        var finishedAt: Date?
        var jobs: [JobView]?
    }

    struct JobView: Encodable {
        var key: String
        var status: String
        var attempts: Int
        var reason: String?
        var cacheHit: Bool
        var startedAt: Date?
        var finishedAt: Date?
        /// Every attempt with how it ended (a lost runner, a retried failure), oldest first; in the one-run view.
        var attemptHistory: [AttemptView]?
    }

    struct AttemptView: Encodable {
        var number: Int
        var status: String
        var failure: String?
    }

    func view(_ run: RunRecord, jobs: [JobRecord]? = nil, runs: SQLRunStore? = nil) -> RunView {
        RunView(number: run.number, pipeline: run.pipelineName, event: run.event, branch: run.branch, commit: run.commit, status: run.status.rawValue,
                createdAt: run.createdAt, finishedAt: run.finishedAt,
                jobs: jobs?.map { job in
                    let history = runs.map { store in ((try? store.attempts(jobRowID: job.id)) ?? []).map { AttemptView(number: $0.number, status: $0.status.rawValue, failure: $0.failure) } }
                    return JobView(key: job.key, status: job.status.rawValue, attempts: job.attempts, reason: job.reason, cacheHit: job.cacheHit,
                                   startedAt: job.startedAt, finishedAt: job.finishedAt, attemptHistory: history)
                })
    }

    @Sendable func runs(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let limit = min(max(Int(request.uri.queryParameters.get("limit") ?? "") ?? 50, 1), 500)
        let runs = try runStore(project)
        return try JSONResponse.make(try guarded { try runs.runs(limit: limit) }.map { view($0) })
    }

    func runRecord(_ context: ServerRequestContext) throws -> (SQLRunStore, RunRecord) {
        let project = try project(named: context.parameters.get("project"))
        let runs = try runStore(project)
        guard let number = context.parameters.get("number").flatMap(Int64.init), let run = try guarded({ try runs.run(number: number) }) else {
            throw HTTPError(.notFound, message: "no such run")
        }
        return (runs, run)
    }

    @Sendable func run(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let (runs, run) = try runRecord(context)
        return try JSONResponse.make(view(run, jobs: try guarded { try runs.jobs(runID: run.id) }, runs: runs))
    }

    /// A run's artifacts, by job: `[{job, files, bytes}]` for the jobs that kept any.
    @Sendable func artifacts(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let (runs, run) = try runRecord(context)
        let state = services.layout.state(project.name)
        let jobs = try guarded { try runs.jobs(runID: run.id) }
        struct Entry: Encodable { var job: String; var files: Int; var bytes: Int64 }
        let entries = try await BlockingWork.run {
            jobs.compactMap { job -> Entry? in
                let directory = state.artifacts(run.number, job: job.key)
                guard let walker = FileManager.default.enumerator(atPath: directory) else { return nil }
                var files = 0
                var bytes: Int64 = 0
                while let relative = walker.nextObject() as? String {
                    var info = stat()
                    guard lstat(directory + "/" + relative, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
                    files += 1
                    bytes += Int64(info.st_size)
                }
                return Entry(job: job.key, files: files, bytes: bytes)
            }
        }
        return try JSONResponse.make(entries)
    }

    /// One job's artifacts as a tar archive. The job must be one of the run's: its name never becomes a path
    /// unless a job record has it.
    @Sendable func artifact(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let (runs, run) = try runRecord(context)
        let key = context.parameters.get("job") ?? ""
        guard try guarded({ try runs.jobs(runID: run.id) }).contains(where: { $0.key == key }) else {
            throw HTTPError(.notFound, message: "run #\(run.number) has no job '\(key.prefix(100))'")
        }
        let state = services.layout.state(project.name)
        let directory = state.artifacts(run.number, job: key)
        guard FileManager.default.fileExists(atPath: directory) else {
            throw HTTPError(.notFound, message: "job '\(key)' of run #\(run.number) kept no artifacts")
        }
        let file = state.run(run.number) + "/download-\(UInt32.random(in: 0...UInt32.max)).tar"
        try await BlockingWork.run { try TarArchive.create(from: directory, to: file) }
        defer { unlink(file) }
        return try RunnerController.tarResponse(file)
    }

    /// What `slipway status` shows for the project's environments: the agent's instances, traffic and
    /// metrics, and each environment's latest rollout with its analysis. `?environment=NAME` for one.
    @Sendable func environments(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        let environment: String? = request.uri.queryParameters.get("environment").map { String($0) }
        guard let runs = try guarded({ try services.dispatcher.runStores.store(for: project.name, create: false) }) else {
            return try JSONResponse.make([EnvironmentView]())
        }
        let agent = AgentClient(dataDirectory: services.layout.state(project.name).root)
        let running = await agent.isRunning() ? ((try? await agent.status()) ?? []) : []
        return try JSONResponse.make(try await BlockingWork.run { try EnvironmentView.collect(environment: environment, running: running, store: runs) })
    }

    /// What `slipway explain SUBJECT` says for the project's runs: `?run=N`, `?rollout=N` as on the command line.
    @Sendable func explain(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let project = try project(named: context.parameters.get("project"))
        guard let subject = context.parameters.get("subject"), !subject.isEmpty, subject.count <= 300 else {
            throw HTTPError(.badRequest, message: "name a job, an instance key or an environment")
        }
        let query = request.uri.queryParameters
        var numbers: [String: Int64] = [:]
        for name in ["run", "rollout"] {
            guard let text = query.get(name) else { continue }
            guard let number = Int64(text), number > 0 else { throw HTTPError(.badRequest, message: "?\(name)= takes a positive number") }
            numbers[name] = number
        }
        guard let runs = try guarded({ try services.dispatcher.runStores.store(for: project.name, create: false) }) else {
            throw HTTPError(.notFound, message: "project \(project.name) has no runs yet")
        }
        let lines: [ExplainLine]
        do {
            let (run, rollout) = (numbers["run"], numbers["rollout"])
            lines = try await BlockingWork.run { try JobExplainer.explain(subject, runNumber: run, rollout: rollout, store: runs) }
        } catch let error as EngineError {
            throw HTTPError(.notFound, message: error.message)
        }
        struct Explanation: Encodable { var lines: [ExplainLine] }
        return try JSONResponse.make(Explanation(lines: lines))
    }

    /// Every step log of a run (or of `?job=KEY`), in order, each headed by its job and step. With
    /// `?follow=1`, Server-Sent Events: a `log` event per line as it is written, `end` when the run is over.
    @Sendable func logs(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let (runs, run) = try runRecord(context)
        let logRoot = services.layout.state(try project(named: context.parameters.get("project")).name).run(run.number) + "/logs"
        var cursor = LogCursor(runID: run.id, job: request.uri.queryParameters.get("job"), logRoot: logRoot)
        guard request.uri.queryParameters.get("follow") == "1" else {
            var text = ""
            var header = ""
            for line in try guarded({ try cursor.next(runs) }) {
                let step = "== \(line.job) #\(line.attempt) · \(line.step)\n"
                if step != header {
                    text += step
                    header = step
                }
                text += line.text + "\n"
            }
            return JSONResponse.text(text)
        }
        let number = run.number
        let start = cursor
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: ResponseBody { writer in
            var cursor = start
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            // Bounded: a client that never leaves is let go after a day.
            let deadline = ContinuousClock.now + .seconds(86_400)
            while ContinuousClock.now < deadline {
                // Whether the run was over before this read: then the read has everything.
                let finished = (try? runs.run(number: number))?.status.isFinal ?? true
                for line in (try? cursor.next(runs)) ?? [] {
                    let data = String(decoding: try encoder.encode(line), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "event: log\ndata: \(data)\n\n"))
                }
                if finished {
                    let status = (try? runs.run(number: number))?.status.rawValue ?? "unknown"
                    try await writer.write(ByteBuffer(string: "event: end\ndata: {\"status\":\"\(status)\"}\n\n"))
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            try await writer.finish(nil)
        })
    }

    struct TokenView: Encodable {
        var id: Int64
        var name: String
        var role: String
        var createdAt: Date
    }

    @Sendable func tokens(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(try guarded { try store.tokens() }.map { TokenView(id: $0.id, name: $0.name, role: $0.role.rawValue, createdAt: $0.createdAt) })
    }

    /// Prometheus text format.
    @Sendable func metrics(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        var lines: [String] = []
        lines.append("# HELP slipway_queue_depth Run requests waiting for the dispatcher.")
        lines.append("# TYPE slipway_queue_depth gauge")
        lines.append("slipway_queue_depth \((try? store.queueDepth()) ?? 0)")
        lines.append("# HELP slipway_runs_running Runs executing now.")
        lines.append("# TYPE slipway_runs_running gauge")
        lines.append("slipway_runs_running \(services.dispatcher.runningCount)")
        let runners = services.broker.snapshot()
        lines.append("# HELP slipway_runners Remote runners by state.")
        lines.append("# TYPE slipway_runners gauge")
        lines.append("slipway_runners{state=\"online\"} \(runners.runners.filter(\.online).count)")
        lines.append("slipway_runners{state=\"offline\"} \(runners.runners.filter { !$0.online }.count)")
        lines.append("# HELP slipway_runner_leases Jobs leased to remote runners now.")
        lines.append("# TYPE slipway_runner_leases gauge")
        lines.append("slipway_runner_leases \(runners.leases)")
        lines.append("# HELP slipway_runner_queue_depth Jobs waiting for a matching remote runner.")
        lines.append("# TYPE slipway_runner_queue_depth gauge")
        lines.append("slipway_runner_queue_depth \(runners.queued.count)")
        lines.append("# HELP slipway_runner_leases_total Jobs handed to remote runners.")
        lines.append("# TYPE slipway_runner_leases_total counter")
        lines.append("slipway_runner_leases_total \(runners.dispatchedTotal)")
        lines.append("# HELP slipway_runner_lost_total Leases taken back because their runner stopped answering.")
        lines.append("# TYPE slipway_runner_lost_total counter")
        lines.append("slipway_runner_lost_total \(runners.lostTotal)")
        lines.append("# HELP slipway_webhook_deliveries_total Webhook deliveries by result.")
        lines.append("# TYPE slipway_webhook_deliveries_total counter")
        for (result, count) in ((try? store.deliveryCounts()) ?? [:]).sorted(by: { $0.key < $1.key }) {
            lines.append("slipway_webhook_deliveries_total{result=\"\(result)\"} \(count)")
        }
        let durations = (try? store.requestDurations()) ?? []
        Self.histogram("slipway_queue_wait_seconds", help: "Time from a request being queued to its dispatch.",
                       samples: durations.map { ("", $0.waited) }, into: &lines)
        Self.histogram("slipway_run_duration_seconds", help: "Time from dispatch to the end of a request, by outcome.",
                       samples: durations.compactMap { entry in entry.ran.map { ("status=\"\(entry.status)\"", $0) } }, into: &lines)
        lines.append("# HELP slipway_http_requests_total HTTP requests by method and status.")
        lines.append("# TYPE slipway_http_requests_total counter")
        for (key, count) in services.requestCounts.snapshot().sorted(by: { ($0.key.method, $0.key.status) < ($1.key.method, $1.key.status) }) {
            lines.append("slipway_http_requests_total{method=\"\(key.method)\",status=\"\(key.status)\"} \(count)")
        }
        return JSONResponse.text(lines.joined(separator: "\n") + "\n", contentType: "text/plain; version=0.0.4")
    }

    static let buckets: [Double] = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]

    /// A Prometheus histogram (cumulative buckets, sum, count) per label set.
    static func histogram(_ name: String, help: String, samples: [(String, Double)], into lines: inout [String]) {
        lines.append("# HELP \(name) \(help)")
        lines.append("# TYPE \(name) histogram")
        let byLabels = Dictionary(grouping: samples, by: \.0)
        for labels in byLabels.keys.sorted() {
            let values = byLabels[labels]!.map { max(0, $0.1) }
            let prefix = labels.isEmpty ? "" : labels + ","
            for bound in buckets {
                lines.append("\(name)_bucket{\(prefix)le=\"\(bound)\"} \(values.filter { $0 <= bound }.count)")
            }
            lines.append("\(name)_bucket{\(prefix)le=\"+Inf\"} \(values.count)")
            let suffix = labels.isEmpty ? "" : "{\(labels)}"
            lines.append("\(name)_sum\(suffix) \(values.reduce(0, +))")
            lines.append("\(name)_count\(suffix) \(values.count)")
        }
    }

    /// Store failures are the server's fault (500), with the message; anything else passes through.
    func guarded<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StoreError {
            throw HTTPError(.internalServerError, message: error.message)
        }
    }
}

/// Reads a run's step logs incrementally: each call returns the complete lines written since the last.
struct LogCursor: Sendable {
    struct Line: Encodable, Sendable {
        var job: String
        var attempt: Int
        var step: String
        var stream: String
        var time: Double?
        var text: String
    }

    let runID: Int64
    let job: String?
    let logRoot: String
    /// Lines already returned, per step log.
    private var seen: [String: Int] = [:]

    init(runID: Int64, job: String?, logRoot: String) {
        self.runID = runID
        self.job = job
        self.logRoot = (logRoot as NSString).standardizingPath
    }

    mutating func next(_ runs: SQLRunStore) throws -> [Line] {
        var lines: [Line] = []
        for record in try runs.jobs(runID: runID) where job == nil || record.key == job || record.jobID == job {
            for attempt in try runs.attempts(jobRowID: record.id) {
                for step in try runs.steps(attemptID: attempt.id) {
                    // Only files inside this run's log directory are read, whatever the database says.
                    let path = (step.logPath as NSString).standardizingPath
                    guard path.hasPrefix(logRoot + "/"), let data = FileManager.default.contents(atPath: path) else { continue }
                    // A line is complete once its newline is written.
                    let complete = data.lastIndex(of: UInt8(ascii: "\n")).map { data[...$0] } ?? Data()
                    let parsed = LogReader.lines(of: Data(complete))
                    let already = seen[path] ?? 0
                    guard parsed.count > already else { continue }
                    for line in parsed[already...] {
                        lines.append(Line(job: record.key, attempt: attempt.number, step: step.name, stream: String(line.stream),
                                          time: line.time?.timeIntervalSince1970, text: String(line.text)))
                    }
                    seen[path] = parsed.count
                }
            }
        }
        return lines
    }
}
