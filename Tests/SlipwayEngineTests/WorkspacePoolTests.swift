import Foundation
import Testing
@testable import SlipwayEngine

/// Reused workspaces must be indistinguishable from fresh copies of the snapshot.
@Suite struct WorkspacePoolTests {
    let root: String

    init() throws {
        root = NSTemporaryDirectory() + "slipway-pool-" + UUID().uuidString
        let snapshot = root + "/snapshot"
        try FileManager.default.createDirectory(atPath: snapshot + "/src/deep", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: snapshot + "/README"))
        try Data("print(1)\n".utf8).write(to: URL(fileURLWithPath: snapshot + "/src/main.swift"))
        try Data("#!/bin/sh\necho deep\n".utf8).write(to: URL(fileURLWithPath: snapshot + "/src/deep/run.sh"))
        chmod(snapshot + "/src/deep/run.sh", 0o755)
        try FileManager.default.createSymbolicLink(atPath: snapshot + "/link", withDestinationPath: "README")
    }

    /// Relative path → (kind, mode, content) of every entry under `directory`.
    func listing(_ directory: String) -> [String: String] {
        var result: [String: String] = [:]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let path = enumerator?.nextObject() as? String {
            var info = stat()
            lstat(directory + "/" + path, &info)
            let mode = String(info.st_mode, radix: 8)
            if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + path) {
                result[path] = "link \(link)"
            } else if info.st_mode & S_IFMT == S_IFDIR {
                result[path] = "dir \(mode)"
            } else {
                result[path] = "file \(mode) " + ((try? String(contentsOfFile: directory + "/" + path, encoding: .utf8)) ?? "?")
            }
        }
        return result
    }

    func sh(_ script: String, in directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "script failed: \(script)")
    }

    /// A reset stays on the run's loop only when it is a few `lstat`s: a small flat snapshot and a workspace
    /// nothing was added to or removed from.
    @Test func onlyASmallFlatUntouchedWorkspaceResetsQuickly() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let flat = root + "/flat"
        try FileManager.default.createDirectory(atPath: flat, withIntermediateDirectories: true)
        try Data("name: x\n".utf8).write(to: URL(fileURLWithPath: flat + "/slipway.yml"))
        let pool = WorkspacePool(snapshot: flat, root: root + "/ws-flat")
        let lease = try pool.checkOut(name: "a")
        #expect(lease.resetsQuickly)
        // Editing a file in place keeps it quick (the reset looks at that file's own identity)...
        try sh("echo more >> slipway.yml", in: lease.path)
        #expect(lease.resetsQuickly)
        // ...adding an entry does not: the reset would have to delete whatever was added.
        try sh("mkdir -p node_modules/a && touch node_modules/a/index.js", in: lease.path)
        #expect(!lease.resetsQuickly)
        pool.checkIn(lease, reusable: true)
        let again = try pool.checkOut(name: "b")
        #expect(again.path == lease.path && again.resetsQuickly)
        #expect(listing(again.path) == listing(flat))
        // The quick reset (no listing) still undoes edits in place, keeping size and mtime, and chmods.
        try Data("a: 1\n".utf8).write(to: URL(fileURLWithPath: flat + "/b.txt"))
        let flat2 = WorkspacePool(snapshot: flat, root: root + "/ws-flat2")
        let edited = try flat2.checkOut(name: "d")
        try sh("printf 'a: 2\\n' > b.txt && touch -r '\(flat)/b.txt' b.txt && chmod 600 slipway.yml", in: edited.path)
        #expect(listing(edited.path) != listing(flat))
        #expect(edited.resetsQuickly)
        flat2.checkIn(edited, reusable: true)
        let restored = try flat2.checkOut(name: "e")
        #expect(restored.path == edited.path && restored.resetsQuickly)
        #expect(listing(restored.path) == listing(flat))
        // A snapshot with directories is never reset on the loop.
        let nested = WorkspacePool(snapshot: root + "/snapshot", root: root + "/ws-nested")
        #expect(try !nested.checkOut(name: "c").resetsQuickly)
    }

    @Test func aJobsChangesAreUndoneBeforeTheNextJob() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = WorkspacePool(snapshot: root + "/snapshot", root: root + "/ws")
        let expected = listing(root + "/snapshot")
        let first = try pool.checkOut(name: "a")
        #expect(listing(first.path) == expected)
        // Everything a step can do to a tree: edit in place keeping size and mtime, append, add,
        // delete, replace a file by a directory, chmod, retarget a link, remove a whole directory.
        try sh("""
            cp -p README .ref && printf 'HELLO\\n' > README.tmp && cat README.tmp > README && rm README.tmp
            touch -r .ref README && rm .ref
            echo more >> src/main.swift
            mkdir -p build/obj && echo o > build/obj/a.o && echo new > NEW
            chmod 600 src/deep/run.sh
            rm link && ln -s src/main.swift link
            rm -r src/deep
            """, in: first.path)
        #expect(listing(first.path) != expected)
        pool.checkIn(first, reusable: true)
        let second = try pool.checkOut(name: "b")
        #expect(second.path == first.path, "the reset workspace is reused")
        #expect(listing(second.path) == expected)
        // And once more, after a job that changed nothing.
        pool.checkIn(second, reusable: true)
        let third = try pool.checkOut(name: "c")
        #expect(third.path == first.path)
        #expect(listing(third.path) == expected)
    }

    @Test func concurrentJobsGetTheirOwnWorkspaces() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = WorkspacePool(snapshot: root + "/snapshot", root: root + "/ws")
        let a = try pool.checkOut(name: "a")
        let b = try pool.checkOut(name: "b")
        #expect(a.path != b.path)
        try sh("echo a > mine", in: a.path)
        #expect(!FileManager.default.fileExists(atPath: b.path + "/mine"))
        pool.checkIn(a, reusable: true)
        pool.checkIn(b, reusable: true)
    }

    @Test func aWorkspaceSomethingMayStillWriteToIsDiscarded() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = WorkspacePool(snapshot: root + "/snapshot", root: root + "/ws")
        let first = try pool.checkOut(name: "a")
        pool.checkIn(first, reusable: false)
        #expect(!FileManager.default.fileExists(atPath: first.path))
        let second = try pool.checkOut(name: "b")
        #expect(second.path != first.path)
        #expect(listing(second.path) == listing(root + "/snapshot"))
    }

    @Test func withoutReuseEachJobKeepsItsOwnNamedCopy() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = WorkspacePool(snapshot: root + "/snapshot", root: root + "/ws", reuse: false)
        let a = try pool.checkOut(name: "build")
        try sh("echo kept > out", in: a.path)
        pool.checkIn(a, reusable: true)
        #expect(a.path == root + "/ws/build")
        #expect(FileManager.default.fileExists(atPath: a.path + "/out"))
    }
}

@Suite struct FileTreePathTests {
    /// What `NSString.deletingLastPathComponent` gives for each (read off a release build: the debug
    /// build of Foundation traps on some of them).
    @Test func parentAgreesWithFoundation() {
        let expected = ["/a/b/c.log": "/a/b", "/a/b/": "/a", "/a": "/", "/": "/", "relative/x": "relative", "x": "", "/a//b": "/a",
                        "/runs/1/logs/job.1-1.log": "/runs/1/logs", "/ü/ñ/✓.txt": "/ü/ñ"]
        for (path, parent) in expected {
            #expect(FileTree.parent(path) == parent, "\(path)")
        }
    }

    @Test func contentsIfPresentReadsWholeFilesAndNothingElse() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-ft-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        #expect(FileTree.contentsIfPresent(directory + "/missing") == nil)
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/data"))
        #expect(FileTree.contentsIfPresent(directory + "/data") == bytes)
        try Data().write(to: URL(fileURLWithPath: directory + "/empty"))
        #expect(FileTree.contentsIfPresent(directory + "/empty") == [])
    }
}
