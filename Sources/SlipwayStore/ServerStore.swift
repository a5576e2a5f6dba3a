import Crypto
import Foundation
import SlipwayCore

/// A project the server builds: a repository (URL or path) mirrored under the data directory.
public struct ProjectRecord: Sendable, Codable, Equatable {
    public var name: String
    public var repository: String
    public var file: String
    /// The name of the server's environment variable holding the webhook secret: the secret itself is
    /// never stored.
    public var secretVariable: String?
    /// Poll the repository's branches with `git ls-remote` this often (seconds); nil: no polling.
    public var pollSeconds: Int?
    public var createdAt: Date

    public init(name: String, repository: String, file: String = "slipway.yml", secretVariable: String? = nil, pollSeconds: Int? = nil, createdAt: Date = Date()) {
        self.name = name
        self.repository = repository
        self.file = file
        self.secretVariable = secretVariable
        self.pollSeconds = pollSeconds
        self.createdAt = createdAt
    }
}

/// API roles, each allowed everything the ones before it are; `runner` tokens only lease and report jobs.
public enum TokenRole: String, Sendable, Codable, CaseIterable, Comparable {
    case viewer, developer, deployer, admin, runner

    static let order: [TokenRole] = [.viewer, .developer, .deployer, .admin]

    /// Whether a token of this role may use a route that needs `required`.
    public func allows(_ required: TokenRole) -> Bool {
        if self == .runner || required == .runner { return self == required }
        return Self.order.firstIndex(of: self)! >= Self.order.firstIndex(of: required)!
    }

    public static func < (a: TokenRole, b: TokenRole) -> Bool {
        (order.firstIndex(of: a) ?? order.count) < (order.firstIndex(of: b) ?? order.count)
    }
}

public struct TokenRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var name: String
    public var role: TokenRole
    public var createdAt: Date

    public init(id: Int64 = 0, name: String, role: TokenRole, createdAt: Date = Date()) {
        self.id = id
        self.name = name
        self.role = role
        self.createdAt = createdAt
    }
}

/// A request to run a project's pipeline (webhook, API, schedule, poll), queued durably until the
/// dispatcher has run it. Statuses: queued → preparing → running → success/failure/cancelled, or
/// skipped (its `on:` did not match) / error (the commit could not be checked out or the file is bad).
public struct RunRequestRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var project: String
    public var event: String
    public var branch: String?
    public var tag: String?
    public var commit: String?
    /// JSON array of changed files, nil when unknown.
    public var changedFiles: String?
    /// JSON object of manual inputs.
    public var inputs: String?
    /// Where it came from: "github:<delivery>", "api:<token name>", …
    public var source: String
    /// A pull request's head branch (`branch` is its base, for `on:`).
    public var headRef: String?
    /// The branch's previous head (a push's `before`, or what polling saw last): changed files are
    /// `before..commit` when the payload does not list them all.
    public var before: String?
    public var status: String
    public var reason: String?
    public var runNumber: Int64?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?

    public init(id: Int64 = 0, project: String, event: String, branch: String? = nil, tag: String? = nil, commit: String? = nil,
                changedFiles: String? = nil, inputs: String? = nil, source: String, headRef: String? = nil, before: String? = nil, status: String = "queued", reason: String? = nil,
                runNumber: Int64? = nil, createdAt: Date = Date(), startedAt: Date? = nil, finishedAt: Date? = nil) {
        self.headRef = headRef
        self.before = before
        self.id = id
        self.project = project
        self.event = event
        self.branch = branch
        self.tag = tag
        self.commit = commit
        self.changedFiles = changedFiles
        self.inputs = inputs
        self.source = source
        self.status = status
        self.reason = reason
        self.runNumber = runNumber
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }

    /// The manual inputs as a dictionary (stored as a JSON object).
    public var inputValues: [String: String] {
        inputs.flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) } ?? [:]
    }

    public static let finalStatuses: Set<String> = ["success", "failure", "cancelled", "skipped", "error"]
    public var isFinal: Bool { Self.finalStatuses.contains(status) }
}

/// The server's own state: projects, API tokens (hashes only), webhook deliveries and the run queue, in
/// `server.db` of the data directory or in a PostgreSQL schema. Each project's runs live in that project's
/// run store.
public final class ServerStore: Sendable, SQLBackedStore {
    public let database: any SQLDatabase

    public init(database: any SQLDatabase) throws(StoreError) {
        self.database = database
        try database.migrate(Self.migrations)
    }

    public convenience init(path: String) throws(StoreError) {
        try self.init(database: SQLiteDatabase(path: path))
    }

    public convenience init(location: DatabaseLocation) throws(StoreError) {
        try self.init(database: location.open())
    }

    public var dialect: SQLDialect { database.dialect }

    /// Frozen once shipped: add migrations, never edit these. Written in SQLite's dialect and translated
    /// for PostgreSQL (`SQLDialect.translateDDL`).
    static let migrations: [SQLMigration] = [
        SQLMigration("server-v1", """
            CREATE TABLE project (
                name TEXT PRIMARY KEY,
                repository TEXT NOT NULL,
                file TEXT NOT NULL,
                secret_variable TEXT,
                created_at REAL NOT NULL);
            CREATE TABLE api_token (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL,
                last_used_at REAL);
            CREATE TABLE delivery (
                id TEXT PRIMARY KEY,
                project TEXT,
                event TEXT NOT NULL,
                result TEXT NOT NULL,
                request_id INTEGER,
                received_at REAL NOT NULL);
            CREATE TABLE run_request (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                project TEXT NOT NULL,
                event TEXT NOT NULL,
                branch TEXT,
                tag TEXT,
                "commit" TEXT,
                changed_files TEXT,
                inputs TEXT,
                source TEXT NOT NULL,
                status TEXT NOT NULL,
                reason TEXT,
                run_number INTEGER,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL);
            CREATE INDEX run_request_by_status ON run_request(status, id);
            CREATE INDEX run_request_by_project ON run_request(project, id);
            """),
        SQLMigration("server-v2-triggers", """
            ALTER TABLE project ADD COLUMN poll_seconds INTEGER;
            CREATE TABLE ref_state (
                project TEXT NOT NULL,
                ref TEXT NOT NULL,
                "commit" TEXT NOT NULL,
                PRIMARY KEY (project, ref));
            CREATE TABLE schedule_state (
                project TEXT NOT NULL,
                cron TEXT NOT NULL,
                last_minute INTEGER NOT NULL,
                PRIMARY KEY (project, cron));
            """),
        SQLMigration("server-v3-head-ref", "ALTER TABLE run_request ADD COLUMN head_ref TEXT"),
        SQLMigration("server-v4-cancel", "ALTER TABLE run_request ADD COLUMN cancel_reason TEXT"),
        SQLMigration("server-v5-before", "ALTER TABLE run_request ADD COLUMN before_commit TEXT"),
    ]

    // MARK: Projects

    public func addProject(_ project: ProjectRecord) throws(StoreError) {
        try write { (db) throws(StoreError) in
            if try db.queryOne("SELECT 1 AS found FROM project WHERE name = ?", [project.name]) != nil {
                throw StoreError("a project named '\(project.name)' already exists")
            }
            try db.execute("INSERT INTO project (name, repository, file, secret_variable, poll_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           [project.name, project.repository, project.file, project.secretVariable, project.pollSeconds, project.createdAt])
        }
    }

    static func projectRecord(_ row: SQLRow) throws(StoreError) -> ProjectRecord {
        ProjectRecord(name: try row.get("name"), repository: try row.get("repository"), file: try row.get("file"), secretVariable: row["secret_variable"],
                      pollSeconds: row["poll_seconds"], createdAt: try row.get("created_at"))
    }

    public func projects() throws(StoreError) -> [ProjectRecord] {
        try readOne { (db) throws(StoreError) in try db.query("SELECT * FROM project ORDER BY name", []).map(Self.projectRecord) }
    }

    public func project(named name: String) throws(StoreError) -> ProjectRecord? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT * FROM project WHERE name = ?", [name]).map(Self.projectRecord) }
    }

    // MARK: Tokens

    /// Creates a token and returns it with its secret value, which is shown once and stored only as a hash.
    public func createToken(name: String, role: TokenRole) throws(StoreError) -> (TokenRecord, String) {
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        let secret = "slw_" + bytes.hexString
        let record = try writeOne { (db) throws(StoreError) -> TokenRecord in
            let now = Date()
            let id = try db.insert("INSERT INTO api_token (name, role, hash, created_at) VALUES (?, ?, ?, ?)",
                                   [name, role.rawValue, Self.hash(token: secret), now])
            return TokenRecord(id: id, name: name, role: role, createdAt: now)
        }
        return (record, secret)
    }

    static func hash(token: String) -> String { SHA256.hash(data: Data(token.utf8)).hexString }

    static func tokenRecord(_ row: SQLRow) throws(StoreError) -> TokenRecord? {
        guard let role = TokenRole(rawValue: try row.get("role")) else { return nil }
        return TokenRecord(id: try row.get("id"), name: try row.get("name"), role: role, createdAt: try row.get("created_at"))
    }

    /// The token a bearer value belongs to. Looked up by its SHA-256: a hash index, no comparison of secrets.
    public func token(bearer: String) throws(StoreError) -> TokenRecord? {
        guard bearer.hasPrefix("slw_"), bearer.count == 68 else { return nil }
        return try readOne { (db) throws(StoreError) in
            try db.queryOne("SELECT id, name, role, created_at FROM api_token WHERE hash = ?", [Self.hash(token: bearer)]).flatMap(Self.tokenRecord)
        }
    }

    public func tokens() throws(StoreError) -> [TokenRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT id, name, role, created_at FROM api_token ORDER BY id", []).map(Self.tokenRecord).compactMap { $0 }
        }
    }

    // MARK: Deliveries and the queue

    public enum DeliveryOutcome: Sendable, Equatable {
        /// First time this delivery id is seen; the request was queued when one was given.
        case accepted(requestID: Int64?)
        /// Seen before: nothing is done twice.
        case duplicate(result: String)
    }

    /// Records a webhook delivery and, in the same transaction, queues its run request: a redelivery
    /// of the same id (even one arriving at the same moment) finds the row and queues nothing.
    public func recordDelivery(id: String, project: String?, event: String, result: String, request: RunRequestRecord?) throws(StoreError) -> DeliveryOutcome {
        try write { (db) throws(StoreError) in
            let inserted = try db.execute("INSERT INTO delivery (id, project, event, result, received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                                          [id, project, event, result, Date()])
            guard inserted > 0 else {
                return .duplicate(result: try db.queryOne("SELECT result FROM delivery WHERE id = ?", [id]).map { (row) throws(StoreError) in try row.get("result") } ?? result)
            }
            var requestID: Int64?
            if let request {
                requestID = try Self.insert(request, in: db)
                try db.execute("UPDATE delivery SET request_id = ? WHERE id = ?", [requestID, id])
            }
            return .accepted(requestID: requestID)
        }
    }

    public func deliveryCounts() throws(StoreError) -> [String: Int] {
        try read { (db) throws(StoreError) in
            var counts: [String: Int] = [:]
            for row in try db.query("SELECT result, COUNT(*) AS n FROM delivery GROUP BY result", []) {
                counts[try row.get("result")] = try row.get("n")
            }
            return counts
        }
    }

    static func insert(_ request: RunRequestRecord, in db: any SQLConnection) throws(StoreError) -> Int64 {
        try db.insert("""
            INSERT INTO run_request (project, event, branch, tag, "commit", changed_files, inputs, source, head_ref, before_commit, status, reason, run_number, created_at, started_at, finished_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [request.project, request.event, request.branch, request.tag, request.commit, request.changedFiles, request.inputs,
                  request.source, request.headRef, request.before, request.status, request.reason, request.runNumber, request.createdAt,
                  request.startedAt, request.finishedAt])
    }

    public func enqueue(_ request: RunRequestRecord) throws(StoreError) -> RunRequestRecord {
        try writeOne { (db) throws(StoreError) in
            var request = request
            request.id = try Self.insert(request, in: db)
            return request
        }
    }

    static func requestRecord(_ row: SQLRow) throws(StoreError) -> RunRequestRecord {
        RunRequestRecord(id: try row.get("id"), project: try row.get("project"), event: try row.get("event"), branch: row["branch"], tag: row["tag"], commit: row["commit"],
                         changedFiles: row["changed_files"], inputs: row["inputs"], source: try row.get("source"), headRef: row["head_ref"], before: row["before_commit"],
                         status: try row.get("status"), reason: row["reason"], runNumber: row["run_number"], createdAt: try row.get("created_at"),
                         startedAt: row["started_at"], finishedAt: row["finished_at"])
    }

    /// Takes the oldest queued request, marking it `preparing` in the same transaction: two dispatchers
    /// never take the same one (on PostgreSQL, not even two servers sharing the schema).
    public func claimNext(excludingProjects busy: Set<String> = []) throws(StoreError) -> RunRequestRecord? {
        try write { (db) throws(StoreError) in
            // Busy projects are left out in SQL: a backlog of one project must not hide the others.
            let placeholders = Array(repeating: "?", count: busy.count).joined(separator: ", ")
            let lock = db.dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
            let sql = busy.isEmpty ? "SELECT * FROM run_request WHERE status = 'queued' ORDER BY id LIMIT 1" + lock
                : "SELECT * FROM run_request WHERE status = 'queued' AND project NOT IN (\(placeholders)) ORDER BY id LIMIT 1" + lock
            guard let row = try db.queryOne(sql, busy.sorted()) else { return nil }
            var request = try Self.requestRecord(row)
            request.status = "preparing"
            request.startedAt = Date()
            try db.execute("UPDATE run_request SET status = ?, started_at = ? WHERE id = ?", [request.status, request.startedAt, request.id])
            return request
        }
    }

    public func queuedRequests(project: String) throws(StoreError) -> [RunRequestRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM run_request WHERE project = ? AND status = 'queued' ORDER BY id", [project]).map(Self.requestRecord)
        }
    }

    /// Cancels a request that is still queued (not one a dispatcher has claimed meanwhile); true if it did.
    public func cancelQueued(id: Int64, reason: String) throws(StoreError) -> Bool {
        try writeOne { (db) throws(StoreError) in
            try db.execute("UPDATE run_request SET status = 'cancelled', reason = ?, finished_at = ? WHERE id = ? AND status = 'queued'",
                           [reason, Date(), id]) > 0
        }
    }

    /// Records that a running request is to be cancelled, before its run is told: a restart in between
    /// ends the run instead of resuming it.
    public func requestCancel(id: Int64, reason: String) throws(StoreError) {
        try writeOne { (db) throws(StoreError) in
            _ = try db.execute("UPDATE run_request SET cancel_reason = ? WHERE id = ? AND cancel_reason IS NULL", [reason, id])
        }
    }

    public func cancelReason(id: Int64) throws(StoreError) -> String? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT cancel_reason FROM run_request WHERE id = ?", [id])?["cancel_reason"] }
    }

    public func update(_ request: RunRequestRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) in
            _ = try db.execute("UPDATE run_request SET status = ?, reason = ?, run_number = ?, \"commit\" = ?, started_at = ?, finished_at = ? WHERE id = ?",
                           [request.status, request.reason, request.runNumber, request.commit, request.startedAt, request.finishedAt, request.id])
        }
    }

    public func request(id: Int64) throws(StoreError) -> RunRequestRecord? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT * FROM run_request WHERE id = ?", [id]).map(Self.requestRecord) }
    }

    public func requests(project: String? = nil, limit: Int = 100) throws(StoreError) -> [RunRequestRecord] {
        try read { (db) throws(StoreError) in
            if let project {
                return try db.query("SELECT * FROM run_request WHERE project = ? ORDER BY id DESC LIMIT ?", [project, limit]).map(Self.requestRecord)
            }
            return try db.query("SELECT * FROM run_request ORDER BY id DESC LIMIT ?", [limit]).map(Self.requestRecord)
        }
    }

    /// Requests a previous server process was working on when it stopped.
    public func unfinishedClaims() throws(StoreError) -> [RunRequestRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM run_request WHERE status IN ('preparing', 'running') ORDER BY id", []).map(Self.requestRecord)
        }
    }

    // MARK: Polling and schedules

    /// The branch heads last seen by polling (ref → commit).
    public func refStates(project: String) throws(StoreError) -> [String: String] {
        try read { (db) throws(StoreError) in
            var refs: [String: String] = [:]
            for row in try db.query("SELECT ref, \"commit\" FROM ref_state WHERE project = ?", [project]) {
                refs[try row.get("ref")] = try row.get("commit")
            }
            return refs
        }
    }

    /// Replaces the remembered heads and queues the runs they cause, in one transaction: a restart
    /// between the two can neither lose a push nor build it twice.
    public func recordPoll(project: String, refs: [String: String], requests: [RunRequestRecord]) throws(StoreError) {
        try write { (db) throws(StoreError) in
            try db.execute("DELETE FROM ref_state WHERE project = ?", [project])
            for (ref, commit) in refs.sorted(by: { $0.key < $1.key }) {
                try db.execute("INSERT INTO ref_state (project, ref, \"commit\") VALUES (?, ?, ?)", [project, ref, commit])
            }
            for request in requests { _ = try Self.insert(request, in: db) }
        }
    }

    public func lastScheduled(project: String, cron: String) throws(StoreError) -> Int64? {
        try readOne { (db) throws(StoreError) in
            try db.queryOne("SELECT last_minute FROM schedule_state WHERE project = ? AND cron = ?", [project, cron])?["last_minute"]
        }
    }

    /// Remembers the minute a schedule fired (or its baseline) and queues its run, in one transaction.
    public func recordSchedule(project: String, cron: String, minute: Int64, request: RunRequestRecord?) throws(StoreError) {
        try write { (db) throws(StoreError) in
            try db.execute("""
                INSERT INTO schedule_state (project, cron, last_minute) VALUES (?, ?, ?)
                ON CONFLICT (project, cron) DO UPDATE SET last_minute = excluded.last_minute
                """, [project, cron, minute])
            if let request { _ = try Self.insert(request, in: db) }
        }
    }

    /// Finished requests' (status, seconds queued, seconds running), for the metrics histograms.
    public func requestDurations() throws(StoreError) -> [(status: String, waited: Double, ran: Double?)] {
        try readOne { (db) throws(StoreError) in
            try db.query("""
                SELECT status, started_at - created_at AS waited, finished_at - started_at AS ran FROM run_request
                WHERE started_at IS NOT NULL
                """, []).map { (row) throws(StoreError) in (try row.get("status"), row["waited"] ?? 0, row["ran"]) }
        }
    }

    public func queueDepth() throws(StoreError) -> Int {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT COUNT(*) AS n FROM run_request WHERE status = 'queued'")?["n"] ?? 0 }
    }
}
