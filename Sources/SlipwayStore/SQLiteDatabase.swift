import CSlipwaySQLite
import Foundation
import GRDB

/// A SQLite file (WAL, synchronous=NORMAL) behind GRDB's single writer.
public final class SQLiteDatabase: SQLDatabase {
    let queue: DatabaseQueue
    public let path: String
    public var dialect: SQLDialect { .sqlite }

    public init(path: String) throws(StoreError) {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        // Statement journals in memory: a multi-row statement inside a transaction (the journal's folds) keeps
        // one to undo itself alone, which past 64 KiB SQLite otherwise spills to a temporary file, a page and
        // its number at a time (two system calls each).
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY") }
        configuration.journalMode = .wal
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw StoreError("cannot open the database \(path): \(error)")
        }
    }

    public func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try mappingErrors("write") { try queue.write { db in try body(GRDBConnection(db: db)) } }
    }

    public func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        try mappingErrors("read") { try queue.read { db in try body(GRDBConnection(db: db)) } }
    }

    /// GRDB's errors as StoreErrors; the body's own StoreErrors pass through.
    func mappingErrors<T>(_ what: String, _ work: () throws -> T) throws(StoreError) -> T {
        do {
            return try work()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("database \(what) failed: \(error)")
        }
    }

    /// GRDB's migrator, so databases created before this type existed (same identifiers) carry on.
    public func migrate(_ migrations: [SQLMigration]) throws(StoreError) {
        if try migrateNew(migrations) { return }
        var migrator = DatabaseMigrator()
        for migration in migrations {
            migrator.registerMigration(migration.identifier) { db in try db.execute(sql: migration.sql) }
        }
        do { try migrator.migrate(queue) } catch { throw StoreError("cannot migrate the database \(path): \(error)") }
    }

    /// A database without any schema yet takes every migration in one transaction, recorded as GRDB's
    /// migrator records them (so it finds nothing to do later): one commit instead of one per migration,
    /// each with its foreign-key check of tables that are still empty. Half of a first run's start-up went
    /// there. False when the database has a schema already, for the migrator.
    func migrateNew(_ migrations: [SQLMigration]) throws(StoreError) -> Bool {
        let isEmpty = "SELECT count(*) = 0 FROM sqlite_master"
        do {
            return try queue.inDatabase { db in
                // Read first: a database in use is never write-locked here.
                guard !migrations.isEmpty, try Bool.fetchOne(db, sql: isEmpty) == true else { return false }
                var created = false
                try db.inTransaction(.immediate) {
                    // Another process may have created it meanwhile.
                    guard try Bool.fetchOne(db, sql: isEmpty) == true else { return .commit }
                    for migration in migrations { try db.execute(sql: migration.sql) }
                    try db.execute(sql: Self.migrationsTable)
                    for migration in migrations {
                        try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [migration.identifier])
                    }
                    created = true
                    return .commit
                }
                return created
            }
        } catch {
            throw StoreError("cannot migrate the database \(path): \(error)")
        }
    }

    /// The table GRDB's `DatabaseMigrator` keeps applied identifiers in, as it creates it.
    static let migrationsTable = "CREATE TABLE IF NOT EXISTS grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)"
}

struct GRDBConnection: SQLConnection {
    let db: Database
    var dialect: SQLDialect { .sqlite }

    static func arguments(_ values: [any SQLBindable]) -> StatementArguments {
        // The optional-existential initializer: the one for `[DatabaseValue]` maps through a key path the
        // runtime builds on every call (5 % of a wide run's CPU).
        StatementArguments(values.map { value -> (any DatabaseValueConvertible)? in
            switch value.sqlValue {
            case .null: nil
            case .integer(let number): number
            case .real(let number): number
            case .text(let text): text
            case .blob(let data): data
            }
        })
    }

    /// Runs a write statement on GRDB's cached prepared statement, bound and stepped in C: GRDB's own
    /// `execute(arguments:)` validates parameter names and nests a closure per argument, which cost more than
    /// SQLite itself on the engine's hot path (a turn of a run writes about eight statements).
    @discardableResult
    func execute(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int {
        let statement: Statement
        do {
            statement = try db.cachedStatement(sql: sql)
        } catch {
            throw StoreError("database statement failed: \(error)")
        }
        let handle = UnsafeMutableRawPointer(statement.sqliteStatement)
        // Writes run inside a transaction; none open means SQLite rolled it back after an earlier error,
        // and this statement must not commit on its own.
        guard slipway_sqlite_autocommit(handle) == 0 else {
            throw StoreError("database statement refused: its transaction was rolled back after an earlier error - while executing `\(sql)`")
        }
        let code = Self.run(statement.sqliteStatement, arguments)
        guard code == 0 else {
            // Extended result codes are on (GRDB turns them on): 2067 is a UNIQUE constraint, 19 in basic codes.
            let message = switch code {
            case 25: "the statement takes \(slipway_sqlite_parameter_count(handle)) arguments, not \(arguments.count)"
            case 18: "a value is larger than SQLite takes (2 GiB)"
            default: String(cString: slipway_sqlite_errmsg(handle))
            }
            throw StoreError("database statement failed: SQLite error \(code): \(message) - while executing `\(sql)`", sqliteCode: code)
        }
        return db.changesCount
    }

    /// Binds `arguments` without copying each one: texts and blobs go into one buffer that lives through the call.
    static func run(_ statement: OpaquePointer, _ arguments: [any SQLBindable]) -> Int32 {
        var values = [slipway_sql_value](repeating: slipway_sql_value(), count: arguments.count)
        var bytes: [UInt8] = []
        var spans: [(index: Int, offset: Int)] = []
        for (index, argument) in arguments.enumerated() {
            switch argument.sqlValue {
            case .null:
                values[index].kind = 0
            case .integer(let number):
                values[index].kind = 1
                values[index].integer = number
            case .real(let number):
                values[index].kind = 2
                values[index].real = number
            case .text(let text):
                values[index].kind = 3
                spans.append((index, bytes.count))
                bytes.append(contentsOf: text.utf8)
                values[index].length = Int32(clamping: bytes.count - spans[spans.count - 1].offset)
            case .blob(let data):
                values[index].kind = 4
                spans.append((index, bytes.count))
                bytes.append(contentsOf: data)
                values[index].length = Int32(clamping: bytes.count - spans[spans.count - 1].offset)
            }
        }
        // SQLite takes at most 2 GiB per value (SQLITE_TOOBIG).
        guard bytes.count <= Int(Int32.max) else { return 18 }
        return bytes.withUnsafeBufferPointer { buffer in
            if let base = buffer.baseAddress {
                for span in spans { values[span.index].bytes = UnsafeRawPointer(base + span.offset) }
            }
            return slipway_sqlite_execute(UnsafeMutableRawPointer(statement), values, Int32(values.count))
        }
    }

    /// The rowid SQLite assigned (no `RETURNING`: it needs SQLite 3.35, newer than some systems have).
    func insert(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int64 {
        _ = try execute(sql, arguments)
        return db.lastInsertedRowID
    }

    func query(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> [SQLRow] {
        do {
            let statement = try db.cachedStatement(sql: sql)
            return try Row.fetchAll(statement, arguments: Self.arguments(arguments)).map { row in
                var columns: [String: SQLValue] = [:]
                for (name, value) in row {
                    switch value.storage {
                    case .null: columns[name] = .null
                    case .int64(let number): columns[name] = .integer(number)
                    case .double(let number): columns[name] = .real(number)
                    case .string(let text): columns[name] = .text(text)
                    case .blob(let data): columns[name] = .blob(data)
                    }
                }
                return SQLRow(columns: columns)
            }
        } catch {
            throw StoreError("database query failed: \(error)")
        }
    }
}
