import NIOCore
import NIOHTTP1
import NIOPosix

/// A response read by `HTTPClient`.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// Wall time from connect to the last byte, in milliseconds.
    public var milliseconds: Double

    public var text: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

public enum HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(String)
    case connectFailed(String)
    case timedOut(String)
    case bodyTooLarge(Int)
    case protocolError(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "not an http:// URL: \(url)"
        case .connectFailed(let why): "could not connect: \(why)"
        case .timedOut(let url): "no complete response from \(url) in time"
        case .bodyTooLarge(let limit): "response body larger than \(limit) bytes"
        case .protocolError(let why): "bad HTTP response: \(why)"
        }
    }
}

/// A small HTTP/1.1 client for health probes, metric sources and the load step: one connection per request
/// (`Connection: close`), an overall deadline, a body limit. Plain http only — the peers it talks to are
/// instances, Prometheus and JSON endpoints on the deploy network.
public struct HTTPClient: Sendable {
    public struct Target: Sendable, Equatable {
        public var host: String
        public var port: Int
        /// Path and query, starting with "/".
        public var path: String

        public init?(url: String) {
            guard url.hasPrefix("http://") else { return nil }
            let rest = url.dropFirst("http://".count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<slash]
            path = slash == rest.endIndex ? "/" : String(rest[slash...])
            if authority.hasPrefix("[") {
                guard let close = authority.firstIndex(of: "]") else { return nil }
                host = String(authority[authority.index(after: authority.startIndex)..<close])
                let after = authority[authority.index(after: close)...]
                if after.isEmpty { port = 80 } else {
                    guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { return nil }
                    port = p
                }
            } else if let colon = authority.lastIndex(of: ":") {
                host = String(authority[..<colon])
                guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
                port = p
            } else {
                host = String(authority)
                port = 80
            }
            guard !host.isEmpty, (1...65535).contains(port), !path.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else { return nil }
        }
    }

    let group: any EventLoopGroup
    public var maxBodyBytes: Int

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, maxBodyBytes: Int = 8 << 20) {
        self.group = group
        self.maxBodyBytes = maxBodyBytes
    }

    /// `timeout` in nanoseconds, at least 1 and at most about 31 years: seconds times 10⁹ overflows
    /// `Int64` past 292 years.
    static func nanoseconds(_ timeout: Duration) -> Int64 {
        let (seconds, attoseconds) = timeout.components
        guard seconds >= 0 else { return 1 }
        guard seconds < 1_000_000_000 else { return 1_000_000_000 * 1_000_000_000 }
        return max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    public func get(_ url: String, headers: [(String, String)] = [], timeout: Duration = .seconds(5)) async throws -> HTTPResponse {
        try await request(method: .GET, url: url, headers: headers, body: nil, timeout: timeout)
    }

    public func request(method: HTTPMethod, url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                        timeout: Duration = .seconds(5)) async throws -> HTTPResponse {
        guard let target = Target(url: url) else { throw HTTPClientError.invalidURL(url) }
        let start = ContinuousClock.now
        let nanos = Self.nanoseconds(timeout)
        let deadline = NIODeadline.now() + .nanoseconds(nanos)
        let limit = maxBodyBytes
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.nanoseconds(nanos))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    }
                }
                .connect(host: target.host, port: target.port).get()
        } catch let error as ChannelError where error == .connectTimeout(.nanoseconds(nanos)) {
            throw HTTPClientError.timedOut(url)
        } catch {
            throw HTTPClientError.connectFailed("\(target.host):\(target.port): \(error)")
        }
        let promise = channel.eventLoop.makePromise(of: (HTTPResponseHead, [UInt8]).self)
        let timeoutTask = channel.eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(HTTPClientError.timedOut(url))
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target.path)
        head.headers.add(name: "Host", value: target.port == 80 ? target.host : "\(target.host):\(target.port)")
        head.headers.add(name: "Connection", value: "close")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.add(name: "Content-Length", value: String(body.count)) }
        let requestHead = head
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, limit: limit))
            channel.write(HTTPClientRequestPart.head(requestHead), promise: nil)
            if let body {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }.get()
        defer {
            timeoutTask.cancel()
            channel.close(promise: nil)
        }
        let (responseHead, bytes) = try await promise.futureResult.get()
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        return HTTPResponse(status: Int(responseHead.status.code),
                            headers: responseHead.headers.map { ($0.name, $0.value) },
                            body: bytes, milliseconds: ms)
    }
}

/// Collects one response; fails the promise on close before the end, or past the body limit.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<(HTTPResponseHead, [UInt8])>
    let limit: Int
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var done = false

    init(promise: EventLoopPromise<(HTTPResponseHead, [UInt8])>, limit: Int) {
        self.promise = promise
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body(var buffer):
            if body.count + buffer.readableBytes > limit {
                finish(.failure(HTTPClientError.bodyTooLarge(limit)), context: context)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else {
                finish(.failure(HTTPClientError.protocolError("end without a head")), context: context)
                return
            }
            finish(.success((head, body)), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(HTTPClientError.protocolError("connection closed before the response ended")), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(HTTPClientError.protocolError("\(error)")), context: context)
    }

    private func finish(_ result: Result<(HTTPResponseHead, [UInt8]), any Error>, context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
        context.close(promise: nil)
    }
}
