#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import SlipwayEngine
import SlipwayStore
import Synchronization

protocol Reporter: RunObserver {
    var lineSink: LiveOutput? { get }
    func finish()
}

enum Symbols {
    static func result(_ result: JobResult, allowed: Bool, cached: Bool) -> String {
        if cached { return Terminal.cyan("↺") }
        switch result {
        case .success: return Terminal.green("✓")
        case .failure: return allowed ? Terminal.yellow("!") : Terminal.red("✗")
        case .cancelled: return Terminal.yellow("⊘")
        case .skipped: return Terminal.dim("○")
        }
    }

    static func header(_ run: RunRecord, resumed: Bool) -> String {
        let commit = run.commit.map { String($0.prefix(10)) } ?? "no commit"
        let verb = resumed ? "resuming" : "run"
        return Terminal.bold("slipway: \(verb) #\(run.number) of \(run.pipelineName)") + Terminal.dim(" · \(run.event) on \(run.branch ?? "-") @ \(commit)\(run.dirty ? " + uncommitted changes" : "")")
    }

    static func footer(_ run: RunRecord, result: JobResult, duration: Duration, counts: [JobResult: Int]) -> String {
        let parts = [JobResult.success, .failure, .cancelled, .skipped].compactMap { r -> String? in
            guard let n = counts[r], n > 0 else { return nil }
            return "\(n) \(r == .success ? "succeeded" : r == .failure ? "failed" : r.rawValue)"
        }
        let time = Terminal.formatDuration(Terminal.seconds(duration))
        let line = "run #\(run.number) \(result == .success ? "succeeded" : result == .failure ? "failed" : result.rawValue) in \(time) — \(parts.joined(separator: ", "))"
        return result == .success ? Terminal.green(line) : Terminal.red(line)
    }
}

/// Non-TTY output: every log line prefixed with its job, plus one line per job transition.
final class PlainReporter: Reporter, LiveOutput, Sendable {
    let counts = Mutex<[JobResult: Int]>([:])
    var lineSink: LiveOutput? { self }

    func lines(job: String, bytes: [UInt8]) {
        let prefix = Array("[\(job)] ".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + bytes.count / 8)
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var start = 0
            while start < raw.count {
                let end = memchr(base + start, 0x0A, raw.count - start).map { UnsafeRawPointer($0) - base } ?? (raw.count - 1)
                out.append(contentsOf: prefix)
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[start...end]))
                start = end + 1
            }
        }
        Terminal.write(out)
    }

    func progress(_ event: RunProgress) {
        if let line = line(for: event) { Terminal.write(line) }
    }

    /// A turn's lines in one write.
    func progress(batch events: [RunProgress]) {
        var out: [UInt8] = []
        for event in events { if let line = line(for: event) { out += line } }
        if !out.isEmpty { Terminal.write(out) }
    }

    /// The line an event prints, if any.
    func line(for event: RunProgress) -> [UInt8]? {
        switch event {
        case .runStarted(let run, _, let resumed):
            return Array((Symbols.header(run, resumed: resumed) + "\n").utf8)
        case .jobStarted(let key, let attempt, let reason):
            // Built as bytes: two lines per job are a share of a no-op job's start (as much as setting up its pipes).
            var line: [UInt8] = Array("▶ ".utf8)
            line.reserveCapacity(key.utf8.count + 16)
            line.append(contentsOf: Terminal.bold(key).utf8)
            if attempt > 1 { line.append(contentsOf: Terminal.dim(" attempt \(attempt): \(reason)").utf8) }
            line.append(0x0A)
            return line
        case .stepStarted: return nil
        case .stepFinished(let key, _, let name, let status, let detail):
            guard status == .skipped else { return nil }
            return Array((Terminal.dim("  [\(key)] step '\(name)' \(status.rawValue)\(detail.map { ": \($0)" } ?? "")") + "\n").utf8)
        case .jobFinished(let key, let result, let allowed, let reason, let cached, let duration):
            counts.withLock { $0[result, default: 0] += 1 }
            var line: [UInt8] = Array(Symbols.result(result, allowed: allowed, cached: cached).utf8)
            line.reserveCapacity(line.count + key.utf8.count + 16)
            line.append(0x20)
            line.append(contentsOf: key.utf8)
            if let duration {
                line.append(0x20)
                line.append(contentsOf: Terminal.formatDuration(Terminal.seconds(duration)).utf8)
            }
            if result != .success || cached { line.append(contentsOf: Terminal.dim(" — \(reason)").utf8) }
            line.append(0x0A)
            return line
        case .runFinished(let run, let result, let duration):
            return Array((Symbols.footer(run, result: result, duration: duration, counts: counts.withLock { $0 }) + "\n").utf8)
        }
    }

    func finish() {}
}

/// TTY output: a compact live view of the DAG, redrawn in place; log lines go to files only.
final class LiveReporter: Reporter, LiveOutput, @unchecked Sendable {
    struct Row {
        var key: String
        var state: String = "pending"
        var result: JobResult?
        var allowed = false
        var cached = false
        var started: Date?
        var duration: Double?
        var lastLine = ""
        var reason = ""
    }

    // All fields below are guarded by `lock`.
    let lock = Mutex(())
    nonisolated(unsafe) var rows: [Row] = []
    nonisolated(unsafe) var drawnLines = 0
    nonisolated(unsafe) var header = ""
    nonisolated(unsafe) var footer: String?
    nonisolated(unsafe) var timer: DispatchSourceTimer?
    let queue = DispatchQueue(label: "slipway.live")

    var lineSink: LiveOutput? { self }

    func lines(job: String, bytes: [UInt8]) {
        guard let end = bytes.lastIndex(of: 0x0A) else { return }
        let start = bytes[..<end].lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        let text = String(decoding: bytes[start..<end].prefix(120), as: UTF8.self).filter { $0 != "\r" && $0 != "\u{1B}" }
        lock.withLock { _ in
            if let index = rows.firstIndex(where: { $0.key == job }) { rows[index].lastLine = text }
        }
    }

    func progress(_ event: RunProgress) {
        lock.withLock { _ in
            switch event {
            case .runStarted(let run, let jobs, let resumed):
                header = Symbols.header(run, resumed: resumed)
                rows = jobs.map { Row(key: $0) }
                startTimer()
            case .jobStarted(let key, let attempt, _):
                if let i = rows.firstIndex(where: { $0.key == key }) {
                    rows[i].state = attempt > 1 ? "running (attempt \(attempt))" : "running"
                    rows[i].started = rows[i].started ?? Date()
                }
            case .stepStarted(let key, _, let name):
                if let i = rows.firstIndex(where: { $0.key == key }) { rows[i].lastLine = "› \(name)" }
            case .stepFinished: break
            case .jobFinished(let key, let result, let allowed, let reason, let cached, let duration):
                if let i = rows.firstIndex(where: { $0.key == key }) {
                    rows[i].result = result
                    rows[i].allowed = allowed
                    rows[i].cached = cached
                    rows[i].duration = duration.map(Terminal.seconds)
                    rows[i].reason = reason
                }
            case .runFinished(let run, let result, let duration):
                var counts: [JobResult: Int] = [:]
                for row in rows { if let r = row.result { counts[r, default: 0] += 1 } }
                footer = Symbols.footer(run, result: result, duration: duration, counts: counts)
            }
        }
    }

    func startTimer() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now(), repeating: .milliseconds(100))
        timer.setEventHandler { [self] in redraw() }
        timer.resume()
        self.timer = timer
    }

    func render() -> [String] {
        var width = 80
        var size = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 20 { width = Int(size.ws_col) }
        let nameWidth = min(40, rows.map(\.key.count).max() ?? 10)
        var lines = [header]
        for row in rows {
            let symbol: String
            var detail = ""
            var time = ""
            if let result = row.result {
                symbol = Symbols.result(result, allowed: row.allowed, cached: row.cached)
                time = row.duration.map(Terminal.formatDuration) ?? ""
                if result != .success || row.cached { detail = row.reason }
            } else if row.state.hasPrefix("running") {
                let frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
                symbol = Terminal.cyan(frames[Int(Date().timeIntervalSince1970 * 10) % frames.count])
                time = row.started.map { Terminal.formatDuration(Date().timeIntervalSince($0)) } ?? ""
                detail = row.state == "running" ? row.lastLine : row.state + " " + row.lastLine
            } else {
                symbol = Terminal.dim("·")
            }
            let name = row.key.count > nameWidth ? String(row.key.prefix(nameWidth - 1)) + "…" : row.key.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            var line = " \(symbol) \(name)  \(time.padding(toLength: 7, withPad: " ", startingAt: 0)) "
            let room = max(0, width - nameWidth - 14)
            line += Terminal.dim(String(detail.prefix(room)))
            lines.append(line)
        }
        if let footer { lines.append(footer) }
        return lines
    }

    func redraw() {
        let output: String = lock.withLock { _ in
            let lines = render()
            var text = drawnLines > 0 ? "\u{1B}[\(drawnLines)F" : ""
            for line in lines { text += "\u{1B}[2K" + line + "\n" }
            drawnLines = lines.count
            return text
        }
        Terminal.write(Array(output.utf8))
    }

    func finish() {
        timer?.cancel()
        queue.sync {}
        redraw()
    }
}
