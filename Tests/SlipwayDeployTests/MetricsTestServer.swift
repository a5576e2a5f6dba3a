import NIOCore
import NIOHTTP1
import NIOPosix

/// One canned response of `MetricsTestServer`.
struct MetricsRoute: Sendable {
    var status: Int = 200
    var contentType: String = "application/json"
    var body: String
}

/// A small HTTP/1.1 server with fixed responses by path (the query string is ignored): a Prometheus
/// `/metrics` endpoint to scrape and JSON documents for the `http` metric source. 404 for anything else.
final class MetricsTestServer: Sendable {
    private let channel: any Channel
    var port: Int { self.channel.localAddress?.port ?? 0 }
    var address: String { "http://127.0.0.1:\(self.port)" }

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Requests by version and status code, in the Prometheus text format.
    static let exposition = """
        # HELP http_requests_total Requests by version and status code.
        # TYPE http_requests_total counter
        http_requests_total{version="v1",code="200"} 90
        http_requests_total{version="v1",code="500"} 2
        http_requests_total{version="v2",code="200"} 40
        http_requests_total{version="v2",code="500"} 7

        """

    static func start(routes: [String: MetricsRoute] = [:]) async throws -> MetricsTestServer {
        var all = routes
        all["/metrics"] = all["/metrics"] ?? MetricsRoute(contentType: "text/plain; version=0.0.4; charset=utf-8", body: exposition)
        let table = all
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsTestHandler(routes: table))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return MetricsTestServer(channel: channel)
    }

    func stop() async {
        try? await self.channel.close().get()
    }
}

private final class MetricsTestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: [String: MetricsRoute]
    private var head: HTTPRequestHead?

    init(routes: [String: MetricsRoute]) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let path = String(head.uri.prefix { $0 != "?" })
            let route = self.routes[path] ?? MetricsRoute(status: 404, contentType: "text/plain", body: "no route \(path)\n")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: route.contentType)
            headers.add(name: "Content-Length", value: String(route.body.utf8.count))
            let status = HTTPResponseStatus(statusCode: route.status)
            context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: route.body.utf8.count)
            buffer.writeString(route.body)
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
