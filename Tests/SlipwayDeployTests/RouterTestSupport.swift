import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import SlipwayDeploy

// Real sockets on 127.0.0.1: a tiny NIO HTTP backend, a minimal HTTP/1.1 client, and a raw TCP client.

/// Counters a test backend keeps.
final class BackendStats: Sendable {
    private let state = Mutex((connections: 0, requests: 0))

    var connections: Int { self.state.withLock { $0.connections } }
    var requests: Int { self.state.withLock { $0.requests } }

    func connectionOpened() { self.state.withLock { $0.connections += 1 } }
    func requestServed() { self.state.withLock { $0.requests += 1 } }
}

/// A small HTTP/1.1 server standing in for one instance of a version.
///
/// - `/status/NNN`: responds with that status.
/// - `/download/N`: streams N bytes (chunked, 64 KiB parts, written as the client reads them).
/// - `/upload`: reads the body and answers `received=N`.
/// - `/slow/MS`: answers after MS milliseconds.
/// - anything else: `backend=NAME`, `host=…`, `xff=…`, `method=…`, one per line.
final class TestBackend: Sendable {
    let name: String
    let stats: BackendStats
    private let channel: any Channel
    var port: Int { self.channel.localAddress?.port ?? 0 }

    private init(name: String, channel: any Channel, stats: BackendStats) {
        self.name = name
        self.channel = channel
        self.stats = stats
    }

    static func start(name: String) async throws -> TestBackend {
        let stats = BackendStats()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    stats.connectionOpened()
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(TestBackendHandler(name: name, stats: stats))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return TestBackend(name: name, channel: channel, stats: stats)
    }

    func backend(version: String) -> Backend {
        Backend(version: version, host: "127.0.0.1", port: self.port)
    }

    func stop() async {
        try? await self.channel.close().get()
    }
}

private final class TestBackendHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let name: String
    private let stats: BackendStats
    private var head: HTTPRequestHead?
    private var received = 0

    init(name: String, stats: BackendStats) {
        self.name = name
        self.stats = stats
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.received = 0
            if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                let informational = HTTPResponseHead(version: .http1_1, status: .continue)
                context.writeAndFlush(Self.wrapOutboundOut(.head(informational)), promise: nil)
            }
        case .body(let buffer):
            self.received += buffer.readableBytes
        case .end:
            guard let head = self.head else { return }
            self.stats.requestServed()
            self.respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri
        if path.hasPrefix("/status/"), let code = Int(path.dropFirst("/status/".count)) {
            self.send(status: HTTPResponseStatus(statusCode: code), body: "status \(code) from \(self.name)\n", context: context)
        } else if path.hasPrefix("/download/"), let size = Int(path.dropFirst("/download/".count)) {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: String(size))
            context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            Self.stream(remaining: size, context: context)
        } else if path == "/close-after" {
            // Answers as if keep-alive, then closes: a pooled connection that goes stale.
            self.send(status: .ok, body: "backend=\(self.name)\nclosing\n", context: context)
            context.close(promise: nil)
        } else if path == "/upload" {
            self.send(status: .ok, body: "received=\(self.received)\n", context: context)
        } else if path.hasPrefix("/slow/"), let milliseconds = Int64(path.dropFirst("/slow/".count)) {
            let name = self.name
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(milliseconds)) {
                self.send(status: .ok, body: "backend=\(name)\nslow\n", context: context)
            }
        } else {
            let host = head.headers["host"].joined(separator: ",")
            let xff = head.headers["x-forwarded-for"].joined(separator: ",")
            let connection = head.headers["connection"].joined(separator: ",")
            self.send(
                status: .ok,
                body: "backend=\(self.name)\nhost=\(host)\nxff=\(xff)\nmethod=\(head.method.rawValue)\nconnection=\(connection)\n",
                context: context
            )
        }
    }

    /// Writes the body in 64 KiB parts, waiting for each to be written before the next (bounded memory).
    private static func stream(remaining: Int, context: ChannelHandlerContext) {
        guard remaining > 0 else {
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let size = min(remaining, 65_536)
        var buffer = context.channel.allocator.buffer(capacity: size)
        buffer.writeRepeatingByte(UInt8(ascii: "x"), count: size)
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(buffer)))).assumeIsolated().whenSuccess {
            Self.stream(remaining: remaining - size, context: context)
        }
    }

    private func send(status: HTTPResponseStatus, body: String, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "X-Backend", value: self.name)
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}

struct TestResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: String
    var bodyBytes: Int

    var version: String? { self.headers["x-slipway-version"].first }
    var backend: String? { self.headers["x-backend"].first }
}

/// One keep-alive HTTP/1.1 client connection; requests are sent one at a time.
final class TestHTTPConnection: Sendable {
    private let channel: any Channel
    private let collector: NIOLoopBound<ResponseCollector>

    private init(channel: any Channel, collector: NIOLoopBound<ResponseCollector>) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(port: Int) async throws -> TestHTTPConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector())
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let collector = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ResponseCollector.self), eventLoop: channel.eventLoop)
        }.get()
        return TestHTTPConnection(channel: channel, collector: collector)
    }

    func close() async {
        try? await self.channel.close().get()
    }

    /// Sends a request; with `bodySize`, a chunked body of that many bytes in parts of `partSize`.
    /// With `keepBody: false` only the body's size is kept.
    func send(
        _ method: HTTPMethod = .GET,
        _ uri: String = "/",
        headers: [(String, String)] = [],
        bodySize: Int? = nil,
        partSize: Int = 65_536,
        keepBody: Bool = true
    ) async throws -> TestResponse {
        var requestHeaders = HTTPHeaders(headers)
        if !requestHeaders.contains(name: "host") {
            requestHeaders.add(name: "Host", value: "router.test")
        }
        if bodySize != nil {
            requestHeaders.add(name: "Transfer-Encoding", value: "chunked")
        }
        let promise = self.channel.eventLoop.makePromise(of: TestResponse.self)
        let collector = self.collector
        self.channel.eventLoop.execute {
            collector.value.expect(promise, keepBody: keepBody)
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: requestHeaders)
        try await self.channel.writeAndFlush(HTTPClientRequestPart.head(head)).get()
        if var remaining = bodySize {
            var part = self.channel.allocator.buffer(capacity: partSize)
            part.writeRepeatingByte(UInt8(ascii: "u"), count: partSize)
            while remaining > 0 {
                let size = min(remaining, partSize)
                try await self.channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(part.getSlice(at: 0, length: size)!))).get()
                remaining -= size
            }
        }
        try await self.channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        return try await promise.futureResult.get()
    }
}

/// Collects response parts into `TestResponse`s for the requests in flight, in order.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var waiting: [(promise: EventLoopPromise<TestResponse>, keepBody: Bool)] = []
    private var current: TestResponse?

    func expect(_ promise: EventLoopPromise<TestResponse>, keepBody: Bool) {
        self.waiting.append((promise, keepBody))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.current = TestResponse(status: Int(head.status.code), headers: head.headers, body: "", bodyBytes: 0)
        case .body(let buffer):
            self.current?.bodyBytes += buffer.readableBytes
            if self.waiting.first?.keepBody ?? true {
                self.current?.body += String(buffer: buffer)
            }
        case .end:
            guard let response = self.current, !self.waiting.isEmpty else { return }
            self.current = nil
            self.waiting.removeFirst().promise.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(TestClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        let waiting = self.waiting
        self.waiting.removeAll()
        for entry in waiting {
            entry.promise.fail(error)
        }
    }
}

enum TestClientError: Error {
    case noResponse
    case connectionClosed
}

/// Opens one client connection to `port`, runs `body`, closes it.
func withHTTPConnection<T: Sendable>(
    port: Int,
    _ body: (TestHTTPConnection) async throws -> T
) async throws -> T {
    let connection = try await TestHTTPConnection.connect(port: port)
    do {
        let result = try await body(connection)
        await connection.close()
        return result
    } catch {
        await connection.close()
        throw error
    }
}

/// One request on its own connection.
func httpRequest(port: Int, _ uri: String = "/", headers: [(String, String)] = []) async throws -> TestResponse {
    try await withHTTPConnection(port: port) { try await $0.send(.GET, uri, headers: headers) }
}

/// Sends raw bytes and returns everything the server sends until it closes the connection (or `limit` bytes).
func rawExchange(port: Int, _ bytes: [UInt8], limit: Int = 1 << 20) async throws -> String {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(bytes: bytes))
        var received = ""
        do {
            for try await buffer in inbound {
                received += String(buffer: buffer)
                if received.utf8.count >= limit { break }
            }
        } catch {
            // a reset after the response is fine: the router closes bad connections
        }
        return received
    }
}

/// Backends by name, a router in front of them; everything is stopped afterwards.
struct RouterFixture: Sendable {
    let router: TrafficRouter
    let backends: [String: TestBackend]
    var port: Int { self.router.boundPort }

    func backend(_ name: String, version: String) -> Backend {
        self.backends[name]!.backend(version: version)
    }
}

func withRouter<T: Sendable>(
    backends names: [String],
    configuration: RouterConfiguration = RouterConfiguration(),
    seed: UInt64 = 42,
    table: (([String: TestBackend]) -> RoutingTable),
    _ body: (RouterFixture) async throws -> T
) async throws -> T {
    var backends: [String: TestBackend] = [:]
    for name in names {
        backends[name] = try await TestBackend.start(name: name)
    }
    let router = TrafficRouter(host: "127.0.0.1", port: 0, table: table(backends), configuration: configuration, seed: seed)
    do {
        try await router.start()
        let result = try await body(RouterFixture(router: router, backends: backends))
        try await router.shutdown()
        for backend in backends.values { await backend.stop() }
        return result
    } catch {
        try? await router.shutdown()
        for backend in backends.values { await backend.stop() }
        throw error
    }
}

/// A port nothing listens on. Not "bind port 0 and close": under parallel tests the kernel hands that port
/// to the next server that binds port 0 (seen: Prometheus and a test backend took it). Port 1 (tcpmux) is
/// privileged and unused on test machines, so connecting to it on loopback is refused at once.
func closedPort() async throws -> Int {
    1
}
