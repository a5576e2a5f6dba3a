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
            self.init(host: host, port: components.port ?? 5432, user: user,
                      password: components.percentEncodedPassword?.removingPercentEncoding ?? ProcessInfo.processInfo.environment["PGPASSWORD"],
                      database: database)
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
            !name.isEmpty && name.count <= 63 && name.first.map { $0.isLetter || $0 == "_" } == true
                && name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "_" }
        }

        public var displayName: String { "postgres://\(user)@\(host):\(port)/\(database)?schema=\(schema)" }
    }

    public let settings: Settings
    public var dialect: SQLDialect { .postgres }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let lock = NSLock()
    /// Guarded by `lock`.
    var connection: PostgresConnection?
    static let logger = Logger(label: "slipway.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    public init(settings: Settings) throws(StoreError) {
        self.settings = settings
        lock.lock()
        defer { lock.unlock() }
        _ = try connected()
    }

    deinit {
        let group = group
        guard let connection else {
            group.shutdownGracefully { _ in }
            return
        }
        // The connection must be closed before it is released; the group goes after it.
        connection.close().whenComplete { _ in
            withExtendedLifetime(connection) {}
            DispatchQueue.global().async { group.shutdownGracefully { _ in } }
        }
    }

    /// The open connection, connecting (and selecting the schema) when there is none. Called under `lock`.
    func connected() throws(StoreError) -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        connection = nil
        let configuration = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                             password: settings.password, database: settings.database, tls: .disable)
        let future = PostgresConnection.connect(on: group.next(), configuration: configuration, id: 1, logger: Self.logger)
        let opened: PostgresConnection
        do {
            opened = try Self.wait(future, timeout: .seconds(10))
        } catch {
            throw StoreError("cannot connect to \(settings.displayName): \(Self.describe(error))")
        }
        let schema = "\"\(settings.schema)\""
        do {
            for sql in ["CREATE SCHEMA IF NOT EXISTS \(schema)", "SET search_path TO \(schema)"] {
                _ = try Self.wait(opened.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger), timeout: settings.statementTimeout)
            }
        } catch {
            opened.close().whenComplete { _ in withExtendedLifetime(opened) {} }
            throw StoreError("cannot use schema \(settings.schema) on \(settings.displayName): \(Self.describe(error))")
        }
        connection = opened
        return opened
    }

    /// Blocks the calling thread (never one of this database's event loop) until the future completes.
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

    /// Runs `body` with the connection, one caller at a time; a failed connection is dropped and the next
    /// call connects again.
    func withConnection<T>(_ body: (PostgresConnectionHandle) throws(StoreError) -> T) throws(StoreError) -> T {
        lock.lock()
        defer { lock.unlock() }
        let handle = PostgresConnectionHandle(connection: try connected(), timeout: settings.statementTimeout)
        do throws(StoreError) {
            return try body(handle)
        } catch {
            if handle.connection.isClosed || handle.broken { connection = nil }
            throw error
        }
    }

    public func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try withConnection { (handle) throws(StoreError) -> T in
            try handle.execute("BEGIN", [])
            let value: T
            do throws(StoreError) {
                value = try body(handle)
            } catch {
                _ = try? handle.execute("ROLLBACK", [])
                throw error
            }
            try handle.execute("COMMIT", [])
            return value
        }
    }

    public func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try withConnection { (handle) throws(StoreError) -> T in try body(handle) }
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
    var dialect: SQLDialect { .postgres }

    init(connection: PostgresConnection, timeout: Duration) {
        self.connection = connection
        self.timeout = timeout
    }

    func run(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> PostgresQueryResult {
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
            if !(error is PSQLError) || (error as? PSQLError)?.serverInfo == nil { broken = true }
            throw StoreError("PostgreSQL: \(PostgresDatabase.describe(error))")
        }
    }

    @discardableResult
    func execute(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int {
        try run(sql, arguments).metadata.rows ?? 0
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
