import NIOCore
import NIOHTTP1
import Testing

@testable import SlipwayDeploy

@Suite("TrafficRouter over real sockets")
struct TrafficRouterTests {
    @Test("90/10 weights: 1000 requests land within ±4 % of 10 % on the canary")
    func weightedSplit() async throws {
        try await withRouter(backends: ["s1", "s2", "c1"]) { b in
            RoutingTable(
                backends: [b["s1"]!.backend(version: "stable"), b["s2"]!.backend(version: "stable"), b["c1"]!.backend(version: "canary")],
                weights: ["stable": 90, "canary": 10],
                rules: [],
                stickyCookie: nil
            )
        } _: { fixture in
            let connection = try await TestHTTPConnection.connect(port: fixture.port)
            var canary = 0
            var stable = 0
            var mismatched = 0
            var failed = 0
            for _ in 0..<1000 {
                let response = try await connection.send()
                if response.status != 200 { failed += 1 }
                if response.version == "canary" { canary += 1 }
                if response.version == "stable" { stable += 1 }
                if (response.version == "canary") != (response.backend == "c1") { mismatched += 1 }
            }
            await connection.close()
            #expect(failed == 0)
            #expect(mismatched == 0)
            #expect(canary + stable == 1000)
            #expect(canary >= 60 && canary <= 140, "canary got \(canary) of 1000")
            // Round-robin among the stable version's two backends.
            let s1 = fixture.backends["s1"]!.stats.requests
            let s2 = fixture.backends["s2"]!.stats.requests
            #expect(s1 + s2 == stable)
            #expect(s1 - s2 <= 1 && s2 - s1 <= 1, "s1 \(s1) s2 \(s2)")
            let metrics = fixture.router.metrics(since: nil)
            #expect(metrics["stable"]?.requests == stable)
            #expect(metrics["canary"]?.requests == canary)
            #expect(metrics["stable"]?.errors == 0)
        }
    }

    @Test("keep-alive on both sides: one backend connection carries many requests")
    func connectionPooling() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<50 {
                    let response = try await connection.send()
                    #expect(response.status == 200)
                }
            }
            // Several client connections one after the other reuse the pooled connection(s) too.
            for _ in 0..<10 {
                _ = try await httpRequest(port: fixture.port)
            }
            let stats = fixture.backends["a"]!.stats
            #expect(stats.requests == 60)
            // at most one connection per router event loop
            #expect(stats.connections <= fixture.router.configuration.threads)
        }
    }

    @Test("Host is preserved, X-Forwarded-For appended, hop-by-hop headers dropped")
    func forwardedHeaders() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let response = try await httpRequest(
                port: fixture.port,
                "/hello",
                headers: [("Host", "shop.example:8443"), ("X-Forwarded-For", "10.1.2.3"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1")]
            )
            #expect(response.status == 200)
            #expect(response.version == "v1")
            #expect(response.body.contains("host=shop.example:8443\n"))
            #expect(response.body.contains("xff=10.1.2.3, 127.0.0.1\n"))
            #expect(response.body.contains("connection=\n"))
            let plain = try await httpRequest(port: fixture.port)
            #expect(plain.body.contains("xff=127.0.0.1\n"))
        }
    }

    @Test("a header rule pins requests to a version whose weight is 0")
    func headerRule() async throws {
        try await withRouter(backends: ["a", "b"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v2")],
                weights: ["v1": 100, "v2": 0],
                rules: [MatchRule(kind: .header, name: "X-Canary", value: "yes", version: "v2")],
                stickyCookie: nil
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<20 {
                    try #expect(await connection.send(headers: [("x-canary", "yes")]).version == "v2")
                    try #expect(await connection.send().version == "v1")
                    try #expect(await connection.send(headers: [("X-Canary", "no")]).version == "v1")
                }
            }
        }
    }

    @Test("a cookie rule pins requests; the first matching rule wins")
    func cookieRule() async throws {
        try await withRouter(backends: ["a", "b", "c"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v2"), b["c"]!.backend(version: "v3")],
                weights: ["v1": 1],
                rules: [
                    MatchRule(kind: .cookie, name: "beta", value: "1", version: "v2"),
                    MatchRule(kind: .cookie, name: "beta", value: "1", version: "v3"),
                    MatchRule(kind: .cookie, name: "gamma", value: "on", version: "v3"),
                ],
                stickyCookie: nil
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<10 {
                    try #expect(await connection.send(headers: [("Cookie", "session=abc; beta=1")]).version == "v2")
                    try #expect(await connection.send(headers: [("Cookie", "gamma=on")]).version == "v3")
                    try #expect(await connection.send(headers: [("Cookie", "beta=2")]).version == "v1")
                    try #expect(await connection.send().version == "v1")
                }
            }
        }
    }

    @Test("a rule naming a version without backends falls back to the weighted versions")
    func ruleWithoutBackends() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1")],
                weights: ["v1": 1, "v2": 0],
                rules: [MatchRule(kind: .header, name: "X-Canary", value: "yes", version: "v2")],
                stickyCookie: nil
            )
        } _: { fixture in
            let response = try await httpRequest(port: fixture.port, headers: [("X-Canary", "yes")])
            #expect(response.status == 200)
            #expect(response.version == "v1")
        }
    }

    @Test("sticky cookie keeps a client on its version until that version has no backends")
    func stickyCookie() async throws {
        try await withRouter(backends: ["a", "b"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v2")],
                weights: ["v1": 50, "v2": 50],
                rules: [],
                stickyCookie: "slipway-version"
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                var seen: Set<String> = []
                for _ in 0..<5 {
                    let first = try await connection.send()
                    let version = try #require(first.version)
                    seen.insert(version)
                    let setCookie = first.headers["set-cookie"].first ?? ""
                    #expect(setCookie.hasPrefix("slipway-version=\(version);"))
                    for _ in 0..<20 {
                        let next = try await connection.send(headers: [("Cookie", "a=b; slipway-version=\(version)")])
                        #expect(next.version == version)
                        #expect(next.headers["set-cookie"].isEmpty)
                    }
                }
                // A cookie for a version that left the table is not honoured; a new one is set.
                let v2Gone = RoutingTable(
                    backends: [fixture.backend("a", version: "v1")],
                    weights: ["v1": 50, "v2": 50],
                    rules: [],
                    stickyCookie: "slipway-version"
                )
                fixture.router.update(v2Gone)
                let moved = try await connection.send(headers: [("Cookie", "slipway-version=v2")])
                #expect(moved.version == "v1")
                #expect(moved.headers["set-cookie"].first?.hasPrefix("slipway-version=v1;") == true)
            }
        }
    }

    @Test("switching the table moves new requests at once; in-flight ones finish on their backend")
    func switchTable() async throws {
        try await withRouter(backends: ["stable", "canary"]) { b in
            RoutingTable(
                backends: [b["stable"]!.backend(version: "v1"), b["canary"]!.backend(version: "v2")],
                weights: ["v1": 0, "v2": 100],
                rules: [],
                stickyCookie: nil
            )
        } _: { fixture in
            let rollback = RoutingTable(
                backends: [fixture.backend("stable", version: "v1"), fixture.backend("canary", version: "v2")],
                weights: ["v1": 100, "v2": 0],
                rules: [],
                stickyCookie: nil
            )
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<10 {
                    try #expect(await connection.send().version == "v2")
                }
                // A slow request is in flight on v2 while the table switches.
                async let slow = httpRequest(port: fixture.port, "/slow/1500")
                // Wait until the slow request has reached its backend (it answers 1.5 s later).
                let canary = fixture.backends["canary"]!.stats
                for _ in 0..<1000 where canary.requests < 11 {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(canary.requests == 11)
                fixture.router.update(rollback)
                #expect(fixture.router.table == rollback)
                // The very next request on the same keep-alive connection follows the new table.
                for _ in 0..<50 {
                    try #expect(await connection.send().version == "v1")
                }
                let inFlight = try await slow
                #expect(inFlight.status == 200)
                #expect(inFlight.version == "v2")
                #expect(inFlight.body.contains("slow"))
            }
        }
    }

    @Test("backend down: 502 counted as an error, then traffic goes to the other backend")
    func backendDown() async throws {
        let deadPort = try await closedPort()
        try await withRouter(backends: ["up"]) { b in
            RoutingTable(
                backends: [Backend(version: "v1", host: "127.0.0.1", port: deadPort), b["up"]!.backend(version: "v1")],
                weights: ["v1": 1],
                rules: [],
                stickyCookie: nil
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                let first = try await connection.send()
                #expect(first.status == 502)
                #expect(first.version == "v1")
                for _ in 0..<20 {
                    let response = try await connection.send()
                    #expect(response.status == 200)
                    #expect(response.backend == "up")
                }
            }
            let metrics = try #require(fixture.router.metrics(since: nil)["v1"])
            #expect(metrics.requests == 21)
            #expect(metrics.errors == 1)
        }
    }

    @Test("a version whose backends are all down gives way to another version with weight")
    func versionDownFallsBack() async throws {
        let deadPort = try await closedPort()
        try await withRouter(backends: ["up"]) { b in
            RoutingTable(
                backends: [Backend(version: "v2", host: "127.0.0.1", port: deadPort), b["up"]!.backend(version: "v1")],
                weights: ["v1": 0, "v2": 1],
                rules: [MatchRule(kind: .header, name: "x-old", value: "1", version: "v1")],
                stickyCookie: nil
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                try #expect(await connection.send().status == 502)
                // v2 is ejected; v1 has weight 0 and no pin → nothing with weight has a healthy backend:
                // the router still tries the ejected one rather than failing outright.
                try #expect(await connection.send().status == 502)
                try #expect(await connection.send(headers: [("X-Old", "1")]).status == 200)
            }
            fixture.router.update(
                RoutingTable(
                    backends: [Backend(version: "v2", host: "127.0.0.1", port: deadPort), fixture.backend("up", version: "v1")],
                    weights: ["v1": 1, "v2": 1],
                    rules: [],
                    stickyCookie: nil
                )
            )
            // With weight on v1, requests avoid the ejected v2 backend.
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<20 {
                    let response = try await connection.send()
                    #expect(response.status == 200)
                    #expect(response.version == "v1")
                }
            }
        }
    }

    @Test("no backends → 503 with a short body, and the connection stays usable")
    func noBackends() async throws {
        try await withRouter(backends: []) { _ in
            RoutingTable(backends: [], weights: ["v1": 100], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<3 {
                    let response = try await connection.send()
                    #expect(response.status == 503)
                    #expect(response.body == "no backend available\n")
                }
                let upload = try await connection.send(.POST, "/upload", bodySize: 100_000)
                #expect(upload.status == 503)
                try #expect(await connection.send().status == 503)
            }
        }
    }

    @Test("backends but no weight and no matching rule → 503")
    func zeroWeights() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 0], rules: [], stickyCookie: nil)
        } _: { fixture in
            try #expect(await httpRequest(port: fixture.port).status == 503)
        }
    }

    @Test("oversized headers → 431 and close; the router keeps serving")
    func oversizedHeaders() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let big = String(repeating: "x", count: 70 * 1024)
            let request = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(big)\r\n\r\n"
            let reply = try await rawExchange(port: fixture.port, Array(request.utf8))
            #expect(reply.hasPrefix("HTTP/1.1 431 "))
            // Many moderately sized headers adding up past the limit too.
            var many = "GET / HTTP/1.1\r\nHost: a\r\n"
            for index in 0..<100 {
                many += "X-H\(index): \(String(repeating: "y", count: 1000))\r\n"
            }
            many += "\r\n"
            let reply2 = try await rawExchange(port: fixture.port, Array(many.utf8))
            #expect(reply2.hasPrefix("HTTP/1.1 431 "))
            try #expect(await httpRequest(port: fixture.port).status == 200)
        }
    }

    @Test("garbage bytes → 400 and close; the router keeps serving")
    func garbage() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let inputs: [[UInt8]] = [
                Array("\u{0}\u{1}\u{2}garbage\r\n\r\n".utf8),
                Array("GET / HTTP/9.9\r\n\r\n".utf8),
                Array("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8),
                Array("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n".utf8),
                (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) },
            ]
            for input in inputs {
                let reply = try await rawExchange(port: fixture.port, input)
                #expect(reply.hasPrefix("HTTP/1.1 400 ") || reply.isEmpty, "got \(reply.prefix(40))")
            }
            let first = try await rawExchange(port: fixture.port, inputs[0])
            #expect(first.hasPrefix("HTTP/1.1 400 "))
            try #expect(await httpRequest(port: fixture.port).status == 200)
        }
    }

    @Test("pipelined requests are answered in order")
    func pipelining() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let request = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            let reply = try await rawExchange(port: fixture.port, Array(request.utf8))
            let first = try #require(reply.range(of: "HTTP/1.1 200 OK"))
            let second = try #require(reply.range(of: "HTTP/1.1 404 Not Found"))
            #expect(first.lowerBound < second.lowerBound)
        }
    }

    @Test("a 20 MB body streams through in both directions")
    func streaming() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let size = 20 * 1024 * 1024
            try await withHTTPConnection(port: fixture.port) { connection in
                let upload = try await connection.send(.POST, "/upload", bodySize: size)
                #expect(upload.status == 200)
                #expect(upload.body == "received=\(size)\n")
                let download = try await connection.send(.GET, "/download/\(size)", keepBody: false)
                #expect(download.status == 200)
                #expect(download.bodyBytes == size)
                #expect(download.headers["content-length"].first == String(size))
                // The connection is still good afterwards.
                try #expect(await connection.send().status == 200)
            }
        }
    }

    @Test("HEAD and bodiless responses keep the connection in sync")
    func headRequests() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                let head = try await connection.send(.HEAD, "/")
                #expect(head.status == 200)
                #expect(head.bodyBytes == 0)
                let noContent = try await connection.send(.GET, "/status/204")
                #expect(noContent.status == 204)
                let get = try await connection.send(.GET, "/")
                #expect(get.body.contains("method=GET"))
            }
        }
    }

    @Test("metrics count requests and 5xx answers from the backend per version")
    func metricsCounts() async throws {
        try await withRouter(backends: ["a", "b"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v2")],
                weights: ["v1": 1],
                rules: [MatchRule(kind: .header, name: "x-v", value: "2", version: "v2")],
                stickyCookie: nil
            )
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<30 { _ = try await connection.send() }
                for _ in 0..<5 { try #expect(await connection.send(.GET, "/status/500").status == 500) }
                for _ in 0..<3 { try #expect(await connection.send(.GET, "/status/503").status == 503) }
                for _ in 0..<4 { try #expect(await connection.send(.GET, "/status/404").status == 404) }
                for _ in 0..<7 { _ = try await connection.send(headers: [("x-v", "2")]) }
                try #expect(await connection.send(.GET, "/status/502", headers: [("x-v", "2")]).status == 502)
            }
            let metrics = fixture.router.metrics(since: nil)
            let v1 = try #require(metrics["v1"])
            #expect(v1.requests == 42)
            #expect(v1.errors == 8)
            #expect(v1.p50 > 0)
            #expect(v1.p50 <= v1.p90 && v1.p90 <= v1.p99)
            let v2 = try #require(metrics["v2"])
            #expect(v2.requests == 8)
            #expect(v2.errors == 1)
        }
    }

    @Test("window() returns the samples recorded since an instant")
    func windowSamples() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for _ in 0..<10 { _ = try await connection.send() }
                let mark = ContinuousClock.now
                for _ in 0..<6 { _ = try await connection.send() }
                for _ in 0..<2 { _ = try await connection.send(.GET, "/status/500") }
                let window = fixture.router.window(version: "v1", since: mark)
                #expect(window.requests == 8)
                #expect(window.errors == 2)
                #expect(window.latencies.count == 8)
                #expect(window.latencies.allSatisfy { $0 > 0 && $0 < 60_000 })
                let recent = fixture.router.metrics(since: mark)["v1"]
                #expect(recent?.requests == 8)
                #expect(recent?.errors == 2)
                let all = fixture.router.metrics(since: nil)["v1"]
                #expect(all?.requests == 18)
                let empty = fixture.router.window(version: "v1", since: .now)
                #expect(empty.requests == 0 && empty.latencies.isEmpty)
                #expect(fixture.router.window(version: "nope", since: mark).requests == 0)
            }
        }
    }

    @Test("start binds a free port; shutdown is idempotent; start twice fails")
    func lifecycle() async throws {
        let router = TrafficRouter(port: 0)
        #expect(router.boundPort == 0)
        try await router.start()
        #expect(router.boundPort > 0)
        await #expect(throws: TrafficRouterError.alreadyStarted) { try await router.start() }
        try #expect(await httpRequest(port: router.boundPort).status == 503)
        try await router.shutdown()
        try await router.shutdown()
    }
}

@Suite("TrafficRouter failure handling")
struct TrafficRouterFailureTests {
    @Test("a pooled connection the backend closed is retried on a new one, invisibly to the client")
    func staleKeepAlive() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                for index in 0..<30 {
                    let response = try await connection.send(.GET, index % 2 == 0 ? "/close-after" : "/")
                    #expect(response.status == 200)
                }
            }
            #expect(fixture.router.metrics(since: nil)["v1"]?.errors == 0)
        }
    }

    @Test("a backend that doesn't answer in time → 504, counted as an error")
    func backendTimeout() async throws {
        var configuration = RouterConfiguration()
        configuration.backendIdleTimeout = .milliseconds(200)
        try await withRouter(backends: ["a"], configuration: configuration) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            try await withHTTPConnection(port: fixture.port) { connection in
                let slow = try await connection.send(.GET, "/slow/2000")
                #expect(slow.status == 504)
                #expect(slow.version == "v1")
                #expect(try await connection.send().status == 200)
            }
            let metrics = try #require(fixture.router.metrics(since: nil)["v1"])
            #expect(metrics.requests == 2)
            #expect(metrics.errors == 1)
        }
    }

    @Test("an idle client connection is closed after the idle timeout")
    func clientIdleTimeout() async throws {
        var configuration = RouterConfiguration()
        configuration.clientIdleTimeout = .milliseconds(200)
        try await withRouter(backends: [], configuration: configuration) { _ in
            RoutingTable(backends: [], weights: [:], rules: [], stickyCookie: nil)
        } _: { fixture in
            let start = ContinuousClock.now
            // Half a request line, then silence: the router must hang up on its own.
            let reply = try await rawExchange(port: fixture.port, Array("GET / HT".utf8))
            #expect(reply.isEmpty)
            #expect(ContinuousClock.now - start < .seconds(10))
        }
    }

    @Test("an HTTP/1.0 client gets an HTTP/1.0 response and the connection closes")
    func http10() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let reply = try await rawExchange(port: fixture.port, Array("GET / HTTP/1.0\r\nHost: a\r\n\r\n".utf8))
            #expect(reply.hasPrefix("HTTP/1.0 200 OK\r\n"))
            #expect(reply.lowercased().contains("x-slipway-version: v1\r\n"))
            #expect(reply.hasSuffix("connection=\n"))
        }
    }

    @Test("Expect: 100-continue is passed through")
    func expectContinue() async throws {
        try await withRouter(backends: ["a"]) { b in
            RoutingTable(backends: [b["a"]!.backend(version: "v1")], weights: ["v1": 1], rules: [], stickyCookie: nil)
        } _: { fixture in
            let reply = try await rawExchange(
                port: fixture.port,
                Array("POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".utf8)
            )
            #expect(reply.hasPrefix("HTTP/1.1 100 Continue\r\n"))
            #expect(reply.contains("\r\n\r\nHTTP/1.1 200 OK\r\n"))
            #expect(reply.hasSuffix("received=5\n"))
        }
    }

    @Test("many concurrent clients: every request answered, metrics add up")
    func concurrentClients() async throws {
        try await withRouter(backends: ["a", "b", "c"]) { b in
            RoutingTable(
                backends: [b["a"]!.backend(version: "v1"), b["b"]!.backend(version: "v1"), b["c"]!.backend(version: "v2")],
                weights: ["v1": 3, "v2": 1],
                rules: [],
                stickyCookie: nil
            )
        } _: { fixture in
            let port = fixture.port
            let ok = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        try await withHTTPConnection(port: port) { connection in
                            var ok = 0
                            for _ in 0..<25 where try await connection.send().status == 200 {
                                ok += 1
                            }
                            return ok
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(ok == 1000)
            let metrics = fixture.router.metrics(since: nil)
            #expect((metrics["v1"]?.requests ?? 0) + (metrics["v2"]?.requests ?? 0) == 1000)
            #expect(fixture.backends.values.reduce(0) { $0 + $1.stats.requests } == 1000)
        }
    }
}

@Suite("Routing state and metrics, without sockets")
struct RoutingUnitTests {
    static let table = RoutingTable(
        backends: [
            Backend(version: "stable", host: "127.0.0.1", port: 1),
            Backend(version: "stable", host: "127.0.0.1", port: 2),
            Backend(version: "canary", host: "127.0.0.1", port: 3),
        ],
        weights: ["stable": 90, "canary": 10],
        rules: [MatchRule(kind: .header, name: "x-pin", value: "canary", version: "canary")],
        stickyCookie: "sv"
    )

    @Test func weightedChoiceIsProportional() {
        var state = RoutingState(table: Self.table, seed: 7)
        var canary = 0
        for _ in 0..<100_000 where state.route(HTTPHeaders(), now: .now)?.version == "canary" {
            canary += 1
        }
        #expect(abs(Double(canary) / 100_000 - 0.10) < 0.01)
    }

    @Test func ruleThenStickyThenWeights() throws {
        var state = RoutingState(table: Self.table, seed: 1)
        let pinnedRoute = state.route(HTTPHeaders([("X-Pin", "canary")]), now: .now)
        let pinned = try #require(pinnedRoute)
        #expect(pinned.version == "canary")
        #expect(pinned.setStickyCookie == nil)
        let stickyRoute = state.route(HTTPHeaders([("Cookie", "sv=canary")]), now: .now)
        let sticky = try #require(stickyRoute)
        #expect(sticky.version == "canary")
        #expect(sticky.setStickyCookie == nil)
        let freshRoute = state.route(HTTPHeaders(), now: .now)
        let fresh = try #require(freshRoute)
        #expect(fresh.setStickyCookie == "sv")
        let unknownRoute = state.route(HTTPHeaders([("Cookie", "sv=v0")]), now: .now)
        let unknown = try #require(unknownRoute)
        #expect(unknown.setStickyCookie == "sv")
    }

    @Test func ejectedBackendIsSkippedUntilItsTimeIsUp() throws {
        var state = RoutingState(table: Self.table, seed: 1)
        let now = ContinuousClock.now
        let bad = Backend(version: "stable", host: "127.0.0.1", port: 1)
        state.eject(bad, now: now)
        for _ in 0..<50 {
            let decisionRoute = state.route(HTTPHeaders([("x-pin", "x")]), now: now)
            let decision = try #require(decisionRoute)
            #expect(decision.backend != bad)
        }
        var seen = false
        for _ in 0..<50 where state.route(HTTPHeaders(), now: now + .seconds(10))?.backend == bad {
            seen = true
        }
        #expect(seen)
    }

    @Test func updateReportsRemovedBackends() {
        var state = RoutingState(table: Self.table, seed: 1)
        var next = Self.table
        next.backends.removeLast()
        #expect(state.update(next) == [Backend(version: "canary", host: "127.0.0.1", port: 3)])
        // No canary backend left: pinned requests fall back to a weighted version.
        #expect(state.route(HTTPHeaders([("x-pin", "canary")]), now: .now)?.version == "stable")
    }

    @Test func cookieParsing() {
        let cookies = parseCookies(HTTPHeaders([("Cookie", "a=1; b = \"two\" ;c=; junk"), ("cookie", "d=4")]))
        #expect(cookies.map { "\($0.name)=\($0.value)" } == ["a=1", "b=two", "c=", "d=4"])
    }

    @Test func histogramPercentilesAreWithinABucket() {
        var histogram = LatencyHistogram()
        for value in 1...1000 {
            histogram.record(Double(value) / 10)  // 0.1 … 100 ms
        }
        for (q, expected) in [(0.5, 50.0), (0.9, 90.0), (0.99, 99.0)] {
            let value = histogram.percentile(q)
            #expect(abs(value - expected) / expected < 0.05, "p\(q) = \(value)")
        }
        #expect(LatencyHistogram.bucket(for: 0.01) == 0)
        #expect(LatencyHistogram.bucket(for: 120_000) == LatencyHistogram.upperBounds.count + 1)
        #expect(LatencyHistogram.upperBounds.last! >= 60_000 && LatencyHistogram.upperBounds.last! < 60_000 * 1.05)
    }

    @Test func windowReachingPastTheRingUsesPerSecondCounts() {
        let store = RouterMetricsStore(ringCapacity: 5)
        let start = ContinuousClock.now
        for index in 0..<20 {
            store.record(version: "v1", milliseconds: Double(index), isError: index % 4 == 0)
        }
        let window = store.window(version: "v1", since: start)
        #expect(window.requests == 20)
        #expect(window.errors == 5)
        #expect(window.latencies == [15, 16, 17, 18, 19])
        let metrics = store.metrics(since: nil)["v1"]
        #expect(metrics?.requests == 20)
        #expect(metrics?.errors == 5)
    }
}

@Suite("Header handling")
struct HeaderHandlingTests {
    @Test func hopByHopHeadersAreRemoved() {
        var headers = HTTPHeaders([
            ("Host", "a"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Upgrade", "websocket"), ("Proxy-Connection", "keep-alive"), ("Content-Length", "3"),
        ])
        removeHopByHopHeaders(&headers)
        #expect(headers.map(\.name) == ["Host", "Content-Length"])
        var plain = HTTPHeaders([("Server", "nginx"), ("Connection", "Keep-Alive"), ("Content-Length", "3")])
        removeHopByHopHeaders(&plain)
        #expect(plain.map(\.name) == ["Server", "Content-Length"])
        var untouched = HTTPHeaders([("Host", "a"), ("Accept", "*/*")])
        removeHopByHopHeaders(&untouched)
        #expect(untouched.count == 2)
    }

    @Test func versionsAndCookieNamesAreMadeHeaderSafe() {
        #expect(headerSafe("1.2.3-rc.1+build.5") == "1.2.3-rc.1+build.5")
        #expect(headerSafe("v1\r\nX-Evil: 1") == "v1__X-Evil:_1")
        #expect(headerSafe("a;b,c\"d") == "a_b_c_d")
        var state = RoutingState(
            table: RoutingTable(
                backends: [Backend(version: "v 1", host: "127.0.0.1", port: 1)],
                weights: ["v 1": 1],
                rules: [],
                stickyCookie: "bad name"
            ),
            seed: 1
        )
        let decision = state.route(HTTPHeaders(), now: .now)
        #expect(decision?.version == "v 1")
        #expect(decision?.versionHeader == "v_1")
        #expect(decision?.setStickyCookie == nil)  // an invalid cookie name turns stickiness off
    }
}
