#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Testing

/// Every end-to-end test lives in an extension of this suite. They run one after another: several
/// of them measure time or look for stray processes, and overlapping runs would blur both.
@Suite("end to end", .serialized)
struct EndToEnd {}

/// What one `slipway` invocation did.
struct CommandResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double

    var output: String { stdout + stderr }

    var description: String {
        "exit \(status) after \(String(format: "%.2f", seconds))s\n--- stdout\n\(stdout.suffix(6000))\n--- stderr\n\(stderr.suffix(4000))"
    }
}

struct E2EError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Finds the `slipway` binary built next to the test bundle (or `SLIPWAY_BINARY`).
enum SlipwayBinary {
    static let path: String? = {
        let manager = FileManager.default
        if let override = ProcessInfo.processInfo.environment["SLIPWAY_BINARY"], !override.isEmpty {
            return manager.isExecutableFile(atPath: override) ? override : nil
        }
        var candidates: [URL] = []
        // Linux: arguments[0] is .build/<config>/<package>PackageTests.xctest, next to the products.
        let first = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        candidates.append(first.deletingLastPathComponent().appendingPathComponent("slipway"))
        // macOS: the bundle is a directory inside .build/<config>/.
        let bundle = Bundle.main.bundleURL
        candidates.append(bundle.deletingLastPathComponent().appendingPathComponent("slipway"))
        var directory = first.deletingLastPathComponent()
        for _ in 0..<4 {
            directory = directory.deletingLastPathComponent()
            candidates.append(directory.appendingPathComponent("slipway"))
        }
        for candidate in candidates {
            var isDirectory: ObjCBool = false
            if manager.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
               manager.isExecutableFile(atPath: candidate.path) {
                return candidate.path
            }
        }
        return nil
    }()

    static func require() throws -> String {
        guard let path else {
            Issue.record("""
                the `slipway` binary was not found next to the test bundle (\(CommandLine.arguments[0])); \
                build it first (`swift build --build-tests`) or point SLIPWAY_BINARY at it
                """)
            throw E2EError("slipway binary missing")
        }
        return path
    }
}

/// A child process started by a test, always bounded in time.
final class Launched: @unchecked Sendable {
    let process: Process
    let stdoutPath: String
    let stderrPath: String
    let started = Date()

    init(process: Process, stdoutPath: String, stderrPath: String) {
        self.process = process
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }

    var pid: Int32 { process.processIdentifier }

    func signal(_ number: Int32) { _ = kill(process.processIdentifier, number) }

    /// Waits for the process to end; kills it and throws after `timeout` seconds.
    func wait(timeout: Double) async throws -> CommandResult {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                _ = kill(process.processIdentifier, SIGKILL)
                // Not waitUntilExit(): a leaked descriptor held by an orphan could block it for as long as the orphan lives.
                let partial = result()
                Issue.record("slipway \(process.arguments ?? []) did not finish within \(Int(timeout))s and was killed\n\(partial)")
                throw E2EError("timed out")
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        process.waitUntilExit()
        return result()
    }

    func result() -> CommandResult {
        let out = (try? Data(contentsOf: URL(fileURLWithPath: stdoutPath))) ?? Data()
        let err = (try? Data(contentsOf: URL(fileURLWithPath: stderrPath))) ?? Data()
        let status: Int32 = process.isRunning ? -1 : (process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus)
        return CommandResult(status: status, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self),
                             seconds: Date().timeIntervalSince(started))
    }
}

/// A temporary git repository with a pipeline, plus a directory outside it for counters and timestamps.
final class Sandbox: @unchecked Sendable {
    let root: String
    let repo: String
    /// Outside the repository, so steps can leave traces that survive workspaces and are not snapshotted.
    let outside: String
    private var commandCount = 0

    init(_ pipeline: String, files: [String: String] = [:], commit: Bool = true) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-e2e-\(UUID().uuidString.prefix(8))").path
        root = base
        repo = base + "/repo"
        outside = base + "/out"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try git("init", "-q", "-b", "main")
        try write("slipway.yml", pipeline)
        for (path, content) in files { try write(path, content) }
        if commit { try self.commit("initial") }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: root)
    }

    /// `--env OUT=<outside>`: how steps find the directory outside the workspace.
    var outEnv: [String] { ["--env", "OUT=\(outside)"] }

    func write(_ path: String, _ content: String) throws {
        let full = repo + "/" + path
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(content.utf8).write(to: URL(fileURLWithPath: full))
    }

    func commit(_ message: String) throws {
        try git("add", "-A")
        try git("-c", "user.name=Slipway Tests", "-c", "user.email=tests@slipway.invalid", "commit", "-q", "-m", message)
    }

    @discardableResult
    func git(_ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: repo)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        var environment = ProcessInfo.processInfo.environment
        environment["GIT_CONFIG_NOSYSTEM"] = "1"
        environment["HOME"] = root
        process.environment = environment
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if process.terminationStatus != 0 { throw E2EError("git \(arguments.joined(separator: " ")) failed: \(text)") }
        return text
    }

    /// Contents of a file in `outside`, or "" when it does not exist.
    func readOutside(_ name: String) -> String {
        (try? String(contentsOfFile: outside + "/" + name, encoding: .utf8)) ?? ""
    }

    func lines(_ name: String) -> [String] {
        readOutside(name).split(separator: "\n").map(String.init)
    }

    /// How many lines a counter file in `outside` has.
    func count(_ name: String) -> Int { lines(name).count }

    /// Starts `slipway ARGS` in the repository; stdout and stderr go to files (or stdout to `stdoutPath`).
    /// `softDescriptorLimit`: slipway starts with this soft limit on open descriptors (set by a shell before it).
    func launch(_ arguments: [String], env: [String: String] = [:], stdoutPath: String? = nil, softDescriptorLimit: Int? = nil) throws -> Launched {
        let binary = try SlipwayBinary.require()
        commandCount += 1
        let out = stdoutPath ?? root + "/cmd-\(commandCount).out"
        let err = root + "/cmd-\(commandCount).err"
        // (A given stdout path may be a FIFO the test reads: it is opened as it is, never replaced.)
        if !FileManager.default.fileExists(atPath: out) { _ = FileManager.default.createFile(atPath: out, contents: nil) }
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        let process = Process()
        if let softDescriptorLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "ulimit -S -n \(softDescriptorLimit) && exec \"$@\"", "bash", binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        process.currentDirectoryURL = URL(fileURLWithPath: repo)
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLIPWAY_") }
        environment["HOME"] = root
        environment["GIT_CONFIG_NOSYSTEM"] = "1"
        for (key, value) in env { environment[key] = value }
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try process.run()
        return Launched(process: process, stdoutPath: out, stderrPath: err)
    }

    /// Runs `slipway ARGS` to completion (at most `timeout` seconds).
    func slipway(_ arguments: String..., env: [String: String] = [:], timeout: Double = 60) async throws -> CommandResult {
        try await slipway(arguments, env: env, timeout: timeout)
    }

    func slipway(_ arguments: [String], env: [String: String] = [:], timeout: Double = 60, stdoutPath: String? = nil) async throws -> CommandResult {
        try await launch(arguments, env: env, stdoutPath: stdoutPath).wait(timeout: timeout)
    }

    /// `slipway run --plain --env OUT=… ARGS`.
    func run(_ arguments: String..., env: [String: String] = [:], timeout: Double = 60) async throws -> CommandResult {
        try await slipway(["run", "--plain"] + outEnv + arguments, env: env, timeout: timeout)
    }

    var dataDirectory: String { repo + "/.slipway" }

    /// Every log file of a run, by path relative to the run's log directory.
    func logFiles(run: Int) -> [String: String] {
        let directory = dataDirectory + "/runs/\(run)/logs"
        var result: [String: String] = [:]
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [:] }
        while let path = enumerator.nextObject() as? String {
            guard path.hasSuffix(".log") else { continue }
            result[path] = (try? String(contentsOfFile: directory + "/" + path, encoding: .utf8)) ?? ""
        }
        return result
    }
}

/// Processes visible in /proc.
enum Processes {
    /// Pids whose command line contains `marker` (never this process).
    static func matching(_ marker: String) -> [Int32] {
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [Int32] = []
        for entry in entries {
            guard let pid = Int32(entry), pid != me else { continue }
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { continue }
            let text = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if text.contains(marker) { found.append(pid) }
        }
        return found
    }

    /// Waits up to `seconds` for every process with `marker` to be gone; returns those still alive.
    static func survivors(_ marker: String, within seconds: Double = 2) async -> [Int32] {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let left = matching(marker)
            if left.isEmpty || Date() > deadline { return left }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kills whatever a failed test left behind, so it cannot disturb the next one.
    static func killAll(_ marker: String) {
        for pid in matching(marker) { _ = kill(pid, SIGKILL) }
    }

    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        // A zombie is dead for our purposes.
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        if let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
            return state != "Z"
        }
        return true
    }

    /// A unique number for `sleep N`, so the test can find exactly its own processes.
    static func uniqueSleep(_ base: Int = 300) -> String {
        "\(base).\(Int.random(in: 100_000...999_999))"
    }
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(within seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { return false }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return true
}

/// Lines `<kind> <nanoseconds> <name>` written by steps with `date +%s%N`.
struct TimeLog {
    var starts: [String: Int64] = [:]
    var ends: [String: Int64] = [:]

    init(_ lines: [String]) {
        for line in lines {
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard parts.count == 3, let time = Int64(parts[1]) else { continue }
            if parts[0] == "start" { starts[parts[2]] = time } else if parts[0] == "end" { ends[parts[2]] = time }
        }
    }

    /// A bash snippet that records the start and end of a job around `body`.
    static func wrap(_ name: String, _ body: String = "sleep 0.2", file: String = "times") -> String {
        "echo \"start $(date +%s%N) \(name)\" >> \"$OUT/\(file)\"; \(body); echo \"end $(date +%s%N) \(name)\" >> \"$OUT/\(file)\""
    }
}
