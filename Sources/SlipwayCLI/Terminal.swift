#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Terminal output: one lock so lines from parallel jobs never interleave mid-line; colours only on a TTY.
enum Terminal {
    static let lock = Mutex(())
    static let stdoutIsTTY = isatty(1) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    static let stderrIsTTY = isatty(2) == 1
    static let colours = stdoutIsTTY && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    /// Set while a run goes on: its standard output is written by a thread of its own (`OutputQueue`).
    static let queue = Mutex<OutputQueue?>(nil)

    /// From here on standard output goes through a queue, so a reader that stops reading (a paused pager,
    /// a pipe nobody drains, Ctrl-S) holds up the output only, never the run: its thread must go on
    /// enforcing timeouts and reaping steps.
    static func startQueue() {
        // A file or /dev/null takes every write at once; only a reader at the other end can stall one.
        var info = stat()
        guard fstat(1, &info) == 0, info.st_mode & S_IFMT == S_IFIFO || info.st_mode & S_IFMT == S_IFSOCK || isatty(1) == 1 else { return }
        queue.withLock { if $0 == nil { $0 = OutputQueue(fd: 1) } }
    }

    /// Writes out what is queued (waiting for the reader as long as it takes) and writes directly again.
    static func drainQueue() {
        queue.withLock { slot -> OutputQueue? in defer { slot = nil }; return slot }?.drain()
    }

    static func write(_ bytes: [UInt8], fd: Int32 = 1) {
        if fd == 1, let queue = queue.withLock({ $0 }) {
            queue.enqueue(bytes)
            return
        }
        writeNow(bytes, fd: fd)
    }

    static func writeNow(_ bytes: [UInt8], fd: Int32) {
        lock.withLock { _ in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 { if errno == EINTR { continue }; return }
                    offset += n
                }
            }
        }
    }

    static func print(_ text: String) { write(Array((text + "\n").utf8)) }

    /// A remark on standard error that is not an error (stdout carries a result scripts capture).
    static func note(_ text: String) {
        write(Array((text + "\n").utf8), fd: 2)
    }

    static func error(_ text: String) {
        let prefix = stderrIsTTY ? "\u{1B}[31merror:\u{1B}[0m " : "error: "
        write(Array((prefix + text + "\n").utf8), fd: 2)
    }

    static func paint(_ text: String, _ code: String) -> String {
        colours ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    static func green(_ t: String) -> String { paint(t, "32") }
    static func red(_ t: String) -> String { paint(t, "31") }
    static func yellow(_ t: String) -> String { paint(t, "33") }
    static func dim(_ t: String) -> String { paint(t, "2") }
    static func bold(_ t: String) -> String { paint(t, "1") }
    static func cyan(_ t: String) -> String { paint(t, "36") }

    static func formatDuration(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded()))ms" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let total = Int(seconds.rounded())
        if total < 3600 { return String(format: "%dm%02ds", total / 60, total % 60) }
        return String(format: "%dh%02dm", total / 3600, (total % 3600) / 60)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Output written by a thread of its own, from a bounded queue. Past `limit` bytes waiting, output is
/// left out (the logs on disk have all of it) and a note says how many lines were; the run never waits.
final class OutputQueue: Sendable {
    struct State {
        var chunks: [[UInt8]] = []
        var bytes = 0
        var droppedLines = 0
        var draining = false
    }

    let fd: Int32
    static let limit = 8 << 20
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32) {
        self.fd = fd
        let thread = Thread { [self] in run() }
        thread.name = "slipway-output"
        thread.start()
    }

    func enqueue(_ bytes: [UInt8]) {
        let signal = state.withLock { state -> Bool in
            // Nothing waiting and room in the pipe for a line: written here and now, without waking the
            // thread (two wakes a job cost the 1000-job run a tenth of its time).
            if state.bytes == 0, state.droppedLines == 0, bytes.count <= Int(PIPE_BUF), Self.writable(fd) {
                Terminal.writeNow(bytes, fd: fd)
                return false
            }
            guard state.bytes + bytes.count <= Self.limit else {
                state.droppedLines += max(1, bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) })
                return false
            }
            if state.droppedLines > 0 { Self.noteDropped(&state) }
            state.chunks.append(bytes)
            state.bytes += bytes.count
            return state.chunks.count == 1
        }
        if signal { wake.signal() }
    }

    /// Whether `fd` takes a write of up to PIPE_BUF bytes without blocking.
    private static func writable(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLOUT) != 0
    }

    private static func noteDropped(_ state: inout State) {
        let note = Array("slipway: \(state.droppedLines) line(s) of output not shown here (the reader was not keeping up); `slipway logs` has them all\n".utf8)
        state.chunks.append(note)
        state.bytes += note.count
        state.droppedLines = 0
    }

    /// Writes out everything queued, then stops the thread.
    func drain() {
        state.withLock { state in
            if state.droppedLines > 0 { Self.noteDropped(&state) }
            state.draining = true
        }
        wake.signal()
        done.wait()
    }

    private func run() {
        while true {
            let (chunks, finished) = state.withLock { state -> ([[UInt8]], Bool) in
                defer { state.chunks = [] }
                return (state.chunks, state.draining && state.chunks.isEmpty)
            }
            if finished { break }
            if chunks.isEmpty {
                wake.wait()
                continue
            }
            for chunk in chunks {
                Terminal.writeNow(chunk, fd: fd)
                state.withLock { $0.bytes -= chunk.count }
            }
        }
        done.signal()
    }
}
