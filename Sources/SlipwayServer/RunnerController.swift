import Foundation
import Hummingbird
import HTTPTypes
import SlipwayCore
import SlipwayEngine
import SlipwayStore

/// What remote runners call: lease work (long poll), heartbeat, fetch the source and upstream
/// artifacts, report steps and logs, upload artifacts, complete. Every lease route is fenced: a lease
/// the broker has taken back answers 409 and the runner drops the attempt.
struct RunnerController: Sendable {
    let services: ServerServices
    var broker: RunnerBroker { services.broker }

    /// The runner's name travels in this header on lease routes, so one runner cannot report into
    /// another's lease.
    static let runnerHeader = HTTPField.Name("Slipway-Runner")!

    struct LeaseBody: Decodable {
        var name: String
        var labels: [String]
        var capacity: Int?
        /// Seconds to wait for work (1…60, default 25).
        var wait: Double?
    }

    struct HeartbeatBody: Decodable {
        var name: String
        var labels: [String]
        var capacity: Int?
        var leases: [Int64]
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int = 1 << 20, what: String) async throws -> T {
        let buffer = try await request.body.collect(upTo: limit)
        let decoder = JSONDecoder()
        // Seconds with their fraction: ISO 8601 here would round step times to the second.
        decoder.dateDecodingStrategy = .secondsSince1970
        do { return try decoder.decode(T.self, from: Data(buffer: buffer)) } catch {
            throw HTTPError(.badRequest, message: "the body must be \(what)")
        }
    }

    static func info(name: String, labels: [String], capacity: Int?) throws -> RunnerBroker.RunnerInfo {
        guard RunnerProgress.isValidName(name) else { throw HTTPError(.badRequest, message: "a runner name is 1–100 letters, digits, '.', '_' or '-'") }
        guard labels.count <= 50, labels.allSatisfy(RunnerProgress.isValidName) else { throw HTTPError(.badRequest, message: "labels are up to 50 names of letters, digits, '.', '_' or '-'") }
        return .init(name: name, labels: labels, capacity: min(max(capacity ?? 1, 1), 256))
    }

    @Sendable func lease(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let body = try await Self.decode(LeaseBody.self, request, what: "a JSON object with name, labels and optional capacity and wait")
        let runner = try Self.info(name: body.name, labels: body.labels, capacity: body.capacity)
        let wait = min(max(body.wait ?? 25, 0), 60)
        guard let assignment = await broker.lease(runner, wait: .milliseconds(Int64(wait * 1000))) else {
            return Response(status: .noContent)
        }
        return try JSONResponse.make(assignment)
    }

    @Sendable func heartbeat(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let body = try await Self.decode(HeartbeatBody.self, request, what: "a JSON object with name, labels and leases")
        let runner = try Self.info(name: body.name, labels: body.labels, capacity: body.capacity)
        return try JSONResponse.make(broker.heartbeat(runner, leases: Array(body.leases.prefix(1024))))
    }

    /// The current attempt of the lease in the path, or 409 (taken back) / 404 (never known is the same to a runner).
    func attempt(_ request: Request, _ context: ServerRequestContext) throws -> RemoteAttempt {
        guard let lease = context.parameters.get("lease").flatMap(Int64.init), lease > 0 else {
            throw HTTPError(.notFound, message: "no such lease")
        }
        let runner = request.headers[Self.runnerHeader]
        guard let attempt = broker.attempt(lease: lease, runner: runner) else {
            throw HTTPError(.conflict, message: "lease \(lease) is not held by \(runner.map { "runner '\($0)'" } ?? "this runner"): it ended or was taken back (its attempt was queued again); drop it")
        }
        return attempt
    }

    static func tarResponse(_ file: String) throws -> Response {
        guard let data = FileManager.default.contents(atPath: file) else { throw HTTPError(.internalServerError, message: "cannot read \(file)") }
        return Response(status: .ok, headers: [.contentType: "application/x-tar"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    @Sendable func source(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let attempt = try attempt(request, context)
        let number = attempt.assignment.runNumber
        let file = attempt.layout.run(number) + "/source.tar"
        let directory = attempt.sourceDirectory
        try await BlockingWork.run {
            // The snapshot does not change during a run: one archive serves every job of it.
            if !FileManager.default.fileExists(atPath: file) { try TarArchive.create(from: directory, to: file) }
        }
        return try Self.tarResponse(file)
    }

    @Sendable func upstream(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let attempt = try attempt(request, context)
        guard let index = context.parameters.get("index").flatMap(Int.init), attempt.upstreamDirectories.indices.contains(index) else {
            throw HTTPError(.notFound, message: "no such upstream job for this lease")
        }
        let directory = attempt.upstreamDirectories[index]
        let file = attempt.layout.run(attempt.assignment.runNumber) + "/upstream-\(attempt.assignment.lease)-\(index).tar"
        try await BlockingWork.run { try TarArchive.create(from: directory, to: file) }
        defer { unlink(file) }
        return try Self.tarResponse(file)
    }

    @Sendable func progress(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let attempt = try attempt(request, context)
        let body = try await Self.decode(RunnerProgress.self, request, limit: 16 << 20, what: "a JSON object with steps and logs")
        // Again after the body: the lease may have been taken back while it arrived.
        _ = try self.attempt(request, context)
        guard let record = attempt.attemptRecord else { throw HTTPError(.conflict, message: "this attempt has no record on the server") }
        let a = attempt.assignment
        try await BlockingWork.run {
            for chunk in body.logs where chunk.step >= 0 && chunk.step < 10_000 && chunk.offset >= 0 {
                guard let bytes = Data(base64Encoded: chunk.data) else { continue }
                try Self.append(bytes, at: chunk.offset, to: attempt.layout.log(a.runNumber, job: a.jobKey, attempt: a.attempt, step: chunk.step))
            }
            guard !body.steps.isEmpty else { return }
            let existing = Dictionary(((try? attempt.store.steps(attemptID: record.id)) ?? []).map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
            // Only the job's own steps: remote jobs have no release or deploy step after them.
            for report in body.steps where report.index >= 0 && report.index < a.resolved.steps.count {
                var step = existing[report.index] ?? StepRecord(attemptID: record.id, index: report.index, name: "", logPath: attempt.layout.log(a.runNumber, job: a.jobKey, attempt: a.attempt, step: report.index))
                step.name = attempt.masker.mask(String(report.name.prefix(1000)))
                step.status = report.status
                step.exitCode = report.exitCode
                step.failure = report.failure.map { attempt.masker.mask(String($0.prefix(4000))) }
                step.startedAt = report.startedAt
                step.finishedAt = report.finishedAt
                // A runner's process group means nothing here: never one for the reaper to kill.
                step.processGroup = nil
                if step.id == 0 { _ = try attempt.store.insertStep(step) } else { try attempt.store.updateStep(step) }
            }
        }
        return try JSONResponse.make(["ok": true])
    }

    /// Appends the part of `bytes` past what the log already holds: a report sent twice writes once.
    static func append(_ bytes: Data, at offset: Int, to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HTTPError(.internalServerError, message: "cannot write a log") }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let size = Int(info.st_size)
        let skip = size - offset
        guard skip < bytes.count else { return }
        let fresh = skip > 0 ? bytes.dropFirst(skip) : bytes[...]
        _ = fresh.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    @Sendable func artifacts(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let attempt = try attempt(request, context)
        let buffer = try await request.body.collect(upTo: 2 << 30)
        _ = try self.attempt(request, context)
        let file = attempt.layout.run(attempt.assignment.runNumber) + "/artifacts-\(attempt.assignment.lease)-\(UInt32.random(in: 0...UInt32.max)).tar"
        let destination = attempt.artifactsDirectory
        // Unpacked beside the destination and swapped in only while the lease is still current: an upload
        // from a runner whose lease was taken back never replaces what the new attempt uploads.
        let staging = destination + ".lease-\(attempt.assignment.lease)-\(UInt32.random(in: 0...UInt32.max)).partial"
        try await BlockingWork.run {
            try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: file, contents: Data(buffer: buffer)) else { throw HTTPError(.internalServerError, message: "cannot store the upload") }
            defer { unlink(file) }
            try? FileManager.default.removeItem(atPath: staging)
            do { try TarArchive.extract(file, into: staging, untrusted: true) } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw HTTPError(.badRequest, message: "the body must be a tar archive: \((error as? EngineError)?.message ?? "\(error)")")
            }
        }
        do {
            _ = try self.attempt(request, context)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        try await BlockingWork.run {
            try? FileManager.default.removeItem(atPath: destination)
            guard rename(staging, destination) == 0 else {
                try? FileManager.default.removeItem(atPath: staging)
                throw HTTPError(.internalServerError, message: "cannot move the artifacts into place: \(String(cString: strerror(errno)))")
            }
        }
        return try JSONResponse.make(["ok": true])
    }

    @Sendable func complete(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        _ = try attempt(request, context)
        let result = try await Self.decode(RunnerAttemptResult.self, request, limit: 16 << 20, what: "a JSON object with status, failure, outputs and tests")
        let lease = context.parameters.get("lease").flatMap(Int64.init) ?? 0
        guard broker.complete(lease: lease, runner: request.headers[Self.runnerHeader], result: result) else {
            throw HTTPError(.conflict, message: "lease \(lease) was taken back before it completed; its attempt was queued again")
        }
        return try JSONResponse.make(["ok": true])
    }

    @Sendable func runners(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        try JSONResponse.make(broker.snapshot())
    }
}
