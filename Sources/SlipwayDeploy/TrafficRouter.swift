#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Limits and timeouts of the router. The defaults are the product's.
struct RouterConfiguration: Sendable {
    /// Request line + headers of one request; larger gets 431.
    var maxHeaderBytes = 64 * 1024
    var maxHeaderCount = 256
    var connectTimeout: TimeAmount = .seconds(2)
    /// A client connection that sends nothing for this long while no request of it is in flight is closed.
    var clientIdleTimeout: TimeAmount = .seconds(60)
    /// A backend that sends nothing for this long while a request waits on it: 504 (or the connection is cut
    /// if the response had started). Idle pooled connections are closed after this long too.
    var backendIdleTimeout: TimeAmount = .seconds(60)
    /// Idle keep-alive connections kept per backend per event loop.
    var maxIdleConnectionsPerBackend = 256
    /// How long a backend whose connection failed is skipped (passive health).
    var ejectionDuration: Duration = .seconds(3)
    /// Request body bytes read and thrown away after an early response before the connection is closed instead.
    var maxDiscardedBodyBytes = 1 << 20
    /// Samples kept per version for `window(version:since:)`.
    var samplesPerVersion = VersionRecorder.defaultRingCapacity
    var threads = System.coreCount
    /// Forward heads and bodies as bytes (see ProxyFastPath.swift); false: NIOHTTP1 decode/encode for everything.
    /// `SLIPWAY_ROUTER_FAST_PATH=0` in the environment turns it off (an escape hatch, and bench/router.sh's
    /// comparison of the two paths).
    var fastPath = RouterConfiguration.fastPathFromEnvironment

    static let fastPathFromEnvironment: Bool = {
        guard let value = getenv("SLIPWAY_ROUTER_FAST_PATH") else { return true }
        return String(cString: value) != "0"
    }()
}

public enum TrafficRouterError: Error, Sendable, Equatable {
    case alreadyStarted
    case notRunning
}

/// The built-in traffic router: an HTTP/1.1 reverse proxy that splits requests between the versions of a service
/// by weight, header/cookie rules and a sticky cookie, and measures every version's requests, errors and latency.
///
/// `update(_:)` switches the routing table atomically: every request whose head arrives after it returns is routed
/// by the new table; requests already in flight finish on their backend.
public final class TrafficRouter: Sendable {
    private struct Running: Sendable {
        let group: MultiThreadedEventLoopGroup
        let channel: any Channel
        let port: Int
        let loops: [NIOLoopBoundBox<LoopContext>]
    }

    private enum Lifecycle: Sendable {
        case idle
        case starting
        case running(Running)
        case stopped
    }

    private let host: String
    private let port: Int
    let configuration: RouterConfiguration
    private let routing: Mutex<RoutingState>
    let metricsStore: RouterMetricsStore
    private let lifecycle = Mutex<Lifecycle>(.idle)
    /// The table has rules or a sticky cookie: the fast path collects the request's headers for `route`.
    private let usesHeaders: Atomic<Bool>
    /// Client connections handed over from the fast path to the NIOHTTP1 path (for tests and diagnostics).
    let fallbacks = Atomic<Int>(0)
    /// For connections handed over to the NIOHTTP1 path.
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    let encoderConfiguration: HTTPResponseEncoder.Configuration

    public convenience init(
        host: String = "127.0.0.1",
        port: Int,
        table: RoutingTable = .init(backends: [], weights: [:], rules: [], stickyCookie: nil)
    ) {
        self.init(host: host, port: port, table: table, configuration: RouterConfiguration())
    }

    init(host: String, port: Int, table: RoutingTable, configuration: RouterConfiguration, seed: UInt64? = nil) {
        self.host = host
        self.port = port
        self.configuration = configuration
        var state = RoutingState(table: table, seed: seed ?? UInt64.random(in: .min ... .max))
        state.ejectionDuration = configuration.ejectionDuration
        self.usesHeaders = Atomic(Self.usesHeaders(state.compiled))
        self.routing = Mutex(state)
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = configuration.maxHeaderBytes
        decoderLimits.maxHeaderListSize = configuration.maxHeaderBytes
        decoderLimits.maxHeaderFieldCount = configuration.maxHeaderCount
        self.decoderLimits = decoderLimits
        var encoderConfiguration = HTTPResponseEncoder.Configuration()
        // The proxy keeps the backend's framing (Content-Length or chunked) and sets it itself on its own responses.
        encoderConfiguration.automaticallySetFramingHeaders = false
        self.encoderConfiguration = encoderConfiguration
        self.metricsStore = RouterMetricsStore(ringCapacity: configuration.samplesPerVersion)
    }

    /// Binds and starts serving; port 0 picks a free port (see `boundPort`).
    public func start() async throws {
        try self.lifecycle.withLock { state in
            guard case .idle = state else { throw TrafficRouterError.alreadyStarted }
            state = .starting
        }
        let configuration = self.configuration
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        var boxes: [ObjectIdentifier: NIOLoopBoundBox<LoopContext>] = [:]
        var loops: [NIOLoopBoundBox<LoopContext>] = []
        for loop in group.makeIterator() {
            let box = NIOLoopBoundBox.makeBoxSendingValue(LoopContext(eventLoop: loop, configuration: configuration), eventLoop: loop)
            boxes[ObjectIdentifier(loop)] = box
            loops.append(box)
        }
        let contexts = boxes

        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let box = contexts[ObjectIdentifier(channel.eventLoop)] else {
                        throw TrafficRouterError.notRunning
                    }
                    let sync = channel.pipeline.syncOperations
                    // Read idle only: an all/write timeout makes IdleStateHandler allocate a promise per write.
                    try sync.addHandler(IdleStateHandler(readTimeout: configuration.clientIdleTimeout))
                    if configuration.fastPath {
                        // Raw bytes; hands the connection over to the NIOHTTP1 path below when a request needs it.
                        try sync.addHandler(FastProxyHandler(router: self, loop: box.value))
                        return
                    }
                    // No pipelining assistance and no error handler from NIO: ProxyHandler queues pipelined
                    // requests itself (without stopping reads for every request) and answers bad HTTP.
                    // No outbound header validation: backend headers were parsed by llhttp, and the values the
                    // router adds are sanitised when a table is installed.
                    try sync.configureHTTPServerPipeline(
                        withPipeliningAssistance: false,
                        withErrorHandling: false,
                        withOutboundHeaderValidation: false,
                        withEncoderConfiguration: self.encoderConfiguration,
                        withDecoderLimitConfiguration: self.decoderLimits
                    )
                    try sync.addHandler(ProxyHandler(router: self, loop: box.value))
                }
            }

        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: self.host, port: self.port).get()
        } catch {
            self.lifecycle.withLock { $0 = .idle }
            try? await group.shutdownGracefully()
            throw error
        }
        let port = channel.localAddress?.port ?? self.port
        let running = Running(group: group, channel: channel, port: port, loops: loops)
        let stoppedMeanwhile = self.lifecycle.withLock { state -> Bool in
            guard case .starting = state else { return true }
            state = .running(running)
            return false
        }
        if stoppedMeanwhile {
            try? await Self.stop(running)
        }
    }

    /// The port the router listens on (the requested one before `start()`).
    public var boundPort: Int {
        self.lifecycle.withLock { state in
            if case .running(let running) = state { return running.port }
            return self.port
        }
    }

    /// Installs a new routing table at once: new requests follow it; in-flight ones finish on their backend.
    public func update(_ table: RoutingTable) {
        let removed = self.routing.withLock { state in
            let removed = state.update(table)
            self.usesHeaders.store(Self.usesHeaders(state.compiled), ordering: .releasing)
            return removed
        }
        guard !removed.isEmpty else { return }
        // Side effect after the lock: close pooled idle connections to backends that left the table.
        let loops = self.lifecycle.withLock { state -> [NIOLoopBoundBox<LoopContext>] in
            if case .running(let running) = state { return running.loops }
            return []
        }
        for box in loops {
            box.eventLoop.execute {
                box.value.closeIdleConnections(to: removed)
            }
        }
    }

    public var table: RoutingTable {
        self.routing.withLock { $0.compiled.table }
    }

    /// Per-version counts and latency percentiles: since the start (`nil`, from the histograms) or since an instant
    /// (from the recent samples, exact percentiles).
    public func metrics(since: ContinuousClock.Instant?) -> [String: VersionMetrics] {
        self.metricsStore.metrics(since: since)
    }

    /// Raw latency samples (ms) and counts per version in a window, for statistical comparison.
    /// Latencies are those of the most recent responses (up to 10 000 per version) recorded at or after `since`.
    public func window(version: String, since: ContinuousClock.Instant) -> (requests: Int, errors: Int, latencies: [Double]) {
        self.metricsStore.window(version: version, since: since)
    }

    /// Stops listening, closes every client and backend connection and the router's threads.
    public func shutdown() async throws {
        let running = self.lifecycle.withLock { state -> Running? in
            defer { state = .stopped }
            if case .running(let running) = state { return running }
            return nil
        }
        guard let running else { return }
        try await Self.stop(running)
    }

    private static func stop(_ running: Running) async throws {
        try? await running.channel.close().get()
        for box in running.loops {
            try? await box.eventLoop.submit {
                box.value.shutdown()
            }.get()
        }
        try await running.group.shutdownGracefully()
    }

    // MARK: - Used by the handlers

    private static func usesHeaders(_ compiled: CompiledTable) -> Bool {
        !compiled.table.rules.isEmpty || compiled.stickyCookie != nil
    }

    /// Whether `route` looks at the request's headers (rules, sticky cookie).
    var routingUsesHeaders: Bool {
        self.usesHeaders.load(ordering: .acquiring)
    }

    func route(_ headers: HTTPHeaders) -> RouteDecision? {
        let now = ContinuousClock.now
        return self.routing.withLock { $0.route(headers, now: now) }
    }

    func connectionFailed(to backend: Backend) {
        let now = ContinuousClock.now
        self.routing.withLock { $0.eject(backend, now: now) }
    }

    func connected(to backend: Backend) {
        self.routing.withLock { $0.markHealthy(backend) }
    }

    func record(version: String, start: ContinuousClock.Instant, isError: Bool) {
        let now = ContinuousClock.now
        let elapsed = now - start
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        self.metricsStore.record(version: version, milliseconds: milliseconds, isError: isError, at: now)
    }
}
