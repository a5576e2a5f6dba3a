#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSlipwaySystem
import Foundation
import Synchronization

/// How a process ended.
public enum ProcessTermination: Sendable, Equatable {
    case exited(Int32)
    case signalled(Int32)
    case timedOut
    case cancelled
}

/// Receives a process's output on its reader thread, in order; `stream` 1 is stdout, 2 is stderr.
public protocol ProcessOutputSink: AnyObject {
    func consume(stream: Int, bytes: UnsafeRawBufferPointer)
    func finish()
}

/// Lets another task stop a running process: SIGTERM to its whole process group, SIGKILL after a grace period.
public final class ProcessControl: Sendable {
    struct State {
        var processGroup: pid_t = 0
        var cancelRequested = false
        var killNow = false
    }
    let state = Mutex(State())

    public init() {}

    public var processGroup: pid_t { state.withLock { $0.processGroup } }

    /// Graceful stop: SIGTERM now, SIGKILL when the grace period ends (sent by the reader thread).
    public func cancel() {
        let group: pid_t = state.withLock {
            $0.cancelRequested = true
            return $0.processGroup
        }
        if group > 0 { _ = Glibc.kill(-group, SIGTERM) }
    }

    /// Immediate stop: SIGKILL to the whole group.
    public func killImmediately() {
        let group: pid_t = state.withLock {
            $0.cancelRequested = true
            $0.killNow = true
            return $0.processGroup
        }
        if group > 0 { _ = Glibc.kill(-group, SIGKILL) }
    }

    var flags: (cancelled: Bool, killNow: Bool) { state.withLock { ($0.cancelRequested, $0.killNow) } }
}

public struct StepProcessError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Runs one command as a real process in its own process group, its output read on a dispatch thread
/// (never blocking the concurrency pool). On timeout or cancellation the whole group gets SIGTERM, then
/// SIGKILL after the grace period, so no child survives, however deep.
public enum StepProcess {
    public struct Configuration: Sendable {
        public var executable: String
        public var arguments: [String]
        public var variables: StepEnvironment
        public var workingDirectory: String
        public var timeout: Duration?
        public var gracePeriod: Duration

        public var environment: [String: String] {
            get { variables.dictionary }
            set { variables = StepEnvironment(newValue) }
        }

        public init(executable: String, arguments: [String], environment: [String: String], workingDirectory: String, timeout: Duration? = nil, gracePeriod: Duration = .seconds(5)) {
            self.init(executable: executable, arguments: arguments, variables: StepEnvironment(environment), workingDirectory: workingDirectory, timeout: timeout, gracePeriod: gracePeriod)
        }

        public init(executable: String, arguments: [String], variables: StepEnvironment, workingDirectory: String, timeout: Duration? = nil, gracePeriod: Duration = .seconds(5)) {
            self.executable = executable
            self.arguments = arguments
            self.variables = variables
            self.workingDirectory = workingDirectory
            self.timeout = timeout
            self.gracePeriod = gracePeriod
        }
    }

    struct Spawned: Sendable {
        var pid: pid_t
        var stdout: Int32
        var stderr: Int32
        /// The process's pidfd from its start, or -1; whoever supervises the process closes it.
        var pidfd: Int32 = -1
        /// A detached start's launch block (its address), which whoever reaps the process settles once
        /// (`settleLaunch`); 0 for a start that waited for the exec.
        var launch: UInt = 0
    }

    /// The sink is used only by the reader thread once handed over.
    struct SinkTransfer: @unchecked Sendable {
        let sink: ProcessOutputSink
    }

    /// Where output is read: a serial queue of its own per step. Such queues run on dispatch's overcommit
    /// threads, which are made as needed and reused (a new `Thread` per step showed in profiles of wide
    /// pipelines). Not a concurrent queue: on Linux those share the concurrency pool's few threads, which
    /// these blocking reads would starve.
    static func readerQueue() -> DispatchQueue { DispatchQueue(label: "slipway.step-output") }

    /// Starts the process and returns once it has ended and its output is drained. The start happens on the
    /// reader's thread too: vfork holds its caller until the child has exec'd, which must not hold one of
    /// the concurrency pool's few threads.
    public static func run(
        _ configuration: Configuration,
        control: ProcessControl,
        sink: ProcessOutputSink
    ) async throws(StepProcessError) -> ProcessTermination {
        // A run's engine loop supervises the processes its tasks start on its thread.
        if let loop = EngineLoop.current, loop.isCurrentThread {
            return try await loop.run(configuration, control: control, sink: sink)
        }
        let transfer = SinkTransfer(sink: sink)
        let result: Result<ProcessTermination, StepProcessError> = await onReaderThread(control: control) {
            do throws(StepProcessError) {
                guard let spawned = try start(configuration, control: control, sink: transfer.sink) else { return .success(.cancelled) }
                return .success(readUntilExit(spawned, timeout: configuration.timeout, grace: configuration.gracePeriod, control: control, sink: transfer.sink))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Waits for a process already started, on a reader thread of its own.
    static func supervise(_ spawned: Spawned, configuration: Configuration, control: ProcessControl, sink: ProcessOutputSink) async -> ProcessTermination {
        let transfer = SinkTransfer(sink: sink)
        return await onReaderThread(control: control) {
            readUntilExit(spawned, timeout: configuration.timeout, grace: configuration.gracePeriod, control: control, sink: transfer.sink)
        }
    }

    /// `work` on a reader thread of its own; cancelling the task cancels the process.
    static func onReaderThread<T: Sendable>(control: ProcessControl, _ work: @escaping @Sendable () -> T) async -> T {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
                readerQueue().async { continuation.resume(returning: work()) }
            }
        } onCancel: {
            control.cancel()
        }
    }

    /// Starts the process, or nil (the sink finished) when it was cancelled before it started (fail-fast,
    /// Ctrl-C): it never starts. A cancel that came before the group existed could not signal it: it does now.
    static func start(_ configuration: Configuration, control: ProcessControl, sink: ProcessOutputSink, detached: Bool = false) throws(StepProcessError) -> Spawned? {
        if control.flags.cancelled {
            sink.finish()
            return nil
        }
        let spawned = try spawn(configuration, detached: detached)
        let flags = control.state.withLock { state in
            state.processGroup = spawned.pid
            return (state.cancelRequested, state.killNow)
        }
        if flags.0 { _ = Glibc.kill(-spawned.pid, flags.1 ? SIGKILL : SIGTERM) }
        return spawned
    }

    /// How a supervisor stops a process group: SIGTERM at the deadline or on cancel, SIGKILL once the grace
    /// period is over or a kill is asked for. Checked at least every 50 ms while the process runs.
    struct Escalation {
        let deadline: ContinuousClock.Instant?
        let grace: Duration
        private(set) var timedOut = false
        private(set) var cancelled = false
        private var termSentAt: ContinuousClock.Instant?

        init(timeout: Duration?, grace: Duration) {
            deadline = timeout.map { ContinuousClock.now + $0 }
            self.grace = grace
        }

        mutating func check(group: pid_t, control: ProcessControl, now: ContinuousClock.Instant = .now) {
            let flags = control.flags
            if termSentAt == nil {
                if let deadline, now >= deadline {
                    timedOut = true
                    termSentAt = now
                    _ = Glibc.kill(-group, SIGTERM)
                } else if flags.cancelled {
                    cancelled = true
                    termSentAt = now
                    _ = Glibc.kill(-group, SIGTERM)
                }
            }
            if let sent = termSentAt, now - sent >= grace || flags.killNow {
                _ = Glibc.kill(-group, SIGKILL)
            }
        }

        /// How the process ended, from its wait status and what was done to it.
        func termination(status: Int32, control: ProcessControl) -> ProcessTermination {
            if timedOut { return .timedOut }
            if cancelled { return .cancelled }
            // `cancel()` sends SIGTERM itself: the process may die of it before the supervisor saw the request.
            if control.flags.cancelled, !(status & 0x7f == 0 && (status >> 8) & 0xff == 0) { return .cancelled }
            if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
            return .signalled(status & 0x7f)
        }
    }

    static func readUntilExit(_ process: Spawned, timeout: Duration?, grace: Duration, control: ProcessControl, sink: ProcessOutputSink) -> ProcessTermination {
        // This loop polls the pipes and waits for the pid itself.
        if process.pidfd >= 0 { close(process.pidfd) }
        var escalation = Escalation(timeout: timeout, grace: grace)
        // Quiet steps read into a small buffer; one that fills it gets a large one (a 256 KiB buffer per
        // step was mapped and unmapped by malloc each time: page faults and TLB shoot-downs per step).
        var bufferSize = 16 * 1024
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: process.stdout, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: process.stderr, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var status: Int32 = 0
        var exited = false

        var grown = [false, false]
        func readOnce(_ index: Int) -> Bool {
            let n = read(fds[index].fd, buffer.baseAddress, bufferSize)
            if n > 0 {
                sink.consume(stream: index + 1, bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                // A read that filled the buffer: a chatty step. A large buffer, and a 1 MiB pipe that lets
                // it run ahead while its output is written to the log; quiet steps pay for neither.
                if n == bufferSize {
                    if !grown[index] {
                        grown[index] = true
                        _ = fcntl(fds[index].fd, 1031 /* F_SETPIPE_SZ */, 1 << 20)
                    }
                    if bufferSize < 256 * 1024 {
                        bufferSize = 256 * 1024
                        buffer.deallocate()
                        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
                    }
                }
                return true
            }
            if n < 0, errno == EINTR { return true }
            if n < 0, errno == EAGAIN { return false }
            close(fds[index].fd)
            fds[index].fd = -1
            open -= 1
            return false
        }

        while true {
            if open > 0 {
                let ready = poll(&fds, 2, 50)
                if ready > 0 {
                    for index in 0..<2 where fds[index].fd >= 0 && fds[index].revents != 0 {
                        _ = readOnce(index)
                    }
                }
            }
            if !exited {
                let waited = open == 0 ? waitpid(process.pid, &status, 0) : waitpid(process.pid, &status, WNOHANG)
                if waited == process.pid { exited = true }
            }
            if exited {
                // The main process is gone; children that kept the pipes open are not waited for.
                for index in 0..<2 where fds[index].fd >= 0 {
                    _ = fcntl(fds[index].fd, F_SETFL, fcntl(fds[index].fd, F_GETFL) | O_NONBLOCK)
                    while fds[index].fd >= 0, readOnce(index) {}
                    if fds[index].fd >= 0 {
                        close(fds[index].fd)
                        fds[index].fd = -1
                        open -= 1
                    }
                }
                break
            }
            escalation.check(group: process.pid, control: control)
        }
        sink.finish()
        return escalation.termination(status: status, control: control)
    }

    /// Descriptors Slipway inherited from its parent (a test harness's status pipe, a CI agent's socket)
    /// must not leak into steps: a step's orphan holding one open would keep the parent waiting.
    /// Slipway's own descriptors are all opened close-on-exec; this marks the inherited ones too, once.
    static let inheritedDescriptorsClosedOnExec: Void = {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for entry in entries {
            guard let fd = Int32(entry), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0, flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }()

    /// Starts the process. `detached`: return as soon as it exists, not once it has exec'd (see
    /// `slipway_spawn_detached`); whoever reaps it then calls `settleLaunch`. Where a detached start is not
    /// supported, or fails, the start waits for the exec as usual.
    static func spawn(_ configuration: Configuration, detached: Bool = false) throws(StepProcessError) -> Spawned {
        _ = inheritedDescriptorsClosedOnExec
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard slipway_pipe_cloexec(&outPipe) == 0 else { throw StepProcessError(description: "cannot create a pipe: \(String(cString: strerror(errno)))") }
        guard slipway_pipe_cloexec(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw StepProcessError(description: "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        let argv = CStringList([configuration.executable] + configuration.arguments)
        let envp = configuration.variables.encoded()
        var error: Int32 = 0
        var stage: Int32 = 0
        var pidfd: Int32 = -1
        var launch: UnsafeMutableRawPointer?
        let pid = argv.withPointers { argv in
            envp.withPointers { envp in
                let pid = detached ? slipway_spawn_detached(configuration.executable, argv, envp, configuration.workingDirectory, outPipe[1], errPipe[1], &error, &pidfd, &launch) : -1
                return pid > 0 ? pid : slipway_spawn(configuration.executable, argv, envp, configuration.workingDirectory, outPipe[1], errPipe[1], &error, &stage, &pidfd)
            }
        }
        close(outPipe[1])
        close(errPipe[1])
        guard pid > 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw startError(configuration, stage: stage, error: error)
        }
        return Spawned(pid: pid, stdout: outPipe[0], stderr: errPipe[0], pidfd: pidfd, launch: UInt(bitPattern: launch))
    }

    /// A detached start's end, once its process has been reaped: the error that kept it from its exec (it
    /// exited 127 then), or nil. Frees the launch block; call once.
    static func settleLaunch(_ spawned: Spawned, _ configuration: Configuration) -> StepProcessError? {
        guard let launch = UnsafeMutableRawPointer(bitPattern: spawned.launch) else { return nil }
        defer { slipway_launch_release(launch) }
        var error: Int32 = 0
        var stage: Int32 = 0
        guard slipway_launch_failure(launch, &error, &stage) != 0 else { return nil }
        return startError(configuration, stage: stage, error: error)
    }

    private static func startError(_ configuration: Configuration, stage: Int32, error: Int32) -> StepProcessError {
        let what = switch stage {
        case 2: "cannot open /dev/null for \(configuration.executable)"
        case 4: "cannot change to the working directory \(configuration.workingDirectory)"
        case 6: "cannot start \(configuration.executable)"
        default: "cannot start \(configuration.executable) (setting up its process)"
        }
        return StepProcessError(description: "\(what): \(String(cString: strerror(error)))")
    }
}

/// NUL-terminated strings packed in one buffer, with the NULL-terminated pointer array `execve` takes: one
/// allocation for a step's environment instead of an interpolated String and a `strdup` per variable (16 µs
/// of a no-op job's 110 on the loop).
struct CStringList {
    private var bytes: [UInt8] = []
    private var offsets: [Int] = []

    /// `KEY=value` for each variable of `environment`: the inherited block as it was encoded, less the
    /// variables set over it, then those.
    init(_ environment: StepEnvironment) {
        let inherited = environment.inherited
        var shadowed: [Int] = []
        var names: [String] = []
        bytes = inherited.bytes
        bytes.reserveCapacity(inherited.bytes.count + environment.overlay.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 2 })
        // Last one set wins.
        var own: [Int] = []
        for index in environment.overlay.indices.reversed() where !names.contains(environment.overlay[index].name) {
            names.append(environment.overlay[index].name)
            own.append(index)
            if let entry = inherited.entries[environment.overlay[index].name] { shadowed.append(entry) }
        }
        offsets.reserveCapacity(inherited.offsets.count + own.count)
        for (entry, offset) in inherited.offsets.enumerated() where !shadowed.contains(entry) { offsets.append(offset) }
        for index in own.reversed() {
            offsets.append(bytes.count)
            Self.appendVariable(environment.overlay[index].name, environment.overlay[index].value, to: &bytes)
        }
    }

    /// `name=value` and its NUL.
    static func appendVariable(_ name: String, _ value: String, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: name.utf8)
        bytes.append(UInt8(ascii: "="))
        bytes.append(contentsOf: value.utf8)
        bytes.append(0)
    }

    init(_ strings: [String]) {
        for string in strings { append(string.utf8) }
    }

    private mutating func append(_ utf8: String.UTF8View) {
        offsets.append(bytes.count)
        bytes.append(contentsOf: utf8)
        bytes.append(0)
    }

    /// execve(2) only reads the strings; the pointers are mutable because its C signature says so.
    func withPointers<R>(_ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        bytes.withUnsafeBytes { buffer in
            var pointers: [UnsafeMutablePointer<CChar>?] = []
            pointers.reserveCapacity(offsets.count + 1)
            if let base = buffer.baseAddress {
                let characters = base.assumingMemoryBound(to: CChar.self)
                for offset in offsets { pointers.append(UnsafeMutablePointer(mutating: characters + offset)) }
            }
            pointers.append(nil)
            return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
        }
    }
}

/// A step's environment: the variables every step of a run inherits, encoded once, with the job's and the
/// step's own set over them. Copying the inherited dictionary for each job, setting a dozen `SLIPWAY_*`
/// variables in the copy and encoding it all again cost a no-op job more than any other part of its start.
public struct StepEnvironment: Sendable {
    /// The inherited variables and their `KEY=value\0` encoding.
    public final class Inherited: Sendable {
        let values: [String: String]
        let bytes: [UInt8]
        let offsets: [Int]
        /// Entry number by name.
        let entries: [String: Int]

        public init(_ values: [String: String]) {
            var bytes: [UInt8] = [], offsets: [Int] = [], entries: [String: Int] = [:]
            for (name, value) in values {
                entries[name] = offsets.count
                offsets.append(bytes.count)
                CStringList.appendVariable(name, value, to: &bytes)
            }
            self.values = values
            self.bytes = bytes
            self.offsets = offsets
            self.entries = entries
        }
    }

    public let inherited: Inherited
    /// Set over the inherited ones, in order: a later one wins.
    public private(set) var overlay: [(name: String, value: String)] = []

    public init(inherited: Inherited) { self.inherited = inherited }

    public init(_ variables: [String: String]) { self.init(inherited: Inherited(variables)) }

    public subscript(name: String) -> String? {
        get { overlay.last { $0.name == name }?.value ?? inherited.values[name] }
        set {
            if let newValue {
                overlay.append((name, newValue))
            } else {
                // Removing is rare (nothing in a run does); the dictionary form keeps it simple.
                var all = dictionary
                all[name] = nil
                self = StepEnvironment(all)
            }
        }
    }

    public var dictionary: [String: String] {
        var all = inherited.values
        for (name, value) in overlay { all[name] = value }
        return all
    }

    func encoded() -> CStringList { CStringList(self) }
}
