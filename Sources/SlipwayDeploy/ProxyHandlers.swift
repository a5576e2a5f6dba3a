import NIOCore
import NIOHTTP1
import NIOPosix

// The proxy's channel handlers. A client connection and every backend connection it uses live on the same event
// loop, so the handlers call each other directly, with no locks and no hops.
//
// `ProxyHandler` / `BackendConnection` are the NIOHTTP1 path: full decode to HTTPRequestHead/HTTPResponseHead and
// re-encode. Client connections start on the byte-forwarding fast path (ProxyFastPath.swift) and are handed over
// to this path at the first request the fast path doesn't take (HTTP/1.0, Expect, Upgrade, unusual syntax, …).

/// State of one event loop: its pool of idle keep-alive connections per backend and its open client connections.
/// Only ever touched on `eventLoop` (it lives in a `NIOLoopBoundBox`).
final class LoopContext {
    let eventLoop: any EventLoop
    let configuration: RouterConfiguration
    private var idle: [Backend: [BackendConnection]] = [:]
    /// Idle connections of the fast path (raw bytes), per backend.
    private var rawIdle: [Backend: [RawBackendConnection]] = [:]
    private var addresses: [Backend: SocketAddress] = [:]
    private var clients: [ObjectIdentifier: any Channel] = [:]
    private(set) var isShutDown = false

    init(eventLoop: any EventLoop, configuration: RouterConfiguration) {
        self.eventLoop = eventLoop
        self.configuration = configuration
    }

    /// An idle connection to `backend`, most recently used first, or nil.
    func takeIdleConnection(to backend: Backend) -> BackendConnection? {
        while let connection = self.idle[backend]?.popLast() {
            if connection.isActive {
                return connection
            }
        }
        return nil
    }

    /// Returns a connection whose last exchange completed cleanly, or closes it when the pool is full.
    func release(_ connection: BackendConnection) {
        guard !self.isShutDown, connection.isActive,
            self.idle[connection.backend, default: []].count < self.configuration.maxIdleConnectionsPerBackend
        else {
            connection.close()
            return
        }
        self.idle[connection.backend, default: []].append(connection)
    }

    /// An idle connection closed (by the backend, or its idle timeout).
    func forget(_ connection: BackendConnection) {
        guard let index = self.idle[connection.backend]?.firstIndex(where: { $0 === connection }) else { return }
        self.idle[connection.backend]?.remove(at: index)
    }

    func closeIdleConnections(to backends: Set<Backend>) {
        for backend in backends {
            let connections = self.idle.removeValue(forKey: backend) ?? []
            for connection in connections {
                connection.close()
            }
            let raw = self.rawIdle.removeValue(forKey: backend) ?? []
            for connection in raw {
                connection.close()
            }
        }
    }

    /// An idle fast-path connection to `backend`, most recently used first, or nil.
    func takeIdleRawConnection(to backend: Backend) -> RawBackendConnection? {
        while let connection = self.rawIdle[backend]?.popLast() {
            if connection.isActive {
                return connection
            }
        }
        return nil
    }

    func release(_ connection: RawBackendConnection) {
        guard !self.isShutDown, connection.isActive,
            self.rawIdle[connection.backend, default: []].count < self.configuration.maxIdleConnectionsPerBackend
        else {
            connection.close()
            return
        }
        self.rawIdle[connection.backend, default: []].append(connection)
    }

    func forget(_ connection: RawBackendConnection) {
        guard let index = self.rawIdle[connection.backend]?.firstIndex(where: { $0 === connection }) else { return }
        self.rawIdle[connection.backend]?.remove(at: index)
    }

    /// A new fast-path (raw bytes) connection to `backend`.
    func connectRaw(to backend: Backend) -> EventLoopFuture<any Channel> {
        let configuration = self.configuration
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: configuration.backendIdleTimeout))
                    try sync.addHandler(RawBackendConnection(backend: backend))
                }
            }
        if let address = self.address(of: backend) {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: backend.host, port: backend.port)
    }

    func connect(to backend: Backend) -> EventLoopFuture<any Channel> {
        let configuration = self.configuration
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(HTTPRequestEncoder())
                    try sync.addHandler(
                        ByteToMessageHandler(
                            HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward)
                        )
                    )
                    try sync.addHandler(IdleStateHandler(readTimeout: configuration.backendIdleTimeout))
                    try sync.addHandler(BackendConnection(backend: backend))
                }
            }
        if let address = self.address(of: backend) {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: backend.host, port: backend.port)
    }

    /// The socket address of a backend given by IP address (cached); nil for a host name (resolved at connect).
    private func address(of backend: Backend) -> SocketAddress? {
        if let address = self.addresses[backend] { return address }
        guard let address = try? SocketAddress(ipAddress: backend.host, port: backend.port) else { return nil }
        if self.addresses.count > 4096 { self.addresses.removeAll() }
        self.addresses[backend] = address
        return address
    }

    func register(client channel: any Channel) {
        self.clients[ObjectIdentifier(channel)] = channel
    }

    func unregister(client channel: any Channel) {
        self.clients.removeValue(forKey: ObjectIdentifier(channel))
    }

    func shutdown() {
        self.isShutDown = true
        let idle = self.idle.values.flatMap { $0 }
        self.idle.removeAll()
        for connection in idle {
            connection.close()
        }
        let rawIdle = self.rawIdle.values.flatMap { $0 }
        self.rawIdle.removeAll()
        for connection in rawIdle {
            connection.close()
        }
        let clients = Array(self.clients.values)
        self.clients.removeAll()
        for client in clients {
            client.close(promise: nil)
        }
    }
}

/// The last handler of a backend connection. While a request uses it, it belongs to that request's
/// `ProxyHandler` (`owner`) and hands it the response parts; otherwise it sits idle in the pool.
final class BackendConnection: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let backend: Backend
    private var context: ChannelHandlerContext?
    /// The client connection using this connection for its current request.
    var owner: ProxyHandler?
    /// Set once the connection has carried a complete exchange (a failure on reuse may be a stale keep-alive).
    var hasBeenUsed = false
    weak var loop: LoopContext?
    private var readPending = false

    init(backend: Backend) {
        self.backend = backend
    }

    var isActive: Bool { self.context?.channel.isActive ?? false }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func send(_ part: HTTPClientRequestPart) {
        self.context?.write(Self.wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func close() {
        self.owner = nil
        self.context?.close(promise: nil)
    }

    /// The client became writable again: resume reading the response.
    func resumeReading() {
        guard self.readPending, let context = self.context else { return }
        self.readPending = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if let owner = self.owner {
            owner.backendReceived(part, from: self)
        } else {
            // Nothing was asked: a backend talking out of turn cannot be trusted with the next request.
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.owner?.backendReadComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let owner = self.owner {
            self.owner = nil
            owner.backendClosed(self)
        } else {
            self.loop?.forget(self)
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.owner?.backendBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if let owner = self.owner {
                self.owner = nil
                owner.backendTimedOut(self)
            }
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Connection reset, bad HTTP from the backend, …: close; channelInactive tells the owner.
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        // Backpressure: don't read more of the response while the client cannot take it.
        if let owner = self.owner, !owner.clientIsWritable {
            self.readPending = true
            return
        }
        context.read()
    }
}

/// The last handler of a client connection: routes each request, forwards it to a backend connection and the
/// response back, streaming both bodies with backpressure.
final class ProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Phase: Equatable {
        /// Waiting for a request head.
        case idle
        /// Request routed, waiting for a backend connection.
        case connecting
        /// Request (and then response) flowing through `connection`.
        case proxying
        /// The response is complete but the client is still sending the request body: read and drop it.
        case discarding
        case closed
    }

    /// One request/response in flight (a class: mutated in place on the hot path, no copies).
    private final class Exchange {
        let decision: RouteDecision
        /// The head as sent to the backend.
        var head: HTTPRequestHead
        var clientVersion: HTTPVersion
        var clientKeepAlive: Bool
        var isHeadRequest: Bool
        var start: ContinuousClock.Instant
        /// Parts received while connecting.
        var pending: [HTTPClientRequestPart] = []
        var requestDone = false
        var bodySent = false
        var responseStarted = false
        var responseStatus = 0
        var backendKeepAlive = true
        var closeAfterResponse = false
        var retried = false
        var generation: Int

        init(
            decision: RouteDecision,
            head: HTTPRequestHead,
            clientVersion: HTTPVersion,
            clientKeepAlive: Bool,
            isHeadRequest: Bool,
            start: ContinuousClock.Instant,
            generation: Int
        ) {
            self.decision = decision
            self.head = head
            self.clientVersion = clientVersion
            self.clientKeepAlive = clientKeepAlive
            self.isHeadRequest = isHeadRequest
            self.start = start
            self.generation = generation
        }
    }

    private let router: TrafficRouter
    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var phase = Phase.idle
    private var exchange: Exchange?
    private var connection: BackendConnection?
    private var generation = 0
    private var readPending = false
    private var backendNeedsFlush = false
    private var discardedBytes = 0
    /// Parts of pipelined requests waiting for the exchange in progress to finish.
    private var pipelined = CircularBuffer<HTTPServerRequestPart>()
    private var drainingPipelined = false
    private static let maxPipelinedParts = 1024
    private var clientAddress = ""

    init(router: TrafficRouter, loop: LoopContext) {
        self.router = router
        self.loop = loop
    }

    var clientIsWritable: Bool { self.context?.channel.isWritable ?? false }

    // MARK: Client side

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loop.register(client: context.channel)
        self.clientAddress = context.channel.remoteAddress?.ipAddress ?? ""
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if self.clientAddress.isEmpty {
            self.clientAddress = context.channel.remoteAddress?.ipAddress ?? ""
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if !self.pipelined.isEmpty || (self.phase != .idle && part.isHead) {
            // HTTP pipelining: a request behind one still in progress waits (and reading stops) until that is done.
            guard self.phase != .closed else { return }
            self.pipelined.append(part)
            if self.pipelined.count > Self.maxPipelinedParts {
                self.phase = .closed
                context.close(promise: nil)
            }
            return
        }
        self.dispatch(part, context: context)
    }

    private func dispatch(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.requestHead(head, context: context)
        case .body(let buffer):
            self.requestBody(buffer, context: context)
        case .end(let trailers):
            self.requestEnd(trailers, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.backendNeedsFlush {
            self.backendNeedsFlush = false
            self.connection?.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        // Backpressure: don't read more of the request while there is nowhere to put it.
        if !self.pipelined.isEmpty {
            self.readPending = true
            return
        }
        switch self.phase {
        case .connecting:
            self.readPending = true
            return
        case .proxying:
            if let connection = self.connection, !connection.isWritable, self.exchange?.requestDone == false {
                self.readPending = true
                return
            }
        case .idle, .discarding, .closed:
            break
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.connection?.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.phase = .closed
        self.loop.unregister(client: context.channel)
        if let connection = self.connection {
            // The response was not delivered completely: the connection's state is unknown, don't reuse it.
            self.connection = nil
            connection.close()
        }
        self.exchange = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            switch self.phase {
            case .idle, .discarding:
                context.close(promise: nil)
            case .connecting, .proxying, .closed:
                break  // the backend side has its own timeouts
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            // Bad HTTP from the client: answer if nothing else is in progress on the connection, then close.
            let responseStarted = self.phase != .idle || !self.pipelined.isEmpty
            if let connection = self.connection {
                self.connection = nil
                connection.close()
            }
            self.exchange = nil
            if responseStarted || self.phase == .closed {
                self.phase = .closed
                context.close(promise: nil)
                return
            }
            let status: HTTPResponseStatus =
                parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            self.phase = .closed
            self.writeLocalResponse(status, message: status.reasonPhrase, version: nil, keepAlive: false, context: context)
            return
        }
        self.phase = .closed
        context.close(promise: nil)
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard self.phase == .idle else {
            // channelRead queues a head that arrives during an exchange, so this cannot happen; be safe anyway.
            context.close(promise: nil)
            return
        }
        let start = ContinuousClock.now
        let clientKeepAlive = head.isKeepAlive
        guard let decision = self.router.route(head.headers) else {
            self.respondLocally(
                .serviceUnavailable,
                message: "no backend available",
                version: nil,
                keepAlive: clientKeepAlive,
                requestDone: false,
                context: context
            )
            return
        }
        var backendHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: head.headers)
        removeHopByHopHeaders(&backendHead.headers)
        if !self.clientAddress.isEmpty {
            let previous = backendHead.headers["x-forwarded-for"]
            if previous.isEmpty {
                backendHead.headers.add(name: "X-Forwarded-For", value: self.clientAddress)
            } else {
                backendHead.headers.replaceOrAdd(
                    name: "X-Forwarded-For",
                    value: previous.joined(separator: ", ") + ", " + self.clientAddress
                )
            }
        }
        self.generation &+= 1
        self.exchange = Exchange(
            decision: decision,
            head: backendHead,
            clientVersion: head.version,
            clientKeepAlive: clientKeepAlive,
            isHeadRequest: head.method == .HEAD,
            start: start,
            generation: self.generation
        )
        self.phase = .connecting
        if let connection = self.loop.takeIdleConnection(to: decision.backend) {
            self.attach(connection)
        } else {
            self.connectToBackend(decision.backend)
        }
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch self.phase {
        case .connecting:
            self.exchange?.pending.append(.body(.byteBuffer(buffer)))
        case .proxying:
            if self.exchange?.requestDone == false, let connection = self.connection {
                connection.send(.body(.byteBuffer(buffer)))
                self.exchange?.bodySent = true
                self.backendNeedsFlush = true
            }
        case .discarding:
            self.discardedBytes += buffer.readableBytes
            if self.discardedBytes > self.router.configuration.maxDiscardedBodyBytes {
                self.phase = .closed
                context.close(promise: nil)
            }
        case .idle, .closed:
            break
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        switch self.phase {
        case .connecting:
            self.exchange?.pending.append(.end(trailers))
            self.exchange?.requestDone = true
        case .proxying:
            if self.exchange?.requestDone == false, let connection = self.connection {
                self.exchange?.requestDone = true
                connection.send(.end(trailers))
                self.backendNeedsFlush = false
                connection.flush()
            }
        case .discarding:
            self.phase = .idle
            self.discardedBytes = 0
        case .idle, .closed:
            break
        }
    }

    // MARK: Backend connection

    private func connectToBackend(_ backend: Backend) {
        let generation = self.generation
        self.loop.connect(to: backend).assumeIsolated().whenComplete { result in
            self.connectCompleted(result, backend: backend, generation: generation)
        }
    }

    private func connectCompleted(_ result: Result<any Channel, any Error>, backend: Backend, generation: Int) {
        let stillWanted = self.phase == .connecting && self.exchange?.generation == generation
        switch result {
        case .success(let channel):
            guard let connection = try? channel.pipeline.syncOperations.handler(type: BackendConnection.self) else {
                channel.close(promise: nil)
                if stillWanted { self.failExchange(status: .badGateway, message: "backend connection failed") }
                return
            }
            connection.loop = self.loop
            self.router.connected(to: backend)
            if stillWanted {
                self.attach(connection)
            } else {
                // The client went away meanwhile: keep the fresh connection for someone else.
                self.loop.release(connection)
            }
        case .failure:
            self.router.connectionFailed(to: backend)
            if stillWanted {
                self.failExchange(status: .badGateway, message: "backend unreachable")
            }
        }
    }

    private func attach(_ connection: BackendConnection) {
        guard let exchange = self.exchange else {
            self.loop.release(connection)
            return
        }
        connection.owner = self
        self.connection = connection
        self.phase = .proxying
        connection.send(.head(exchange.head))
        for part in exchange.pending {
            if case .body = part { exchange.bodySent = true }
            connection.send(part)
        }
        exchange.pending.removeAll()
        connection.flush()
        self.backendBecameWritable()
    }

    func backendBecameWritable() {
        guard self.readPending, let context = self.context, self.phase != .connecting else { return }
        if self.phase == .proxying, let connection = self.connection, !connection.isWritable { return }
        self.readPending = false
        context.read()
    }

    func backendReceived(_ part: HTTPClientResponsePart, from connection: BackendConnection) {
        guard let context = self.context, let exchange = self.exchange, connection === self.connection else {
            connection.close()
            return
        }
        switch part {
        case .head(let response):
            if response.status.code < 200 {
                // 100 Continue and friends: pass them on, the real head follows.
                if response.status != .switchingProtocols, exchange.clientVersion.minor >= 1 {
                    var informational = response
                    informational.version = .http1_1
                    context.writeAndFlush(Self.wrapOutboundOut(.head(informational)), promise: nil)
                }
                return
            }
            exchange.responseStarted = true
            exchange.responseStatus = Int(response.status.code)
            exchange.backendKeepAlive = response.isKeepAlive
            var headers = response.headers
            removeHopByHopHeaders(&headers)
            headers.add(name: "X-Slipway-Version", value: exchange.decision.versionHeader)
            if let cookie = exchange.decision.setStickyCookie {
                headers.add(
                    name: "Set-Cookie",
                    value: "\(cookie)=\(exchange.decision.versionHeader); Path=/; HttpOnly; SameSite=Lax"
                )
            }
            let bodyless =
                exchange.isHeadRequest || response.status == .noContent || response.status == .notModified
            if bodyless {
                headers.remove(name: "transfer-encoding")
            } else if exchange.clientVersion.minor == 0, !headers.contains(name: "content-length") {
                // An HTTP/1.0 client can't read chunked: send the body raw and end it by closing.
                headers.remove(name: "transfer-encoding")
                exchange.closeAfterResponse = true
            }
            let keepAlive = exchange.clientKeepAlive && !exchange.closeAfterResponse
            if !keepAlive {
                headers.replaceOrAdd(name: "Connection", value: "close")
            } else if exchange.clientVersion.minor == 0 {
                headers.replaceOrAdd(name: "Connection", value: "keep-alive")
            }
            let version: HTTPVersion = exchange.clientVersion.minor == 0 ? .http1_0 : .http1_1
            context.write(
                Self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))),
                promise: nil
            )
        case .body(let buffer):
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            self.connection = nil
            connection.owner = nil
            connection.hasBeenUsed = true
            self.router.record(
                version: exchange.decision.version,
                start: exchange.start,
                isError: exchange.responseStatus >= 500
            )
            if exchange.requestDone && exchange.backendKeepAlive {
                self.loop.release(connection)
            } else {
                connection.close()
            }
            let keepAlive = exchange.clientKeepAlive && !exchange.closeAfterResponse
            self.finishResponse(
                trailers: trailers,
                keepAlive: keepAlive,
                requestDone: exchange.requestDone,
                context: context
            )
        }
    }

    func backendReadComplete() {
        self.context?.flush()
    }

    /// The backend connection closed while this client's request was using it.
    func backendClosed(_ connection: BackendConnection) {
        guard connection === self.connection, let exchange = self.exchange else { return }
        self.connection = nil
        if exchange.responseStarted {
            // Part of the response is out: the only honest thing left is to cut the client connection too.
            self.router.record(version: exchange.decision.version, start: exchange.start, isError: true)
            self.phase = .closed
            self.exchange = nil
            self.context?.close(promise: nil)
            return
        }
        if connection.hasBeenUsed, !exchange.bodySent, !exchange.retried {
            // Most likely a keep-alive connection the backend had just closed: retry once on a new connection.
            exchange.retried = true
            exchange.pending = exchange.requestDone ? [.end(nil)] : []
            self.generation &+= 1
            exchange.generation = self.generation
            self.phase = .connecting
            self.connectToBackend(exchange.decision.backend)
            return
        }
        self.failExchange(status: .badGateway, message: "backend closed the connection")
    }

    func backendTimedOut(_ connection: BackendConnection) {
        guard connection === self.connection, let exchange = self.exchange else { return }
        self.connection = nil
        connection.close()
        if exchange.responseStarted {
            self.router.record(version: exchange.decision.version, start: exchange.start, isError: true)
            self.phase = .closed
            self.exchange = nil
            self.context?.close(promise: nil)
            return
        }
        self.failExchange(status: .gatewayTimeout, message: "backend timed out")
    }

    // MARK: Responses

    /// The request could not be proxied: count an error for its version and answer with `status`.
    private func failExchange(status: HTTPResponseStatus, message: String) {
        guard let exchange = self.exchange, let context = self.context else { return }
        if let connection = self.connection {
            self.connection = nil
            connection.close()
        }
        self.router.record(version: exchange.decision.version, start: exchange.start, isError: true)
        self.respondLocally(
            status,
            message: message,
            version: exchange.decision.versionHeader,
            keepAlive: exchange.clientKeepAlive,
            requestDone: exchange.requestDone,
            context: context
        )
    }

    private func respondLocally(
        _ status: HTTPResponseStatus,
        message: String,
        version: String?,
        keepAlive: Bool,
        requestDone: Bool,
        context: ChannelHandlerContext
    ) {
        self.exchange = nil
        // The state changes before the write: writing the response's end may deliver the next pipelined request
        // to this handler re-entrantly.
        if keepAlive {
            self.enterAfterResponse(requestDone: requestDone)
        } else {
            self.phase = .closed
        }
        self.writeLocalResponse(status, message: message, version: version, keepAlive: keepAlive, context: context)
        self.continueAfterResponse(context: context)
    }

    private func writeLocalResponse(
        _ status: HTTPResponseStatus,
        message: String,
        version: String?,
        keepAlive: Bool,
        context: ChannelHandlerContext
    ) {
        var body = context.channel.allocator.buffer(capacity: message.utf8.count + 1)
        body.writeString(message)
        body.writeString("\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        if let version {
            headers.add(name: "X-Slipway-Version", value: version)
        }
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if keepAlive {
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    private func finishResponse(trailers: HTTPHeaders?, keepAlive: Bool, requestDone: Bool, context: ChannelHandlerContext) {
        self.exchange = nil
        if keepAlive {
            // State first: writing the end may deliver the next pipelined request re-entrantly.
            self.enterAfterResponse(requestDone: requestDone)
            context.writeAndFlush(Self.wrapOutboundOut(.end(trailers)), promise: nil)
            self.continueAfterResponse(context: context)
        } else {
            self.phase = .closed
            context.writeAndFlush(Self.wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    /// After a complete response: ready for the next request, or dropping the rest of this one's body first.
    private func enterAfterResponse(requestDone: Bool) {
        if requestDone {
            self.phase = .idle
        } else {
            self.phase = .discarding
            self.discardedBytes = 0
        }
    }

    /// After a response: handle pipelined requests that were waiting, then read again.
    private func continueAfterResponse(context: ChannelHandlerContext) {
        guard !self.drainingPipelined else { return }  // the loop below continues
        self.drainingPipelined = true
        while let part = self.pipelined.first {
            if part.isHead, self.phase != .idle { break }
            if self.phase == .closed {
                self.pipelined.removeAll()
                break
            }
            self.pipelined.removeFirst()
            self.dispatch(part, context: context)
        }
        self.drainingPipelined = false
        if self.backendNeedsFlush {
            self.backendNeedsFlush = false
            self.connection?.flush()
        }
        guard self.readPending, self.pipelined.isEmpty, self.phase == .idle || self.phase == .discarding else { return }
        self.readPending = false
        context.read()
    }
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those named by `Connection`. Framing headers
/// (`Content-Length`, `Transfer-Encoding`) stay: the body parts are passed through as they are framed.
/// One allocation-free scan in the common case where there is nothing to remove.
func removeHopByHopHeaders(_ headers: inout HTTPHeaders) {
    var hasConnection = false
    var connectionNamesHeaders = false
    var hasOtherHopByHop = false
    for (name, value) in headers {
        if asciiCaseInsensitiveEquals(name, "connection") {
            hasConnection = true
            // `Connection: keep-alive` / `close` (the usual values) name no header to remove.
            if !asciiCaseInsensitiveEquals(value, "keep-alive"), !asciiCaseInsensitiveEquals(value, "close") {
                connectionNamesHeaders = true
            }
        } else if isHopByHop(name) {
            hasOtherHopByHop = true
        }
    }
    if connectionNamesHeaders {
        for token in headers[canonicalForm: "connection"] {
            let name = String(token)
            if !asciiCaseInsensitiveEquals(name, "close"), !asciiCaseInsensitiveEquals(name, "keep-alive"),
                !asciiCaseInsensitiveEquals(name, "content-length"),
                !asciiCaseInsensitiveEquals(name, "transfer-encoding")
            {
                headers.remove(name: name)
            }
        }
    }
    if hasConnection {
        headers.remove(name: "connection")
    }
    if hasOtherHopByHop {
        headers.remove(name: "keep-alive")
        headers.remove(name: "proxy-connection")
        headers.remove(name: "te")
        headers.remove(name: "upgrade")
    }
}

private func isHopByHop(_ name: String) -> Bool {
    switch name.utf8.count {
    case 2: return asciiCaseInsensitiveEquals(name, "te")
    case 7: return asciiCaseInsensitiveEquals(name, "upgrade")
    case 10: return asciiCaseInsensitiveEquals(name, "keep-alive")
    case 16: return asciiCaseInsensitiveEquals(name, "proxy-connection")
    default: return false
    }
}

/// `lhs` equals the lowercase ASCII `rhs`, ignoring ASCII case.
func asciiCaseInsensitiveEquals(_ lhs: String, _ rhs: StaticString) -> Bool {
    guard lhs.utf8.count == rhs.utf8CodeUnitCount else { return false }
    return rhs.withUTF8Buffer { expected in
        var index = 0
        for byte in lhs.utf8 {
            let lower = (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
            if lower != expected[index] { return false }
            index += 1
        }
        return true
    }
}

extension HTTPPart {
    fileprivate var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}
