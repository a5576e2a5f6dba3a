import Foundation
import SlipwayStore

/// Where the server tests keep the server's state. With `SLIPWAY_TEST_POSTGRES=postgres://…` (CI sets it,
/// see `scripts/postgres.sh`) every store gets a fresh schema of that PostgreSQL database; without it, SQLite.
enum TestDatabase {
    static let postgresURL: String? = ProcessInfo.processInfo.environment["SLIPWAY_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }

    /// The dialects the store tests run against: SQLite always, PostgreSQL when configured.
    static let dialects: [SQLDialect] = postgresURL == nil ? [.sqlite] : [.sqlite, .postgres]

    /// The location for a new store; nil means the default (SQLite in the data directory).
    static func location() throws -> DatabaseLocation? {
        postgresURL == nil ? nil : try location(.postgres, directory: "")
    }

    static func location(_ dialect: SQLDialect, directory: String) throws -> DatabaseLocation {
        switch dialect {
        case .sqlite:
            return .sqlite(path: directory + "/server.db")
        case .postgres:
            guard let postgresURL else { throw StoreError("SLIPWAY_TEST_POSTGRES is not set") }
            var settings = try PostgresDatabase.Settings(url: postgresURL)
            settings.schema = freshSchema()
            return .postgres(settings)
        }
    }

    static func freshSchema() -> String {
        "t\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
    }

    /// A store of type `Store` on a fresh database of `dialect`, in a directory removed with the fixture.
    final class Fixture<Store> {
        let directory = NSTemporaryDirectory() + "slipway-store-" + UUID().uuidString
        let location: DatabaseLocation
        let store: Store
        init(_ dialect: SQLDialect, open: (any SQLDatabase) throws -> Store) throws {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            location = try TestDatabase.location(dialect, directory: directory)
            store = try open(location.open())
        }
        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }
}
