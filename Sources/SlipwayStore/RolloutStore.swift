import Foundation

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

extension SQLRunStore: RolloutStore {
    /// Frozen once shipped, like `SQLRunStore.v1`.
    static let rolloutMigrations: [SQLMigration] = [
        SQLMigration("v3-rollouts", """
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
            """),
    ]

    static func rolloutRecord(_ row: SQLRow) throws(StoreError) -> RolloutRecord {
        RolloutRecord(id: try row.get("id"), environment: try row.get("environment"), release: try row.get("release"), version: try row.get("version"),
                      stable: row["stable"], strategy: try row.get("strategy"), phase: try row.get("phase"), state: try row.get("state"),
                      controller: try row.get("controller"), ownerPID: row["owner_pid"], runID: row["run_id"], job: row["job"],
                      createdAt: try row.get("created_at"), updatedAt: try row.get("updated_at"), finishedAt: row["finished_at"], outcome: row["outcome"])
    }

    public func insertRollout(_ rollout: RolloutRecord) throws(StoreError) -> RolloutRecord {
        try writeOne { (db) throws(StoreError) in
            var inserted = rollout
            inserted.id = try db.insert("""
                INSERT INTO rollout (environment, release, version, stable, strategy, phase, state, controller, owner_pid, run_id, job, created_at, updated_at, finished_at, outcome)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [rollout.environment, rollout.release, rollout.version, rollout.stable, rollout.strategy, rollout.phase,
                      rollout.state, rollout.controller, rollout.ownerPID, rollout.runID, rollout.job,
                      rollout.createdAt, rollout.updatedAt, rollout.finishedAt, rollout.outcome])
            return inserted
        }
    }

    public func updateRollout(_ rollout: RolloutRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in
            try db.execute("""
                UPDATE rollout SET stable = ?, phase = ?, state = ?, controller = ?, owner_pid = ?, run_id = ?, job = ?, updated_at = ?, finished_at = ?, outcome = ?
                WHERE id = ?
                """, [rollout.stable, rollout.phase, rollout.state, rollout.controller, rollout.ownerPID, rollout.runID, rollout.job,
                      Date(), rollout.finishedAt, rollout.outcome, rollout.id])
        }
    }

    public func rollout(id: Int64) throws(StoreError) -> RolloutRecord? {
        try readOne { (db) throws(StoreError) in try db.queryOne("SELECT * FROM rollout WHERE id = ?", [id]).map(Self.rolloutRecord) }
    }

    public func activeRollout(environment: String) throws(StoreError) -> RolloutRecord? {
        try readOne { (db) throws(StoreError) in
            try db.queryOne("SELECT * FROM rollout WHERE environment = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1", [environment]).map(Self.rolloutRecord)
        }
    }

    public func rollouts(environment: String?, limit: Int) throws(StoreError) -> [RolloutRecord] {
        try read { (db) throws(StoreError) in
            if let environment {
                return try db.query("SELECT * FROM rollout WHERE environment = ? ORDER BY id DESC LIMIT ?", [environment, limit]).map(Self.rolloutRecord)
            }
            return try db.query("SELECT * FROM rollout ORDER BY id DESC LIMIT ?", [limit]).map(Self.rolloutRecord)
        }
    }

    public func appendRolloutEvent(_ event: RolloutEventRecord) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in
            try db.execute("INSERT INTO rollout_event (rollout_id, at, kind, text, detail) VALUES (?, ?, ?, ?, ?)",
                           [event.rolloutID, event.at, event.kind, event.text, event.detail])
        }
    }

    public func rolloutEvents(rolloutID: Int64) throws(StoreError) -> [RolloutEventRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM rollout_event WHERE rollout_id = ? ORDER BY id", [rolloutID]).map { (row) throws(StoreError) in
                RolloutEventRecord(id: try row.get("id"), rolloutID: try row.get("rollout_id"), at: try row.get("at"), kind: try row.get("kind"),
                                   text: try row.get("text"), detail: row["detail"])
            }
        }
    }

    public func queueCommand(environment: String, op: String, actor: String) throws(StoreError) {
        try writeOne { (db) throws(StoreError) -> Void in
            try db.execute("INSERT INTO rollout_command (environment, op, actor, created_at) VALUES (?, ?, ?, ?)", [environment, op, actor, Date()])
        }
    }

    public func takeCommands(environment: String) throws(StoreError) -> [RolloutCommandRecord] {
        try write { (db) throws(StoreError) in
            let rows = try db.query("SELECT * FROM rollout_command WHERE environment = ? AND handled_at IS NULL ORDER BY id", [environment])
            if !rows.isEmpty {
                try db.execute("UPDATE rollout_command SET handled_at = ? WHERE environment = ? AND handled_at IS NULL", [Date(), environment])
            }
            return try rows.map { (row) throws(StoreError) in
                RolloutCommandRecord(id: try row.get("id"), environment: try row.get("environment"), op: try row.get("op"), actor: try row.get("actor"),
                                     createdAt: try row.get("created_at"))
            }
        }
    }

    /// Whether this approver's approval is new (approving twice counts once).
    public func addApproval(runID: Int64, job: String, approver: String) throws(StoreError) -> Bool {
        try writeOne { (db) throws(StoreError) in
            try db.execute("INSERT INTO approval (run_id, job, approver, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           [runID, job, approver, Date()]) > 0
        }
    }

    public func approvals(runID: Int64, job: String) throws(StoreError) -> [ApprovalRecord] {
        try readOne { (db) throws(StoreError) in
            try db.query("SELECT * FROM approval WHERE run_id = ? AND (job = ? OR job = '*') ORDER BY created_at", [runID, job]).map { (row) throws(StoreError) in
                ApprovalRecord(runID: try row.get("run_id"), job: try row.get("job"), approver: try row.get("approver"), createdAt: try row.get("created_at"))
            }
        }
    }
}
