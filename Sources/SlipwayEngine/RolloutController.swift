#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayDeploy
import SlipwayStore

/// Time for rollouts: unix seconds, so a pause survives a restart of the process that drives it.
public protocol RolloutClock: Sendable {
    func now() -> Double
    func sleep(seconds: Double) async throws
}

public struct WallClock: RolloutClock {
    public init() {}
    public func now() -> Double { Date().timeIntervalSince1970 }
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .milliseconds(Int64(seconds * 1000))) }
}

/// What the controller keeps besides the state machine: the environment as it wants the agent to run it, and
/// what it is waiting for. Persisted with the rollout before anything is sent to the agent.
struct RolloutControllerState: Codable, Sendable, Equatable {
    struct Awaiting: Codable, Sendable, Equatable {
        var version: String
        var count: Int
        var since: Double
    }
    var desired: DesiredEnvironment
    var awaiting: Awaiting?
    /// An `analyze` action not yet answered with measurements.
    var pendingAnalysis: Double?
    /// Looks with enough data at the current cumulative window (from `since`): the judge's alpha spending.
    var lookWindow: Double?
    var dataLooks = 0
    /// ssh targets: the version each host runs (what the controller last made it run).
    var hostVersions: [String: String] = [:]
    /// haproxy traffic: per-server (requests, errors) counters at the start of the analysis window.
    var trafficBaseline: [String: [Int]] = [:]
    var baselineWindow: Double?
    /// haproxy traffic: `rtime` averages a server's last 1024 requests, so it speaks for a version only once
    /// that many were served since the server began serving it: the version counted and the server's request
    /// counter at that moment. Optional: states written before these fields existed still decode.
    var responseTimeVersion: [String: String]?
    var responseTimeFrom: [String: Int]?
}

public struct RolloutOutcome: Sendable {
    public var rollout: RolloutRecord
    public var phase: RolloutStateMachine.Phase
    public var reason: String
    public var succeeded: Bool { phase == .promoted }
}

public struct RolloutError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Drives one rollout: feeds the `RolloutStateMachine` with time, health, analysis and human commands, persists
/// it after every event, then performs its actions through the agent (idempotent desired state). Started by a
/// deploy job or `slipway deploy`; any later process can continue a rollout whose driver died.
public struct RolloutController: Sendable {
    public let store: any RolloutStore & ReleaseStore
    public let agent: AgentClient
    public let agentExecutable: String
    public let dataDirectory: String
    public let environment: EnvironmentSpec
    public let clock: any RolloutClock
    /// One line per thing that happened (the deploy job's log, the terminal).
    public let output: @Sendable (String) -> Void
    public var pollInterval = 0.2
    /// Checked between polls: Ctrl-C of the run leaves the rollout where it is (persisted) for a later resume.
    public var isCancelled: @Sendable () -> Bool = { false }
    /// Return (without finishing) once the rollout waits for a human: used by commands that take over a rollout.
    public var returnWhenWaiting = false

    public init(store: any RolloutStore & ReleaseStore, dataDirectory: String, agentExecutable: String, environment: EnvironmentSpec,
                clock: any RolloutClock = WallClock(), output: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.dataDirectory = dataDirectory
        self.agent = AgentClient(dataDirectory: dataDirectory)
        self.agentExecutable = agentExecutable
        self.environment = environment
        self.clock = clock
        self.output = output
    }

    // MARK: Plans

    /// The machine's plan, the analysis policy and spec it starts with, and blue-green's post-promotion
    /// policy when it has both analyses (nil otherwise: one analysis, one policy).
    static func plan(for strategy: RolloutStrategy) -> (RolloutStateMachine.Plan, RolloutStateMachine.AnalysisPolicy?, Analysis?, RolloutStateMachine.AnalysisPolicy?) {
        func policy(_ analysis: Analysis?) -> RolloutStateMachine.AnalysisPolicy? {
            analysis.map { .init(interval: $0.interval.seconds, initialDelay: $0.initialDelay.seconds, failureLimit: $0.failureLimit, inconclusiveLimit: $0.inconclusiveLimit) }
        }
        switch strategy {
        case .recreate:
            return (.recreate, nil, nil, nil)
        case .rolling(let batch, _):
            return (.rolling(batch: max(1, batch)), nil, nil, nil)
        case .blueGreen(let bg):
            let analysis = bg.prePromotion ?? bg.postPromotion
            return (.blueGreen(autoPromote: bg.autoPromote, scaleDownDelay: bg.scaleDownDelay.seconds,
                               preAnalysis: bg.prePromotion != nil, postAnalysis: bg.postPromotion != nil), policy(analysis), analysis,
                    bg.prePromotion == nil ? nil : policy(bg.postPromotion))
        case .canary(let canary):
            var stepAnalysis: Analysis?
            let steps: [RolloutStateMachine.CanaryStep] = canary.steps.map {
                switch $0 {
                case .weight(let w): return .weight(w)
                case .pause(let d): return .pause(d?.seconds)
                case .analysis(let a):
                    if stepAnalysis == nil { stepAnalysis = a }
                    return .analysis
                }
            }
            let analysis = canary.analysis ?? stepAnalysis
            return (.canary(steps: steps, backgroundAnalysis: canary.analysis != nil), policy(analysis), analysis, nil)
        }
    }

    /// The agent's view of the environment; canary `match:` rules pin matching requests to `candidate`.
    func config(strategy: RolloutStrategy, candidate: String) throws(RolloutError) -> EnvironmentConfig {
        var rules: [MatchRule] = []
        var sticky: String?
        var previewPort: Int?
        switch strategy {
        case .canary(let canary):
            sticky = canary.sticky ? "slipway-\(environment.name)" : nil
            rules = canary.match.map { MatchRule(kind: $0.kind == .header ? .header : .cookie, name: $0.name, value: $0.value, version: candidate) }
        case .blueGreen(let bg):
            previewPort = bg.previewPort
        default:
            break
        }
        switch environment.target {
        case .ssh(let ssh):
            if case .blueGreen = strategy {
                throw RolloutError("blue-green needs room for two full versions, and an ssh host runs one version at a time: use canary, rolling or recreate for '\(environment.name)'")
            }
            var listen = ssh.listen ?? 0
            if case .router = environment.traffic {
                guard let port = ssh.listen else {
                    throw RolloutError("'\(environment.name)' routes its hosts through the built-in router: set `listen:` in `target.ssh` (the router's port)")
                }
                listen = port
            }
            return EnvironmentConfig(name: environment.name, listen: listen, command: "", probe: ProbeConfig(ssh.health), stopGrace: 0, stickyCookie: sticky, rules: rules)
        case .local(let local):
            if case .haproxy = environment.traffic {
                throw RolloutError("'\(environment.name)': HAProxy traffic needs an ssh target (its servers are the hosts); a local target uses the built-in router")
            }
            return EnvironmentConfig(name: environment.name, listen: local.listen, previewPort: previewPort, command: local.command,
                                     probe: ProbeConfig(local.health), stopGrace: local.stopGrace.seconds, stickyCookie: sticky, rules: rules)
        }
    }

    // MARK: Starting

    /// The version serving the environment now: the last promoted rollout, if the agent still runs it.
    func currentStable(status: [EnvironmentStatus]) throws(RolloutError) -> (version: String, desired: DesiredEnvironment)? {
        let previous: [RolloutRecord]
        do { previous = try store.rollouts(environment: environment.name, limit: 50) } catch { throw RolloutError(error.message) }
        guard let running = status.first(where: { $0.name == environment.name }) else { return nil }
        for record in previous where record.finishedAt != nil {
            guard let machine = try? JSONDecoder().decode(RolloutStateMachine.self, from: record.state),
                  let controller = try? JSONDecoder().decode(RolloutControllerState.self, from: record.controller) else { continue }
            let serving = machine.weights.filter { $0.value == 100 }.first?.key
            if let serving, running.versions[serving] != nil { return (serving, controller.desired) }
        }
        return nil
    }

    /// Unpacks a release into `<data>/deploy/<environment>/<version>` once.
    func unpack(_ release: ReleaseRecord) throws(RolloutError) -> String {
        let directory = "\(dataDirectory)/deploy/\(FileTree.safeName(environment.name))/\(FileTree.safeName(release.version))"
        if access(directory + "/.slipway-unpacked", F_OK) == 0 { return directory }
        let artifacts = ArtifactStore(root: dataDirectory + "/artifacts")
        let kind: StoredBlob.Kind = release.kind == "file" ? .file : .directory
        try? FileManager.default.removeItem(atPath: directory)
        do {
            try artifacts.extract(StoredBlob(digest: release.digest, size: release.size, kind: kind), to: directory, fileName: release.name)
        } catch { throw RolloutError("cannot unpack \(release.reference): \(error.description)") }
        _ = FileManager.default.createFile(atPath: directory + "/.slipway-unpacked", contents: Data(release.digest.utf8))
        return directory
    }

    /// Starts a rollout of `release` (or continues the unfinished one of the same version) and drives it to the end.
    public func deploy(_ release: ReleaseRecord, strategy: RolloutStrategy? = nil, reversible: Bool = true, runID: Int64? = nil, job: String? = nil) async throws -> RolloutOutcome {
        if let active = try store.activeRollout(environment: environment.name) {
            if active.version == release.version, active.release == release.name {
                output("continuing the rollout of \(active.reference) to \(environment.name) (rollout #\(active.id))")
                return try await drive(active, strategy: strategy)
            }
            if let pid = active.ownerPID, pid != getpid(), ProcessLauncher.isAlive(pid) {
                throw RolloutError("\(active.reference) is being rolled out to \(environment.name) by process \(pid); `slipway abort \(environment.name)` first")
            }
            // Its driver is gone: this deploy supersedes it (traffic goes to whatever the new rollout decides).
            var superseded = active
            superseded.finishedAt = Date()
            superseded.phase = RolloutStateMachine.Phase.aborted.rawValue
            superseded.outcome = "superseded by \(release.reference)"
            try store.updateRollout(superseded)
        }
        let chosen = strategy ?? environment.strategy
        let config = try config(strategy: chosen, candidate: release.version)
        try await agent.ensureRunning(executable: agentExecutable)
        let status = try await agent.status()
        let stable = try currentStable(status: status)
        let instances: Int = switch environment.target {
        case .local(let local): local.instances
        case .ssh(let ssh): ssh.hosts.count
        }
        let (plan, policy, _, postPolicy) = Self.plan(for: chosen)
        var maxUnavailable = 0
        if case .rolling(_, let k) = chosen { maxUnavailable = k }
        let machine = RolloutStateMachine(stable: stable?.version == release.version ? nil : stable?.version, candidate: release.version,
                                          instances: instances, plan: plan, analysis: policy, postPromotionAnalysis: postPolicy,
                                          reversible: reversible, maxUnavailable: maxUnavailable)
        var desired = stable?.desired ?? DesiredEnvironment(config: config)
        desired.config = config
        if stable == nil { desired.versions = [:]; desired.weights = [:] }
        let controller = RolloutControllerState(desired: desired)
        let record = try store.insertRollout(RolloutRecord(
            environment: environment.name, release: release.name, version: release.version, stable: machine.stable,
            strategy: chosen.name, phase: machine.phase.rawValue, state: try JSONEncoder().encode(machine),
            controller: try JSONEncoder().encode(controller), ownerPID: getpid(), runID: runID, job: job))
        try store.recordDeployment(DeploymentRecord(environment: environment.name, releaseID: release.id, status: "started"))
        output("rollout #\(record.id): \(release.reference) to \(environment.name) by \(chosen.name)" + (machine.stable.map { " over \($0)" } ?? " (first release here)"))
        return try await drive(record, strategy: chosen, starting: true)
    }

    // MARK: Driving

    /// Runs the rollout until it reaches a final phase. Safe to call again after a crash: state comes from the store.
    public func drive(_ initial: RolloutRecord, strategy: RolloutStrategy? = nil, starting: Bool = false) async throws -> RolloutOutcome {
        var record = initial
        var machine = try JSONDecoder().decode(RolloutStateMachine.self, from: record.state)
        var controller = try JSONDecoder().decode(RolloutControllerState.self, from: record.controller)
        let (_, _, analysisSpec, _) = Self.plan(for: strategy ?? environment.strategy)
        // Blue-green with both analyses: the post-promotion one's metrics once traffic has switched (the
        // machine switches to its interval and limits then).
        var postPromotionSpec: Analysis?
        if case .blueGreen(let bg) = strategy ?? environment.strategy { postPromotionSpec = bg.postPromotion }
        record.ownerPID = getpid()
        try store.updateRollout(record)
        try await agent.ensureRunning(executable: agentExecutable)
        // A rollout that never got past `.starting` (a crash or an error right after it was recorded) starts now.
        if starting || machine.phase == .starting {
            try await handle(.start(now: clock.now()), &machine, &controller, &record)
        } else {
            // Re-assert what the rollout had decided (the agent may have restarted), then go on from there.
            try await apply(controller.desired)
            output("resumed at phase \(machine.phase.rawValue), step \(machine.stepIndex + 1), weights \(Self.describe(machine.weights))")
        }
        while !machine.phase.isFinal {
            let now = clock.now()
            for command in try store.takeCommands(environment: environment.name) {
                let event: RolloutStateMachine.Event? = switch command.op {
                case "promote": .promote(now: now)
                case "abort": .abort(reason: "by \(command.actor)", now: now)
                case "pause": .pause(now: now)
                case "resume": .resume(now: now)
                default: nil
                }
                try store.appendRolloutEvent(RolloutEventRecord(rolloutID: record.id, kind: "command", text: "\(command.op) by \(command.actor)"))
                output("\(command.op) by \(command.actor)")
                if let event { try await handle(event, &machine, &controller, &record) }
            }
            if let awaiting = controller.awaiting, !machine.phase.isFinal {
                let status = try await agent.status().first { $0.name == environment.name }
                let healthy = status?.healthy(awaiting.version) ?? 0
                if healthy >= awaiting.count {
                    controller.awaiting = nil
                    output("\(healthy) × \(awaiting.version) healthy")
                    try await handle(.healthy(version: awaiting.version, count: healthy, now: now), &machine, &controller, &record)
                } else if now - awaiting.since > controller.desired.config.probe.deadline {
                    controller.awaiting = nil
                    let why = status?.instances.first { $0.version == awaiting.version && $0.state != "healthy" }?.lastFailure ?? "no instance became healthy"
                    try await handle(.unhealthy(version: awaiting.version, reason: "\(healthy)/\(awaiting.count) healthy after \(Int(controller.desired.config.probe.deadline))s (\(why))", now: now),
                                     &machine, &controller, &record)
                }
            }
            if case .haproxy(let socket, let backend) = environment.traffic, let start = machine.analysisWindowStart, controller.baselineWindow != start,
               let stats = try? await HAProxyRuntime(socket).stats(backend: backend) {
                // HAProxy counts since it started: remember where the analysis window begins.
                controller.baselineWindow = start
                controller.trafficBaseline = Dictionary(stats.servers.map { ($0.name, [$0.counters.requests, $0.counters.errors]) }, uniquingKeysWith: { a, _ in a })
            }
            if !machine.phase.isFinal { try await handle(.tick(now: now), &machine, &controller, &record) }
            if let since = controller.pendingAnalysis, !machine.phase.isFinal {
                if controller.lookWindow != since {
                    controller.lookWindow = since
                    controller.dataLooks = 0
                }
                var looks = controller.dataLooks
                let spec = machine.inPostPromotion ? postPromotionSpec ?? analysisSpec : analysisSpec
                let measurements = await analyze(since: since, machine: machine, spec: spec, looks: &looks, controller: &controller)
                controller.dataLooks = looks
                controller.pendingAnalysis = nil
                for m in measurements {
                    let text = "\(m.metric): \(m.outcome.rawValue) — \(m.reason)"
                    try store.appendRolloutEvent(RolloutEventRecord(rolloutID: record.id, kind: "measurement", text: text, detail: try? JSONEncoder().encode(m)))
                    output(text)
                }
                // The machine echoes each measurement as a record; they are stored above with their numbers.
                try await handle(.measured(measurements, now: clock.now()), &machine, &controller, &record, echoes: Set(measurements.map { "\($0.metric): \($0.outcome.rawValue) — \($0.reason)" }))
            }
            if machine.phase.isFinal { break }
            if returnWhenWaiting, machine.phase == .heldForHuman || (machine.phase == .paused && machine.pauseUntil == nil) { break }
            if isCancelled() {
                throw RolloutError("interrupted at phase \(machine.phase.rawValue) with traffic \(Self.describe(machine.weights)); the environment keeps serving — `slipway run --resume` or `slipway deploy` continues, `slipway abort \(environment.name)` rolls back")
            }
            try await clock.sleep(seconds: pollInterval)
        }
        return RolloutOutcome(rollout: record, phase: machine.phase, reason: record.outcome ?? machine.phase.rawValue)
    }

    static func describe(_ weights: [String: Int]) -> String {
        weights.isEmpty ? "none" : weights.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)%" }.joined(separator: " ")
    }

    /// One event: the machine decides, the decision is persisted, then performed.
    func handle(_ event: RolloutStateMachine.Event, _ machine: inout RolloutStateMachine, _ controller: inout RolloutControllerState, _ record: inout RolloutRecord,
                echoes: Set<String> = []) async throws {
        let before = machine
        let actions = machine.handle(event)
        // A change without actions (a resume, a timer set) is persisted too: after a crash it must not be lost.
        guard !actions.isEmpty || machine != before else { return }
        let now = clock.now()
        var finished: (RolloutStateMachine.Phase, String)?
        var lines: [(String, String)] = []
        for action in actions {
            switch action {
            case .startInstances(let version, let count):
                let directory = try directoryFor(version: version, record: record)
                controller.desired.versions[version] = VersionDeployment(count: count, directory: directory)
                controller.awaiting = .init(version: version, count: count, since: now)
                if case .blueGreen = machine.plan, version == machine.candidate, machine.stable != nil { controller.desired.previewVersion = version }
                lines.append(("step", "start \(count) × \(version)"))
            case .stopInstances(let version, let count):
                if var deployment = controller.desired.versions[version] {
                    deployment.count -= count
                    controller.desired.versions[version] = deployment.count > 0 ? deployment : nil
                }
                if controller.awaiting?.version == version, controller.desired.versions[version] == nil { controller.awaiting = nil }
                lines.append(("step", "stop \(count) × \(version)"))
            case .setWeights(let weights):
                controller.desired.weights = weights
                if weights[machine.candidate] == 100 { controller.desired.previewVersion = nil }
                lines.append(("weights", "traffic: \(Self.describe(weights))"))
            case .analyze(let since):
                controller.pendingAnalysis = since
            case .record(let text):
                if !echoes.contains(text) { lines.append(("record", text)) }
            case .askHuman(let text):
                lines.append(("ask", "waiting for a human: \(text)"))
            case .finished(let phase, let reason):
                finished = (phase, reason)
                lines.append(("finished", "\(phase.rawValue): \(reason)"))
            }
        }
        record.phase = machine.phase.rawValue
        record.state = try JSONEncoder().encode(machine)
        record.controller = try JSONEncoder().encode(controller)
        if let (_, reason) = finished {
            record.finishedAt = Date()
            record.outcome = reason
        }
        try store.updateRollout(record)
        // Persisted first, then performed, then told: a line in the log means the agent already does it.
        if case .ssh = environment.target {
            try await realiseOnHosts(&controller, machine: machine, record: &record)
        }
        try await apply(controller.desired)
        try await setTrafficProvider(controller, machine: machine)
        for (kind, text) in lines {
            try store.appendRolloutEvent(RolloutEventRecord(rolloutID: record.id, kind: kind, text: text))
            output(text)
        }
        if let (phase, _) = finished, let release = try store.release(name: record.release, version: record.version) {
            try store.recordDeployment(DeploymentRecord(environment: environment.name, releaseID: release.id, status: phase.rawValue))
        }
    }

    /// ssh target: make the hosts run what the desired state counts, then give the agent their endpoints.
    func realiseOnHosts(_ controller: inout RolloutControllerState, machine: RolloutStateMachine, record: inout RolloutRecord) async throws {
        guard case .ssh(let target) = environment.target else { return }
        var releases: [String: (directory: String, digest: String)] = [:]
        for version in controller.desired.versions.keys {
            guard let release = try store.release(name: record.release, version: version) else { continue }
            releases[version] = (try unpack(release), release.digest)
        }
        let operatorForHosts = SSHTargetOperator(target: target)
        let output = self.output
        let endpoints = try await operatorForHosts.realise(controller.desired, current: &controller.hostVersions, candidate: machine.candidate,
                                                           releases: releases, log: { output($0) })
        for version in controller.desired.versions.keys {
            controller.desired.versions[version]?.endpoints = endpoints[version] ?? []
        }
        record.controller = try JSONEncoder().encode(controller)
        try store.updateRollout(record)
    }

    /// haproxy traffic: the weights become server weights (a server per host, named as the host), split evenly
    /// among the hosts of each version that are healthy.
    func setTrafficProvider(_ controller: RolloutControllerState, machine: RolloutStateMachine) async throws {
        guard case .haproxy(let socket, let backend) = environment.traffic, case .ssh = environment.target else { return }
        let status = try await agent.status().first { $0.name == environment.name }
        let healthyEndpoints = Set((status?.instances ?? []).filter { $0.state == "healthy" }.map { $0.id })
        var weights: [String: Int] = [:]
        var byVersion: [String: [String]] = [:]
        for (host, version) in controller.hostVersions { byVersion[version, default: []].append(host) }
        for (version, hosts) in byVersion {
            let share = controller.desired.weights[version] ?? 0
            let live = hosts.filter { host in healthyEndpoints.contains { $0.hasSuffix("@\(SSHTargetOperator.address(of: host)):\(Self.appPort(environment))") } }
            for host in hosts {
                let serving = live.contains(host) && share > 0
                weights[SSHTargetOperator.address(of: host)] = serving ? max(1, min(256, Int((Double(share) * 2.56 / Double(max(1, live.count))).rounded()))) : 0
            }
        }
        try await HAProxyRuntime(socket).setWeights(backend: backend, weights)
    }

    static func appPort(_ environment: EnvironmentSpec) -> Int {
        if case .ssh(let ssh) = environment.target { return ssh.appPort }
        return 0
    }

    func directoryFor(version: String, record: RolloutRecord) throws -> String {
        guard let release = try store.release(name: record.release, version: version) else {
            throw RolloutError("\(record.release)@\(version) is not a known release (`slipway artifacts ls`)")
        }
        return try unpack(release)
    }

    func apply(_ desired: DesiredEnvironment) async throws {
        do {
            _ = try await agent.call(.apply(desired))
        } catch let error as AgentClientError {
            // The agent died (or was killed): start it again; it adopts the instances that still run.
            try await agent.ensureRunning(executable: agentExecutable)
            do { _ = try await agent.call(.apply(desired)) } catch { throw RolloutError("the agent refused the environment: \(error)") }
            _ = error
        }
    }

    // MARK: Analysis

    /// HAProxy's `rtime` is a mean over this many of a server's last requests.
    static let haproxyResponseTimeRequests = 1024

    /// haproxy traffic: each version's window from its hosts' counters since the analysis window began, with
    /// their `rtime` weighted by requests once they count; and, per version, the most requests one of its hosts
    /// served since it began serving that version.
    func haproxyTraffic(socket: String, backend: String, since: Double, controller: inout RolloutControllerState) async
        -> (windows: [String: TrafficWindow], served: [String: Int]) {
        guard let stats = try? await HAProxyRuntime(socket).stats(backend: backend) else { return ([:], [:]) }
        let servers = Dictionary(stats.servers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        if controller.trafficBaseline.isEmpty { controller.trafficBaseline = servers.mapValues { [$0.counters.requests, $0.counters.errors] } }
        var windows: [String: TrafficWindow] = [:]
        var served: [String: Int] = [:]
        var weightedTime: [String: (sum: Double, requests: Int)] = [:]
        var countedVersions = controller.responseTimeVersion ?? [:]
        var countedFrom = controller.responseTimeFrom ?? [:]
        for (host, version) in controller.hostVersions {
            let name = SSHTargetOperator.address(of: host)
            guard let server = servers[name] else { continue }
            let current = server.counters.requests
            let base = controller.trafficBaseline[name] ?? [0, 0]
            // A counter that went backwards (HAProxy reloaded) counts from zero.
            let requests = current >= base[0] ? current - base[0] : current
            let errors = server.counters.errors >= base[1] ? server.counters.errors - base[1] : server.counters.errors
            var window = windows[version] ?? TrafficWindow(requests: 0, errors: 0, latencies: [], seconds: max(0, clock.now() - since))
            window.requests += requests
            window.errors += min(errors, requests)
            if countedVersions[name] != version || (countedFrom[name] ?? .max) > current {
                // First seen: the host already ran this version when the window began (it was switched, then found
                // healthy, then weighed), so its requests since then are this version's. A change seen later counts from now.
                let windowStart = countedVersions[name] == nil ? controller.trafficBaseline[name]?.first : nil
                countedVersions[name] = version
                countedFrom[name] = min(windowStart ?? current, current)
            }
            let servedByVersion = current - (countedFrom[name] ?? current)
            served[version] = max(served[version] ?? 0, servedByVersion)
            if servedByVersion >= Self.haproxyResponseTimeRequests {
                var sum = weightedTime[version] ?? (0, 0)
                sum.sum += Double(server.responseTime) * Double(requests)
                sum.requests += requests
                weightedTime[version] = sum
                window.meanLatency = sum.requests > 0 ? sum.sum / Double(sum.requests) : nil
            }
            windows[version] = window
        }
        controller.responseTimeVersion = countedVersions
        controller.responseTimeFrom = countedFrom
        return (windows, served)
    }

    func analyze(since: Double, machine: RolloutStateMachine, spec: Analysis?, looks: inout Int, controller: inout RolloutControllerState) async -> [SlipwayCore.Measurement] {
        guard let spec else { return [] }
        var results: [SlipwayCore.Measurement] = []
        var counted = false
        // With HAProxy in front, "router" metrics are HAProxy's per-server counters and mean response times
        // (no latency samples).
        var isHAProxy = false
        var haproxyWindows: [String: TrafficWindow] = [:]
        var responseTimeServed: [String: Int] = [:]
        if case .haproxy(let socket, let backend) = environment.traffic {
            isHAProxy = true
            (haproxyWindows, responseTimeServed) = await haproxyTraffic(socket: socket, backend: backend, since: since, controller: &controller)
        }
        for check in spec.metrics {
            switch check.source {
            case .router(let metric) where isHAProxy:
                // Validation refuses these; kept for a pipeline validated before an environment moved behind HAProxy.
                if let problem = MetricCheck.haproxyProblem(metric: metric, compareBaseline: check.compareBaseline) {
                    results.append(SlipwayCore.Measurement(metric: check.name, outcome: .inconclusive, reason: "\(problem.message) (\(problem.hint))"))
                    continue
                }
                let canary = haproxyWindows[machine.candidate] ?? TrafficWindow(requests: 0, errors: 0, latencies: [], seconds: 0)
                if metric == "latency-mean", canary.meanLatency == nil, canary.requests >= AnalysisJudge.minimumRequests {
                    let served = responseTimeServed[machine.candidate] ?? 0
                    results.append(SlipwayCore.Measurement(metric: check.name, outcome: .inconclusive,
                        reason: "HAProxy's mean response time covers each server's last \(Self.haproxyResponseTimeRequests) requests; \(machine.candidate)'s servers have served \(served) of them so far, so it still includes the previous version"))
                    continue
                }
                if !counted, AnalysisJudge.canCompare(canary) {
                    counted = true
                    looks += 1
                }
                results.append(AnalysisJudge.judge(check, canary: canary, baseline: machine.stable.flatMap { haproxyWindows[$0] }, look: max(1, looks)))
            case .router:
                do {
                    let canary = try await agent.window(environment: environment.name, version: machine.candidate, since: since)
                    var baseline: AgentWindow?
                    if let stable = machine.stable {
                        baseline = try await agent.window(environment: environment.name, version: stable, since: since)
                    }
                    // A look spends false-alarm budget only once the canary has enough requests to be judged.
                    if !counted, AnalysisJudge.canCompare(canary.trafficWindow) {
                        counted = true
                        looks += 1
                    }
                    results.append(AnalysisJudge.judge(check, canary: canary.trafficWindow, baseline: baseline?.trafficWindow, look: max(1, looks)))
                } catch {
                    results.append(AnalysisJudge.judge(check, value: nil, error: "\(error)"))
                }
            default:
                let context = MetricContext(environment: environment.name, canary: machine.candidate, stable: machine.stable ?? "",
                                            windowSeconds: max(1, clock.now() - since))
                results.append(await MetricSourceReader().measure(check, context: context))
            }
        }
        return results
    }
}
