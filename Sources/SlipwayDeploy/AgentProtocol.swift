import SlipwayCore

/// How the agent probes an instance (`HealthCheck` in seconds, so it can be sent and stored).
public struct ProbeConfig: Sendable, Equatable, Codable {
    public var path: String
    public var interval: Double
    public var timeout: Double
    public var healthyAfter: Int
    public var unhealthyAfter: Int
    public var deadline: Double

    public init(_ check: HealthCheck) {
        path = check.path
        interval = check.interval.seconds
        timeout = check.timeout.seconds
        healthyAfter = check.healthyAfter
        unhealthyAfter = check.unhealthyAfter
        deadline = check.deadline.seconds
    }

    var healthCheck: HealthCheck {
        var check = HealthCheck()
        check.path = path
        check.interval = .clamped(seconds: interval)
        check.timeout = .clamped(seconds: timeout)
        check.healthyAfter = healthyAfter
        check.unhealthyAfter = unhealthyAfter
        check.deadline = .clamped(seconds: deadline)
        return check
    }
}

extension Duration {
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// `seconds` clamped into `AgentLimits.seconds` (NaN as 0): `Int64(Double)` traps out of range, and a
    /// saved state is converted again on every restart.
    static func clamped(seconds: Double) -> Duration {
        let range = AgentLimits.seconds
        let value = seconds.isNaN ? 0 : min(max(seconds, range.lowerBound), range.upperBound)
        return .milliseconds(Int64(value * 1000))
    }
}

/// What the agent accepts on its socket. Any local process of the user can write there, and numbers out
/// of range would trap later (duration conversions, instance counts, weight sums).
public enum AgentLimits {
    public static let counts = 0...1000
    public static let weights = 0...1_000_000
    /// Seconds; as long as the pipeline loader allows a duration (7 days).
    public static let seconds = 0.0...(7 * 86_400.0)
    public static let ports = 1...65535
}

extension DesiredEnvironment {
    /// Why the agent refuses this environment, or nil when every number in it is in range.
    public var problem: String? {
        let name = "environment '\(config.name)'"
        // 0: any free port (ssh targets behind HAProxy have no router port of their own).
        if !(0...AgentLimits.ports.upperBound).contains(config.listen) { return "\(name): `listen` \(config.listen) is not a port (0–65535)" }
        if let port = config.previewPort, !AgentLimits.ports.contains(port) { return "\(name): the preview port \(port) is not a port (1–65535)" }
        let durations = [("probe interval", config.probe.interval), ("probe timeout", config.probe.timeout),
                         ("probe deadline", config.probe.deadline), ("stop grace", config.stopGrace)]
        for (what, value) in durations where !(value.isFinite && AgentLimits.seconds.contains(value)) {
            return "\(name): the \(what) of \(value) s is out of range (0–\(Int(AgentLimits.seconds.upperBound)) s)"
        }
        for (what, value) in [("healthy-after", config.probe.healthyAfter), ("unhealthy-after", config.probe.unhealthyAfter)] where !AgentLimits.counts.contains(value) {
            return "\(name): \(what) \(value) is out of range (0–\(AgentLimits.counts.upperBound))"
        }
        for (version, deployment) in versions.sorted(by: { $0.key < $1.key }) {
            if !AgentLimits.counts.contains(deployment.count) {
                return "\(name): \(deployment.count) instances of \(version) is out of range (0–\(AgentLimits.counts.upperBound))"
            }
            let endpoints = deployment.endpoints ?? []
            if endpoints.count > AgentLimits.counts.upperBound { return "\(name): \(version) has more than \(AgentLimits.counts.upperBound) endpoints" }
            for endpoint in endpoints {
                guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]), AgentLimits.ports.contains(port) else {
                    return "\(name): endpoint '\(endpoint.prefix(200))' of \(version) is not host:port with a port 1–65535"
                }
            }
        }
        for (version, weight) in weights.sorted(by: { $0.key < $1.key }) where !AgentLimits.weights.contains(weight) {
            return "\(name): the weight \(weight) of \(version) is out of range (0–\(AgentLimits.weights.upperBound))"
        }
        return nil
    }
}

extension AgentRequest {
    /// Why the agent refuses this request before acting on it, or nil.
    public var problem: String? {
        switch self {
        case .apply(let desired): desired.problem
        case .window(_, _, let since): since.isFinite && since >= 0 ? nil : "`since` must be a unix time in seconds, not \(since)"
        case .ping, .status, .down: nil
        }
    }
}

/// What an environment looks like to the agent: the processes to run and how traffic reaches them.
public struct EnvironmentConfig: Sendable, Equatable, Codable {
    public var name: String
    public var listen: Int
    public var previewPort: Int?
    /// Run with `/bin/sh -c` in the version's directory, with `$PORT`, `SLIPWAY_VERSION`, `SLIPWAY_ENVIRONMENT`.
    public var command: String
    public var probe: ProbeConfig
    public var stopGrace: Double
    public var stickyCookie: String?
    public var rules: [MatchRule]

    public init(name: String, listen: Int, previewPort: Int? = nil, command: String, probe: ProbeConfig, stopGrace: Double = 10, stickyCookie: String? = nil, rules: [MatchRule] = []) {
        self.name = name
        self.listen = listen
        self.previewPort = previewPort
        self.command = command
        self.probe = probe
        self.stopGrace = stopGrace
        self.stickyCookie = stickyCookie
        self.rules = rules
    }
}

public struct VersionDeployment: Sendable, Equatable, Codable {
    public var count: Int
    /// The unpacked release; the working directory of every instance.
    public var directory: String
    public var environment: [String: String]
    /// Remote instances (`host:port`, an ssh target's hosts): not started by the agent, only health-checked
    /// and routed to. `count` is ignored for them.
    public var endpoints: [String]?

    public init(count: Int, directory: String, environment: [String: String] = [:], endpoints: [String]? = nil) {
        self.count = count
        self.directory = directory
        self.environment = environment
        self.endpoints = endpoints
    }
}

/// The desired state of one environment. The controller sends all of it every time (idempotent), the agent
/// converges: starts and stops instances, and routes by `weights` to the healthy ones.
public struct DesiredEnvironment: Sendable, Equatable, Codable {
    public var config: EnvironmentConfig
    public var versions: [String: VersionDeployment]
    public var weights: [String: Int]
    /// Served alone on `config.previewPort` (blue-green smoke tests).
    public var previewVersion: String?

    public init(config: EnvironmentConfig, versions: [String: VersionDeployment] = [:], weights: [String: Int] = [:], previewVersion: String? = nil) {
        self.config = config
        self.versions = versions
        self.weights = weights
        self.previewVersion = previewVersion
    }
}

public enum AgentRequest: Sendable, Equatable, Codable {
    case ping
    case apply(DesiredEnvironment)
    case status
    /// Router counts and latency samples of `version` since `since` (unix seconds).
    case window(environment: String, version: String, since: Double)
    /// Stops every instance and the router of `environment` (all environments when nil).
    case down(environment: String?)
}

public struct InstanceStatus: Sendable, Equatable, Codable {
    public var id: String
    public var version: String
    public var port: Int
    public var pid: Int32?
    /// starting, healthy, unhealthy, failedToStart, stopping, crashed (waiting to restart)
    public var state: String
    public var restarts: Int
    public var lastFailure: String?
    public var startedAt: Double
}

public struct EnvironmentStatus: Sendable, Equatable, Codable {
    public var name: String
    public var listen: Int
    public var routerListening: Bool
    public var weights: [String: Int]
    public var versions: [String: VersionDeployment]
    public var instances: [InstanceStatus]
    public var metrics: [String: VersionMetrics]

    public func healthy(_ version: String) -> Int {
        instances.filter { $0.version == version && $0.state == "healthy" }.count
    }
}

public struct AgentWindow: Sendable, Equatable, Codable {
    public var requests: Int
    public var errors: Int
    public var latencies: [Double]
    public var seconds: Double

    public var trafficWindow: TrafficWindow {
        TrafficWindow(requests: requests, errors: errors, latencies: latencies, seconds: seconds)
    }
}

public enum AgentResponse: Sendable, Equatable, Codable {
    case ok
    case pong(pid: Int32, dataDirectory: String)
    case status([EnvironmentStatus])
    case window(AgentWindow)
    case error(String)
}
