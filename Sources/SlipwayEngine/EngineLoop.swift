#if canImport(Glibc)
import Glibc
#endif
import CSlipwaySystem
import Foundation
import Synchronization

/// One thread that runs a run's engine and job tasks and supervises their step processes, as make does:
/// a step's end wakes this thread only, which reads the step's last output, records its end, starts the next
/// step and goes back to `epoll_wait`. With tasks on the shared pool and a reader thread per step, each job
/// took four hand-offs between threads, and on two cores the woken thread often waited for the busy core
/// while its waker's core went idle (a third of the cores' time in a wide run).
///
/// A run has one such loop per core ("lanes", `run(lanes:_:)`): a single one took every step's end, so on two
/// cores a step ending on the other core waited for this thread, busy on its own (see `RunDriver`).
///
/// Tasks get here by preference (`run(_:)`); a step process is supervised here when its task runs on this
/// thread (`StepProcess.run` checks), otherwise on a reader thread of its own as before.
public final class EngineLoop: TaskExecutor, @unchecked Sendable {
    @TaskLocal static var current: EngineLoop?

    /// Runs `body` with its tasks, and the child tasks they start, on a new loop's thread, which ends with
    /// the body. Without epoll (it cannot be set up) the body runs where it would have run anyway.
    public static func run<T>(_ body: () async -> T) async -> T {
        await run(lanes: 1) { _ in await body() }
    }

    /// Runs `body` on the first of `count` new loops ("lanes", a thread each), which end with it; `body` puts
    /// tasks on the others by preference, and each such task `adopt`s its lane. Lanes that cannot be set up
    /// are left out: with none, `body` gets none and runs where it would have run anyway.
    public static func run<T>(lanes count: Int, _ body: ([EngineLoop]) async -> T) async -> T {
        var loops: [EngineLoop] = []
        for _ in 0..<max(1, count) {
            if let loop = start() { loops.append(loop) }
        }
        guard let first = loops.first else { return await body([]) }
        defer { for loop in loops { loop.shutdown() } }
        return await withTaskExecutorPreference(first) {
            await $current.withValue(first) { await body(loops) }
        }
    }

    /// Runs `body` as this loop's, in a task started on it by preference: its step processes are then
    /// supervised here.
    func adopt<T>(_ body: () async -> T) async -> T {
        await Self.$current.withValue(self) { await body() }
    }

    /// Runs work that may take long without suspending (copying artifacts, hashing cache inputs, building a
    /// release, a deploy) on the shared pool when called from a loop: on the loop's thread it would hold up
    /// every other job of the run, their output and their starts.
    public static func offloaded<T, E: Error>(_ body: () async throws(E) -> T) async throws(E) -> T {
        guard current != nil else { return try await body() }
        return try await withTaskExecutorPreference(globalConcurrentExecutor) { () async throws(E) -> T in try await body() }
    }

    private struct Shared {
        var jobs: [UnownedJob] = []
        var sleeping = false
        var stopped = false
        /// The thread has ended: a job enqueued now (none should be) goes to the shared pool, not nowhere.
        var exited = false
    }
    private let shared = Mutex(Shared())
    private let epoll: Int32
    private let wakeFD: Int32
    private let threadID = Atomic<UInt>(0)

    // Owned by the loop's thread.
    private var supervised: [UInt64: Supervised] = [:]
    private var nextToken: UInt64 = 1
    private var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    private static let wakeToken = UInt64.max
    /// Set by `slipway_epoll_wait` on a pipe's token when it hung up empty (SLIPWAY_EPOLL_HUNG_UP).
    private static let hungUp: UInt64 = 1 << 62
    /// How long a step's pipes go unwatched: most steps of a wide pipeline are over sooner, and what they
    /// wrote is read at their end (a pipe holds 64 KiB, a step that writes more waits this long at most).
    /// Watching a pipe and leaving the watch are two system calls each, four a step; and an unwatched pipe's
    /// hang-up, a few microseconds before the pidfd reports the exit, does not wake the loop a second time.
    static let pipesWatchedAfter = Duration.milliseconds(2)
    /// Processes whose pipes are not watched yet: the loop then looks again within `pipesWatchedAfter`.
    private var unwatched = 0

    private init(epoll: Int32, wakeFD: Int32) {
        self.epoll = epoll
        self.wakeFD = wakeFD
    }

    /// A loop with its thread started, or nil when epoll or the eventfd cannot be set up.
    private static func start() -> EngineLoop? {
        let epoll = slipway_epoll_create()
        let wakeFD = slipway_eventfd()
        guard epoll >= 0, wakeFD >= 0, slipway_epoll_add(epoll, wakeFD, wakeToken) == 0 else {
            if epoll >= 0 { close(epoll) }
            if wakeFD >= 0 { close(wakeFD) }
            return nil
        }
        let loop = EngineLoop(epoll: epoll, wakeFD: wakeFD)
        // The thread holds the loop until it ends.
        Thread { loop.loop() }.start()
        return loop
    }

    deinit {
        close(epoll)
        close(wakeFD)
        buffer.deallocate()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (accepted, wake) = shared.withLock { state -> (Bool, Bool) in
            if state.exited { return (false, false) }
            state.jobs.append(job)
            defer { state.sleeping = false }
            return (true, state.sleeping)
        }
        if !accepted { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        if wake { signal() }
    }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    var isCurrentThread: Bool { threadID.load(ordering: .relaxed) == UInt(pthread_self()) }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Ends the thread once it has run what is queued; a body that returned has no process left.
    private func shutdown() {
        shared.withLock { $0.stopped = true }
        signal()
    }

    private func loop() {
        threadID.store(UInt(pthread_self()), ordering: .relaxed)
        slipway_set_thread_name("slipway-engine")
        // This thread is the steps' parent. With SIGCHLD blocked here (as the thread it was started from had
        // it), the kernel cannot drop a step's SIGCHLD as ignored: it queues it for the process and wakes the
        // main thread (parked in sigsuspend by dispatch) and a dispatch thread, at every step's end.
        var childSignal = sigset_t()
        sigemptyset(&childSignal)
        sigaddset(&childSignal, SIGCHLD)
        pthread_sigmask(SIG_UNBLOCK, &childSignal, nil)
        // Asynchronous signals go to other threads: the detached starts then need not block them around each
        // clone (two system calls a step).
        _ = slipway_hold_signals()
        // While queued work keeps the loop busy, a look at the processes without waiting is taken every
        // fourth pass or 100 µs: a step's end and the start after it take two passes each, not two looks.
        var passesSinceLook = 0
        var lastLook = ContinuousClock.now
        var tokens = [UInt64](repeating: 0, count: 64)
        var batch: [UnownedJob] = []
        while true {
            let stop: Bool = shared.withLock { state in
                swap(&batch, &state.jobs)
                guard batch.isEmpty, state.stopped, supervised.isEmpty else { return false }
                state.exited = true
                return true
            }
            if stop {
                // A pthread id is reused: a task that outlives the run must not take another thread for this one.
                threadID.store(0, ordering: .relaxed)
                return
            }
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
            // Asleep as soon as nothing is queued, rather than after one more pass that finds nothing (an
            // epoll_wait per step less). Decided under the lock `enqueue` takes, so no wake-up is missed.
            let block: Bool = shared.withLock { state in
                guard state.jobs.isEmpty, !(state.stopped && supervised.isEmpty) else { return false }
                state.sleeping = true
                return true
            }
            if !block {
                passesSinceLook += 1
                if passesSinceLook < 4, ContinuousClock.now - lastLook < .microseconds(100) { continue }
            }
            passesSinceLook = 0
            // Timeouts and cancellations are checked at least every 50 ms while a step runs, pipes that are not
            // watched yet within 2 ms.
            let timeout: Int32 = block ? (supervised.isEmpty ? -1 : unwatched > 0 ? 2 : 50) : 0
            let ready = tokens.withUnsafeMutableBufferPointer { slipway_epoll_wait(epoll, $0.baseAddress, 64, timeout) }
            lastLook = ContinuousClock.now
            if block { shared.withLock { $0.sleeping = false } }
            for index in 0..<max(0, Int(ready)) {
                var token = tokens[index]
                if token == Self.wakeToken {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    continue
                }
                let hungUp = token & Self.hungUp != 0
                token &= ~Self.hungUp
                guard let process = supervised[token >> 2] else { continue }
                switch token & 3 {
                case 2: process.reap()
                default:
                    if hungUp { closePipe(process, Int(token & 3)) } else { readOnce(process, stream: Int(token & 3)) }
                }
            }
            // A quiet 50 ms: reap directly too, should a pidfd event ever not come. (Not after a look that
            // did not wait, nor a 2 ms one: that is a waitpid per process on every pass.)
            if ready == 0, block, timeout == 50 { for process in supervised.values { process.reap() } }
            if !supervised.isEmpty { superviseAll() }
        }
    }

    // MARK: step processes

    /// A step's process while it runs: its pipes and pidfd are registered with the loop.
    final class Supervised {
        let spawned: StepProcess.Spawned
        let configuration: StepProcess.Configuration
        let pidfd: Int32
        var fds: [Int32]
        var exited = false
        var status: Int32 = 0
        var escalation: StepProcess.Escalation
        let control: ProcessControl
        let sink: ProcessOutputSink
        var grown = [false, false]
        /// The pipes are in the loop's epoll set (see `EngineLoop.pipesWatchedAfter`).
        var pipesWatched = false
        let startedAt = ContinuousClock.now
        var continuation: CheckedContinuation<Result<ProcessTermination, StepProcessError>, Never>?

        init(spawned: StepProcess.Spawned, configuration: StepProcess.Configuration, pidfd: Int32, escalation: StepProcess.Escalation, control: ProcessControl, sink: ProcessOutputSink) {
            self.spawned = spawned
            self.configuration = configuration
            self.pidfd = pidfd
            self.fds = [spawned.stdout, spawned.stderr]
            self.escalation = escalation
            self.control = control
            self.sink = sink
        }

        func reap() {
            guard !exited else { return }
            while true {
                let waited = waitpid(spawned.pid, &status, WNOHANG)
                if waited == spawned.pid { exited = true; return }
                if waited < 0, errno == EINTR { continue }
                if waited < 0 { exited = true; status = 0x7f00; return }  // not ours to wait for: treat as exit 127
                return
            }
        }
    }

    /// Starts a step's process on this thread and returns when it has ended and its output is drained.
    /// The start is detached: this thread goes on while the child sets itself up and execs, instead of
    /// waiting in vfork (on two cores, often for the other core, busy with another step, while this one idles).
    func run(_ configuration: StepProcess.Configuration, control: ProcessControl, sink: ProcessOutputSink) async throws(StepProcessError) -> ProcessTermination {
        guard var spawned = try StepProcess.start(configuration, control: control, sink: sink, detached: true) else { return .cancelled }
        let pidfd = spawned.pidfd >= 0 ? spawned.pidfd : slipway_pidfd_open(spawned.pid)
        spawned.pidfd = -1  // the loop's own now
        guard pidfd >= 0 else {
            // No pidfd (a kernel before 5.3): the reader thread's poll-and-waitpid loop.
            return try await supervised(spawned, configuration: configuration, control: control, sink: sink)
        }
        let token = nextToken
        nextToken += 1
        // Only the pidfd at first: the pipes are watched once the step has run for a while (superviseAll).
        guard slipway_epoll_add(epoll, pidfd, token << 2 | 2) == 0 else {
            // epoll is out of room (ENOMEM, max_user_watches): this step gets a reader thread of its own.
            close(pidfd)
            return try await supervised(spawned, configuration: configuration, control: control, sink: sink)
        }
        let process = Supervised(spawned: spawned, configuration: configuration, pidfd: pidfd,
                                 escalation: .init(timeout: configuration.timeout, grace: configuration.gracePeriod), control: control, sink: sink)
        supervised[token] = process
        unwatched += 1
        return try await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                process.continuation = continuation
            }
        } onCancel: {
            control.cancel()
        }.get()
    }

    /// A process supervised on a reader thread of its own; a detached start that failed before its exec
    /// throws as a start that waited for it would have.
    private func supervised(_ spawned: StepProcess.Spawned, configuration: StepProcess.Configuration, control: ProcessControl, sink: ProcessOutputSink) async throws(StepProcessError) -> ProcessTermination {
        let termination = await StepProcess.supervise(spawned, configuration: configuration, control: control, sink: sink)
        if let failure = StepProcess.settleLaunch(spawned, configuration) { throw failure }
        return termination
    }

    private func readOnce(_ process: Supervised, stream index: Int) {
        let fd = process.fds[index]
        guard fd >= 0 else { return }
        let n = read(fd, buffer.baseAddress, buffer.count)
        if n > 0 {
            process.sink.consume(stream: index + 1, bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            // A chatty step: a 1 MiB pipe lets it run ahead while its output is written to the log.
            if n >= 16 * 1024, !process.grown[index] {
                process.grown[index] = true
                _ = fcntl(fd, 1031 /* F_SETPIPE_SZ */, 1 << 20)
            }
            return
        }
        if n < 0, errno == EINTR || errno == EAGAIN { return }
        closePipe(process, index)
    }

    /// Leaves the epoll set before closing: a close alone is not enough, as a step started since (detached:
    /// it has not exec'd yet) holds a copy of this process's descriptors, and epoll would go on reporting a
    /// descriptor it no longer knows, on every wait until that step's exec.
    private func closePipe(_ process: Supervised, _ index: Int) {
        let fd = process.fds[index]
        guard fd >= 0 else { return }
        if process.pipesWatched { _ = slipway_epoll_remove(epoll, fd) }
        close(fd)
        process.fds[index] = -1
    }

    /// Timeouts, cancellations and ends of every supervised process.
    private func superviseAll() {
        let now = ContinuousClock.now
        // One ended process at a time, and only once the queued work has run: that work is what starts the
        // next steps. When two steps end together, ending both at once would queue the second job's
        // bookkeeping ahead of the step that replaces the first, and the core the second leaves would
        // wait idle through both.
        var mayFinish = shared.withLock { $0.jobs.isEmpty }
        for (token, process) in supervised {
            if process.exited {
                guard mayFinish else { continue }
                mayFinish = false
                // The main process is gone; children that kept the pipes open are not waited for. What the
                // pipes hold now is read, no more: a background child writing on and on must not keep the
                // run's only thread here.
                // (A read of no more than a pipe holds does not block, so the pipe stays as it is.)
                for index in 0..<2 where process.fds[index] >= 0 {
                    drainAvailable(process, index)
                    closePipe(process, index)
                }
                finish(token, process)
                continue
            }
            if !process.pipesWatched, now - process.startedAt >= Self.pipesWatchedAfter, !watchPipes(token, process) {
                // No room in the epoll set: what the pipes hold is read on every pass (2 ms) instead.
                for index in 0..<2 { drainAvailable(process, index) }
            }
            process.escalation.check(group: process.spawned.pid, control: process.control, now: now)
        }
    }

    /// Reads what a pipe holds now, no more: the read cannot block, whoever else still writes to it.
    private func drainAvailable(_ process: Supervised, _ index: Int) {
        let fd = process.fds[index]
        guard fd >= 0 else { return }
        var left = Int(slipway_pipe_available(fd))
        while left > 0 {
            let n = read(fd, buffer.baseAddress, min(left, buffer.count))
            if n > 0 {
                process.sink.consume(stream: index + 1, bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                left -= n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                break
            }
        }
    }

    /// Adds a running step's pipes to the epoll set; false (and tried again on the next pass) when epoll is
    /// out of room.
    private func watchPipes(_ token: UInt64, _ process: Supervised) -> Bool {
        var added: [Int32] = []
        for index in 0..<2 where process.fds[index] >= 0 {
            guard slipway_epoll_add(epoll, process.fds[index], token << 2 | UInt64(index)) == 0 else {
                for fd in added { _ = slipway_epoll_remove(epoll, fd) }
                return false
            }
            added.append(process.fds[index])
        }
        process.pipesWatched = true
        unwatched -= 1
        return true
    }

    private func finish(_ token: UInt64, _ process: Supervised) {
        supervised[token] = nil
        if !process.pipesWatched { unwatched -= 1 }
        _ = slipway_epoll_remove(epoll, process.pidfd)
        close(process.pidfd)
        // A child that could not exec wrote why before it exited: the step fails to start, as it would have
        // at the start itself (its sink untouched, for the caller's note).
        if let failure = StepProcess.settleLaunch(process.spawned, process.configuration) {
            process.continuation?.resume(returning: .failure(failure))
        } else {
            process.sink.finish()
            process.continuation?.resume(returning: .success(process.escalation.termination(status: process.status, control: process.control)))
        }
        process.continuation = nil
    }
}
