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
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
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
        var migrator = DatabaseMigrator()
        for migration in migrations {
            migrator.registerMigration(migration.identifier) { db in try db.execute(sql: migration.sql) }
        }
        do { try migrator.migrate(queue) } catch { throw StoreError("cannot migrate the database \(path): \(error)") }
    }
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

    @discardableResult
    func execute(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int {
        do {
            let statement = try db.cachedStatement(sql: sql)
            try statement.execute(arguments: Self.arguments(arguments))
            return db.changesCount
        } catch {
            throw StoreError("database statement failed: \(error)")
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
