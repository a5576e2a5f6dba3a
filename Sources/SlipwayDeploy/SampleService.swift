import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

final class RequestCounter: Sendable {
    struct Counts {
        var served = 0
        var errors = 0
    }
    let value = Mutex(Counts())
    func next() -> Int { value.withLock { $0.served += 1; return $0.served } }
    func failed() { value.withLock { $0.errors += 1 } }
    var counts: Counts { value.withLock { $0 } }
}

/// The small HTTP service of `slipway demo` and the deploy tests (`slipway sample-service`): answers
/// `/` with its version, `/healthz` with 200, `/metrics` with its request counters for Prometheus
/// (`sample_requests_total{version,code}`), and misbehaves on request: a share of 500s, added latency,
/// a failing health check, or a crash after some requests.
public struct SampleService: Sendable {
    public struct Behaviour: Sendable, Equatable {
        public var version: String = "dev"
        /// Percent of `/` requests answered 500.
        public var errorPercent: Double = 0
        public var latencyMilliseconds: Int = 0
        public var unhealthy = false
        /// Exit (code 3) after this many requests.
        public var crashAfter: Int?
        public init() {}

        /// `KEY=VALUE` lines (a file shipped in a release): version, error-percent, latency-ms, unhealthy, crash-after.
        public mutating func read(_ text: String) {
            for line in text.split(whereSeparator: \.isNewline) {
                let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { continue }
                switch parts[0] {
                case "version": version = parts[1]
                case "error-percent": errorPercent = Double(parts[1]) ?? errorPercent
                case "latency-ms": latencyMilliseconds = Int(parts[1]) ?? latencyMilliseconds
                case "unhealthy": unhealthy = parts[1] == "true" || parts[1] == "1"
                case "crash-after": crashAfter = Int(parts[1])
                default: continue
                }
            }
        }
    }

    public var port: Int
    public var behaviour: Behaviour

    public init(port: Int, behaviour: Behaviour) {
        self.port = port
        self.behaviour = behaviour
    }

    /// Serves until the process is signalled.
    public func run() async throws {
        let behaviour = self.behaviour
        let counter = RequestCounter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(SampleHandler(behaviour: behaviour, counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        try await channel.closeFuture.get()
    }
}

private final class SampleHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let behaviour: SampleService.Behaviour
    let counter: RequestCounter
    var uri = "/"
    var keepAlive = true

    init(behaviour: SampleService.Behaviour, counter: RequestCounter) {
        self.behaviour = behaviour
        self.counter = counter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            uri = head.uri
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            respond(context: context)
        }
    }

    private func respond(context: ChannelHandlerContext) {
        let path = uri.split(separator: "?").first.map(String.init) ?? "/"
        if path == "/healthz" {
            send(behaviour.unhealthy ? .serviceUnavailable : .ok, behaviour.unhealthy ? "unhealthy\n" : "ok\n", context: context)
            return
        }
        if path == "/metrics" {
            let counts = counter.counts
            let version = behaviour.version.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            send(.ok, """
                # HELP sample_requests_total Requests to / answered, by status code.
                # TYPE sample_requests_total counter
                sample_requests_total{version="\(version)",code="200"} \(counts.served - counts.errors)
                sample_requests_total{version="\(version)",code="500"} \(counts.errors)

                """, context: context, contentType: "text/plain; version=0.0.4")
            return
        }
        let served = counter.next()
        if let limit = behaviour.crashAfter, served > limit {
            exit(3)
        }
        let failing = behaviour.errorPercent > 0 && Double.random(in: 0..<100) < behaviour.errorPercent
        if failing { counter.failed() }
        let status: HTTPResponseStatus = failing ? .internalServerError : .ok
        let body = failing ? "error from \(behaviour.version)\n" : "hello from \(behaviour.version)\n"
        if behaviour.latencyMilliseconds > 0 {
            let loop = context.eventLoop.assumeIsolated()
            loop.scheduleTask(in: .milliseconds(Int64(behaviour.latencyMilliseconds))) {
                self.send(status, body, context: context)
            }
        } else {
            send(status, body, context: context)
        }
    }

    private func send(_ status: HTTPResponseStatus, _ body: String, context: ChannelHandlerContext, contentType: String = "text/plain") {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "X-Version", value: behaviour.version)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
