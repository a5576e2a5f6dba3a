import Crypto
import Foundation
import Testing
@testable import SlipwayArtifacts
@testable import SlipwayCore
@testable import SlipwayStore

func temporaryDirectory(_ name: String = "slipway-art") -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func write(_ text: String, to path: String, mode: Int = 0o644) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
}

func runTool(_ arguments: [String]) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do { try process.run() } catch { return (127, "\(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

struct ReproducibleTarTests {
    func digest(of directory: String) throws -> StoredBlob {
        try ArtifactStore(root: temporaryDirectory("store")).ingest(path: directory)
    }

    @Test func sameTreeGivesSameDigestWhateverTheCreationOrderAndTimes() throws {
        let a = temporaryDirectory(), b = temporaryDirectory()
        let files = ["bin/app": "#!/bin/sh\necho hi\n", "lib/z.txt": "z", "lib/a.txt": "a", "README": "readme"]
        for (path, text) in files { try write(text, to: a + "/" + path, mode: path.hasPrefix("bin") ? 0o755 : 0o644) }
        for (path, text) in files.reversed() { try write(text, to: b + "/" + path, mode: path.hasPrefix("bin") ? 0o755 : 0o600) }
        // Different modification times and group/other permission bits must not matter.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000)], ofItemAtPath: b + "/lib/a.txt")
        let first = try digest(of: a), second = try digest(of: b)
        #expect(first.digest == second.digest)
        #expect(first.kind == .directory)
        // Any content change changes the digest.
        try write("A", to: b + "/lib/a.txt")
        #expect(try digest(of: b).digest != first.digest)
    }

    @Test func executableBitAndSymlinksArePartOfTheContent() throws {
        let a = temporaryDirectory()
        try write("x", to: a + "/tool")
        let plain = try digest(of: a)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: a + "/tool")
        let executable = try digest(of: a)
        #expect(plain.digest != executable.digest)
        try FileManager.default.createSymbolicLink(atPath: a + "/link", withDestinationPath: "tool")
        #expect(try digest(of: a).digest != executable.digest)
    }

    @Test func systemTarReadsTheArchiveWithFixedMetadata() throws {
        let a = temporaryDirectory()
        let longName = String(repeating: "d", count: 120) + "/" + String(repeating: "f", count: 120) + ".txt"
        try write("deep", to: a + "/" + longName)
        try write("top", to: a + "/top.txt")
        let store = ArtifactStore(root: temporaryDirectory("store"))
        let blob = try store.ingest(path: a)
        let listing = runTool(["tar", "-tvf", store.blobPath(blob.digest)])
        #expect(listing.status == 0, "\(listing.output)")
        #expect(listing.output.contains("0/0"))
        #expect(listing.output.contains("1970-01-01"))
        #expect(listing.output.contains(longName))
        let out = temporaryDirectory()
        try store.extract(blob, to: out, fileName: "x")
        #expect(try String(contentsOfFile: out + "/" + longName, encoding: .utf8) == "deep")
        #expect(try String(contentsOfFile: out + "/top.txt", encoding: .utf8) == "top")
    }

    @Test func ingestLeavesNoTemporaryFilesAndDeduplicates() throws {
        let root = temporaryDirectory("store")
        let store = ArtifactStore(root: root)
        let file = temporaryDirectory() + "/app.bin"
        try write("payload", to: file)
        let first = try store.ingest(path: file)
        let second = try store.ingest(path: file)
        #expect(first == second)
        #expect(first.kind == .file)
        #expect(first.digest == SHA256.hash(data: Data("payload".utf8)).hexString)
        #expect((try FileManager.default.contentsOfDirectory(atPath: root + "/tmp")).isEmpty)
        #expect(throws: ArtifactsError.self) { try store.ingest(path: file + ".missing") }
    }
}

struct SigningTests {
    @Test func paeMatchesTheDSSESpecExample() {
        // From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
        let pae = DSSEEnvelope.pae(payloadType: "http://example.com/HelloWorld", payload: Data("hello world".utf8))
        #expect(String(decoding: pae, as: UTF8.self) == "DSSEv1 29 http://example.com/HelloWorld 11 hello world")
    }

    @Test func rotationKeepsOldSignaturesVerifiable() throws {
        let keys = KeyRing(directory: temporaryDirectory("keys"))
        let (oldID, oldKey) = try keys.signingKey()
        let envelope = try DSSEEnvelope.sign(payload: Data("{}".utf8), payloadType: DSSEEnvelope.inTotoPayloadType, keyID: oldID, key: oldKey)
        let (newID, _) = try keys.rotate()
        #expect(newID != oldID)
        #expect(keys.activeKeyID() == newID)
        #expect(try envelope.verify(keys: keys) == oldID)
        #expect(keys.publicKeys().count == 2)
        let mode = try FileManager.default.attributesOfItem(atPath: keys.directory + "/\(newID).key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func tamperedPayloadOrUnknownKeyIsRejected() throws {
        let keys = KeyRing(directory: temporaryDirectory("keys"))
        let (id, key) = try keys.signingKey()
        var envelope = try DSSEEnvelope.sign(payload: Data("{\"a\":1}".utf8), payloadType: DSSEEnvelope.inTotoPayloadType, keyID: id, key: key)
        var tampered = envelope
        tampered.payload = Data("{\"a\":2}".utf8).base64EncodedString()
        #expect(throws: ArtifactsError.self) { try tampered.verify(keys: keys) }
        envelope.signatures[0].keyid = "0000000000000000"
        #expect { try envelope.verify(keys: keys) } throws: { ($0 as? ArtifactsError)?.message.contains("unknown key") == true }
    }
}

@Suite(.serialized) struct ReleaseServiceTests {
    struct Fixture {
        let data: String
        let workspace: String
        let store: SQLRunStore
        let service: ReleaseService

        init() throws {
            data = temporaryDirectory("data")
            workspace = temporaryDirectory("ws")
            store = try SQLRunStore(path: data + "/state.db")
            service = ReleaseService(store: store, dataRoot: data)
            try write("binary v1", to: workspace + "/dist/app")
            try write("config", to: workspace + "/dist/etc/app.conf")
            try write("requests==2.31.0\nflask==3.0.0\n", to: workspace + "/requirements.txt")
        }

        func build(run: Int64 = 1) -> ReleaseService.BuildContext {
            ReleaseService.BuildContext(runID: run, runNumber: run, job: "release", commit: "0123456789abcdef0123456789abcdef01234567", branch: "main", event: "push", dirty: false, pipelineFile: "slipway.yml", pipelineText: "jobs: {}", jobDefinition: Data("{\"steps\":[]}".utf8), materials: ["dist/app": "abc"], startedOn: Date())
        }

        func release(_ version: String = "1.0.0") throws -> ReleaseRecord {
            try service.release(ReleaseSpec(name: "shop", version: version, path: "dist/"), workspace: workspace, build: build()).0
        }
    }

    @Test func releaseVerifiesAndIsImmutable() throws {
        let f = try Fixture()
        let (record, created) = try f.service.release(ReleaseSpec(name: "shop", version: "1.0.0", path: "dist/"), workspace: f.workspace, build: f.build())
        #expect(created)
        #expect(f.service.verify(name: "shop", version: "1.0.0").passed)
        // Same content again: a no-op.
        let (again, createdAgain) = try f.service.release(ReleaseSpec(name: "shop", version: "1.0.0", path: "dist/"), workspace: f.workspace, build: f.build(run: 2))
        #expect(!createdAgain)
        #expect(again.id == record.id)
        // Other content under the same version: refused, naming both digests.
        try write("binary v2", to: f.workspace + "/dist/app")
        #expect { try f.release() } throws: { ($0 as? ArtifactsError)?.message.contains("already released") == true }
        #expect(try f.store.releases(name: "shop").count == 1)
    }

    @Test func flippingOneByteAnywhereFailsVerificationNamingWhat() throws {
        let f = try Fixture()
        let record = try f.release()
        let blob = f.service.artifacts.blobPath(record.digest)

        func flip(_ path: String, at offset: Int) throws {
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let index = min(offset, bytes.count - 1)
            bytes[index] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: path))
        }
        func failure() -> String { f.service.verify(name: "shop", version: "1.0.0").failure ?? "passed" }

        let original = try Data(contentsOf: URL(fileURLWithPath: blob))
        try flip(blob, at: 600)
        #expect(failure().hasPrefix("digest"))
        try original.write(to: URL(fileURLWithPath: blob))
        #expect(f.service.verify(name: "shop", version: "1.0.0").passed)

        // The statement: re-encode the payload with one changed byte.
        let envelopeData = try Data(contentsOf: URL(fileURLWithPath: record.envelopePath))
        var envelope = try JSONDecoder().decode(DSSEEnvelope.self, from: envelopeData)
        var statement = try #require(envelope.payloadData)
        statement[statement.count / 2] ^= 0x01
        envelope.payload = statement.base64EncodedString()
        try envelope.encoded().write(to: URL(fileURLWithPath: record.envelopePath))
        #expect(failure().hasPrefix("signature"))
        #expect(failure().contains("modified"))

        // The envelope file itself (a byte of its JSON text).
        try envelopeData.write(to: URL(fileURLWithPath: record.envelopePath))
        try flip(record.envelopePath, at: 5)
        #expect(failure().hasPrefix("signature") || failure().hasPrefix("envelope"))

        // The SBOM.
        try envelopeData.write(to: URL(fileURLWithPath: record.envelopePath))
        let sbomDigest = try #require(record.sbomDigest)
        let sbom = f.service.artifacts.blobPath(sbomDigest)
        try flip(sbom, at: 40)
        #expect(failure().hasPrefix("sbom"))
    }

    @Test func anIndependentPythonVerifierAcceptsTheEnvelope() throws {
        let f = try Fixture()
        let record = try f.release()
        let key = try #require(f.service.keys.publicKeys().first { $0.id == record.keyID })
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/verify_dsse.py").path
        let ok = runTool(["python3", script, record.envelopePath, key.base64, f.service.artifacts.blobPath(record.digest), "shop@1.0.0"])
        #expect(ok.status == 0, "\(ok.output)")
        // And it rejects a wrong subject, so it can fail.
        let wrong = runTool(["python3", script, record.envelopePath, key.base64, f.service.artifacts.blobPath(record.digest), "shop@9.9.9"])
        #expect(wrong.status == 1, "\(wrong.output)")
    }

    @Test func sbomIsAttachedAndListsTheWorkspaceLockfiles() throws {
        let f = try Fixture()
        let record = try f.release()
        let sbomDigest = try #require(record.sbomDigest)
        let sbom = try #require(f.service.artifacts.data(sbomDigest))
        let text = String(decoding: sbom, as: UTF8.self)
        #expect(text.contains("pkg:pypi/requests@2.31.0"))
        #expect(text.contains("\"specVersion\" : \"1.5\"") || text.contains("\"specVersion\":\"1.5\""))
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/validate_cyclonedx.py").path
        let path = temporaryDirectory() + "/sbom.json"
        try sbom.write(to: URL(fileURLWithPath: path))
        let result = runTool(["python3", script, path])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test func garbageCollectionKeepsNewestDeployedAndRollbackTargets() throws {
        let f = try Fixture()
        var records: [ReleaseRecord] = []
        for n in 1...5 {
            try write("binary \(n)", to: f.workspace + "/dist/app")
            records.append(try f.release("1.0.\(n)"))
            Thread.sleep(forTimeInterval: 0.01)
        }
        // 1.0.1 was live in production, then 1.0.2: 1.0.2 is live, 1.0.1 its rollback target.
        try f.store.recordDeployment(DeploymentRecord(environment: "production", releaseID: records[0].id, status: "succeeded", createdAt: Date(timeIntervalSinceNow: -60)))
        try f.store.recordDeployment(DeploymentRecord(environment: "production", releaseID: records[1].id, status: "succeeded"))
        let dry = try f.service.collectGarbage(keep: 2, dryRun: true)
        #expect(dry.removed.map(\.version) == ["1.0.3"])
        #expect(try f.store.releases(name: "shop").count == 5)
        let report = try f.service.collectGarbage(keep: 2)
        #expect(report.removed.map(\.version) == ["1.0.3"])
        #expect(report.bytesFreed > 0)
        #expect(!f.service.artifacts.contains(records[2].digest))
        for kept in [records[0], records[1], records[3], records[4]] {
            #expect(f.service.verify(name: "shop", version: kept.version).passed, "\(kept.version)")
        }
    }
}
