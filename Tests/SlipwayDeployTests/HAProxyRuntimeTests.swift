import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import SlipwayDeploy

// The `haproxy` traffic provider against a real HAProxy (/usr/sbin/haproxy, or $SLIPWAY_HAPROXY): each test starts
// its own instance in the foreground (`-db`) with an admin socket on a unix path and one on 127.0.0.1, a frontend,
// and backend `app` with servers s1 and s2 (two TestBackends) plus `dead` (a closed port, weight 0).

// MARK: - A real HAProxy

struct HAProxyFixtureError: Error, CustomStringConvertible {
    var description: String
}

final class HAProxyFixture {
    let directory: String
    let process: Process
    let frontendPort: Int
    let statsPort: Int
    let s1: TestBackend
    let s2: TestBackend

    var socketPath: String { self.directory + "/admin.sock" }
    /// Through the unix admin socket.
    var runtime: HAProxyRuntime { HAProxyRuntime(self.socketPath) }
    /// Through the TCP admin socket.
    var tcpRuntime: HAProxyRuntime { HAProxyRuntime("127.0.0.1:\(self.statsPort)") }

    private init(directory: String, process: Process, frontendPort: Int, statsPort: Int, s1: TestBackend, s2: TestBackend) {
        self.directory = directory
        self.process = process
        self.frontendPort = frontendPort
        self.statsPort = statsPort
        self.s1 = s1
        self.s2 = s2
    }

    static var executable: String? {
        let candidates = [ProcessInfo.processInfo.environment["SLIPWAY_HAPROXY"], "/usr/sbin/haproxy",
                          "/usr/local/sbin/haproxy", "/usr/local/bin/haproxy", "/opt/homebrew/bin/haproxy"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func start(s1: TestBackend, s2: TestBackend) async throws -> HAProxyFixture {
        guard let executable else {
            throw HAProxyFixtureError(description: "haproxy not found (install it, or set SLIPWAY_HAPROXY)")
        }
        // Short: a unix socket path must fit in 108 bytes.
        let directory = "/tmp/slipway-haproxy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var lastError: any Error = HAProxyFixtureError(description: "haproxy did not start")
        for _ in 0..<3 {  // a reserved port can be taken in between; try again with others
            let ports = try await reservePorts(3)
            do {
                return try await Self.launch(executable: executable, directory: directory, frontendPort: ports[0],
                                             statsPort: ports[1], deadPort: ports[2], s1: s1, s2: s2)
            } catch {
                lastError = error
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
        throw lastError
    }

    private static func launch(executable: String, directory: String, frontendPort: Int, statsPort: Int, deadPort: Int,
                               s1: TestBackend, s2: TestBackend) async throws -> HAProxyFixture {
        let config = """
            global
                nbthread 1
                stats socket \(directory)/admin.sock level admin
                stats socket ipv4@127.0.0.1:\(statsPort) level admin
            defaults
                mode http
                timeout connect 1s
                timeout client 2s
                timeout server 2s
                retries 0
            frontend web
                bind 127.0.0.1:\(frontendPort)
                default_backend app
            backend app
                balance roundrobin
                server s1 127.0.0.1:\(s1.port) weight 100
                server s2 127.0.0.1:\(s2.port) weight 100
                server dead 127.0.0.1:\(deadPort) weight 0

            """
        let configPath = directory + "/haproxy.cfg"
        let logPath = directory + "/haproxy.log"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
            throw HAProxyFixtureError(description: "cannot create \(logPath)")
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-f", configPath, "-db"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        let fixture = HAProxyFixture(directory: directory, process: process, frontendPort: frontendPort,
                                     statsPort: statsPort, s1: s1, s2: s2)
        let probe = HAProxyRuntime(fixture.socketPath, timeout: .milliseconds(500))
        let started = ContinuousClock.now
        while true {
            if let info = try? await probe.execute("show info"), info.contains("Name: HAProxy") { return fixture }
            if !process.isRunning || ContinuousClock.now - started > .seconds(5) {
                await fixture.stopProcess()
                let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw HAProxyFixtureError(description: "haproxy did not start:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Terminates HAProxy and waits for it to exit.
    func stopProcess() async {
        if self.process.isRunning { self.process.terminate() }
        let started = ContinuousClock.now
        while self.process.isRunning, ContinuousClock.now - started < .seconds(3) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
        self.process.waitUntilExit()
    }

    func stop() async {
        await self.stopProcess()
        await self.s1.stop()
        await self.s2.stop()
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// Sends `count` requests through HAProxy, one connection each; counts the answers by the backend that sent them
    /// ("haproxy 503" when HAProxy answered itself).
    func send(_ count: Int, _ path: String = "/") async throws -> [String: Int] {
        var answers: [String: Int] = [:]
        for _ in 0..<count {
            let response = try await httpRequest(port: self.frontendPort, path)
            answers[response.backend ?? "haproxy \(response.status)", default: 0] += 1
        }
        return answers
    }
}

/// HAProxy with its backends, stopped afterwards whatever happens.
func withHAProxy<T>(_ body: (HAProxyFixture) async throws -> T) async throws -> T {
    let s1 = try await TestBackend.start(name: "s1")
    let s2 = try await TestBackend.start(name: "s2")
    let fixture: HAProxyFixture
    do {
        fixture = try await HAProxyFixture.start(s1: s1, s2: s2)
    } catch {
        await s1.stop()
        await s2.stop()
        throw error
    }
    do {
        let result = try await body(fixture)
        await fixture.stop()
        return result
    } catch {
        await fixture.stop()
        throw error
    }
}

/// Distinct free ports: all bound at once, then released.
func reservePorts(_ count: Int) async throws -> [Int] {
    var channels: [any Channel] = []
    for _ in 0..<count {
        channels.append(try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get())
    }
    let ports = channels.map { $0.localAddress?.port ?? 0 }
    for channel in channels { try? await channel.close().get() }
    return ports
}

/// Runs `body`, expecting it to throw an `HAProxyRuntimeError`; returns it.
func haproxyError(_ body: () async throws -> Void) async -> HAProxyRuntimeError? {
    do {
        try await body()
        Issue.record("expected an HAProxyRuntimeError, nothing was thrown")
        return nil
    } catch let error as HAProxyRuntimeError {
        return error
    } catch {
        Issue.record("expected an HAProxyRuntimeError, got \(error)")
        return nil
    }
}

// MARK: - Against a real HAProxy

@Suite("HAProxy runtime API, real HAProxy", .serialized)
struct HAProxyRuntimeLiveTests {
    @Test("weights steer the traffic: 0/100 sends everything to s2, 50/50 to both, and the TCP socket works too")
    func weightsSteerTraffic() async throws {
        try await withHAProxy { haproxy in
            let runtime = haproxy.runtime
            try await runtime.setWeights(backend: "app", ["s1": 0, "s2": 100])
            let servers = try await runtime.servers(backend: "app")
            #expect(servers.map(\.name) == ["s1", "s2", "dead"])
            #expect(servers.map(\.weight) == [0, 100, 0])
            #expect(servers.map(\.userWeight) == [0, 100, 0])
            #expect(servers.first?.takesNewTraffic == false)

            let s1Before = haproxy.s1.stats.requests
            #expect(try await haproxy.send(12) == ["s2": 12])
            #expect(haproxy.s1.stats.requests == s1Before)

            try await runtime.setWeight(backend: "app", server: "s1", weight: 50)
            try await runtime.setWeight(backend: "app", server: "s2", weight: 50)
            let even = try await haproxy.send(12)
            #expect(even.keys.sorted() == ["s1", "s2"])
            #expect(even["s1", default: 0] >= 3 && even["s2", default: 0] >= 3, "\(even)")

            // The other way round, through the TCP admin socket.
            try await haproxy.tcpRuntime.setWeights(backend: "app", ["s1": 100, "s2": 0])
            #expect(try await haproxy.tcpRuntime.servers(backend: "app").map(\.weight) == [100, 0, 0])
            #expect(try await haproxy.send(8) == ["s1": 8])
        }
    }

    @Test("maint and drain take a server out of the traffic, ready brings it back")
    func statesTakeServersOut() async throws {
        try await withHAProxy { haproxy in
            let runtime = haproxy.runtime
            try await runtime.setState(backend: "app", server: "s1", state: .maint)
            let s1 = try #require(try await runtime.stats(backend: "app")[server: "s1"])
            #expect(s1.status == .maint)
            #expect(s1.statusText == "MAINT")
            #expect(s1.weight == 100)  // HAProxy keeps the weight; the state decides
            #expect(!s1.takesNewTraffic)
            let s1Before = haproxy.s1.stats.requests
            #expect(try await haproxy.send(10) == ["s2": 10])
            #expect(haproxy.s1.stats.requests == s1Before)

            try await runtime.setState(backend: "app", server: "s1", state: .ready)
            #expect(try await runtime.stats(backend: "app")[server: "s1"]?.status == .noCheck)
            #expect(try await haproxy.send(10)["s1", default: 0] > 0)

            try await runtime.setState(backend: "app", server: "s2", state: .drain)
            #expect(try await runtime.stats(backend: "app")[server: "s2"]?.status == .drain)
            #expect(try await haproxy.send(6) == ["s1": 6])

            // Nothing left: HAProxy answers 503 itself.
            try await runtime.setState(backend: "app", server: "s1", state: .maint)
            try await runtime.setState(backend: "app", server: "s2", state: .maint)
            #expect(try await haproxy.send(3) == ["haproxy 503": 3])
        }
    }

    @Test("show stat counters follow the requests and the 5xx served; the delta helper reads them")
    func countersFollowTraffic() async throws {
        try await withHAProxy { haproxy in
            let runtime = haproxy.runtime
            try await runtime.setWeights(backend: "app", ["s1": 100, "s2": 0])
            let before = try await runtime.stats(backend: "app")
            #expect(try await haproxy.send(5) == ["s1": 5])
            #expect(try await haproxy.send(3, "/status/503") == ["s1": 3])
            #expect(try await haproxy.send(2, "/status/404") == ["s1": 2])
            let after = try await runtime.stats(backend: "app")

            let s1 = try #require(after[server: "s1"])
            let change = s1.counters.since(try #require(before[server: "s1"]).counters)
            #expect(change == HAProxyCounters(sessions: 10, responses2xx: 5, responses4xx: 2, responses5xx: 3))
            #expect(after[server: "s2"]?.counters == before[server: "s2"]?.counters)
            #expect(after.totals.since(before.totals).responses5xx == 3)
            #expect(s1.address == "127.0.0.1:\(haproxy.s1.port)")
            #expect(s1.responseTime >= 0 && s1.totalTime >= s1.responseTime && s1.queueTime >= 0)

            #expect(HAProxyCounters.delta(from: before, to: after, servers: ["s1"]) == (requests: 10, errors: 3))
            #expect(HAProxyCounters.delta(from: before, to: after, servers: ["s2"]) == (requests: 0, errors: 0))
            #expect(HAProxyCounters.delta(from: before, to: after, servers: ["s1", "s2"]) == (requests: 10, errors: 3))

            // Same numbers through the TCP socket.
            #expect(try await haproxy.tcpRuntime.stats(backend: "app") == after)
        }
    }

    @Test("a server that cannot be reached counts its requests as errors (econ), though its hrsp_5xx stays 0")
    func unreachableServerCountsErrors() async throws {
        try await withHAProxy { haproxy in
            let runtime = haproxy.runtime
            try await runtime.setWeights(backend: "app", ["s1": 0, "s2": 0, "dead": 100])
            let before = try await runtime.stats(backend: "app")
            #expect(try await haproxy.send(4) == ["haproxy 503": 4])
            let after = try await runtime.stats(backend: "app")
            let dead = try #require(after[server: "dead"]).counters.since(try #require(before[server: "dead"]).counters)
            #expect(dead.responses5xx == 0)
            #expect(dead.connectionErrors == 4)
            #expect(HAProxyCounters.delta(from: before, to: after, servers: ["dead"]) == (requests: 4, errors: 4))
        }
    }

    @Test("HAProxy's own error answers are thrown with its message")
    func haproxyErrorsAreThrown() async throws {
        try await withHAProxy { haproxy in
            let runtime = haproxy.runtime
            let info = try await runtime.execute("show info")
            #expect(info.contains("Name: HAProxy"))

            let noServer = await haproxyError { try await runtime.setWeight(backend: "app", server: "nope", weight: 10) }
            #expect(noServer == .commandFailed(command: "set server app/nope weight 10", message: "No such server."))
            #expect(noServer?.description == "HAProxy rejected `set server app/nope weight 10`: No such server.")

            let noBackend = await haproxyError { try await runtime.setState(backend: "nope", server: "s1", state: .drain) }
            #expect(noBackend == .commandFailed(command: "set server nope/s1 state drain", message: "No such backend."))

            let noProxy = await haproxyError { _ = try await runtime.servers(backend: "nope") }
            #expect(noProxy == .commandFailed(command: "show stat nope 6 -1", message: "No such proxy."))

            // `web` exists, but as a frontend.
            #expect(await haproxyError { _ = try await runtime.stats(backend: "web") } == .noSuchBackend("web"))

            let unknown = await haproxyError { _ = try await runtime.execute("frobnicate now") }
            guard case .commandFailed(_, let message) = unknown else {
                Issue.record("expected commandFailed, got \(String(describing: unknown))")
                return
            }
            #expect(message.hasPrefix("Unknown command"))
            #expect(!message.contains("\n"))

            let require = await haproxyError { _ = try await runtime.execute("set server app weight 10") }
            #expect(require == .commandFailed(command: "set server app weight 10", message: "Require 'backend/server'."))

            // setWeights checks the names first and changes nothing when one is unknown.
            let ghosts = await haproxyError { try await runtime.setWeights(backend: "app", ["s1": 7, "ghost": 5]) }
            #expect(ghosts == .unknownServers(backend: "app", names: ["ghost"], known: ["s1", "s2", "dead"]))
            #expect(try await runtime.servers(backend: "app").map(\.weight) == [100, 100, 0])
        }
    }

    @Test("a socket path or port where nothing listens gives an error that says what to check")
    func nothingListening() async throws {
        let directory = "/tmp/slipway-haproxy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/admin.sock"
        let error = await haproxyError { _ = try await HAProxyRuntime(path).execute("show info") }
        #expect(error == .cannotConnect(address: path, reason: "no such socket file"))
        #expect(error?.description == "cannot connect to HAProxy's runtime API at \(path): no such socket file — "
            + "is HAProxy running, and is `stats socket \(path) level admin` in the global section of haproxy.cfg?")

        let port = try await closedPort()
        let tcp = await haproxyError { _ = try await HAProxyRuntime("127.0.0.1:\(port)").servers(backend: "app") }
        #expect(tcp == .cannotConnect(address: "127.0.0.1:\(port)", reason: "connection refused (nothing listening)"))
        #expect(tcp?.description.contains("`stats socket ipv4@127.0.0.1:\(port) level admin`") == true)
    }

    @Test("a peer that never answers times out within the timeout")
    func silentPeerTimesOut() async throws {
        // Accepts connections and never writes.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let address = "127.0.0.1:\(silent.localAddress?.port ?? 0)"
        let started = ContinuousClock.now
        let error = await haproxyError {
            _ = try await HAProxyRuntime(address, timeout: .milliseconds(300)).execute("show info")
        }
        let elapsed = ContinuousClock.now - started
        try? await silent.close().get()
        #expect(error == .timedOut(address: address, command: "show info", timeout: .milliseconds(300)))
        #expect(error?.description.hasPrefix("HAProxy's runtime API at \(address) did not answer `show info` within 300 ms") == true)
        #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(2), "\(elapsed)")
    }

    @Test("a peer that closes without answering is not taken for a successful set command")
    func closedWithoutAnswer() async throws {
        let mute = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CloseOnRead()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let runtime = HAProxyRuntime("127.0.0.1:\(mute.localAddress?.port ?? 0)")
        let error = await haproxyError { try await runtime.setWeight(backend: "app", server: "s1", weight: 5) }
        try? await mute.close().get()
        #expect(error == .unexpectedAnswer(command: "set server app/s1 weight 5", answer: ""))
        #expect(error?.description == "HAProxy closed the connection without answering `set server app/s1 weight 5`")
    }
}

/// Reads the command, then closes without a word.
private final class CloseOnRead: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.close(promise: nil)
    }
}

// MARK: - Without HAProxy

@Suite("HAProxy runtime API, parsing and checks")
struct HAProxyRuntimeUnitTests {
    /// `show stat` captured from HAProxy 2.6.12: s1 served 6×2xx, 1×404 and 2×501; s2 fails its health check;
    /// s3 is in maintenance. Shortened: the columns after `uweight` (ssl, h2, h1…) are cut.
    static let captured = """
        # pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight
        web,FRONTEND,,,0,1,9986,9,749,6914,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,7,0,9,,,,0,6,0,1,2,0,,7,9,9,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,7,9,9,0,0,0,0,,,0,0,,,,,,,0,,,,,
        app,s1,0,0,0,1,,9,749,6914,,0,,0,0,0,0,UP,100,1,0,0,0,3,0,,1,3,1,,9,,2,7,,9,L4OK,,0,0,6,0,1,2,0,,,,9,0,0,,,,,0,,,0,0,8,14,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:18081,,http,,,,,,,,0,9,0,,,0,,0,0,20,40,0,0,0,0,1,100
        app,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,100,1,0,1,1,3,3,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:18097,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,100
        app,s3,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,50,1,0,,,1,,,1,3,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,50
        app,BACKEND,0,0,0,1,999,9,749,6914,0,0,,0,0,0,0,UP,100,1,0,,0,3,0,,1,3,0,,9,,1,7,,9,,,,0,6,0,1,2,0,,,,9,0,0,0,0,0,0,0,,,0,0,8,14,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,9,0,0,0,,,0,0,20,40,0,,,,,100


        """

    @Test("parses a captured show stat")
    func parsesCapturedShowStat() throws {
        let stats = try HAProxyStats.parse(Self.captured, backend: "app")
        #expect(stats.backend == "app")
        #expect(stats.servers.map(\.name) == ["s1", "s2", "s3"])
        #expect(stats.servers.map(\.status) == [.up, .down, .maint])
        #expect(stats.servers.map(\.weight) == [100, 100, 50])
        #expect(stats.servers.map(\.takesNewTraffic) == [true, false, false])

        let s1 = try #require(stats[server: "s1"])
        #expect(s1 == HAProxyServer(
            backend: "app", name: "s1", statusText: "UP", weight: 100, userWeight: 100, address: "127.0.0.1:18081",
            currentSessions: 0, queued: 0,
            counters: HAProxyCounters(sessions: 9, responses2xx: 6, responses4xx: 1, responses5xx: 2),
            queueTime: 0, connectTime: 0, responseTime: 8, totalTime: 14
        ))
        #expect(s1.sessions == 9)
        #expect(stats[server: "s2"]?.statusText == "DOWN")
        #expect(stats[server: "nope"] == nil)
        #expect(stats.totals == HAProxyCounters(sessions: 9, responses2xx: 6, responses4xx: 1, responses5xx: 2))

        // `web` is a frontend, `nope` is absent.
        #expect(throws: HAProxyRuntimeError.noSuchBackend("web")) { try HAProxyStats.parse(Self.captured, backend: "web") }
        #expect(throws: HAProxyRuntimeError.noSuchBackend("nope")) { try HAProxyStats.parse(Self.captured, backend: "nope") }
    }

    @Test("columns are found by name, whatever their order; quoted fields may hold commas")
    func parsesByColumnName() throws {
        let csv = """
            # svname,hrsp_5xx,status,"check_desc",pxname,stot,weight,rtime,econ,eresp,hrsp_2xx
            BACKEND,4,UP,,api,40,2,3,0,0,30
            v2-a,3,DRAIN,"bad, ""really"" bad",api,10,0,7,1,2,5
            v1-a,1,UP 1/3,,api,30,1,2,0,0,25
            other,9,UP,,web,99,1,1,0,0,90
            """
        let stats = try HAProxyStats.parse(csv, backend: "api")
        #expect(stats.servers.map(\.name) == ["v2-a", "v1-a"])
        #expect(stats.servers.map(\.status) == [.drain, .up])
        #expect(stats[server: "v1-a"]?.statusText == "UP 1/3")
        #expect(stats[server: "v2-a"]?.counters == HAProxyCounters(sessions: 10, responses2xx: 5, responses5xx: 3,
                                                                    connectionErrors: 1, responseErrors: 2))
        #expect(stats[server: "v2-a"]?.responseTime == 7)
        #expect(stats[server: "v2-a"]?.userWeight == nil)  // no uweight column
        #expect(stats.totals.sessions == 40)
        #expect(HAProxyStatTable.fields("a,\"b,c\",\"d\"\"e\",") == ["a", "b,c", "d\"e", ""])
    }

    @Test("counters out of range are clamped, and sums and differences saturate instead of trapping")
    func outOfRangeCountersDoNotTrap() throws {
        let csv = """
            # pxname,svname,stot,hrsp_5xx,econ,eresp,weight,rtime
            api,BACKEND,-5,9223372036854775807,9223372036854775807,99999999999999999999999,1,0
            api,a,9223372036854775807,9223372036854775807,9223372036854775807,9223372036854775807,-3,-1
            api,b,9223372036854775807,9223372036854775807,9223372036854775807,9223372036854775807,1,1
            """
        let stats = try HAProxyStats.parse(csv, backend: "api")
        #expect(stats.totals.sessions == 0, "a negative counter reads as 0")
        #expect(stats.totals.responseErrors == HAProxyCounters.limit, "more digits than an Int: the largest counter")
        #expect(stats[server: "a"]?.counters.sessions == HAProxyCounters.limit)
        #expect(stats[server: "a"]?.weight == 0 && stats[server: "a"]?.responseTime == 0)
        #expect(stats.totals.errors == 3 * HAProxyCounters.limit)
        let delta = HAProxyCounters.delta(from: Self.snapshot([:]), to: stats, servers: ["a", "b"])
        #expect(delta == (requests: 2 * HAProxyCounters.limit, errors: 2 * HAProxyCounters.limit))
        // Built by hand rather than parsed: still no trap.
        let huge = HAProxyCounters(sessions: .max, responses5xx: .max, connectionErrors: .max, responseErrors: .max)
        #expect(huge.errors == .max)
        #expect(huge.since(HAProxyCounters(sessions: -1, responses5xx: -1, connectionErrors: -1, responseErrors: -1)).sessions == .max)
        let many = Self.snapshot(["a": huge, "b": huge, "c": huge])
        #expect(HAProxyCounters.delta(from: Self.snapshot([:]), to: many, servers: ["a", "b", "c"]) == (requests: .max, errors: .max))
    }

    @Test("an answer that is not show stat CSV is refused")
    func refusesNonCSV() {
        #expect(throws: HAProxyRuntimeError.unexpectedAnswer(command: "show stat", answer: "No such proxy.\n\n")) {
            try HAProxyStats.parse("No such proxy.\n\n", backend: "app")
        }
        #expect(throws: HAProxyRuntimeError.self) { try HAProxyStats.parse("# a,b,c\n1,2,3\n", backend: "app") }
    }

    @Test("status texts")
    func statuses() {
        #expect(HAProxyServerStatus("UP") == .up)
        #expect(HAProxyServerStatus("UP 1/3") == .up)
        #expect(HAProxyServerStatus("DOWN 1/2") == .down)
        #expect(HAProxyServerStatus("MAINT (via app/s1)") == .maint)
        #expect(HAProxyServerStatus("MAINT (resolution)") == .maint)
        #expect(HAProxyServerStatus("DRAIN (agent)") == .drain)
        #expect(HAProxyServerStatus("NOLB") == .noLB)
        #expect(HAProxyServerStatus("no check") == .noCheck)
        #expect(HAProxyServerStatus("OPEN") == .other("OPEN"))
    }

    static func snapshot(_ servers: [String: HAProxyCounters]) -> HAProxyStats {
        HAProxyStats(
            backend: "app",
            servers: servers.keys.sorted().map {
                HAProxyServer(backend: "app", name: $0, statusText: "UP", weight: 1, counters: servers[$0]!)
            },
            totals: .zero
        )
    }

    @Test("delta: requests and errors of a group of servers between two snapshots")
    func delta() {
        let before = Self.snapshot([
            "canary-1": HAProxyCounters(sessions: 100, responses2xx: 95, responses5xx: 5),
            "canary-2": HAProxyCounters(sessions: 50, responses2xx: 50),
            "stable-1": HAProxyCounters(sessions: 1000, responses2xx: 999, responses5xx: 1),
        ])
        let after = Self.snapshot([
            "canary-1": HAProxyCounters(sessions: 160, responses2xx: 145, responses4xx: 5, responses5xx: 10),
            "canary-2": HAProxyCounters(sessions: 90, responses2xx: 85, connectionErrors: 3, responseErrors: 2),
            "stable-1": HAProxyCounters(sessions: 1100, responses2xx: 1099, responses5xx: 1),
            "canary-3": HAProxyCounters(sessions: 7, responses5xx: 1),  // new since `before`: counts from zero
        ])
        #expect(HAProxyCounters.delta(from: before, to: after, servers: ["canary-1", "canary-2"]) == (requests: 100, errors: 10))
        #expect(HAProxyCounters.delta(from: before, to: after, servers: ["stable-1"]) == (requests: 100, errors: 0))
        #expect(HAProxyCounters.delta(from: before, to: after, servers: ["canary-3"]) == (requests: 7, errors: 1))
        // Unknown or repeated names add nothing.
        #expect(HAProxyCounters.delta(from: before, to: after, servers: ["stable-1", "stable-1", "gone"]) == (requests: 100, errors: 0))
        #expect(HAProxyCounters.delta(from: after, to: after, servers: ["canary-1"]) == (requests: 0, errors: 0))
    }

    @Test("delta: counters that went backwards (HAProxy reloaded) count from zero")
    func deltaAfterReset() {
        let before = Self.snapshot(["s1": HAProxyCounters(sessions: 500, responses2xx: 490, responses5xx: 10)])
        let afterReload = Self.snapshot(["s1": HAProxyCounters(sessions: 40, responses2xx: 28, responses5xx: 12)])
        #expect(HAProxyCounters.delta(from: before, to: afterReload, servers: ["s1"]) == (requests: 40, errors: 12))
        // Only one counter went down: still a restart.
        let partly = Self.snapshot(["s1": HAProxyCounters(sessions: 520, responses2xx: 480, responses5xx: 40)])
        #expect(HAProxyCounters.delta(from: before, to: partly, servers: ["s1"]) == (requests: 520, errors: 40))
        // Errors never exceed requests.
        let odd = Self.snapshot(["s1": HAProxyCounters(sessions: 502, responses2xx: 490, responses5xx: 10, connectionErrors: 5)])
        #expect(HAProxyCounters.delta(from: before, to: odd, servers: ["s1"]) == (requests: 2, errors: 2))
    }

    @Test("addresses: unix socket paths and host:port")
    func endpoints() {
        #expect(HAProxyRuntime.Endpoint("/run/haproxy/admin.sock") == .unix(path: "/run/haproxy/admin.sock"))
        #expect(HAProxyRuntime.Endpoint("unix@/run/haproxy/admin.sock") == .unix(path: "/run/haproxy/admin.sock"))
        #expect(HAProxyRuntime.Endpoint("admin.sock") == .unix(path: "admin.sock"))
        #expect(HAProxyRuntime.Endpoint("127.0.0.1:9999") == .tcp(host: "127.0.0.1", port: 9999))
        #expect(HAProxyRuntime.Endpoint("ipv4@127.0.0.1:9999") == .tcp(host: "127.0.0.1", port: 9999))
        #expect(HAProxyRuntime.Endpoint("[::1]:9999") == .tcp(host: "::1", port: 9999))
        #expect(HAProxyRuntime.Endpoint("lb.internal:9999") == .tcp(host: "lb.internal", port: 9999))
        #expect(HAProxyRuntime("127.0.0.1:9999").timeout == .seconds(2))
    }

    @Test("bad commands and arguments are refused before anything is sent")
    func argumentsChecked() async {
        // Nothing listens there: reaching the socket would throw cannotConnect instead.
        let runtime = HAProxyRuntime("/tmp/slipway-haproxy-none/admin.sock")
        #expect(await haproxyError { _ = try await runtime.execute("show info\nshutdown frontend web") }
            == .invalidCommand("show info\nshutdown frontend web"))
        #expect(await haproxyError { _ = try await runtime.execute("  ") } == .invalidCommand("  "))
        for weight in [-1, 257] {
            let error = await haproxyError { try await runtime.setWeight(backend: "app", server: "s1", weight: weight) }
            #expect(error == .invalidArgument("an HAProxy server weight is 0...256, not \(weight) (app/s1)"))
        }
        for name in ["s1;shutdown frontend web", "a b", "", "a/b"] {
            let error = await haproxyError { try await runtime.setState(backend: "app", server: name, state: .maint) }
            #expect(error == .invalidArgument("not an HAProxy server name: \(name.debugDescription)"))
        }
        #expect(await haproxyError { try await runtime.setWeights(backend: "app", ["s1": 300]) }
            == .invalidArgument("an HAProxy server weight is 0...256, not 300 (app/s1)"))
    }
}
