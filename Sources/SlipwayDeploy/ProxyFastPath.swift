import NIOCore
import NIOHTTP1
import NIOPosix

// The proxy's fast path: client and backend connections carry raw bytes. Heads are scanned (HTTPHeadParsing.swift)
// and copied through with a few lines dropped or added; bodies are forwarded by their framing alone. A client
// connection whose request the scanner doesn't accept (HTTP/1.0, Expect, Upgrade, chunked request bodies, odd or
// malformed syntax, large heads) switches, at that request, to the NIOHTTP1 path (`ProxyHandler`) for good.

/// The last handler of a fast-path backend connection (raw bytes). While a request uses it, it belongs to that
/// request's `FastProxyHandler` (`owner`); otherwise it sits idle in the loop's pool.
final class RawBackendConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let backend: Backend
    private var context: ChannelHandlerContext?
    var owner: FastProxyHandler?
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

    func send(_ buffer: ByteBuffer) {
        self.context?.write(Self.wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func close() {
        self.owner = nil
        self.context?.close(promise: nil)
    }

    func resumeReading() {
        guard self.readPending, let context = self.context else { return }
        self.readPending = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let owner = self.owner {
            owner.backendReceived(Self.unwrapInboundIn(data), from: self)
        } else {
            // Nothing was asked: a backend talking out of turn cannot be trusted with the next request.
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.owner?.backendReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let owner = self.owner {
            self.owner = nil
            owner.backendClosed(self)
        } else {
            self.loop?.forget(self)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.owner?.backendBecameWritable()
        }
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
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let owner = self.owner, !owner.clientIsWritable {
            self.readPending = true
            return
        }
        context.read()
    }
}

/// The last handler of a client connection on the fast path.
final class FastProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Waiting for a request head.
        case idle
        /// Request routed, waiting for a backend connection.
        case connecting
        /// Request (and then response) flowing through `connection`.
        case proxying
        /// The response is complete but the request body is still coming: read and drop it.
        case discarding
        case closed
        /// Handed over to the NIOHTTP1 path: pass everything through.
        case fellBack
    }

    private enum ResponseState {
        case head
        case length(Int)
        case chunked
        case untilClose
    }

    private let router: TrafficRouter
    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var phase = Phase.idle
    private var clientAddress: [UInt8] = []

    /// Client bytes not yet processed (a pipelined request, or a head not yet complete).
    private var inbound: ByteBuffer?
    private var processing = false
    private var readPending = false
    private var backendNeedsFlush = false
    private var generation = 0

    // The exchange in progress (valid unless phase is idle/closed/fellBack).
    private var decision: RouteDecision?
    private var connection: RawBackendConnection?
    private var start = ContinuousClock.now
    private var isHeadRequest = false
    private var clientKeepAlive = true
    /// Body bytes still to come (Content-Length), unless `requestChunked`.
    private var requestRemaining = 0
    private var requestChunked = false
    private var requestChunks = ChunkedScanner()
    private var requestDone = false
    private var bodySent = false
    private var retried = false
    /// The head sent to the backend (kept for one retry on a stale keep-alive connection).
    private var requestHead: ByteBuffer?
    /// Bytes waiting for the backend connection.
    private var pendingOut: ByteBuffer?
    private var discardedBytes = 0

    private var responseState = ResponseState.head
    private var responseBuffer: ByteBuffer?
    private var responseStarted = false
    private var responseStatus = 0
    private var backendKeepAlive = true
    private var closeAfterResponse = false
    private var chunks = ChunkedScanner()
    /// A complete Content-Length body up to this size is copied behind the head: one buffer, one write.
    private static let maxBodyWithHead = 8 * 1024

    init(router: TrafficRouter, loop: LoopContext) {
        self.router = router
        self.loop = loop
    }

    var clientIsWritable: Bool { self.context?.channel.isWritable ?? false }

    // MARK: Client side

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loop.register(client: context.channel)
        self.setClientAddress(context.channel)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    private func setClientAddress(_ channel: any Channel) {
        if self.clientAddress.isEmpty, let address = channel.remoteAddress?.ipAddress {
            self.clientAddress = Array(address.utf8)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.setClientAddress(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.phase == .fellBack {
            context.fireChannelRead(data)
            return
        }
        guard self.phase != .closed else { return }
        let buffer = Self.unwrapInboundIn(data)
        if self.inbound == nil || self.inbound!.readableBytes == 0 {
            self.inbound = buffer
        } else {
            var buffer = buffer
            self.inbound!.writeBuffer(&buffer)
        }
        self.processInbound(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.phase == .fellBack {
            context.fireChannelReadComplete()
            return
        }
        if self.backendNeedsFlush {
            self.backendNeedsFlush = false
            self.connection?.flush()
        }
    }

    func read(context: ChannelHandlerContext) {
        switch self.phase {
        case .fellBack, .idle, .discarding, .closed:
            break
        case .connecting:
            self.readPending = true
            return
        case .proxying:
            if !self.requestDone {
                if let connection = self.connection, !connection.isWritable {
                    self.readPending = true
                    return
                }
            } else if let inbound = self.inbound, inbound.readableBytes > 0 {
                // A pipelined request waits for this exchange to finish.
                self.readPending = true
                return
            }
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Only the NIOHTTP1 path (after a fall-back) writes through this handler.
        context.write(data, promise: promise)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if self.phase == .fellBack {
            context.fireChannelWritabilityChanged()
            return
        }
        if context.channel.isWritable {
            self.connection?.resumeReading()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.phase == .fellBack {
            context.fireChannelInactive()
            return
        }
        self.phase = .closed
        self.loop.unregister(client: context.channel)
        if let connection = self.connection {
            self.connection = nil
            connection.close()
        }
        self.decision = nil
        self.inbound = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if self.phase == .fellBack {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if event is IdleStateHandler.IdleStateEvent {
            switch self.phase {
            case .idle, .discarding:
                self.phase = .closed
                context.close(promise: nil)
            case .connecting, .proxying, .closed, .fellBack:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.phase == .fellBack {
            context.fireErrorCaught(error)
            return
        }
        self.phase = .closed
        context.close(promise: nil)
    }

    // MARK: Requests

    private func processInbound(context: ChannelHandlerContext) {
        guard !self.processing else { return }
        self.processing = true
        defer { self.processing = false }
        while var inbound = self.inbound, inbound.readableBytes > 0 {
            switch self.phase {
            case .idle:
                guard self.startExchange(&inbound, context: context) else {
                    // incomplete head (wait for more), or handed over
                    if self.phase != .fellBack { self.inbound = inbound }
                    return
                }
                self.inbound = inbound
            case .connecting, .proxying:
                if self.requestDone { return }  // pipelined: waits for the response
                guard let slice = self.takeRequestBody(&inbound) else {
                    self.requestBroken(context: context)
                    return
                }
                self.inbound = inbound
                self.forwardBody(slice)
                if self.requestDone, self.phase == .proxying {
                    self.backendNeedsFlush = false
                    self.connection?.flush()
                }
            case .discarding:
                guard let slice = self.takeRequestBody(&inbound) else {
                    self.requestBroken(context: context)
                    return
                }
                self.inbound = inbound
                self.discardedBytes += slice.readableBytes
                if self.requestDone {
                    self.phase = .idle
                } else if self.discardedBytes > self.router.configuration.maxDiscardedBodyBytes {
                    self.phase = .closed
                    context.close(promise: nil)
                    return
                }
            case .closed, .fellBack:
                return
            }
        }
        // Don't hold on to a consumed read buffer: NIO reuses it for the next read when nothing else does.
        if let inbound = self.inbound, inbound.readableBytes == 0 {
            self.inbound = nil
        }
    }

    /// The next bytes of the request body in `inbound` (up to its end), setting `requestDone` at the end; nil when
    /// the chunked framing is malformed.
    private func takeRequestBody(_ inbound: inout ByteBuffer) -> ByteBuffer? {
        if self.requestChunked {
            guard let take = inbound.withUnsafeReadableBytes({ self.requestChunks.scan($0) }) else { return nil }
            if self.requestChunks.isDone { self.requestDone = true }
            return inbound.readSlice(length: take)!
        }
        let take = min(self.requestRemaining, inbound.readableBytes)
        self.requestRemaining -= take
        if self.requestRemaining == 0 { self.requestDone = true }
        return inbound.readSlice(length: take)!
    }

    /// Malformed request body framing: nothing sensible can follow on this connection (as on the NIOHTTP1 path,
    /// where the parser error closes it).
    private func requestBroken(context: ChannelHandlerContext) {
        if let connection = self.connection {
            self.connection = nil
            connection.close()
        }
        self.decision = nil
        self.inbound = nil
        self.phase = .closed
        context.close(promise: nil)
    }

    private func forwardBody(_ slice: ByteBuffer) {
        guard slice.readableBytes > 0 else { return }
        if self.phase == .connecting {
            if self.pendingOut == nil {
                self.pendingOut = slice
            } else {
                var slice = slice
                self.pendingOut!.writeBuffer(&slice)
            }
        } else if let connection = self.connection {
            connection.send(slice)
            self.bodySent = true
            self.backendNeedsFlush = true
        }
    }

    /// Parses and routes the request head at the start of `inbound`. False when the head is incomplete or the
    /// connection fell back to the NIOHTTP1 path.
    private func startExchange(_ inbound: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        // The head as sent on: the client's head (within the fast path's limit) + X-Forwarded-For.
        let capacity = min(inbound.readableBytes, fastPathMaxHeadBytes) + 64 + self.clientAddress.count
        var out = context.channel.allocator.buffer(capacity: capacity)
        var forwardedFor: [UInt8] = []
        var headers: HTTPHeaders? = self.router.routingUsesHeaders ? HTTPHeaders() : nil
        let maxHeaderCount = self.router.configuration.maxHeaderCount
        let outcome = inbound.withUnsafeReadableBytes { bytes in
            parseRequestHead(bytes, maxHeaderCount: maxHeaderCount, into: &out, forwardedFor: &forwardedFor, headers: &headers)
        }
        let head: ParsedRequestHead
        switch outcome {
        case .incomplete:
            return false
        case .unsupported:
            self.fallBack(inbound, context: context)
            return false
        case .parsed(let parsed):
            head = parsed
        }
        inbound.moveReaderIndex(forwardBy: head.length)
        self.start = .now
        self.clientKeepAlive = head.keepAlive
        self.isHeadRequest = head.isHead
        self.requestRemaining = head.contentLength
        self.requestChunked = head.chunked
        if head.chunked { self.requestChunks = ChunkedScanner() }
        self.requestDone = !head.chunked && head.contentLength == 0
        self.bodySent = false
        self.retried = false
        self.discardedBytes = 0
        self.responseState = .head
        self.responseBuffer = nil
        self.responseStarted = false
        self.responseStatus = 0
        self.backendKeepAlive = true
        self.closeAfterResponse = false
        self.pendingOut = nil

        guard let decision = self.router.route(headers ?? HTTPHeaders()) else {
            self.decision = nil
            self.respondLocally(status: 503, reason: "Service Unavailable", message: "no backend available", context: context)
            return true
        }
        if !self.clientAddress.isEmpty || !forwardedFor.isEmpty {
            // The previous values joined, then the client's address (when known).
            out.writeStaticString("X-Forwarded-For: ")
            out.writeBytes(forwardedFor)
            if !self.clientAddress.isEmpty {
                if !forwardedFor.isEmpty { out.writeStaticString(", ") }
                out.writeBytes(self.clientAddress)
            }
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        self.decision = decision
        self.requestHead = out
        self.generation &+= 1
        self.phase = .connecting
        if let connection = self.loop.takeIdleRawConnection(to: decision.backend) {
            self.attach(connection)
        } else {
            self.connectToBackend(decision.backend)
        }
        return true
    }

    /// Hands the connection over to the NIOHTTP1 path, starting with the bytes of the current request.
    private func fallBack(_ inbound: ByteBuffer, context: ChannelHandlerContext) {
        self.phase = .fellBack
        self.inbound = nil
        self.router.fallbacks.add(1, ordering: .relaxed)
        do {
            let sync = context.pipeline.syncOperations
            try sync.configureHTTPServerPipeline(
                position: .after(self),
                withPipeliningAssistance: false,
                withErrorHandling: false,
                withOutboundHeaderValidation: false,
                withEncoderConfiguration: self.router.encoderConfiguration,
                withDecoderLimitConfiguration: self.router.decoderLimits
            )
            try sync.addHandler(ProxyHandler(router: self.router, loop: self.loop), position: .last)
        } catch {
            self.phase = .closed
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(Self.wrapInboundOut(inbound))
        if self.readPending {
            self.readPending = false
            context.read()
        }
    }

    // MARK: Backend connection

    private func connectToBackend(_ backend: Backend) {
        let generation = self.generation
        self.loop.connectRaw(to: backend).assumeIsolated().whenComplete { result in
            self.connectCompleted(result, backend: backend, generation: generation)
        }
    }

    private func connectCompleted(_ result: Result<any Channel, any Error>, backend: Backend, generation: Int) {
        let stillWanted = self.phase == .connecting && self.generation == generation && self.decision != nil
        switch result {
        case .success(let channel):
            guard let connection = try? channel.pipeline.syncOperations.handler(type: RawBackendConnection.self) else {
                channel.close(promise: nil)
                if stillWanted { self.failExchange(status: 502, reason: "Bad Gateway", message: "backend connection failed") }
                return
            }
            connection.loop = self.loop
            self.router.connected(to: backend)
            if stillWanted {
                self.attach(connection)
            } else {
                self.loop.release(connection)
            }
        case .failure:
            self.router.connectionFailed(to: backend)
            if stillWanted {
                self.failExchange(status: 502, reason: "Bad Gateway", message: "backend unreachable")
            }
        }
    }

    private func attach(_ connection: RawBackendConnection) {
        guard let head = self.requestHead else {
            self.loop.release(connection)
            return
        }
        connection.owner = self
        self.connection = connection
        self.phase = .proxying
        connection.send(head)
        if let pending = self.pendingOut {
            self.pendingOut = nil
            if pending.readableBytes > 0 {
                connection.send(pending)
                self.bodySent = true
            }
        }
        connection.flush()
        self.backendBecameWritable()
    }

    func backendBecameWritable() {
        guard self.readPending, let context = self.context, self.phase != .connecting else { return }
        if self.phase == .proxying {
            if let connection = self.connection, !connection.isWritable { return }
            if self.requestDone, let inbound = self.inbound, inbound.readableBytes > 0 { return }
        }
        self.readPending = false
        context.read()
    }

    func backendReceived(_ buffer: ByteBuffer, from connection: RawBackendConnection) {
        guard let context = self.context, connection === self.connection, self.decision != nil else {
            connection.close()
            return
        }
        var buffer = buffer
        while buffer.readableBytes > 0 {
            switch self.responseState {
            case .head:
                if self.responseBuffer == nil || self.responseBuffer!.readableBytes == 0 {
                    self.responseBuffer = buffer
                } else {
                    self.responseBuffer!.writeBuffer(&buffer)
                }
                buffer.moveReaderIndex(to: buffer.writerIndex)
                guard var pending = self.responseBuffer else { return }
                self.responseBuffer = nil
                guard self.responseHead(&pending, context: context) else {
                    return  // incomplete (kept), or failed
                }
                buffer = pending
            case .length(let remaining):
                let take = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: take)!
                context.write(Self.wrapOutboundOut(slice), promise: nil)
                if take == remaining {
                    self.finishResponse(leftover: buffer.readableBytes > 0, context: context)
                    return
                }
                self.responseState = .length(remaining - take)
            case .chunked:
                let consumed = buffer.withUnsafeReadableBytes { self.chunks.scan($0) }
                guard let consumed else {
                    self.responseBroken(context: context)
                    return
                }
                let slice = buffer.readSlice(length: consumed)!
                context.write(Self.wrapOutboundOut(slice), promise: nil)
                if self.chunks.isDone {
                    self.finishResponse(leftover: buffer.readableBytes > 0, context: context)
                    return
                }
            case .untilClose:
                context.write(Self.wrapOutboundOut(buffer), promise: nil)
                return
            }
        }
    }

    /// Handles a complete response head at the start of `pending` (keeping it when incomplete). True when body
    /// bytes may follow in `pending` (its reader index is then after the head).
    private func responseHead(_ pending: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        guard let decision = self.decision else { return false }
        var named: [[UInt8]] = []
        while true {
            // Room for the head, the lines the router adds, and a small body sent along with the head.
            var out = context.channel.allocator.buffer(
                capacity: min(pending.readableBytes, Self.maxBodyWithHead + 2048) + 160 + decision.versionHeader.utf8.count * 2
            )
            let isHead = self.isHeadRequest
            let outcome = pending.withUnsafeReadableBytes { bytes in
                parseResponseHead(bytes, maxLength: 80 * 1024, isHeadRequest: isHead, dropping: named, into: &out)
            }
            switch outcome {
            case .incomplete:
                self.responseBuffer = pending
                return false
            case .invalid:
                self.responseBroken(context: context)
                return false
            case .namesHeaders(let names):
                named = names
                continue
            case .parsed(let head):
                pending.moveReaderIndex(forwardBy: head.length)
                if head.status < 200 {
                    // 100 Continue and friends: pass them on (not 101), the real head follows.
                    if head.status != 101 {
                        out.writeStaticString("\r\n")
                        context.writeAndFlush(Self.wrapOutboundOut(out), promise: nil)
                    }
                    self.responseState = .head
                    return true
                }
                self.responseStarted = true
                self.responseStatus = head.status
                self.backendKeepAlive = head.keepAlive
                out.writeStaticString("X-Slipway-Version: ")
                out.writeString(decision.versionHeader)
                out.writeStaticString("\r\n")
                if let cookie = decision.setStickyCookie {
                    out.writeStaticString("Set-Cookie: ")
                    out.writeString(cookie)
                    out.writeStaticString("=")
                    out.writeString(decision.versionHeader)
                    out.writeStaticString("; Path=/; HttpOnly; SameSite=Lax\r\n")
                }
                if head.framing == .untilClose { self.closeAfterResponse = true }
                if !self.clientKeepAlive || self.closeAfterResponse {
                    out.writeStaticString("Connection: close\r\n")
                }
                out.writeStaticString("\r\n")
                switch head.framing {
                case .none:
                    if pending.readableBytes == 0 {
                        // Head and end in one write.
                        context.write(Self.wrapOutboundOut(out), promise: nil)
                        self.finishResponse(leftover: false, context: context)
                        return false
                    }
                    context.write(Self.wrapOutboundOut(out), promise: nil)
                    self.finishResponse(leftover: true, context: context)
                    return false
                case .length(let length):
                    if length <= Self.maxBodyWithHead, pending.readableBytes >= length {
                        // The whole response is here: one buffer to the client.
                        var body = pending.readSlice(length: length)!
                        out.writeBuffer(&body)
                        context.write(Self.wrapOutboundOut(out), promise: nil)
                        self.finishResponse(leftover: pending.readableBytes > 0, context: context)
                        return false
                    }
                    context.write(Self.wrapOutboundOut(out), promise: nil)
                    self.responseState = .length(length)
                case .chunked:
                    context.write(Self.wrapOutboundOut(out), promise: nil)
                    self.chunks = ChunkedScanner()
                    self.responseState = .chunked
                case .untilClose:
                    context.write(Self.wrapOutboundOut(out), promise: nil)
                    self.responseState = .untilClose
                }
                return true
            }
        }
    }

    func backendReadComplete() {
        self.context?.flush()
    }

    /// Malformed response from the backend.
    private func responseBroken(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        self.connection = nil
        connection.close()
        if self.responseStarted {
            self.cutClient(context: context)
        } else {
            self.failExchange(status: 502, reason: "Bad Gateway", message: "bad response from backend")
        }
    }

    /// Part of the response is out but it can't be completed: count an error and close the client connection.
    private func cutClient(context: ChannelHandlerContext) {
        if let decision = self.decision {
            self.router.record(version: decision.version, start: self.start, isError: true)
        }
        self.decision = nil
        self.phase = .closed
        context.flush()
        context.close(promise: nil)
    }

    /// The backend connection closed while this client's request was using it.
    func backendClosed(_ connection: RawBackendConnection) {
        guard connection === self.connection, self.decision != nil, let context = self.context else { return }
        self.connection = nil
        if case .untilClose = self.responseState {
            self.backendKeepAlive = false
            self.finishResponse(leftover: false, context: context)
            return
        }
        if self.responseStarted {
            self.cutClient(context: context)
            return
        }
        if connection.hasBeenUsed, !self.bodySent, !self.retried {
            // Most likely a keep-alive connection the backend had just closed: retry once on a new connection.
            self.retried = true
            self.responseState = .head
            self.responseBuffer = nil
            self.generation &+= 1
            self.phase = .connecting
            self.connectToBackend(self.decision!.backend)
            return
        }
        self.failExchange(status: 502, reason: "Bad Gateway", message: "backend closed the connection")
    }

    func backendTimedOut(_ connection: RawBackendConnection) {
        guard connection === self.connection, self.decision != nil, let context = self.context else { return }
        self.connection = nil
        connection.close()
        if self.responseStarted {
            self.cutClient(context: context)
            return
        }
        self.failExchange(status: 504, reason: "Gateway Timeout", message: "backend timed out")
    }

    // MARK: Responses

    private func finishResponse(leftover: Bool, context: ChannelHandlerContext) {
        guard let decision = self.decision else { return }
        self.router.record(version: decision.version, start: self.start, isError: self.responseStatus >= 500)
        if let connection = self.connection {
            self.connection = nil
            connection.owner = nil
            connection.hasBeenUsed = true
            if self.requestDone && self.backendKeepAlive && !leftover {
                self.loop.release(connection)
            } else {
                connection.close()
            }
        }
        self.decision = nil
        self.requestHead = nil
        self.afterResponse(keepAlive: self.clientKeepAlive && !self.closeAfterResponse, context: context)
    }

    /// The request could not be proxied: count an error for its version and answer with `status`.
    private func failExchange(status: Int, reason: StaticString, message: StaticString) {
        guard let decision = self.decision, let context = self.context else { return }
        if let connection = self.connection {
            self.connection = nil
            connection.close()
        }
        self.router.record(version: decision.version, start: self.start, isError: true)
        self.respondLocally(status: status, reason: reason, message: message, version: decision.versionHeader, context: context)
    }

    private func respondLocally(
        status: Int,
        reason: StaticString,
        message: StaticString,
        version: String? = nil,
        context: ChannelHandlerContext
    ) {
        self.decision = nil
        self.requestHead = nil
        self.pendingOut = nil
        var out = context.channel.allocator.buffer(capacity: 192)
        out.writeStaticString("HTTP/1.1 ")
        out.writeString(String(status))
        out.writeStaticString(" ")
        out.writeStaticString(reason)
        out.writeStaticString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
        out.writeString(String(message.utf8CodeUnitCount + 1))
        out.writeStaticString("\r\n")
        if let version {
            out.writeStaticString("X-Slipway-Version: ")
            out.writeString(version)
            out.writeStaticString("\r\n")
        }
        if !self.clientKeepAlive {
            out.writeStaticString("Connection: close\r\n")
        }
        out.writeStaticString("\r\n")
        out.writeStaticString(message)
        out.writeStaticString("\n")
        context.write(Self.wrapOutboundOut(out), promise: nil)
        self.afterResponse(keepAlive: self.clientKeepAlive, context: context)
    }

    /// After a complete response: next request (pipelined ones first), the rest of this one's body, or close.
    private func afterResponse(keepAlive: Bool, context: ChannelHandlerContext) {
        self.responseState = .head
        self.responseBuffer = nil
        guard keepAlive else {
            self.phase = .closed
            self.inbound = nil
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        self.phase = self.requestDone ? .idle : .discarding
        context.flush()
        self.processInbound(context: context)
        if self.readPending, self.phase == .idle || self.phase == .discarding || self.phase == .fellBack {
            self.readPending = false
            context.read()
        }
    }
}
