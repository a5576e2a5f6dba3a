import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SlipwayStore

/// `slipway serve`: the HTTP server and the run dispatcher as services of one service group, stopped
/// gracefully on SIGTERM/SIGINT.
public struct SlipwayServer: Sendable {
    public var host: String
    public var port: Int
    public var layout: ServerLayout
    public var capacity: Int
    /// How long a graceful shutdown waits for runs in progress.
    public var grace: Duration
    /// Remote runners: heartbeat timeout and the server's own labels.
    public var runners = RunnerBroker.Settings()
    /// Where the server's state is; nil: what the data directory names (`server.db` by default).
    public var database: DatabaseLocation?

    public init(host: String, port: Int, dataDirectory: String, capacity: Int = max(2, ProcessInfo.processInfo.activeProcessorCount), grace: Duration = .seconds(30)) {
        self.host = host
        self.port = port
        self.layout = ServerLayout(root: dataDirectory)
        self.capacity = capacity
        self.grace = grace
    }

    /// Opens (or creates) the server database: `database` when given, else the one the data directory
    /// remembers, else `server.db` in it. A location given to the command that creates the data directory's
    /// state is remembered (without its password) so the other commands find it; `serve` remembers its own
    /// choice, once it holds the data directory.
    public static func openStore(_ layout: ServerLayout, database: DatabaseLocation? = nil, remember always: Bool = false) throws(ServerError) -> ServerStore {
        do {
            try FileManager.default.createDirectory(atPath: layout.root, withIntermediateDirectories: true)
        } catch {
            throw ServerError("cannot create the data directory \(layout.root): \(error.localizedDescription)")
        }
        var location = DatabaseLocation.sqlite(path: layout.database)
        do throws(StoreError) {
            if let database { location = database } else if let remembered = try rememberedDatabase(layout) { location = remembered }
        } catch {
            throw ServerError("\(layout.databasePointer): \(error.message)")
        }
        if case .postgres = location, FileManager.default.fileExists(atPath: layout.database) {
            throw ServerError("\(layout.root) holds SQLite state (server.db): a data directory keeps one database, and moving its state to PostgreSQL is not supported yet; use a new --data directory with --database \(location.displayName)")
        }
        let fresh = !FileManager.default.fileExists(atPath: layout.databasePointer) && !FileManager.default.fileExists(atPath: layout.database)
        let store: ServerStore
        do { store = try ServerStore(location: location) } catch { throw ServerError(error.message) }
        if database != nil, always || fresh { try remember(location, in: layout) }
        return store
    }

    static func rememberedDatabase(_ layout: ServerLayout) throws(StoreError) -> DatabaseLocation? {
        guard let text = try? String(contentsOfFile: layout.databasePointer, encoding: .utf8) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : try DatabaseLocation.parse(trimmed)
    }

    static func remember(_ location: DatabaseLocation, in layout: ServerLayout) throws(ServerError) {
        switch location {
        case .sqlite(let path) where path == layout.database:
            try? FileManager.default.removeItem(atPath: layout.databasePointer)
        default:
            // The password stays out of the file: it comes from the URL given each time or from PGPASSWORD.
            guard FileManager.default.createFile(atPath: layout.databasePointer, contents: Data((location.displayName + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ServerError("cannot write \(layout.databasePointer)")
            }
        }
    }

    /// Runs until SIGTERM or SIGINT. `onListening` gets the bound port (useful with port 0).
    /// `onGraceExpired` is called with the number of runs still going when a graceful shutdown's grace
    /// period is over; the caller typically exits, leaving them to be resumed by the next start.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }, onGraceExpired: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        do {
            try FileManager.default.createDirectory(atPath: layout.root, withIntermediateDirectories: true)
        } catch {
            throw ServerError("cannot create the data directory \(layout.root): \(error.localizedDescription)")
        }
        // One server per data directory: a second one would take the first one's runs for abandoned ones
        // (and is refused before it touches anything, the remembered database included).
        let lock = open(layout.root + "/server.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            if lock >= 0 { close(lock) }
            throw ServerError("another `slipway serve` is using \(layout.root); stop it first")
        }
        defer { close(lock) }
        let store = try Self.openStore(layout, database: database, remember: true)
        let broker = RunnerBroker(settings: runners)
        let dispatcher = RunDispatcher(store: store, layout: layout, capacity: capacity, remote: broker)
        let services = ServerServices(store: store, layout: layout, dispatcher: dispatcher, broker: broker)
        var logger = Logger(label: "slipway.server")
        logger.logLevel = .notice
        let app = Application(
            router: ServerRoutes.router(services),
            configuration: .init(address: .hostname(host, port: port), serverName: "slipway"),
            // Services stop in reverse order: the broker keeps watching runners while the dispatcher drains.
            services: [BrokerService(broker: broker),
                       DispatcherService(dispatcher: dispatcher, grace: grace, onGraceExpired: onGraceExpired),
                       SchedulerService(scheduler: TriggerScheduler(store: store, layout: layout, wake: { dispatcher.wake() }))],
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        try await app.runService()
    }
}

/// The dispatcher as a service: on graceful shutdown it stops taking work and lets runs finish.
struct DispatcherService: Service {
    let dispatcher: RunDispatcher
    let grace: Duration
    let onGraceExpired: @Sendable (Int) -> Void
    func run() async throws {
        await dispatcher.run(grace: grace, onGraceExpired: onGraceExpired)
    }
}

/// Cron schedules and polling; stops taking new triggers on graceful shutdown.
struct SchedulerService: Service {
    let scheduler: TriggerScheduler
    func run() async throws {
        await cancelWhenGracefulShutdown { await scheduler.run() }
    }
}

/// The runner broker's watchdog: cancellations, lost runners, long polls that ran out.
struct BrokerService: Service {
    let broker: RunnerBroker
    func run() async throws {
        await cancelWhenGracefulShutdown { await broker.run() }
    }
}
