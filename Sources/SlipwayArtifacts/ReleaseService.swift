import Crypto
import Foundation
import SlipwayCore
import SlipwayStore

/// Releases, verifies and retires artifacts: the content-addressed store, the signing keys, the
/// provenance envelopes and SBOMs, and their metadata in the database.
public struct ReleaseService: Sendable {
    public let store: ReleaseStore
    public let artifacts: ArtifactStore
    public let keys: KeyRing
    public static let slipwayVersion = "0.1.0"

    /// `dataRoot` is the project's `.slipway` directory.
    public init(store: ReleaseStore, dataRoot: String) {
        self.store = store
        self.artifacts = ArtifactStore(root: dataRoot + "/artifacts")
        self.keys = KeyRing(directory: dataRoot + "/keys")
    }

    public func releaseDirectory(name: String, version: String) -> String {
        artifacts.root + "/releases/\(name)/\(version)"
    }

    /// Facts about the run that produced a release, for its provenance.
    public struct BuildContext: Sendable {
        public var runID: Int64
        public var runNumber: Int64
        public var job: String
        public var commit: String?
        public var branch: String?
        public var event: String
        public var dirty: Bool
        public var pipelineFile: String
        public var pipelineText: String
        public var jobDefinition: Data
        /// Files the job received from its needs: path → sha256.
        public var materials: [String: String]
        public var startedOn: Date

        public init(runID: Int64, runNumber: Int64, job: String, commit: String?, branch: String?, event: String, dirty: Bool, pipelineFile: String, pipelineText: String, jobDefinition: Data, materials: [String: String], startedOn: Date) {
            self.runID = runID
            self.runNumber = runNumber
            self.job = job
            self.commit = commit
            self.branch = branch
            self.event = event
            self.dirty = dirty
            self.pipelineFile = pipelineFile
            self.pipelineText = pipelineText
            self.jobDefinition = jobDefinition
            self.materials = materials
            self.startedOn = startedOn
        }
    }

    /// Releases `spec.path` (relative to `workspace`) as `spec.name@spec.version`. Releasing the same
    /// content again is a no-op; other content under an existing version is refused.
    public func release(_ spec: ReleaseSpec, workspace: String, build: BuildContext) throws(ArtifactsError) -> (ReleaseRecord, created: Bool) {
        guard ReleaseSpec.isValidName(spec.name) else { throw ArtifactsError("invalid release name '\(spec.name)': use lowercase letters, digits, '.', '-' and '_'") }
        guard ReleaseSpec.isValidVersion(spec.version) else { throw ArtifactsError("invalid release version '\(spec.version)': use letters, digits, '.', '-', '+' and '_'") }
        let path = spec.path.hasSuffix("/") && spec.path.count > 1 ? String(spec.path.dropLast()) : spec.path
        guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { throw ArtifactsError("release path '\(spec.path)' leaves the workspace") }
        let blob = try artifacts.ingest(path: workspace + "/" + path)
        let existing: ReleaseRecord?
        do { existing = try store.release(name: spec.name, version: spec.version) } catch { throw ArtifactsError(error.message) }
        if let existing {
            if existing.digest == blob.digest { return (existing, false) }
            throw ArtifactsError("\(spec.name)@\(spec.version) was already released with digest \(existing.digest.prefix(16))… (run #\(existing.runNumber)); this content has digest \(blob.digest.prefix(16))… — a version never changes content: bump the version")
        }
        var sbomDigest: String?
        if spec.sbom {
            let (components, _) = LockfileScanner.scan(root: workspace)
            let document = CycloneDX.document(name: spec.name, version: spec.version, components: components, timestamp: build.startedOn)
            let sbomBlob = try artifacts.ingest(data: document)
            sbomDigest = sbomBlob.digest
        }
        let materials = build.materials.keys.sorted().map { ProvenanceStatement.ResourceDescriptor(name: $0, digest: ["sha256": build.materials[$0]!]) }
        let statement = ProvenanceStatement(.init(
            name: spec.name, version: spec.version, digest: blob.digest,
            pipelineFile: build.pipelineFile, pipelineDigest: Self.hex(Data(build.pipelineText.utf8)),
            commit: build.commit, branch: build.branch, event: build.event, dirty: build.dirty,
            runID: build.runID, runNumber: build.runNumber, job: build.job,
            jobDefinition: JSONValue.parse(build.jobDefinition) ?? .null, materials: materials,
            sbomDigest: sbomDigest, startedOn: build.startedOn, finishedOn: Date(), slipwayVersion: Self.slipwayVersion))
        let (keyID, key) = try keys.signingKey()
        let envelope = try DSSEEnvelope.sign(payload: statement.encoded(), payloadType: DSSEEnvelope.inTotoPayloadType, keyID: keyID, key: key)
        let envelopeData = envelope.encoded()
        let directory = releaseDirectory(name: spec.name, version: spec.version)
        let envelopePath = directory + "/provenance.dsse.json"
        try ArtifactStore.atomicWrite(envelopeData, to: envelopePath)
        if let sbomDigest, let sbom = artifacts.data(sbomDigest) {
            try ArtifactStore.atomicWrite(sbom, to: directory + "/sbom.cdx.json")
        }
        // The database row comes last: until it exists the release does not, so a crash leaves no dangling metadata.
        let record = ReleaseRecord(name: spec.name, version: spec.version, digest: blob.digest, size: blob.size, kind: blob.kind.rawValue,
                                   commit: build.commit, runID: build.runID, runNumber: build.runNumber, job: build.job,
                                   keyID: keyID, envelopePath: envelopePath, envelopeDigest: Self.hex(envelopeData),
                                   sbomDigest: sbomDigest, pipelineDigest: Self.hex(Data(build.pipelineText.utf8)))
        do { return try store.recordRelease(record) } catch { throw ArtifactsError(error.message) }
    }

    static func hex(_ data: Data) -> String { SHA256.hash(data: data).hexString }

    // MARK: Verification

    public struct Verification: Sendable {
        public struct Check: Sendable {
            public var name: String
            public var passed: Bool
            public var detail: String
        }
        public var release: ReleaseRecord?
        public var checks: [Check]
        public var passed: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }
        public var failure: String? { checks.first { !$0.passed }.map { "\($0.name): \($0.detail)" } }
    }

    /// Checks digest, signature, provenance and SBOM of `name@version`; stops at the first failure.
    public func verify(name: String, version: String) -> Verification {
        var checks: [Verification.Check] = []
        func fail(_ name: String, _ detail: String) -> Verification.Check { .init(name: name, passed: false, detail: detail) }
        func pass(_ name: String, _ detail: String) -> Verification.Check { .init(name: name, passed: true, detail: detail) }
        guard let release = try? store.release(name: name, version: version) else {
            return Verification(release: nil, checks: [fail("known", "\(name)@\(version) was never released here; `slipway artifacts ls` lists releases")])
        }
        var result = Verification(release: release, checks: checks)
        func finish(_ check: Verification.Check) -> Verification {
            checks.append(check)
            result.checks = checks
            return result
        }
        // 1. The content is what was released.
        guard let actual = try? artifacts.sha256(ofFile: artifacts.blobPath(release.digest)) else {
            return finish(fail("digest", "the blob \(release.digest.prefix(16))… is missing from the store"))
        }
        guard actual == release.digest else {
            return finish(fail("digest", "the blob was modified: its content hashes to \(actual.prefix(16))…, the release recorded \(release.digest.prefix(16))…"))
        }
        checks.append(pass("digest", "sha256:\(release.digest)"))
        // 2. The envelope is intact and signed by a trusted key.
        guard let envelopeData = FileManager.default.contents(atPath: release.envelopePath) else {
            return finish(fail("signature", "the provenance envelope \(release.envelopePath) is missing"))
        }
        guard let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: envelopeData) else {
            return finish(fail("signature", "the provenance envelope is not a valid DSSE envelope (it was modified or truncated)"))
        }
        guard envelope.payloadType == DSSEEnvelope.inTotoPayloadType else {
            return finish(fail("signature", "the envelope's payload type is '\(envelope.payloadType)', not \(DSSEEnvelope.inTotoPayloadType)"))
        }
        let signer: String
        do { signer = try envelope.verify(keys: keys) } catch { return finish(fail("signature", error.message)) }
        checks.append(pass("signature", "Ed25519 by key \(signer)"))
        // 3. The signed statement names this release and its digest.
        guard let payload = envelope.payloadData, let statement = try? JSONDecoder().decode(ProvenanceStatement.self, from: payload) else {
            return finish(fail("provenance", "the signed statement is not an in-toto statement"))
        }
        guard statement.type == ProvenanceStatement.statementType, statement.predicateType == ProvenanceStatement.slsaPredicateType else {
            return finish(fail("provenance", "unexpected statement type \(statement.type) / \(statement.predicateType)"))
        }
        let subjectName = ProvenanceStatement.subjectName(name: name, version: version)
        guard let subject = statement.subject.first(where: { $0.name == subjectName }) else {
            return finish(fail("provenance", "the statement is about \(statement.subject.map(\.name).joined(separator: ", ")), not \(subjectName)"))
        }
        guard subject.digest["sha256"] == release.digest else {
            return finish(fail("provenance", "the statement's subject digest \(subject.digest["sha256"]?.prefix(16) ?? "none")… differs from the release's \(release.digest.prefix(16))…"))
        }
        checks.append(pass("provenance", "SLSA v1 statement for \(subjectName), run #\(release.runNumber), commit \(release.commit?.prefix(12) ?? "none")"))
        // 4. The SBOM is the one the statement names.
        if let sbomDigest = release.sbomDigest {
            guard let sbomHash = try? artifacts.sha256(ofFile: artifacts.blobPath(sbomDigest)) else {
                return finish(fail("sbom", "the SBOM blob \(sbomDigest.prefix(16))… is missing"))
            }
            guard sbomHash == sbomDigest else { return finish(fail("sbom", "the SBOM was modified after release")) }
            guard statement.predicate.runDetails.byproducts.contains(where: { $0.digest["sha256"] == sbomDigest }) else {
                return finish(fail("sbom", "the signed statement does not name this SBOM"))
            }
            // The copy published beside the envelope is the one people read: it must be the signed one too.
            let published = releaseDirectory(name: name, version: version) + "/sbom.cdx.json"
            guard let publishedHash = try? artifacts.sha256(ofFile: published) else {
                return finish(fail("sbom", "the SBOM \(published) is missing"))
            }
            guard publishedHash == sbomDigest else {
                return finish(fail("sbom", "\(published) was modified after release: it hashes to \(publishedHash.prefix(16))…, the signed statement names \(sbomDigest.prefix(16))…"))
            }
            checks.append(pass("sbom", "CycloneDX sha256:\(sbomDigest.prefix(16))…"))
        }
        // 5. The envelope file is the one recorded (catches a swap for another validly signed envelope).
        guard Self.hex(envelopeData) == release.envelopeDigest else {
            return finish(fail("envelope", "the envelope file differs from the one recorded at release time"))
        }
        checks.append(pass("envelope", "sha256:\(release.envelopeDigest.prefix(16))…"))
        result.checks = checks
        return result
    }

    // MARK: Retention

    public struct CollectionReport: Sendable {
        public var removed: [ReleaseRecord] = []
        public var kept: [(ReleaseRecord, reason: String)] = []
        public var orphanBlobsRemoved = 0
        public var bytesFreed: Int64 = 0
    }

    /// Keeps the newest `keep` versions of each name and every version that is deployed or is the
    /// rollback target of an environment; removes the rest, and blobs no release refers to.
    public func collectGarbage(keep: Int, dryRun: Bool = false) throws(ArtifactsError) -> CollectionReport {
        var report = CollectionReport()
        let all: [ReleaseRecord]
        do { all = try store.releases(name: nil) } catch { throw ArtifactsError(error.message) }
        var byName: [String: [ReleaseRecord]] = [:]
        for release in all { byName[release.name, default: []].append(release) }
        // Per environment, the latest deployment is live and the one before it is the rollback target.
        var protected: [Int64: String] = [:]
        var latestPerEnvironment: [String: [(Date, Int64)]] = [:]
        for release in all {
            for deployment in (try? store.deployments(releaseID: release.id)) ?? [] {
                latestPerEnvironment[deployment.environment, default: []].append((deployment.createdAt, release.id))
            }
        }
        for (environment, entries) in latestPerEnvironment {
            var distinct: [Int64] = []
            for (_, id) in entries.sorted(by: { $0.0 > $1.0 }) where !distinct.contains(id) { distinct.append(id) }
            if let live = distinct.first { protected[live] = "deployed in \(environment)" }
            if distinct.count > 1 { protected[distinct[1]] = protected[distinct[1]] ?? "rollback target in \(environment)" }
        }
        var removedIDs = Set<Int64>()
        for (_, releases) in byName {
            for (index, release) in releases.enumerated() {
                if index < keep { report.kept.append((release, "among the newest \(keep)")); continue }
                if let reason = protected[release.id] { report.kept.append((release, reason)); continue }
                report.removed.append(release)
                removedIDs.insert(release.id)
            }
        }
        let remaining = all.filter { !removedIDs.contains($0.id) }
        let referenced = Set(remaining.flatMap { [$0.digest] + ($0.sbomDigest.map { [$0] } ?? []) })
        if !dryRun {
            for release in report.removed {
                do { try store.deleteRelease(id: release.id) } catch { throw ArtifactsError(error.message) }
                try? FileManager.default.removeItem(atPath: releaseDirectory(name: release.name, version: release.version))
            }
        }
        // Every blob no remaining release refers to goes, including leftovers of interrupted releases; a dry
        // run counts the same blobs, so it predicts the space a real run frees.
        let blobRoot = artifacts.root + "/sha256"
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: blobRoot)) ?? [] {
            for digest in (try? FileManager.default.contentsOfDirectory(atPath: blobRoot + "/" + prefix)) ?? [] where !referenced.contains(digest) {
                let freed: Int64
                if dryRun {
                    let size = (try? FileManager.default.attributesOfItem(atPath: artifacts.blobPath(digest))[.size] as? NSNumber)?.int64Value
                    freed = size ?? 0
                } else {
                    freed = artifacts.remove(digest)
                }
                report.bytesFreed += freed
                if !report.removed.contains(where: { $0.digest == digest || $0.sbomDigest == digest }) { report.orphanBlobsRemoved += 1 }
            }
        }
        if dryRun { return report }
        try? FileManager.default.removeItem(atPath: artifacts.root + "/tmp")
        return report
    }
}
