import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresNIO

/// A PostgreSQL schema as a store's database: one connection per process, used by one transaction at a time
/// (the same single-writer discipline as SQLite), on its own event loop so that callers on any thread —
/// including another event loop's — can block on it without deadlocking.
public final class PostgresDatabase: SQLDatabase, @unchecked Sendable {
    /// Where the server is and which schema holds the tables. The password is never shown.
    public struct Settings: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
        public var schema: String
        /// How long one statement may take before the connection is given up.
        public var statementTimeout: Duration = .seconds(30)

        public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String, schema: String = "public") {
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
            self.schema = schema
        }

        /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME]`; a missing password comes from `PGPASSWORD`.
        public init(url: String) throws(StoreError) {
            guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
                throw StoreError("cannot parse the PostgreSQL URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME]")
            }
            guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
                throw StoreError("the PostgreSQL URL names no user: postgres://USER@\(host)/DATABASE")
            }
            let database = String(components.path.drop(while: { $0 == "/" }))
            guard !database.isEmpty, !database.contains("/") else {
                throw StoreError("the PostgreSQL URL names no database: postgres://\(user)@\(host)/DATABASE")
            }
            let given = components.percentEncodedPassword?.removingPercentEncoding
            self.init(host: host, port: components.port ?? 5432, user: user, password: given ?? ProcessInfo.processInfo.environment["PGPASSWORD"], database: database)
            for item in components.queryItems ?? [] {
                switch item.name {
                case "schema":
                    guard let value = item.value, Self.isValidSchema(value) else {
                        throw StoreError("schema '\(item.value ?? "")' in the PostgreSQL URL: use lower-case letters, digits and _ (at most 63)")
                    }
                    schema = value
                case "sslmode" where item.value == "disable":
                    break
                default:
                    throw StoreError("unknown parameter '\(item.name)' in the PostgreSQL URL (known: schema, sslmode=disable)")
                }
            }
        }

        static func isValidSchema(_ name: String) -> Bool {
            !name.isEmpty && name.count <= 63 && !name.hasPrefix("pg_") && name.first.map { $0.isLetter || $0 == "_" } == true
                && name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "_" }
        }

        public var displayName: String {
            var components = URLComponents()
            components.scheme = "postgres"
            components.user = user
            components.host = host.contains(":") ? "[\(host)]" : host
            components.port = port
            components.path = "/" + database
            components.queryItems = [URLQueryItem(name: "schema", value: schema)]
            return components.string ?? "postgres://\(host):\(port)/\(database)?schema=\(schema)"
        }
    }

    public let settings: Settings
    public var dialect: SQLDialect { .postgres }
    let pool: PostgresConnectionPool
    /// One transaction at a time per store, like SQLite's single writer.
    let lock = NSLock()
    static let logger = Logger(label: "slipway.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    public init(settings: Settings) throws(StoreError) {
        self.settings = settings
        pool = PostgresConnectionPool.shared(for: settings)
        // Created only when missing: a role may be given a schema without the right to create one.
        try withConnection(setSchema: false) { (handle) throws(StoreError) in
            if try handle.queryOne("SELECT 1 AS found FROM pg_namespace WHERE nspname = ?", [settings.schema]) == nil {
                _ = try handle.execute("CREATE SCHEMA IF NOT EXISTS \"\(settings.schema)\"", [])
            }
        }
    }

    /// Whether the settings' schema exists (without creating it).
    public static func schemaExists(_ settings: Settings) throws(StoreError) -> Bool {
        let pool = PostgresConnectionPool.shared(for: settings)
        let pooled = try pool.checkOut()
        let handle = PostgresConnectionHandle(connection: pooled.connection, timeout: settings.statementTimeout)
        defer { pool.checkIn(pooled, reusable: !handle.broken) }
        return try handle.queryOne("SELECT 1 AS found FROM pg_namespace WHERE nspname = ?", [settings.schema]) != nil
    }

    /// Blocks the calling thread (never one of the pool's event loop) until the future completes.
    static func wait<T: Sendable>(_ future: EventLoopFuture<T>, timeout: Duration) throws -> T {
        let semaphore = DispatchSemaphore(value: 0)
        let result = NIOLockedValueBox<Result<T, any Error>?>(nil)
        future.whenComplete { outcome in
            result.withLockedValue { $0 = outcome }
            semaphore.signal()
        }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        guard semaphore.wait(timeout: .now() + seconds) == .success, let outcome = result.withLockedValue({ $0 }) else {
            throw StoreError("no answer within \(timeout)")
        }
        return try outcome.get()
    }

    /// What went wrong, without the statement's bound values.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                return message + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }

    /// Runs `body` on a pooled connection set to this store's schema, one caller of this store at a time.
    func withConnection<T>(setSchema: Bool = true, _ body: (PostgresConnectionHandle) throws(StoreError) -> T) throws(StoreError) -> T {
        lock.lock()
        defer { lock.unlock() }
        let pooled = try pool.checkOut()
        var reusable = false
        defer { pool.checkIn(pooled, reusable: reusable) }
        let handle = PostgresConnectionHandle(connection: pooled.connection, timeout: settings.statementTimeout)
        do throws(StoreError) {
            if setSchema, pooled.schema != settings.schema {
                try handle.execute("SET search_path TO \"\(settings.schema)\"", [])
                pooled.schema = settings.schema
            }
            let value = try body(handle)
            reusable = !handle.broken
            return value
        } catch {
            reusable = !handle.broken && !handle.connection.isClosed
            throw error
        }
    }

    public func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction("BEGIN", body)
    }

    /// `begin`, the body, then COMMIT — or ROLLBACK when the body throws (unless the connection is gone).
    func transaction<T>(_ begin: String, _ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try withConnection { (handle) throws(StoreError) -> T in
            try handle.execute(begin, [])
            let value: T
            do throws(StoreError) {
                value = try body(handle)
            } catch {
                if !handle.broken { _ = try? handle.execute("ROLLBACK", []) }
                throw error
            }
            try handle.execute("COMMIT", [])
            return value
        }
    }

    public func writeOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try withConnection { (handle) throws(StoreError) -> T in
            // Counted from here: the connection's own set-up (search_path) is not the body's.
            handle.statements = 0
            handle.statementLimit = 1
            defer { handle.statementLimit = nil }
            return try body(handle)
        }
    }

    public func readOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try writeOne(body)
    }

    /// One snapshot for all the statements of a read, as SQLite's reads have.
    public func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// Each migration in its own transaction under an advisory lock, so that servers starting at once on the
    /// same schema apply each migration exactly once.
    public func migrate(_ migrations: [SQLMigration]) throws(StoreError) {
        for migration in migrations {
            try write { (db) throws(StoreError) in
                try db.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))", [])
                try db.execute("CREATE TABLE IF NOT EXISTS slipway_migrations (identifier TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)", [])
                guard try db.queryOne("SELECT identifier FROM slipway_migrations WHERE identifier = ?", [migration.identifier]) == nil else { return }
                for statement in SQLDialect.statements(SQLDialect.postgres.translateDDL(migration.sql)) {
                    try db.execute(statement, [])
                }
                try db.execute("INSERT INTO slipway_migrations (identifier, applied_at) VALUES (?, ?)", [migration.identifier, Date().timeIntervalSince1970])
            }
        }
    }
}

/// The connection as the stores see it, statement by statement.
final class PostgresConnectionHandle: SQLConnection {
    let connection: PostgresConnection
    let timeout: Duration
    /// Set when a statement timed out or the connection failed: the caller drops the connection.
    var broken = false
    /// With a limit (single-statement calls outside a transaction), statements beyond it are refused.
    var statementLimit: Int?
    var statements = 0
    var dialect: SQLDialect { .postgres }

    init(connection: PostgresConnection, timeout: Duration) {
        self.connection = connection
        self.timeout = timeout
    }

    func run(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> PostgresQueryResult {
        statements += 1
        if let statementLimit, statements > statementLimit {
            throw StoreError("internal error: a single-statement call ran a second statement outside a transaction (\(sql.prefix(60)))")
        }
        var binds = PostgresBindings(capacity: arguments.count)
        for argument in arguments {
            switch argument.sqlValue {
            case .null: binds.appendNull()
            case .integer(let number): binds.append(number)
            case .real(let number): binds.append(number)
            case .text(let text): binds.append(text)
            case .blob(let data): binds.append(ByteBuffer(bytes: data))
            }
        }
        let query = PostgresQuery(unsafeSQL: SQLDialect.postgres.placeholders(sql), binds: binds)
        do {
            return try PostgresDatabase.wait(connection.query(query, logger: PostgresDatabase.logger), timeout: timeout)
        } catch {
            // No server answer, or the server ending the session (57…: shut down, terminated; 08…: connection).
            let state = (error as? PSQLError)?.serverInfo?[.sqlState]
            if state == nil || state!.hasPrefix("57") || state!.hasPrefix("08") { broken = true }
            throw StoreError("PostgreSQL: \(PostgresDatabase.describe(error))")
        }
    }

    @discardableResult
    func execute(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int {
        try run(sql, arguments).metadata.rows ?? 0
    }

    func insert(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int64 {
        guard let row = try query(sql + " RETURNING id", arguments).first else { throw StoreError("the database returned no id for an insert") }
        return try row.get("id")
    }

    func query(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> [SQLRow] {
        let result = try run(sql, arguments)
        var rows: [SQLRow] = []
        rows.reserveCapacity(result.rows.count)
        for row in result.rows {
            var columns: [String: SQLValue] = [:]
            for cell in row {
                columns[cell.columnName] = try Self.value(cell)
            }
            rows.append(SQLRow(columns: columns))
        }
        return rows
    }

    static func value(_ cell: PostgresCell) throws(StoreError) -> SQLValue {
        guard cell.bytes != nil else { return .null }
        do {
            switch cell.dataType {
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .float4, .float8: return .real(try cell.decode(Double.self))
            case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
            case .bytea:
                return .blob(Data(try cell.decode(ByteBuffer.self).readableBytesView))
            default: return .text(try cell.decode(String.self))
            }
        } catch {
            throw StoreError("cannot read column '\(cell.columnName)' of type \(cell.dataType): \(error)")
        }
    }
}

/// Connections to one PostgreSQL server and database, shared by every store the process opens there (one
/// schema per project would otherwise mean one connection per project). Connections are opened on demand up
/// to `limit`; a caller beyond that waits for one to come back.
final class PostgresConnectionPool: @unchecked Sendable {
    final class Pooled: @unchecked Sendable {
        let connection: PostgresConnection
        /// The schema `search_path` points at; touched only by the connection's current holder.
        var schema: String?
        init(connection: PostgresConnection) { self.connection = connection }
    }

    let settings: PostgresDatabase.Settings
    let limit: Int
    // Its own event loop: callers block on futures, which must never run on the caller's loop.
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let condition = NSCondition()
    /// Guarded by `condition`.
    var idle: [Pooled] = []
    var open = 0

    init(settings: PostgresDatabase.Settings, limit: Int) {
        self.settings = settings
        self.limit = limit
    }

    struct Key: Hashable {
        var host: String, port: Int, user: String, password: String?, database: String
    }
    static let pools = NIOLockedValueBox<[Key: PostgresConnectionPool]>([:])

    /// The process's pool for the settings' server, user and database (the schema does not matter). Pools
    /// live as long as the process.
    static func shared(for settings: PostgresDatabase.Settings) -> PostgresConnectionPool {
        let key = Key(host: settings.host, port: settings.port, user: settings.user, password: settings.password, database: settings.database)
        return pools.withLockedValue { pools in
            if let pool = pools[key] { return pool }
            let pool = PostgresConnectionPool(settings: settings, limit: max(4, 2 * ProcessInfo.processInfo.activeProcessorCount))
            pools[key] = pool
            return pool
        }
    }

    func checkOut() throws(StoreError) -> Pooled {
        condition.lock()
        while true {
            while let pooled = idle.popLast() {
                if !pooled.connection.isClosed {
                    condition.unlock()
                    return pooled
                }
                open -= 1
                Self.release(pooled.connection)
            }
            if open < limit { break }
            guard condition.wait(until: Date().addingTimeInterval(30)) || !idle.isEmpty || open < limit else {
                condition.unlock()
                throw StoreError("all \(limit) connections to \(settings.displayName) stayed busy for 30 s")
            }
        }
        open += 1
        condition.unlock()
        do {
            return Pooled(connection: try connect())
        } catch {
            condition.lock()
            open -= 1
            condition.signal()
            condition.unlock()
            throw error
        }
    }

    func checkIn(_ pooled: Pooled, reusable: Bool) {
        condition.lock()
        if reusable && !pooled.connection.isClosed {
            idle.append(pooled)
        } else {
            open -= 1
            Self.release(pooled.connection)
        }
        condition.signal()
        condition.unlock()
    }

    func connect() throws(StoreError) -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                             password: settings.password, database: settings.database, tls: .disable)
        let future = PostgresConnection.connect(on: group.next(), configuration: configuration, id: 1, logger: PostgresDatabase.logger)
        let connection: PostgresConnection
        do {
            connection = try PostgresDatabase.wait(future, timeout: .seconds(10))
        } catch {
            // One that arrives after the timeout is closed rather than left open on the server.
            future.whenSuccess { Self.release($0) }
            throw StoreError("cannot connect to \(settings.displayName): \(PostgresDatabase.describe(error))")
        }
        // The guarantee SQLite gets with WAL and synchronous=NORMAL: a commit is durable against any crash of
        // Slipway (the server has it), and only a crash of the database's machine can lose the last few
        // hundred milliseconds — never corrupt anything. Waiting for a disk flush per commit would make
        // every job state change wait for the disk.
        do {
            _ = try PostgresDatabase.wait(connection.query(PostgresQuery(unsafeSQL: "SET synchronous_commit TO off"), logger: PostgresDatabase.logger),
                                          timeout: settings.statementTimeout)
        } catch {
            Self.release(connection)
            throw StoreError("cannot configure the session on \(settings.displayName): \(PostgresDatabase.describe(error))")
        }
        return connection
    }

    /// Closes a connection, keeping it alive until it is closed (postgres-nio requires that).
    static func release(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }
}
