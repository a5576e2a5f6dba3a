/// `environments:` of slipway.yml: where a release runs and how it is rolled out.
public struct EnvironmentSpec: Sendable, Equatable {
    public var name: String
    public var location: SourceLocation
    public var target: DeployTarget
    public var traffic: TrafficProvider
    public var strategy: RolloutStrategy
    public var protection: Protection?

    public init(name: String, location: SourceLocation, target: DeployTarget, traffic: TrafficProvider = .router, strategy: RolloutStrategy = .recreate, protection: Protection? = nil) {
        self.name = name
        self.location = location
        self.target = target
        self.traffic = traffic
        self.strategy = strategy
        self.protection = protection
    }
}

public enum DeployTarget: Sendable, Equatable {
    case local(LocalTarget)
    case ssh(SSHTarget)
}

public struct HealthCheck: Sendable, Equatable {
    public var path: String = "/healthz"
    public var interval: Duration = .seconds(1)
    public var timeout: Duration = .seconds(2)
    /// Consecutive successes before an instance gets traffic.
    public var healthyAfter: Int = 1
    /// Consecutive failures before it loses traffic.
    public var unhealthyAfter: Int = 3
    /// A deploy whose instances are not healthy within this fails.
    public var deadline: Duration = .seconds(60)
    public init() {}
}

/// Instances run as local processes, supervised by the agent, behind the built-in router on `listen`.
public struct LocalTarget: Sendable, Equatable {
    public var instances: Int
    public var command: String
    public var listen: Int
    public var health: HealthCheck
    public var stopGrace: Duration = .seconds(10)
    public init(instances: Int, command: String, listen: Int, health: HealthCheck = .init()) {
        self.instances = instances
        self.command = command
        self.listen = listen
        self.health = health
    }
}

/// Hosts reached with OpenSSH; the release is copied to `directory/<version>` and started there.
public struct SSHTarget: Sendable, Equatable {
    public var hosts: [String]
    public var user: String?
    public var port: Int?
    public var identity: String?
    public var directory: String
    public var start: String
    public var stop: String
    public var appPort: Int
    public var health: HealthCheck
    /// The built-in router's port in front of the hosts (with `traffic: router`).
    public var listen: Int?
    /// An OpenSSH known_hosts file to check host keys against (default: the user's).
    public var knownHosts: String?
    public init(hosts: [String], user: String?, port: Int?, identity: String?, directory: String, start: String, stop: String, appPort: Int, health: HealthCheck) {
        self.hosts = hosts
        self.user = user
        self.port = port
        self.identity = identity
        self.directory = directory
        self.start = start
        self.stop = stop
        self.appPort = appPort
        self.health = health
    }
}

public enum TrafficProvider: Sendable, Equatable {
    /// Slipway's own router on the target's `listen` port.
    case router
    /// An existing HAProxy driven through its runtime API socket.
    case haproxy(socket: String, backend: String)
}

public enum RolloutStrategy: Sendable, Equatable {
    case recreate
    case rolling(batch: Int, maxUnavailable: Int)
    case blueGreen(BlueGreen)
    case canary(Canary)

    public var name: String {
        switch self {
        case .recreate: "recreate"
        case .rolling: "rolling"
        case .blueGreen: "blue-green"
        case .canary: "canary"
        }
    }
}

public struct BlueGreen: Sendable, Equatable {
    public var previewPort: Int?
    public var autoPromote: Bool = true
    public var scaleDownDelay: Duration = .seconds(30)
    public var prePromotion: Analysis?
    public var postPromotion: Analysis?
    public init() {}
}

public struct Canary: Sendable, Equatable {
    public enum Step: Sendable, Equatable {
        case weight(Int)
        /// nil: wait for `slipway promote`.
        case pause(Duration?)
        case analysis(Analysis?)
    }
    public var steps: [Step]
    public var analysis: Analysis?
    public var match: [TrafficMatch] = []
    public var sticky: Bool = false
    public init(steps: [Step], analysis: Analysis? = nil) {
        self.steps = steps
        self.analysis = analysis
    }
}

/// Requests pinned to the canary by header or cookie (A/B).
public struct TrafficMatch: Sendable, Equatable {
    public enum Kind: String, Sendable { case header, cookie }
    public var kind: Kind
    public var name: String
    public var value: String
}

public struct Analysis: Sendable, Equatable {
    public var interval: Duration = .seconds(10)
    public var initialDelay: Duration = .zero
    public var failureLimit: Int = 1
    public var inconclusiveLimit: Int = 3
    public var metrics: [MetricCheck]
    public init(metrics: [MetricCheck]) { self.metrics = metrics }
}

public struct MetricCheck: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// Measured by the built-in router: error-rate, latency-p50/p90/p99, latency-mean, request-rate.
        case router(metric: String)
        case prometheus(address: String, query: String)
        case http(url: String, jsonPath: String)
        case command(String)
    }
    public var name: String
    public var source: Source
    /// Statistical comparison of canary against stable over the same window.
    public var compareBaseline: Bool
    public var max: Double?
    public var min: Double?
    public init(name: String, source: Source, compareBaseline: Bool = false, max: Double? = nil, min: Double? = nil) {
        self.name = name
        self.source = source
        self.compareBaseline = compareBaseline
        self.max = max
        self.min = min
    }

    public static let routerMetrics = ["error-rate", "latency-p50", "latency-p90", "latency-p99", "latency-mean", "request-rate"]

    /// With `traffic: haproxy` the numbers are HAProxy's per-server counters and its mean response time
    /// (`rtime`, over each server's last 1024 requests): no per-request latencies, so no percentiles and no
    /// latency comparison. Nil when `metric` can be measured that way.
    public static func haproxyProblem(metric: String, compareBaseline: Bool) -> (message: String, hint: String)? {
        if metric.hasPrefix("latency-p") {
            return ("HAProxy reports a mean response time, not latency percentiles: '\(metric)' cannot be measured with `traffic: haproxy`",
                    "use `metric: latency-mean` with `max` (milliseconds), or a prometheus metric")
        }
        if metric == "latency-mean", compareBaseline {
            return ("HAProxy gives no per-request latencies to compare: `compare: baseline` cannot judge latency with `traffic: haproxy`",
                    "check `latency-mean` against `max` instead, and compare error-rate with the baseline")
        }
        return nil
    }
}

public struct Protection: Sendable, Equatable {
    public var approvals: Int = 0
    public var preventSelfReview: Bool = false
    public var branches: [String] = []
    public var freezes: [FreezeWindow] = []
    public init() {}
}

public struct FreezeWindow: Sendable, Equatable {
    public var cron: String
    public var duration: Duration
    public init(cron: String, duration: Duration) {
        self.cron = cron
        self.duration = duration
    }
}

/// `deploy:` of a job: which environment gets the release this job's needs produced.
public struct DeploySpec: Sendable, Equatable {
    public var environment: String
    /// NAME@VERSION; default: the `release` output of the needed job that released something.
    public var artifact: String?
    public var strategy: RolloutStrategy?
    public var reversible: Bool = true
    public init(environment: String, artifact: String? = nil) {
        self.environment = environment
        self.artifact = artifact
    }
}
