#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Ends processes that a killed `slipway run` left behind. Steps carry `SLIPWAY_RUN_ID` in their
/// environment, so they are found through /proc even when no process group was recorded in time.
public enum ProcessReaper {
    /// Kills every process whose environment says it belongs to `runID`; returns how many.
    /// Run ids are per project, so `runDirectory` (the run's directory, a prefix of every step's
    /// `SLIPWAY_WORKSPACE`) keeps another project's run with the same id safe.
    @discardableResult
    public static func reap(runID: Int64, runDirectory: String? = nil) -> Int {
        let marker = Array("SLIPWAY_RUN_ID=\(runID)".utf8)
        let workspaceMarker = runDirectory.map { Array("SLIPWAY_WORKSPACE=\($0)/".utf8) }
        return reap { variables in
            variables.contains { $0.elementsEqual(marker) } && (workspaceMarker.map { prefix in variables.contains { $0.starts(with: prefix) } } ?? true)
        }
    }

    /// Kills every step process whose workspace is under `directory` (a runner's work directory,
    /// after the runner was killed); returns how many.
    @discardableResult
    public static func reap(workspacesUnder directory: String) -> Int {
        let prefix = Array("SLIPWAY_WORKSPACE=\(directory)/".utf8)
        return reap { variables in variables.contains { $0.starts(with: prefix) } }
    }

    static func reap(where matches: ([ArraySlice<UInt8>]) -> Bool) -> Int {
        let me = getpid()
        let myGroup = getpgrp()
        var killed = 0
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        for entry in entries {
            guard let pid = Int32(entry), pid != me, pid > 1 else { continue }
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            if matches(environ.split(separator: 0).map { ArraySlice($0) }) {
                let group = getpgid(pid)
                if group > 1, group != myGroup { _ = kill(-group, SIGKILL) }
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
