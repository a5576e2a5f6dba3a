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

    public init(host: String, port: Int, dataDirectory: String, capacity: Int = max(2, ProcessInfo.processInfo.activeProcessorCount), grace: Duration = .seconds(30)) {
        self.host = host
        self.port = port
        self.layout = ServerLayout(root: dataDirectory)
        self.capacity = capacity
        self.grace = grace
    }

    /// Opens (or creates) the data directory's server database.
    public static func openStore(_ layout: ServerLayout) throws(ServerError) -> ServerStore {
        do {
            try FileManager.default.createDirectory(atPath: layout.root, withIntermediateDirectories: true)
        } catch {
            throw ServerError("cannot create the data directory \(layout.root): \(error.localizedDescription)")
        }
        do { return try ServerStore(path: layout.database) } catch { throw ServerError(error.message) }
    }

    /// Runs until SIGTERM or SIGINT. `onListening` gets the bound port (useful with port 0).
    /// `onGraceExpired` is called with the number of runs still going when a graceful shutdown's grace
    /// period is over; the caller typically exits, leaving them to be resumed by the next start.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }, onGraceExpired: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let store = try Self.openStore(layout)
        // One server per data directory: a second one would take the first one's runs for abandoned ones.
        let lock = open(layout.root + "/server.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            throw ServerError("another `slipway serve` is using \(layout.root); stop it first")
        }
        defer { close(lock) }
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
