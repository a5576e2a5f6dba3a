import Foundation
import Testing
@testable import SlipwayDeploy
import SlipwayCore

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

/// The agent's supervisor state, without processes: remote endpoints (an ssh target's hosts) are probed and
/// routed to but never spawned or signalled; local ones are spawned, crash and restart with backoff.
@Suite struct AgentStateTests {
    static func desired(_ versions: [String: VersionDeployment], weights: [String: Int]) -> DesiredEnvironment {
        var probe = ProbeConfig(HealthCheck())
        probe.interval = 1
        return DesiredEnvironment(config: EnvironmentConfig(name: "prod", listen: 8080, command: "./run", probe: probe), versions: versions, weights: weights)
    }

    @Test func remoteEndpointsAreProbedAndRoutedNotSpawned() {
        var state = AgentState()
        let effects = state.apply(Self.desired(["v1": VersionDeployment(count: 0, directory: "", endpoints: ["127.0.0.2:9000", "127.0.0.3:9000"])], weights: ["v1": 100]), now: 0)
        #expect(!effects.contains { if case .spawn = $0 { true } else { false } })
        #expect(state.instances.count == 2)
        let due = state.dueProbes(now: 0).map(\.url).sorted()
        #expect(due == ["http://127.0.0.2:9000/healthz", "http://127.0.0.3:9000/healthz"])
        #expect(state.table(for: "prod")?.backends.isEmpty == true, "no traffic before a probe succeeds")
        for id in state.instances.keys { _ = state.probed(id: id, failure: nil, now: 1) }
        #expect(state.table(for: "prod")?.backends.map(\.host).sorted() == ["127.0.0.2", "127.0.0.3"])
        // Nothing to restart or signal for remote instances, ever.
        #expect(state.tick(now: 1000).allSatisfy { if case .spawn = $0 { false } else if case .signal = $0 { false } else { true } })
        // An endpoint that is no longer listed goes at once.
        _ = state.apply(Self.desired(["v1": VersionDeployment(count: 0, directory: "", endpoints: ["127.0.0.2:9000"])], weights: ["v1": 100]), now: 2)
        #expect(state.instances.count == 1)
    }

    @Test func localInstancesSpawnCrashAndRestartWithBackoff() {
        var state = AgentState()
        let effects = state.apply(Self.desired(["v1": VersionDeployment(count: 2, directory: "/srv/v1")], weights: ["v1": 100]), now: 0)
        #expect(effects.filter { if case .spawn = $0 { true } else { false } }.count == 2)
        let ids = state.instances.keys.sorted()
        _ = state.spawned(id: ids[0], pid: 100, port: 5000, error: nil, now: 0)
        _ = state.spawned(id: ids[1], pid: 101, port: 5001, error: nil, now: 0)
        _ = state.probed(id: ids[0], failure: nil, now: 1)
        #expect(state.table(for: "prod")?.backends.map(\.port) == [5000])
        let crash = state.exited(pid: 100, description: "exited with code 1", now: 2)
        #expect(crash.contains(.updateRouter(environment: "prod")), "a serving instance that crashed leaves the router")
        #expect(state.table(for: "prod")?.backends.isEmpty == true)
        #expect(state.tick(now: 2.4).isEmpty, "first restart after 0.5 s")
        #expect(state.tick(now: 2.5).contains(.spawn(id: ids[0])))
        #expect(AgentState.backoff(restarts: 3) == 2 && AgentState.backoff(restarts: 20) == 30)
        _ = state.spawned(id: ids[0], pid: 102, port: 5000, error: nil, now: 2.6)
        _ = state.probed(id: ids[1], failure: nil, now: 2.7)
        // Scaling down stops the surplus, the unhealthy one first: router first, then SIGTERM to its process group.
        let down = state.apply(Self.desired(["v1": VersionDeployment(count: 1, directory: "/srv/v1")], weights: ["v1": 100]), now: 3)
        #expect(down.firstIndex(of: .updateRouter(environment: "prod"))! < down.firstIndex(of: .signal(pid: -102, signal: 15))!)
        #expect(state.table(for: "prod")?.backends.map(\.port) == [5001])
        // It outlives the grace period: SIGKILL; once reaped it is gone.
        #expect(state.tick(now: 3 + 10).contains(.signal(pid: -102, signal: 9)))
        _ = state.exited(pid: 102, description: "killed by signal 9", now: 13.1)
        #expect(state.instances.count == 1)
    }

    /// Any local process can write to the agent's socket: numbers that would trap (a duration × 10⁹, a
    /// count of `Int.min`, a weight sum) get an error reply, and nothing is applied or saved.
    @Test func outOfRangeNumbersGetAnErrorReplyNotACrash() async throws {
        let directory = NSTemporaryDirectory() + "slipway-agent-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = DeployAgent(dataDirectory: directory)
        func bad(_ change: (inout DesiredEnvironment) -> Void) -> DesiredEnvironment {
            // Port 0: were it applied, the router would only take a free port.
            var desired = Self.desired(["v1": VersionDeployment(count: 1, directory: directory)], weights: ["v1": 100])
            desired.config.listen = 0
            change(&desired)
            return desired
        }
        let cases: [(String, DesiredEnvironment)] = [
            ("probe timeout", bad { $0.config.probe.timeout = 1e12 }),
            ("probe interval", bad { $0.config.probe.interval = .nan }),
            ("stop grace", bad { $0.config.stopGrace = -1 }),
            ("instances", bad { $0.versions["v1"]?.count = Int.min }),
            ("instances", bad { $0.versions["v1"]?.count = Int.max }),
            ("weight", bad { $0.weights = ["v1": Int.max, "v2": Int.max] }),
            ("weight", bad { $0.weights["v1"] = -1 }),
            ("healthy-after", bad { $0.config.probe.healthyAfter = Int.min }),
            ("port", bad { $0.config.listen = 70_000 }),
            ("preview port", bad { $0.config.previewPort = 0 }),
            ("endpoint", bad { $0.versions["v1"]?.endpoints = ["10.0.0.1:99999"] }),
        ]
        for (what, desired) in cases {
            let reply = await agent.handle(.apply(desired))
            guard case .error(let message) = reply else {
                Issue.record("\(what): \(reply)")
                continue
            }
            #expect(message.contains(what), "\(message)")
        }
        #expect(agent.status().isEmpty, "nothing was applied")
        #expect(!FileManager.default.fileExists(atPath: AgentPaths(dataDirectory: directory).state), "nothing was saved")
        for since in [-1e300, .infinity, .nan] {
            guard case .error = await agent.handle(.window(environment: "prod", version: "v1", since: since)) else {
                Issue.record("window since \(since) was accepted")
                continue
            }
        }
        #expect(bad { _ in }.problem == nil, "the unchanged environment is fine")
    }

    /// A state saved by an older agent with such numbers is dropped on restart instead of trapping again,
    /// and the conversions clamp rather than trap whatever they are given.
    @Test func savedOutOfRangeEnvironmentsAreDroppedAndConversionsClamp() throws {
        var state = AgentState()
        _ = state.apply(Self.desired(["v1": VersionDeployment(count: 1, directory: "/srv/v1")], weights: ["v1": 100]), now: 0)
        var broken = Self.desired([:], weights: ["v1": Int.max])
        broken.config.name = "broken"
        state.environments["broken"] = broken
        let dropped = state.dropInvalidEnvironments()
        #expect(dropped.map(\.name) == ["broken"])
        #expect(state.environments.keys.sorted() == ["prod"])

        var probe = ProbeConfig(HealthCheck())
        probe.timeout = 1e12
        probe.interval = -.infinity
        probe.deadline = .nan
        #expect(probe.healthCheck.timeout == .seconds(7 * 86_400))
        #expect(probe.healthCheck.interval == .zero && probe.healthCheck.deadline == .zero)
        #expect(HTTPClient.nanoseconds(.seconds(Int64.max)) == 1_000_000_000_000_000_000)
        #expect(HTTPClient.nanoseconds(.seconds(-5)) == 1)
        #expect(HTTPClient.nanoseconds(.milliseconds(1500)) == 1_500_000_000)
    }
}

/// `slipway/load`: open loop — requests start on schedule even when the service is slow.
@Suite struct LoadGeneratorTests {
    @Test func keepsItsScheduleAgainstASlowServiceAndCountsErrors() async throws {
        let backend = try await TestBackend.start(name: "slow")
        // Each response takes 300 ms; a closed loop of one worker would manage ~3 requests in 1 s.
        let slow = await LoadGenerator(url: "http://127.0.0.1:\(backend.port)/slow/300", rps: 40, duration: .seconds(1)).run()
        #expect(slow.requests == 40, "\(slow.summary)")
        #expect(slow.errors == 0)
        #expect(slow.percentile(50) >= 300, "\(slow.summary)")
        let failing = await LoadGenerator(url: "http://127.0.0.1:\(backend.port)/status/503", rps: 20, duration: .milliseconds(500)).run()
        #expect(failing.requests == 10 && failing.errors == 10 && failing.statuses[503] == 10, "\(failing.summary)")
        await backend.stop()
        let refused = await LoadGenerator(url: "http://127.0.0.1:1/", rps: 10, duration: .milliseconds(300)).run()
        #expect(refused.failures == 3 && refused.errorPercent == 100, "\(refused.summary)")
    }
}
