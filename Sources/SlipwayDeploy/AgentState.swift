import SlipwayCore

/// One supervised process of an environment.
struct ManagedInstance: Sendable, Codable, Equatable {
    struct Stop: Sendable, Codable, Equatable {
        var killAt: Double
        var killed = false
    }

    var id: String
    var environment: String
    var version: String
    var port: Int
    var pid: Int32?
    /// Spawned by this agent process (reaped with waitpid); false when adopted after an agent restart.
    var child: Bool
    var startedAt: Double
    var restarts: Int = 0
    var health: HealthTracker
    /// Crashed: start again at this time (backoff).
    var restartAt: Double?
    var stopping: Stop?
    var lastExit: String?
    var probing = false
    var nextProbeAt: Double = 0
    /// The host of a remote instance (an ssh target's host): probed and routed to, never spawned or signalled.
    var remoteHost: String?

    var host: String { remoteHost ?? "127.0.0.1" }
    var isRunning: Bool { remoteHost != nil || pid != nil }

    var statusName: String {
        if stopping != nil { return "stopping" }
        if !isRunning { return "crashed" }
        return health.state.rawValue
    }
}

/// What the agent does after a change of its state; performed outside the state's lock.
enum AgentEffect: Sendable, Equatable {
    case spawn(id: String)
    case signal(pid: Int32, signal: Int32)
    case updateRouter(environment: String)
    case persist
}

/// The supervisor's state: desired environments and the instances that realise them. Pure: methods take the
/// time and return the effects to perform, so crash/restart/backoff and scaling are tested without processes.
struct AgentState: Sendable, Codable, Equatable {
    var environments: [String: DesiredEnvironment] = [:]
    var instances: [String: ManagedInstance] = [:]
    var ordinals: [String: Int] = [:]

    /// Restart backoff: 0.5 s, doubling, at most 30 s; a process that ran a minute starts again from 0.5 s.
    static func backoff(restarts: Int) -> Double {
        min(30, 0.5 * Double(1 << min(max(restarts - 1, 0), 6)))
    }

    /// Removes environments that fail `DesiredEnvironment.problem` and returns why; their instances stay
    /// until the next `reconcile` stops them.
    mutating func dropInvalidEnvironments() -> [(name: String, problem: String)] {
        var dropped: [(name: String, problem: String)] = []
        for (name, desired) in environments.sorted(by: { $0.key < $1.key }) {
            guard let problem = desired.problem else { continue }
            environments[name] = nil
            dropped.append((name, problem))
        }
        return dropped
    }

    mutating func apply(_ desired: DesiredEnvironment, now: Double) -> [AgentEffect] {
        environments[desired.config.name] = desired
        return [.persist, .updateRouter(environment: desired.config.name)] + reconcile(now: now)
    }

    mutating func remove(environment: String, now: Double) -> [AgentEffect] {
        environments[environment] = nil
        return [.persist] + reconcile(now: now)
    }

    func instances(of environment: String) -> [ManagedInstance] {
        instances.values.filter { $0.environment == environment }.sorted { $0.id < $1.id }
    }

    /// Starts missing instances and stops surplus ones (unhealthy and newest first).
    mutating func reconcile(now: Double) -> [AgentEffect] {
        var effects: [AgentEffect] = []
        var routerChanged = Set<String>()
        var stop: [String] = []
        for instance in instances.values where instance.stopping == nil {
            let desired = environments[instance.environment]?.versions[instance.version]
            if desired == nil || (desired!.endpoints == nil && desired!.count <= 0) { stop.append(instance.id) }
        }
        for (name, environment) in environments {
            for (version, deployment) in environment.versions {
                if let endpoints = deployment.endpoints {
                    // Remote: one instance per endpoint; ones no longer listed go.
                    let wanted = Set(endpoints)
                    for instance in instances.values where instance.environment == name && instance.version == version && instance.remoteHost != nil {
                        if !wanted.contains("\(instance.host):\(instance.port)") { stop.append(instance.id) }
                    }
                    for endpoint in endpoints {
                        let id = "\(name)-\(version)@\(endpoint)"
                        guard instances[id] == nil, let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else { continue }
                        var instance = ManagedInstance(id: id, environment: name, version: version, port: port, pid: nil, child: false, startedAt: now,
                                                       health: HealthTracker(check: environment.config.probe.healthCheck, startedAt: now))
                        instance.remoteHost = String(endpoint[..<colon])
                        instances[id] = instance
                        effects.append(.persist)
                    }
                    continue
                }
                let active = instances.values.filter { $0.environment == name && $0.version == version && $0.stopping == nil }
                // Clamped as well as validated: `Int.min` would overflow the surplus below.
                let wanted = min(max(deployment.count, 0), AgentLimits.counts.upperBound)
                if active.count < wanted {
                    for _ in active.count..<wanted {
                        let key = "\(name)/\(version)"
                        let ordinal = (ordinals[key] ?? 0) + 1
                        ordinals[key] = ordinal
                        let id = "\(name)-\(version)-\(ordinal)"
                        var probe = environment.config.probe
                        probe.deadline = max(probe.deadline, 0.1)
                        instances[id] = ManagedInstance(id: id, environment: name, version: version, port: 0, pid: nil, child: true,
                                                        startedAt: now, health: HealthTracker(check: probe.healthCheck, startedAt: now))
                        effects.append(.spawn(id: id))
                    }
                } else if active.count > wanted {
                    let ranked = active.sorted { a, b in
                        if a.health.receivesTraffic != b.health.receivesTraffic { return !a.health.receivesTraffic }
                        return a.startedAt > b.startedAt
                    }
                    stop += ranked.prefix(active.count - wanted).map(\.id)
                }
            }
        }
        for id in stop {
            guard var instance = instances[id] else { continue }
            let grace = environments[instance.environment]?.config.stopGrace ?? 10
            routerChanged.insert(instance.environment)
            if let pid = instance.pid {
                instance.stopping = .init(killAt: now + grace)
                instances[id] = instance
                effects.append(.signal(pid: -pid, signal: SIGTERM_VALUE))
            } else {
                instances[id] = nil
            }
        }
        if !effects.isEmpty || !stop.isEmpty { effects.append(.persist) }
        // The router forgets stopping instances before they get SIGTERM: they drain, new requests go elsewhere.
        return routerChanged.sorted().map { .updateRouter(environment: $0) } + effects
    }

    mutating func spawned(id: String, pid: Int32?, port: Int, error: String?, now: Double) -> [AgentEffect] {
        guard var instance = instances[id] else { return [] }
        instance.port = port
        instance.pid = pid
        instance.startedAt = now
        instance.restartAt = nil
        if let error {
            instance.lastExit = error
            instance.restarts += 1
            instance.restartAt = now + Self.backoff(restarts: instance.restarts)
        }
        if let environment = environments[instance.environment] {
            instance.health = HealthTracker(check: environment.config.probe.healthCheck, startedAt: now)
        }
        instance.nextProbeAt = now
        instances[id] = instance
        return [.persist]
    }

    /// A process ended: a stopping instance is gone; any other crashed and starts again after a backoff.
    mutating func exited(pid: Int32, description: String, now: Double) -> [AgentEffect] {
        guard var instance = instances.values.first(where: { $0.pid == pid }) else { return [] }
        if instance.stopping != nil {
            instances[instance.id] = nil
            return [.persist]
        }
        if now - instance.startedAt > 60 { instance.restarts = 0 }
        instance.restarts += 1
        instance.pid = nil
        instance.lastExit = description
        instance.restartAt = now + Self.backoff(restarts: instance.restarts)
        let wasServing = instance.health.receivesTraffic
        if let environment = environments[instance.environment] {
            instance.health = HealthTracker(check: environment.config.probe.healthCheck, startedAt: now)
        }
        instances[instance.id] = instance
        return (wasServing ? [.updateRouter(environment: instance.environment)] : []) + [.persist]
    }

    /// Timers: restarts that are due, SIGKILL for instances that outlived their grace, start deadlines.
    mutating func tick(now: Double) -> [AgentEffect] {
        var effects: [AgentEffect] = []
        for (id, var instance) in instances {
            if var stop = instance.stopping {
                if instance.pid == nil {
                    instances[id] = nil
                    effects.append(.persist)
                } else if now >= stop.killAt, !stop.killed, let pid = instance.pid {
                    stop.killed = true
                    instance.stopping = stop
                    instances[id] = instance
                    effects.append(.signal(pid: -pid, signal: SIGKILL_VALUE))
                }
                continue
            }
            if instance.pid == nil, let at = instance.restartAt, now >= at {
                instance.restartAt = nil
                instance.startedAt = now
                instances[id] = instance
                effects.append(.spawn(id: id))
                continue
            }
            if instance.isRunning, instance.health.tick(now: now) != nil {
                instances[id] = instance
                effects.append(.updateRouter(environment: instance.environment))
            }
        }
        return effects
    }

    /// A probe's result; the router changes when the instance starts or stops receiving traffic.
    mutating func probed(id: String, failure: String?, now: Double) -> [AgentEffect] {
        guard var instance = instances[id] else { return [] }
        instance.probing = false
        let interval = environments[instance.environment]?.config.probe.interval ?? 1
        instance.nextProbeAt = now + interval
        guard instance.stopping == nil, instance.isRunning else {
            instances[id] = instance
            return []
        }
        let before = instance.health.receivesTraffic
        _ = instance.health.record(failure: failure, now: now)
        instances[id] = instance
        return before != instance.health.receivesTraffic ? [.updateRouter(environment: instance.environment)] : []
    }

    /// Instances due for a probe, marked as probing.
    mutating func dueProbes(now: Double) -> [(id: String, url: String, timeout: Double)] {
        var due: [(String, String, Double)] = []
        for (id, var instance) in instances where instance.stopping == nil && instance.isRunning && !instance.probing && instance.nextProbeAt <= now {
            guard let config = environments[instance.environment]?.config else { continue }
            instance.probing = true
            instances[id] = instance
            let path = config.probe.path.hasPrefix("/") ? config.probe.path : "/" + config.probe.path
            let host = instance.host.contains(":") ? "[\(instance.host)]" : instance.host
            due.append((id, "http://\(host):\(instance.port)\(path)", config.probe.timeout))
        }
        return due
    }

    /// The routing table for an environment's router: healthy, running, not stopping instances.
    func table(for environment: String) -> RoutingTable? {
        guard let desired = environments[environment] else { return nil }
        let backends = instances(of: environment)
            .filter { $0.stopping == nil && $0.isRunning && $0.health.receivesTraffic }
            .map { Backend(version: $0.version, host: $0.host, port: $0.port) }
        return RoutingTable(backends: backends, weights: desired.weights, rules: desired.config.rules, stickyCookie: desired.config.stickyCookie)
    }

    func previewTable(for environment: String) -> RoutingTable? {
        guard let desired = environments[environment], let preview = desired.previewVersion else { return nil }
        let backends = instances(of: environment)
            .filter { $0.version == preview && $0.stopping == nil && $0.isRunning && $0.health.receivesTraffic }
            .map { Backend(version: $0.version, host: $0.host, port: $0.port) }
        return RoutingTable(backends: backends, weights: [preview: 100], rules: [], stickyCookie: nil)
    }
}

let SIGTERM_VALUE: Int32 = 15
let SIGKILL_VALUE: Int32 = 9
