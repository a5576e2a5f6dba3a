#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import SlipwayTestSupport
import Testing

// The `ssh` target for real: two sshd servers on 127.0.0.2 and 127.0.0.3, each in its own mount namespace so
// the release directory is a different directory on each "host", like two machines. The application is
// python3's http.server started and stopped over ssh by the target's commands.

extension EndToEnd {
    @Suite("ssh target", .serialized)
    struct SSHTargetDeploys {
        static let mountPoint = "/srv/slipway-e2e-hosts"

        /// Two hosts (sshd on 127.0.0.2 and 127.0.0.3, each with its own `mountPoint`), a known_hosts file for
        /// both, and a pipeline that releases `site/` and deploys it to them with `environment` (a YAML fragment
        /// of the `production` environment after `target.ssh`'s common keys).
        static func withTwoHosts(_ body: (_ roots: [String], _ pipeline: (_ extraSSH: String, _ environment: String) -> String, _ base: String) async throws -> Void) async throws {
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            let base = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-ssh-hosts-\(UUID().uuidString.prefix(8))").path
            let roots = [base + "/a", base + "/b"]
            for root in roots { try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true) }
            defer { try? FileManager.default.removeItem(atPath: base) }
            try await SSHDFixture.with(addresses: ["127.0.0.2", "127.0.0.3"], privateDirectories: roots.map { ($0, mountPoint) }) { servers in
                let knownHosts = base + "/known_hosts"
                try servers.map(\.knownHostsLine).joined(separator: "\n").appending("\n").write(toFile: knownHosts, atomically: true, encoding: .utf8)
                let hosts = servers.map { "\"\($0.user)@\($0.address):\($0.port)\"" }.joined(separator: ", ")
                let key = servers[0].clientKey
                try await body(roots, { extraSSH, environment in
                    """
                    name: ssh-e2e
                    jobs:
                      build:
                        steps: [ { run: "echo $VERSION" } ]
                        release: { name: site, version: "${{ env.VERSION }}", path: site }
                      production:
                        needs: [build]
                        deploy: { environment: production }
                    environments:
                      production:
                        target:
                          ssh:
                            hosts: [\(hosts)]
                            identity: "\(key)"
                            known-hosts: "\(knownHosts)"
                            directory: \(mountPoint)
                            start: "nohup python3 -m http.server $PORT --bind $SLIPWAY_HOST > app.log 2>&1 < /dev/null & echo $! > app.pid"
                            stop: "if [ -f app.pid ]; then kill $(cat app.pid) 2>/dev/null; fi; true"
                            health: { path: /healthz, interval: 200ms, deadline: 30s }
                    \(extraSSH)
                    \(environment)
                    """
                }, base)
            }
        }

        @Test("canary across two ssh hosts behind the built-in router: one host switches first, then both; status and the hosts agree",
              .enabled(if: geteuid() == 0, "needs root for the hosts' mount namespaces"))
        func canaryAcrossHosts() async throws {
            try await Self.withTwoHosts { roots, makePipeline, _ in
                let appPort = try DeployKit.freePort()
                let listen = try DeployKit.freePort()
                let pipeline = makePipeline("""
                            app-port: \(appPort)
                            listen: \(listen)
                    """, """
                        strategy:
                          canary:
                            steps: [ { weight: 50 }, { pause: 2s }, { weight: 100 } ]
                    """)
                let box = try Sandbox(pipeline, files: ["site/index.html": "hello from 1.0.0\n", "site/healthz": "ok\n"])
                defer { Task { _ = try? await box.slipway("down", timeout: 60) } }

                let first = try await box.run("--env", "VERSION=1.0.0", timeout: 120)
                try #require(first.status == 0, "\(first)")
                #expect(first.stdout.contains("install and start 1.0.0"), "\(first)")
                #expect(DeployKit.get(port: listen, "/")?.body.contains("hello from 1.0.0") == true)
                for root in roots {
                    #expect((try? String(contentsOfFile: root + "/current", encoding: .utf8))?.contains("1.0.0") == true, "\(root) runs 1.0.0")
                }

                try box.write("site/index.html", "hello from 2.0.0\n")
                try box.commit("v2")
                let run = try box.launch(["run", "--plain", "--env", "VERSION=2.0.0"] + box.outEnv)
                // At 50 % one host runs 2.0.0 and the other still 1.0.0; the router reaches both.
                try await DeployKit.waitUntil("the canary step", timeout: 90) {
                    ((try? String(contentsOfFile: run.stdoutPath, encoding: .utf8)) ?? "").contains("paused for 2s")
                }
                let currents = roots.map { (try? String(contentsOfFile: $0 + "/current", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "" }
                #expect(currents.sorted() == ["1.0.0", "2.0.0"], "one host switched first: \(currents)")
                var seen: [String: Int] = [:]
                for _ in 0..<40 { seen[DeployKit.get(port: listen, "/")?.body.trimmingCharacters(in: .whitespacesAndNewlines) ?? "none", default: 0] += 1 }
                #expect(seen["hello from 1.0.0", default: 0] > 0 && seen["hello from 2.0.0", default: 0] > 0, "\(seen)")
                let second = try await run.wait(timeout: 120)
                #expect(second.status == 0, "\(second)")
                for root in roots {
                    #expect((try? String(contentsOfFile: root + "/current", encoding: .utf8))?.contains("2.0.0") == true, "\(root) runs 2.0.0")
                }
                for _ in 0..<10 { #expect(DeployKit.get(port: listen, "/")?.body.contains("hello from 2.0.0") == true) }
            }
        }
    
        @Test("the same two ssh hosts behind a real HAProxy: Slipway sets server weights through its runtime API and judges by its counters",
              .enabled(if: geteuid() == 0, "needs root for the hosts' mount namespaces"))
        func canaryBehindHAProxy() async throws {
            try await Self.withTwoHosts { roots, makePipeline, base in
                let appPort = try DeployKit.freePort()
                let frontend = try DeployKit.freePort()
                let socket = base + "/haproxy.sock"
                try """
                    global
                      stats socket \(socket) level admin
                    defaults
                      mode http
                      timeout connect 2s
                      timeout client 10s
                      timeout server 10s
                    frontend web
                      bind 127.0.0.1:\(frontend)
                      default_backend app
                    backend app
                      balance roundrobin
                      server 127.0.0.2 127.0.0.2:\(appPort) weight 0
                      server 127.0.0.3 127.0.0.3:\(appPort) weight 0

                    """.write(toFile: base + "/haproxy.cfg", atomically: true, encoding: .utf8)
                let haproxy = Process()
                haproxy.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : "/usr/bin/haproxy")
                haproxy.arguments = ["-f", base + "/haproxy.cfg", "-db"]
                _ = FileManager.default.createFile(atPath: base + "/haproxy.log", contents: nil)
                haproxy.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: base + "/haproxy.log"))
                haproxy.standardError = haproxy.standardOutput
                try haproxy.run()
                defer { haproxy.terminate(); haproxy.waitUntilExit() }
                do {
                    try await DeployKit.waitUntil("HAProxy's socket", timeout: 10) { FileManager.default.fileExists(atPath: socket) }
                } catch {
                    Issue.record("HAProxy did not start: \((try? String(contentsOfFile: base + "/haproxy.log", encoding: .utf8)) ?? "")")
                    throw error
                }
                let pipeline = makePipeline("""
                            app-port: \(appPort)
                    """, """
                        traffic: { haproxy: { socket: "\(socket)", backend: app } }
                        strategy:
                          canary:
                            steps: [ { weight: 50 }, { pause: 12s }, { weight: 100 } ]
                            analysis:
                              interval: 1s
                              inconclusive-limit: 60
                              metrics:
                                - { name: errors, source: router, metric: error-rate, max: 5 }
                                - { name: mean, source: router, metric: latency-mean, max: 5000ms }
                    """)
                let box = try Sandbox(pipeline, files: ["site/index.html": "hello from 1.0.0\n", "site/healthz": "ok\n"])
                defer { Task { _ = try? await box.slipway("down", timeout: 60) } }
                let first = try await box.run("--env", "VERSION=1.0.0", timeout: 120)
                try #require(first.status == 0, "\(first)")
                for _ in 0..<6 { #expect(DeployKit.get(port: frontend, "/")?.body.contains("hello from 1.0.0") == true, "through HAProxy") }

                try box.write("site/index.html", "hello from 2.0.0\n")
                try box.commit("v2")
                let run = try box.launch(["run", "--plain", "--env", "VERSION=2.0.0"] + box.outEnv)
                try await DeployKit.waitUntil("the canary step", timeout: 90) {
                    ((try? String(contentsOfFile: run.stdoutPath, encoding: .utf8)) ?? "").contains("paused for 12s")
                }
                // Enough traffic for HAProxy's mean response time to speak for the canary: `rtime` averages a
                // server's last 1024 requests, so the canary's host must serve that many after switching version.
                let counts = Mutex<[String: Int]>([:])
                DispatchQueue.concurrentPerform(iterations: 4) { _ in
                    var local: [String: Int] = [:]
                    for _ in 0..<700 { local[DeployKit.get(port: frontend, "/")?.body.trimmingCharacters(in: .whitespacesAndNewlines) ?? "none", default: 0] += 1 }
                    counts.withLock { all in all.merge(local, uniquingKeysWith: +) }
                }
                let seen = counts.withLock { $0 }
                #expect(seen["hello from 1.0.0", default: 0] > 5 && seen["hello from 2.0.0", default: 0] > 5, "HAProxy splits by the weights Slipway set: \(seen)")
                let second = try await run.wait(timeout: 120)
                #expect(second.status == 0, "\(second)")
                for _ in 0..<10 { #expect(DeployKit.get(port: frontend, "/")?.body.contains("hello from 2.0.0") == true) }
                // Judged by HAProxy's numbers: its per-server counters and its mean response time (`rtime`).
                #expect(second.stdout.contains("errors: pass — error-rate 0 % ≤ max 5 % over"), "\(second)")
                #expect(second.stdout.contains("mean: pass — latency-mean "), "\(second)")
                #expect(!second.stdout.contains("mean: fail"), "\(second)")
            }
        }
    }
}
