import CSlipwaySystem
import Foundation
import Testing
@testable import SlipwayCore
@testable import SlipwayEngine

/// Collects output in memory for assertions.
final class CollectingSink: ProcessOutputSink, @unchecked Sendable {
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var finished = false
    func consume(stream: Int, bytes: UnsafeRawBufferPointer) {
        if stream == 1 { stdout.append(contentsOf: bytes) } else { stderr.append(contentsOf: bytes) }
    }
    func finish() { finished = true }
}

func bash(_ script: String, timeout: Duration? = nil, grace: Duration = .seconds(2), env: [String: String] = [:]) -> StepProcess.Configuration {
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    return .init(executable: "/bin/bash", arguments: ["-e", "-o", "pipefail", "-c", script], environment: environment, workingDirectory: NSTemporaryDirectory(), timeout: timeout, gracePeriod: grace)
}

/// Whether any process's command line contains `marker`.
func processExists(withMarker marker: String) -> Bool {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return false }
    for entry in entries where Int(entry) != nil {
        guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        let text = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        if text.contains(marker) { return true }
    }
    return false
}

/// Who supervises a step's process: a reader thread of its own (tasks on the shared pool), or the engine
/// loop of a run (tasks on the loop's thread).
enum Supervisor: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case readerThread, engineLoop
    var testDescription: String { rawValue }
}

func runStep(_ configuration: StepProcess.Configuration, control: ProcessControl, sink: ProcessOutputSink, on supervisor: Supervisor) async throws(StepProcessError) -> ProcessTermination {
    switch supervisor {
    case .readerThread:
        #expect(EngineLoop.current == nil)
        return try await StepProcess.run(configuration, control: control, sink: sink)
    case .engineLoop:
        let transfer = SinkBox(sink: sink)
        let result: Result<ProcessTermination, StepProcessError> = await EngineLoop.run {
            #expect(EngineLoop.current?.isCurrentThread == true, "not on the loop's thread")
            do throws(StepProcessError) {
                return .success(try await StepProcess.run(configuration, control: control, sink: transfer.sink))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

struct SinkBox: @unchecked Sendable { let sink: ProcessOutputSink }

/// Collects output and creates the file `mark` once a whole `line` has arrived on stdout.
final class MarkingSink: ProcessOutputSink, @unchecked Sendable {
    let line: String
    let mark: String
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    init(line: String, mark: String) {
        self.line = line
        self.mark = mark
    }
    func consume(stream: Int, bytes: UnsafeRawBufferPointer) {
        if stream == 1 { stdout.append(contentsOf: bytes) } else { stderr.append(contentsOf: bytes) }
        if stream == 1, String(decoding: stdout, as: UTF8.self).split(separator: "\n").contains(Substring(line)) {
            _ = FileManager.default.createFile(atPath: mark, contents: nil)
        }
    }
    func finish() {}
}

/// Everything a pipe gives until EOF, as text; closes it.
func drainPipe(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    close(fd)
    return String(decoding: bytes, as: UTF8.self)
}

@Suite(.serialized) struct StepProcessTests {
    @Test(arguments: Supervisor.allCases) func capturesBothStreamsAndExitCode(supervisor: Supervisor) async throws {
        let sink = CollectingSink()
        let result = try await runStep(bash("echo out; echo err >&2; exit 7"), control: ProcessControl(), sink: sink, on: supervisor)
        #expect(result == .exited(7))
        #expect(String(decoding: sink.stdout, as: UTF8.self) == "out\n")
        #expect(String(decoding: sink.stderr, as: UTF8.self) == "err\n")
        #expect(sink.finished)
    }

    /// Output read first through the small buffer, then the large one it grows into, on both streams:
    /// every byte arrives, in order.
    @Test(arguments: Supervisor.allCases) func aChattyStepsOutputIsCapturedWholeAcrossTheBuffersGrowth(supervisor: Supervisor) async throws {
        let sink = CollectingSink()
        let script = "for i in $(seq 1 40000); do printf '%07d abcdefghijklmnopqrstuvwxyz\\n' $i; done; seq 1 100000 >&2"
        let result = try await runStep(bash(script), control: ProcessControl(), sink: sink, on: supervisor)
        #expect(result == .exited(0))
        let lines = String(decoding: sink.stdout, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 40000)
        #expect(lines.enumerated().allSatisfy { $0.element == String(format: "%07d abcdefghijklmnopqrstuvwxyz", $0.offset + 1) })
        let numbers = String(decoding: sink.stderr, as: UTF8.self).split(separator: "\n")
        #expect(numbers.count == 100000 && numbers.enumerated().allSatisfy { Int($0.element) == $0.offset + 1 })
    }

    @Test(arguments: Supervisor.allCases) func pipefailFailsOnFirstCommandOfAPipe(supervisor: Supervisor) async throws {
        let result = try await runStep(bash("false | cat"), control: ProcessControl(), sink: CollectingSink(), on: supervisor)
        #expect(result == .exited(1))
    }

    @Test(arguments: Supervisor.allCases) func timeoutKillsTheWholeProcessTree(supervisor: Supervisor) async throws {
        let marker = "sleep 311.\(Int.random(in: 100...999))"
        let script = "\(marker) & bash -c '\(marker) & wait' & wait"
        let started = ContinuousClock.now
        let result = try await runStep(bash(script, timeout: .milliseconds(300)), control: ProcessControl(), sink: CollectingSink(), on: supervisor)
        #expect(result == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(5))
        try await Task.sleep(for: .milliseconds(200))
        #expect(!processExists(withMarker: marker))
    }

    @Test(arguments: Supervisor.allCases) func graceExpiresForAProcessThatIgnoresSIGTERM(supervisor: Supervisor) async throws {
        let started = ContinuousClock.now
        let result = try await runStep(bash("trap '' TERM; sleep 30 & wait; sleep 30", timeout: .milliseconds(200), grace: .milliseconds(300)), control: ProcessControl(), sink: CollectingSink(), on: supervisor)
        #expect(result == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test(arguments: Supervisor.allCases) func cancellationStopsTheGroup(supervisor: Supervisor) async throws {
        let control = ProcessControl()
        let marker = "sleep 312.\(Int.random(in: 100...999))"
        async let result = runStep(bash("\(marker) & wait"), control: control, sink: CollectingSink(), on: supervisor)
        try await Task.sleep(for: .milliseconds(300))
        control.cancel()
        #expect(try await result == .cancelled)
        try await Task.sleep(for: .milliseconds(200))
        #expect(!processExists(withMarker: marker))
    }

    @Test(arguments: Supervisor.allCases) func backgroundChildHoldingThePipeDoesNotBlockCompletion(supervisor: Supervisor) async throws {
        let control = ProcessControl()
        let started = ContinuousClock.now
        let result = try await runStep(bash("sleep 5 & echo done"), control: control, sink: CollectingSink(), on: supervisor)
        #expect(result == .exited(0))
        #expect(ContinuousClock.now - started < .seconds(3))
        kill(-control.processGroup, SIGKILL)
    }

    @Test(arguments: Supervisor.allCases) func environmentAndWorkingDirectoryAreApplied(supervisor: Supervisor) async throws {
        let sink = CollectingSink()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-wd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var configuration = bash("echo \"$GREETING\"; pwd", env: ["GREETING": "hello"])
        configuration.workingDirectory = directory
        _ = try await runStep(configuration, control: ProcessControl(), sink: sink, on: supervisor)
        let lines = String(decoding: sink.stdout, as: UTF8.self).split(separator: "\n")
        #expect(lines.first == "hello")
        #expect(lines.last.map(String.init) == directory)
    }

    /// The environment and arguments reach the process byte for byte: `=` in values, multi-byte UTF-8, empty
    /// values and arguments (they are packed into one buffer for execve).
    @Test func environmentAndArgumentsArePassedExactly() async throws {
        let sink = CollectingSink()
        let env = ["A_B": "x=y=z", "UNICODE": "héllo ✓ 漢字", "EMPTY": "", "SPACES": "  two  spaces "]
        var configuration = bash("printf '%s|' \"$A_B\" \"$UNICODE\" \"[$EMPTY]\" \"$SPACES\" \"$@\"", env: env)
        configuration.arguments += ["bash", "", "arg ✓", "a=b"]
        _ = try await runStep(configuration, control: ProcessControl(), sink: sink, on: .engineLoop)
        #expect(String(decoding: sink.stdout, as: UTF8.self) == "x=y=z|héllo ✓ 漢字|[]|  two  spaces ||arg ✓|a=b|")
    }

    /// On the loop the start is detached and the exec fails after it returned: the error is the same.
    @Test(arguments: Supervisor.allCases) func missingExecutableIsAnError(supervisor: Supervisor) async {
        var configuration = bash("true")
        configuration.executable = "/nonexistent/bash"
        do {
            _ = try await runStep(configuration, control: ProcessControl(), sink: CollectingSink(), on: supervisor)
            Issue.record("a missing executable started")
        } catch {
            #expect(error.description == "cannot start /nonexistent/bash: No such file or directory")
        }
    }

    /// A detached start returns before the child has exec'd, or even run: the child works only on its own
    /// copies (the caller frees its argument lists at once), its group exists as the start returns (a
    /// cancel right away reaches it), and a failed exec is told when the process has been reaped.
    @Test func aDetachedStartOwnsItsArgumentsAndItsGroupAndReportsAFailedExec() throws {
        func start(_ arguments: [String], directory: String = "/") -> (pid: pid_t, pidfd: Int32, launch: UnsafeMutableRawPointer?, out: Int32, error: Int32) {
            var out: [Int32] = [-1, -1]
            var err: [Int32] = [-1, -1]
            #expect(slipway_pipe_cloexec(&out) == 0 && slipway_pipe_cloexec(&err) == 0)
            let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), strdup("SLIPWAY_TEST=detached ✓"), nil]
            var error: Int32 = 0
            var pidfd: Int32 = -1
            var launch: UnsafeMutableRawPointer?
            let pid = slipway_spawn_detached(arguments[0], argv, envp, directory, out[1], err[1], &error, &pidfd, &launch)
            // Overwritten and freed while the child may not have read them yet.
            for case let pointer? in argv + envp {
                memset(pointer, 0x58, strlen(pointer))
                free(pointer)
            }
            close(out[1]); close(err[1]); close(err[0])
            return (pid, pidfd, launch, out[0], error)
        }

        let echo = start(["/bin/sh", "-c", "echo \"$SLIPWAY_TEST $0 $(pwd)\"", "arg0"], directory: "/tmp")
        #expect(echo.pid > 0, "errno \(echo.error)")
        #expect(echo.pidfd >= 0)
        #expect(drainPipe(echo.out) == "detached ✓ arg0 /tmp\n")
        var status: Int32 = 0
        #expect(waitpid(echo.pid, &status, 0) == echo.pid)
        #expect(status == 0)
        var error: Int32 = 0
        var stage: Int32 = 0
        #expect(slipway_launch_failure(echo.launch, &error, &stage) == 0)
        slipway_launch_release(echo.launch)
        close(echo.pidfd)

        // Killed as a group the moment the start returns.
        let sleeper = start(["/bin/sleep", "30"])
        #expect(sleeper.pid > 0)
        #expect(kill(-sleeper.pid, SIGKILL) == 0)
        #expect(waitpid(sleeper.pid, &status, 0) == sleeper.pid)
        #expect(status & 0x7f == SIGKILL)
        slipway_launch_release(sleeper.launch)
        close(sleeper.pidfd)
        close(sleeper.out)

        let missing = start(["/nonexistent/program"])
        #expect(missing.pid > 0)
        #expect(waitpid(missing.pid, &status, 0) == missing.pid)
        #expect((status >> 8) & 0xff == 127)
        #expect(slipway_launch_failure(missing.launch, &error, &stage) == 1)
        #expect(error == ENOENT && stage == 6)
        slipway_launch_release(missing.launch)
        close(missing.pidfd)
        close(missing.out)

        let nowhere = start(["/bin/true"], directory: "/nonexistent/slipway-wd")
        #expect(waitpid(nowhere.pid, &status, 0) == nowhere.pid)
        #expect(slipway_launch_failure(nowhere.launch, &error, &stage) == 1)
        #expect(error == ENOENT && stage == 4)
        slipway_launch_release(nowhere.launch)
        close(nowhere.pidfd)
        close(nowhere.out)
    }

    /// A process started with fd 0, 1 or 2 closed gets pipe ends with those numbers: the child must not
    /// overwrite one with /dev/null or with the other before copying it into place.
    @Test func pipeEndsNumberedBelowThreeStillReachTheStep() throws {
        var out: [Int32] = [-1, -1]
        var err: [Int32] = [-1, -1]
        #expect(pipe(&out) == 0 && pipe(&err) == 0)
        // This process's stdin becomes the stdout pipe's write end, close-on-exec like slipway_pipe_cloexec's.
        let savedStdin = dup(0)
        dup2(out[1], 0)
        close(out[1])
        _ = fcntl(0, F_SETFD, FD_CLOEXEC)
        _ = fcntl(err[1], F_SETFD, FD_CLOEXEC)
        let arguments: [String] = ["/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2"]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        var error: Int32 = 0
        var stage: Int32 = 0
        var pidfd: Int32 = -1
        let pid = slipway_spawn("/bin/sh", argv, envp, "/", 0, err[1], &error, &stage, &pidfd)
        dup2(savedStdin, 0)
        close(savedStdin)
        close(err[1])
        for pointer in argv + envp { free(pointer) }
        #expect(pid > 0, "error \(error) at stage \(stage)")
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        // The child's pidfd comes with it (Linux 5.2 and later) and is readable once it has exited.
        #expect(pidfd >= 0)
        if pidfd >= 0 {
            var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            #expect(poll(&entry, 1, 1000) == 1)
            #expect(fcntl(pidfd, F_GETFD) & FD_CLOEXEC != 0)
            close(pidfd)
        }
        #expect(drainPipe(out[0]) == "to-stdout\n")
        #expect(drainPipe(err[0]) == "to-stderr\n")
    }

    /// Cancelled (fail-fast, Ctrl-C) before it started: the process never starts, and there is no process
    /// group for anyone to signal (a group of 0 would be Slipway's own).
    @Test(arguments: Supervisor.allCases) func aStepCancelledBeforeItStartsNeverStarts(supervisor: Supervisor) async throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-never-\(UUID().uuidString)").path
        let control = ProcessControl()
        control.cancel()
        let sink = CollectingSink()
        let termination = try await runStep(bash("touch \(marker)"), control: control, sink: sink, on: supervisor)
        #expect(termination == .cancelled)
        #expect(control.processGroup == 0)
        #expect(sink.finished)
        try await Task.sleep(for: .milliseconds(200))
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test(arguments: Supervisor.allCases) func aMissingWorkingDirectoryIsNamedInTheError(supervisor: Supervisor) async {
        var configuration = bash("true")
        configuration.workingDirectory = "/nonexistent/slipway-wd"
        do {
            _ = try await runStep(configuration, control: ProcessControl(), sink: CollectingSink(), on: supervisor)
            Issue.record("a step in a missing directory started")
        } catch {
            #expect(error.description.contains("/nonexistent/slipway-wd"))
            #expect(error.description.contains("No such file or directory"))
        }
    }

    /// The step starts as a new process group of its own, stdin at EOF, every signal unblocked and at its
    /// default: this process ignores SIGINT/SIGTERM/SIGPIPE (Ctrl-C handling, sockets) and blocks all
    /// signals around the spawn, and none of that may reach a step.
    @Test(arguments: Supervisor.allCases) func theStepStartsWithDefaultSignalsItsOwnGroupAndNoInput(supervisor: Supervisor) async throws {
        let previous = (signal(SIGPIPE, SIG_IGN), signal(SIGINT, SIG_IGN), signal(SIGUSR1, SIG_IGN))
        defer {
            signal(SIGPIPE, previous.0)
            signal(SIGINT, previous.1)
            signal(SIGUSR1, previous.2)
        }
        // The signal state as the started program itself has it (bash would block SIGCHLD of its own).
        let statusSink = CollectingSink()
        var grep = bash("")
        grep.executable = "/bin/grep"
        grep.arguments = ["-E", "^(SigBlk|SigIgn):", "/proc/self/status"]
        #expect(try await runStep(grep, control: ProcessControl(), sink: statusSink, on: supervisor) == .exited(0))
        let status = String(decoding: statusSink.stdout, as: UTF8.self)
        #expect(status.contains("SigBlk:\t0000000000000000"), "\(status)")
        let ignored = status.split(separator: "\n").first { $0.hasPrefix("SigIgn:") }.map { UInt64($0.dropFirst(8), radix: 16) ?? 0 }
        // The standard signals (1-31); glibc reserves the first real-time ones for itself.
        #expect(ignored.map { $0 & 0x7fff_ffff } == 0, "signals ignored in the step: \(status)")

        let sink = CollectingSink()
        let script = """
            read -r _ _ _ _ pgrp _ < /proc/$$/stat; echo "pgrp=$pgrp pid=$$"
            if read -r line; then echo "stdin: $line"; else echo "stdin: eof"; fi
            """
        #expect(try await runStep(bash(script), control: ProcessControl(), sink: sink, on: supervisor) == .exited(0))
        let text = String(decoding: sink.stdout, as: UTF8.self)
        let ids = text.split(separator: "\n").first { $0.hasPrefix("pgrp=") }?.split(separator: " ").map { $0.split(separator: "=").last.map(String.init) ?? "" }
        #expect(ids?.count == 2 && ids?[0] == ids?[1], "the step is not the leader of its own group: \(text)")
        #expect(text.contains("stdin: eof"))
    }
}

/// Takes 2 ms over each chunk of output, as a log on a slow disk would.
final class SlowSink: ProcessOutputSink, @unchecked Sendable {
    func consume(stream: Int, bytes: UnsafeRawBufferPointer) { usleep(2000) }
    func finish() {}
}

/// The engine loop: one thread runs a run's tasks and supervises all their processes at once.
@Suite(.serialized) struct EngineLoopTests {
    @Test("lanes: each runs its tasks and their steps on a thread of its own")
    func lanesRunTheirTasksOnTheirOwnThreads() async throws {
        let seen: [(Bool, Bool, String)] = await EngineLoop.run(lanes: 3) { lanes in
            #expect(lanes.count == 3)
            return await withTaskGroup(of: (Int, Bool, Bool, String).self) { group in
                for (index, lane) in lanes.enumerated() {
                    group.addTask(executorPreference: lane) {
                        await lane.adopt {
                            let here = EngineLoop.current === lane && lane.isCurrentThread
                            let others = lanes.filter { $0 !== lane }.allSatisfy { !$0.isCurrentThread }
                            let sink = CollectingSink()
                            let ended = try? await StepProcess.run(bash("echo lane \(index)"), control: ProcessControl(), sink: sink)
                            return (index, here, others, ended == .exited(0) ? String(decoding: sink.stdout, as: UTF8.self) : "failed")
                        }
                    }
                }
                var results: [(Int, Bool, Bool, String)] = []
                for await result in group { results.append(result) }
                return results.sorted { $0.0 < $1.0 }.map { ($0.1, $0.2, $0.3) }
            }
        }
        #expect(seen.count == 3)
        for (index, (here, others, text)) in seen.enumerated() {
            #expect(here, "lane \(index)'s task did not run on its thread")
            #expect(others, "lane \(index)'s task ran on another lane's thread")
            #expect(text == "lane \(index)\n")
        }
    }

    @Test(arguments: Supervisor.allCases) func aStepThatClosesItsOutputButRunsOnIsWaitedFor(supervisor: Supervisor) async throws {
        let started = ContinuousClock.now
        let sink = CollectingSink()
        let result = try await runStep(bash("echo before; exec >&- 2>&-; sleep 0.5; exit 3"), control: ProcessControl(), sink: sink, on: supervisor)
        #expect(result == .exited(3))
        #expect(ContinuousClock.now - started >= .milliseconds(450))
        #expect(String(decoding: sink.stdout, as: UTF8.self) == "before\n")
    }

    @Test(arguments: Supervisor.allCases) func cancellingTheTaskStopsTheStep(supervisor: Supervisor) async throws {
        let marker = "sleep 313.\(Int.random(in: 100...999))"
        let started = ContinuousClock.now
        let task = Task { try await runStep(bash("\(marker) & wait"), control: ProcessControl(), sink: CollectingSink(), on: supervisor) }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        #expect(try await task.value == .cancelled)
        #expect(ContinuousClock.now - started < .seconds(5))
        try await Task.sleep(for: .milliseconds(200))
        #expect(!processExists(withMarker: marker))
    }

    /// A background child that writes on and on after the step's main process exited: the step ends with what
    /// the pipe held at the exit, and the loop goes on (another step on it finishes meanwhile).
    @Test(.timeLimit(.minutes(1))) func aBackgroundChildWritingOnAndOnDoesNotHoldTheLoop() async throws {
        let control = ProcessControl()
        let started = ContinuousClock.now
        let (chatty, quiet): (ProcessTermination?, ProcessTermination?) = await EngineLoop.run {
            // A sink slower than `yes`: draining until the pipe is empty would never end.
            async let chatty = try? StepProcess.run(bash("yes slipway-chatty-background & echo main-done"), control: control, sink: SlowSink())
            async let quiet = try? StepProcess.run(bash("sleep 0.3; echo quiet"), control: ProcessControl(), sink: CollectingSink())
            return await (chatty, quiet)
        }
        kill(-control.processGroup, SIGKILL)
        #expect(chatty == .exited(0))
        #expect(quiet == .exited(0))
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    /// A step's pipes are watched only once it has run a little while (a quick step's output is read at its
    /// end): a longer one's output still comes while it runs. This step goes on only once its first line has
    /// reached the sink; output read at its end alone would leave it waiting until its timeout.
    @Test(arguments: Supervisor.allCases) func aRunningStepsOutputReachesTheSinkBeforeItEnds(supervisor: Supervisor) async throws {
        let mark = NSTemporaryDirectory() + "slipway-live-\(UUID().uuidString)"
        defer { unlink(mark) }
        let sink = MarkingSink(line: "first", mark: mark)
        let script = "echo first; while [ ! -e '\(mark)' ]; do sleep 0.01; done; echo second; echo done >&2"
        let result = try await runStep(bash(script, timeout: .seconds(20)), control: ProcessControl(), sink: sink, on: supervisor)
        #expect(result == .exited(0))
        #expect(String(decoding: sink.stdout, as: UTF8.self) == "first\nsecond\n")
        #expect(String(decoding: sink.stderr, as: UTF8.self) == "done\n")
    }

    /// Six steps at once on one loop: each gets its own output and exit code, and they overlap in time.
    @Test func manyStepsRunAtOnceOnOneLoop() async throws {
        let started = ContinuousClock.now
        let results: [(Int, ProcessTermination, String)] = await EngineLoop.run {
            await withTaskGroup(of: (Int, ProcessTermination, String).self) { group in
                for index in 0..<6 {
                    group.addTask {
                        let sink = CollectingSink()
                        let script = "for i in $(seq 1 2000); do echo \"step-\(index) line $i\"; done; sleep 0.4; echo end-\(index) >&2; exit \(index)"
                        let termination = (try? await StepProcess.run(bash(script), control: ProcessControl(), sink: sink)) ?? .exited(-1)
                        let lines = String(decoding: sink.stdout, as: UTF8.self).split(separator: "\n")
                        let ordered = lines.count == 2000 && lines.enumerated().allSatisfy { $0.element == "step-\(index) line \($0.offset + 1)" }
                        return (index, termination, ordered ? String(decoding: sink.stderr, as: UTF8.self) : "garbled")
                    }
                }
                var all: [(Int, ProcessTermination, String)] = []
                for await result in group { all.append(result) }
                return all.sorted { $0.0 < $1.0 }
            }
        }
        #expect(results.map(\.0) == Array(0..<6))
        for (index, termination, stderr) in results {
            #expect(termination == .exited(Int32(index)))
            #expect(stderr == "end-\(index)\n")
        }
        // Six steps of 0.4 s each, one after another, would take 2.4 s.
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    /// Work that blocks runs on the shared pool, then the task is back on the loop.
    /// The loop's thread keeps asynchronous signals blocked (its starts then skip blocking them around each
    /// clone), but not SIGCHLD, faults or SIGPIPE; the steps it starts begin with none blocked (tested above).
    @Test func theLoopsThreadHoldsAsynchronousSignalsOnly() async throws {
        let status: String = await EngineLoop.run {
            String(decoding: FileManager.default.contents(atPath: "/proc/thread-self/status") ?? Data(), as: UTF8.self)
        }
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("SigBlk:") })
        let blocked = try #require(UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16))
        func isBlocked(_ signal: Int32) -> Bool { blocked & (1 << UInt64(signal - 1)) != 0 }
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGALRM] { #expect(isBlocked(signal), "signal \(signal) open: \(line)") }
        for signal in [SIGCHLD, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGPIPE] { #expect(!isBlocked(signal), "signal \(signal) blocked: \(line)") }
    }

    @Test func offloadedWorkLeavesTheLoopsThreadAndComesBack() async {
        let (before, inside, after, stillCurrent): (Bool, Bool, Bool, Bool) = await EngineLoop.run {
            let before = EngineLoop.current?.isCurrentThread == true
            let inside = await EngineLoop.offloaded { EngineLoop.current?.isCurrentThread == true }
            let stillCurrent = EngineLoop.current != nil
            return (before, inside, EngineLoop.current?.isCurrentThread == true, stillCurrent)
        }
        #expect(before && !inside && after && stillCurrent)
        // Outside a loop it runs where it is.
        #expect(await EngineLoop.offloaded { EngineLoop.current == nil })
    }
}

struct StepLogTests {
    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("slipway-log-\(UUID().uuidString)/step.log").path
    }

    final class Live: LiveOutput, @unchecked Sendable {
        var text = ""
        func lines(job: String, bytes: [UInt8]) { text += String(decoding: bytes, as: UTF8.self) }
    }

    @Test func writesTimestampedLinesAndJoinsPartialWrites() throws {
        let path = temporaryPath()
        let live = Live()
        let log = try StepLog(path: path, jobKey: "build", masker: SecretMasker(secrets: []), live: live)
        for chunk in ["hel", "lo\nwor", "ld\n", "tail"] {
            Array(chunk.utf8).withUnsafeBytes { log.consume(stream: 1, bytes: $0) }
        }
        Array("oops\n".utf8).withUnsafeBytes { log.consume(stream: 2, bytes: $0) }
        log.finish()
        let lines = LogReader.lines(of: try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(lines.map { String($0.text) } == ["hello", "world", "oops", "tail"])
        #expect(lines.map(\.stream) == ["o", "o", "e", "o"])
        #expect(lines.allSatisfy { $0.time != nil })
        #expect(live.text == "hello\nworld\noops\ntail\n")
    }

    @Test func masksSecretsSplitAcrossWrites() throws {
        let path = temporaryPath()
        let live = Live()
        let log = try StepLog(path: path, jobKey: "deploy", masker: SecretMasker(secrets: ["hunter2-secret"]), live: live)
        for chunk in ["token=hunter2-", "secret done\n"] {
            Array(chunk.utf8).withUnsafeBytes { log.consume(stream: 1, bytes: $0) }
        }
        log.note("failed with hunter2-secret in message")
        log.finish()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("hunter2"))
        #expect(text.contains("token=*** done"))
        #expect(!live.text.contains("hunter2"))
    }
}
