#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import Synchronization

/// Where live output goes besides the log file (the terminal, a live view, later an SSE stream).
public protocol LiveOutput: Sendable {
    /// Complete lines of one job, already masked, each ending in "\n".
    func lines(job: String, bytes: [UInt8])
}

/// Writes a step's output to its log file, one timestamped line per output line:
/// `<unix-ms> <o|e> <text>`. Secrets are masked before anything is written or shown.
/// Used only from the step's reader thread.
public final class StepLog: ProcessOutputSink {
    /// Opened on the first line: most no-op steps print nothing, and a file not created is an inode saved.
    var fd: Int32 = -1
    let path: String
    let jobKey: String
    let live: LiveOutput?
    let masker: SecretMasker
    var streaming: [StreamingMasker]
    var partial: [[UInt8]] = [[], []]
    public private(set) var lastLine: String = ""
    public private(set) var bytesCaptured: Int = 0
    let maxLineBytes = 64 * 1024
    let livePrefix: [UInt8]

    /// `directoryReady`: the caller made the log's directory and found it writable.
    public init(path: String, jobKey: String, masker: SecretMasker, live: LiveOutput?, directoryReady: Bool = false) throws(EngineError) {
        if !directoryReady {
            let directory = FileTree.parent(path)
            try? FileTree.makeDirectories(directory)
            guard access(directory, W_OK) == 0 else { throw EngineError("cannot write logs into \(directory): \(String(cString: strerror(errno)))") }
        }
        self.path = path
        self.jobKey = jobKey
        self.live = live
        self.masker = masker
        self.streaming = [StreamingMasker(masker: masker, maxLineBytes: maxLineBytes), StreamingMasker(masker: masker, maxLineBytes: maxLineBytes)]
        self.livePrefix = []
    }

    deinit { if fd >= 0 { close(fd) } }

    static func timestampPrefix(stream: Int) -> [UInt8] {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let millis = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
        return Array("\(millis) \(stream == 1 ? "o" : "e") ".utf8)
    }

    public func consume(stream: Int, bytes: UnsafeRawBufferPointer) {
        bytesCaptured += bytes.count
        let index = stream - 1
        let prefix = Self.timestampPrefix(stream: stream)
        var file: [UInt8] = []
        var shown: [UInt8] = []
        let hasLive = live != nil
        file.reserveCapacity(bytes.count + bytes.count / 16 + 64)
        if hasLive { shown.reserveCapacity(bytes.count + 64) }
        if masker.isEmpty {
            // Fast path: split on newlines with memchr, no per-line allocation. Only the first line of a
            // chunk can continue an earlier partial line, so the rest are one contiguous run for the live view.
            var start = 0
            let count = bytes.count
            let base = bytes.baseAddress!
            var runStart = -1
            var runEnd = -1
            while start < count {
                guard let found = memchr(base + start, 0x0A, count - start) else {
                    partial[index].append(contentsOf: UnsafeRawBufferPointer(start: base + start, count: count - start))
                    if partial[index].count > maxLineBytes {
                        emit(partial[index], prefix: prefix, file: &file, shown: &shown)
                        partial[index].removeAll(keepingCapacity: true)
                    }
                    break
                }
                let end = UnsafeRawPointer(found) - UnsafeRawPointer(base)
                let segment = UnsafeRawBufferPointer(start: base + start, count: end - start)
                if partial[index].isEmpty {
                    file.append(contentsOf: prefix)
                    file.append(contentsOf: segment)
                    file.append(0x0A)
                    if runStart < 0 { runStart = start }
                    runEnd = end
                } else {
                    partial[index].append(contentsOf: segment)
                    emit(partial[index], prefix: prefix, file: &file, shown: &shown)
                    partial[index].removeAll(keepingCapacity: true)
                }
                start = end + 1
            }
            if runStart >= 0 {
                var lineStart = runEnd
                while lineStart > runStart, bytes[lineStart - 1] != 0x0A { lineStart -= 1 }
                lastLine = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[lineStart..<runEnd]).prefix(200), as: UTF8.self)
                if hasLive { shown.append(contentsOf: bytes[runStart...runEnd]) }
            }
        } else {
            for line in streaming[index].feed(bytes) {
                emit(line, prefix: prefix, file: &file, shown: &shown)
            }
        }
        flush(file: file, shown: shown)
    }

    func emit(_ line: [UInt8], prefix: [UInt8], file: inout [UInt8], shown: inout [UInt8]) {
        file.append(contentsOf: prefix)
        file.append(contentsOf: line)
        file.append(0x0A)
        if live != nil {
            shown.append(contentsOf: line)
            shown.append(0x0A)
        }
        lastLine = String(decoding: line.prefix(200), as: UTF8.self)
    }

    func flush(file: [UInt8], shown: [UInt8]) {
        if !file.isEmpty, fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        if !file.isEmpty, fd >= 0 {
            file.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 { if errno == EINTR { continue }; break }
                    offset += n
                }
            }
        }
        if let live, !shown.isEmpty { live.lines(job: jobKey, bytes: shown) }
    }

    public func finish() {
        var file: [UInt8] = []
        var shown: [UInt8] = []
        for index in 0..<2 {
            let prefix = Self.timestampPrefix(stream: index + 1)
            if masker.isEmpty {
                if !partial[index].isEmpty { emit(partial[index], prefix: prefix, file: &file, shown: &shown) }
                partial[index].removeAll()
            } else {
                for line in streaming[index].finish() { emit(line, prefix: prefix, file: &file, shown: &shown) }
            }
        }
        flush(file: file, shown: shown)
    }

    /// Writes a line of a built-in step's own output (stdout), masked.
    public func write(_ text: String) {
        var file: [UInt8] = []
        var shown: [UInt8] = []
        for line in masker.mask(text).split(separator: "\n", omittingEmptySubsequences: false) {
            emit(Array(line.utf8), prefix: Self.timestampPrefix(stream: 1), file: &file, shown: &shown)
        }
        flush(file: file, shown: shown)
    }

    /// Writes a line that Slipway itself adds to the log (a failure reason, a skipped step).
    public func note(_ text: String) {
        var file: [UInt8] = []
        var shown: [UInt8] = []
        emit(Array(masker.mask(text).utf8), prefix: Self.timestampPrefix(stream: 2), file: &file, shown: &shown)
        flush(file: file, shown: shown)
    }
}

/// Reads a log file back: each entry with its time, stream and text.
public enum LogReader {
    public struct Line: Sendable {
        public var time: Date?
        public var stream: Character
        public var text: Substring
    }

    public static func lines(of data: Data) -> [Line] {
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).compactMap { raw -> Line? in
            if raw.isEmpty { return nil }
            guard let space = raw.firstIndex(of: " "), let millis = Int64(raw[..<space]) else {
                return Line(time: nil, stream: "o", text: raw)
            }
            let rest = raw[raw.index(after: space)...]
            guard let stream = rest.first, rest.dropFirst().first == " " else { return Line(time: nil, stream: "o", text: raw) }
            return Line(time: Date(timeIntervalSince1970: Double(millis) / 1000), stream: stream, text: rest.dropFirst(2))
        }
    }
}
