#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import SlipwayStore

/// One attempt of a job as a remote runner receives it: everything needed to run it without the
/// server's database. Secrets are in it already rendered into the steps (the channel is authenticated);
/// `maskedValues` lets the runner mask them in what it sends back.
public struct RunnerAssignment: Sendable, Codable, Equatable {
    /// Fencing token: every report about this attempt names it, and the server refuses reports for a
    /// lease it has since taken back.
    public var lease: Int64
    public var project: String
    public var runID: Int64
    public var runNumber: Int64
    public var pipelineName: String
    public var file: String
    public var event: String
    public var branch: String?
    public var commit: String?
    public var dirty: Bool
    public var instance: JobInstance
    public var attempt: Int
    public var resolved: ResolvedJob
    public var context: ExpressionContext
    /// Jobs whose artifacts are copied into the workspace first; fetched as `upstream/{index}`.
    public var upstream: [String]
    public var maskedValues: [String]

    public var jobKey: String { instance.key }

    public init(lease: Int64, project: String, runID: Int64, runNumber: Int64, pipelineName: String, file: String, event: String, branch: String?, commit: String?, dirty: Bool, instance: JobInstance, attempt: Int, resolved: ResolvedJob, context: ExpressionContext, upstream: [String], maskedValues: [String]) {
        self.lease = lease
        self.project = project
        self.runID = runID
        self.runNumber = runNumber
        self.pipelineName = pipelineName
        self.file = file
        self.event = event
        self.branch = branch
        self.commit = commit
        self.dirty = dirty
        self.instance = instance
        self.attempt = attempt
        self.resolved = resolved
        self.context = context
        self.upstream = upstream
        self.maskedValues = maskedValues
    }
}

/// An attempt the engine hands to remote runners, with where its results belong on the server.
public struct RemoteAttempt: Sendable {
    /// The assignment without a lease yet (`lease` is 0).
    public var assignment: RunnerAssignment
    /// The job's `runs-on`: a runner needs all of them.
    public var labels: [String]
    /// The attempt's row; the remote side's steps are recorded under it.
    public var attemptRecord: AttemptRecord?
    public var store: RunStore
    public var layout: DataLayout
    /// The run's snapshot: what the runner checks out.
    public var sourceDirectory: String
    /// Artifact directories of `assignment.upstream`, in the same order.
    public var upstreamDirectories: [String]
    /// Where the runner's artifacts go.
    public var artifactsDirectory: String
    public var masker: SecretMasker
    /// True once the run or this job is cancelled (fail-fast, Ctrl-C, a newer run superseding it).
    public var isCancelled: @Sendable () -> Bool

    public init(assignment: RunnerAssignment, labels: [String], attemptRecord: AttemptRecord?, store: RunStore, layout: DataLayout, sourceDirectory: String, upstreamDirectories: [String], artifactsDirectory: String, masker: SecretMasker, isCancelled: @escaping @Sendable () -> Bool) {
        self.assignment = assignment
        self.labels = labels
        self.attemptRecord = attemptRecord
        self.store = store
        self.layout = layout
        self.sourceDirectory = sourceDirectory
        self.upstreamDirectories = upstreamDirectories
        self.artifactsDirectory = artifactsDirectory
        self.masker = masker
        self.isCancelled = isCancelled
    }
}

/// Runs attempts on other machines. The engine asks it about every job with `runs-on` labels.
public protocol RemoteJobRunner: Sendable {
    /// Whether jobs with these labels go to remote runners; false runs them on this machine.
    func takes(labels: [String]) -> Bool
    /// Runs the attempt remotely and returns how it ended: `.failed(.runnerLost)` when the runner died
    /// or was cut off, `.cancelled` when `isCancelled` turned true.
    func run(_ attempt: RemoteAttempt) async -> AttemptOutcome
}

/// What a runner reports when an attempt ends.
public struct RunnerAttemptResult: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable { case success, failure, cancelled }
    public var status: Status
    public var failure: AttemptFailure?
    public var outputs: [String: String]
    public var tests: [TestResultRecord]

    public init(status: Status, failure: AttemptFailure? = nil, outputs: [String: String] = [:], tests: [TestResultRecord] = []) {
        self.status = status
        self.failure = failure
        self.outputs = outputs
        self.tests = tests
    }

    public init(_ outcome: AttemptOutcome, tests: [TestResultRecord]) {
        switch outcome {
        case .succeeded(let outputs), .cacheHit(let outputs): self.init(status: .success, outputs: outputs, tests: tests)
        case .failed(let failure, let outputs): self.init(status: .failure, failure: failure, outputs: outputs, tests: tests)
        case .cancelled: self.init(status: .cancelled, tests: tests)
        }
    }

    public var outcome: AttemptOutcome {
        switch status {
        case .success: .succeeded(outputs: outputs)
        // Only the server decides that a runner was lost: a runner cannot claim it to dodge `retry`.
        case .failure:
            if case .runnerLost(let reason)? = failure { .failed(.error(reason), outputs: outputs) }
            else { .failed(failure ?? .error("the runner reported a failure"), outputs: outputs) }
        case .cancelled: .cancelled
        }
    }

    /// The outcome with the runner's outputs kept as a local job keeps them: only the declared ones when
    /// the job declares any, masked before they are stored (a runner may echo a secret into one).
    public func outcome(declaredOutputs: [String], masker: SecretMasker) -> AttemptOutcome {
        var result = self
        let declared = Set(declaredOutputs)
        result.outputs = [:]
        for (name, value) in outputs where declared.isEmpty || declared.contains(name) {
            result.outputs[name] = masker.mask(value)
        }
        if case .error(let message)? = failure { result.failure = .error(masker.mask(message)) }
        if case .runnerLost(let message)? = failure { result.failure = .runnerLost(masker.mask(message)) }
        return result.outcome
    }
}

/// What a runner reports while an attempt runs (`POST …/leases/{lease}/progress`): changed step
/// records and new log bytes, each chunk at its offset in the step's log so a report sent twice writes once.
public struct RunnerProgress: Sendable, Codable {
    public struct Step: Sendable, Codable, Equatable {
        public var index: Int
        public var name: String
        public var status: WorkStatus
        public var exitCode: Int32?
        public var failure: String?
        public var startedAt: Date
        public var finishedAt: Date?

        public init(_ record: StepRecord) {
            index = record.index
            name = record.name
            status = record.status
            exitCode = record.exitCode
            failure = record.failure
            startedAt = record.startedAt
            finishedAt = record.finishedAt
        }
    }

    public struct LogChunk: Sendable, Codable {
        public var step: Int
        /// Where `data` starts in the step's log.
        public var offset: Int
        /// Base64 of the log bytes (already in the log file format and masked).
        public var data: String
        /// Bytes in `data`.
        public var count: Int

        public init(step: Int, offset: Int, data: Data) {
            self.step = step
            self.offset = offset
            self.data = data.base64EncodedString()
            self.count = data.count
        }
    }

    public var steps: [Step]
    public var logs: [LogChunk]

    public init(steps: [Step] = [], logs: [LogChunk] = []) {
        self.steps = steps
        self.logs = logs
    }

    /// Runner names and labels: 1–100 letters, digits, '.', '_' or '-'.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 100 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }
}

/// The runner's side: runs an assignment with the same `JobExecutor` as a local run, recording into
/// the runner's own scratch store and directories; the runner ships logs, step records, artifacts and
/// the result to the server.
public struct RemoteJobExecution: Sendable {
    public let store: RunStore
    public let layout: DataLayout
    public let gracePeriod: Duration
    /// Steps see it as `SLIPWAY_RUNNER`.
    public let runnerName: String

    public init(store: RunStore, layout: DataLayout, runnerName: String, gracePeriod: Duration = .seconds(5)) {
        self.runnerName = runnerName
        self.store = store
        self.layout = layout
        self.gracePeriod = gracePeriod
    }

    /// An assignment given local rows and paths.
    public struct Prepared: Sendable {
        public let assignment: RunnerAssignment
        public let run: RunRecord
        public let jobRowID: Int64
        public let attemptRecord: AttemptRecord
        public let layout: DataLayout

        /// Where the runner writes step `index`'s log.
        public func logPath(step index: Int) -> String { layout.log(run.number, job: assignment.jobKey, attempt: assignment.attempt, step: index) }
        /// Where the attempt's declared artifacts are collected.
        public var artifactsDirectory: String { layout.artifacts(run.number, job: assignment.jobKey) }
        /// Where the source goes (the runner extracts it here).
        public var sourceDirectory: String { layout.snapshot(run.number) }
        /// Where upstream artifacts go.
        public func upstreamDirectory(_ index: Int) -> String { layout.run(run.number) + "/upstream/\(index)" }
        /// Everything of this attempt on the runner's disk.
        public var directory: String { layout.run(run.number) }
    }

    public func prepare(_ assignment: RunnerAssignment) throws(EngineError) -> Prepared {
        do {
            let run = try store.createRun(RunRecord(pipelineName: assignment.pipelineName, file: assignment.file, pipelineText: "", event: assignment.event, branch: assignment.branch, commit: assignment.commit, dirty: assignment.dirty, workspace: "", options: "{}", pid: getpid()))
            try store.insertJobs([JobRecord(runID: run.id, key: assignment.jobKey, jobID: assignment.instance.jobID)])
            guard let row = try store.jobs(runID: run.id).first else { throw EngineError("the runner's scratch store lost a job row") }
            let attempt = try store.startAttempt(row, appending: RunEventRecord(runID: run.id, jobKey: assignment.jobKey, kind: "attempt-started", message: "lease \(assignment.lease)"), attempt: assignment.attempt)
            try FileTree.makeDirectories(layout.run(run.number))
            return Prepared(assignment: assignment, run: run, jobRowID: row.id, attemptRecord: attempt, layout: layout)
        } catch let error as EngineError {
            throw error
        } catch {
            throw EngineError("cannot prepare the attempt: \(error)")
        }
    }

    /// Runs the prepared attempt; the source and upstream artifacts must already be in place.
    public func run(_ prepared: Prepared, control: RunControl, observer: RunObserver?) async -> RunnerAttemptResult {
        let assignment = prepared.assignment
        let masker = SecretMasker(secrets: assignment.maskedValues.filter { !$0.isEmpty })
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLIPWAY_") }
        environment["SLIPWAY_RUNNER"] = runnerName
        let executor = JobExecutor(
            store: store, layout: layout, masker: masker, baseEnvironment: StepEnvironment(environment), live: nil, observer: observer,
            gracePeriod: gracePeriod, control: control, releases: nil, builtins: BuiltinSteps(store: store, releaseStore: nil),
            deployments: DeployContext(environments: [:], specs: [:], agentExecutable: RunEngine.currentExecutable()),
            workspaces: WorkspacePool(snapshot: prepared.sourceDirectory, root: prepared.directory + "/ws"))
        let upstream = assignment.upstream.indices.map(prepared.upstreamDirectory)
        let context = AttemptContext(
            run: prepared.run, instance: assignment.instance, jobRowID: prepared.jobRowID, attempt: assignment.attempt,
            attemptRecord: prepared.attemptRecord, resolved: assignment.resolved, context: assignment.context, upstreamArtifacts: upstream,
            environmentOverrides: ["SLIPWAY_RUN_ID": String(assignment.runID), "SLIPWAY_RUN_NUMBER": String(assignment.runNumber), "SLIPWAY_PROJECT": assignment.project])
        control.clearJob(assignment.instance.key)
        let end = await executor.runAttempt(context)
        // The server is told from these rows: nothing may stay held back.
        _ = try? store.commit(end.deferred)
        let outcome = end.outcome
        let tests = ((try? store.testResults(runID: prepared.run.id)) ?? []).map { test in
            var test = test
            test.runID = assignment.runID
            return test
        }
        return RunnerAttemptResult(outcome, tests: tests)
    }

    /// The step records the executor wrote for this attempt so far.
    public func steps(of prepared: Prepared) -> [StepRecord] {
        (try? store.steps(attemptID: prepared.attemptRecord.id)) ?? []
    }
}

/// Directory trees moved between the server and its runners as tar files (GNU tar: it refuses
/// members that climb out with `..` or absolute names).
public enum TarArchive {
    /// Packs the contents of `directory` (or nothing, when it does not exist) into `file`.
    public static func create(from directory: String, to file: String) throws(EngineError) {
        try? FileTree.makeDirectories((file as NSString).deletingLastPathComponent)
        let temporary = file + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).partial"
        var source = directory
        if !FileManager.default.fileExists(atPath: directory) {
            source = temporary + ".empty"
            try? FileTree.makeDirectories(source)
        }
        defer { if source != directory { try? FileManager.default.removeItem(atPath: source) } }
        let result = Helper.run(["tar", "--create", "--file", temporary, "--directory", source, "."], in: "/")
        guard result.status == 0 else {
            unlink(temporary)
            throw EngineError("cannot pack \(directory): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard rename(temporary, file) == 0 else {
            unlink(temporary)
            throw EngineError("cannot write \(file): \(String(cString: strerror(errno)))")
        }
    }

    /// Unpacks `file` into `directory`, created if needed, without applying owners or special permission
    /// bits. An `untrusted` archive (one a runner uploaded) is checked before (`checkMembers`) and after
    /// (`checkLinks`): it may hold only files, directories and links that stay inside `directory`; when it
    /// does not, nothing of it is left behind.
    public static func extract(_ file: String, into directory: String, untrusted: Bool = false) throws(EngineError) {
        if untrusted { try checkMembers(file) }
        do { try FileTree.makeDirectories(directory) } catch { throw EngineError("cannot create \(directory): \(error)") }
        let result = Helper.run(["tar", "--extract", "--file", file, "--directory", directory, "--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"], in: "/")
        guard result.status == 0 else {
            throw EngineError("cannot unpack into \(directory): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        if untrusted {
            do throws(EngineError) {
                try checkLinks(under: directory)
            } catch {
                try? FileManager.default.removeItem(atPath: directory)
                throw error
            }
        }
    }

    /// Every symbolic link under `root`, where it really is (links to directories unpacked earlier in the
    /// same archive can move a member elsewhere than its name says), must point inside `root` once every
    /// link on its way is followed: a textual check misses chains (`d/up -> ..`, then `d/esc -> up/..`).
    public static func checkLinks(under root: String) throws(EngineError) {
        guard let realRoot = realPath(root) else { throw EngineError("cannot resolve \(root)") }
        var pending = [(path: root, depth: 0)]
        while let (directory, depth) = pending.popLast() {
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for entry in entries {
                let path = directory + "/" + entry
                var info = stat()
                guard lstat(path, &info) == 0 else { continue }
                switch info.st_mode & S_IFMT {
                case S_IFDIR: pending.append((path, depth + 1))
                case S_IFLNK:
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "/"
                    let resolved = resolveLink(path, target: target)
                    guard !target.hasPrefix("/"), staysInside(target, depth: depth),
                          let resolved, resolved == realRoot || resolved.hasPrefix(realRoot + "/") else {
                        throw EngineError("symbolic link \(path.dropFirst(root.count + 1)) points outside the archive (\(target)); archives may only link inside themselves")
                    }
                case S_IFREG: break
                default: throw EngineError("\(path.dropFirst(root.count + 1)) is not a file, directory or link; refused")
                }
            }
        }
    }

    /// Where the link at `path` (whose target, read already, is `first`) leads, following every link on the
    /// way as the kernel would; nil when the links loop. Past a missing component the rest applies lexically
    /// (what it would mean once created).
    static func resolveLink(_ path: String, target first: String) -> String? {
        guard let base = realPath((path as NSString).deletingLastPathComponent) else { return nil }
        var current = first.hasPrefix("/") ? [] : base.split(separator: "/").map(String.init)
        var queue = Array(first.split(separator: "/").map(String.init).reversed())
        var hops = 1
        var missing = false
        while let component = queue.popLast() {
            if component == "." { continue }
            if component == ".." {
                if !current.isEmpty { current.removeLast() }
                continue
            }
            current.append(component)
            if missing { continue }
            var info = stat()
            guard lstat("/" + current.joined(separator: "/"), &info) == 0 else {
                missing = true
                continue
            }
            guard info.st_mode & S_IFMT == S_IFLNK else { continue }
            hops += 1
            // Linux gives up after 40 links (ELOOP).
            guard hops <= 40, let next = try? FileManager.default.destinationOfSymbolicLink(atPath: "/" + current.joined(separator: "/")) else { return nil }
            current.removeLast()
            if next.hasPrefix("/") { current = [] }
            queue.append(contentsOf: next.split(separator: "/").map(String.init).reversed())
        }
        return "/" + current.joined(separator: "/")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }


    /// Refuses devices, FIFOs, absolute or `..` paths, and symbolic links pointing outside the archive.
    public static func checkMembers(_ file: String) throws(EngineError) {
        // Numeric owners: owner names are printed unquoted and could fake a line of their own.
        let listing = Helper.run(["tar", "--list", "--verbose", "--numeric-owner", "--quoting-style=escape", "--file", file], in: "/")
        guard listing.status == 0 else {
            throw EngineError("not a readable tar archive: \(listing.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        for line in String(decoding: listing.stdout, as: UTF8.self).split(separator: "\n") {
            try checkMember(String(line))
        }
    }

    /// One line of `tar --list --verbose`: `MODE OWNER SIZE DATE TIME NAME[ -> TARGET| link to NAME]`.
    static func checkMember(_ line: String) throws(EngineError) {
        let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count == 6, let type = fields[0].first, Int(fields[2]) != nil else {
            throw EngineError("unexpected archive member: \(line.prefix(200))")
        }
        var name = String(fields[5])
        switch type {
        case "-", "d", "h":
            if type == "h", let range = name.range(of: " link to ") { name = String(name[..<range.lowerBound]) }
        case "l":
            let parts = name.components(separatedBy: " -> ")
            guard parts.count == 2 else { throw EngineError("ambiguous symbolic link in the archive: \(name.prefix(200))") }
            name = parts[0]
            let target = parts[1]
            let depth = name.split(separator: "/").filter { $0 != "." }.count - 1
            guard !target.hasPrefix("/"), staysInside(target, depth: depth) else {
                throw EngineError("symbolic link \(name) points outside the archive (\(target)); archives may only link inside themselves")
            }
        default:
            throw EngineError("archive member \(name.prefix(200)) is not a file, directory or link (type '\(type)'); refused")
        }
        guard !name.hasPrefix("/"), !name.split(separator: "/").contains("..") else {
            throw EngineError("archive member \(name.prefix(200)) lies outside the directory it unpacks into; refused")
        }
    }

    /// Whether a relative path, followed from a directory `depth` levels below the root, stays below it.
    static func staysInside(_ path: String, depth: Int) -> Bool {
        var level = depth
        for component in path.split(separator: "/") {
            if component == ".." { level -= 1 } else if component != "." { level += 1 }
            if level < 0 { return false }
        }
        return true
    }
}
