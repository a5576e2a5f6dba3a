import Foundation
import SlipwayEngine
import Synchronization

/// A bare mirror of a project's repository under the server's data directory; every run checks out its
/// exact commit from it into a directory of its own.
public struct RepositoryMirror: Sendable {
    public let source: String
    public let path: String

    public init(source: String, path: String) {
        self.source = source
        self.path = path
    }

    /// The source without credentials (`https://user:token@host/…` → `https://host/…`), for messages and logs.
    public static func redacted(_ source: String) -> String {
        guard let scheme = source.range(of: "://"), let at = source[scheme.upperBound...].firstIndex(of: "@"),
              !source[scheme.upperBound..<at].contains("/") else { return source }
        return String(source[..<scheme.upperBound]) + "***@" + source[source.index(after: at)...]
    }

    /// One lock per mirror in this process: the dispatcher and the scheduler may both want to clone or
    /// fetch the same mirror at once, and git's own ref locks would make one of them fail.
    private static let locks = Mutex<[String: NSLock]>([:])

    private var lock: NSLock {
        Self.locks.withLock { locks in
            if let lock = locks[path] { return lock }
            let lock = NSLock()
            locks[path] = lock
            return lock
        }
    }

    /// Clones the mirror the first time, fetches (pruning deleted refs) after that.
    public func update() throws(ServerError) {
        let lock = self.lock
        lock.lock()
        defer { lock.unlock() }
        if FileManager.default.fileExists(atPath: path + "/HEAD") {
            do {
                try git(["git", "--git-dir", path, "fetch", "--quiet", "--prune", "--force", "origin", "+refs/*:refs/*"], in: "/")
                return
            } catch {
                // A mirror a crash left broken (stale locks, a half-written clone) is cloned again.
                let probe = Helper.run(["git", "--git-dir", path, "rev-parse", "--verify", "--quiet", "HEAD"], in: "/", environment: Self.environment)
                if probe.status == 0 { throw error }
            }
        }
        // Cloned beside its place and renamed in: a kill -9 mid-clone never leaves a half mirror behind.
        let parent = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        let temporary = path + ".clone-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        try git(["git", "clone", "--quiet", "--mirror", source, temporary], in: parent)
        try? FileManager.default.removeItem(atPath: path)
        guard rename(temporary, path) == 0 else {
            throw ServerError("cannot move the new mirror into \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The full commit id a ref or (abbreviated) id names in the mirror.
    public func resolve(_ revision: String) -> String? {
        let output = Helper.run(["git", "--git-dir", path, "rev-parse", "--verify", "--quiet", revision + "^{commit}"], in: "/")
        return output.status == 0 ? output.text : nil
    }

    public func hasCommit(_ commit: String) -> Bool { resolve(commit) == commit }

    /// The files of `commit` in `directory` (replaced if it exists), without a `.git`: one `read-tree`
    /// with an index of its own, so exports of one mirror never share state.
    public func export(_ commit: String, into directory: String) throws(ServerError) {
        try? FileManager.default.removeItem(atPath: directory)
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw ServerError("cannot create \(directory): \(error.localizedDescription)")
        }
        let index = directory + ".index"
        defer { try? FileManager.default.removeItem(atPath: index) }
        let output = Helper.run(["git", "--git-dir", path, "--work-tree", directory, "-c", "core.bare=false", "read-tree", "--reset", "-u", commit],
                                in: "/", environment: ["GIT_INDEX_FILE": index])
        guard output.status == 0 else {
            throw ServerError("cannot export \(commit) from \(Self.redacted(source)): \(Self.redacted(output.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))")
        }
    }

    /// Files changed between two commits; from the root when `before` is unknown or missing.
    public func changedFiles(from before: String?, to after: String) -> [String]? {
        let arguments: [String]
        if let before, before != String(repeating: "0", count: 40), hasCommit(before) {
            arguments = ["git", "--git-dir", path, "diff", "--name-only", "-z", before, after]
        } else {
            arguments = ["git", "--git-dir", path, "diff-tree", "--root", "--no-commit-id", "--name-only", "-z", "-r", after]
        }
        let output = Helper.run(arguments, in: "/")
        guard output.status == 0 else { return nil }
        return output.stdout.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// git never asks for credentials on a terminal (it would hang the server) and gives up on a stalled transfer.
    static let environment = ["GIT_TERMINAL_PROMPT": "0", "GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "60",
                              "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=20"]

    private func git(_ arguments: [String], in directory: String) throws(ServerError) {
        let output = Helper.run(arguments, in: directory, environment: Self.environment)
        guard output.status == 0 else {
            let detail = output.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw ServerError(Self.redacted("`\(arguments.prefix(4).joined(separator: " "))…` failed: \(detail.isEmpty ? "exit \(output.status)" : detail)"))
        }
    }
}
