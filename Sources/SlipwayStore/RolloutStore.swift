import Foundation
import GRDB

/// One rollout of a release to an environment. `state` is the rollout state machine and `controller` the
/// controller's own state (desired environment, what it waits for), both JSON; written before acting on them.
public struct RolloutRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var environment: String
    public var release: String
    public var version: String
    public var stable: String?
    public var strategy: String
    public var phase: String
    public var state: Data
    public var controller: Data
    public var ownerPID: Int32?
    public var runID: Int64?
    public var job: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var finishedAt: Date?
    public var outcome: String?

    public init(id: Int64 = 0, environment: String, release: String, version: String, stable: String?, strategy: String, phase: String,
                state: Data, controller: Data, ownerPID: Int32?, runID: Int64?, job: String?, createdAt: Date = Date(),
                updatedAt: Date = Date(), finishedAt: Date? = nil, outcome: String? = nil) {
        self.id = id
        self.environment = environment
        self.release = release
        self.version = version
        self.stable = stable
        self.strategy = strategy
        self.phase = phase
        self.state = state
        self.controller = controller
        self.ownerPID = ownerPID
        self.runID = runID
        self.job = job
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.finishedAt = finishedAt
        self.outcome = outcome
    }

    public var reference: String { "\(release)@\(version)" }
}

/// What happened during a rollout: a step, a measurement (with its inputs as JSON), a command, a verdict.
public struct RolloutEventRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var rolloutID: Int64
    public var at: Date
    public var kind: String
    public var text: String
    public var detail: Data?

    public init(id: Int64 = 0, rolloutID: Int64, at: Date = Date(), kind: String, text: String, detail: Data? = nil) {
        self.id = id
        self.rolloutID = rolloutID
        self.at = at
        self.kind = kind
        self.text = text
        self.detail = detail
    }
}

/// promote / abort / pause / resume, queued by the CLI for whichever process drives the rollout.
public struct RolloutCommandRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var environment: String
    public var op: String
    public var actor: String
    public var createdAt: Date
}

public struct ApprovalRecord: Sendable, Codable, Equatable {
    public var runID: Int64
    public var job: String
    public var approver: String
    public var createdAt: Date
}

public protocol RolloutStore: Sendable {
    func insertRollout(_ rollout: RolloutRecord) throws(StoreError) -> RolloutRecord
    func updateRollout(_ rollout: RolloutRecord) throws(StoreError)
    func rollout(id: Int64) throws(StoreError) -> RolloutRecord?
    /// The unfinished rollout of an environment, if any.
    func activeRollout(environment: String) throws(StoreError) -> RolloutRecord?
    /// Newest first; every environment when nil.
    func rollouts(environment: String?, limit: Int) throws(StoreError) -> [RolloutRecord]
    func appendRolloutEvent(_ event: RolloutEventRecord) throws(StoreError)
    func rolloutEvents(rolloutID: Int64) throws(StoreError) -> [RolloutEventRecord]
    func queueCommand(environment: String, op: String, actor: String) throws(StoreError)
    /// Unhandled commands of an environment, oldest first; each is marked handled as it is returned.
    func takeCommands(environment: String) throws(StoreError) -> [RolloutCommandRecord]
    func addApproval(runID: Int64, job: String, approver: String) throws(StoreError) -> Bool
    func approvals(runID: Int64, job: String) throws(StoreError) -> [ApprovalRecord]
}

extension SQLiteRunStore: RolloutStore {
    static func registerRolloutMigrations(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v3-rollouts") { db in
            try db.execute(sql: """
            CREATE TABLE rollout (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                environment TEXT NOT NULL, release TEXT NOT NULL, version TEXT NOT NULL, stable TEXT,
                strategy TEXT NOT NULL, phase TEXT NOT NULL, state BLOB NOT NULL, controller BLOB NOT NULL,
                owner_pid INTEGER, run_id INTEGER, job TEXT,
                created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL, finished_at DOUBLE, outcome TEXT);
            CREATE INDEX rollout_by_environment ON rollout(environment, id);
            CREATE TABLE rollout_event (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                rollout_id INTEGER NOT NULL REFERENCES rollout(id),
                at DOUBLE NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, detail BLOB);
            CREATE INDEX rollout_event_by_rollout ON rollout_event(rollout_id);
            CREATE TABLE rollout_command (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                environment TEXT NOT NULL, op TEXT NOT NULL, actor TEXT NOT NULL,
                created_at DOUBLE NOT NULL, handled_at DOUBLE);
            CREATE INDEX rollout_command_pending ON rollout_command(environment, handled_at);
            CREATE TABLE approval (
                run_id INTEGER NOT NULL, job TEXT NOT NULL, approver TEXT NOT NULL, created_at DOUBLE NOT NULL,
                PRIMARY KEY(run_id, job, approver));
            """)
        }
    }

    static func rolloutRecord(_ row: Row) -> RolloutRecord {
        RolloutRecord(id: row["id"], environment: row["environment"], release: row["release"], version: row["version"], stable: row["stable"],
                      strategy: row["strategy"], phase: row["phase"], state: row["state"], controller: row["controller"],
                      ownerPID: row["owner_pid"], runID: row["run_id"], job: row["job"],
                      createdAt: Date(timeIntervalSince1970: row["created_at"]), updatedAt: Date(timeIntervalSince1970: row["updated_at"]),
                      finishedAt: (row["finished_at"] as Double?).map { Date(timeIntervalSince1970: $0) }, outcome: row["outcome"])
    }

    public func insertRollout(_ rollout: RolloutRecord) throws(StoreError) -> RolloutRecord {
        try write { db in
            try db.execute(sql: """
                INSERT INTO rollout (environment, release, version, stable, strategy, phase, state, controller, owner_pid, run_id, job, created_at, updated_at, finished_at, outcome)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [rollout.environment, rollout.release, rollout.version, rollout.stable, rollout.strategy, rollout.phase,
                                 rollout.state, rollout.controller, rollout.ownerPID, rollout.runID, rollout.job,
                                 rollout.createdAt.timeIntervalSince1970, rollout.updatedAt.timeIntervalSince1970,
                                 rollout.finishedAt?.timeIntervalSince1970, rollout.outcome])
            var inserted = rollout
            inserted.id = db.lastInsertedRowID
            return inserted
        }
    }

    public func updateRollout(_ rollout: RolloutRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: """
                UPDATE rollout SET stable = ?, phase = ?, state = ?, controller = ?, owner_pid = ?, run_id = ?, job = ?, updated_at = ?, finished_at = ?, outcome = ?
                WHERE id = ?
                """, arguments: [rollout.stable, rollout.phase, rollout.state, rollout.controller, rollout.ownerPID, rollout.runID, rollout.job,
                                 Date().timeIntervalSince1970, rollout.finishedAt?.timeIntervalSince1970, rollout.outcome, rollout.id])
        }
    }

    public func rollout(id: Int64) throws(StoreError) -> RolloutRecord? {
        try read { db in try Row.fetchOne(db, sql: "SELECT * FROM rollout WHERE id = ?", arguments: [id]).map(Self.rolloutRecord) }
    }

    public func activeRollout(environment: String) throws(StoreError) -> RolloutRecord? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM rollout WHERE environment = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
                             arguments: [environment]).map(Self.rolloutRecord)
        }
    }

    public func rollouts(environment: String?, limit: Int) throws(StoreError) -> [RolloutRecord] {
        try read { db in
            if let environment {
                return try Row.fetchAll(db, sql: "SELECT * FROM rollout WHERE environment = ? ORDER BY id DESC LIMIT ?", arguments: [environment, limit]).map(Self.rolloutRecord)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM rollout ORDER BY id DESC LIMIT ?", arguments: [limit]).map(Self.rolloutRecord)
        }
    }

    public func appendRolloutEvent(_ event: RolloutEventRecord) throws(StoreError) {
        try write { db in
            try db.execute(sql: "INSERT INTO rollout_event (rollout_id, at, kind, text, detail) VALUES (?, ?, ?, ?, ?)",
                           arguments: [event.rolloutID, event.at.timeIntervalSince1970, event.kind, event.text, event.detail])
        }
    }

    public func rolloutEvents(rolloutID: Int64) throws(StoreError) -> [RolloutEventRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM rollout_event WHERE rollout_id = ? ORDER BY id", arguments: [rolloutID]).map { row in
                RolloutEventRecord(id: row["id"], rolloutID: row["rollout_id"], at: Date(timeIntervalSince1970: row["at"]), kind: row["kind"], text: row["text"], detail: row["detail"])
            }
        }
    }

    public func queueCommand(environment: String, op: String, actor: String) throws(StoreError) {
        try write { db in
            try db.execute(sql: "INSERT INTO rollout_command (environment, op, actor, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [environment, op, actor, Date().timeIntervalSince1970])
        }
    }

    public func takeCommands(environment: String) throws(StoreError) -> [RolloutCommandRecord] {
        try write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM rollout_command WHERE environment = ? AND handled_at IS NULL ORDER BY id", arguments: [environment])
            if !rows.isEmpty {
                try db.execute(sql: "UPDATE rollout_command SET handled_at = ? WHERE environment = ? AND handled_at IS NULL",
                               arguments: [Date().timeIntervalSince1970, environment])
            }
            return rows.map { row in
                RolloutCommandRecord(id: row["id"], environment: row["environment"], op: row["op"], actor: row["actor"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }

    public func addApproval(runID: Int64, job: String, approver: String) throws(StoreError) -> Bool {
        try write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO approval (run_id, job, approver, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [runID, job, approver, Date().timeIntervalSince1970])
            return db.changesCount > 0
        }
    }

    public func approvals(runID: Int64, job: String) throws(StoreError) -> [ApprovalRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM approval WHERE run_id = ? AND (job = ? OR job = '*') ORDER BY created_at", arguments: [runID, job]).map { row in
                ApprovalRecord(runID: row["run_id"], job: row["job"], approver: row["approver"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }
}
