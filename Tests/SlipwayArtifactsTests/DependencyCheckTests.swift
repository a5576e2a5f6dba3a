import Foundation
import Testing
@testable import SlipwayArtifacts

private let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

private func advisoryFile(_ relative: String) throws -> Data {
    try Data(contentsOf: fixturesDirectory.appendingPathComponent("advisories").appendingPathComponent(relative))
}

private func lockfileComponents(_ fileName: String, _ relative: String) throws -> [Component] {
    let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("lockfiles").appendingPathComponent(relative))
    return try LockfileScanner.parse(fileName: fileName, data: data)
}

private func npm(_ name: String, _ version: String) -> Component {
    Component(ecosystem: .npm, name: name, version: version, sourceFile: "package-lock.json")
}

private func advisory(_ ecosystem: String = "npm", _ package: String = "pkg", events: [RangeEvent], type: AffectedRange.Kind = .ecosystem,
                      versions: [String] = []) -> Advisory {
    Advisory(id: "TEST-1", summary: "test", severity: .high, ecosystem: ecosystem, package: package,
             ranges: [AffectedRange(type: type, events: events)], versions: versions)
}

/// Whether `version` of a package is affected by a single range.
private func affected(_ version: String, _ events: [RangeEvent], ecosystem: Ecosystem = .npm, type: AffectedRange.Kind = .ecosystem) -> Bool {
    let component = Component(ecosystem: ecosystem, name: "pkg", version: version, sourceFile: "lock")
    return !DependencyCheck.check(components: [component], advisories: [advisory(ecosystem.rawValue, "pkg", events: events, type: type)]).isEmpty
}

@Suite("Dependency check: advisory files")
struct AdvisoryLoadingTests {
    @Test func arrayOfGitHubAdvisories() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("github-npm.json"))
        // 7 entries, one withdrawn.
        #expect(advisories.map(\.id) == ["GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm", "GHSA-xvch-5gv4-984h", "GHSA-74fj-2j2h-c42q",
                                         "GHSA-4w2v-q235-vp99", "GHSA-cph5-m8f7-6c5x"])
        let lodash = try #require(advisories.first)
        #expect(lodash.aliases == ["CVE-2020-8203"])
        #expect(lodash.summary == "Prototype Pollution in lodash")
        #expect(lodash.severity == .high)
        #expect(lodash.ecosystem == "npm")
        #expect(lodash.package == "lodash")
        #expect(lodash.ranges == [AffectedRange(type: .ecosystem, events: [.introduced("3.7.0"), .fixed("4.17.19")])])
        #expect(advisories[2].severity == .critical)
        #expect(advisories[3].ranges.first?.events == [.introduced("1.10.0"), .lastAffected("1.14.0")])
        #expect(advisories[3].severity == .moderate)
    }

    @Test func singlePyPIEntryWithVersionsList() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("pypi-requests.json"))
        #expect(advisories.count == 1)
        let requests = try #require(advisories.first)
        #expect(requests.id == "PYSEC-2023-74")
        #expect(requests.aliases == ["CVE-2023-32681", "GHSA-j8r2-6x86-q33q"])
        #expect(requests.versions.count == 66)
        #expect(requests.ranges.map(\.type) == [.git, .ecosystem])
        // No summary: the first line of details stands in.
        #expect(requests.summary.hasPrefix("Requests is a HTTP library."))
        // No database_specific.severity: computed from the CVSS vector (5.9? no: scope changed → 6.1).
        #expect(requests.severity == .moderate)
        #expect(requests.cvssVector == "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N")
    }

    @Test func osvBatchShape() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("osv-batch.json"))
        // GO-2022-1144 names two packages (stdlib and golang.org/x/net): two advisories with the same id.
        #expect(advisories.count == 12)
        #expect(advisories.filter { $0.id == "GO-2022-1144" }.map(\.package) == ["stdlib", "golang.org/x/net"])
        let nio = try #require(advisories.first { $0.id == "GHSA-w3f6-pc54-gfw7" })
        #expect(nio.ecosystem == "SwiftURL")
        #expect(nio.severity == .high)  // only a CVSS vector: 7.5
        let go = try #require(advisories.first { $0.id == "GO-2022-1144" })
        #expect(go.severity == .unknown)  // no severity at all
        #expect(advisories.first { $0.id == "RUSTSEC-2021-0003" }?.severity == .critical)
        // The OSV query API's paged shape works too.
        let batch = try JSONSerialization.jsonObject(with: advisoryFile("osv-batch.json")) as? [String: Any]
        let results = try JSONSerialization.data(withJSONObject: ["results": [["vulns": batch?["vulns"] ?? []], [:]]])
        #expect(try DependencyCheck.loadAdvisories(results) == advisories)
    }

    @Test func databaseSpecificSeverityWinsOverCVSS() throws {
        let json = """
        {"id": "GHSA-test", "summary": "s", "database_specific": {"severity": "LOW"},
         "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
         "affected": [{"package": {"ecosystem": "npm", "name": "a"}, "versions": ["1.0.0"]},
                      {"package": {"ecosystem": "npm", "name": "b"}, "versions": ["1.0.0"], "database_specific": {"severity": "critical"}}]}
        """
        let advisories = try DependencyCheck.loadAdvisories(Data(json.utf8))
        #expect(advisories.map(\.severity) == [.low, .critical])
        let unknownWord = try DependencyCheck.loadAdvisories(Data("""
        {"id": "X", "database_specific": {"severity": "SEVERE"}, "severity": [{"type": "CVSS_V3", "score": "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"}],
         "affected": [{"package": {"ecosystem": "npm", "name": "a"}}]}
        """.utf8))
        #expect(unknownWord.first?.severity == .moderate)  // falls back to CVSS 6.1
        // CVSS v4 / unparseable vectors only: unknown.
        let v4 = try DependencyCheck.loadAdvisories(Data("""
        {"id": "Y", "severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}, {"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"}],
         "affected": [{"package": {"ecosystem": "npm", "name": "a"}}]}
        """.utf8))
        #expect(v4.first?.severity == .unknown)
    }

    @Test("malformed advisory files throw", arguments: ["truncated.json", "not-osv.json", "affected-not-array.json", "unknown-event.json", "missing-id.json"])
    func malformedFixtures(file: String) throws {
        let data = try advisoryFile("malformed/" + file)
        #expect(throws: AdvisoryError.self) { try DependencyCheck.loadAdvisories(data) }
    }

    @Test func garbageAndEveryTruncationThrowWithoutCrashing() throws {
        var bytes: [UInt8] = []
        var state: UInt32 = 2_463_534_242
        for _ in 0..<4096 {
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            bytes.append(UInt8(truncatingIfNeeded: state))
        }
        #expect(throws: AdvisoryError.self) { try DependencyCheck.loadAdvisories(Data(bytes)) }
        for text in ["", "null", "42", "\"GHSA\"", "{}", "{\"vulns\": 3}", "[1, 2]", "[{\"id\": 7}]",
                     "{\"id\": \"X\", \"affected\": [{\"package\": {\"ecosystem\": \"npm\", \"name\": \"a\"}, \"ranges\": 1}]}",
                     "{\"id\": \"X\", \"affected\": [{\"package\": {\"ecosystem\": \"npm\", \"name\": \"a\"}, \"ranges\": [{\"type\": \"SEMVER\"}]}]}",
                     "{\"id\": \"X\", \"affected\": [{\"package\": {\"ecosystem\": \"npm\", \"name\": \"a\"}, \"versions\": \"1.0\"}]}"] {
            #expect(throws: AdvisoryError.self, "\(text)") { try DependencyCheck.loadAdvisories(Data(text.utf8)) }
        }
        let valid = try advisoryFile("github-npm.json")
        for length in stride(from: 0, to: valid.count - 2, by: 13) {
            #expect(throws: AdvisoryError.self) { try DependencyCheck.loadAdvisories(valid.prefix(length)) }
        }
    }

    @Test func toleratedOddities() throws {
        // Unknown range types are skipped; affected entries without a package are skipped; no affected at all is fine.
        let json = """
        [{"id": "A", "affected": [{"ranges": [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "0"}]}]},
                                  {"package": {"ecosystem": "npm", "name": "a"}, "ranges": [{"type": "FUTURE", "events": []}]}]},
         {"id": "B", "summary": "no affected"}]
        """
        let advisories = try DependencyCheck.loadAdvisories(Data(json.utf8))
        #expect(advisories.count == 1)
        #expect(advisories.first?.ranges == [])
    }
}

@Suite("Dependency check: matching")
struct DependencyMatchingTests {
    @Test func npmWorkspaceAgainstGitHubAdvisories() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("github-npm.json"))
        let components = try lockfileComponents("web/package-lock.json", "npm/package-lock-v3.json")
            + lockfileComponents("legacy/package-lock.json", "npm/package-lock-v1.json")
        let findings = DependencyCheck.check(components: components, advisories: advisories)
        let summary = findings.map { "\($0.advisoryID) \($0.component.name)@\($0.component.version) \($0.severity) fix=\($0.fixedIn ?? "-") \($0.component.sourceFile)" }
        #expect(summary == [
            // minimist 1.2.5 is in both lockfiles; 1.2.8 is fixed. Second range (1.0.0..<1.2.6) gives the fix.
            "GHSA-xvch-5gv4-984h minimist@1.2.5 critical fix=1.2.6 legacy/package-lock.json",
            "GHSA-xvch-5gv4-984h minimist@1.2.5 critical fix=1.2.6 web/package-lock.json",
            // 4.17.20 is below the 4.17.21 fix; GHSA-p6mc (fixed 4.17.19) does not apply.
            "GHSA-35jh-r3h4-6jhm lodash@4.17.20 high fix=4.17.21 web/package-lock.json",
            // axios 0.21.1 == fixed of GHSA-4w2v: not affected; still below 0.21.2.
            "GHSA-cph5-m8f7-6c5x axios@0.21.1 high fix=0.21.2 legacy/package-lock.json",
            // last_affected is inclusive and gives no fix version.
            "GHSA-74fj-2j2h-c42q follow-redirects@1.14.0 moderate fix=- legacy/package-lock.json",
        ])
        #expect(findings.first?.aliases == ["CVE-2021-44906"])
        #expect(findings.first?.summary == "Prototype Pollution in minimist")
        // The withdrawn express advisory matches nothing.
        #expect(!findings.contains { $0.component.name == "express" })
    }

    @Test func polyglotWorkspaceAgainstOSVBatch() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("osv-batch.json"))
            + DependencyCheck.loadAdvisories(advisoryFile("pypi-requests.json"))
        let components = try lockfileComponents("requirements.txt", "python/requirements.txt")
            + lockfileComponents("requirements-dev.txt", "python/requirements-dev.txt")
            + lockfileComponents("Cargo.lock", "cargo/Cargo.lock")
            + lockfileComponents("go.sum", "go/go.sum")
            + lockfileComponents("Package.resolved", "swift/Package-v3.resolved")
        let findings = DependencyCheck.check(components: components, advisories: advisories)
        let summary = findings.map { "\($0.advisoryID) \($0.component.name)@\($0.component.version) \($0.severity) fix=\($0.fixedIn ?? "-")" }
        #expect(summary == [
            "RUSTSEC-2021-0003 smallvec@0.6.13 critical fix=0.6.14",
            "GHSA-ffqj-6fqr-9h24 pyjwt@1.7.1 high fix=2.4.0",                       // PyJWT → pyjwt (PEP 503)
            "GHSA-w3f6-pc54-gfw7 github.com/apple/swift-nio-http2@1.19.1 high fix=1.19.2",  // severity from CVSS only
            "GHSA-7h4p-27mh-hmrw django@4.2.3 moderate fix=4.2.5",                  // Django → django; second range
            "RUSTSEC-2020-0071 time@0.1.45 moderate fix=0.2.23",
            "GHSA-0000-docker-incompatible github.com/docker/docker@v20.10.24+incompatible low fix=20.10.27+incompatible",
            "GO-2022-1144 golang.org/x/net@v0.0.0-20220722155237-a158d28d115b unknown fix=0.4.0",  // pseudo-version < 0.4.0
        ])
        // Boundaries: requests 2.31.0 (== fixed, not in versions), urllib3 1.26.5 (== fixed), gin v1.9.0 (== fixed),
        // docker v20.10.24+incompatible against "fixed 20.10.24" (build metadata ignored).
        for name in ["requests", "urllib3", "github.com/gin-gonic/gin"] {
            #expect(!findings.contains { $0.component.name == name }, "\(name)")
        }
        #expect(!findings.contains { $0.advisoryID == "GHSA-jq35-85cj-fj4p" || $0.advisoryID == "GHSA-232p-vwff-86mp" })
    }

    @Test func pypiVersionsListAndNameNormalization() throws {
        let advisories = try DependencyCheck.loadAdvisories(advisoryFile("pypi-requests.json"))
        func check(_ name: String, _ version: String) -> [DependencyFinding] {
            DependencyCheck.check(components: [Component(ecosystem: .pypi, name: name, version: version, sourceFile: "requirements.txt")],
                                  advisories: advisories)
        }
        #expect(check("requests", "2.28.1").first?.fixedIn == "2.31.0")
        #expect(check("Requests", "2.3.0").count == 1)           // == introduced
        #expect(check("requests", "2.2.1").isEmpty)              // before introduced
        #expect(check("requests", "2.31.0").isEmpty)             // == fixed
        #expect(check("requests", "2.31.0rc1").count == 1)       // pre-release of the fix is still affected (range)
        #expect(check("requests", "2.28.1.post1").count == 1)    // post release of an affected version, via the range
        #expect(check("requests", "2.3").count == 1)             // PEP 440: 2.3 == 2.3.0 (versions list)
        // Same name in another ecosystem: no match.
        #expect(DependencyCheck.check(components: [npm("requests", "2.28.1")], advisories: advisories).isEmpty)
    }

    @Test func versionsListOnly() {
        let only = Advisory(id: "PYSEC-X", severity: .low, ecosystem: "PyPI", package: "Foo_Bar", versions: ["1.0", "1.1"])
        let component = { (version: String) in Component(ecosystem: .pypi, name: "foo-bar", version: version, sourceFile: "r.txt") }
        #expect(DependencyCheck.check(components: [component("1.1")], advisories: [only]).map(\.fixedIn) == [nil])
        #expect(DependencyCheck.check(components: [component("1.2")], advisories: [only]).isEmpty)
    }

    @Test func rangeBoundaries() {
        let events: [RangeEvent] = [.introduced("1.2.0"), .fixed("1.4.0")]
        #expect(!affected("1.1.9", events))
        #expect(affected("1.2.0", events))        // == introduced: affected
        #expect(affected("1.3.99", events))
        #expect(!affected("1.4.0", events))       // == fixed: not affected
        #expect(!affected("2.0.0", events))
        #expect(affected("1.4.0-rc.1", events))   // pre-release of the fix is below it
        #expect(!affected("1.2.0-beta.1", events)) // pre-release of the introducing version is below it
        #expect(affected("v1.3.0", events, ecosystem: .go, type: .semver))  // Go's leading v
        #expect(!affected("v1.4.0", events, ecosystem: .go, type: .semver))
    }

    @Test func introducedZeroAndLastAffected() {
        #expect(affected("0.0.1", [.introduced("0")]))                                  // no fix at all
        #expect(affected("0.0.0-alpha", [.introduced("0"), .fixed("1.0.0")]))            // "0" is the very beginning
        let last: [RangeEvent] = [.introduced("0"), .lastAffected("2.1.0")]
        #expect(affected("2.1.0", last))          // last_affected is inclusive
        #expect(!affected("2.1.1", last))
        #expect(!affected("2.2.0-rc.1", last))
        #expect(affected("2.1.0-rc.1", last))
    }

    @Test func multipleIntervalsAndUnsortedEvents() {
        let sorted: [RangeEvent] = [.introduced("0"), .fixed("0.2.4"), .introduced("1.0.0"), .fixed("1.2.6")]
        let shuffled: [RangeEvent] = [.fixed("1.2.6"), .introduced("1.0.0"), .fixed("0.2.4"), .introduced("0")]
        for events in [sorted, shuffled] {
            #expect(affected("0.2.3", events))
            #expect(!affected("0.2.4", events))
            #expect(!affected("0.9.9", events))
            #expect(affected("1.0.0", events))
            #expect(affected("1.2.5", events))
            #expect(!affected("1.2.6", events))
        }
        // fixedIn is the lowest fix above the version.
        let findings = DependencyCheck.check(components: [npm("pkg", "0.1.0")], advisories: [advisory(events: shuffled)])
        #expect(findings.first?.fixedIn == "0.2.4")
    }

    @Test func limitEvent() {
        let events: [RangeEvent] = [.introduced("1.0.0"), .limit("1.5.0")]
        #expect(affected("1.4.0", events))
        #expect(!affected("1.5.0", events))
    }

    @Test func gitRangesAreNotEvaluated() {
        #expect(!affected("1.0.0", [.introduced("0"), .fixed("74ea7cf7a6a27a4eeb2ae24e162bcc942a6706d5")], type: .git))
    }

    @Test func pypiPreReleaseRanges() {
        let events: [RangeEvent] = [.introduced("4.2a1"), .fixed("4.2.5")]
        #expect(affected("4.2a1", events, ecosystem: .pypi))
        #expect(affected("4.2b2", events, ecosystem: .pypi))
        #expect(affected("4.2rc1", events, ecosystem: .pypi))
        #expect(affected("4.2", events, ecosystem: .pypi))
        #expect(affected("4.2.5rc1", events, ecosystem: .pypi))
        #expect(affected("4.2.5.dev0", events, ecosystem: .pypi))
        #expect(!affected("4.2.dev1", events, ecosystem: .pypi))  // dev release sorts before a1
        #expect(!affected("4.1.99", events, ecosystem: .pypi))
        #expect(!affected("4.2.5", events, ecosystem: .pypi))
        #expect(!affected("4.2.5.post1", events, ecosystem: .pypi))
        #expect(!affected("1!1.0", [.introduced("0"), .fixed("5.0")], ecosystem: .pypi))  // epoch 1 beats any epoch-0 version
    }

    @Test func swiftURLNamesMatchNormalized() {
        let advisory = advisory("SwiftURL", "https://github.com/Apple/swift-nio-http2.git", events: [.introduced("0"), .fixed("1.19.2")], type: .semver)
        let component = Component(ecosystem: .swift, name: "github.com/apple/swift-nio-http2", version: "1.19.1", sourceFile: "Package.resolved")
        #expect(DependencyCheck.check(components: [component], advisories: [advisory]).count == 1)
    }

    @Test func exactNamesOutsidePyPI() {
        let events: [RangeEvent] = [.introduced("0")]
        #expect(DependencyCheck.check(components: [npm("Lodash", "1.0.0")], advisories: [advisory("npm", "lodash", events: events)]).isEmpty)
        #expect(DependencyCheck.check(components: [npm("lodash-es", "1.0.0")], advisories: [advisory("npm", "lodash", events: events)]).isEmpty)
        #expect(DependencyCheck.check(components: [npm("@scope/lodash", "1.0.0")], advisories: [advisory("npm", "@scope/lodash", events: events)]).count == 1)
    }

    @Test func duplicateAdvisoryEntriesGiveOneFindingWithTheWorstSeverity() {
        var low = advisory(events: [.introduced("0"), .fixed("2.0.0")])
        low.severity = .low
        var critical = advisory(events: [.introduced("1.0.0"), .fixed("1.5.0")])
        critical.severity = .critical
        let findings = DependencyCheck.check(components: [npm("pkg", "1.2.0")], advisories: [low, critical])
        #expect(findings.count == 1)
        #expect(findings.first?.severity == .critical)
        #expect(findings.first?.fixedIn == "2.0.0")
    }

    @Test func findingRoundTripsThroughJSON() throws {
        let finding = DependencyFinding(advisoryID: "GHSA-35jh-r3h4-6jhm", aliases: ["CVE-2021-23337"], component: npm("lodash", "4.17.20"),
                                        severity: .high, summary: "Command Injection in lodash", fixedIn: "4.17.21")
        let data = try JSONEncoder().encode(finding)
        #expect(try JSONDecoder().decode(DependencyFinding.self, from: data) == finding)
    }
}

@Suite("Dependency check: versions and severities")
struct VersionAndSeverityTests {
    @Test func severityNames() {
        #expect(Severity(name: "LOW") == .low)
        #expect(Severity(name: "moderate") == .moderate)
        #expect(Severity(name: "Medium") == .moderate)
        #expect(Severity(name: "HIGH") == .high)
        #expect(Severity(name: "critical") == .critical)
        #expect(Severity(name: "severe") == nil)
        #expect(Severity.allCases.sorted() == [.unknown, .low, .moderate, .high, .critical])
        #expect(Severity.high >= .moderate)
        #expect(Severity.low < .critical)
    }

    /// Expected scores from the CVSS v3.1 specification's formula, cross-checked with the FIRST calculator and
    /// Python's `cvss` package.
    @Test("CVSS v3 base scores", arguments: [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, Severity.critical),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:L/I:L/A:N", 4.7, .moderate),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, .critical),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8, .high),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, .moderate),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4, .moderate),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6, .low),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0, .unknown),
        ("CVSS:3.1/AV:A/AC:L/PR:H/UI:N/S:C/C:H/I:N/A:L", 6.9, .moderate),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H", 5.9, .moderate),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H/E:P/RL:O", 7.5, .high),  // temporal metrics ignored
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:C/C:L/I:L/A:N", 5.5, .moderate),
    ])
    func cvss(vector: String, score: Double, severity: Severity) throws {
        let computed = try #require(CVSS.baseScore(vector: vector))
        #expect(computed == score)
        #expect(CVSS.severity(score: computed) == severity)
    }

    @Test func invalidCVSSVectors() {
        for vector in ["", "CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                       "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", "CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                       "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:X/C:H/I:H/A:H",
                       "CVSS:3.1/AV:N//AC:L"] {
            #expect(CVSS.baseScore(vector: vector) == nil, "\(vector)")
        }
    }

    @Test func severityBands() {
        #expect(CVSS.severity(score: 0.1) == .low)
        #expect(CVSS.severity(score: 3.9) == .low)
        #expect(CVSS.severity(score: 4.0) == .moderate)
        #expect(CVSS.severity(score: 6.9) == .moderate)
        #expect(CVSS.severity(score: 7.0) == .high)
        #expect(CVSS.severity(score: 8.9) == .high)
        #expect(CVSS.severity(score: 9.0) == .critical)
        #expect(CVSS.severity(score: 10.0) == .critical)
    }

    @Test func roundUpIsRobustToFloatingPointNoise() {
        #expect(CVSS.roundUp(4.02) == 4.1)
        #expect(CVSS.roundUp(4.0) == 4.0)
        #expect(CVSS.roundUp(4.000_000_000_1) == 4.0)
        #expect(CVSS.roundUp(7.0000001) == 7.0)
    }

    @Test func semverPrecedenceFromTheSpec() {
        // https://semver.org/#spec-item-11
        let ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
                       "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0"]
        for (i, lhs) in ordered.enumerated() {
            for (j, rhs) in ordered.enumerated() {
                let expected: ComparisonResult = i < j ? .orderedAscending : (i == j ? .orderedSame : .orderedDescending)
                #expect(VersionScheme.semver.compare(lhs, rhs) == expected, "\(lhs) vs \(rhs)")
            }
        }
        #expect(VersionScheme.semver.compare("v1.2.3", "1.2.3") == .orderedSame)
        #expect(VersionScheme.semver.compare("1.2.3+build.5", "1.2.3+build.9") == .orderedSame)
        #expect(VersionScheme.semver.compare("1.2", "1.2.0") == .orderedSame)
        #expect(VersionScheme.semver.compare("v0.0.0-20220722155237-a158d28d115b", "0.4.0") == .orderedAscending)
        #expect(VersionScheme.semver.compare("1.0.0-2", "1.0.0-10") == .orderedAscending)  // numeric identifiers numerically
        #expect(VersionScheme.semver.compare("1.0.0-10", "1.0.0-a") == .orderedAscending)  // numeric below alphanumeric
        #expect(VersionScheme.semver.compare("18446744073709551616.0.0", "18446744073709551615.0.0") == .orderedDescending)
    }

    @Test func pep440OrderingFromThePEP() {
        // The example ordering in PEP 440, "Summary of permitted suffixes and relative ordering".
        let ordered = ["1.dev0", "1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12", "1.0b1.dev456", "1.0b2",
                       "1.0b2.post345.dev456", "1.0b2.post345", "1.0b2-346", "1.0c1.dev456", "1.0c1", "1.0rc2", "1.0c3", "1.0",
                       "1.0.post456.dev34", "1.0.post456", "1.0.15", "1.1.dev1"]
        for (i, lhs) in ordered.enumerated() {
            for (j, rhs) in ordered.enumerated() {
                let expected: ComparisonResult = i < j ? .orderedAscending : (i == j ? .orderedSame : .orderedDescending)
                #expect(VersionScheme.pep440.compare(lhs, rhs) == expected, "\(lhs) vs \(rhs)")
            }
        }
        #expect(VersionScheme.pep440.compare("1.0", "1.0.0") == .orderedSame)
        #expect(VersionScheme.pep440.compare("1.0-alpha.1", "1.0a1") == .orderedSame)
        #expect(VersionScheme.pep440.compare("v2.0", "2.0") == .orderedSame)
        #expect(VersionScheme.pep440.compare("1.0+local.1", "1.0") == .orderedDescending)
        #expect(VersionScheme.pep440.compare("2.0", "1!1.0") == .orderedAscending)
        #expect(PEP440Version("1.0.0.0.0") != nil)
        #expect(PEP440Version("not-a-version") == nil)
    }

    @Test func unparseableVersionsStillCompareWithoutCrashing() {
        #expect(VersionScheme.semver.compare("2023.10.abc", "2023.9.zzz") == .orderedDescending)
        #expect(VersionScheme.pep440.compare("", "1.0") == .orderedAscending)
        #expect(VersionScheme.semver.compare("a", "a") == .orderedSame)
        #expect(!affected("garbage!!", [.introduced("1.0.0"), .fixed("2.0.0")]))
    }
}
