import Foundation

/// A released artifact version: immutable once written.
public struct ReleaseRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var name: String
    public var version: String
    public var digest: String
    public var size: Int64
    public var kind: String
    public var commit: String?
    public var runID: Int64
    public var runNumber: Int64
    public var job: String
    public var createdAt: Date
    public var keyID: String
    public var envelopePath: String
    public var envelopeDigest: String
    public var sbomDigest: String?
    public var pipelineDigest: String

    public init(id: Int64 = 0, name: String, version: String, digest: String, size: Int64, kind: String, commit: String?, runID: Int64, runNumber: Int64, job: String, createdAt: Date = Date(), keyID: String, envelopePath: String, envelopeDigest: String, sbomDigest: String?, pipelineDigest: String) {
        self.id = id
        self.name = name
        self.version = version
        self.digest = digest
        self.size = size
        self.kind = kind
        self.commit = commit
        self.runID = runID
        self.runNumber = runNumber
        self.job = job
        self.createdAt = createdAt
        self.keyID = keyID
        self.envelopePath = envelopePath
        self.envelopeDigest = envelopeDigest
        self.sbomDigest = sbomDigest
        self.pipelineDigest = pipelineDigest
    }

    public var reference: String { "\(name)@\(version)" }
}

/// A finding of a built-in scan step, stored so `explain` can show it.
public struct ScanFindingRecord: Sendable, Codable, Equatable {
    public var runID: Int64
    public var jobKey: String
    public var scanner: String
    public var severity: String
    public var location: String
    public var message: String

    public init(runID: Int64, jobKey: String, scanner: String, severity: String, location: String, message: String) {
        self.runID = runID
        self.jobKey = jobKey
        self.scanner = scanner
        self.severity = severity
        self.location = location
        self.message = message
    }
}

/// Where a release is deployed (written by deployments; read by retention so it never removes them).
public struct DeploymentRecord: Sendable, Codable, Equatable {
    public var environment: String
    public var releaseID: Int64
    public var status: String
    public var createdAt: Date
    public init(environment: String, releaseID: Int64, status: String, createdAt: Date = Date()) {
        self.environment = environment
        self.releaseID = releaseID
        self.status = status
        self.createdAt = createdAt
    }
}

public protocol ReleaseStore: Sendable {
    /// Records a release. The same name@version with the same digest returns the existing record;
    /// with another digest it is an error: a version never changes content.
    func recordRelease(_ release: ReleaseRecord) throws(StoreError) -> (ReleaseRecord, created: Bool)
    func release(name: String, version: String) throws(StoreError) -> ReleaseRecord?
    func releases(name: String?) throws(StoreError) -> [ReleaseRecord]
    func deleteRelease(id: Int64) throws(StoreError)
    func deployments(releaseID: Int64) throws(StoreError) -> [DeploymentRecord]
    func recordDeployment(_ deployment: DeploymentRecord) throws(StoreError)
    func insertFindings(_ findings: [ScanFindingRecord]) throws(StoreError)
    func findings(runID: Int64, jobKey: String?) throws(StoreError) -> [ScanFindingRecord]
}

extension SQLRunStore: ReleaseStore {
    /// Frozen once shipped, like `SQLRunStore.v1`.
    static let releaseMigrations: [SQLMigration] = [
        SQLMigration("v2-releases", """
            CREATE TABLE release (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL, kind TEXT NOT NULL,
                "commit" TEXT, run_id INTEGER NOT NULL, run_number INTEGER NOT NULL, job TEXT NOT NULL, created_at DOUBLE NOT NULL,
                key_id TEXT NOT NULL, envelope_path TEXT NOT NULL, envelope_digest TEXT NOT NULL, sbom_digest TEXT, pipeline_digest TEXT NOT NULL,
                UNIQUE(name, version));
            CREATE TABLE deployment (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                environment TEXT NOT NULL, release_id INTEGER NOT NULL REFERENCES release(id), status TEXT NOT NULL, created_at DOUBLE NOT NULL);
            CREATE INDEX deployment_by_release ON deployment(release_id);
            CREATE TABLE scan_finding (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL, job_key TEXT NOT NULL, scanner TEXT NOT NULL, severity TEXT NOT NULL,
                location TEXT NOT NULL, message TEXT NOT NULL);
            CREATE INDEX finding_by_run ON scan_finding(run_id, job_key);
            """),
    ]

    static func releaseRecord(_ row: SQLRow) throws(StoreError) -> ReleaseRecord {
        ReleaseRecord(id: try row.get("id"), name: try row.get("name"), version: try row.get("version"), digest: try row.get("digest"), size: try row.get("size"),
                      kind: try row.get("kind"), commit: row["commit"], runID: try row.get("run_id"), runNumber: try row.get("run_number"), job: try row.get("job"),
                      createdAt: try row.get("created_at"), keyID: try row.get("key_id"), envelopePath: try row.get("envelope_path"),
                      envelopeDigest: try row.get("envelope_digest"), sbomDigest: row["sbom_digest"], pipelineDigest: try row.get("pipeline_digest"))
    }

    public func recordRelease(_ release: ReleaseRecord) throws(StoreError) -> (ReleaseRecord, created: Bool) {
        try write { (db) throws(StoreError) -> (ReleaseRecord, created: Bool) in
            if let existing = try db.queryOne("SELECT * FROM release WHERE name = ? AND version = ?", [release.name, release.version]).map(Self.releaseRecord) {
                if existing.digest == release.digest { return (existing, false) }
                throw StoreError("\(release.reference) was already released with digest \(existing.digest.prefix(16))… (run #\(existing.runNumber)); a version never changes content — bump the version")
            }
            var created = release
            created.id = try db.insert("""
                INSERT INTO release (name, version, digest, size, kind, "commit", run_id, run_number, job, created_at, key_id, envelope_path, envelope_digest, sbom_digest, pipeline_digest)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [release.name, release.version, release.digest, release.size, release.kind, release.commit, release.runID, release.runNumber, release.job,
                      release.createdAt, release.keyID, release.envelopePath, release.envelopeDigest, release.sbomDigest, release.pipelineDigest])
            return (created, true)
        }
    }

    public func release(name: String, version: String) throws(StoreError) -> ReleaseRecord? {
        try readOne { (db) throws(StoreError) in
            try db.queryOne("SELECT * FROM release WHERE name = ? AND version = ?", [name, version]).map(Self.releaseRecord)
        }
    }

    public func releases(name: String?) throws(StoreError) -> [ReleaseRecord] {
        try read { (db) throws(StoreError) in
            if let name {
                return try db.query("SELECT * FROM release WHERE name = ? ORDER BY created_at DESC, id DESC", [name]).map(Self.releaseRecord)
            }
            return try db.query("SELECT * FROM release ORDER BY name, created_at DESC, id DESC", []).map(Self.releaseRecord)
        }
    }

    public func deleteRelease(id: Int64) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in try db.execute("DELETE FROM release WHERE id = ?", [id]) }
    }

    public func deployments(releaseID: Int64) throws(StoreError) -> [DeploymentRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM deployment WHERE release_id = ? ORDER BY id", [releaseID]).map { (row) throws(StoreError) in
                DeploymentRecord(environment: try row.get("environment"), releaseID: try row.get("release_id"), status: try row.get("status"),
                                 createdAt: try row.get("created_at"))
            }
        }
    }

    public func recordDeployment(_ deployment: DeploymentRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in
            try db.execute("INSERT INTO deployment (environment, release_id, status, created_at) VALUES (?, ?, ?, ?)",
                           [deployment.environment, deployment.releaseID, deployment.status, deployment.createdAt])
        }
    }

    public func insertFindings(_ findings: [ScanFindingRecord]) throws(StoreError) {
        try write { (db) throws(StoreError) -> Void in
            for f in findings {
                try db.execute("INSERT INTO scan_finding (run_id, job_key, scanner, severity, location, message) VALUES (?, ?, ?, ?, ?, ?)",
                               [f.runID, f.jobKey, f.scanner, f.severity, f.location, f.message])
            }
        }
    }

    public func findings(runID: Int64, jobKey: String?) throws(StoreError) -> [ScanFindingRecord] {
        try read { (db) throws(StoreError) in
            let rows = if let jobKey {
                try db.query("SELECT * FROM scan_finding WHERE run_id = ? AND job_key = ? ORDER BY id", [runID, jobKey])
            } else {
                try db.query("SELECT * FROM scan_finding WHERE run_id = ? ORDER BY id", [runID])
            }
            return try rows.map { (row) throws(StoreError) in
                ScanFindingRecord(runID: try row.get("run_id"), jobKey: try row.get("job_key"), scanner: try row.get("scanner"), severity: try row.get("severity"),
                                  location: try row.get("location"), message: try row.get("message"))
            }
        }
    }
}
