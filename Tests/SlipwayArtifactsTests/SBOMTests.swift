import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayArtifacts

private let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

private func lockfile(_ relative: String) throws -> Data {
    try Data(contentsOf: fixturesDirectory.appendingPathComponent("lockfiles").appendingPathComponent(relative))
}

private func component(_ components: [Component], _ name: String) -> Component? {
    components.first { $0.name == name }
}

private func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-sbom-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

private func write(_ data: Data, to relative: String, in root: URL) throws {
    let url = root.appendingPathComponent(relative)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try data.write(to: url)
}

@Suite("SBOM: lockfile parsers")
struct LockfileParserTests {
    @Test func swiftPMVersion1() throws {
        let components = try LockfileScanner.parse(fileName: "Package.resolved", data: lockfile("swift/Package-v1.resolved"))
        #expect(components.map(\.name) == ["github.com/apple/swift-argument-parser", "github.com/apple/swift-collections",
                                           "github.com/apple/swift-nio", "github.com/jpsim/Yams"])
        let nio = try #require(component(components, "github.com/apple/swift-nio"))
        #expect(nio.version == "2.54.0")
        #expect(nio.purl == "pkg:swift/github.com/apple/swift-nio@2.54.0")
        #expect(nio.ecosystem == .swift)
        #expect(nio.sourceFile == "Package.resolved")
        // scp-style SSH URL
        #expect(component(components, "github.com/jpsim/Yams")?.purl == "pkg:swift/github.com/jpsim/Yams@5.0.6")
        // A branch pin has no version: the revision stands in.
        #expect(component(components, "github.com/apple/swift-collections")?.version == "a281e8b846a354fa7dc5ed3f6d2cb0c7e2ab5a8b")
    }

    @Test func swiftPMVersion2SkipsLocalCheckouts() throws {
        let components = try LockfileScanner.parse(fileName: "App/Package.resolved", data: lockfile("swift/Package-v2.resolved"))
        #expect(components.map(\.purl) == ["pkg:swift/github.com/apple/swift-crypto@3.1.0", "pkg:swift/github.com/apple/swift-log@1.5.3"])
        #expect(components.allSatisfy { $0.sourceFile == "App/Package.resolved" })
    }

    @Test func swiftPMVersion3WithRegistryPin() throws {
        let components = try LockfileScanner.parse(fileName: "Package.resolved", data: lockfile("swift/Package-v3.resolved"))
        #expect(components.map(\.purl) == ["pkg:swift/github.com/apple/swift-nio-http2@1.19.1",
                                           "pkg:swift/github.com/groue/GRDB.swift@7.10.0",
                                           "pkg:swift/mona/linkedlist@1.2.0"])
        #expect(component(components, "mona.linkedlist")?.version == "1.2.0")
    }

    @Test func requirementsOnlyPinnedLinesWithHashesExtrasAndMarkers() throws {
        let components = try LockfileScanner.parse(fileName: "requirements.txt", data: lockfile("python/requirements.txt"))
        #expect(components.map(\.name) == ["certifi", "charset-normalizer", "django", "idna", "requests",
                                           "typing-extensions", "urllib3", "zope-interface"])
        let certifi = try #require(component(components, "certifi"))
        #expect(certifi.version == "2023.7.22")
        // Two --hash values on continuation lines: the first one is kept.
        #expect(certifi.hashes == ["SHA-256": "539cc1d13202e33ca466e88b2807e29f4c13049d6d87031a3c110744495cb082"])
        let requests = try #require(component(components, "requests"))
        #expect(requests.version == "2.31.0")  // extras and the environment marker are dropped
        #expect(requests.purl == "pkg:pypi/requests@2.31.0")
        #expect(requests.hashes["SHA-256"] == "58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f")
        #expect(component(components, "django")?.purl == "pkg:pypi/django@4.2.3")  // inline comment stripped
        #expect(component(components, "django")?.hashes == [:])
        #expect(component(components, "zope-interface")?.version == "6.0")  // PEP 503: Zope.Interface
        #expect(component(components, "typing-extensions")?.version == "4.7.1")  // === pin
        #expect(components.allSatisfy { $0.ecosystem == .pypi })
        // pyyaml>=6.0, numpy~=1.25, -e, URLs and paths are not pinned: absent.
        #expect(component(components, "pyyaml") == nil)
        #expect(component(components, "numpy") == nil)
    }

    @Test func requirementsVariantsByName() throws {
        let components = try LockfileScanner.parse(fileName: "services/api/requirements-dev.txt", data: lockfile("python/requirements-dev.txt"))
        #expect(components.map(\.purl) == ["pkg:pypi/black@23.7.0", "pkg:pypi/mypy-extensions@1.0.0",
                                           "pkg:pypi/pyjwt@1.7.1", "pkg:pypi/pytest@7.4.0"])
        #expect(LockfileScanner.isLockfile("requirements_test.txt"))
        #expect(!LockfileScanner.isLockfile("requirements.in"))
        #expect(!LockfileScanner.isLockfile("dev-requirements.txt"))
    }

    @Test func requirementsEdgeCasesInline() throws {
        let text = """
        foo-bar == 1.0.0   # spaces around ==
        Baz_Qux[a, b]==2.0;sys_platform=="linux"
        pkg @ https://example.com/pkg-1.0.tar.gz
        ranged>=1.0,<2.0
        wild==1.*
        PKG.With...Dots==3.0b1
        """
        let components = try LockfileScanner.parse(fileName: "requirements.txt", data: Data(text.utf8))
        #expect(components.map(\.purl) == ["pkg:pypi/baz-qux@2.0", "pkg:pypi/foo-bar@1.0.0", "pkg:pypi/pkg-with-dots@3.0b1"])
    }

    @Test func npmLockfileVersion3() throws {
        let components = try LockfileScanner.parse(fileName: "web/package-lock.json", data: lockfile("npm/package-lock-v3.json"))
        #expect(components.map(\.purl) == [
            "pkg:npm/%40babel/core@7.22.5", "pkg:npm/debug@2.6.9", "pkg:npm/debug@4.3.4", "pkg:npm/express@4.18.2",
            "pkg:npm/lodash@4.17.20", "pkg:npm/minimist@1.2.5", "pkg:npm/pad-left@2.1.0", "pkg:npm/typescript@5.1.6",
        ])
        // The root "" entry, the workspace member and the link are not components.
        #expect(component(components, "shop-web") == nil)
        #expect(component(components, "@shop/ui") == nil)
        let babel = try #require(component(components, "@babel/core"))
        #expect(babel.version == "7.22.5")
        let lodash = try #require(component(components, "lodash"))
        // integrity sha512 base64 → hex (the fixture's digest is sha512("lodash@4.17.20")).
        #expect(lodash.hashes == ["SHA-512": "9841e22a76d7a1686445d2657e137af454099a9e062394712fda003685d8c41d6c064a6565590deb421c36ecbe90fd88fdb3c1c492fa8cd9b0267f4000aeb78a"])
    }

    @Test func npmLockfileVersion2PrefersPackages() throws {
        let components = try LockfileScanner.parse(fileName: "package-lock.json", data: lockfile("npm/package-lock-v2.json"))
        #expect(components.map(\.purl) == ["pkg:npm/ms@2.1.3"])
    }

    @Test func npmLockfileVersion1NestedTree() throws {
        let components = try LockfileScanner.parse(fileName: "package-lock.json", data: lockfile("npm/package-lock-v1.json"))
        #expect(components.map(\.purl) == [
            "pkg:npm/%40types/node@18.16.3", "pkg:npm/axios@0.21.1", "pkg:npm/follow-redirects@1.14.0",
            "pkg:npm/minimist@1.2.5", "pkg:npm/minimist@1.2.8", "pkg:npm/mkdirp@0.5.5", "pkg:npm/string-width@4.2.3",
        ])
        // sha1 integrity
        #expect(component(components, "mkdirp")?.hashes == ["SHA-1": "f06818cc4003a66b4e9bf71a84e2c7a48013cc88"])
        // file: and github: versions are not registry packages.
        #expect(component(components, "my-local") == nil)
        #expect(component(components, "forked") == nil)
    }

    @Test func cargoLock() throws {
        let components = try LockfileScanner.parse(fileName: "Cargo.lock", data: lockfile("cargo/Cargo.lock"))
        #expect(components.map(\.purl) == ["pkg:cargo/aho-corasick@1.0.2", "pkg:cargo/memchr@2.5.0", "pkg:cargo/regex@1.9.1",
                                           "pkg:cargo/smallvec@0.6.13", "pkg:cargo/time@0.1.45"])
        // Path/workspace crates (no `source`) are skipped.
        #expect(component(components, "shop-cli") == nil)
        #expect(component(components, "shop-core") == nil)
        #expect(component(components, "memchr")?.hashes == ["SHA-256": "2dffe52ecf27772e601905b7522cb4ef790d2cc203488bbd0e2fe85fcb74566d"])
        #expect(component(components, "time")?.hashes == [:])  // git source: no checksum
        #expect(components.allSatisfy { $0.ecosystem == .cargo })
    }

    @Test func cargoLockVersion1MetadataChecksums() throws {
        let components = try LockfileScanner.parse(fileName: "Cargo.lock", data: lockfile("cargo/Cargo-v1.lock"))
        #expect(components.map(\.purl) == ["pkg:cargo/libc@0.2.40", "pkg:cargo/rand@0.4.2"])
        #expect(component(components, "rand")?.hashes["SHA-256"] == "eba5f8cb59cc50ed56be8880a5c7b496bfd9bd26394e176bc67884094145c2c5")
    }

    @Test func goSum() throws {
        let components = try LockfileScanner.parse(fileName: "go.sum", data: lockfile("go/go.sum"))
        #expect(components.map(\.name) == ["github.com/BurntSushi/toml", "github.com/davecgh/go-spew", "github.com/docker/docker",
                                           "github.com/gin-gonic/gin", "golang.org/x/net", "golang.org/x/text"])
        // testify only has a /go.mod line: not a build dependency.
        #expect(component(components, "github.com/stretchr/testify") == nil)
        let docker = try #require(component(components, "github.com/docker/docker"))
        #expect(docker.version == "v20.10.24+incompatible")
        #expect(docker.purl == "pkg:golang/github.com/docker/docker@v20.10.24%2Bincompatible")
        #expect(component(components, "golang.org/x/net")?.purl == "pkg:golang/golang.org/x/net@v0.0.0-20220722155237-a158d28d115b")
        #expect(components.allSatisfy { $0.ecosystem == .go && $0.hashes.isEmpty })
    }

    @Test("malformed lockfiles throw", arguments: [
        ("package-lock.json", "malformed/package-lock-truncated.json"),
        ("Cargo.lock", "malformed/Cargo-bad.lock"),
        ("go.sum", "malformed/go-bad.sum"),
        ("Package.resolved", "malformed/Package-nostate.resolved"),
    ])
    func malformedFixtures(fileName: String, fixture: String) throws {
        let data = try lockfile(fixture)
        #expect(throws: LockfileError.self) { try LockfileScanner.parse(fileName: fileName, data: data) }
    }

    @Test("garbage and truncated input throws for every format, never crashes", arguments: [
        "Package.resolved", "requirements.txt", "package-lock.json", "npm-shrinkwrap.json", "Cargo.lock", "go.sum",
    ])
    func garbage(fileName: String) throws {
        var generator = SplitMix64(seed: 0x5EED)
        let garbage = Data((0..<512).map { _ in UInt8(truncatingIfNeeded: generator.next()) } + [0xFF, 0xFE, 0x00])
        #expect(throws: LockfileError.self) { try LockfileScanner.parse(fileName: fileName, data: garbage) }
        // Every truncation of a valid JSON lockfile either parses or throws (no crash).
        if fileName.hasSuffix(".json") || fileName == "Package.resolved" {
            let valid = try lockfile(fileName == "Package.resolved" ? "swift/Package-v2.resolved" : "npm/package-lock-v3.json")
            for length in stride(from: 0, to: valid.count - 1, by: 7) {
                #expect(throws: LockfileError.self) { try LockfileScanner.parse(fileName: fileName, data: valid.prefix(length)) }
            }
        }
        // JSON of the wrong shape.
        if fileName.hasSuffix(".json") || fileName == "Package.resolved" {
            for text in ["[]", "42", "{\"pins\": 3}", "{\"object\": {\"pins\": [1]}}", "{\"packages\": []}", "{\"dependencies\": {\"a\": 1}}"] {
                #expect(throws: LockfileError.self) { try LockfileScanner.parse(fileName: fileName, data: Data(text.utf8)) }
            }
        }
    }

    @Test func unsupportedFileName() {
        #expect(throws: LockfileError.unsupported(file: "yarn.lock")) {
            try LockfileScanner.parse(fileName: "yarn.lock", data: Data())
        }
    }

    @Test func emptyButValidFiles() throws {
        #expect(try LockfileScanner.parse(fileName: "go.sum", data: Data()).isEmpty)
        #expect(try LockfileScanner.parse(fileName: "requirements.txt", data: Data("# nothing\n\n".utf8)).isEmpty)
        #expect(try LockfileScanner.parse(fileName: "Cargo.lock", data: Data("version = 3\n".utf8)).isEmpty)
        #expect(try LockfileScanner.parse(fileName: "Package.resolved", data: Data("{\"pins\": [], \"version\": 2}".utf8)).isEmpty)
    }

    @Test func swiftURLNormalization() {
        #expect(SwiftPackageName.normalize("https://github.com/apple/swift-nio.git") == "github.com/apple/swift-nio")
        #expect(SwiftPackageName.normalize("git@github.com:apple/swift-nio.git") == "github.com/apple/swift-nio")
        #expect(SwiftPackageName.normalize("ssh://git@GitHub.com:22/apple/swift-nio.git/") == "github.com/apple/swift-nio")
        #expect(SwiftPackageName.normalize("https://github.com/groue/GRDB.swift") == "github.com/groue/GRDB.swift")
    }

    @Test func pep503() {
        #expect(PyPI.normalize("Zope.Interface") == "zope-interface")
        #expect(PyPI.normalize("typing__extensions") == "typing-extensions")
        #expect(PyPI.normalize("A-_.b") == "a-b")
    }
}

@Suite("SBOM: workspace scan")
struct LockfileScanTests {
    @Test func scanFindsLockfilesAndSkipsVendoredDirectories() throws {
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try write(lockfile("swift/Package-v3.resolved"), to: "Package.resolved", in: root)
        try write(lockfile("python/requirements.txt"), to: "services/api/requirements.txt", in: root)
        try write(lockfile("npm/package-lock-v3.json"), to: "web/package-lock.json", in: root)
        try write(lockfile("cargo/Cargo.lock"), to: "tools/rs/Cargo.lock", in: root)
        try write(lockfile("go/go.sum"), to: "tools/go/go.sum", in: root)
        // Never descended into:
        for skipped in [".git", ".slipway", "node_modules", ".build", "target", "vendor"] {
            try write(lockfile("npm/package-lock-v1.json"), to: "web/\(skipped)/package-lock.json", in: root)
            try write(lockfile("go/go.sum"), to: "\(skipped)/go.sum", in: root)
        }
        // Problems are reported, not thrown.
        try write(lockfile("malformed/package-lock-truncated.json"), to: "broken/package-lock.json", in: root)
        try write(Data("not a lockfile".utf8), to: "docs/requirements.md", in: root)

        let (components, problems) = LockfileScanner.scan(root: root.path)
        #expect(Set(components.map(\.sourceFile)) == ["Package.resolved", "services/api/requirements.txt", "web/package-lock.json",
                                                       "tools/rs/Cargo.lock", "tools/go/go.sum"])
        #expect(components.count == 3 + 8 + 8 + 5 + 6)
        #expect(problems.count == 1)
        #expect(problems.first?.hasPrefix("broken/package-lock.json:") == true)
        // Ordered by lockfile path: deterministic.
        #expect(components.first?.sourceFile == "Package.resolved")
        #expect(LockfileScanner.scan(root: root.path).components == components)
    }

    @Test func scanOfAMissingDirectoryIsAProblem() {
        let result = LockfileScanner.scan(root: "/nonexistent/slipway-\(UUID().uuidString)")
        #expect(result.components.isEmpty)
        #expect(result.problems.count == 1)
    }

    @Test func scanDoesNotFollowSymlinks() throws {
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        try write(lockfile("go/go.sum"), to: "app/go.sum", in: root)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("app/loop").path, withDestinationPath: root.path)
        let (components, problems) = LockfileScanner.scan(root: root.path)
        #expect(components.count == 6)
        #expect(problems.isEmpty)
    }
}

@Suite("SBOM: CycloneDX 1.5")
struct CycloneDXTests {
    static let timestamp = Date(timeIntervalSince1970: 1_714_564_800)  // 2024-05-01T12:00:00Z

    static func allFixtureComponents() throws -> [Component] {
        try LockfileScanner.parse(fileName: "Package.resolved", data: lockfile("swift/Package-v1.resolved"))
            + LockfileScanner.parse(fileName: "Package.resolved", data: lockfile("swift/Package-v3.resolved"))
            + LockfileScanner.parse(fileName: "requirements.txt", data: lockfile("python/requirements.txt"))
            + LockfileScanner.parse(fileName: "web/package-lock.json", data: lockfile("npm/package-lock-v3.json"))
            + LockfileScanner.parse(fileName: "legacy/package-lock.json", data: lockfile("npm/package-lock-v1.json"))
            + LockfileScanner.parse(fileName: "Cargo.lock", data: lockfile("cargo/Cargo.lock"))
            + LockfileScanner.parse(fileName: "go.sum", data: lockfile("go/go.sum"))
    }

    @Test func documentShape() throws {
        let components = try Self.allFixtureComponents()
        let data = CycloneDX.document(name: "shop-api", version: "1.4.0", components: components, timestamp: Self.timestamp)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["bomFormat"] as? String == "CycloneDX")
        #expect(json["specVersion"] as? String == "1.5")
        #expect(json["version"] as? Int == 1)
        let serial = try #require(json["serialNumber"] as? String)
        #expect(serial.wholeMatch(of: /urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/) != nil)
        let metadata = try #require(json["metadata"] as? [String: Any])
        #expect(metadata["timestamp"] as? String == "2024-05-01T12:00:00Z")
        let app = try #require(metadata["component"] as? [String: Any])
        #expect(app["type"] as? String == "application")
        #expect(app["name"] as? String == "shop-api")
        #expect(app["version"] as? String == "1.4.0")
        let tools = try #require((metadata["tools"] as? [String: Any])?["components"] as? [[String: Any]])
        #expect(tools.first?["name"] as? String == "slipway")

        let list = try #require(json["components"] as? [[String: Any]])
        let refs = list.compactMap { $0["bom-ref"] as? String }
        #expect(refs.count == list.count)
        #expect(refs == refs.sorted())
        #expect(Set(refs).count == refs.count)
        // minimist@1.2.5 is in both npm lockfiles: listed once, with both sources.
        #expect(Set(refs) == Set(components.map(\.purl)))
        let minimist = try #require(list.first { $0["bom-ref"] as? String == "pkg:npm/minimist@1.2.5" })
        let sources = (minimist["properties"] as? [[String: String]] ?? []).filter { $0["name"] == "slipway:sourceFile" }.compactMap { $0["value"] }
        #expect(sources == ["legacy/package-lock.json", "web/package-lock.json"])
        let lodash = try #require(list.first { $0["bom-ref"] as? String == "pkg:npm/lodash@4.17.20" })
        #expect(lodash["purl"] as? String == "pkg:npm/lodash@4.17.20")
        #expect(lodash["type"] as? String == "library")
        #expect((lodash["hashes"] as? [[String: String]])?.first?["alg"] == "SHA-512")

        let dependencies = try #require(json["dependencies"] as? [[String: Any]])
        let root = try #require(dependencies.first { $0["ref"] as? String == app["bom-ref"] as? String })
        #expect((root["dependsOn"] as? [String])?.count == refs.count)
    }

    @Test func documentIsDeterministic() throws {
        let components = try Self.allFixtureComponents()
        let a = CycloneDX.document(name: "shop-api", version: "1.4.0", components: components, timestamp: Self.timestamp)
        let b = CycloneDX.document(name: "shop-api", version: "1.4.0", components: components.reversed(), timestamp: Self.timestamp)
        #expect(a == b)
        let other = CycloneDX.document(name: "shop-api", version: "1.4.1", components: components, timestamp: Self.timestamp)
        let serial = { (data: Data) in (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["serialNumber"] as? String }
        #expect(serial(a) != nil)
        #expect(serial(a) != serial(other))
        let fewer = CycloneDX.document(name: "shop-api", version: "1.4.0", components: Array(components.dropFirst()), timestamp: Self.timestamp)
        #expect(serial(a) != serial(fewer))
        // Sorted keys: "bomFormat" precedes "components" precedes "specVersion" in the bytes.
        let text = String(decoding: a, as: UTF8.self)
        let bomFormat = try #require(text.range(of: "\"bomFormat\""))
        let specVersion = try #require(text.range(of: "\"specVersion\""))
        #expect(bomFormat.lowerBound < specVersion.lowerBound)
        #expect(!text.contains("\\/"))
    }

    @Test func uuidV5MatchesRFC4122() {
        // python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, 'https://slipway.dev/sbom'))"
        #expect(CycloneDX.uuidV5(namespace: CycloneDX.urlNamespace, name: "https://slipway.dev/sbom") == "2d24ef62-231c-5eea-b931-85546818f9f8")
        #expect(CycloneDX.uuidV5(namespace: CycloneDX.urlNamespace, name: "") == "1b4db7eb-4057-5ddf-91e0-36dec72071f5")
        // FIPS 180 test vector.
        let digest = CycloneDX.sha1(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(digest == "a9993e364706816aba3e25717850c26c9cd0d89d")
        let long = CycloneDX.sha1(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(long == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
    }

    @Test func invalidHashesAreLeftOut() throws {
        let components = [
            Component(ecosystem: .npm, name: "left-pad", version: "1.3.0", sourceFile: "package-lock.json",
                      hashes: ["SHA-512": "nothex", "SHA-256": String(repeating: "ab", count: 32), "WHIRLPOOL": String(repeating: "0", count: 128)]),
        ]
        let data = CycloneDX.document(name: "x", version: "1", components: components, timestamp: Self.timestamp)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let hashes = (json["components"] as? [[String: Any]])?.first?["hashes"] as? [[String: String]]
        #expect(hashes == [["alg": "SHA-256", "content": String(repeating: "ab", count: 32)]])
    }

    @Test func validatesAgainstTheCycloneDX15Schema() throws {
        let components = try Self.allFixtureComponents()
        try expectSchemaValid(CycloneDX.document(name: "shop-api", version: "1.4.0", components: components, timestamp: Self.timestamp, toolVersion: "0.1.0"))
        // Edge cases: no components at all; names needing escapes.
        try expectSchemaValid(CycloneDX.document(name: "empty", version: "0.0.0", components: [], timestamp: Self.timestamp))
        try expectSchemaValid(CycloneDX.document(name: "we ird/\"name\"", version: "1.0.0+build.7", components: [
            Component(ecosystem: .npm, name: "@scope/pkg", version: "1.0.0-beta.1", sourceFile: "a b/package-lock.json"),
        ], timestamp: Self.timestamp))
    }

    @Test func schemaValidatorRejectsAnInvalidDocument() throws {
        var json = try #require(try JSONSerialization.jsonObject(with: CycloneDX.document(name: "x", version: "1", components: [], timestamp: Self.timestamp)) as? [String: Any])
        json["specVersion"] = "9.9"
        json["unexpected"] = true
        let status = try runValidator(JSONSerialization.data(withJSONObject: json))
        #expect(status.code == 1, "validator output: \(status.output)")
    }

    private func expectSchemaValid(_ data: Data, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let status = try runValidator(data)
        if status.code == 77 {
            Issue.record("the CycloneDX JSON schema validator is not installed: run `pip install 'cyclonedx-python-lib[json-validation]'` (CI installs it). \(status.output)",
                         sourceLocation: sourceLocation)
            return
        }
        #expect(status.code == 0, "BOM is not valid CycloneDX 1.5:\n\(status.output)", sourceLocation: sourceLocation)
    }

    private func runValidator(_ data: Data) throws -> (code: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-bom-\(UUID().uuidString).json")
        try data.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", fixturesDirectory.appendingPathComponent("validate_cyclonedx.py").path, file.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}

