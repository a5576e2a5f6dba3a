#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// The workspaces of one run, reused from job to job the way GitLab runners reuse build directories.
///
/// A job gets a directory holding exactly the run's snapshot. When it finishes, its workspace is reset
/// to the snapshot — entries the job added are removed, entries it changed are copied again — and handed
/// to the next job. A file counts as unchanged only when its inode, size, mode, mtime and ctime are all
/// as they were after the copy; ctime moves on every write, chmod, rename or link and cannot be set
/// back by a process, so an in-place edit is always seen. Creating two inodes per job cost more than
/// the jobs themselves in wide pipelines (on ext4 without a journal each new inode skips over every one
/// deleted in the last seconds).
public final class WorkspacePool: Sendable {
    /// A checked-out workspace; give it back with `checkIn`.
    public struct Lease: Sendable {
        public let path: String
        fileprivate var manifest: [String: Identity]
        /// The workspace directory itself as it was handed out: its times move when an entry is added to it
        /// or removed from it.
        fileprivate var root: Identity?

        /// Whether a reset is a few `lstat`s: a small, flat snapshot, and nothing added to or removed from the
        /// workspace since (a reset otherwise walks or deletes whatever the job left, however large).
        public var resetsQuickly: Bool {
            guard manifest.count <= 64, let root, !manifest.values.contains(where: { $0.type == S_IFDIR }) else { return false }
            var info = stat()
            return lstat(path, &info) == 0 && Identity(info) == root
        }
    }

    fileprivate struct Identity: Equatable, Sendable {
        var type: mode_t
        var mode: mode_t
        var inode: UInt64
        var size: Int64
        var modified: timespec
        var changed: timespec

        init(_ info: stat) {
            type = info.st_mode & S_IFMT
            mode = info.st_mode & 0o7777
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = info.st_mtim
            changed = info.st_ctim
        }

        static func == (a: Identity, b: Identity) -> Bool {
            a.type == b.type && a.mode == b.mode && a.inode == b.inode && a.size == b.size
                && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
                && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
        }
    }

    let snapshot: String
    let root: String
    /// Off (every job gets a fresh copy, kept after the run) when workspaces are kept for debugging.
    let reuse: Bool
    private let state = Mutex<(free: [Lease], next: Int)>(([], 0))

    public init(snapshot: String, root: String, reuse: Bool = true) {
        self.snapshot = snapshot
        self.root = root
        self.reuse = reuse
    }

    /// A workspace holding the snapshot: a reset one when available, otherwise a new copy.
    /// `name` names a new directory when workspaces are not reused.
    public func checkOut(name: String) throws -> Lease {
        if let lease = takeFree() { return lease }
        let path: String
        if reuse {
            let number = state.withLock { state -> Int in
                state.next += 1
                return state.next
            }
            path = root + "/\(number)"
        } else {
            path = root + "/" + name
        }
        if access(path, F_OK) == 0 { try FileManager.default.removeItem(atPath: path) }
        try FileTree.copyContents(of: snapshot, into: path)
        var manifest: [String: Identity] = [:]
        guard Self.record(path, relative: "", into: &manifest) else {
            throw EngineError("cannot read the new workspace \(path)")
        }
        return Lease(path: path, manifest: manifest, root: Self.identity(path))
    }

    /// A reset workspace when one is free (no copy needed).
    public func takeFree() -> Lease? {
        reuse ? state.withLock { $0.free.popLast() } : nil
    }

    /// Takes a workspace back. `reusable` is false when something of the job may still be writing to it
    /// (a process of the job survived); such a workspace, or one that cannot be reset, is deleted.
    /// `quick`: the caller has just seen `lease.resetsQuickly` hold.
    public func checkIn(_ lease: Lease, reusable: Bool, quick: Bool = false) {
        guard reuse else { return }
        var lease = lease
        if reusable, quick, Self.untouched(lease) {
            // Not a byte changed: the directory, and so its identity, are as they were handed out.
            state.withLock { $0.free.append(lease) }
            return
        }
        if reusable, reset(&lease) {
            lease.root = Self.identity(lease.path)
            state.withLock { $0.free.append(lease) }
            return
        }
        try? FileManager.default.removeItem(atPath: lease.path)
    }

    /// Whether every entry of a quickly resettable workspace is as it was copied (one `lstat` each).
    private static func untouched(_ lease: Lease) -> Bool {
        for (path, expected) in lease.manifest {
            var info = stat()
            guard lstat(lease.path + "/" + path, &info) == 0, Identity(info) == expected else { return false }
        }
        return true
    }

    /// Brings the workspace back to the snapshot; false when it could not (permissions, a file in the
    /// way that cannot be removed).
    private func reset(_ lease: inout Lease) -> Bool {
        var seen = Set<String>()
        if lease.resetsQuickly {
            // Nothing was added or removed (the directory's times would have moved): no listing needed,
            // only a look at each file for an edit in place.
            for (path, expected) in lease.manifest {
                let full = lease.path + "/" + path
                var info = stat()
                if lstat(full, &info) == 0, Identity(info) == expected {
                    seen.insert(path)
                } else if unlink(full) != 0, errno != ENOENT {
                    return false
                }
            }
        } else {
            guard prune(lease.path, relative: "", manifest: lease.manifest, seen: &seen) else { return false }
        }
        // Whatever the job removed or changed comes back from the snapshot.
        for (path, identity) in lease.manifest.sorted(by: { $0.key < $1.key }) where !seen.contains(path) {
            let from = snapshot + "/" + path, to = lease.path + "/" + path
            do {
                if identity.type == S_IFDIR {
                    try FileTree.copyContents(of: from, into: to)
                    guard Self.record(to, relative: path, into: &lease.manifest) else { return false }
                    seen.formUnion(lease.manifest.keys.filter { $0.hasPrefix(path + "/") })
                } else {
                    try FileTree.copyEntry((path as NSString).lastPathComponent, from: (from as NSString).deletingLastPathComponent, into: (to as NSString).deletingLastPathComponent)
                }
                var info = stat()
                guard lstat(to, &info) == 0 else { return false }
                lease.manifest[path] = Identity(info)
            } catch {
                return false
            }
        }
        return true
    }

    /// Removes what is not in the manifest or changed since; records what is still intact in `seen`.
    private func prune(_ directory: String, relative: String, manifest: [String: Identity], seen: inout Set<String>) -> Bool {
        guard let dir = opendir(directory) else { return false }
        defer { closedir(dir) }
        var ok = true
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            let path = relative.isEmpty ? name : relative + "/" + name
            let full = directory + "/" + name
            var info = stat()
            guard lstat(full, &info) == 0 else { ok = false; continue }
            let current = Identity(info)
            if let expected = manifest[path] {
                if current.type == S_IFDIR, expected.type == S_IFDIR, current.mode == expected.mode {
                    seen.insert(path)
                    if !prune(full, relative: path, manifest: manifest, seen: &seen) { ok = false }
                    continue
                }
                if current == expected {
                    seen.insert(path)
                    continue
                }
            }
            if current.type == S_IFDIR {
                if (try? FileManager.default.removeItem(atPath: full)) == nil { ok = false }
            } else if unlink(full) != 0 {
                ok = false
            }
        }
        return ok
    }

    fileprivate static func identity(_ path: String) -> Identity? {
        var info = stat()
        return lstat(path, &info) == 0 ? Identity(info) : nil
    }

    /// Every entry under `directory` with its identity, keyed by path relative to the workspace.
    private static func record(_ directory: String, relative: String, into manifest: inout [String: Identity]) -> Bool {
        guard let dir = opendir(directory) else { return false }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            let path = relative.isEmpty ? name : relative + "/" + name
            let full = directory + "/" + name
            var info = stat()
            guard lstat(full, &info) == 0 else { return false }
            manifest[path] = Identity(info)
            if info.st_mode & S_IFMT == S_IFDIR, !record(full, relative: path, into: &manifest) { return false }
        }
        return true
    }
}
