import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import SlipwayDeploy

@Suite("Fast path: HTTP head scanning and chunked framing")
struct HTTPHeadParsingTests {
    struct Request {
        var outcome: String
        var head: ParsedRequestHead?
        var out: String
        var forwardedFor: String
        var headers: HTTPHeaders?
    }

    static func request(_ text: String, collect: Bool = false) -> Request {
        var out = ByteBuffer()
        var forwardedFor: [UInt8] = []
        var headers: HTTPHeaders? = collect ? HTTPHeaders() : nil
        let bytes = Array(text.utf8)
        let outcome = bytes.withUnsafeBytes {
            parseRequestHead($0, maxHeaderCount: 256, into: &out, forwardedFor: &forwardedFor, headers: &headers)
        }
        switch outcome {
        case .incomplete:
            return Request(outcome: "incomplete", out: "", forwardedFor: "")
        case .unsupported:
            return Request(outcome: "unsupported", out: "", forwardedFor: "")
        case .parsed(let head):
            return Request(
                outcome: "parsed",
                head: head,
                out: String(buffer: out),
                forwardedFor: String(decoding: forwardedFor, as: UTF8.self),
                headers: headers
            )
        }
    }

    @Test func plainRequestIsCopiedThrough() throws {
        let text = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"
        let result = Self.request(text + "GET /next")
        #expect(result.outcome == "parsed")
        let head = try #require(result.head)
        #expect(head.length == text.utf8.count)
        #expect(head.contentLength == 0)
        #expect(head.keepAlive)
        #expect(!head.isHead)
        #expect(!head.chunked)
        #expect(result.out == "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n")
    }

    @Test func hopByHopAndForwardedForAreTakenOut() throws {
        let result = Self.request(
            "POST /a?b=1 HTTP/1.1\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.0.0.1\r\nHost: h\r\n"
                + "Keep-Alive: timeout=5\r\nTE: trailers\r\nx-forwarded-for: 10.0.0.2 \r\nProxy-Connection: x\r\n"
                + "Content-Length: 12\r\nX-Last: v\r\n\r\n"
        )
        let head = try #require(result.head)
        #expect(head.contentLength == 12)
        #expect(head.keepAlive)
        #expect(result.out == "POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nX-Last: v\r\n")
        #expect(result.forwardedFor == "10.0.0.1, 10.0.0.2")
    }

    @Test func connectionCloseAndHeadAndChunked() throws {
        let close = try #require(Self.request("HEAD / HTTP/1.1\r\nconnection: Close\r\n\r\n").head)
        #expect(!close.keepAlive)
        #expect(close.isHead)
        let chunked = try #require(Self.request("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").head)
        #expect(chunked.chunked)
    }

    @Test func headersAreCollectedForRouting() throws {
        let result = Self.request("GET / HTTP/1.1\r\nCookie: a=1\r\nX-Pin:  canary \r\n\r\n", collect: true)
        let headers = try #require(result.headers)
        #expect(headers["x-pin"] == ["canary"])
        #expect(headers["cookie"] == ["a=1"])
    }

    @Test func incompleteHeadsWait() {
        for prefix in ["", "GE", "GET ", "GET /x", "GET /x HTTP/1.", "GET /x HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a",
            "GET / HTTP/1.1\r\nHost: a\r", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"]
        {
            #expect(Self.request(prefix).outcome == "incomplete", "\(prefix.debugDescription)")
        }
    }

    @Test func anythingUnusualGoesToTheNIOHTTP1Path() {
        let unusual = [
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\u{1}b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "FOO / HTTP/1.1\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET /a<b> HTTP/1.1\r\n\r\n",
            "GET /\u{80} HTTP/1.1\r\n\r\n",
            "\u{0}\u{1}garbage\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "x", count: fastPathMaxHeadBytes) + "\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "x", count: fastPathMaxHeadBytes),
        ]
        for text in unusual {
            #expect(Self.request(text).outcome == "unsupported", "\(text.prefix(60).debugDescription)")
        }
    }

    static func response(_ text: String, isHead: Bool = false) -> (outcome: String, head: ParsedResponseHead?, out: String) {
        let bytes = Array(text.utf8)
        var named: [[UInt8]] = []
        while true {
            var out = ByteBuffer()
            let outcome = bytes.withUnsafeBytes {
                parseResponseHead($0, maxLength: 80 * 1024, isHeadRequest: isHead, dropping: named, into: &out)
            }
            switch outcome {
            case .incomplete: return ("incomplete", nil, "")
            case .invalid: return ("invalid", nil, "")
            case .namesHeaders(let names): named = names
            case .parsed(let head): return ("parsed", head, String(buffer: out))
            }
        }
    }

    @Test func responseHeadsAreRewrittenForTheClient() throws {
        let plain = Self.response("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n")
        #expect(plain.head?.framing == .length(100))
        #expect(plain.head?.keepAlive == true)
        #expect(plain.out == "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 100\r\n")

        let old = Self.response("HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n")
        #expect(old.head?.framing == .untilClose)
        #expect(old.head?.keepAlive == false)
        #expect(old.out == "HTTP/1.1 200 OK\r\nX-A: 1\r\n")

        let old10KeepAlive = Self.response("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
        #expect(old10KeepAlive.head?.keepAlive == true)
        #expect(old10KeepAlive.head?.framing == ParsedResponseHead.Framing.none)

        let named = Self.response(
            "HTTP/1.1 200 OK\r\nX-Private: 1\r\nConnection: X-Private, close\r\nTransfer-Encoding: chunked\r\nUpgrade: h2\r\nX-Keep: 2\r\n\r\n"
        )
        #expect(named.head?.framing == .chunked)
        #expect(named.head?.keepAlive == false)
        #expect(named.out == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Keep: 2\r\n")

        let head = Self.response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", isHead: true)
        #expect(head.head?.framing == ParsedResponseHead.Framing.none)
        #expect(head.out == "HTTP/1.1 200 OK\r\n")
        #expect(Self.response("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").head?.framing == ParsedResponseHead.Framing.none)
        #expect(Self.response("HTTP/1.1 200\r\n\r\n").head?.framing == .untilClose)
        #expect(Self.response("HTTP/1.1 100 Continue\r\n\r\n").head?.status == 100)
    }

    @Test func badResponseHeads() {
        #expect(Self.response("HTTP/1.1 200 OK\r\nContent-Le").outcome == "incomplete")
        #expect(Self.response("HTTP/1.1 20").outcome == "incomplete")
        for text in [
            "HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/1.1 200 OK\nA: b\n\n", "ICY 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA b: c\r\n\r\n",
        ] {
            #expect(Self.response(text).outcome == "invalid", "\(text.debugDescription)")
        }
    }

    static func scan(_ text: String, pieces: Int) -> (consumed: Int, done: Bool, failed: Bool) {
        let bytes = Array(text.utf8)
        var scanner = ChunkedScanner()
        var consumed = 0
        var index = 0
        while index < bytes.count, !scanner.isDone {
            let end = min(bytes.count, index + pieces)
            guard let taken = bytes[index..<end].withUnsafeBytes({ scanner.scan($0) }) else { return (consumed, false, true) }
            consumed += taken
            index = end
        }
        return (consumed, scanner.isDone, false)
    }

    @Test func chunkedBodiesEndWhereTheirFramingSays() {
        let body = "5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n"
        for pieces in [1, 2, 3, 7, 1000] {
            let result = Self.scan(body + "GET / HTTP/1.1\r\n", pieces: pieces)
            #expect(result.done, "pieces \(pieces)")
            #expect(result.consumed == body.utf8.count || pieces > 1, "pieces \(pieces)")
        }
        // Whole buffer: exactly the body is consumed, the next request is left.
        #expect(Self.scan(body + "GET", pieces: 10_000) == (body.utf8.count, true, false))
        #expect(Self.scan("0\r\n\r\n", pieces: 10_000) == (5, true, false))
        #expect(Self.scan("5\r\nhel", pieces: 10_000) == (6, false, false))
        for bad in ["ZZZ\r\n", "\r\n", "5\r\nhelloXX", "5\nhello", "1234567890123456\r\n"] {
            #expect(Self.scan(bad, pieces: 10_000).failed, "\(bad.debugDescription)")
        }
    }

    /// A bare LF in the trailers is refused: otherwise a request hidden after `0\r\n\n` passes as trailer
    /// lines here, while a lenient backend sees the body end there and the hidden request as the next one.
    @Test func bareLineFeedsInTrailersAreRefused() {
        for smuggled in ["0\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", "0\r\nX-T: 1\nGET /x HTTP/1.1\r\n\r\n", "5\r\nhello\r\n0\r\nX-T: 1\r\n\n"] {
            for pieces in [1, 3, 10_000] {
                let result = Self.scan(smuggled, pieces: pieces)
                #expect(result.failed && !result.done, "\(smuggled.debugDescription) in pieces of \(pieces)")
            }
        }
    }
}

/// A backend that answers every request (head read up to its empty line; bodies are not supported) with canned
/// bytes chosen by the request's path, written in small pieces to exercise the router's framing.
final class ScriptedBackend: Sendable {
    let channel: any Channel
    var port: Int { self.channel.localAddress?.port ?? 0 }

    init(responses: [String: [UInt8]]) async throws {
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ScriptedBackendHandler(responses: responses))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func stop() async {
        try? await self.channel.close().get()
    }
}

private final class ScriptedBackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let responses: [String: [UInt8]]
    private var received: [UInt8] = []

    init(responses: [String: [UInt8]]) {
        self.responses = responses
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += Array(buffer: Self.unwrapInboundIn(data))
        while let end = self.headEnd() {
            let head = String(decoding: self.received[..<end], as: UTF8.self)
            self.received.removeFirst(end)
            let path = head.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
            let response = self.responses[path] ?? Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".utf8)
            // Small pieces, flushed one by one.
            var index = 0
            while index < response.count {
                let piece = Array(response[index..<min(response.count, index + 7)])
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(bytes: piece)), promise: nil)
                index += 7
            }
            if path.hasSuffix("-close") {
                context.close(promise: nil)
                return
            }
        }
    }

    private func headEnd() -> Int? {
        guard self.received.count >= 4 else { return nil }
        for index in 3..<self.received.count
        where self.received[index - 3] == 13 && self.received[index - 2] == 10 && self.received[index - 1] == 13
            && self.received[index] == 10
        {
            return index + 1
        }
        return nil
    }
}

@Suite("Fast path over real sockets")
struct ProxyFastPathTests {
    /// The fast path on, whatever `SLIPWAY_ROUTER_FAST_PATH` says.
    static var fast: RouterConfiguration {
        var configuration = RouterConfiguration()
        configuration.fastPath = true
        return configuration
    }

    static let responses: [String: [UInt8]] = [
        "/chunked": Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Private: 1\r\nConnection: X-Private\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n".utf8),
        "/length": Array("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nlength".utf8),
        "/hints": Array("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8),
        "/old-close": Array("HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\nuntil the end".utf8),
        "/broken": Array("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".utf8),
    ]

    static func withScriptedRouter(
        configuration: RouterConfiguration = ProxyFastPathTests.fast,
        _ body: (TrafficRouter) async throws -> Void
    ) async throws {
        let backend = try await ScriptedBackend(responses: Self.responses)
        let table = RoutingTable(
            backends: [Backend(version: "v1", host: "127.0.0.1", port: backend.port)],
            weights: ["v1": 1],
            rules: [],
            stickyCookie: nil
        )
        let router = TrafficRouter(host: "127.0.0.1", port: 0, table: table, configuration: configuration, seed: 1)
        try await router.start()
        do {
            try await body(router)
        } catch {
            try? await router.shutdown()
            await backend.stop()
            throw error
        }
        try await router.shutdown()
        await backend.stop()
    }

    @Test("chunked, Content-Length, 1xx and read-until-close responses, pipelined on one connection")
    func responseFraming() async throws {
        try await Self.withScriptedRouter { router in
            let request =
                "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /hints HTTP/1.1\r\nHost: a\r\n\r\n"
                + "GET /length HTTP/1.1\r\nHost: a\r\n\r\nGET /old-close HTTP/1.1\r\nHost: a\r\n\r\n"
            let reply = try await rawExchange(port: router.boundPort, Array(request.utf8))
            let expected =
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Slipway-Version: v1\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n"
                + "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slipway-Version: v1\r\n\r\nok"
                + "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Slipway-Version: v1\r\n\r\nlength"
                + "HTTP/1.1 200 OK\r\nX-Old: 1\r\nX-Slipway-Version: v1\r\nConnection: close\r\n\r\nuntil the end"
            #expect(reply == expected)
            #expect(router.fallbacks.load(ordering: .relaxed) == 0)
            let metrics = router.metrics(since: nil)["v1"]
            #expect(metrics?.requests == 4)
            #expect(metrics?.errors == 0)
        }
    }

    @Test("a malformed response head → 502, counted as an error")
    func badResponse() async throws {
        try await Self.withScriptedRouter { router in
            let reply = try await rawExchange(
                port: router.boundPort,
                Array("GET /broken HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
            )
            #expect(reply.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
            #expect(reply.contains("X-Slipway-Version: v1\r\n"))
            #expect(router.metrics(since: nil)["v1"]?.errors == 1)
        }
    }

    @Test("Content-Length and chunked uploads stay on the fast path; HTTP/1.0 and Expect fall back")
    func uploadsAndFallBack() async throws {
        try await withRouter(backends: ["a"], configuration: Self.fast) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let size = 3 * 1024 * 1024 + 17
            let body = [UInt8](repeating: UInt8(ascii: "u"), count: size)
            let lengthUpload = try await rawExchange(
                port: fixture.port,
                Array("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: \(size)\r\n\r\n".utf8) + body
                    + Array("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
            )
            #expect(lengthUpload.contains("\r\n\r\nreceived=\(size)\n"))
            #expect(lengthUpload.contains("method=GET"))
            var chunked = Array("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            for part in [1, 1000, 65_536, 5] {
                chunked += Array("\(String(part, radix: 16))\r\n".utf8) + [UInt8](repeating: 0x61, count: part) + [13, 10]
            }
            chunked += Array("0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8)
            let chunkedUpload = try await rawExchange(port: fixture.port, chunked)
            #expect(chunkedUpload.contains("\r\n\r\nreceived=\(1 + 1000 + 65_536 + 5)\n"))
            #expect(chunkedUpload.contains("method=GET"))
            let download = try await rawExchange(
                port: fixture.port,
                Array("GET /download/\(size) HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8),
                limit: 1 << 30
            )
            #expect(download.utf8.count > size)
            #expect(download.hasSuffix(String(repeating: "x", count: 10)) || download.utf8.count > size)
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 0)

            let old = try await rawExchange(port: fixture.port, Array("GET / HTTP/1.0\r\nHost: a\r\n\r\n".utf8))
            #expect(old.hasPrefix("HTTP/1.0 200 OK\r\n"))
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 1)
            // A fall-back after fast-path requests on the same connection keeps the order.
            let mixed = try await rawExchange(
                port: fixture.port,
                Array(
                    ("GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                        + "POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").utf8
                )
            )
            #expect(mixed.hasPrefix("HTTP/1.1 200 OK\r\n"))
            let first = try #require(mixed.range(of: "method=GET"))
            let second = try #require(mixed.range(of: "received=5\n"))
            #expect(first.lowerBound < second.lowerBound)
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 2)
            #expect(fixture.router.metrics(since: nil)["v1"]?.requests == 8)
        }
    }

    @Test("a malformed chunked request body closes the connection; the router keeps serving")
    func badChunkedRequest() async throws {
        try await withRouter(backends: ["a"], configuration: Self.fast) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let reply = try await rawExchange(
                port: fixture.port,
                Array("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX".utf8)
            )
            #expect(!reply.contains("received="))
            try #expect(await httpRequest(port: fixture.port).status == 200)
        }
    }

    @Test("a request hidden after a bare LF in the trailers is not passed on as part of the body")
    func bareLineFeedTrailerIsRefused() async throws {
        try await withRouter(backends: ["a"], configuration: Self.fast) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let reply = try await rawExchange(
                port: fixture.port,
                Array("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            )
            #expect(!reply.contains("HTTP/1.1"), "\(reply.debugDescription)")
            try #expect(await httpRequest(port: fixture.port).status == 200)
        }
    }

    @Test("the NIOHTTP1 path alone (fastPath off) still proxies")
    func slowPathOnly() async throws {
        var configuration = RouterConfiguration()
        configuration.fastPath = false
        try await withRouter(backends: ["a"], configuration: configuration) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: "sv")
        } _: { fixture in
            let response = try await httpRequest(port: fixture.port, headers: [("X-Forwarded-For", "10.1.2.3")])
            #expect(response.status == 200)
            #expect(response.body.contains("xff=10.1.2.3, 127.0.0.1\n"))
            #expect(response.headers["set-cookie"].first?.hasPrefix("sv=v1;") == true)
            try await withHTTPConnection(port: fixture.port) { connection in
                let size = 2 * 1024 * 1024
                let upload = try await connection.send(.POST, "/upload", bodySize: size)
                #expect(upload.body == "received=\(size)\n")
                let download = try await connection.send(.GET, "/download/\(size)", keepBody: false)
                #expect(download.bodyBytes == size)
                let head = try await connection.send(.HEAD, "/")
                #expect(head.bodyBytes == 0)
                #expect(try await connection.send(.GET, "/status/204").status == 204)
                #expect(try await connection.send().status == 200)
            }
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 0)
        }
    }

    @Test("plain GETs, HEAD and bodiless responses on one connection stay on the fast path")
    func keepAliveOnFastPath() async throws {
        try await withRouter(backends: ["a"], configuration: Self.fast) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<3 {
                    #expect(try await connection.send(.HEAD, "/").bodyBytes == 0)
                    let get = try await connection.send(.GET, "/", headers: [("Connection", "keep-alive")])
                    #expect(get.body.contains("method=GET"))
                    #expect(get.body.contains("connection=\n"))
                    #expect(try await connection.send(.DELETE, "/status/503").status == 503)
                }
                // Backend connections are reused across these.
                #expect(fixture.backends["a"]!.stats.connections <= fixture.router.configuration.threads)
                // The test backend sends a body even with 204/304: the router sends none, and doesn't reuse
                // that backend connection (its next bytes can't be trusted), but the client's stays in sync.
                for _ in 0..<3 {
                    #expect(try await connection.send(.GET, "/status/204").status == 204)
                    #expect(try await connection.send(.GET, "/status/304").status == 304)
                    #expect(try await connection.send().status == 200)
                }
            }
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 0)
            let metrics = fixture.router.metrics(since: nil)["v1"]
            #expect(metrics?.requests == 18)
            #expect(metrics?.errors == 3)
        }
    }

    @Test("sticky cookie and header rules on the fast path")
    func rulesOnFastPath() async throws {
        try await withRouter(backends: ["a", "b"], configuration: Self.fast) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v2")],
                weights: ["v1": 1, "v2": 0],
                rules: [MatchRule(kind: .header, name: "X-Pin", value: "two", version: "v2")],
                stickyCookie: "sv"
            )
        } _: { fixture in
            let fresh = try await httpRequest(port: fixture.port)
            #expect(fresh.version == "v1")
            #expect(fresh.headers["set-cookie"] == ["sv=v1; Path=/; HttpOnly; SameSite=Lax"])
            let pinned = try await httpRequest(port: fixture.port, headers: [("x-pin", "two")])
            #expect(pinned.version == "v2")
            #expect(pinned.headers["set-cookie"].isEmpty)
            let sticky = try await httpRequest(port: fixture.port, headers: [("Cookie", "other=1; sv=v2")])
            #expect(sticky.version == "v2")
            #expect(fixture.router.fallbacks.load(ordering: .relaxed) == 0)
        }
    }
}
