#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

// End-to-end tests of progressive delivery (issue 4): the real binary, its real background agent, real
// instances of the sample service behind the built-in router, real HTTP through it, and kill -9.

/// A project whose `build` job releases `app/` (a sample-service config) as web@$VERSION, and whose deploy job
/// rolls it out to `production` on a local target behind the router on a free port.
struct DeployProject {
    let box: Sandbox
    let port: Int

    /// `strategy` and `extraJobs` are YAML fragments (indented for their place).
    init(strategy: String, instances: Int = 2, health: String = "{ path: /healthz, interval: 200ms, deadline: 15s }",
         extraJobs: String = "", protection: String = "", stopGrace: String = "2s") throws {
        let binary = try SlipwayBinary.require()
        port = try DeployKit.freePort()
        let pipeline = """
            name: deploy-e2e
            jobs:
              build:
                steps:
                  - run: echo building $VERSION
                release: { name: web, version: "${{ env.VERSION }}", path: app }
              production:
                needs: [build]
                deploy: { environment: production }
            \(extraJobs)
            environments:
              production:
            \(protection)
                target:
                  local:
                    instances: \(instances)
                    command: "\(binary) sample-service --config config"
                    listen: \(port)
                    health: \(health)
                    stop-grace: \(stopGrace)
                strategy:
            \(strategy)
            """
        box = try Sandbox(pipeline, files: ["app/config": "error-percent=0\n"])
    }

    /// Commits a new app config and runs the pipeline for VERSION.
    func ship(_ version: String, config: String = "", arguments: [String] = [], timeout: Double = 90) async throws -> CommandResult {
        try box.write("app/config", config + "\n# \(version)\n")
        try box.commit("v\(version)")
        return try await box.slipway(["run", "--plain"] + box.outEnv + ["--env", "VERSION=\(version)"] + arguments, timeout: timeout)
    }

    func launchShip(_ version: String, config: String = "", arguments: [String] = ["--env", "LOAD=yes"]) throws -> Launched {
        try box.write("app/config", config + "\n# \(version)\n")
        try box.commit("v\(version)")
        return try box.launch(["run", "--plain", "--env", "VERSION=\(version)"] + arguments + box.outEnv)
    }

    func get(_ path: String = "/") -> (status: Int, body: String)? { DeployKit.get(port: port, path) }

    /// Versions answering `n` requests through the router.
    func sample(_ n: Int) -> [String: Int] {
        var seen: [String: Int] = [:]
        for _ in 0..<n {
            let body = get()?.body ?? "no answer"
            seen[body.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += 1
        }
        return seen
    }

    func status() async throws -> [String: Any] {
        let result = try await box.slipway("status", "--json", "production", timeout: 30)
        guard let array = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]], let first = array.first else {
            throw E2EError("status --json: \(result)")
        }
        return first
    }

    func down() async {
        _ = try? await box.slipway("down", timeout: 60)
    }

    /// `down` before the test returns, for `defer`: a task started there may not run before the test
    /// process exits, which left agents and instances behind after failed tests.
    func downNow() {
        guard let launched = try? box.launch(["down"]) else { return }
        let deadline = Date().addingTimeInterval(60)
        while launched.process.isRunning, Date() < deadline { usleep(50_000) }
        if launched.process.isRunning { launched.process.terminate() }
    }
}

enum DeployKit {
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw E2EError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// One blocking HTTP/1.0 GET on loopback (independent of Slipway's own client), 2 s timeout.
    static func get(port: Int, _ path: String) -> (status: Int, body: String)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let statusLine = text.split(separator: "\r\n").first, statusLine.split(separator: " ").count >= 2,
              let status = Int(statusLine.split(separator: " ")[1]) else { return nil }
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }

    static func waitUntil(_ what: String, timeout: Double = 30, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw E2EError("timed out waiting until \(what)")
    }

    static func processExists(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return true }
        return !stat[close...].hasPrefix(") Z")
    }
}

extension EndToEnd {
    @Suite("progressive delivery", .serialized)
    struct Deploying {
        static let canary = """
                  canary:
                    steps: [ { weight: 25 }, { pause: 2s }, { weight: 100 } ]
                    analysis:
                      interval: 1s
                      failure-limit: 0
                      inconclusive-limit: 30
                      metrics:
                        - { name: errors, source: router, metric: error-rate, compare: baseline }
            """

        @Test("first release goes to full size; a healthy canary is promoted; a bad one is rolled back by the analysis while slipway/load drives traffic")
        func canaryPromotesAndRollsBack() async throws {
            // A load job beside the deploy job: the analysis needs traffic.
            let project = try DeployProject(strategy: Self.canary.replacingOccurrences(of: "{ pause: 2s }", with: "{ pause: 30s }"), extraJobs: """
                  load:
                    needs: [build]
                    if: env.LOAD == 'yes'
                    steps:
                      - uses: slipway/load
                        with: { url: "http://127.0.0.1:PORT/", rps: 100, duration: 25s }
                """)
            defer { project.downNow() }
            try project.box.write("slipway.yml", try String(contentsOfFile: project.box.repo + "/slipway.yml", encoding: .utf8)
                .replacingOccurrences(of: "PORT", with: String(project.port)))

            let first = try await project.ship("1.0.0")
            #expect(first.status == 0, "\(first)")
            #expect(first.stdout.contains("first release"), "\(first)")
            #expect(project.sample(5) == ["hello from 1.0.0": 5])

            // 30 % of the canary's requests fail: the error-rate comparison against 1.0.0 fails and traffic returns.
            let bad = try await project.ship("2.0.0", config: "error-percent=30", arguments: ["--env", "LOAD=yes"])
            #expect(bad.status == 1, "\(bad)")
            #expect(bad.stdout.contains("errors: fail"), "\(bad)")
            #expect(bad.stdout.contains("rolled back") || bad.stdout.contains("rolledBack"), "\(bad)")
            #expect(project.sample(10) == ["hello from 1.0.0": 10], "all traffic is back on 1.0.0")
            let status = try await project.status()
            let rollout = try #require(status["rollout"] as? [String: Any])
            #expect(rollout["phase"] as? String == "rolledBack")
            let events = rollout["events"] as? [[String: Any]] ?? []
            let failed = events.compactMap { $0["measurement"] as? [String: Any] }.first { $0["outcome"] as? String == "fail" }
            let comparison = try #require(failed?["comparison"] as? [String: Any], "the verdict keeps its inputs: \(events)")
            #expect((comparison["canaryCount"] as? Int ?? 0) > 0)
            #expect(comparison["pValue"] != nil)
            let agent = try #require(status["agent"] as? [String: Any])
            let instances = agent["instances"] as? [[String: Any]] ?? []
            #expect(instances.allSatisfy { $0["version"] as? String == "1.0.0" }, "the canary's instances were stopped: \(instances)")
        }

        @Test("a slow canary (+40 ms per response) fails the Mann-Whitney latency comparison and is rolled back")
        func slowCanaryRollsBack() async throws {
            let project = try DeployProject(strategy: """
                      canary:
                        steps: [ { weight: 50 }, { pause: 30s }, { weight: 100 } ]
                        analysis:
                          interval: 1s
                          failure-limit: 0
                          inconclusive-limit: 60
                          metrics:
                            - { name: latency, source: router, metric: latency-p90, compare: baseline }
                """, extraJobs: """
                  load:
                    needs: [build]
                    if: env.LOAD == 'yes'
                    steps:
                      - uses: slipway/load
                        with: { url: "http://127.0.0.1:PORT/", rps: 60, duration: 15s }
                """)
            defer { project.downNow() }
            try project.box.write("slipway.yml", try String(contentsOfFile: project.box.repo + "/slipway.yml", encoding: .utf8)
                .replacingOccurrences(of: "PORT", with: String(project.port)))
            try #require(try await project.ship("1.0.0").status == 0)
            let slow = try await project.ship("2.0.0", config: "latency-ms=40", arguments: ["--env", "LOAD=yes"])
            #expect(slow.status == 1, "\(slow)")
            #expect(slow.stdout.contains("latency: fail"), "\(slow)")
            #expect(project.sample(5) == ["hello from 1.0.0": 5])
        }

        @Test("kill -9 of slipway mid-canary: the router keeps serving both versions by the last weights; --resume continues the pause and promotes")
        func killNineMidCanary() async throws {
            let project = try DeployProject(strategy: """
                      canary:
                        steps: [ { weight: 50 }, { pause: 8s }, { weight: 100 } ]
                """)
            defer { project.downNow() }
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")

            let run = try project.launchShip("2.0.0")
            try await DeployKit.waitUntil("the canary takes 50 %") {
                let text = (try? String(contentsOfFile: run.stdoutPath, encoding: .utf8)) ?? ""
                return text.contains("paused for 8s")
            }
            run.signal(SIGKILL)
            _ = try await run.wait(timeout: 10)
            let killedAt = Date()
            // Nothing drives the rollout now; the agent's router keeps splitting traffic by the last weights.
            let seen = project.sample(60)
            #expect(seen["hello from 1.0.0", default: 0] > 5 && seen["hello from 2.0.0", default: 0] > 5, "both versions serve: \(seen)")
            #expect(seen.keys.allSatisfy { $0.hasPrefix("hello from") }, "no failed request: \(seen)")

            let resumed = try await project.box.run("--resume", timeout: 60)
            #expect(resumed.status == 0, "\(resumed)")
            #expect(resumed.stdout.contains("resumed at phase stepping"), "\(resumed)")
            #expect(resumed.stdout.contains("promoted"), "\(resumed)")
            // The pause counted from before the kill: the remaining time, not a fresh 8 s.
            #expect(Date().timeIntervalSince(killedAt) < 8 + 6, "resume waited for the remaining pause only")
            #expect(project.sample(10) == ["hello from 2.0.0": 10])
        }

        @Test("a rollout whose driver was killed is taken over by `slipway resume` with the deploy job's own strategy and its analysis, not the environment's")
        func takeOverKeepsTheJobStrategy() async throws {
            let project = try DeployProject(strategy: "          recreate")
            defer { project.downNow() }
            // The deploy job overrides the environment's `recreate` with a canary judged by a command metric.
            let path = project.box.repo + "/slipway.yml"
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try #require(text.contains("deploy: { environment: production }"))
            try project.box.write("slipway.yml", text.replacingOccurrences(of: "deploy: { environment: production }", with: """
                deploy:
                      environment: production
                      strategy:
                        canary:
                          steps: [ { weight: 50 }, { pause: 6s }, { weight: 100 } ]
                          analysis:
                            interval: 1s
                            metrics: [ { name: smoke, source: command, command: "echo 0", max: 0 } ]
                """))
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")
            let run = try project.launchShip("2.0.0")
            try await DeployKit.waitUntil("the canary's pause") {
                ((try? String(contentsOfFile: run.stdoutPath, encoding: .utf8)) ?? "").contains("paused for 6s")
            }
            run.signal(SIGKILL)
            _ = try await run.wait(timeout: 10)
            let resumed = try await project.box.slipway("resume", "production", timeout: 60)
            #expect(resumed.stdout.contains("continuing it here"), "\(resumed)")
            #expect(resumed.stdout.contains("smoke: pass"), "the job's analysis runs after the take-over: \(resumed)")
            #expect(!resumed.stdout.contains("no metric was measured"), "\(resumed)")
            #expect(resumed.stdout.contains("promoted"), "\(resumed)")
            #expect(project.sample(10) == ["hello from 2.0.0": 10])
        }

        @Test("`slipway run | cat` ends when the run ends: the agent it starts holds none of the run's pipes")
        func agentHoldsNoPipes() async throws {
            let project = try DeployProject(strategy: "          recreate", instances: 1)
            defer { project.downNow() }
            try project.box.write("app/config", "error-percent=0\n")
            let binary = try SlipwayBinary.require()
            let piped = try await ReleaseKit.tool(["bash", "-c", "'\(binary)' run --plain --env VERSION=1.0.0 2>&1 | cat > piped.txt; echo ended"],
                                                  in: project.box.repo, timeout: 60)
            #expect(piped.stdout.contains("ended"), "\(piped)")
            let text = try String(contentsOfFile: project.box.repo + "/piped.txt", encoding: .utf8)
            #expect(text.contains("promoted"), "\(text)")
            #expect(project.get()?.body.contains("hello from 1.0.0") == true, "the agent still serves after the pipe closed")
        }

        @Test("kill -9 of the agent: the instances keep running; the next command starts an agent that adopts them (same pids) and routes again")
        func agentKillNineAdoptsInstances() async throws {
            let project = try DeployProject(strategy: "          recreate", instances: 2)
            defer { project.downNow() }
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")
            func instancePids() async throws -> [Int] {
                let agent = try await project.status()["agent"] as? [String: Any]
                return ((agent?["instances"] as? [[String: Any]]) ?? []).compactMap { ($0["pid"] as? NSNumber)?.intValue }.sorted()
            }
            let before = try await instancePids()
            try #require(before.count == 2)
            let pgrep = try await ReleaseKit.tool(["pgrep", "-f", "slipway agent --data-dir \(project.box.dataDirectory)"], in: "/")
            let agentPid = try #require(Int32(pgrep.stdout.split(separator: "\n").first ?? ""), "\(pgrep)")
            kill(agentPid, SIGKILL)
            try await DeployKit.waitUntil("the agent is gone", timeout: 10) { !DeployKit.processExists(agentPid) }
            #expect(before.allSatisfy { DeployKit.processExists(Int32($0)) }, "instances outlive the agent")
            // A deploy (any command that needs the agent) starts a new one; it adopts the running instances.
            _ = try await project.box.slipway("deploy", "production", "web@1.0.0", timeout: 60)
            try await DeployKit.waitUntil("the router serves again", timeout: 15) { project.get()?.body.contains("hello from 1.0.0") == true }
            let after = try await instancePids()
            #expect(after == before, "adopted, not restarted: \(before) → \(after)")
        }

        @Test("an instance that crashes is restarted with backoff and gets traffic again; `down` of the last environment leaves no agent")
        func crashRestart() async throws {
            let project = try DeployProject(strategy: "          recreate", instances: 1)
            defer { project.downNow() }
            let first = try await project.ship("1.0.0", config: "crash-after=3")
            try #require(first.status == 0, "\(first)")
            for _ in 0..<5 { _ = project.get() }
            try await DeployKit.waitUntil("the instance is back and healthy", timeout: 20) {
                let agent = try await project.status()["agent"] as? [String: Any]
                let instance = (agent?["instances"] as? [[String: Any]])?.first
                return (instance?["restarts"] as? Int ?? 0) >= 1 && instance?["state"] as? String == "healthy"
            }
            #expect(project.get()?.body.contains("hello from 1.0.0") == true)
            // `down` of the only environment by name: the agent has nothing left and has exited when it returns.
            let pgrep = try await ReleaseKit.tool(["pgrep", "-f", "slipway agent --data-dir \(project.box.dataDirectory)"], in: "/")
            let agentPid = try #require(Int32(pgrep.stdout.split(separator: "\n").first ?? ""), "\(pgrep)")
            let down = try await project.box.slipway("down", "production", timeout: 60)
            #expect(down.status == 0 && down.stdout.contains("stopped production"), "\(down)")
            #expect(!DeployKit.processExists(agentPid), "the agent has exited")
            #expect(project.get() == nil, "the router is closed")
        }

        @Test("rolling: a healthy version replaces instances one by one; one that never becomes healthy fails the deploy and traffic stays on the stable version")
        func unhealthyCandidate() async throws {
            let project = try DeployProject(strategy: "          rolling", instances: 2, health: "{ path: /healthz, interval: 200ms, deadline: 3s }")
            defer { project.downNow() }
            try #require(try await project.ship("1.0.0").status == 0)
            // A healthy version rolls through instance by instance first.
            let good = try await project.ship("1.5.0")
            #expect(good.status == 0, "\(good)")
            #expect(good.stdout.contains("start 1 × 1.5.0") && good.stdout.contains("all 2 instances run 1.5.0"), "\(good)")
            let bad = try await project.ship("2.0.0", config: "unhealthy=true")
            #expect(bad.status == 1, "\(bad)")
            #expect(bad.stdout.contains("did not become healthy"), "\(bad)")
            #expect(project.sample(10) == ["hello from 1.5.0": 10])
        }

        @Test("blue-green: the new version starts beside the old one, traffic switches at once, rollback switches back in under a second while the old one is warm")
        func blueGreenAndRollback() async throws {
            let previewPort = try DeployKit.freePort()
            let project = try DeployProject(strategy: """
                      blue-green: { preview: \(previewPort), auto-promote: true, scale-down-delay: 60s }
                """)
            defer { project.downNow() }
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")
            let second = try project.launchShip("2.0.0")
            try await DeployKit.waitUntil("traffic switched to 2.0.0") { project.get()?.body.contains("2.0.0") == true }
            #expect(project.sample(10) == ["hello from 2.0.0": 10])
            // 1.0.0 is still warm (scale-down delay): rollback only flips the weights.
            let started = Date()
            let rollback = try await project.box.slipway("rollback", "production", timeout: 30)
            #expect(rollback.status == 0, "\(rollback)")
            try await DeployKit.waitUntil("traffic is back on 1.0.0", timeout: 5) { project.get()?.body.contains("1.0.0") == true }
            #expect(Date().timeIntervalSince(started) < 3, "switch-back took \(Date().timeIntervalSince(started)) s")
            #expect(project.sample(10) == ["hello from 1.0.0": 10])
            let finished = try await second.wait(timeout: 30)
            #expect(finished.status == 1, "the interrupted deploy reports the abort: \(finished)")
        }

        @Test("blue-green pre-promotion analysis on the preview port: a bad version is rolled back before production traffic ever reaches it")
        func blueGreenPrePromotionAnalysis() async throws {
            let previewPort = try DeployKit.freePort()
            let project = try DeployProject(strategy: """
                      blue-green:
                        preview: \(previewPort)
                        auto-promote: true
                        scale-down-delay: 1s
                        pre-promotion:
                          interval: 1s
                          failure-limit: 0
                          inconclusive-limit: 30
                          metrics:
                            - { name: preview-errors, source: router, metric: error-rate, max: 5 }
                """, extraJobs: """
                  smoke:
                    needs: [build]
                    if: env.LOAD == 'yes'
                    steps:
                      - uses: slipway/load
                        with: { url: "http://127.0.0.1:\(previewPort)/", rps: 50, duration: 8s }
                """)
            defer { project.downNow() }
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")
            let run = try project.launchShip("2.0.0", config: "error-percent=40")
            // While v2 is judged on the preview port, production stays entirely on v1.
            var production: [String: Int] = [:]
            while run.process.isRunning, production.values.reduce(0, +) < 200 {
                production[project.get()?.body.trimmingCharacters(in: .whitespacesAndNewlines) ?? "none", default: 0] += 1
                try await Task.sleep(for: .milliseconds(20))
            }
            let result = try await run.wait(timeout: 90)
            #expect(result.status == 1, "\(result)")
            #expect(result.stdout.contains("preview-errors: fail"), "\(result)")
            #expect(production.keys.allSatisfy { $0 == "hello from 1.0.0" }, "production never saw v2: \(production)")
            #expect(project.sample(5) == ["hello from 1.0.0": 5])
        }

        @Test("blue-green post-promotion analysis (its own metrics and limits, beside a passing pre-promotion one): a version that fails once it has the traffic is switched back while the old one is warm")
        func blueGreenPostPromotionAnalysis() async throws {
            let previewPort = try DeployKit.freePort()
            let project = try DeployProject(strategy: """
                      blue-green:
                        preview: \(previewPort)
                        auto-promote: true
                        scale-down-delay: 60s
                        pre-promotion:
                          interval: 1s
                          failure-limit: 0
                          metrics:
                            - { name: smoke, source: command, command: "echo 0", max: 0 }
                        post-promotion:
                          interval: 1s
                          failure-limit: 1
                          inconclusive-limit: 30
                          metrics:
                            - { name: live-errors, source: router, metric: error-rate, max: 5 }
                """, extraJobs: """
                  load:
                    needs: [build]
                    if: env.LOAD == 'yes'
                    steps:
                      - uses: slipway/load
                        with: { url: "http://127.0.0.1:PORT/", rps: 50, duration: 15s }
                """)
            defer { project.downNow() }
            try project.box.write("slipway.yml", try String(contentsOfFile: project.box.repo + "/slipway.yml", encoding: .utf8)
                .replacingOccurrences(of: "PORT", with: String(project.port)))
            let first = try await project.ship("1.0.0")
            try #require(first.status == 0, "\(first)")
            let bad = try await project.ship("2.0.0", config: "error-percent=40", arguments: ["--env", "LOAD=yes"])
            #expect(bad.status == 1, "\(bad)")
            #expect(bad.stdout.contains("smoke: pass"), "the pre-promotion analysis ran its own metric: \(bad)")
            #expect(bad.stdout.contains("traffic: 1.0.0=0% 2.0.0=100%"), "\(bad)")
            #expect(bad.stdout.contains("live-errors: fail"), "the post-promotion analysis ran its own metric: \(bad)")
            // Its own failure limit (1), not the pre-promotion one (0): the second failure switches back.
            #expect(bad.stdout.components(separatedBy: "live-errors: fail").count - 1 >= 2, "\(bad)")
            #expect(!bad.stdout.contains("smoke: fail"), "\(bad)")
            #expect(project.sample(10) == ["hello from 1.0.0": 10], "traffic is back on the warm 1.0.0")
            let status = try await project.status()
            let rollout = try #require(status["rollout"] as? [String: Any])
            #expect(rollout["phase"] as? String == "rolledBack")
        }

        @Test("a canary judged by PromQL against a real Prometheus scraping the instances: +40 % errors is rolled back, with the query's numbers on record")
        func prometheusAnalysisRollsBackABadCanary() async throws {
            let prometheus = try await PrometheusServer()
            defer { prometheus.stop() }
            let query = #"100 * sum(increase(sample_requests_total{version="{{canary}}",code="500"}[1m])) / sum(increase(sample_requests_total{version="{{canary}}"}[1m]))"#
            let project = try DeployProject(strategy: """
                      canary:
                        steps: [ { weight: 50 }, { pause: 40s }, { weight: 100 } ]
                        analysis:
                          interval: 1s
                          failure-limit: 0
                          inconclusive-limit: 60
                          metrics:
                            - name: prom-errors
                              source: prometheus
                              address: "\(prometheus.address)"
                              query: '\(query)'
                              max: 5
                """, extraJobs: """
                  load:
                    needs: [build]
                    if: env.LOAD == 'yes'
                    steps:
                      - uses: slipway/load
                        with: { url: "http://127.0.0.1:PORT/", rps: 50, duration: 20s }
                """)
            defer { project.downNow() }
            try project.box.write("slipway.yml", try String(contentsOfFile: project.box.repo + "/slipway.yml", encoding: .utf8)
                .replacingOccurrences(of: "PORT", with: String(project.port)))
            try #require(try await project.ship("1.0.0").status == 0)

            // Prometheus follows the instances the agent runs (their ports are the agent's choice).
            let run = try project.launchShip("2.0.0", config: "error-percent=40")
            while run.process.isRunning {
                let status = try? await project.status()
                let instances = (status?["agent"] as? [String: Any])?["instances"] as? [[String: Any]] ?? []
                try prometheus.scrape(ports: instances.compactMap { $0["port"] as? Int }.filter { $0 > 0 })
                try await Task.sleep(for: .milliseconds(300))
            }
            let result = try await run.wait(timeout: 90)
            #expect(result.status == 1, "\(result)")
            #expect(result.stdout.contains("prom-errors: fail"), "\(result)")
            #expect(project.sample(10) == ["hello from 1.0.0": 10], "all traffic is back on 1.0.0")
            let rollout = try #require(try await project.status()["rollout"] as? [String: Any])
            #expect(rollout["phase"] as? String == "rolledBack")
            let events = rollout["events"] as? [[String: Any]] ?? []
            let failed = events.compactMap { $0["measurement"] as? [String: Any] }.first { $0["outcome"] as? String == "fail" }
            let value = try #require(failed?["value"] as? Double, "the verdict keeps the query's value: \(events)")
            #expect(value > 5 && value < 90, "the canary's error rate as Prometheus computed it: \(value)")
        }

        @Test("protection: a freeze window refuses deploys with when it ends; a branch filter refuses other branches")
        func freezeAndBranches() async throws {
            let frozen = try DeployProject(strategy: "          recreate", instances: 1,
                                           protection: "    protection: { freeze: [ { cron: \"* * * * *\", duration: 2h } ] }")
            let refused = try await frozen.ship("1.0.0")
            #expect(refused.status == 1, "\(refused)")
            #expect(refused.stdout.contains("'production' is frozen until") && refused.stdout.contains("* * * * *"), "\(refused)")
            #expect(frozen.get() == nil, "nothing was deployed")
            let branch = try DeployProject(strategy: "          recreate", instances: 1, protection: "    protection: { branches: [release/*] }")
            let wrong = try await branch.ship("1.0.0")
            #expect(wrong.status == 1 && wrong.stdout.contains("only takes deploys from release/*"), "\(wrong)")
        }

        @Test("protection: the deploy waits for an approval given with `slipway approve`; `down` stops every instance")
        func approvalsAndDown() async throws {
            let project = try DeployProject(strategy: "          recreate", instances: 2, protection: "    protection: { approvals: 1 }")
            let run = try project.launchShip("1.0.0")
            try await DeployKit.waitUntil("the deploy waits for an approval") {
                ((try? String(contentsOfFile: run.stdoutPath, encoding: .utf8)) ?? "").contains("waiting for 1 approval")
            }
            #expect(project.get() == nil, "nothing is deployed before the approval")
            let approve = try await project.box.slipway("approve", "1", "--as", "alice")
            #expect(approve.status == 0, "\(approve)")
            let result = try await run.wait(timeout: 60)
            #expect(result.status == 0, "\(result)")
            #expect(result.stdout.contains("approved by alice"), "\(result)")
            let agent = try #require(try await project.status()["agent"] as? [String: Any])
            let pids = (agent["instances"] as? [[String: Any]] ?? []).compactMap { $0["pid"] as? Int32 ?? ($0["pid"] as? Int).map(Int32.init) }
            #expect(pids.count == 2)
            let pgrep = try await ReleaseKit.tool(["pgrep", "-f", "slipway agent --data-dir \(project.box.dataDirectory)"], in: "/")
            let agentPid = try #require(Int32(pgrep.stdout.split(separator: "\n").first ?? ""), "\(pgrep)")
            let down = try await project.box.slipway("down", timeout: 60)
            #expect(down.status == 0, "\(down)")
            // When `down` returns, nothing is left: no instance, no router, no agent.
            #expect(pids.allSatisfy { !DeployKit.processExists($0) }, "every instance has exited")
            #expect(!DeployKit.processExists(agentPid), "the agent has exited")
            #expect(project.get() == nil, "the router is closed")
        }
    }
}

/// A real Prometheus (Debian's `prometheus`) scraping every second whatever `targets.json` lists (file-based
/// discovery, so a test can point it at instances whose ports the agent chose). Stopped by `stop()`.
final class PrometheusServer: @unchecked Sendable {
    let directory: String
    let address: String
    private let process: Process

    init() async throws {
        let executable = try #require(["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                      "prometheus is not installed (apt-get install prometheus)")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-e2e-prometheus-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "[]".write(toFile: directory + "/targets.json", atomically: true, encoding: .utf8)
        try """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: instances
                file_sd_configs:
                  - files: ['\(directory)/targets.json']
                    refresh_interval: 1s

            """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        let port = try DeployKit.freePort()
        address = "http://127.0.0.1:\(port)"
        let log = directory + "/prometheus.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data", "--web.listen-address=127.0.0.1:\(port)"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        let ready = await eventually(within: 20) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("Server is ready to receive web requests")
        }
        guard ready, process.isRunning else {
            stop()
            throw E2EError("Prometheus did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// Scrape these loopback ports from now on.
    func scrape(ports: [Int]) throws {
        let targets = ports.sorted().map { "\"127.0.0.1:\($0)\"" }.joined(separator: ", ")
        let file = directory + "/targets.json"
        try "[{\"targets\": [\(targets)]}]".write(toFile: file + ".new", atomically: false, encoding: .utf8)
        _ = rename(file + ".new", file)
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
