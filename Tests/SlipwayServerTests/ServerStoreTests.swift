import Foundation
import Testing
import SlipwayServer
@testable import SlipwayStore

/// The server store against every database it runs on (SQLite always; PostgreSQL when
/// `SLIPWAY_TEST_POSTGRES` names one): the same calls must give the same answers.
@Suite struct ServerStoreTests {
    typealias Fixture = TestDatabase.Fixture<ServerStore>

    @Test(arguments: TestDatabase.dialects)
    func migrationsRunOnceAndAReopenedStoreSeesTheSameData(_ dialect: SQLDialect) throws {
        let fixture = try Fixture(dialect) { try ServerStore(database: $0) }
        #expect(fixture.store.dialect == dialect)
        try fixture.store.addProject(ProjectRecord(name: "shop", repository: "/srv/shop.git", pollSeconds: 30))
        let reopened = try ServerStore(location: fixture.location)
        #expect(try reopened.projects().map(\.name) == ["shop"])
        #expect(try reopened.project(named: "shop")?.pollSeconds == 30)
        let applied = try reopened.database.read { (db) throws(StoreError) in
            try db.query(dialect == .sqlite ? "SELECT identifier FROM grdb_migrations ORDER BY identifier" : "SELECT identifier FROM slipway_migrations ORDER BY identifier", [])
                .map { (row) throws(StoreError) -> String in try row.get("identifier") }
        }
        #expect(applied == ServerStore.migrations.map(\.identifier).sorted())
    }

    @Test(arguments: TestDatabase.dialects)
    func projectsAndTokens(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        let created = Date(timeIntervalSince1970: 1_790_000_000.25)
        try store.addProject(ProjectRecord(name: "b", repository: "https://example.invalid/b.git", file: "ci/slipway.yml", secretVariable: "HOOK", createdAt: created))
        try store.addProject(ProjectRecord(name: "a", repository: "/srv/a"))
        #expect(throws: StoreError.self) { try store.addProject(ProjectRecord(name: "a", repository: "/elsewhere")) }
        #expect(try store.projects().map(\.name) == ["a", "b"])
        let b = try #require(try store.project(named: "b"))
        #expect(b == ProjectRecord(name: "b", repository: "https://example.invalid/b.git", file: "ci/slipway.yml", secretVariable: "HOOK", createdAt: created))
        #expect(try store.project(named: "c") == nil)

        let (first, secret) = try store.createToken(name: "ci", role: .developer)
        let (second, _) = try store.createToken(name: "ops", role: .admin)
        #expect(second.id > first.id)
        #expect(try store.token(bearer: secret)?.id == first.id)
        #expect(try store.token(bearer: secret)?.role == .developer)
        #expect(try store.token(bearer: "slw_" + String(repeating: "0", count: 64)) == nil)
        #expect(try store.tokens().map(\.name) == ["ci", "ops"])
        // Only the hash is stored.
        let stored = try store.database.read { (db) throws(StoreError) in try db.query("SELECT hash FROM api_token", []) }
        #expect(!stored.contains { $0["hash"] == secret })
    }

    @Test(arguments: TestDatabase.dialects)
    func aRedeliveredWebhookQueuesNothingTwice(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        let request = RunRequestRecord(project: "p", event: "push", branch: "main", commit: "abc", source: "github:d1")
        guard case .accepted(let id?) = try store.recordDelivery(id: "d1", project: "p", event: "push", result: "queued", request: request) else {
            Issue.record("the first delivery was not accepted with a request")
            return
        }
        #expect(try store.recordDelivery(id: "d1", project: "p", event: "push", result: "other", request: request) == .duplicate(result: "queued"))
        #expect(try store.recordDelivery(id: "d2", project: "p", event: "ping", result: "ignored", request: nil) == .accepted(requestID: nil))
        #expect(try store.queuedRequests(project: "p").map(\.id) == [id])
        #expect(try store.deliveryCounts() == ["queued": 1, "ignored": 1])
        #expect(try store.queueDepth() == 1)
    }

    @Test(arguments: TestDatabase.dialects)
    func requestsRoundTripEveryField(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        // Quotes, a `?` and non-ASCII text in values: bound, never spliced into the SQL.
        let request = RunRequestRecord(project: "p", event: "pull_request", branch: "main", tag: "v1.0", commit: "0123456789abcdef",
                                       changedFiles: #"["a?b.swift","dir/'quoted'.txt"]"#, inputs: #"{"who":"Zoë \"z\" ?"}"#,
                                       source: "api:ci", headRef: "feature/x", before: "fedcba", status: "queued",
                                       createdAt: Date(timeIntervalSince1970: 1_790_000_123.5))
        let queued = try store.enqueue(request)
        var expected = request
        expected.id = queued.id
        #expect(try store.request(id: queued.id) == expected)
        #expect(try store.request(id: queued.id)?.inputValues == ["who": #"Zoë "z" ?"#])

        var running = expected
        running.status = "running"
        running.runNumber = Int64(Int32.max) + 5
        running.startedAt = Date(timeIntervalSince1970: 1_790_000_124)
        running.finishedAt = Date(timeIntervalSince1970: 1_790_000_130.75)
        running.reason = "it's done"
        try store.update(running)
        #expect(try store.request(id: queued.id) == running)
        #expect(try store.unfinishedClaims().map(\.id) == [queued.id])
        let durations = try store.requestDurations()
        #expect(durations.count == 1)
        #expect(abs(durations[0].waited - 0.5) < 1e-6)
        #expect(abs((durations[0].ran ?? 0) - 6.75) < 1e-6)
    }

    @Test(arguments: TestDatabase.dialects)
    func claimsTakeTheOldestQueuedRequestOfAProjectNotBusy(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        let a1 = try store.enqueue(RunRequestRecord(project: "a", event: "manual", source: "t"))
        let a2 = try store.enqueue(RunRequestRecord(project: "a", event: "manual", source: "t"))
        let b1 = try store.enqueue(RunRequestRecord(project: "b", event: "manual", source: "t"))
        #expect(try store.claimNext(excludingProjects: ["a"])?.id == b1.id)
        let claimed = try #require(try store.claimNext())
        #expect(claimed.id == a1.id)
        #expect(claimed.status == "preparing")
        #expect(try store.request(id: a1.id)?.status == "preparing")
        #expect(try store.cancelQueued(id: a1.id, reason: "too late") == false)
        #expect(try store.cancelQueued(id: a2.id, reason: "superseded") == true)
        #expect(try store.request(id: a2.id)?.status == "cancelled")
        #expect(try store.claimNext() == nil)
        #expect(try store.requests(limit: 2).map(\.id) == [b1.id, a2.id])
        #expect(try store.requests(project: "a").map(\.id) == [a2.id, a1.id])

        try store.requestCancel(id: a1.id, reason: "first")
        try store.requestCancel(id: a1.id, reason: "second")
        #expect(try store.cancelReason(id: a1.id) == "first")
        #expect(try store.cancelReason(id: b1.id) == nil)
    }

    /// Several threads claiming at once: every request is taken exactly once.
    @Test(arguments: TestDatabase.dialects)
    func concurrentClaimsNeverTakeARequestTwice(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        let ids = try (0..<60).map { index in try store.enqueue(RunRequestRecord(project: "p\(index % 7)", event: "manual", source: "t")).id }
        let claimed = NSLock()
        nonisolated(unsafe) var taken: [Int64] = []
        nonisolated(unsafe) var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            while true {
                do {
                    guard let request = try store.claimNext() else { return }
                    claimed.withLock { taken.append(request.id) }
                } catch {
                    claimed.withLock { failures.append("\(error)") }
                    return
                }
            }
        }
        #expect(failures.isEmpty)
        #expect(taken.sorted() == ids)
    }

    @Test(arguments: TestDatabase.dialects)
    func pollsAndSchedulesReplaceWhatTheyRemember(_ dialect: SQLDialect) throws {
        let store = try Fixture(dialect) { try ServerStore(database: $0) }.store
        try store.recordPoll(project: "p", refs: ["main": "aaa", "dev": "bbb"], requests: [RunRequestRecord(project: "p", event: "push", branch: "main", source: "poll")])
        try store.recordPoll(project: "p", refs: ["main": "ccc"], requests: [])
        try store.recordPoll(project: "q", refs: ["main": "zzz"], requests: [])
        #expect(try store.refStates(project: "p") == ["main": "ccc"])
        #expect(try store.queuedRequests(project: "p").count == 1)

        #expect(try store.lastScheduled(project: "p", cron: "0 * * * *") == nil)
        try store.recordSchedule(project: "p", cron: "0 * * * *", minute: 100, request: nil)
        try store.recordSchedule(project: "p", cron: "0 * * * *", minute: 160, request: RunRequestRecord(project: "p", event: "schedule", source: "cron"))
        #expect(try store.lastScheduled(project: "p", cron: "0 * * * *") == 160)
        #expect(try store.queuedRequests(project: "p").map(\.event) == ["push", "schedule"])
    }

    @Test func sqlDialectTranslation() {
        #expect(SQLDialect.postgres.placeholders("SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? LIMIT ?") ==
                "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 LIMIT $3")
        #expect(SQLDialect.sqlite.placeholders("a = ?") == "a = ?")
        #expect(SQLDialect.postgres.translateDDL("id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, at REAL, b BLOB, realm TEXT") ==
                "id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, at DOUBLE PRECISION, b BYTEA, realm TEXT")
        #expect(SQLDialect.statements("CREATE TABLE a (x TEXT DEFAULT ';');\n ALTER TABLE a ADD y INTEGER; ") ==
                ["CREATE TABLE a (x TEXT DEFAULT ';')", "ALTER TABLE a ADD y INTEGER"])
    }

    @Test func databaseLocationsParseAndNeverShowAPassword() throws {
        #expect(try DatabaseLocation.parse("sqlite:///var/lib/slipway/server.db") == .sqlite(path: "/var/lib/slipway/server.db"))
        #expect(try DatabaseLocation.parse("state/server.db") == .sqlite(path: FileManager.default.currentDirectoryPath + "/state/server.db"))
        guard case .postgres(let settings) = try DatabaseLocation.parse("postgres://ci:s%40cret@db.internal:6543/slipway?schema=team_a") else {
            Issue.record("not parsed as PostgreSQL")
            return
        }
        #expect(settings.host == "db.internal")
        #expect(settings.port == 6543)
        #expect(settings.user == "ci")
        #expect(settings.password == "s@cret")
        #expect(settings.database == "slipway")
        #expect(settings.schema == "team_a")
        #expect(!DatabaseLocation.postgres(settings).displayName.contains("cret"))
        for bad in ["mysql://x@y/z", "postgres://db.internal/slipway", "postgres://ci@db.internal/", "postgres://ci@db.internal/x?schema=Robert'); DROP",
                    "postgres://ci@db.internal/x?pool=3", "sqlite://", ""] {
            #expect(throws: StoreError.self, "\(bad)") { try DatabaseLocation.parse(bad) }
        }
    }

    @Test func anUnreachablePostgresIsAClearErrorWithoutThePassword() throws {
        // Port 1 on loopback: nothing listens there.
        let location = try DatabaseLocation.parse("postgres://ci:hunter2@127.0.0.1:1/slipway")
        do {
            _ = try ServerStore(location: location)
            Issue.record("opened a store on a closed port")
        } catch {
            #expect(error.message.contains("cannot connect to postgres://ci@127.0.0.1:1/slipway"))
            #expect(!error.message.contains("hunter2"))
        }
    }

    /// The first command on a data directory decides its database; the others find it there. A directory
    /// with SQLite state is not silently switched to an empty PostgreSQL schema.
    @Test(.enabled(if: TestDatabase.postgresURL != nil, "needs SLIPWAY_TEST_POSTGRES"))
    func aDataDirectoryRemembersItsDatabaseAndKeepsOne() throws {
        let root = NSTemporaryDirectory() + "slipway-pointer-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let layout = ServerLayout(root: root)
        let postgres = try TestDatabase.location(.postgres, directory: "")
        try SlipwayServer.openStore(layout, database: postgres).addProject(ProjectRecord(name: "p", repository: "/r"))
        let pointer = try String(contentsOfFile: layout.databasePointer, encoding: .utf8)
        #expect(pointer.hasPrefix("postgres://"))
        #expect(!FileManager.default.fileExists(atPath: layout.database), "no SQLite file next to it")
        // Without --database: the remembered schema, with the project in it.
        #expect(try SlipwayServer.openStore(layout).projects().map(\.name) == ["p"])

        let sqliteRoot = root + "/old"
        _ = try SlipwayServer.openStore(ServerLayout(root: sqliteRoot))
        #expect(throws: ServerError.self) { try SlipwayServer.openStore(ServerLayout(root: sqliteRoot), database: postgres) }
    }

    /// Stores on different schemas share the pool's connections: each call must land in its own schema,
    /// whichever schema the connection served last (single-statement calls included).
    @Test(.enabled(if: TestDatabase.postgresURL != nil, "needs SLIPWAY_TEST_POSTGRES"))
    func storesOnTwoSchemasShareConnectionsWithoutMixingData() throws {
        let first = try Fixture(.postgres) { try ServerStore(database: $0) }
        let second = try Fixture(.postgres) { try ServerStore(database: $0) }
        for round in 0..<5 {
            _ = try first.store.enqueue(RunRequestRecord(project: "a", event: "manual", source: "t"))
            #expect(try second.store.queueDepth() == round)
            _ = try second.store.enqueue(RunRequestRecord(project: "b", event: "manual", source: "t"))
            #expect(try first.store.queueDepth() == round + 1)
        }
        #expect(try first.store.requests().allSatisfy { $0.project == "a" })
        #expect(try second.store.requests().allSatisfy { $0.project == "b" })
    }

    /// A connection the server drops (restart, failover, idle kill) costs the statement in flight, not the store.
    @Test(.enabled(if: TestDatabase.postgresURL != nil, "needs SLIPWAY_TEST_POSTGRES"))
    func aDroppedPostgresConnectionIsReopened() throws {
        let fixture = try Fixture(.postgres) { try ServerStore(database: $0) }
        try fixture.store.addProject(ProjectRecord(name: "p", repository: "/r"))
        let pid: Int64 = try fixture.store.database.read { (db) throws(StoreError) in try db.queryOne("SELECT pg_backend_pid() AS pid")!.get("pid") }
        guard case .postgres(var settings) = fixture.location else { return }
        // Another password (ignored by the test server's trust authentication): another pool, so the killer
        // does not take the very connection it is about to kill.
        settings.password = "another pool"
        let killer = try PostgresDatabase(settings: settings)
        let killed: Bool = try killer.read { (db) throws(StoreError) in try db.queryOne("SELECT pg_terminate_backend(CAST(? AS INTEGER)) AS done", [pid])!.get("done") }
        #expect(killed)
        // The statement on the dead connection may fail; the next one reconnects.
        _ = try? fixture.store.projects()
        #expect(try fixture.store.projects().map(\.name) == ["p"])
    }
}
