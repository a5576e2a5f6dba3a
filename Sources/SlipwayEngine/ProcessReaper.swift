#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Ends processes that a killed `slipway run` left behind. Steps carry `SLIPWAY_RUN_ID` in their
/// environment, so they are found through /proc even when no process group was recorded in time.
public enum ProcessReaper {
    /// Kills every process whose environment says it belongs to `runID`; returns how many.
    @discardableResult
    public static func reap(runID: Int64) -> Int {
        let marker = Array("SLIPWAY_RUN_ID=\(runID)".utf8)
        let me = getpid()
        var killed = 0
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        for entry in entries {
            guard let pid = Int32(entry), pid != me, pid > 1 else { continue }
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let matches = environ.split(separator: 0).contains { $0.elementsEqual(marker) }
            if matches {
                _ = kill(-getpgid(pid), SIGKILL)
                _ = kill(pid, SIGKILL)
                killed += 1
            }
        }
        return killed
    }

    /// Whether `pid` is a live `slipway` process (a run that is still going).
    public static func isSlipwayProcess(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let first = cmdline.split(separator: 0).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return first.hasSuffix("slipway")
    }
}
