import Testing
@testable import SlipwayDeploy

@Suite struct HTTPClientTests {
    @Test func parsesHTTPURLs() {
        let t = HTTPClient.Target(url: "http://127.0.0.1:9090/api/v1/query?query=up")
        #expect(t?.host == "127.0.0.1")
        #expect(t?.port == 9090)
        #expect(t?.path == "/api/v1/query?query=up")
        #expect(HTTPClient.Target(url: "http://example")?.port == 80)
        #expect(HTTPClient.Target(url: "http://[::1]:81/x")?.host == "::1")
        #expect(HTTPClient.Target(url: "https://x/") == nil)
        #expect(HTTPClient.Target(url: "http://x:99999/") == nil)
        #expect(HTTPClient.Target(url: "http://x/a b") == nil)
    }

    @Test func getsStatusBodyAndLatency() async throws {
        let backend = try await TestBackend.start(name: "a")
        let client = HTTPClient()
        let ok = try await client.get("http://127.0.0.1:\(backend.port)/hello")
        #expect(ok.status == 200)
        #expect(ok.text.contains("backend=a"))
        #expect(ok.milliseconds > 0)
        let bad = try await client.get("http://127.0.0.1:\(backend.port)/status/503")
        #expect(bad.status == 503)
        await backend.stop()
    }

    @Test func timesOutAndFailsToConnect() async throws {
        let backend = try await TestBackend.start(name: "slow")
        let client = HTTPClient()
        await #expect(throws: HTTPClientError.timedOut("http://127.0.0.1:\(backend.port)/slow/2000")) {
            try await client.get("http://127.0.0.1:\(backend.port)/slow/2000", timeout: .milliseconds(200))
        }
        let port = try await closedPort()
        await #expect(throws: HTTPClientError.self) {
            try await client.get("http://127.0.0.1:\(port)/")
        }
        let small = HTTPClient(maxBodyBytes: 1000)
        await #expect(throws: HTTPClientError.bodyTooLarge(1000)) {
            try await small.get("http://127.0.0.1:\(backend.port)/download/100000")
        }
        await backend.stop()
    }
}
