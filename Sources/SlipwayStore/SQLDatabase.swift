import Foundation

/// A value going into or coming out of a SQL statement: the types both SQLite and PostgreSQL store the same way.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
}

/// A Swift value that can be bound to a statement parameter.
public protocol SQLBindable: Sendable {
    var sqlValue: SQLValue { get }
}

extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .integer(self) } }
extension Int32: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .real(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .integer(self ? 1 : 0) } }
extension Data: SQLBindable { public var sqlValue: SQLValue { .blob(self) } }
extension Date: SQLBindable { public var sqlValue: SQLValue { .real(timeIntervalSince1970) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// A Swift value a column can be read as.
public protocol SQLDecodable {
    static func decode(_ value: SQLValue) -> Self?
}

extension String: SQLDecodable {
    public static func decode(_ value: SQLValue) -> String? {
        switch value {
        case .text(let text): text
        case .integer(let number): String(number)
        case .real(let number): String(number)
        case .blob(let data): String(data: data, encoding: .utf8)
        case .null: nil
        }
    }
}

extension Int64: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Int64? {
        switch value {
        case .integer(let number): number
        case .real(let number): number.isFinite && abs(number) < 9.2e18 ? Int64(number) : nil
        case .text(let text): Int64(text)
        default: nil
        }
    }
}

extension Int: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Int? { Int64.decode(value).map { Int($0) } }
}

extension Int32: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Int32? { Int64.decode(value).flatMap { Int32(exactly: $0) } }
}

extension Double: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Double? {
        switch value {
        case .real(let number): number
        case .integer(let number): Double(number)
        case .text(let text): Double(text)
        default: nil
        }
    }
}

extension Bool: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Bool? { Int64.decode(value).map { $0 != 0 } }
}

extension Data: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Data? {
        switch value {
        case .blob(let data): data
        case .text(let text): Data(text.utf8)
        default: nil
        }
    }
}

extension Date: SQLDecodable {
    public static func decode(_ value: SQLValue) -> Date? { Double.decode(value).map(Date.init(timeIntervalSince1970:)) }
}

/// One result row, by column name (as the statement names it; PostgreSQL folds unquoted names to lower case,
/// so every column name used here is lower case).
public struct SQLRow: Sendable {
    public var columns: [String: SQLValue]

    public init(columns: [String: SQLValue]) { self.columns = columns }

    /// The column's value; nil when it is NULL or cannot be read as `T`.
    public subscript<T: SQLDecodable>(_ column: String) -> T? {
        columns[column].flatMap { T.decode($0) }
    }

    /// The column's value, which must be there: a NULL or a wrong type is a corrupt row, reported as such.
    public func get<T: SQLDecodable>(_ column: String) throws(StoreError) -> T {
        guard let value = columns[column] else { throw StoreError("the database returned no column '\(column)'") }
        guard let decoded = T.decode(value) else { throw StoreError("column '\(column)' holds \(value.kind), expected \(T.self)") }
        return decoded
    }
}

extension SQLValue {
    var kind: String {
        switch self {
        case .null: "NULL"
        case .integer: "an integer"
        case .real: "a real number"
        case .text: "text"
        case .blob: "a blob"
        }
    }
}

/// The two SQL dialects a store runs on.
public enum SQLDialect: String, Sendable {
    case sqlite, postgres

    /// Rewrites a migration written for SQLite into this dialect: migrations are written once, in SQLite's
    /// words, and translated type by type so both databases get the same schema.
    public func translateDDL(_ sql: String) -> String {
        guard self == .postgres else { return sql }
        var out = sql
        let rules: [(String, String)] = [
            (#"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"#, "BIGSERIAL PRIMARY KEY"),
            (#"\bINTEGER\b"#, "BIGINT"),
            // A bare DOUBLE (SQLite's REAL affinity); never one already followed by PRECISION.
            (#"\bDOUBLE\b(?! PRECISION)"#, "DOUBLE PRECISION"),
            (#"\bREAL\b"#, "DOUBLE PRECISION"),
            (#"\bBLOB\b"#, "BYTEA"),
        ]
        for (pattern, replacement) in rules {
            out = out.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        return out
    }

    /// `?` placeholders → this dialect's (`$1`, `$2`, … for PostgreSQL), leaving quoted text alone.
    public func placeholders(_ sql: String) -> String {
        guard self == .postgres else { return sql }
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var index = 0
        Self.scan(sql) { character, quoted in
            if !quoted, character == "?" {
                index += 1
                out += "$\(index)"
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// Splits a script of statements at `;` outside quotes (PostgreSQL's extended protocol takes one at a time).
    public static func statements(_ script: String) -> [String] {
        var statements: [String] = []
        var current = ""
        scan(script) { character, quoted in
            if !quoted, character == ";" {
                statements.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        statements.append(current)
        return statements.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    /// Each character of `sql`, and whether it lies inside '…' or "…" (the quotes themselves count as inside).
    static func scan(_ sql: String, _ visit: (Character, Bool) -> Void) {
        var quote: Character?
        for character in sql {
            if let open = quote {
                if character == open { quote = nil }
                visit(character, true)
            } else if character == "'" || character == "\"" {
                quote = character
                visit(character, true)
            } else {
                visit(character, false)
            }
        }
    }
}

/// A schema change, identified by a name that never changes once shipped.
public struct SQLMigration: Sendable {
    public var identifier: String
    /// Statements in SQLite's dialect; see `SQLDialect.translateDDL`.
    public var sql: String

    public init(_ identifier: String, _ sql: String) {
        self.identifier = identifier
        self.sql = sql
    }
}

/// A connection inside a transaction (or a read). Statements use `?` placeholders in both dialects.
public protocol SQLConnection {
    var dialect: SQLDialect { get }
    /// Runs a statement; returns the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int
    func query(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> [SQLRow]
    /// Runs an INSERT into a table with an `id` key and returns the new row's id.
    func insert(_ sql: String, _ arguments: [any SQLBindable]) throws(StoreError) -> Int64
}

extension SQLConnection {
    public func queryOne(_ sql: String, _ arguments: [any SQLBindable] = []) throws(StoreError) -> SQLRow? {
        try query(sql, arguments).first
    }

}

/// A database a store runs on: SQLite (one file, one writer) or PostgreSQL (one schema of a server).
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Runs `body` in a transaction, committed when it returns and rolled back when it throws.
    func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T
    func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T
    /// `write` for a body of exactly one statement, which is atomic on its own: PostgreSQL then needs no
    /// BEGIN/COMMIT round trips. A second statement in the body is refused, not run outside a transaction.
    func writeOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T
    /// `read` for a body of exactly one statement (one statement is one snapshot).
    func readOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T
    /// Applies the migrations not applied yet, in order, each in its own transaction.
    func migrate(_ migrations: [SQLMigration]) throws(StoreError)
}

extension SQLDatabase {
    public func writeOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try write(body) }
    public func readOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try read(body) }
}

/// A store on a `SQLDatabase`: its transactions under short names.
protocol SQLBackedStore {
    var database: any SQLDatabase { get }
}

extension SQLBackedStore {
    func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try database.write(body) }
    func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try database.read(body) }
    /// For bodies of exactly one statement (see `SQLDatabase.writeOne`).
    func writeOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try database.writeOne(body) }
    func readOne<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try database.readOne(body) }
}

/// Where a store's database is: a SQLite file or a PostgreSQL URL.
public enum DatabaseLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresDatabase.Settings)

    /// Parses `sqlite://PATH`, a plain path, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME]`.
    public static func parse(_ text: String) throws(StoreError) -> DatabaseLocation {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            return .postgres(try PostgresDatabase.Settings(url: text))
        }
        if text.hasPrefix("sqlite://") {
            let path = String(text.dropFirst("sqlite://".count))
            guard !path.isEmpty else { throw StoreError("sqlite:// needs a path, e.g. sqlite:///var/lib/slipway/server.db") }
            return .sqlite(path: URL(fileURLWithPath: path).standardizedFileURL.path)
        }
        if text.contains("://") {
            throw StoreError("unsupported database URL scheme in '\(text.prefix(while: { $0 != ":" }))://…': use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")
        }
        guard !text.isEmpty else { throw StoreError("empty database location") }
        return .sqlite(path: URL(fileURLWithPath: text).standardizedFileURL.path)
    }

    /// For messages: never includes a password.
    public var displayName: String {
        switch self {
        case .sqlite(let path): "sqlite://\(path)"
        case .postgres(let settings): settings.displayName
        }
    }

    public func open() throws(StoreError) -> any SQLDatabase {
        switch self {
        case .sqlite(let path): try SQLiteDatabase(path: path)
        case .postgres(let settings): try PostgresDatabase(settings: settings)
        }
    }
}
