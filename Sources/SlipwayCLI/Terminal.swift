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

    static func write(_ bytes: [UInt8], fd: Int32 = 1) {
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
