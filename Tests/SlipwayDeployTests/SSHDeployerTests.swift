#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SlipwayCore
import Testing
@testable import SlipwayDeploy
import SlipwayTestSupport

/// Checks that need no host: bad names are refused before anything connects.
@Suite struct SSHDeployerUnitTests {
    static func deployer(directory: String = "/srv/app") -> SSHDeployer {
        // Port 1 on loopback: anything that did connect would fail with "connection refused", not these errors.
        let target = SSHTarget(hosts: ["127.0.0.1:1"], user: "nobody", port: nil, identity: nil, directory: directory,
                               start: "true", stop: "true", appPort: 8080, health: HealthCheck())
        return SSHDeployer(target: target)
    }

    @Test func refusesUnusableNamesBeforeConnecting() async throws {
        let deployer = Self.deployer()
        for version in ["", "../etc", "a/b", ".hidden", "-rf", "current", "v1 beta", "v1;rm", "v1\n"] {
            let error = try await #require(throws: SSHDeployError.self, "\(version)") {
                try await deployer.install(version: version, digest: "sha256:1", from: "/tmp", on: "127.0.0.1:1")
            }
            #expect(error.kind == .invalidArgument)
            #expect(error.description.contains("cannot be used as a version directory"))
            await #expect(throws: SSHDeployError.self) { try await deployer.activate(version: version, on: "127.0.0.1:1") }
        }
        await #expect(throws: SSHDeployError.self) {
            try await deployer.install(version: "1.0", digest: "two\nlines", from: "/tmp", on: "127.0.0.1:1")
        }
        await #expect(throws: SSHDeployError.self) { try await deployer.prune(on: "127.0.0.1:1", keep: -1) }
        for directory in ["/", "~", ".", "/srv/../etc"] {
            let error = try await #require(throws: SSHDeployError.self, "\(directory)") {
                try await Self.deployer(directory: directory).current(on: "127.0.0.1:1")
            }
            #expect(error.description.contains("cannot hold releases"))
        }
        #expect(SSHDeployer.isValidVersion("1.2.3+build_7-rc1"))
    }
}

/// Against real sshd servers on loopback and real app servers (python3 -m http.server) started by the
/// target's `start` command. The "hosts" of one test share this machine's filesystem, so each host gets its
/// own deployer whose target's `directory` lies in that host's fixture directory — exactly what one target
/// with one `directory` is on separate machines. Every app server inherits its sshd's fixture marker, so
/// `SSHDFixture.stop()` kills any a test leaves behind, even when it fails.
@Suite(.timeLimit(.minutes(1))) struct SSHDeployerTests {
    /// Refuses to start a release that holds a `broken` file; records its environment; serves the release
    /// directory on the host's own address, so hosts on 127.0.0.2 and 127.0.0.3 share one appPort.
    static let start = """
        if [ -f broken ]; then echo "refusing to start $SLIPWAY_VERSION: the release is marked broken" >&2; exit 3; fi
        printf '%s %s %s\\n' "$SLIPWAY_VERSION" "$SLIPWAY_HOST" "$PORT" > env.txt
        nohup python3 -m http.server "$PORT" --bind "$SLIPWAY_HOST" > app.log 2>&1 &
        echo $! > app.pid
        """

    /// Kills the app and waits until it has exited (a zombie counts: PID 1 here need not reap orphans), so the
    /// next version can bind the port at once.
    static let stop = """
        if [ -f app.pid ]; then
          pid=$(cat app.pid)
          kill "$pid" 2>/dev/null
          i=0
          while [ "$i" -lt 100 ] && [ -r "/proc/$pid/stat" ] && ! grep -q ') Z ' "/proc/$pid/stat"; do sleep 0.05; i=$((i+1)); done
          rm -f app.pid
        fi
        """

    struct Host: Sendable {
        let server: SSHDFixture
        let deployer: SSHDeployer
        /// The entry of `target.hosts`: `address:sshPort`.
        var entry: String { deployer.target.hosts[0] }
        /// `<directory>` on the host.
        var root: String { deployer.target.directory }
        var address: String { server.address }
    }

    static func host(_ server: SSHDFixture, appPort: Int, health: HealthCheck = Self.health(),
                     start: String = Self.start, stop: String = Self.stop) -> Host {
        let target = SSHTarget(hosts: ["\(server.address):\(server.port)"], user: server.user, port: nil,
                               identity: server.clientKey, directory: server.directory + "/srv",
                               start: start, stop: stop, appPort: appPort, health: health)
        return Host(server: server, deployer: SSHDeployer(target: target, knownHosts: server.knownHosts))
    }

    static func health(interval: Duration = .milliseconds(100), healthyAfter: Int = 1) -> HealthCheck {
        var health = HealthCheck()
        health.interval = interval
        health.timeout = .seconds(1)
        health.healthyAfter = healthyAfter
        return health
    }

    /// An unpacked release: `index.html` naming the version, `healthz` unless told not to, `broken` if asked.
    static func release(_ base: String, _ version: String, healthz: Bool = true, broken: Bool = false) throws -> String {
        let directory = base + "/releases/" + version
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "release \(version)\n".write(toFile: directory + "/index.html", atomically: true, encoding: .utf8)
        if healthz { try "ok\n".write(toFile: directory + "/healthz", atomically: true, encoding: .utf8) }
        if broken { try "".write(toFile: directory + "/broken", atomically: true, encoding: .utf8) }
        return directory
    }

    /// Puts a release on the host's file system as `install` leaves it (release files and marker), without
    /// ssh: install has its own test, and every ssh session costs most of a second on a busy machine.
    static func place(_ host: Host, _ version: String, healthz: Bool = true, broken: Bool = false) throws {
        let local = try release(host.server.directory, version, healthz: healthz, broken: broken)
        let directory = "\(host.root)/\(version)"
        try FileManager.default.createDirectory(atPath: host.root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: local, toPath: directory)
        try "sha256:\(version)\n".write(toFile: directory + "/.slipway-installed", atomically: true, encoding: .utf8)
    }

    static func get(_ host: Host, _ path: String) async throws -> HTTPResponse {
        try await HTTPClient().get("http://\(host.address):\(host.deployer.target.appPort)\(path)", timeout: .seconds(2))
    }

    /// Until the app answers at all (python takes a while to start on a busy machine).
    static func waitUntilServing(_ host: Host) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? await get(host, "/")) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the app on \(host.address) did not start")
    }

    static func pid(_ host: Host, _ version: String) throws -> pid_t {
        let text = try String(contentsOfFile: "\(host.root)/\(version)/app.pid", encoding: .utf8)
        return try #require(pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// Alive and not a zombie.
    static func isRunning(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        return !stat.contains(") Z ")
    }

    static func modified(_ path: String) throws -> Date {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date)
    }

    static func read(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8)
    }

    static func appPort() throws -> Int {
        try SSHDFixture.freePort(address: "127.0.0.2")
    }

    /// Runs `body` for every host at once, as a deploy does.
    static func onEach(_ hosts: [Host], _ body: @escaping @Sendable (Host) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for host in hosts { group.addTask { try await body(host) } }
            try await group.waitForAll()
        }
    }

    @Test func installUploadsOncePerDigest() async throws {
        try await SSHDFixture.with(addresses: ["127.0.0.2"]) { servers in
            let host = Self.host(servers[0], appPort: 1)
            let deployer = host.deployer
            let v1 = try Self.release(host.server.directory, "v1")
            #expect(try await !deployer.isInstalled(version: "v1", on: host.entry))

            #expect(try await deployer.install(version: "v1", digest: "sha256:aaa", from: v1, on: host.entry) == .uploaded)
            #expect(Self.read("\(host.root)/v1/index.html") == "release v1\n")
            #expect(Self.read("\(host.root)/v1/healthz") == "ok\n")
            #expect(Self.read("\(host.root)/v1/.slipway-installed") == "sha256:aaa\n")
            #expect(try await deployer.isInstalled(version: "v1", on: host.entry))

            // The same digest again: nothing is copied (rsync --delete would remove extra.txt), the marker stays.
            let marked = try Self.modified("\(host.root)/v1/.slipway-installed")
            try "not in the release\n".write(toFile: "\(host.root)/v1/extra.txt", atomically: true, encoding: .utf8)
            #expect(try await deployer.install(version: "v1", digest: "sha256:aaa", from: v1, on: host.entry) == .alreadyInstalled)
            #expect(FileManager.default.fileExists(atPath: "\(host.root)/v1/extra.txt"))
            #expect(try Self.modified("\(host.root)/v1/.slipway-installed") == marked)

            // A new digest copies it again: what is not in the release is gone, the marker holds the new digest.
            try "changed\n".write(toFile: v1 + "/index.html", atomically: true, encoding: .utf8)
            #expect(try await deployer.install(version: "v1", digest: "sha256:bbb", from: v1, on: host.entry) == .uploaded)
            #expect(!FileManager.default.fileExists(atPath: "\(host.root)/v1/extra.txt"))
            #expect(Self.read("\(host.root)/v1/index.html") == "changed\n")
            #expect(Self.read("\(host.root)/v1/.slipway-installed") == "sha256:bbb\n")

            // A missing local release is refused before the host is touched.
            let error = try await #require(throws: SSHDeployError.self) {
                try await deployer.install(version: "v1", digest: "sha256:ccc", from: host.server.directory + "/nowhere", on: host.entry)
            }
            #expect(error.kind == .invalidArgument)
            #expect(error.description.contains("/nowhere is not a directory here"))
            #expect(Self.read("\(host.root)/v1/.slipway-installed") == "sha256:bbb\n")

            // A copy that fails (here an "rsync" that exits 1) leaves no marker: v1 no longer counts as installed.
            var failing = deployer
            failing.transport = SSHTransport(copyMethod: .rsync, rsyncPath: SSHTransport.findExecutable("false") ?? "/bin/false")
            let copy = try await #require(throws: SSHError.self) {
                try await failing.install(version: "v1", digest: "sha256:ccc", from: v1, on: host.entry)
            }
            #expect(copy.kind == .copyFailed(tool: "rsync", exitCode: 1))
            #expect(!FileManager.default.fileExists(atPath: "\(host.root)/v1/.slipway-installed"))
            #expect(try await !deployer.isInstalled(version: "v1", on: host.entry))
            #expect(try await deployer.install(version: "v1", digest: "sha256:ccc", from: v1, on: host.entry) == .uploaded)
        }
    }

    @Test func activatesVersionsOnTwoHostsSharingAnAppPort() async throws {
        let appPort = try Self.appPort()
        try await SSHDFixture.with(addresses: ["127.0.0.2", "127.0.0.3"]) { servers in
            let hosts = servers.map { Self.host($0, appPort: appPort) }
            let (a, b) = (hosts[0], hosts[1])
            let v1 = try Self.release(a.server.directory, "v1")

            #expect(try await a.deployer.current(on: a.entry) == nil)
            try await a.deployer.deactivate(on: a.entry)  // nothing active: nothing to do

            try await Self.onEach(hosts) { host in
                #expect(try await host.deployer.install(version: "v1", digest: "sha256:aaa", from: v1, on: host.entry) == .uploaded)
                try await host.deployer.activate(version: "v1", on: host.entry)
                try await host.deployer.waitHealthy(host: host.entry, deadline: .seconds(10))
                #expect(Self.read("\(host.root)/current") == "v1\n")
                // PORT, SLIPWAY_VERSION and SLIPWAY_HOST reached the start command.
                #expect(Self.read("\(host.root)/v1/env.txt") == "v1 \(host.address) \(appPort)\n")
            }
            #expect(try await a.deployer.current(on: a.entry) == "v1")
            // One appPort, two hosts, each serving its own copy of v1.
            for host in hosts {
                let response = try await Self.get(host, "/index.html")
                #expect(response.status == 200)
                #expect(response.text == "release v1\n")
            }
            let firstA = try Self.pid(a, "v1")
            let firstB = try Self.pid(b, "v1")
            #expect(firstA != firstB)
            #expect(Self.isRunning(firstA) && Self.isRunning(firstB))

            // v2 on host A only: v1 is stopped there (its process is gone), B keeps serving v1.
            try Self.place(a, "v2")
            try await a.deployer.activate(version: "v2", on: a.entry)
            #expect(!Self.isRunning(firstA))
            try await a.deployer.waitHealthy(host: a.entry, deadline: .seconds(10))
            #expect(try await Self.get(a, "/index.html").text == "release v2\n")
            #expect(try await Self.get(b, "/index.html").text == "release v1\n")
            #expect(try await a.deployer.current(on: a.entry) == "v2")
            #expect(try await b.deployer.current(on: b.entry) == "v1")
            #expect(Self.isRunning(firstB))
            let second = try Self.pid(a, "v2")

            try await Self.onEach(hosts) { host in
                try await host.deployer.deactivate(on: host.entry)
                #expect(!FileManager.default.fileExists(atPath: "\(host.root)/current"))
                await #expect(throws: HTTPClientError.self) { try await Self.get(host, "/index.html") }
            }
            #expect(try await a.deployer.current(on: a.entry) == nil)
            #expect(!Self.isRunning(second))
            #expect(!Self.isRunning(firstB))
        }
    }

    @Test func failingStartAndStopCommandsSayWhatHappened() async throws {
        let appPort = try Self.appPort()
        try await SSHDFixture.with(addresses: ["127.0.0.2"]) { servers in
            let host = Self.host(servers[0], appPort: appPort)
            let deployer = host.deployer
            try Self.place(host, "v1")
            try Self.place(host, "v2", broken: true)

            let missing = try await #require(throws: SSHDeployError.self) { try await deployer.activate(version: "v9", on: host.entry) }
            #expect(missing.kind == .notInstalled(version: "v9"))
            #expect(missing.description.contains("install it first"))

            try await deployer.activate(version: "v1", on: host.entry)
            try await deployer.waitHealthy(host: host.entry, deadline: .seconds(10))
            let first = try Self.pid(host, "v1")

            // v1 is stopped, v2's start command fails: the exit code, its stderr, and what state the host is in.
            let failed = try await #require(throws: SSHDeployError.self) { try await deployer.activate(version: "v2", on: host.entry) }
            #expect(failed.kind == .startFailed(version: "v2", exitCode: 3))
            #expect(failed.detail == "refusing to start v2: the release is marked broken")
            #expect(failed.description.contains("exited with code 3 in \(host.root)/v2"))
            #expect(failed.description.contains("refusing to start v2: the release is marked broken"))
            #expect(failed.description.contains("activate v1 to roll back"))
            #expect(!Self.isRunning(first))
            #expect(try await deployer.current(on: host.entry) == nil)

            // Rolling back works.
            try await deployer.activate(version: "v1", on: host.entry)
            try await deployer.waitHealthy(host: host.entry, deadline: .seconds(10))
            #expect(try await Self.get(host, "/index.html").text == "release v1\n")

            // A failing stop keeps the version current and says so.
            let stubborn = Self.host(servers[0], appPort: appPort, stop: "echo 'still draining connections' >&2; exit 5").deployer
            let stopFailed = try await #require(throws: SSHDeployError.self) { try await stubborn.deactivate(on: host.entry) }
            #expect(stopFailed.kind == .stopFailed(version: "v1", exitCode: 5))
            #expect(stopFailed.description.contains("still draining connections"))
            #expect(stopFailed.description.contains("stays the current version"))
            #expect(try await deployer.current(on: host.entry) == "v1")

            let rollback = try Self.pid(host, "v1")
            try await deployer.deactivate(on: host.entry)
            #expect(!Self.isRunning(rollback))
        }
    }

    @Test func waitHealthyReportsTheLastFailure() async throws {
        let appPort = try Self.appPort()
        try await SSHDFixture.with(addresses: ["127.0.0.2"]) { servers in
            let host = Self.host(servers[0], appPort: appPort, health: Self.health(interval: .milliseconds(100), healthyAfter: 3))
            let deployer = host.deployer
            let clock = ContinuousClock()

            // Nothing listens yet.
            var started = clock.now
            let refused = try await #require(throws: SSHDeployError.self) {
                try await deployer.waitHealthy(host: host.entry, deadline: .milliseconds(600))
            }
            #expect(refused.kind == .unhealthy)
            #expect(refused.detail.contains("could not connect"))
            #expect(clock.now - started < .seconds(3))

            // An app without /healthz answers 404 until the deadline.
            try Self.place(host, "v1", healthz: false)
            try await deployer.activate(version: "v1", on: host.entry)
            try await Self.waitUntilServing(host)
            started = clock.now
            let notFound = try await #require(throws: SSHDeployError.self) {
                try await deployer.waitHealthy(host: host.entry, deadline: .milliseconds(1500))
            }
            #expect(clock.now - started >= .milliseconds(1300))
            #expect(clock.now - started < .seconds(4))
            #expect(notFound.kind == .unhealthy)
            #expect(notFound.detail == "HTTP 404")
            #expect(notFound.description.contains("GET http://127.0.0.2:\(appPort)/healthz"))
            #expect(notFound.description.contains("the last failure: HTTP 404"))
            #expect(notFound.description.contains("not healthy within 1500 ms"))

            // With /healthz, three good answers in a row.
            try Self.place(host, "v2")
            try await deployer.activate(version: "v2", on: host.entry)
            try await deployer.waitHealthy(host: host.entry, deadline: .seconds(10))
            let pid = try Self.pid(host, "v2")
            try await deployer.deactivate(on: host.entry)
            #expect(!Self.isRunning(pid))
        }
    }

    @Test func pruneKeepsTheNewestAndTheCurrent() async throws {
        let appPort = try Self.appPort()
        try await SSHDFixture.with(addresses: ["127.0.0.2"]) { servers in
            let host = Self.host(servers[0], appPort: appPort)
            let deployer = host.deployer
            #expect(try await deployer.prune(on: host.entry, keep: 1) == [])  // no directory yet

            // v1 installed over ssh, v2…v5 placed directly.
            try await deployer.install(version: "v1", digest: "sha256:v1", from: Self.release(host.server.directory, "v1"), on: host.entry)
            for (index, version) in ["v1", "v2", "v3", "v4", "v5"].enumerated() {
                if version != "v1" { try Self.place(host, version) }
                // Install times a minute apart, oldest first, whatever the file system's timestamp resolution.
                try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: Double(index - 10) * 60)],
                                                      ofItemAtPath: "\(host.root)/\(version)/.slipway-installed")
            }
            // Not installed by slipway: left alone.
            try FileManager.default.createDirectory(atPath: host.root + "/notes", withIntermediateDirectories: true)
            try await deployer.activate(version: "v1", on: host.entry)
            func remaining() throws -> [String] {
                try FileManager.default.contentsOfDirectory(atPath: host.root).filter { !$0.hasPrefix(".") && $0 != "current" }.sorted()
            }

            #expect(try await deployer.prune(on: host.entry, keep: 2) == ["v3", "v2"])
            #expect(try remaining() == ["notes", "v1", "v4", "v5"])
            #expect(try await deployer.prune(on: host.entry, keep: 2) == [])
            #expect(try await deployer.prune(on: host.entry, keep: 0) == ["v5", "v4"])
            #expect(try remaining() == ["notes", "v1"])
            // The current version still runs from its directory.
            try await deployer.waitHealthy(host: host.entry, deadline: .seconds(10))
            #expect(try await Self.get(host, "/index.html").text == "release v1\n")
            #expect(try await deployer.current(on: host.entry) == "v1")

            let error = try await #require(throws: SSHDeployError.self) { try await deployer.prune(on: host.entry, keep: -1) }
            #expect(error.kind == .invalidArgument)
            try await deployer.deactivate(on: host.entry)
        }
    }
}
