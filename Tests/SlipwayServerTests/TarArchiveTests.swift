import Foundation
import SlipwayEngine
import Testing

/// Archives come from the other side of the network (runner uploads, server downloads): real `tar` files,
/// made by `tar` and by Python's tarfile (which writes what `tar` would refuse to create).
@Suite struct TarArchiveTests {
    let root = NSTemporaryDirectory() + "slipway-tar-" + UUID().uuidString

    func shell(_ script: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-e", "-c", script]
        process.currentDirectoryURL = URL(fileURLWithPath: root)
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(script)")
    }

    /// Python's tarfile: members of the given types, names and link targets, in order.
    func crafted(_ members: [(name: String, type: String, target: String)], owner: String = "root") throws -> String {
        let file = root + "/crafted-\(UUID().uuidString).tar"
        let list = members.map { "(\"\($0.name)\", tarfile.\($0.type), \"\($0.target)\")" }.joined(separator: ", ")
        try shell("""
            python3 - <<'PY'
            import io, tarfile
            with tarfile.open("\(file)", "w") as archive:
                for name, kind, target in [\(list)]:
                    info = tarfile.TarInfo(name)
                    info.type = kind
                    info.linkname = target
                    info.uname = info.gname = "\(owner)"
                    data = b"x" if kind == tarfile.REGTYPE else b""
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
            PY
            """)
        return file
    }

    func crafted(_ name: String, type: String, target: String = "") throws -> String {
        try crafted([(name, type, target)])
    }

    @Test func aNormalArchiveRoundTripsWithLinksInsideAndNoSpecialBits() throws {
        try FileManager.default.createDirectory(atPath: root + "/src/lib", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try shell("""
            cd src
            echo payload > lib/libx.so.1
            ln -s libx.so.1 lib/libx.so
            ln -s ../lib/libx.so.1 lib/up-and-back
            ln lib/libx.so.1 hard
            echo tool > tool && chmod 4755 tool
            """)
        try TarArchive.create(from: root + "/src", to: root + "/out.tar")
        try TarArchive.extract(root + "/out.tar", into: root + "/dst", untrusted: true)
        #expect(try String(contentsOfFile: root + "/dst/lib/libx.so", encoding: .utf8) == "payload\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/dst/lib/libx.so") == "libx.so.1")
        #expect(try String(contentsOfFile: root + "/dst/hard", encoding: .utf8) == "payload\n")
        var info = stat()
        #expect(stat(root + "/dst/tool", &info) == 0)
        #expect(info.st_mode & S_ISUID == 0, "setuid is not applied from an archive")
        #expect(info.st_mode & 0o100 != 0, "the executable bit is")
    }

    @Test(arguments: [
        ("../escape", "REGTYPE", ""),
        ("/etc/slipway-absolute", "REGTYPE", ""),
        ("./ok/../../escape", "REGTYPE", ""),
        ("./abs", "SYMTYPE", "/etc/passwd"),
        ("./sub/up", "SYMTYPE", "../../outside"),
        ("./fifo", "FIFOTYPE", ""),
        ("./null", "CHRTYPE", ""),
    ])
    func dangerousMembersAreRefusedBeforeAnythingIsWritten(_ member: (String, String, String)) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let file = try crafted(member.0, type: member.1, target: member.2)
        #expect(throws: EngineError.self) { try TarArchive.extract(file, into: root + "/dst", untrusted: true) }
        #expect(!FileManager.default.fileExists(atPath: root + "/dst"), "nothing unpacked")
        #expect(!FileManager.default.fileExists(atPath: root + "/escape"))
    }

    @Test func garbageIsNotAnArchive() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: root + "/junk.tar", contents: Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }))
        #expect(throws: EngineError.self) { try TarArchive.extract(root + "/junk.tar", into: root + "/dst") }
    }

    /// A link to a directory makes a later member land elsewhere than its name says (`d -> .`, then
    /// `d/d/d/e -> ../../..` is really `e -> ../../..`); an owner name can try to fake a listing line.
    @Test func linksThroughLinkedDirectoriesAndFakeOwnerNamesAreCaught() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let nested = try crafted([("d", "SYMTYPE", "."), ("d/d/d/e", "SYMTYPE", "../../..")])
        #expect(throws: EngineError.self) { try TarArchive.extract(nested, into: root + "/dst", untrusted: true) }
        #expect(!FileManager.default.fileExists(atPath: root + "/dst"), "what was unpacked is removed")
        let faked = try crafted([("e", "SYMTYPE", "/etc")], owner: "g 0 d t a -> a\\n- o")
        #expect(throws: EngineError.self) { try TarArchive.extract(faked, into: root + "/dst", untrusted: true) }
        // From the trusted side (the server's own source archive) links are the repository's business.
        let source = try crafted([("tool", "SYMTYPE", "/usr/bin/env")])
        try TarArchive.extract(source, into: root + "/source")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/source/tool") == "/usr/bin/env")
    }

    /// Each link stays inside on its own text, but followed together they climb out: `d/up` is the root,
    /// so `d/esc -> up/..` is the root's parent. Links that chain and stay inside are still accepted.
    @Test func chainedLinksThatClimbOutAreRefused() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let chained = try crafted([("d", "DIRTYPE", ""), ("d/up", "SYMTYPE", ".."), ("d/esc", "SYMTYPE", "up/..")])
        #expect(throws: EngineError.self) { try TarArchive.extract(chained, into: root + "/dst", untrusted: true) }
        #expect(!FileManager.default.fileExists(atPath: root + "/dst"), "what was unpacked is removed")
        let deeper = try crafted([("d/e", "DIRTYPE", ""), ("d/e/up", "SYMTYPE", "../.."), ("d/e/esc", "SYMTYPE", "up/../x/../..")])
        #expect(throws: EngineError.self) { try TarArchive.extract(deeper, into: root + "/dst", untrusted: true) }
        let inside = try crafted([("d", "DIRTYPE", ""), ("d/f", "REGTYPE", ""), ("d/up", "SYMTYPE", ".."), ("g", "SYMTYPE", "d/up/d/f")])
        try TarArchive.extract(inside, into: root + "/ok", untrusted: true)
        #expect(try String(contentsOfFile: root + "/ok/g", encoding: .utf8) == "x")
    }
}
