#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation

/// Packs a directory into a tar stream that depends only on content: entries sorted by path, mtime 0,
/// owner 0:0 with empty names, modes normalised to 0644/0755. The same tree always gives the same bytes,
/// whatever the order the files were created in or who created them.
public enum ReproducibleTar {
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case file(executable: Bool, size: Int64), directory, symlink(String) }
        public var path: String
        public var kind: Kind
    }

    /// The entries of `root`, sorted by their UTF-8 bytes.
    public static func entries(of root: String) throws(ArtifactsError) -> [Entry] {
        var result: [Entry] = []
        var stack = [""]
        while let relative = stack.popLast() {
            let directory = relative.isEmpty ? root : root + "/" + relative
            guard let dir = opendir(directory) else { throw ArtifactsError("cannot read directory \(directory): \(String(cString: strerror(errno)))") }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                let full = root + "/" + path
                var info = stat()
                guard lstat(full, &info) == 0 else { throw ArtifactsError("cannot stat \(full): \(String(cString: strerror(errno)))") }
                switch info.st_mode & S_IFMT {
                case S_IFDIR:
                    result.append(Entry(path: path, kind: .directory))
                    stack.append(path)
                case S_IFREG:
                    result.append(Entry(path: path, kind: .file(executable: info.st_mode & S_IXUSR != 0, size: Int64(info.st_size))))
                case S_IFLNK:
                    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                    let length = readlink(full, &buffer, buffer.count - 1)
                    guard length >= 0 else { throw ArtifactsError("cannot read link \(full)") }
                    let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    result.append(Entry(path: path, kind: .symlink(target)))
                default:
                    throw ArtifactsError("\(full) is neither a file, a directory nor a symlink; remove it from the release")
                }
            }
        }
        return result.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
    }

    /// Writes the tar of `root` through `sink` (called with consecutive chunks).
    public static func write(root: String, to sink: (UnsafeRawBufferPointer) throws(ArtifactsError) -> Void) throws(ArtifactsError) {
        let entries = try entries(of: root)
        let bufferSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        for entry in entries {
            let header = try headers(for: entry)
            try emit(header, sink)
            guard case .file(_, let size) = entry.kind else { continue }
            let fd = open(root + "/" + entry.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ArtifactsError("cannot open \(entry.path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var remaining = size
            while remaining > 0 {
                let n = read(fd, buffer.baseAddress, min(bufferSize, Int(remaining)))
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { throw ArtifactsError("\(entry.path) changed while it was packed (read ended early)") }
                try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                remaining -= Int64(n)
            }
            let padding = (512 - Int(size % 512)) % 512
            if padding > 0 {
                try emit([UInt8](repeating: 0, count: padding), sink)
            }
        }
        try emit([UInt8](repeating: 0, count: 1024), sink)
    }

    static func emit(_ bytes: [UInt8], _ sink: (UnsafeRawBufferPointer) throws(ArtifactsError) -> Void) throws(ArtifactsError) {
        var failure: ArtifactsError?
        bytes.withUnsafeBytes { raw in
            do throws(ArtifactsError) { try sink(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// The ustar header of an entry, preceded by a PAX header when its path or link does not fit.
    static func headers(for entry: Entry) throws(ArtifactsError) -> [UInt8] {
        var name = entry.path
        if case .directory = entry.kind { name += "/" }
        var linkTarget = ""
        var typeflag: UInt8 = 0x30
        var mode = 0o644
        var size: Int64 = 0
        switch entry.kind {
        case .file(let executable, let fileSize):
            mode = executable ? 0o755 : 0o644
            size = fileSize
        case .directory:
            typeflag = 0x35
            mode = 0o755
        case .symlink(let target):
            typeflag = 0x32
            mode = 0o777
            linkTarget = target
        }
        var result: [UInt8] = []
        var pax: [(String, String)] = []
        let nameBytes = Array(name.utf8)
        var ustarName = nameBytes
        var ustarPrefix: [UInt8] = []
        if nameBytes.count > 100 {
            // Try the ustar prefix/name split at a '/', else fall back to a PAX path record.
            if let split = splitForUstar(nameBytes) {
                (ustarPrefix, ustarName) = split
            } else {
                pax.append(("path", name))
                ustarName = Array(nameBytes.suffix(99))
            }
        }
        if linkTarget.utf8.count > 100 { pax.append(("linkpath", linkTarget)) }
        if size > 0o77777777777 { pax.append(("size", String(size))) }
        if !pax.isEmpty {
            var body: [UInt8] = []
            for (key, value) in pax {
                let record = " \(key)=\(value)\n"
                var length = record.utf8.count + 1
                while String(length).utf8.count + record.utf8.count != length { length = String(length).utf8.count + record.utf8.count }
                body += Array((String(length) + record).utf8)
            }
            result += header(name: Array("PaxHeaders/\(name)".utf8.prefix(100)), prefix: [], mode: 0o644, size: Int64(body.count), typeflag: 0x78, link: [])
            result += body
            result += [UInt8](repeating: 0, count: (512 - body.count % 512) % 512)
        }
        result += header(name: ustarName, prefix: ustarPrefix, mode: mode, size: size > 0o77777777777 ? 0 : size, typeflag: typeflag, link: Array(linkTarget.utf8.prefix(100)))
        return result
    }

    static func splitForUstar(_ bytes: [UInt8]) -> ([UInt8], [UInt8])? {
        guard bytes.count <= 256 else { return nil }
        for index in stride(from: min(155, bytes.count - 1), through: 1, by: -1) where bytes[index] == 0x2F {
            let prefix = Array(bytes[..<index]), name = Array(bytes[(index + 1)...])
            if prefix.count <= 155, name.count <= 100, !name.isEmpty { return (prefix, name) }
        }
        return nil
    }

    static func header(name: [UInt8], prefix: [UInt8], mode: Int, size: Int64, typeflag: UInt8, link: [UInt8]) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, max: Int) {
            for (i, b) in bytes.prefix(max).enumerated() { block[offset + i] = b }
        }
        func octal(_ value: Int64, width: Int) -> [UInt8] {
            let digits = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits).utf8) + [0]
        }
        put(name, at: 0, max: 100)
        put(octal(Int64(mode), width: 8), at: 100, max: 8)
        put(octal(0, width: 8), at: 108, max: 8)
        put(octal(0, width: 8), at: 116, max: 8)
        put(octal(size, width: 12), at: 124, max: 12)
        put(octal(0, width: 12), at: 136, max: 12)
        put(Array("        ".utf8), at: 148, max: 8)
        block[156] = typeflag
        put(link, at: 157, max: 100)
        put(Array("ustar".utf8) + [0], at: 257, max: 6)
        put(Array("00".utf8), at: 263, max: 2)
        put(octal(0, width: 8), at: 329, max: 8)
        put(octal(0, width: 8), at: 337, max: 8)
        put(prefix, at: 345, max: 155)
        let checksum = block.reduce(0) { $0 + Int($1) }
        put(Array(String(format: "%06o", checksum).utf8) + [0, 0x20], at: 148, max: 8)
        return block
    }
}

/// Streams bytes to a file while hashing them; `finish` fsyncs so a later rename is durable.
final class HashingFileWriter {
    let fd: Int32
    var hasher = SHA256()
    var size: Int64 = 0
    var buffer: [UInt8] = []
    let path: String

    init(path: String) throws(ArtifactsError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ArtifactsError("cannot create \(path): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(4 << 20)
    }

    deinit { close(fd) }

    func write(_ bytes: UnsafeRawBufferPointer) throws(ArtifactsError) {
        hasher.update(bufferPointer: bytes)
        size += Int64(bytes.count)
        buffer.append(contentsOf: bytes)
        if buffer.count >= 4 << 20 { try flush() }
    }

    func flush() throws(ArtifactsError) {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ArtifactsError("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes, fsyncs and returns the hex SHA-256 and size.
    func finish() throws(ArtifactsError) -> (digest: String, size: Int64) {
        try flush()
        guard fsync(fd) == 0 else { throw ArtifactsError("cannot fsync \(path): \(String(cString: strerror(errno)))") }
        return (hasher.finalize().hexString, size)
    }
}
