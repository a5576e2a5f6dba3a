import Crypto
import Foundation
import GRDB
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

/// The server's own state (`server.db` in its data directory): projects, API tokens (hashes only),
/// webhook deliveries and the run queue. Each project's runs live in that project's run store.
public final class ServerStore: Sendable {
    let queue: DatabaseQueue

    public init(path: String) throws(StoreError) {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        configuration.journalMode = .wal
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(queue)
        } catch {
            throw StoreError("cannot open the server database \(path): \(error)")
        }
    }

    /// Frozen once shipped: add migrations, never edit these.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("server-v1") { db in
            try db.execute(sql: """
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
                """)
        }
        migrator.registerMigration("server-v2-triggers") { db in
            try db.execute(sql: """
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
                """)
        }
        migrator.registerMigration("server-v3-head-ref") { db in
            try db.execute(sql: "ALTER TABLE run_request ADD COLUMN head_ref TEXT")
        }
        migrator.registerMigration("server-v4-cancel") { db in
            try db.execute(sql: "ALTER TABLE run_request ADD COLUMN cancel_reason TEXT")
        }
        migrator.registerMigration("server-v5-before") { db in
            try db.execute(sql: "ALTER TABLE run_request ADD COLUMN before_commit TEXT")
        }
        return migrator
    }

    func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try queue.write(body) } catch let error as StoreError { throw error } catch { throw StoreError("database write failed: \(error)") }
    }

    func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try queue.read(body) } catch { throw StoreError("database read failed: \(error)") }
    }

    // MARK: Projects

    public func addProject(_ project: ProjectRecord) throws(StoreError) {
        try write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM project WHERE name = ?", arguments: [project.name]) == true {
                throw StoreError("a project named '\(project.name)' already exists")
            }
            try db.execute(sql: "INSERT INTO project (name, repository, file, secret_variable, poll_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [project.name, project.repository, project.file, project.secretVariable, project.pollSeconds, project.createdAt.timeIntervalSince1970])
        }
    }

    static func projectRecord(_ row: Row) -> ProjectRecord {
        ProjectRecord(name: row["name"], repository: row["repository"], file: row["file"], secretVariable: row["secret_variable"],
                      pollSeconds: row["poll_seconds"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    public func projects() throws(StoreError) -> [ProjectRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM project ORDER BY name").map(Self.projectRecord) }
    }

    public func project(named name: String) throws(StoreError) -> ProjectRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM project WHERE name = ?", arguments: [name]).map(Self.projectRecord) }
    }

    // MARK: Tokens

    /// Creates a token and returns it with its secret value, which is shown once and stored only as a hash.
    public func createToken(name: String, role: TokenRole) throws(StoreError) -> (TokenRecord, String) {
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        let secret = "slw_" + bytes.hexString
        let record = try write { db -> TokenRecord in
            let now = Date()
            try db.execute(sql: "INSERT INTO api_token (name, role, hash, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [name, role.rawValue, Self.hash(token: secret), now.timeIntervalSince1970])
            return TokenRecord(id: db.lastInsertedRowID, name: name, role: role, createdAt: now)
        }
        return (record, secret)
    }

    static func hash(token: String) -> String { SHA256.hash(data: Data(token.utf8)).hexString }

    /// The token a bearer value belongs to. Looked up by its SHA-256: a hash index, no comparison of secrets.
    public func token(bearer: String) throws(StoreError) -> TokenRecord? {
        guard bearer.hasPrefix("slw_"), bearer.count == 68 else { return nil }
        return try read { db in
            try Row.fetchOne(db, sql: "SELECT id, name, role, created_at FROM api_token WHERE hash = ?", arguments: [Self.hash(token: bearer)]).flatMap { row in
                TokenRole(rawValue: row["role"]).map { TokenRecord(id: row["id"], name: row["name"], role: $0, createdAt: Date(timeIntervalSince1970: row["created_at"])) }
            }
        }
    }

    public func tokens() throws(StoreError) -> [TokenRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, role, created_at FROM api_token ORDER BY id").compactMap { row in
                TokenRole(rawValue: row["role"]).map { TokenRecord(id: row["id"], name: row["name"], role: $0, createdAt: Date(timeIntervalSince1970: row["created_at"])) }
            }
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
    /// of the same id finds the row and queues nothing.
    public func recordDelivery(id: String, project: String?, event: String, result: String, request: RunRequestRecord?) throws(StoreError) -> DeliveryOutcome {
        try write { db in
            if let previous = try String.fetchOne(db, sql: "SELECT result FROM delivery WHERE id = ?", arguments: [id]) {
                return .duplicate(result: previous)
            }
            var requestID: Int64?
            if let request { requestID = try Self.insert(request, in: db) }
            try db.execute(sql: "INSERT INTO delivery (id, project, event, result, request_id, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [id, project, event, result, requestID, Date().timeIntervalSince1970])
            return .accepted(requestID: requestID)
        }
    }

    public func deliveryCounts() throws(StoreError) -> [String: Int] {
        try read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT result, COUNT(*) AS n FROM delivery GROUP BY result") {
                counts[row["result"]] = row["n"]
            }
            return counts
        }
    }

    static func insert(_ request: RunRequestRecord, in db: Database) throws -> Int64 {
        try db.execute(sql: """
            INSERT INTO run_request (project, event, branch, tag, "commit", changed_files, inputs, source, head_ref, before_commit, status, reason, run_number, created_at, started_at, finished_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [request.project, request.event, request.branch, request.tag, request.commit, request.changedFiles, request.inputs,
                             request.source, request.headRef, request.before, request.status, request.reason, request.runNumber, request.createdAt.timeIntervalSince1970,
                             request.startedAt?.timeIntervalSince1970, request.finishedAt?.timeIntervalSince1970])
        return db.lastInsertedRowID
    }

    public func enqueue(_ request: RunRequestRecord) throws(StoreError) -> RunRequestRecord {
        try write { db in
            var request = request
            request.id = try Self.insert(request, in: db)
            return request
        }
    }

    static func requestRecord(_ row: Row) -> RunRequestRecord {
        RunRequestRecord(id: row["id"], project: row["project"], event: row["event"], branch: row["branch"], tag: row["tag"], commit: row["commit"],
                         changedFiles: row["changed_files"], inputs: row["inputs"], source: row["source"], headRef: row["head_ref"], before: row["before_commit"], status: row["status"], reason: row["reason"],
                         runNumber: row["run_number"], createdAt: Date(timeIntervalSince1970: row["created_at"]),
                         startedAt: (row["started_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                         finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    /// Takes the oldest queued request, marking it `preparing` in the same transaction: two dispatchers
    /// never take the same one.
    public func claimNext(excludingProjects busy: Set<String> = []) throws(StoreError) -> RunRequestRecord? {
        try write { db in
            // Busy projects are left out in SQL: a backlog of one project must not hide the others.
            let placeholders = Array(repeating: "?", count: busy.count).joined(separator: ", ")
            let sql = busy.isEmpty ? "SELECT * FROM run_request WHERE status = 'queued' ORDER BY id LIMIT 1"
                : "SELECT * FROM run_request WHERE status = 'queued' AND project NOT IN (\(placeholders)) ORDER BY id LIMIT 1"
            for row in try Row.fetchAll(db, sql: sql, arguments: StatementArguments(Array(busy))) {
                var request = Self.requestRecord(row)
                request.status = "preparing"
                request.startedAt = Date()
                try db.execute(sql: "UPDATE run_request SET status = ?, started_at = ? WHERE id = ?",
                               arguments: [request.status, request.startedAt!.timeIntervalSince1970, request.id])
                return request
            }
            return nil
        }
    }

    public func queuedRequests(project: String) throws(StoreError) -> [RunRequestRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM run_request WHERE project = ? AND status = 'queued' ORDER BY id", arguments: [project]).map(Self.requestRecord) }
    }

    /// Cancels a request that is still queued (not one a dispatcher has claimed meanwhile); true if it did.
    public func cancelQueued(id: Int64, reason: String) throws(StoreError) -> Bool {
        try write { db in
            try db.execute(sql: "UPDATE run_request SET status = 'cancelled', reason = ?, finished_at = ? WHERE id = ? AND status = 'queued'",
                           arguments: [reason, Date().timeIntervalSince1970, id])
            return db.changesCount > 0
        }
    }

    /// Records that a running request is to be cancelled, before its run is told: a restart in between
    /// ends the run instead of resuming it.
    public func requestCancel(id: Int64, reason: String) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE run_request SET cancel_reason = ? WHERE id = ? AND cancel_reason IS NULL", arguments: [reason, id])
        }
    }

    public func cancelReason(id: Int64) throws(StoreError) -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT cancel_reason FROM run_request WHERE id = ?", arguments: [id]) }
    }

    public func update(_ request: RunRequestRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: "UPDATE run_request SET status = ?, reason = ?, run_number = ?, \"commit\" = ?, started_at = ?, finished_at = ? WHERE id = ?",
                           arguments: [request.status, request.reason, request.runNumber, request.commit, request.startedAt?.timeIntervalSince1970,
                                       request.finishedAt?.timeIntervalSince1970, request.id])
        }
    }

    public func request(id: Int64) throws(StoreError) -> RunRequestRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM run_request WHERE id = ?", arguments: [id]).map(Self.requestRecord) }
    }

    public func requests(project: String? = nil, limit: Int = 100) throws(StoreError) -> [RunRequestRecord] {
        try read { db in
            if let project {
                return try Row.fetchAll(db, sql: "SELECT * FROM run_request WHERE project = ? ORDER BY id DESC LIMIT ?", arguments: [project, limit]).map(Self.requestRecord)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM run_request ORDER BY id DESC LIMIT ?", arguments: [limit]).map(Self.requestRecord)
        }
    }

    /// Requests a previous server process was working on when it stopped.
    public func unfinishedClaims() throws(StoreError) -> [RunRequestRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM run_request WHERE status IN ('preparing', 'running') ORDER BY id").map(Self.requestRecord) }
    }

    // MARK: Polling and schedules

    /// The branch heads last seen by polling (ref → commit).
    public func refStates(project: String) throws(StoreError) -> [String: String] {
        try read { db in
            var refs: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT ref, \"commit\" FROM ref_state WHERE project = ?", arguments: [project]) {
                refs[row["ref"]] = row["commit"]
            }
            return refs
        }
    }

    /// Replaces the remembered heads and queues the runs they cause, in one transaction: a restart
    /// between the two can neither lose a push nor build it twice.
    public func recordPoll(project: String, refs: [String: String], requests: [RunRequestRecord]) throws(StoreError) {
        try write { db in
            try db.execute(sql: "DELETE FROM ref_state WHERE project = ?", arguments: [project])
            for (ref, commit) in refs {
                try db.execute(sql: "INSERT INTO ref_state (project, ref, \"commit\") VALUES (?, ?, ?)", arguments: [project, ref, commit])
            }
            for request in requests { _ = try Self.insert(request, in: db) }
        }
    }

    public func lastScheduled(project: String, cron: String) throws(StoreError) -> Int64? {
        try read { db in try Int64.fetchOne(db, sql: "SELECT last_minute FROM schedule_state WHERE project = ? AND cron = ?", arguments: [project, cron]) }
    }

    /// Remembers the minute a schedule fired (or its baseline) and queues its run, in one transaction.
    public func recordSchedule(project: String, cron: String, minute: Int64, request: RunRequestRecord?) throws(StoreError) {
        try write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO schedule_state (project, cron, last_minute) VALUES (?, ?, ?)", arguments: [project, cron, minute])
            if let request { _ = try Self.insert(request, in: db) }
        }
    }

    /// Finished requests' (status, seconds queued, seconds running), for the metrics histograms.
    public func requestDurations() throws(StoreError) -> [(status: String, waited: Double, ran: Double?)] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT status, started_at - created_at AS waited, finished_at - started_at AS ran FROM run_request
                WHERE started_at IS NOT NULL
                """).map { row in (row["status"], row["waited"] ?? 0, row["ran"]) }
        }
    }

    public func queueDepth() throws(StoreError) -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM run_request WHERE status = 'queued'") ?? 0 }
    }
}
