import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Where the agent of a data directory keeps its socket, state, lock and instance logs.
public struct AgentPaths: Sendable {
    public var root: String
    public var socket: String
    public var state: String
    public var lock: String
    public var log: String
    public var instanceLogs: String

    public init(dataDirectory: String) {
        root = dataDirectory + "/agent"
        let preferred = root + "/agent.sock"
        // sun_path holds 108 bytes: deep data directories get a socket in /tmp named after them.
        if preferred.utf8.count < 100 {
            socket = preferred
        } else {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in root.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            socket = "/tmp/slipway-agent-\(String(hash, radix: 16)).sock"
        }
        state = root + "/state.json"
        lock = root + "/agent.lock"
        log = root + "/agent.log"
        instanceLogs = root + "/logs"
    }
}

/// The per-data-directory agent: supervises the instances of every local environment (restart with backoff,
/// HTTP health probes, graceful stop), runs one built-in traffic router per environment, and answers the CLI on
/// a Unix socket. It outlives `slipway run`, so a deployed environment keeps serving; its state is persisted on
/// every change and re-adopted (running instances included) when an agent starts again after a crash.
public final class DeployAgent: Sendable {
    struct Routers: Sendable {
        var main: [String: TrafficRouter] = [:]
        var preview: [String: TrafficRouter] = [:]
    }

    let paths: AgentPaths
    let dataDirectory: String
    let state = Mutex(AgentState())
    let routers = Mutex(Routers())
    let stopRequested = Atomic<Bool>(false)
    let http = HTTPClient()

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
        self.paths = AgentPaths(dataDirectory: dataDirectory)
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// Runs until `down` leaves no environment, the data directory disappears, or SIGTERM/SIGINT.
    /// Returns false at once when another agent holds the lock.
    public func run() async throws -> Bool {
        try FileManager.default.createDirectory(atPath: paths.instanceLogs, withIntermediateDirectories: true)
        let lockFD = open(paths.lock, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else { return false }
        defer { close(lockFD) }
        restoreState()
        await restoreRouters()
        let signals = installSignalHandlers()
        defer { for source in signals { source.cancel() } }

        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: paths.socket, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        chmod(paths.socket, 0o600)
        log("agent \(getpid()) listening on \(paths.socket)")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.serve(server) }
            group.addTask { await self.supervise() }
            group.addTask { await self.probe() }
            // The supervisor loop returns when the agent should stop; then the server and probes end too.
            _ = try await group.next()
            group.cancelAll()
        }
        await shutdownRouters(nil)
        unlink(paths.socket)
        log("agent \(getpid()) stopped")
        return true
    }

    // MARK: Control socket

    private func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask {
                        try? await connection.executeThenClose { input, output in
                            for try await line in input {
                                let response: AgentResponse
                                if let request = try? JSONDecoder().decode(AgentRequest.self, from: Data(line.readableBytesView)) {
                                    response = await self.handle(request)
                                } else {
                                    response = .error("not a request this agent understands (is the agent older than this slipway? `slipway down` restarts it)")
                                }
                                var data = (try? JSONEncoder().encode(response)) ?? Data("{\"error\":{\"_0\":\"encoding\"}}".utf8)
                                data.append(0x0A)
                                try await output.write(ByteBuffer(bytes: data))
                            }
                        }
                    }
                }
            }
        }
    }

    func handle(_ request: AgentRequest) async -> AgentResponse {
        // Refused before anything is applied or saved: a bad number saved would trap on every restart.
        if let problem = request.problem { return .error(problem) }
        switch request {
        case .ping:
            return .pong(pid: getpid(), dataDirectory: dataDirectory)
        case .apply(let desired):
            if let problem = await ensureRouters(desired) { return .error(problem) }
            let effects = state.withLock { $0.apply(desired, now: Self.now()) }
            perform(effects)
            return .ok
        case .status:
            return .status(status())
        case .window(let environment, let version, let since):
            let (main, preview) = routers.withLock { ($0.main[environment], $0.preview[environment]) }
            guard let main else { return .error("environment '\(environment)' is not deployed") }
            // At most ten years: more would only overflow the conversion, not widen the window.
            let age = min(max(0, Self.now() - since), 10 * 365 * 86_400)
            let start = ContinuousClock.now - .milliseconds(Int64(age * 1000))
            // Both routers: before a blue-green switch the new version's traffic is the preview port's.
            var window = main.window(version: version, since: start)
            if let extra = preview?.window(version: version, since: start) {
                window.requests += extra.requests
                window.errors += extra.errors
                window.latencies += extra.latencies
            }
            return .window(AgentWindow(requests: window.requests, errors: window.errors, latencies: window.latencies, seconds: age))
        case .down(let environment):
            let names = environment.map { [$0] } ?? state.withLock { Array($0.environments.keys) }
            for name in names {
                let effects = state.withLock { $0.remove(environment: name, now: Self.now()) }
                perform(effects)
            }
            // Wait (bounded by the grace periods) until the instances are gone, then close the routers.
            let deadline = Self.now() + 60
            while Self.now() < deadline {
                let remaining = state.withLock { s in s.instances.values.filter { names.contains($0.environment) }.count }
                if remaining == 0 { break }
                try? await Task.sleep(for: .milliseconds(50))
            }
            for name in names { await shutdownRouters(name) }
            if state.withLock({ $0.environments.isEmpty }) { stopRequested.store(true, ordering: .relaxed) }
            return .ok
        }
    }

    func status() -> [EnvironmentStatus] {
        let snapshot = state.withLock { $0 }
        let running = routers.withLock { $0.main }
        return snapshot.environments.keys.sorted().map { name in
            let desired = snapshot.environments[name]!
            let instances = snapshot.instances(of: name).map {
                InstanceStatus(id: $0.id, version: $0.version, port: $0.port, pid: $0.pid, state: $0.statusName,
                               restarts: $0.restarts, lastFailure: $0.lastExit ?? $0.health.lastFailure, startedAt: $0.startedAt)
            }
            return EnvironmentStatus(name: name, listen: desired.config.listen, routerListening: running[name] != nil,
                                     weights: desired.weights, versions: desired.versions, instances: instances,
                                     metrics: running[name]?.metrics(since: nil) ?? [:])
        }
    }

    /// Starts the environment's router (and preview router) when missing or on another port.
    func ensureRouters(_ desired: DesiredEnvironment) async -> String? {
        let name = desired.config.name
        let existing = routers.withLock { ($0.main[name], $0.preview[name]) }
        if existing.0 == nil || existing.0?.boundPort != desired.config.listen {
            if let old = existing.0 { try? await old.shutdown() }
            let router = TrafficRouter(port: desired.config.listen)
            do { try await router.start() } catch {
                routers.withLock { $0.main[name] = nil }
                return "cannot listen on 127.0.0.1:\(desired.config.listen) for environment '\(name)': \(error) — is another program using the port? Change `listen:`"
            }
            routers.withLock { $0.main[name] = router }
        }
        if let previewPort = desired.config.previewPort, desired.previewVersion != nil {
            if existing.1 == nil || existing.1?.boundPort != previewPort {
                if let old = existing.1 { try? await old.shutdown() }
                let router = TrafficRouter(port: previewPort)
                do { try await router.start() } catch {
                    return "cannot listen on the preview port \(previewPort) of '\(name)': \(error)"
                }
                routers.withLock { $0.preview[name] = router }
            }
        } else if let old = existing.1 {
            routers.withLock { $0.preview[name] = nil }
            try? await old.shutdown()
        }
        return nil
    }

    func shutdownRouters(_ environment: String?) async {
        let closing: [TrafficRouter] = routers.withLock { r in
            let names = environment.map { [$0] } ?? Array(Set(r.main.keys).union(r.preview.keys))
            var out: [TrafficRouter] = []
            for name in names {
                if let m = r.main.removeValue(forKey: name) { out.append(m) }
                if let p = r.preview.removeValue(forKey: name) { out.append(p) }
            }
            return out
        }
        for router in closing { try? await router.shutdown() }
    }

    // MARK: Supervision

    private func supervise() async {
        var lastDirectoryCheck = 0.0
        while true {
            let now = Self.now()
            reap(now: now)
            perform(state.withLock { $0.tick(now: now) })
            if now - lastDirectoryCheck > 2 {
                lastDirectoryCheck = now
                // The data directory was deleted (a test's sandbox, `rm -rf .slipway`): nobody can reach us; stop.
                if access(dataDirectory, F_OK) != 0 { stopRequested.store(true, ordering: .relaxed) }
            }
            if stopRequested.load(ordering: .relaxed) {
                await stopEverything()
                return
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func stopEverything() async {
        let names = state.withLock { Array($0.environments.keys) }
        for name in names { perform(state.withLock { $0.remove(environment: name, now: Self.now()) }) }
        let deadline = Self.now() + 30
        while Self.now() < deadline, state.withLock({ !$0.instances.isEmpty }) {
            let now = Self.now()
            reap(now: now)
            perform(state.withLock { $0.tick(now: now) })
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func reap(now: Double) {
        let watched = state.withLock { s in s.instances.values.compactMap { i in i.pid.map { ($0, i.child) } } }
        for (pid, child) in watched {
            var description: String?
            if child {
                var status: Int32 = 0
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid {
                    let code = (status >> 8) & 0xFF, signal = status & 0x7F
                    description = signal == 0 ? "exited with code \(code)" : "killed by signal \(signal)"
                } else if result < 0, errno == ECHILD {
                    description = "gone"
                }
            } else if !ProcessLauncher.isAlive(pid) {
                description = "gone"
            }
            if let description {
                let effects = state.withLock { $0.exited(pid: pid, description: description, now: now) }
                if !effects.isEmpty { log("instance pid \(pid) \(description)") }
                perform(effects)
            }
        }
    }

    private func probe() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let due = state.withLock { $0.dueProbes(now: Self.now()) }
                for probe in due {
                    group.addTask {
                        var failure: String?
                        do {
                            let response = try await self.http.get(probe.url, timeout: .clamped(seconds: probe.timeout))
                            if !(200..<400).contains(response.status) { failure = "\(probe.url) answered \(response.status)" }
                        } catch {
                            failure = "\(probe.url): \(error)"
                        }
                        let effects = self.state.withLock { $0.probed(id: probe.id, failure: failure, now: Self.now()) }
                        self.perform(effects)
                    }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // MARK: Effects

    func perform(_ effects: [AgentEffect]) {
        var persist = false
        var updated = Set<String>()
        for effect in effects {
            switch effect {
            case .spawn(let id):
                spawn(id)
                persist = true
            case .signal(let pid, let signal):
                kill(pid, signal)
            case .updateRouter(let environment):
                guard updated.insert(environment).inserted else { continue }
                updateRouter(environment)
            case .persist:
                persist = true
            }
        }
        if persist { saveState() }
    }

    private func spawn(_ id: String) {
        guard let (instance, desired) = state.withLock({ s -> (ManagedInstance, DesiredEnvironment)? in
            guard let i = s.instances[id], let e = s.environments[i.environment] else { return nil }
            return (i, e)
        }), let deployment = desired.versions[instance.version] else { return }
        let port = instance.port != 0 ? instance.port : (ProcessLauncher.freePort() ?? 0)
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in deployment.environment { environment[key] = value }
        environment["PORT"] = String(port)
        environment["SLIPWAY_VERSION"] = instance.version
        environment["SLIPWAY_ENVIRONMENT"] = instance.environment
        environment["SLIPWAY_INSTANCE"] = id
        let logDirectory = paths.instanceLogs + "/" + instance.environment
        try? FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        var pid: Int32?
        var problem: String?
        do {
            pid = try ProcessLauncher.spawn(executable: "/bin/sh", arguments: ["-c", desired.config.command], environment: environment,
                                            workingDirectory: deployment.directory, logPath: logDirectory + "/\(id).log")
            log("started \(id) (pid \(pid!), port \(port))")
        } catch {
            problem = error.description
            log("cannot start \(id): \(error.description)")
        }
        _ = state.withLock { $0.spawned(id: id, pid: pid, port: port, error: problem, now: Self.now()) }
    }

    private func updateRouter(_ environment: String) {
        let (table, preview) = state.withLock { ($0.table(for: environment), $0.previewTable(for: environment)) }
        let (main, previewRouter) = routers.withLock { ($0.main[environment], $0.preview[environment]) }
        if let table, let main { main.update(table) }
        if let preview, let previewRouter { previewRouter.update(preview) }
    }

    // MARK: Persistence

    private func saveState() {
        let snapshot = state.withLock { $0 }
        guard let data = try? JSONEncoder().encode(snapshot) else { return }
        let temporary = paths.state + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else { return }
        rename(temporary, paths.state)
    }

    /// After a crash of the agent: instances that still run (and are ours) are adopted; the rest start again.
    private func restoreState() {
        guard let data = FileManager.default.contents(atPath: paths.state),
              var saved = try? JSONDecoder().decode(AgentState.self, from: data) else { return }
        // A state saved by an older agent may hold numbers that would trap: those environments are dropped.
        let dropped = saved.dropInvalidEnvironments()
        for (name, problem) in dropped { log("dropped environment '\(name)' from the saved state: \(problem)") }
        let now = Self.now()
        for (id, var instance) in saved.instances {
            instance.probing = false
            instance.nextProbeAt = now
            if instance.remoteHost != nil {
                saved.instances[id] = instance
                continue
            }
            if let pid = instance.pid, ProcessLauncher.isAlive(pid), ProcessLauncher.environmentValue(of: pid, "SLIPWAY_INSTANCE") == id {
                instance.child = false
                log("adopted \(id) (pid \(pid))")
            } else if instance.stopping != nil {
                saved.instances[id] = nil
                continue
            } else {
                instance.pid = nil
                instance.restartAt = now
            }
            saved.instances[id] = instance
        }
        state.withLock { $0 = saved }
        // The dropped environments' instances are stopped, as after `down`.
        if !dropped.isEmpty { perform(state.withLock { $0.reconcile(now: now) }) }
    }

    /// Routers come back with the last weights before anything else happens.
    public func restoreRouters() async {
        let environments = state.withLock { Array($0.environments.values) }
        for desired in environments {
            if let problem = await ensureRouters(desired) { log(problem) }
            updateRouter(desired.config.name)
        }
    }

    private func installSignalHandlers() -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT, SIGHUP].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [self] in self.stopRequested.store(true, ordering: .relaxed) }
            source.resume()
            return source
        }
    }

    func log(_ message: String) {
        let line = "\(ISO8601DateFormatter().string(from: Date())) \(message)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// Splits a byte stream into newline-terminated frames (without the newline); refuses frames over 4 MiB.
struct LineFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    static let limit = 4 << 20

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if let newline = buffer.readableBytesView.firstIndex(of: 0x0A) {
            let length = newline - buffer.readerIndex
            let frame = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(Self.wrapInboundOut(frame))
            return .continue
        }
        if buffer.readableBytes > Self.limit { throw AgentClientError("request larger than 4 MiB") }
        return .needMoreData
    }
}
