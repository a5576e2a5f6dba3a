#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

// End-to-end tests of releases (issue 3): the real binary, real git repositories, the real store on disk,
// independent Python verifiers. Every wait is bounded.

/// Helpers of the release tests (kept here rather than in Support.swift).
enum ReleaseKit {
    /// Tests/SlipwayArtifactsTests/Fixtures: the Python verifiers and the lockfile fixtures.
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("SlipwayArtifactsTests/Fixtures").path

    static func fixture(_ relative: String) throws -> String {
        try String(contentsOfFile: fixtures + "/" + relative, encoding: .utf8)
    }

    /// Runs a tool other than slipway (python3, sqlite3, sha256sum), bounded in time.
    static func tool(_ arguments: [String], in directory: String, timeout: Double = 60) async throws -> CommandResult {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-tool-\(UUID().uuidString.prefix(8))").path
        let out = base + ".out", err = base + ".err"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: out)
            try? FileManager.default.removeItem(atPath: err)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try process.run()
        return try await Launched(process: process, stdoutPath: out, stderrPath: err).wait(timeout: timeout)
    }

    /// SHA-256 of a file with the system's `sha256sum` (independent of Slipway's hashing).
    static func sha256(_ path: String) async throws -> String {
        let result = try await tool(["sha256sum", "--", path], in: "/", timeout: 120)
        guard result.status == 0, let first = result.stdout.split(separator: " ").first else { throw E2EError("sha256sum \(path): \(result)") }
        return String(first)
    }

    static func sha256(text: String) async throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-hash-\(UUID().uuidString.prefix(8))").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try await sha256(path)
    }

    /// Flips the lowest bit of one byte (the middle one by default); returns the original bytes.
    @discardableResult
    static func flipByte(_ path: String, at offset: Int? = nil) throws -> Data {
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        var data = original
        let index = offset ?? data.count / 2
        data[index] ^= 0x01
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        return original
    }

    static func restore(_ path: String, _ data: Data) throws {
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw E2EError("\(path) is not a JSON object") }
        return object
    }

    /// Regular files under `root`, relative, sorted.
    static func files(under root: String) -> [String] {
        var result: [String] = []
        guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
        while let path = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + path, isDirectory: &isDirectory), !isDirectory.boolValue { result.append(path) }
        }
        return result.sorted()
    }

    static func isHexDigest(_ text: String) -> Bool {
        text.count == 64 && text.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    static func contains(_ haystack: Data, _ needle: String) -> Bool {
        haystack.range(of: Data(needle.utf8)) != nil
    }
}

extension Sandbox {
    var artifactsRoot: String { dataDirectory + "/artifacts" }
    func blobPath(_ digest: String) -> String { artifactsRoot + "/sha256/" + digest.prefix(2) + "/" + digest }
    func releaseDirectory(_ name: String, _ version: String) -> String { artifactsRoot + "/releases/\(name)/\(version)" }

    /// Every blob in the store: file name → path.
    func blobs() -> [String: String] {
        var result: [String: String] = [:]
        let root = artifactsRoot + "/sha256"
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + prefix)) ?? [] {
                result[name] = root + "/" + prefix + "/" + name
            }
        }
        return result
    }

    /// Files left in the store's temporary directory.
    func storeTemporaryFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: artifactsRoot + "/tmp")) ?? []
    }

    /// Rows of a query on the project's database, with the `sqlite3` tool; columns separated by "|".
    func sql(_ query: String) async throws -> [String] {
        let result = try await ReleaseKit.tool(["sqlite3", dataDirectory + "/state.db", query], in: repo)
        guard result.status == 0 else { throw E2EError("sqlite3 \(query): \(result)") }
        return result.stdout.split(separator: "\n").map(String.init)
    }

    /// The database file and its write-ahead log, as raw bytes.
    func databaseBytes() -> Data {
        var data = Data()
        for suffix in ["", "-wal", "-journal"] {
            data.append(FileManager.default.contents(atPath: dataDirectory + "/state.db" + suffix) ?? Data())
        }
        return data
    }

    /// Every log file of every run, concatenated.
    func allLogs() -> String {
        let runs = (try? FileManager.default.contentsOfDirectory(atPath: dataDirectory + "/runs")) ?? []
        return runs.compactMap(Int.init).sorted().map { logFiles(run: $0).sorted { $0.key < $1.key }.map(\.value).joined(separator: "\n") }.joined(separator: "\n")
    }

    /// Writes files and commits them.
    func change(_ files: [String: String], _ message: String) throws {
        for (path, content) in files { try write(path, content) }
        try commit(message)
    }

    func head() throws -> String { try git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines) }
}

extension EndToEnd {
    @Suite("releases")
    struct ReleaseEndToEnd {
        /// build makes dist/ and a version; release releases it; after reads the release's outputs.
        static let pipeline = """
            name: shop
            jobs:
              build:
                outputs: [version]
                artifacts: [dist/]
                steps:
                  - run: |
                      mkdir -p dist/bin dist/static
                      cp app.txt dist/app.txt
                      printf '#!/bin/sh\\necho shop\\n' > dist/bin/run.sh
                      chmod +x dist/bin/run.sh
                      echo "<h1>shop</h1>" > dist/static/index.html
                      echo "version=$(cat VERSION)" >> "$SLIPWAY_OUTPUT"
              release:
                needs: [build]
                release: { name: shop, version: "${{ needs.build.outputs.version }}", path: dist/, sbom: true }
              after:
                needs: [release]
                steps:
                  - run: echo "${{ needs.release.outputs.digest }} ${{ needs.release.outputs.release }}" >> "$OUT/after"
            """

        static let requirements = "flask==2.3.2\nrequests==2.31.0\nurllib3==1.26.5\n"

        static func files(version: String, content: String) -> [String: String] {
            ["VERSION": version + "\n", "app.txt": content + "\n", "requirements.txt": requirements]
        }

        /// The digest `slipway artifacts show` prints for a release.
        static func digest(_ box: Sandbox, _ reference: String) async throws -> String {
            let show = try await box.slipway("artifacts", "show", reference)
            guard show.status == 0, let line = show.stdout.split(separator: "\n").first(where: { $0.contains("digest") && $0.contains("sha256:") }),
                  let range = line.range(of: "sha256:") else { throw E2EError("no digest for \(reference): \(show)") }
            return String(line[range.upperBound...]).trimmingCharacters(in: .whitespaces)
        }

        static func signer(_ box: Sandbox, _ reference: String) async throws -> String {
            let show = try await box.slipway("artifacts", "show", reference)
            guard let line = show.stdout.split(separator: "\n").first(where: { $0.contains("signer") }), let key = line.split(separator: " ").last else {
                throw E2EError("no signer for \(reference): \(show)")
            }
            return String(key)
        }

        @Test("a deploy job verifies its release first: unknown or tampered artifacts are refused with the reason")
        func deployGateVerifiesTheRelease() async throws {
            let pipeline = Self.pipeline.replacingOccurrences(of: "            environments:", with: "") + """

              hotfix:
                deploy: { environment: staging, artifact: "shop@1.0.0" }
              ghost:
                deploy: { environment: staging, artifact: "shop@9.9.9" }
            environments:
              staging:
                target: { local: { instances: 1, command: "./bin/run.sh", listen: LISTEN, health: { deadline: 2s } } }
            """
            let box = try Sandbox(pipeline.replacingOccurrences(of: "LISTEN", with: String(try DeployKit.freePort())), files: Self.files(version: "1.0.0", content: "one"))
            _ = try await box.run("--job", "release")
            let digest = try await Self.digest(box, "shop@1.0.0")
            let blob = box.blobPath(digest)
            let original = try Data(contentsOf: URL(fileURLWithPath: blob))
            var tampered = original
            tampered[tampered.count / 2] ^= 0x01
            try tampered.write(to: URL(fileURLWithPath: blob))
            let refused = try await box.run("--job", "hotfix")
            #expect(refused.status == 1, "\(refused)")
            #expect(refused.stdout.contains("refusing to deploy shop@1.0.0 to 'staging': digest"), "\(refused)")
            let ghost = try await box.run("--job", "ghost")
            #expect(ghost.stdout.contains("refusing to deploy shop@9.9.9") && ghost.stdout.contains("never released"), "\(ghost)")
            try original.write(to: URL(fileURLWithPath: blob))
            let verified = try await box.run("--job", "hotfix")
            #expect(verified.stdout.contains("shop@1.0.0 verified"), "\(verified)")
            // Verified, then rolled out for real: the release has no ./bin/run.sh, so no instance becomes healthy.
            #expect(verified.stdout.contains("did not become healthy"), "\(verified)")
            _ = try await box.slipway("down")
        }

        @Test("build → release → after: outputs, ls/show/verify/download, a same-content re-run is a no-op, other content under the same version fails")
        func lifecycle() async throws {
            let box = try Sandbox(Self.pipeline, files: Self.files(version: "1.0.0", content: "one"))
            let first = try await box.run()
            try #require(first.status == 0, "\(first)")
            #expect(first.stdout.contains("released shop@1.0.0: sha256:"), "\(first)")

            // The outputs reach `after`.
            let afterLine = try #require(box.lines("after").first, "after did not run")
            let parts = afterLine.split(separator: " ").map(String.init)
            try #require(parts.count == 2, "\(afterLine)")
            let digest = parts[0]
            #expect(ReleaseKit.isHexDigest(digest), "\(afterLine)")
            #expect(parts[1] == "shop@1.0.0")

            // The store: the blob is named after its content, the envelope and the SBOM sit beside it.
            let blob = box.blobPath(digest)
            #expect(FileManager.default.fileExists(atPath: blob))
            #expect(try await ReleaseKit.sha256(blob) == digest)
            #expect(FileManager.default.fileExists(atPath: box.releaseDirectory("shop", "1.0.0") + "/provenance.dsse.json"))
            #expect(FileManager.default.fileExists(atPath: box.releaseDirectory("shop", "1.0.0") + "/sbom.cdx.json"))
            let blobsAfterFirst = Set(box.blobs().keys)
            #expect(blobsAfterFirst.count == 2, "the artifact and its SBOM: \(blobsAfterFirst)")

            let list = try await box.slipway("artifacts", "ls")
            #expect(list.status == 0, "\(list)")
            #expect(list.stdout.contains("shop@1.0.0") && list.stdout.contains(String(digest.prefix(16))), "\(list)")
            let listByName = try await box.slipway("artifacts", "ls", "shop")
            #expect(listByName.stdout.contains("shop@1.0.0"), "\(listByName)")
            let listOther = try await box.slipway("artifacts", "ls", "nothing")
            #expect(listOther.status == 0 && listOther.stdout.contains("no releases"), "\(listOther)")

            let show = try await box.slipway("artifacts", "show", "shop@1.0.0")
            #expect(show.status == 0, "\(show)")
            let activeKey = (try? String(contentsOfFile: box.dataDirectory + "/keys/active", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            for expected in ["sha256:\(digest)", try box.head(), "#1", "job release", activeKey, "directory", "provenance.dsse.json", "sbom.cdx.json", "nowhere yet"] {
                #expect(show.stdout.contains(expected), "show lacks \(expected): \(show)")
            }
            #expect(try await Self.digest(box, "shop@1.0.0") == digest)
            let unknown = try await box.slipway("artifacts", "show", "shop@9.9.9")
            #expect(unknown.status == 2, "\(unknown)")

            let verify = try await box.slipway("artifacts", "verify", "shop@1.0.0")
            #expect(verify.status == 0, "\(verify)")
            for check in ["digest", "signature", "provenance", "sbom", "envelope"] {
                #expect(verify.stdout.contains("✓ \(check)"), "verify lacks the \(check) check: \(verify)")
            }
            #expect(verify.stdout.contains("shop@1.0.0 verified"), "\(verify)")

            // download unpacks the directory; the files are the ones build made.
            let destination = box.root + "/download"
            let download = try await box.slipway("artifacts", "download", "shop@1.0.0", destination)
            #expect(download.status == 0, "\(download)")
            #expect(ReleaseKit.files(under: destination) == ["app.txt", "bin/run.sh", "static/index.html"], "\(ReleaseKit.files(under: destination))")
            #expect((try? String(contentsOfFile: destination + "/app.txt", encoding: .utf8)) == "one\n")
            #expect((try? String(contentsOfFile: destination + "/bin/run.sh", encoding: .utf8)) == "#!/bin/sh\necho shop\n")
            #expect((try? String(contentsOfFile: destination + "/static/index.html", encoding: .utf8)) == "<h1>shop</h1>\n")
            #expect(FileManager.default.isExecutableFile(atPath: destination + "/bin/run.sh"), "the executable bit is kept")

            // The same content again: a no-op with the same digest.
            let second = try await box.run()
            #expect(second.status == 0, "\(second)")
            #expect(box.lines("after").last == "\(digest) shop@1.0.0", "\(box.lines("after"))")
            let secondLogs = box.logFiles(run: 2).values.joined(separator: "\n")
            #expect(secondLogs.contains("already released"), "\(secondLogs)")
            #expect(!secondLogs.contains("released shop@1.0.0: sha256:"), "a no-op must not release again")
            #expect(Set(box.blobs().keys) == blobsAfterFirst, "a no-op release adds no blob")
            #expect(try await box.sql("SELECT count(*) FROM release") == ["1"])

            // Other content under the same version: the release job fails, naming both digests.
            try box.change(["app.txt": "two\n"], "change content, keep the version")
            let third = try await box.run()
            #expect(third.status == 1, "\(third)")
            let newBlobs = Set(box.blobs().keys).subtracting(blobsAfterFirst)
            let newDigest = try #require(newBlobs.first, "the new content was not even packed")
            for expected in ["shop@1.0.0", "already released", String(digest.prefix(16)), String(newDigest.prefix(16)), "bump the version"] {
                #expect(third.output.contains(expected), "the failure lacks \(expected): \(third)")
            }
            #expect(third.stdout.contains("✗ release"), "\(third)")
            #expect(box.lines("after").count == 2, "after must not run when the release fails")
            let history = try await box.slipway("explain", "release")
            #expect(history.stdout.contains(String(digest.prefix(16))), "\(history)")
            #expect(try await Self.digest(box, "shop@1.0.0") == digest, "the version still points at its first content")
            let stillVerified = try await box.slipway("artifacts", "verify", "shop@1.0.0")
            #expect(stillVerified.status == 0, "\(stillVerified)")
        }

        @Test("tampering with the blob, the envelope's statement or the SBOM fails verify naming what; download refuses")
        func tamperDetection() async throws {
            let box = try Sandbox(Self.pipeline, files: Self.files(version: "1.0.0", content: "one"))
            let run = try await box.run()
            try #require(run.status == 0, "\(run)")
            let digest = try await Self.digest(box, "shop@1.0.0")
            let destination = box.root + "/download"

            func expectFailure(naming check: String, _ what: String) async throws {
                let verify = try await box.slipway("artifacts", "verify", "shop@1.0.0")
                #expect(verify.status == 1, "\(what): \(verify)")
                #expect(verify.stdout.contains("✗ \(check)"), "\(what) must fail the \(check) check: \(verify)")
                #expect(verify.stderr.contains("failed verification: \(check)"), "\(what): \(verify)")
                try? FileManager.default.removeItem(atPath: destination)
                let download = try await box.slipway("artifacts", "download", "shop@1.0.0", destination)
                #expect(download.status == 1, "\(what): \(download)")
                #expect(download.stderr.contains("refusing") && download.stderr.contains(check), "\(what): \(download)")
                #expect(ReleaseKit.files(under: destination).isEmpty, "a refused download must write nothing")
            }
            func expectIntact() async throws {
                let verify = try await box.slipway("artifacts", "verify", "shop@1.0.0")
                #expect(verify.status == 0, "after restoring: \(verify)")
            }

            // 1. One byte of the blob.
            let blob = box.blobPath(digest)
            let blobBytes = try ReleaseKit.flipByte(blob)
            try await expectFailure(naming: "digest", "a flipped byte in the blob")
            try ReleaseKit.restore(blob, blobBytes)
            try await expectIntact()

            // 2. One byte of the signed statement inside the envelope (decoded, flipped, re-encoded).
            let envelopePath = box.releaseDirectory("shop", "1.0.0") + "/provenance.dsse.json"
            let envelopeText = try String(contentsOfFile: envelopePath, encoding: .utf8)
            let envelope = try ReleaseKit.json(envelopePath)
            let payload = try #require(envelope["payload"] as? String)
            var statement = try #require(Data(base64Encoded: payload))
            statement[statement.count / 2] ^= 0x01
            let tampered = envelopeText.replacingOccurrences(of: payload, with: statement.base64EncodedString())
            #expect(tampered != envelopeText)
            try Data(tampered.utf8).write(to: URL(fileURLWithPath: envelopePath), options: .atomic)
            try await expectFailure(naming: "signature", "a flipped byte in the envelope's payload")
            try Data(envelopeText.utf8).write(to: URL(fileURLWithPath: envelopePath), options: .atomic)
            try await expectIntact()

            // 3. One byte of the published SBOM, then of the SBOM blob in the store.
            let sbomPath = box.releaseDirectory("shop", "1.0.0") + "/sbom.cdx.json"
            let sbomBytes = try ReleaseKit.flipByte(sbomPath)
            try await expectFailure(naming: "sbom", "a flipped byte in sbom.cdx.json")
            try ReleaseKit.restore(sbomPath, sbomBytes)
            try await expectIntact()
            let sbomDigest = try await ReleaseKit.sha256(sbomPath)
            let sbomBlob = box.blobPath(sbomDigest)
            #expect(FileManager.default.fileExists(atPath: sbomBlob), "the SBOM is stored as a blob too")
            let sbomBlobBytes = try ReleaseKit.flipByte(sbomBlob)
            try await expectFailure(naming: "sbom", "a flipped byte in the SBOM blob")
            try ReleaseKit.restore(sbomBlob, sbomBlobBytes)
            try await expectIntact()

            // A missing blob is named too, and an unknown release.
            try FileManager.default.moveItem(atPath: blob, toPath: blob + ".away")
            try await expectFailure(naming: "digest", "a missing blob")
            try FileManager.default.moveItem(atPath: blob + ".away", toPath: blob)
            let unknown = try await box.slipway("artifacts", "verify", "shop@7.7.7")
            #expect(unknown.status == 1 && unknown.output.contains("never released"), "\(unknown)")

            let download = try await box.slipway("artifacts", "download", "shop@1.0.0", destination)
            #expect(download.status == 0, "\(download)")
            #expect(ReleaseKit.files(under: destination) == ["app.txt", "bin/run.sh", "static/index.html"])
        }

        @Test("the CLI-produced release verifies with the independent Python DSSE verifier; the statement carries the provenance")
        func independentVerification() async throws {
            let box = try Sandbox(Self.pipeline, files: Self.files(version: "2.4.1", content: "independent"))
            let run = try await box.run()
            try #require(run.status == 0, "\(run)")
            let digest = try await Self.digest(box, "shop@2.4.1")
            let envelopePath = box.releaseDirectory("shop", "2.4.1") + "/provenance.dsse.json"
            let envelope = try ReleaseKit.json(envelopePath)
            #expect(envelope["payloadType"] as? String == "application/vnd.in-toto+json")
            let signatures = try #require(envelope["signatures"] as? [[String: Any]])
            let keyID = try #require(signatures.first?["keyid"] as? String)
            let publicKey = try String(contentsOfFile: box.dataDirectory + "/keys/\(keyID).pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let keysOutput = try await box.slipway("keys")
            #expect(keysOutput.stdout.contains(publicKey), "`slipway keys` shows the key that signed: \(keysOutput)")

            let script = ReleaseKit.fixtures + "/verify_dsse.py"
            let verified = try await ReleaseKit.tool(["python3", script, envelopePath, publicKey, box.blobPath(digest), "shop@2.4.1"], in: box.repo)
            if verified.status == 77 { Issue.record("python3 lacks `cryptography` (pip install cryptography): \(verified)"); return }
            #expect(verified.status == 0, "\(verified)")
            #expect(verified.stdout.contains("verified shop@2.4.1 sha256:\(digest)"), "\(verified)")
            // The same verifier refuses another name, another key and another blob.
            let wrongName = try await ReleaseKit.tool(["python3", script, envelopePath, publicKey, box.blobPath(digest), "shop@2.4.2"], in: box.repo)
            #expect(wrongName.status == 1, "\(wrongName)")
            let otherKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let wrongKey = try await ReleaseKit.tool(["python3", script, envelopePath, otherKey, box.blobPath(digest), "shop@2.4.1"], in: box.repo)
            #expect(wrongKey.status == 1, "\(wrongKey)")
            let wrongBlob = try await ReleaseKit.tool(["python3", script, envelopePath, publicKey, box.repo + "/app.txt", "shop@2.4.1"], in: box.repo)
            #expect(wrongBlob.status == 1, "\(wrongBlob)")

            // What the signed statement says (in-toto Statement v1, SLSA Provenance v1).
            let encodedPayload = try #require(envelope["payload"] as? String)
            let payload = try #require(Data(base64Encoded: encodedPayload))
            let statement = try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
            #expect(statement["_type"] as? String == "https://in-toto.io/Statement/v1")
            #expect(statement["predicateType"] as? String == "https://slsa.dev/provenance/v1")
            let subject = try #require((statement["subject"] as? [[String: Any]])?.first)
            #expect(subject["name"] as? String == "shop@2.4.1")
            #expect((subject["digest"] as? [String: String])?["sha256"] == digest)
            let predicate = try #require(statement["predicate"] as? [String: Any])
            let definition = try #require(predicate["buildDefinition"] as? [String: Any])
            #expect(definition["buildType"] as? String == "https://slipway.dev/buildtypes/pipeline/v1")
            let external = try #require(definition["externalParameters"] as? [String: Any])
            let pipeline = try #require(external["pipeline"] as? [String: Any])
            #expect(pipeline["path"] as? String == "slipway.yml")
            let pipelineDigest = try await ReleaseKit.sha256(box.repo + "/slipway.yml")
            #expect((pipeline["digest"] as? [String: String])?["sha256"] == pipelineDigest)
            #expect(external["job"] as? String == "release")
            #expect(external["event"] as? String == "push")
            #expect(external["branch"] as? String == "main")
            let internalParameters = try #require(definition["internalParameters"] as? [String: Any])
            #expect(internalParameters["jobDefinition"] is [String: Any], "the resolved job definition is recorded")
            let dependencies = try #require(definition["resolvedDependencies"] as? [[String: Any]])
            let commit = try box.head()
            #expect(dependencies.contains { ($0["digest"] as? [String: String])?["gitCommit"] == commit }, "\(dependencies)")
            let appDigest = try await ReleaseKit.sha256(text: "independent\n")
            #expect(dependencies.contains { $0["name"] as? String == "dist/app.txt" && ($0["digest"] as? [String: String])?["sha256"] == appDigest },
                    "the files received from build are materials: \(dependencies)")
            let details = try #require(predicate["runDetails"] as? [String: Any])
            #expect((details["builder"] as? [String: Any])?["id"] as? String == "https://slipway.dev/builders/local/v1")
            #expect((details["metadata"] as? [String: Any])?["invocationId"] as? String == "run/1/release")
            let sbomDigest = try await ReleaseKit.sha256(box.releaseDirectory("shop", "2.4.1") + "/sbom.cdx.json")
            let byproducts = try #require(details["byproducts"] as? [[String: Any]])
            #expect(byproducts.contains { ($0["digest"] as? [String: String])?["sha256"] == sbomDigest }, "\(byproducts)")
        }

        @Test("keys rotate: old and new releases verify, two keys with one active, the private key is 0600 and never leaks")
        func keyRotation() async throws {
            let box = try Sandbox(Self.pipeline, files: Self.files(version: "1.0.0", content: "one"))
            var outputs: [CommandResult] = []
            let first = try await box.run()
            outputs.append(first)
            try #require(first.status == 0, "\(first)")
            let oldKey = try await Self.signer(box, "shop@1.0.0")

            let rotate = try await box.slipway("keys", "rotate")
            outputs.append(rotate)
            #expect(rotate.status == 0, "\(rotate)")
            #expect(rotate.stdout.contains("new active key") && rotate.stdout.contains(oldKey), "\(rotate)")

            try box.change(["VERSION": "1.1.0\n", "app.txt": "two\n"], "1.1.0")
            let second = try await box.run()
            outputs.append(second)
            #expect(second.status == 0, "\(second)")
            let newKey = try await Self.signer(box, "shop@1.1.0")
            #expect(newKey != oldKey, "the new release is signed by the new key")
            #expect(try await Self.signer(box, "shop@1.0.0") == oldKey)

            for reference in ["shop@1.0.0", "shop@1.1.0"] {
                let verify = try await box.slipway("artifacts", "verify", reference)
                outputs.append(verify)
                #expect(verify.status == 0, "\(reference) must still verify after the rotation: \(verify)")
            }
            let keys = try await box.slipway("keys")
            outputs.append(keys)
            #expect(keys.status == 0, "\(keys)")
            let keyLines = keys.stdout.split(separator: "\n").filter { $0.contains("ed25519") }
            #expect(keyLines.count == 2, "\(keys)")
            let activeLines = keyLines.filter { $0.contains("active") }
            #expect(activeLines.count == 1 && activeLines.first?.contains(newKey) == true, "\(keys)")
            #expect(keyLines.contains { $0.contains("retired") && $0.contains(oldKey) }, "\(keys)")
            let show = try await box.slipway("keys", "show")
            outputs.append(show)
            #expect(show.stdout == keys.stdout)
            outputs.append(try await box.slipway("artifacts", "show", "shop@1.1.0"))
            outputs.append(try await box.slipway("artifacts", "ls"))
            outputs.append(try await box.slipway("history"))

            // The private keys: mode 0600, and their content appears nowhere else.
            let keyFiles = ((try? FileManager.default.contentsOfDirectory(atPath: box.dataDirectory + "/keys")) ?? []).filter { $0.hasSuffix(".key") }
            #expect(Set(keyFiles) == [oldKey + ".key", newKey + ".key"], "\(keyFiles)")
            let logs = box.allLogs()
            let database = box.databaseBytes()
            #expect(!database.isEmpty)
            var envelopes = ""
            for version in ["1.0.0", "1.1.0"] {
                envelopes += (try? String(contentsOfFile: box.releaseDirectory("shop", version) + "/provenance.dsse.json", encoding: .utf8)) ?? ""
            }
            for file in keyFiles {
                let path = box.dataDirectory + "/keys/" + file
                let attributes = try FileManager.default.attributesOfItem(atPath: path)
                let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
                #expect(mode == 0o600, "\(file) has mode \(String(mode, radix: 8))")
                let secret = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(secret.count >= 40, "a base64 Ed25519 private key")
                let raw = try #require(Data(base64Encoded: secret))
                for output in outputs { #expect(!output.output.contains(secret), "the private key \(file) leaked into command output") }
                #expect(!logs.contains(secret), "the private key \(file) leaked into a log")
                #expect(!ReleaseKit.contains(database, secret) && database.range(of: raw) == nil, "the private key \(file) leaked into state.db")
                #expect(!envelopes.contains(secret), "the private key \(file) leaked into an envelope")
            }
        }

        @Test("kill -9 during a release leaves the store consistent; --resume completes it; gc removes the leftovers")
        func killDuringRelease() async throws {
            let box = try Sandbox("""
                name: big
                jobs:
                  big:
                    release: { name: big, version: "1.0.0", path: payload/ }
                    steps:
                      - run: |
                          mkdir -p payload/a payload/b
                          for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
                            head -c 10M /dev/urandom > payload/a/part-$i.bin
                            head -c 10M /dev/urandom > payload/b/part-$i.bin
                          done
                          echo small > payload/README
                """)
            let run = try box.launch(["run", "--plain"] + box.outEnv)
            // The release step is writing when a partly written blob shows up in the store's tmp directory.
            var seenBytes: Int64 = 0
            let midway = await eventually(within: 120) {
                guard run.process.isRunning else { return true }
                for name in box.storeTemporaryFiles() where name.hasPrefix("ingest-") {
                    let size = (try? FileManager.default.attributesOfItem(atPath: box.artifactsRoot + "/tmp/" + name)[.size] as? NSNumber)?.int64Value ?? 0
                    if size >= 16 << 20 { seenBytes = size; return true }
                }
                return false
            }
            run.signal(SIGKILL)
            let killed = try await run.wait(timeout: 20)
            try #require(midway, "the release never started: \(killed)")
            try #require(killed.status == 128 + SIGKILL, "slipway finished before it could be killed mid-release (saw \(seenBytes) bytes): \(killed)")
            print("killed slipway with \(seenBytes) bytes of the blob written")
            let releaseLog = box.logFiles(run: 1)["big.1-2.log"]
            #expect(releaseLog != nil, "the release step had started: \(box.logFiles(run: 1).keys.sorted())")

            // The store after the crash: every row has its blob, every blob is named after its content.
            func checkConsistency(_ moment: String) async throws -> [String] {
                let rows = try await box.sql("SELECT name || '@' || version, digest, coalesce(sbom_digest, '') FROM release")
                for row in rows {
                    let columns = row.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                    for digest in columns.dropFirst() where !digest.isEmpty {
                        let path = box.blobPath(digest)
                        #expect(FileManager.default.fileExists(atPath: path), "\(moment): release \(columns[0]) has no blob \(digest)")
                        if FileManager.default.fileExists(atPath: path) {
                            #expect(try await ReleaseKit.sha256(path) == digest, "\(moment): blob \(digest) of \(columns[0]) is damaged")
                        }
                    }
                }
                for (name, path) in box.blobs() {
                    #expect(try await ReleaseKit.sha256(path) == name, "\(moment): blob \(name) does not hold its content's SHA-256")
                    #expect(path.hasSuffix("/sha256/\(name.prefix(2))/\(name)"))
                }
                let list = try await box.slipway("artifacts", "ls")
                #expect(list.status == 0, "\(moment): \(list)")
                let references = rows.compactMap { $0.split(separator: "|").first.map(String.init) }
                if references.isEmpty {
                    #expect(list.stdout.contains("no releases"), "\(moment): \(list)")
                } else {
                    for reference in references { #expect(list.stdout.contains(reference), "\(moment): \(list)") }
                }
                return references
            }
            let afterKill = try await checkConsistency("after kill -9")
            #expect(afterKill.isEmpty, "an interrupted release must not be recorded: \(afterKill)")
            let leftovers = box.storeTemporaryFiles()
            #expect(!leftovers.isEmpty, "the interrupted attempt's partial blob is expected in tmp/")
            let verifyInterrupted = try await box.slipway("artifacts", "verify", "big@1.0.0")
            #expect(verifyInterrupted.status == 1 && verifyInterrupted.output.contains("never released"), "\(verifyInterrupted)")

            // --resume runs the job again and completes the release.
            let resumed = try await box.run("--resume", timeout: 300)
            #expect(resumed.status == 0, "\(resumed)")
            #expect(resumed.stdout.contains("released big@1.0.0"), "\(resumed)")
            let verify = try await box.slipway("artifacts", "verify", "big@1.0.0", timeout: 120)
            #expect(verify.status == 0, "\(verify)")
            #expect(try await checkConsistency("after --resume") == ["big@1.0.0"])

            // gc removes what the interrupted attempt left: partial files in tmp/ and unreferenced blobs.
            let gc = try await box.slipway("artifacts", "gc", timeout: 120)
            #expect(gc.status == 0, "\(gc)")
            #expect(gc.stdout.contains("freed"), "\(gc)")
            #expect(box.storeTemporaryFiles().isEmpty, "tmp/ still holds \(box.storeTemporaryFiles())")
            let referenced = Set(try await box.sql("SELECT digest FROM release UNION SELECT sbom_digest FROM release WHERE sbom_digest IS NOT NULL"))
            #expect(Set(box.blobs().keys) == referenced, "only referenced blobs remain")
            let verifyAfterGC = try await box.slipway("artifacts", "verify", "big@1.0.0", timeout: 120)
            #expect(verifyAfterGC.status == 0, "\(verifyAfterGC)")
        }

        @Test("gc --keep 2: --dry-run lists what would go; the real run removes it and reports the bytes freed")
        func retention() async throws {
            let box = try Sandbox(Self.pipeline, files: Self.files(version: "1.0.0", content: "v1"))
            let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
            var digests: [String: String] = [:]
            var sboms: [String: String] = [:]
            for (index, version) in versions.enumerated() {
                if index > 0 { try box.change(["VERSION": version + "\n", "app.txt": "v\(index + 1)\n" + String(repeating: "x", count: 4096 * (index + 1))], version) }
                let run = try await box.run()
                try #require(run.status == 0, "\(version): \(run)")
                digests[version] = try await Self.digest(box, "shop@\(version)")
                sboms[version] = try await ReleaseKit.sha256(box.releaseDirectory("shop", version) + "/sbom.cdx.json")
            }
            let before = box.blobs()
            #expect(before.count == 8, "four artifacts and four SBOMs: \(before.keys.sorted())")

            let dryRun = try await box.slipway("artifacts", "gc", "--keep", "2", "--dry-run")
            #expect(dryRun.status == 0, "\(dryRun)")
            #expect(dryRun.stdout.contains("would remove shop@1.0.0") && dryRun.stdout.contains("would remove shop@1.1.0"), "\(dryRun)")
            #expect(!dryRun.stdout.contains("shop@1.2.0") && !dryRun.stdout.contains("shop@1.3.0"), "\(dryRun)")
            #expect(dryRun.stdout.contains("would free") && dryRun.stdout.contains("2 release(s)"), "\(dryRun)")
            #expect(box.blobs() == before, "a dry run removes nothing")
            #expect(try await box.sql("SELECT count(*) FROM release") == ["4"])

            // The bytes freed: the two artifacts and their SBOMs, measured before the real run.
            var expectedBytes: Int64 = 0
            for version in ["1.0.0", "1.1.0"] {
                for digest in [digests[version]!, sboms[version]!] {
                    expectedBytes += (try? FileManager.default.attributesOfItem(atPath: before[digest] ?? "")[.size] as? NSNumber)?.int64Value ?? 0
                }
            }
            let gc = try await box.slipway("artifacts", "gc", "--keep", "2")
            #expect(gc.status == 0, "\(gc)")
            #expect(gc.stdout.contains("removed shop@1.0.0") && gc.stdout.contains("removed shop@1.1.0"), "\(gc)")
            #expect(!gc.stdout.contains("removed shop@1.2.0") && !gc.stdout.contains("removed shop@1.3.0"), "\(gc)")
            let freedLine = try #require(gc.stdout.split(separator: "\n").first { $0.hasPrefix("freed ") }.map(String.init), "\(gc)")
            let expectedSize = expectedBytes < 1024 ? "\(expectedBytes) B" : String(format: "%.1f KiB", Double(expectedBytes) / 1024)
            #expect(freedLine.hasPrefix("freed \(expectedSize): 2 release(s)"), "expected \(expectedBytes) bytes freed: \(gc)")
            let predicted = dryRun.stdout.split(separator: "\n").first { $0.hasPrefix("would free ") }.map { String($0.dropFirst("would free ".count)) }
            #expect(predicted == String(freedLine.dropFirst("freed ".count)), "the dry run must predict the real run: \(dryRun) / \(gc)")

            let after = box.blobs()
            for version in ["1.0.0", "1.1.0"] {
                #expect(after[digests[version]!] == nil && after[sboms[version]!] == nil, "\(version)'s blobs remain")
                #expect(!FileManager.default.fileExists(atPath: box.releaseDirectory("shop", version)), "\(version)'s envelope remains")
            }
            #expect(after.count == 4)
            let list = try await box.slipway("artifacts", "ls")
            #expect(list.stdout.contains("shop@1.2.0") && list.stdout.contains("shop@1.3.0"), "\(list)")
            #expect(!list.stdout.contains("shop@1.0.0") && !list.stdout.contains("shop@1.1.0"), "\(list)")
            for version in ["1.2.0", "1.3.0"] {
                let verify = try await box.slipway("artifacts", "verify", "shop@\(version)")
                #expect(verify.status == 0, "\(verify)")
            }
            let gone = try await box.slipway("artifacts", "verify", "shop@1.0.0")
            #expect(gone.status == 1, "\(gone)")
            let again = try await box.slipway("artifacts", "gc", "--keep", "2")
            #expect(again.status == 0 && again.stdout.contains("freed 0 B: 0 release(s)"), "nothing left to collect: \(again)")
            let invalid = try await box.slipway("artifacts", "gc", "--keep", "0")
            #expect(invalid.status == 2, "\(invalid)")
        }

        /// Modelled on GHSA-v845-jxx5-vc9f / CVE-2023-43804 (urllib3 leaks the Cookie header on cross-origin
        /// redirects), as OSV publishes GitHub advisories.
        static let advisories = """
            [
              {
                "schema_version": "1.4.0",
                "id": "GHSA-v845-jxx5-vc9f",
                "modified": "2023-11-08T04:12:43Z",
                "published": "2023-10-02T23:28:30Z",
                "aliases": ["CVE-2023-43804", "PYSEC-2023-192"],
                "summary": "`Cookie` HTTP header isn't stripped on cross-origin redirects",
                "details": "urllib3 doesn't treat the `Cookie` HTTP header special or provide any helpers for managing cookies over HTTP.",
                "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H" }],
                "affected": [
                  {
                    "package": { "ecosystem": "PyPI", "name": "urllib3" },
                    "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": "1.26.17" }] }]
                  },
                  {
                    "package": { "ecosystem": "PyPI", "name": "urllib3" },
                    "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "2.0.0" }, { "fixed": "2.0.6" }] }]
                  }
                ],
                "references": [
                  { "type": "WEB", "url": "https://github.com/urllib3/urllib3/security/advisories/GHSA-v845-jxx5-vc9f" },
                  { "type": "PACKAGE", "url": "https://github.com/urllib3/urllib3" }
                ],
                "database_specific": { "cwe_ids": ["CWE-200"], "severity": "HIGH", "github_reviewed": true }
              }
            ]
            """

        static func dependencyPipeline(severity: String?) -> String {
            let with = severity.map { "{ advisories: security/osv.json, severity: \($0) }" } ?? "{ advisories: security/osv.json }"
            return """
                name: deps
                jobs:
                  deps:
                    steps:
                      - uses: slipway/dependency-check
                        with: \(with)
                      - run: echo "after the check" >> "$OUT/after-check"
                """
        }

        @Test("dependency-check fails on a vulnerable pin naming the advisory; severity: critical passes with a warning; explain shows the findings")
        func dependencyCheck() async throws {
            let box = try Sandbox(Self.dependencyPipeline(severity: nil), files: [
                "requirements.txt": "requests==2.31.0\nurllib3==1.26.5\ncertifi==2023.7.22\n",
                "security/osv.json": Self.advisories,
            ])
            let failed = try await box.run()
            #expect(failed.status == 1, "\(failed)")
            for expected in ["FAIL high GHSA-v845-jxx5-vc9f urllib3@1.26.5", "requirements.txt", "fixed in 1.26.17", "1 at or above high"] {
                #expect(failed.stdout.contains(expected), "the report lacks \(expected): \(failed)")
            }
            #expect(failed.output.contains("1 vulnerable dependency at or above high"), "\(failed)")
            #expect(!failed.stdout.contains("requests@2.31.0"), "requests 2.31.0 is not affected: \(failed)")
            #expect(box.count("after-check") == 0, "the job stops at the failed check")
            let explain = try await box.slipway("explain", "deps")
            #expect(explain.status == 0, "\(explain)")
            #expect(explain.stdout.contains("scan findings (1)"), "\(explain)")
            #expect(explain.stdout.contains("[dependency-check] high requirements.txt: urllib3@1.26.5: GHSA-v845-jxx5-vc9f"), "\(explain)")
            #expect(explain.stdout.contains("fixed in 1.26.17"), "\(explain)")

            // At `severity: critical` a high advisory is a warning only.
            try box.change(["slipway.yml": Self.dependencyPipeline(severity: "critical")], "only critical blocks")
            let passed = try await box.run()
            #expect(passed.status == 0, "\(passed)")
            #expect(passed.stdout.contains("warn high GHSA-v845-jxx5-vc9f urllib3@1.26.5"), "\(passed)")
            #expect(passed.stdout.contains("0 at or above critical"), "\(passed)")
            #expect(box.count("after-check") == 1)
            let explainPassed = try await box.slipway("explain", "deps")
            #expect(explainPassed.stdout.contains("run #2") && explainPassed.stdout.contains("GHSA-v845-jxx5-vc9f"), "\(explainPassed)")

            // Fixing the pin clears the finding.
            try box.change(["requirements.txt": "requests==2.31.0\nurllib3==1.26.17\ncertifi==2023.7.22\n",
                            "slipway.yml": Self.dependencyPipeline(severity: nil)], "bump urllib3")
            let fixed = try await box.run()
            #expect(fixed.status == 0, "\(fixed)")
            #expect(fixed.stdout.contains("0 finding(s)"), "\(fixed)")

            // A missing advisory file is a clear failure, not a pass.
            try box.change(["slipway.yml": Self.dependencyPipeline(severity: nil).replacingOccurrences(of: "security/osv.json", with: "security/none.json")], "wrong path")
            let missing = try await box.run()
            #expect(missing.status == 1 && missing.output.contains("security/none.json"), "\(missing)")
        }

        @Test("the SBOM lists the workspace lockfiles' components and validates against the CycloneDX 1.5 schema")
        func sbom() async throws {
            var files = Self.files(version: "3.0.0", content: "sbom")
            files["package-lock.json"] = try ReleaseKit.fixture("lockfiles/npm/package-lock-v3.json")
            files["native/Cargo.lock"] = try ReleaseKit.fixture("lockfiles/cargo/Cargo.lock")
            files["tools/go.sum"] = try ReleaseKit.fixture("lockfiles/go/go.sum")
            files["Package.resolved"] = try ReleaseKit.fixture("lockfiles/swift/Package-v2.resolved")
            let box = try Sandbox(Self.pipeline, files: files)
            let run = try await box.run()
            try #require(run.status == 0, "\(run)")
            let path = box.releaseDirectory("shop", "3.0.0") + "/sbom.cdx.json"
            let document = try ReleaseKit.json(path)
            #expect(document["bomFormat"] as? String == "CycloneDX")
            #expect(document["specVersion"] as? String == "1.5")
            let metadata = try #require(document["metadata"] as? [String: Any])
            let subject = try #require(metadata["component"] as? [String: Any])
            #expect(subject["name"] as? String == "shop" && subject["version"] as? String == "3.0.0", "\(subject)")
            let components = try #require(document["components"] as? [[String: Any]])
            let purls = Set(components.compactMap { $0["purl"] as? String })
            for purl in ["pkg:pypi/flask@2.3.2", "pkg:pypi/requests@2.31.0", "pkg:pypi/urllib3@1.26.5"] {
                #expect(purls.contains(purl), "\(purl) from requirements.txt is missing: \(purls.sorted())")
            }
            for prefix in ["pkg:npm/", "pkg:cargo/", "pkg:golang/", "pkg:swift/"] {
                #expect(purls.contains { $0.hasPrefix(prefix) }, "no \(prefix) component: \(purls.sorted())")
            }
            let sources = Set(components.flatMap { ($0["properties"] as? [[String: String]] ?? []).filter { $0["name"] == "slipway:sourceFile" }.compactMap { $0["value"] } })
            #expect(sources.isSuperset(of: ["requirements.txt", "package-lock.json", "native/Cargo.lock", "tools/go.sum", "Package.resolved"]), "\(sources.sorted())")

            // The SBOM is the one the signed provenance names.
            let sbomDigest = try await ReleaseKit.sha256(path)
            let envelope = try ReleaseKit.json(box.releaseDirectory("shop", "3.0.0") + "/provenance.dsse.json")
            let encodedPayload = try #require(envelope["payload"] as? String)
            let payload = try #require(Data(base64Encoded: encodedPayload))
            #expect(String(decoding: payload, as: UTF8.self).contains(sbomDigest), "the statement names the SBOM's digest")
            let show = try await box.slipway("artifacts", "show", "shop@3.0.0")
            #expect(show.stdout.contains("sha256:\(sbomDigest)"), "\(show)")

            let validation = try await ReleaseKit.tool(["python3", ReleaseKit.fixtures + "/validate_cyclonedx.py", path], in: box.repo)
            if validation.status == 77 {
                Issue.record("the CycloneDX validator is not installed (pip install 'cyclonedx-python-lib[json-validation]'): \(validation)")
                return
            }
            #expect(validation.status == 0, "\(validation)")
        }
    }

    /// The secret scan is being finished separately; this suite states its intended behaviour and fails until
    /// it is complete (first "secret scan is being built"; then, while the allowlist file is scanned like any
    /// other, its own `github-token:…` fingerprint lines are reported as `generic-secret`).
    @Suite("releases: secret scan")
    struct ReleaseEndToEndSecretScan {
        static let pipeline = """
            name: scan
            jobs:
              scan:
                steps:
                  - uses: slipway/secret-scan
                  - run: echo scanned >> "$OUT/after-scan"
            """

        static let ruleIDs = ["aws-access-key-id", "aws-secret-access-key", "github-token", "gitlab-token", "slack-token",
                              "slack-webhook-url", "stripe-secret-key", "google-api-key", "private-key", "jwt", "npm-token",
                              "pypi-token", "generic-secret", "high-entropy-string"]

        /// A `ghp_` token made up for this run: no real-looking credential is stored in the repository.
        static func madeUpGitHubToken() -> String {
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            return "ghp_" + String((0..<36).map { _ in alphabet.randomElement()! })
        }

        @Test("planted secrets fail the job with file:line and masked values, leak nowhere; fingerprints in the allowlist make it pass")
        func plantedSecrets() async throws {
            let token = Self.madeUpGitHubToken()
            // AWS's documented example access key id (docs.aws.amazon.com), not a credential.
            let awsExample = "AKIAIOSFODNN7EXAMPLE"
            let box = try Sandbox(Self.pipeline, files: [
                "config/app.env": "# service settings\nREGION=eu-west-1\nAWS_ACCESS_KEY_ID=\(awsExample)\n",
                "scripts/deploy.sh": "#!/bin/sh\necho deploying\nexport GH_TOKEN=\(token)\n",
                "README.md": "# scan\nNothing secret here.\n",
            ])
            var outputs: [CommandResult] = []
            let failed = try await box.run()
            outputs.append(failed)
            #expect(failed.status == 1, "\(failed)")
            #expect(!failed.output.contains("secret scan is being built"), "the secret scanner has not landed yet")
            let logs = box.allLogs()
            for location in ["config/app.env:3", "scripts/deploy.sh:3"] {
                #expect(failed.stdout.contains(location) && logs.contains(location), "the report lacks \(location): \(failed)")
            }
            #expect(logs.contains("ghp_…***") && logs.contains("AKIA…***"), "values are shown masked: \(logs)")
            #expect(box.count("after-scan") == 0, "the job stops at the failed scan")
            let explain = try await box.slipway("explain", "scan")
            outputs.append(explain)
            #expect(explain.stdout.contains("[secret-scan]") && explain.stdout.contains("config/app.env") && explain.stdout.contains("scripts/deploy.sh"), "\(explain)")

            // Allowlist the findings by fingerprint: `<rule>:<file>:<first 16 hex of sha256(value)>`, as the report prints them.
            var fingerprints: Set<String> = []
            let printed = try NSRegularExpression(pattern: "[a-z0-9-]+:[A-Za-z0-9_./-]+:[0-9a-f]{16}")
            let text = logs + failed.stdout
            for match in printed.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                guard let range = Range(match.range, in: text) else { continue }
                let candidate = String(text[range])
                if Self.ruleIDs.contains(where: { candidate.hasPrefix($0 + ":") }) { fingerprints.insert(candidate) }
            }
            let tokenHash = try await ReleaseKit.sha256(text: token).prefix(16)
            let awsHash = try await ReleaseKit.sha256(text: awsExample).prefix(16)
            #expect(fingerprints.contains("github-token:scripts/deploy.sh:\(tokenHash)"), "the token's fingerprint: \(fingerprints.sorted())")
            #expect(fingerprints.contains("aws-access-key-id:config/app.env:\(awsHash)"), "the AWS key's fingerprint: \(fingerprints.sorted())")
            #expect(fingerprints.allSatisfy { $0.contains(":config/app.env:") || $0.contains(":scripts/deploy.sh:") }, "findings only in the planted files: \(fingerprints.sorted())")
            try box.change([".secret-scan-allowlist": "# reviewed: test fixtures\n" + fingerprints.sorted().joined(separator: "\n") + "\n"], "allowlist")
            let passed = try await box.run()
            outputs.append(passed)
            #expect(passed.status == 0, "\(passed)")
            #expect(box.count("after-scan") == 1)

            // The full values appear in no output, no log and not in the database.
            let allLogs = box.allLogs()
            let database = box.databaseBytes()
            for secret in [token, awsExample] {
                for output in outputs { #expect(!output.output.contains(secret), "a secret leaked into command output: \(output)") }
                #expect(!allLogs.contains(secret), "a secret leaked into a log")
                #expect(!ReleaseKit.contains(database, secret), "a secret leaked into state.db")
            }
        }
    }
}
