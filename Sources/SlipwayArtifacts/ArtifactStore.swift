#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation

/// A blob in the store: its SHA-256, size, and whether it is a single file or a packed directory.
public struct StoredBlob: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case file, directory }
    public var digest: String
    public var size: Int64
    public var kind: Kind
    public init(digest: String, size: Int64, kind: Kind) {
        self.digest = digest
        self.size = size
        self.kind = kind
    }
}

/// Content-addressed blobs under `<root>/sha256/ab/abcd…`. Writes go to a temporary file that is
/// fsynced and renamed into place, so a crash never leaves a half blob under a digest.
public struct ArtifactStore: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    public func blobPath(_ digest: String) -> String {
        root + "/sha256/" + digest.prefix(2) + "/" + digest
    }

    var temporaryDirectory: String { root + "/tmp" }

    /// Packs (a directory) or copies (a file) `path` into the store and returns its blob.
    public func ingest(path: String) throws(ArtifactsError) -> StoredBlob {
        var info = stat()
        guard stat(path, &info) == 0 else { throw ArtifactsError("release path '\(path)' does not exist") }
        let isDirectory = info.st_mode & S_IFMT == S_IFDIR
        guard isDirectory || info.st_mode & S_IFMT == S_IFREG else { throw ArtifactsError("release path '\(path)' is neither a file nor a directory") }
        do { try FileManager.default.createDirectory(atPath: temporaryDirectory, withIntermediateDirectories: true) } catch {
            throw ArtifactsError("cannot create \(temporaryDirectory): \(error.localizedDescription)")
        }
        let temporary = temporaryDirectory + "/ingest-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        var moved = false
        defer { if !moved { unlink(temporary) } }
        let writer = try HashingFileWriter(path: temporary)
        if isDirectory {
            try ReproducibleTar.write(root: path) { bytes throws(ArtifactsError) in try writer.write(bytes) }
        } else {
            try copyFile(path, into: writer)
        }
        let (digest, size) = try writer.finish()
        let target = blobPath(digest)
        let directory = (target as NSString).deletingLastPathComponent
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw ArtifactsError("cannot create \(directory): \(error.localizedDescription)")
        }
        if access(target, F_OK) == 0, (try? sha256(ofFile: target)) == digest {
            return StoredBlob(digest: digest, size: size, kind: isDirectory ? .directory : .file)
        }
        guard rename(temporary, target) == 0 else { throw ArtifactsError("cannot move the blob into place: \(String(cString: strerror(errno)))") }
        moved = true
        Self.fsyncDirectory(directory)
        return StoredBlob(digest: digest, size: size, kind: isDirectory ? .directory : .file)
    }

    /// Stores bytes (an SBOM, an envelope) as a blob of kind `.file`.
    public func ingest(data: Data) throws(ArtifactsError) -> StoredBlob {
        let digest = SHA256.hash(data: data).hexString
        let target = blobPath(digest)
        if access(target, F_OK) == 0 { return StoredBlob(digest: digest, size: Int64(data.count), kind: .file) }
        try Self.atomicWrite(data, to: target, temporaryDirectory: temporaryDirectory)
        return StoredBlob(digest: digest, size: Int64(data.count), kind: .file)
    }

    func copyFile(_ path: String, into writer: HashingFileWriter) throws(ArtifactsError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArtifactsError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let size = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, size)
            if n < 0, errno == EINTR { continue }
            if n < 0 { throw ArtifactsError("cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    /// Recomputes a blob's digest; nil when it is missing.
    public func sha256(ofFile path: String) throws(ArtifactsError) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var hasher = SHA256()
        let size = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, size)
            if n < 0, errno == EINTR { continue }
            if n < 0 { throw ArtifactsError("cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return hasher.finalize().hexString
    }

    public func contains(_ digest: String) -> Bool { access(blobPath(digest), F_OK) == 0 }

    public func data(_ digest: String) -> Data? { FileManager.default.contents(atPath: blobPath(digest)) }

    /// Removes a blob; returns the bytes freed.
    @discardableResult
    public func remove(_ digest: String) -> Int64 {
        var info = stat()
        let path = blobPath(digest)
        guard stat(path, &info) == 0 else { return 0 }
        return unlink(path) == 0 ? Int64(info.st_size) : 0
    }

    /// Writes `data` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
    public static func atomicWrite(_ data: Data, to path: String, temporaryDirectory: String? = nil, mode: mode_t = 0o644) throws(ArtifactsError) {
        let directory = (path as NSString).deletingLastPathComponent
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw ArtifactsError("cannot create \(directory): \(error.localizedDescription)")
        }
        let temporary = (temporaryDirectory ?? directory) + "/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        if let temporaryDirectory { try? FileManager.default.createDirectory(atPath: temporaryDirectory, withIntermediateDirectories: true) }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ArtifactsError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw ArtifactsError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        fsyncDirectory(directory)
    }

    static func fsyncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// Unpacks a directory blob into `destination` (with the system tar, which refuses absolute and `..` paths).
    public func extract(_ blob: StoredBlob, to destination: String, fileName: String) throws(ArtifactsError) {
        do { try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true) } catch {
            throw ArtifactsError("cannot create \(destination): \(error.localizedDescription)")
        }
        let source = blobPath(blob.digest)
        switch blob.kind {
        case .file:
            let target = destination + "/" + fileName
            do {
                if FileManager.default.fileExists(atPath: target) { try FileManager.default.removeItem(atPath: target) }
                try FileManager.default.copyItem(atPath: source, toPath: target)
            } catch { throw ArtifactsError("cannot copy to \(target): \(error.localizedDescription)") }
        case .directory:
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["tar", "-x", "--no-same-owner", "-f", source, "-C", destination]
            do {
                try process.run()
                process.waitUntilExit()
            } catch { throw ArtifactsError("cannot run tar: \(error.localizedDescription)") }
            guard process.terminationStatus == 0 else { throw ArtifactsError("tar could not unpack \(blob.digest)") }
        }
    }
}
