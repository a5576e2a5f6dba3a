import Foundation
import GRDB
@testable import SlipwayStore
import Testing

/// A new SQLite database takes every migration in one transaction; it must end up exactly as GRDB's migrator
/// leaves one (schema and recorded identifiers), so the migrator finds nothing to do on it later, and a
/// database that has a schema must still go through the migrator.
@Suite struct SQLiteMigrationTests {
    static func schema(_ path: String) throws -> [String] {
        let queue = try DatabaseQueue(path: path)
        return try queue.read { db in
            try String.fetchAll(db, sql: "SELECT type || ' ' || name || ': ' || ifnull(sql, '') FROM sqlite_master ORDER BY type, name")
                + String.fetchAll(db, sql: "SELECT 'applied ' || identifier FROM grdb_migrations ORDER BY identifier")
        }
    }

    @Test func aNewDatabaseEndsAsTheMigratorLeavesIt() throws {
        let directory = NSTemporaryDirectory() + "slipway-migrate-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let fast = try SQLiteDatabase(path: directory + "/fast.db")
        #expect(try fast.migrateNew(SQLRunStore.migrations))
        // Already migrated: nothing more for the one-transaction path, nothing for GRDB's migrator either.
        #expect(try !fast.migrateNew(SQLRunStore.migrations))
        try fast.migrate(SQLRunStore.migrations)

        var migrator = DatabaseMigrator()
        for migration in SQLRunStore.migrations {
            migrator.registerMigration(migration.identifier) { db in try db.execute(sql: migration.sql) }
        }
        try migrator.migrate(DatabaseQueue(path: directory + "/grdb.db"))

        let expected = try Self.schema(directory + "/grdb.db")
        #expect(expected.count > SQLRunStore.migrations.count * 2)
        #expect(try Self.schema(directory + "/fast.db") == expected)

        // A store opens on either and works.
        let store = try SQLRunStore(path: directory + "/fast.db")
        #expect(try store.runs(limit: 5).isEmpty)
    }

    @Test func aDatabaseWithASchemaGoesThroughTheMigrator() throws {
        let directory = NSTemporaryDirectory() + "slipway-migrate-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let database = try SQLiteDatabase(path: directory + "/old.db")
        // An older slipway's database: only the first migration applied.
        try database.migrate(Array(SQLRunStore.migrations.prefix(1)))
        #expect(try !database.migrateNew(SQLRunStore.migrations))
        try database.migrate(SQLRunStore.migrations)
        #expect(try Self.schema(directory + "/old.db").filter { $0.hasPrefix("applied ") }.count == SQLRunStore.migrations.count)
    }
}
