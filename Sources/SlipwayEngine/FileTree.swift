#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayDeploy

/// File-system helpers for workspaces, artifacts and cache inputs.
public enum FileTree {
    /// Every regular file and symlink under `root`, as sorted relative paths.
    public static func files(under root: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
        var result: [String] = []
        while let path = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let full = root + "/" + path
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), isDirectory.boolValue {
                // A symlink to a directory is listed as a file and not followed.
                if (try? FileManager.default.destinationOfSymbolicLink(atPath: full)) != nil {
                    result.append(path)
                    enumerator.skipDescendants()
                }
                continue
            }
            result.append(path)
        }
        return result.sorted()
    }

    /// Copies a directory tree (contents of `source` into `destination`, created if needed), replacing
    /// files that exist. Plain POSIX calls: a workspace is made per job, and Foundation's file manager
    /// (errors as NSError, attribute dictionaries) showed up in profiles of wide pipelines.
    public static func copyContents(of source: String, into destination: String) throws {
        // A directory made here is empty: no need to look for files to replace in it.
        let fresh = mkdir(destination, 0o755) == 0
        if !fresh { try makeDirectories(destination) }
        guard let dir = opendir(source) else { throw EngineError("cannot read \(source): \(String(cString: strerror(errno)))") }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            try copyEntry(name, from: source, into: destination, fresh: fresh)
        }
    }

    /// Copies one entry of `source` (a file, link or whole directory) into `destination`, replacing
    /// what is there unless `fresh` says the destination is known to be empty.
    static func copyEntry(_ name: String, from source: String, into destination: String, fresh: Bool = false) throws {
        let from = source + "/" + name, to = destination + "/" + name
        var info = stat()
        guard lstat(from, &info) == 0 else { return }
        var existing = stat()
        let exists = !fresh && lstat(to, &existing) == 0
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            if exists, existing.st_mode & S_IFMT != S_IFDIR { unlink(to) }
            try copyContents(of: from, into: to)
        case S_IFREG:
            if exists, existing.st_mode & S_IFMT == S_IFDIR { try FileManager.default.removeItem(atPath: to) }
            try copyFile(from, to, mode: info.st_mode & 0o7777)
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let length = readlink(from, &buffer, buffer.count - 1)
            guard length >= 0 else { return }
            if exists {
                if existing.st_mode & S_IFMT == S_IFDIR { try FileManager.default.removeItem(atPath: to) } else { unlink(to) }
            }
            buffer[length] = 0
            guard symlink(buffer, to) == 0 else { throw EngineError("cannot create link \(to): \(String(cString: strerror(errno)))") }
        default:
            return
        }
    }

    /// The directory part of a path, as `NSString.deletingLastPathComponent` gives it for the absolute,
    /// normalised paths Slipway builds, without Foundation's bridging (it showed in profiles of wide runs).
    static func parent(_ path: String) -> String {
        let bytes = path.utf8
        var end = bytes.endIndex
        func trimSlashes() { while end > bytes.startIndex, bytes[bytes.index(before: end)] == UInt8(ascii: "/") { end = bytes.index(before: end) } }
        trimSlashes()
        guard let slash = bytes[..<end].lastIndex(of: UInt8(ascii: "/")) else { return path.hasPrefix("/") ? "/" : "" }
        end = slash
        trimSlashes()
        return end == bytes.startIndex ? "/" : String(path[..<end])
    }

    /// The whole file, or nil when it does not exist or cannot be read (Foundation's `contents(atPath:)`
    /// builds and throws an error for a missing file, which most jobs' output file is).
    /// With `directory`, a descriptor of `path`'s parent, the name is looked up from there.
    static func contentsIfPresent(_ path: String, in directory: Int32? = nil) -> [UInt8]? {
        let fd = directory.map { openat($0, lastComponent(path), O_RDONLY | O_CLOEXEC) } ?? open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]); continue }
            if n < 0, errno == EINTR { continue }
            return n == 0 ? bytes : nil
        }
    }

    /// Removes a file, looked up from `directory` (a descriptor of its parent) when given; errno as unlink's.
    @discardableResult
    static func removeFile(_ path: String, in directory: Int32? = nil) -> Bool {
        (directory.map { unlinkat($0, lastComponent(path), 0) } ?? unlink(path)) == 0
    }

    /// What follows the last `/` of `path` (all of it when there is none).
    static func lastComponent(_ path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }

    static func makeDirectories(_ path: String) throws {
        if mkdir(path, 0o755) == 0 || errno == EEXIST { return }
        guard errno == ENOENT else { throw EngineError("cannot create \(path): \(String(cString: strerror(errno)))") }
        try makeDirectories(parent(path))
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw EngineError("cannot create \(path): \(String(cString: strerror(errno)))") }
    }

    static func copyFile(_ from: String, _ to: String, mode: mode_t) throws {
        let input = open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw EngineError("cannot read \(from): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        let output = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard output >= 0 else { throw EngineError("cannot write \(to): \(String(cString: strerror(errno)))") }
        defer { close(output) }
        let size = 128 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n < 0, errno == EINTR { continue }
            if n < 0 { throw EngineError("cannot read \(from): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            var offset = 0
            while offset < n {
                let written = write(output, buffer + offset, n - offset)
                if written < 0, errno == EINTR { continue }
                if written < 0 { throw EngineError("cannot write \(to): \(String(cString: strerror(errno)))") }
                offset += written
            }
        }
        // The umask applied at creation; keep the source's exact mode (executable scripts stay executable).
        _ = fchmod(output, mode)
    }

    /// Copies a list of relative paths from `root` to `destination`, keeping their relative layout.
    public static func copy(paths: [String], from root: String, to destination: String) throws {
        let manager = FileManager.default
        var createdDirectories = Set<String>()
        for path in paths {
            let source = root + "/" + path
            let target = destination + "/" + path
            let parent = (target as NSString).deletingLastPathComponent
            if createdDirectories.insert(parent).inserted {
                try manager.createDirectory(atPath: parent, withIntermediateDirectories: true)
            }
            if (try? manager.destinationOfSymbolicLink(atPath: source)) == nil, !manager.fileExists(atPath: source) { continue }
            try manager.copyItem(atPath: source, toPath: target)
        }
    }

    public static func sha256(ofFile path: String) -> String? {
        if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            return CacheKey.hex(Data(("symlink:" + link).utf8))
        }
        // Regular files: the artifact store's streaming hash (one implementation of it).
        return (try? ArtifactStore(root: "").sha256(ofFile: path)) ?? nil
    }

    /// Digest of a whole tree: sorted relative paths with their content digests.
    public static func digest(ofTree root: String) -> String {
        var hasher = SHA256()
        for path in files(under: root) {
            hasher.update(data: Data(path.utf8))
            hasher.update(data: Data([0]))
            hasher.update(data: Data((sha256(ofFile: root + "/" + path) ?? "").utf8))
            hasher.update(data: Data([0]))
        }
        return hasher.finalize().hexString
    }

    /// A file-system-safe, collision-free name for a job instance key such as "test (1, linux)".
    public static func safeName(_ key: String) -> String {
        // Called several times per job: bytes, not a Set of Characters.
        func allowed(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): true
            default: false
            }
        }
        if key.utf8.allSatisfy(allowed) { return key }
        let cleaned = String(key.map { $0.isASCII && allowed($0.asciiValue!) ? $0 : "_" })
        return cleaned + "-" + CacheKey.hex(Data(key.utf8)).prefix(8)
    }
}

/// Runs a short helper command (git) and captures its output; not for pipeline steps.
public enum Helper {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: Data
        public var stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    static func resolve(_ program: String) -> String? {
        JobExecutor.resolve(program, path: ProcessInfo.processInfo.environment["PATH"], directory: FileManager.default.currentDirectoryPath)
    }

    public static func run(_ arguments: [String], in directory: String, input: Data? = nil, environment extra: [String: String] = [:]) -> Output {
        start(arguments, in: directory, environment: extra).wait()
    }

    /// A started helper: its output is read by `wait`, so other work can go on while it runs.
    ///
    /// posix_spawn and a poll loop, not Foundation's `Process`: that one leaves a SIGCHLD source behind which
    /// wakes two threads at every later child's exit, a thousand times in a wide run.
    public final class Running: @unchecked Sendable {
        // Used by one thread at a time: whoever calls `wait`, once.
        private var pid: pid_t = -1
        private var out: Int32 = -1, err: Int32 = -1
        private var failure: String?

        fileprivate init(_ arguments: [String], in directory: String, environment extra: [String: String]) {
            // Resolve the program on PATH ourselves: going through /usr/bin/env costs a second exec.
            let resolved = arguments.first.flatMap(Helper.resolve)
            let executable = resolved ?? "/usr/bin/env"
            let rest = resolved == nil ? arguments : Array(arguments.dropFirst())
            let environment = extra.isEmpty ? ProcessInfo.processInfo.environment : ProcessInfo.processInfo.environment.merging(extra) { _, new in new }
            do {
                let spawned = try ProcessLauncher.spawnCapturing(executable: executable, arguments: rest, environment: environment,
                                                                 workingDirectory: directory, ownGroup: false, closeInherited: true)
                (pid, out, err) = (spawned.pid, spawned.stdout, spawned.stderr)
            } catch {
                failure = error.description
            }
        }

        deinit {
            if out >= 0 { close(out) }
            if err >= 0 { close(err) }
        }

        /// Reads the output to its end and waits for the exit.
        public func wait() -> Output {
            guard pid > 0 else { return Output(status: 127, stdout: Data(), stderr: failure ?? "cannot start") }
            // Both pipes are drained together, so a large output on one cannot dead-lock the child.
            var stdout: [UInt8] = [], stderr: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            var reading = [out, err]
            while reading.contains(where: { $0 >= 0 }) {
                var fds = reading.filter { $0 >= 0 }.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                if poll(&fds, nfds_t(fds.count), -1) < 0 {
                    if errno == EINTR { continue }
                    break
                }
                for entry in fds where entry.revents != 0 {
                    let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                    if n > 0 {
                        if entry.fd == out { stdout += buffer[0..<n] } else { stderr += buffer[0..<n] }
                    } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                        close(entry.fd)
                        if entry.fd == out { out = -1; reading[0] = -1 } else { err = -1; reading[1] = -1 }
                    }
                }
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
            pid = -1
            let code: Int32 = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return Output(status: code, stdout: Data(stdout), stderr: String(decoding: stderr, as: UTF8.self))
        }
    }

    public static func start(_ arguments: [String], in directory: String, environment extra: [String: String] = [:]) -> Running {
        Running(arguments, in: directory, environment: extra)
    }
}

/// What a run starts from: a copy of the project as it is (or as committed with `--clean`).
public struct ProjectSnapshot: Sendable {
    public var commit: String?
    public var branch: String?
    public var dirty: Bool
    public var fileCount: Int

    /// Takes a directory that holds exactly `commit` (exported by the server) as the snapshot: moved into
    /// place, not copied, and no git is asked anything.
    public static func adopt(export directory: String, commit: String, branch: String?, into destination: String) throws(EngineError) -> ProjectSnapshot {
        let manager = FileManager.default
        do { try manager.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true) } catch {
            throw EngineError("cannot create the run directory for \(destination): \(error.localizedDescription)")
        }
        try? manager.removeItem(atPath: destination)
        if rename(directory, destination) != 0 {
            // Another file system: copy, then drop the export.
            do {
                try FileTree.copyContents(of: directory, into: destination)
                try? manager.removeItem(atPath: directory)
            } catch {
                throw EngineError("cannot move the checkout of \(commit) into \(destination): \(error)")
            }
        }
        return ProjectSnapshot(commit: commit, branch: branch, dirty: false, fileCount: 0)
    }

    /// Copies the project into `destination`. Inside git: tracked and untracked-but-not-ignored files;
    /// outside git: every file. `.slipway/` and `.git/` are never copied.
    /// Starts the listing of the files a snapshot copies (tracked, and untracked but not ignored).
    public static func startListing(_ project: String) -> Helper.Running {
        Helper.start(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], in: project)
    }

    /// `known`: what `git status` said a moment ago, and `listing` the file listing, when the caller started
    /// them already (while it parsed the pipeline file).
    public static func capture(project: String, into destination: String, clean: Bool, known: GitInfo? = nil, listing started: Helper.Running? = nil) throws(EngineError) -> ProjectSnapshot {
        let manager = FileManager.default
        do { try manager.createDirectory(atPath: destination, withIntermediateDirectories: true) } catch {
            _ = started?.wait()
            throw EngineError("cannot create the run workspace \(destination): \(error.localizedDescription)")
        }
        // The file listing runs while `git status` does.
        if clean { _ = started?.wait() }
        let listing = clean ? nil : started ?? startListing(project)
        guard let git = known ?? GitInfo.read(project) else {
            _ = listing?.wait()
            let files = FileTree.files(under: project).filter { !$0.hasPrefix(".slipway/") && !$0.hasPrefix(".git/") && $0 != ".slipway" }
            do { try FileTree.copy(paths: files, from: project, to: destination) } catch {
                throw EngineError("cannot copy the project into the workspace: \(error.localizedDescription)")
            }
            return ProjectSnapshot(commit: nil, branch: nil, dirty: true, fileCount: files.count)
        }
        let commit = git.commit
        let branch = git.branch
        guard let listing else {
            guard commit != nil else { throw EngineError("--clean needs a commit, but the repository has none yet; commit first or run without --clean") }
            let prefix = Helper.run(["git", "rev-parse", "--show-prefix"], in: project).text
            let archive = Helper.run(["git", "archive", "--format=tar", "HEAD:\(prefix)"], in: project)
            guard archive.status == 0 else { throw EngineError("git archive failed: \(archive.stderr)") }
            let tarFile = destination + "/../snapshot.tar"
            _ = manager.createFile(atPath: tarFile, contents: archive.stdout)
            let untar = Helper.run(["tar", "-x", "-f", tarFile, "-C", destination], in: project)
            try? manager.removeItem(atPath: tarFile)
            guard untar.status == 0 else { throw EngineError("cannot unpack the commit: \(untar.stderr)") }
            return ProjectSnapshot(commit: commit, branch: branch, dirty: false, fileCount: FileTree.files(under: destination).count)
        }
        let listed = listing.wait()
        guard listed.status == 0 else { throw EngineError("git ls-files failed: \(listed.stderr)") }
        let files = Array(Set(listed.stdout.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }))
            .filter { !$0.hasPrefix(".slipway/") && !$0.hasPrefix(".git/") }
            .sorted()
        do { try FileTree.copy(paths: files, from: project, to: destination) } catch {
            throw EngineError("cannot copy the project into the workspace: \(error.localizedDescription)")
        }
        return ProjectSnapshot(commit: commit, branch: branch, dirty: git.dirty, fileCount: files.count)
    }
}

/// The engine's error: a message a user can act on.
public struct EngineError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Commit, branch and dirtiness of a project directory from one `git status --porcelain=v2 --branch`.
public struct GitInfo: Sendable, Equatable {
    public var commit: String?
    public var branch: String?
    public var dirty: Bool

    /// nil when `directory` is not inside a git work tree.
    public static func read(_ directory: String) -> GitInfo? {
        parse(start(directory).wait())
    }

    /// `git status` started; `parse` its output when it is needed.
    public static func start(_ directory: String) -> Helper.Running {
        Helper.start(["git", "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", "--", "."], in: directory)
    }

    public static func parse(_ status: Helper.Output) -> GitInfo? {
        guard status.status == 0 else { return nil }
        var info = GitInfo(commit: nil, branch: nil, dirty: false)
        for entry in status.stdout.split(separator: 0) {
            let line = String(decoding: entry, as: UTF8.self)
            if line.hasPrefix("# branch.oid ") {
                let oid = String(line.dropFirst("# branch.oid ".count))
                info.commit = oid == "(initial)" ? nil : oid
            } else if line.hasPrefix("# branch.head ") {
                let head = String(line.dropFirst("# branch.head ".count))
                info.branch = head == "(detached)" ? nil : head
            } else if line.hasPrefix("#") {
                continue
            } else if !line.contains(".slipway/"), line.first.map({ "12u?".contains($0) }) == true {
                info.dirty = true
            }
        }
        return info
    }
}
