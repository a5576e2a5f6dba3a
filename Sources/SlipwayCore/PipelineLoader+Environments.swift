import Yams

/// Parsing of `environments:` and of a job's `deploy:`.
extension PipelineLoader {
    static let environmentKeys = ["target", "traffic", "strategy", "protection"]
    static let localTargetKeys = ["instances", "command", "listen", "health", "stop-grace"]
    static let sshTargetKeys = ["hosts", "user", "port", "identity", "known-hosts", "directory", "start", "stop", "app-port", "listen", "health"]
    static let healthKeys = ["path", "interval", "timeout", "healthy-after", "unhealthy-after", "deadline"]
    static let strategyNames = ["recreate", "rolling", "blue-green", "canary"]
    static let canaryKeys = ["steps", "analysis", "match", "sticky"]
    static let blueGreenKeys = ["preview", "auto-promote", "scale-down-delay", "pre-promotion", "post-promotion"]
    static let analysisKeys = ["interval", "initial-delay", "failure-limit", "inconclusive-limit", "metrics"]
    static let metricKeys = ["name", "source", "metric", "compare", "max", "min", "address", "query", "url", "json-path", "command"]
    static let protectionKeys = ["approvals", "prevent-self-review", "branches", "freeze"]
    static let deployKeys = ["environment", "artifact", "strategy", "reversible"]

    mutating func environments(_ node: Node) -> [EnvironmentSpec] {
        guard let map = mapping(node, "`environments`") else { return [] }
        var result: [EnvironmentSpec] = []
        for (keyNode, envNode) in map {
            guard let name = keyNode.scalar?.string else { error(keyNode, "environment names must be strings"); continue }
            if !Self.isValidIdentifier(name) {
                error(keyNode, "invalid environment name '\(name)'", hint: "use letters, digits, '-' and '_'")
            }
            guard let envMap = mapping(envNode, "environment '\(name)'") else { continue }
            checkKeys(envMap, allowed: Self.environmentKeys, context: "environment '\(name)'")
            guard let targetNode = envMap["target"] else {
                error(keyNode, "environment '\(name)' has no `target`", hint: "add `target: { local: { instances: 2, command: \"./app --port $PORT\", listen: 8080 } }`")
                continue
            }
            guard let target = deployTarget(targetNode, environment: name) else { continue }
            var spec = EnvironmentSpec(name: name, location: location(keyNode), target: target)
            if let traffic = envMap["traffic"] {
                spec.traffic = trafficProvider(traffic)
                if case .haproxy = spec.traffic, case .local = target {
                    // The agent's instances listen on ports it picks; HAProxy's servers are the hosts of an ssh target.
                    error(traffic, "`traffic: haproxy` needs an `ssh` target: its servers are the target's hosts",
                          hint: "a `local` target is served by the built-in router on `listen`; remove `traffic`, or deploy to `ssh` hosts behind the HAProxy")
                }
            }
            if case .haproxy = spec.traffic {
                analysisByHAProxy = true
                haproxyEnvironments.insert(name)
            }
            if let strategy = envMap["strategy"], let parsed = rolloutStrategy(strategy) { spec.strategy = parsed }
            analysisByHAProxy = false
            if let protectionNode = envMap["protection"] { spec.protection = protection(protectionNode) }
            result.append(spec)
        }
        return result
    }

    mutating func deployTarget(_ node: Node, environment: String) -> DeployTarget? {
        guard let map = mapping(node, "`target` of environment '\(environment)'") else { return nil }
        checkKeys(map, allowed: ["local", "ssh"], context: "`target`")
        if let local = map["local"], let localMap = mapping(local, "`target.local`") {
            checkKeys(localMap, allowed: Self.localTargetKeys, context: "`target.local`")
            let instances = localMap["instances"].flatMap { integer($0, "`instances`") } ?? 1
            if instances < 1 || instances > 64 { error(localMap["instances"] ?? local, "`instances` must be between 1 and 64") }
            guard let commandNode = localMap["command"], let command = scalarString(commandNode, "`command`") else {
                error(local, "`target.local` needs `command`", hint: "the command starts one instance inside the unpacked release and must listen on $PORT")
                return nil
            }
            guard let listenNode = localMap["listen"], let listen = integer(listenNode, "`listen`") else {
                error(local, "`target.local` needs `listen`", hint: "the port the environment's router listens on, e.g. `listen: 8080`")
                return nil
            }
            if listen < 1 || listen > 65535 { error(listenNode, "`listen` must be a port between 1 and 65535") }
            var target = LocalTarget(instances: instances, command: command, listen: listen)
            if let health = localMap["health"] { target.health = healthCheck(health) }
            if let grace = localMap["stop-grace"], let value = duration(grace, "`stop-grace`") { target.stopGrace = value }
            return .local(target)
        }
        if let ssh = map["ssh"], let sshMap = mapping(ssh, "`target.ssh`") {
            checkKeys(sshMap, allowed: Self.sshTargetKeys, context: "`target.ssh`")
            let hosts = sshMap["hosts"].map { stringList($0, "`hosts`", allowScalar: true) } ?? []
            if hosts.isEmpty { error(ssh, "`target.ssh` needs `hosts`", hint: "list the hosts, e.g. `hosts: [app1.internal, app2.internal]`") }
            var strings: [String: String] = [:]
            for key in ["user", "identity", "known-hosts", "directory", "start", "stop"] {
                if let value = sshMap[key] { strings[key] = scalarString(value, "`\(key)`") }
            }
            for required in ["directory", "start", "stop"] where strings[required] == nil {
                error(ssh, "`target.ssh` needs `\(required)`", hint: "`directory` receives the release, `start`/`stop` run there over ssh")
            }
            let port = sshMap["port"].flatMap { integer($0, "`port`") }
            let appPort = sshMap["app-port"].flatMap { integer($0, "`app-port`") } ?? 8080
            let listen = sshMap["listen"].flatMap { integer($0, "`listen`") }
            let health = sshMap["health"].map { healthCheck($0) } ?? HealthCheck()
            guard !hosts.isEmpty, let directory = strings["directory"], let start = strings["start"], let stop = strings["stop"] else { return nil }
            var target = SSHTarget(hosts: hosts, user: strings["user"], port: port, identity: strings["identity"], directory: directory, start: start, stop: stop, appPort: appPort, health: health)
            target.listen = listen
            target.knownHosts = strings["known-hosts"]
            return .ssh(target)
        }
        error(node, "`target` of environment '\(environment)' needs `local` or `ssh`", hint: "e.g. `target: { local: { instances: 2, command: \"./app --port $PORT\", listen: 8080 } }`")
        return nil
    }

    mutating func healthCheck(_ node: Node) -> HealthCheck {
        var health = HealthCheck()
        guard let map = mapping(node, "`health`") else { return health }
        checkKeys(map, allowed: Self.healthKeys, context: "`health`")
        if let path = map["path"], let value = scalarString(path, "`health.path`") {
            if value.hasPrefix("/") { health.path = value } else { error(path, "`health.path` must start with '/'") }
        }
        if let n = map["interval"], let d = duration(n, "`health.interval`") { health.interval = d }
        if let n = map["timeout"], let d = duration(n, "`health.timeout`") { health.timeout = d }
        if let n = map["deadline"], let d = duration(n, "`health.deadline`") { health.deadline = d }
        if let n = map["healthy-after"], let v = integer(n, "`healthy-after`") { health.healthyAfter = max(1, v) }
        if let n = map["unhealthy-after"], let v = integer(n, "`unhealthy-after`") { health.unhealthyAfter = max(1, v) }
        return health
    }

    mutating func trafficProvider(_ node: Node) -> TrafficProvider {
        if node.scalar?.string == "router" { return .router }
        guard let map = mapping(node, "`traffic`") else { return .router }
        checkKeys(map, allowed: ["router", "haproxy"], context: "`traffic`")
        if let haproxy = map["haproxy"], let h = mapping(haproxy, "`traffic.haproxy`") {
            checkKeys(h, allowed: ["socket", "backend"], context: "`traffic.haproxy`")
            guard let socket = h["socket"].flatMap({ scalarString($0, "`socket`") }), let backend = h["backend"].flatMap({ scalarString($0, "`backend`") }) else {
                error(haproxy, "`traffic.haproxy` needs `socket` and `backend`", hint: "the runtime API socket (stats socket … level admin) and the backend whose servers Slipway weighs")
                return .router
            }
            return .haproxy(socket: socket, backend: backend)
        }
        return .router
    }

    mutating func rolloutStrategy(_ node: Node) -> RolloutStrategy? {
        if let name = node.scalar?.string {
            switch name {
            case "recreate": return .recreate
            case "rolling": return .rolling(batch: 1, maxUnavailable: 0)
            case "blue-green": return .blueGreen(BlueGreen())
            case "canary":
                error(node, "`strategy: canary` needs its steps", hint: "write `strategy: { canary: { steps: [ { weight: 10 }, { pause: 30s }, { weight: 100 } ] } }`")
                return nil
            default:
                let suggestion = Suggestion.nearest(to: name, in: Self.strategyNames)
                error(node, "unknown strategy '\(name)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use one of: \(Self.strategyNames.joined(separator: ", "))")
                return nil
            }
        }
        guard let map = mapping(node, "`strategy`") else { return nil }
        checkKeys(map, allowed: Self.strategyNames, context: "`strategy`")
        if map.count != 1 { error(node, "`strategy` names exactly one strategy", hint: "one of: \(Self.strategyNames.joined(separator: ", "))") }
        if map["recreate"] != nil { return .recreate }
        if let rolling = map["rolling"] {
            var batch = 1, maxUnavailable = 0
            if let r = rolling.keyedMapping {
                checkKeys(r, allowed: ["batch", "max-unavailable"], context: "`rolling`")
                if let b = r["batch"], let v = integer(b, "`batch`") { batch = max(1, v) }
                if let m = r["max-unavailable"], let v = integer(m, "`max-unavailable`") { maxUnavailable = max(0, v) }
            }
            return .rolling(batch: batch, maxUnavailable: maxUnavailable)
        }
        if let blueGreen = map["blue-green"] {
            var spec = BlueGreen()
            if let b = blueGreen.keyedMapping {
                checkKeys(b, allowed: Self.blueGreenKeys, context: "`blue-green`")
                if let p = b["preview"], let v = integer(p, "`preview`") { spec.previewPort = v }
                if let a = b["auto-promote"] { spec.autoPromote = bool(a, "`auto-promote`") ?? true }
                if let d = b["scale-down-delay"], let v = duration(d, "`scale-down-delay`", allowZero: true) { spec.scaleDownDelay = v }
                if let a = b["pre-promotion"] { spec.prePromotion = analysis(a) }
                if let a = b["post-promotion"] {
                    spec.postPromotion = analysis(a)
                    // It measures only while the old version is kept warm: a shorter delay would end it unmeasured.
                    if let post = spec.postPromotion, spec.scaleDownDelay < post.initialDelay + post.interval {
                        let needed = post.initialDelay + post.interval
                        error(b["scale-down-delay"] ?? a, "the post-promotion analysis would never measure: its first measurement comes \(DurationParser.format(needed)) after the switch, but `scale-down-delay` ends the rollout after \(DurationParser.format(spec.scaleDownDelay))",
                              hint: "set `scale-down-delay` to at least \(DurationParser.format(needed)) (a few intervals more to let it judge), or shorten the analysis's `initial-delay`/`interval`")
                    }
                }
            }
            return .blueGreen(spec)
        }
        if let canary = map["canary"], let c = mapping(canary, "`canary`") {
            checkKeys(c, allowed: Self.canaryKeys, context: "`canary`")
            var steps: [Canary.Step] = []
            var gates: [(node: Node, analysis: Analysis?)] = []
            if let stepsNode = c["steps"], let sequence = stepsNode.sequence {
                for stepNode in sequence {
                    guard let s = mapping(stepNode, "a canary step"), s.count == 1, let (key, value) = s.first, let kind = key.scalar?.string else {
                        error(stepNode, "a canary step is one of `weight: N`, `pause: DURATION` (or `pause: {}` to wait for `slipway promote`) or `analysis: {...}`")
                        continue
                    }
                    switch kind {
                    case "weight":
                        if let w = integer(value, "`weight`") {
                            if w < 0 || w > 100 { error(value, "`weight` must be between 0 and 100", hint: "it is the canary's share of traffic in percent") }
                            steps.append(.weight(w))
                        }
                    case "pause":
                        if value.mapping != nil || isNull(value) { steps.append(.pause(nil)) }
                        else if let d = duration(value, "`pause`") { steps.append(.pause(d)) }
                    case "analysis":
                        let gate = value.mapping.map { _ in analysis(value) } ?? nil
                        steps.append(.analysis(gate))
                        gates.append((key, gate))
                    default:
                        let suggestion = Suggestion.nearest(to: kind, in: ["weight", "pause", "analysis"])
                        error(key, "unknown canary step '\(kind)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use weight, pause or analysis")
                    }
                }
            } else {
                error(canary, "`canary` needs `steps`", hint: "e.g. `steps: [ { weight: 10 }, { pause: 30s }, { weight: 50 }, { pause: 1m }, { weight: 100 } ]`")
            }
            var spec = Canary(steps: steps)
            if let a = c["analysis"] { spec.analysis = analysis(a) }
            // A rollout is judged by one analysis: the canary-level one, else the gates' (the same in each).
            let judged = spec.analysis ?? gates.compactMap(\.analysis).first
            for gate in gates {
                if judged == nil {
                    error(gate.node, "this analysis gate has no metrics, and the canary has no `analysis` to judge it by",
                          hint: "give the gate its metrics (`- analysis: { metrics: [ … ] }`) or the canary an `analysis:`")
                } else if let own = gate.analysis, own != judged {
                    error(gate.node, spec.analysis != nil
                          ? "this gate's own analysis would be ignored: the canary-level `analysis` judges every gate"
                          : "this gate's analysis differs from the first gate's, which judges every gate",
                          hint: "write the gate as `- analysis:` (no metrics) and keep one analysis, at the canary level or the same in each gate")
                }
            }
            if let sticky = c["sticky"] { spec.sticky = bool(sticky, "`sticky`") ?? false }
            if analysisByHAProxy, let node = c["match"] ?? (spec.sticky ? c["sticky"] : nil) {
                error(node, "`match` and `sticky` need the built-in router: HAProxy's runtime API sets server weights only",
                      hint: "remove them, or put the header or cookie rule in HAProxy's own configuration")
            }
            if let match = c["match"], let sequence = match.sequence {
                for entry in sequence {
                    guard let m = mapping(entry, "a `match` entry"), let (key, value) = m.first, let kindName = key.scalar?.string,
                          let kind = TrafficMatch.Kind(rawValue: kindName), let spec2 = mapping(value, "`\(kindName)`"),
                          let name = spec2["name"].flatMap({ scalarString($0, "`name`") }), let v = spec2["value"].flatMap({ scalarString($0, "`value`") }) else {
                        error(entry, "a `match` entry is `{ header: { name: X-Canary, value: \"1\" } }` or `{ cookie: { name: canary, value: \"1\" } }`")
                        continue
                    }
                    spec.match.append(TrafficMatch(kind: kind, name: name, value: v))
                }
            }
            return .canary(spec)
        }
        return nil
    }

    mutating func analysis(_ node: Node) -> Analysis? {
        guard let map = mapping(node, "`analysis`") else { return nil }
        checkKeys(map, allowed: Self.analysisKeys, context: "`analysis`")
        var result = Analysis(metrics: [])
        if let n = map["interval"], let d = duration(n, "`interval`") { result.interval = d }
        if let n = map["initial-delay"], let d = duration(n, "`initial-delay`", allowZero: true) { result.initialDelay = d }
        if let n = map["failure-limit"], let v = integer(n, "`failure-limit`") { result.failureLimit = max(0, v) }
        if let n = map["inconclusive-limit"], let v = integer(n, "`inconclusive-limit`") { result.inconclusiveLimit = max(0, v) }
        guard let metricsNode = map["metrics"], let sequence = metricsNode.sequence, !sequence.isEmpty else {
            error(node, "`analysis` needs `metrics`", hint: "e.g. `metrics: [ { name: errors, source: router, metric: error-rate, compare: baseline } ]`")
            return result
        }
        for metricNode in sequence {
            guard let m = mapping(metricNode, "a metric") else { continue }
            checkKeys(m, allowed: Self.metricKeys, context: "a metric")
            let name = m["name"].flatMap { scalarString($0, "`name`") } ?? "metric\(result.metrics.count + 1)"
            let sourceName = m["source"].flatMap { scalarString($0, "`source`") } ?? "router"
            var source: MetricCheck.Source
            switch sourceName {
            case "router":
                let metric = m["metric"].flatMap { scalarString($0, "`metric`") } ?? "error-rate"
                if !MetricCheck.routerMetrics.contains(metric) {
                    let suggestion = Suggestion.nearest(to: metric, in: MetricCheck.routerMetrics)
                    error(m["metric"] ?? metricNode, "unknown router metric '\(metric)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use one of: \(MetricCheck.routerMetrics.joined(separator: ", "))")
                }
                source = .router(metric: metric)
            case "prometheus":
                guard let address = m["address"].flatMap({ scalarString($0, "`address`") }), let query = m["query"].flatMap({ scalarString($0, "`query`") }) else {
                    error(metricNode, "a prometheus metric needs `address` and `query`", hint: "e.g. `address: http://127.0.0.1:9090`, `query: 'sum(rate(http_requests_total{version=\"{{canary}}\",code=~\"5..\"}[1m]))'`")
                    continue
                }
                source = .prometheus(address: address, query: query)
            case "http":
                guard let url = m["url"].flatMap({ scalarString($0, "`url`") }), let path = m["json-path"].flatMap({ scalarString($0, "`json-path`") }) else {
                    error(metricNode, "an http metric needs `url` and `json-path`", hint: "e.g. `url: http://127.0.0.1:9000/stats`, `json-path: $.errors.rate`")
                    continue
                }
                source = .http(url: url, jsonPath: path)
            case "command":
                guard let command = m["command"].flatMap({ scalarString($0, "`command`") }) else {
                    error(metricNode, "a command metric needs `command`", hint: "the command prints a number; a non-zero exit fails the measurement")
                    continue
                }
                source = .command(command)
            default:
                let suggestion = Suggestion.nearest(to: sourceName, in: ["router", "prometheus", "http", "command"])
                error(m["source"] ?? metricNode, "unknown metric source '\(sourceName)'", hint: suggestion.map { "did you mean '\($0)'?" } ?? "use router, prometheus, http or command")
                continue
            }
            var check = MetricCheck(name: name, source: source)
            if let compare = m["compare"] {
                if compare.scalar?.string == "baseline" { check.compareBaseline = true } else { error(compare, "`compare` can only be `baseline`") }
            }
            check.max = m["max"].flatMap { thresholdValue($0, "`max`") }
            check.min = m["min"].flatMap { thresholdValue($0, "`min`") }
            if !check.compareBaseline, check.max == nil, check.min == nil {
                error(metricNode, "metric '\(name)' has nothing to check", hint: "add `max`, `min` or `compare: baseline`")
            }
            if analysisByHAProxy, case .router(let metric) = check.source, let problem = MetricCheck.haproxyProblem(metric: metric, compareBaseline: check.compareBaseline) {
                error(m["metric"] ?? metricNode, problem.message, hint: problem.hint)
            }
            result.metrics.append(check)
        }
        return result
    }

    /// A threshold: a number, or a duration (`250ms`) read as milliseconds.
    mutating func thresholdValue(_ node: Node, _ what: String) -> Double? {
        guard let text = node.scalar?.string else { error(node, "\(what) must be a number"); return nil }
        if let number = Double(text) { return number }
        if let duration = DurationParser.parse(text) {
            let (seconds, attoseconds) = duration.components
            return Double(seconds) * 1000 + Double(attoseconds) / 1e15
        }
        error(node, "\(what) '\(text)' is neither a number nor a duration", hint: "write 0.5, 2 or 250ms")
        return nil
    }

    mutating func protection(_ node: Node) -> Protection? {
        guard let map = mapping(node, "`protection`") else { return nil }
        checkKeys(map, allowed: Self.protectionKeys, context: "`protection`")
        var result = Protection()
        if let a = map["approvals"], let v = integer(a, "`approvals`") { result.approvals = max(0, v) }
        if let p = map["prevent-self-review"] { result.preventSelfReview = bool(p, "`prevent-self-review`") ?? false }
        if let b = map["branches"] { result.branches = stringList(b, "`branches`", allowScalar: true) }
        if let freeze = map["freeze"], let sequence = freeze.sequence {
            for entry in sequence {
                guard let f = mapping(entry, "a freeze window"), let cron = f["cron"].flatMap({ scalarString($0, "`cron`") }),
                      let durationNode = f["duration"], let d = duration(durationNode, "`duration`") else {
                    error(entry, "a freeze window is `{ cron: \"0 18 * * 5\", duration: 64h }`")
                    continue
                }
                if case .failure(let problem) = CronSchedule.parse(cron) {
                    error(f["cron"] ?? entry, problem.description, hint: "a freeze starts at each minute the cron matches (UTC), e.g. \"0 18 * * 5\" is Fridays at 18:00")
                }
                result.freezes.append(FreezeWindow(cron: cron, duration: d))
            }
        }
        return result
    }

    mutating func deploySpec(_ node: Node, jobID: String) -> DeploySpec? {
        if let name = node.scalar?.string { return DeploySpec(environment: name) }
        guard let map = mapping(node, "`deploy` of job '\(jobID)'") else { return nil }
        checkKeys(map, allowed: Self.deployKeys, context: "`deploy`")
        guard let envNode = map["environment"], let environment = scalarString(envNode, "`environment`") else {
            error(node, "`deploy` of job '\(jobID)' needs `environment`", hint: "write `deploy: { environment: staging }`")
            return nil
        }
        var spec = DeploySpec(environment: environment)
        if let artifact = map["artifact"] {
            spec.artifact = scalarString(artifact, "`artifact`")
            if let value = spec.artifact { checkTemplate(artifact, value, context: "`deploy.artifact`") }
        }
        if let strategy = map["strategy"] {
            analysisByHAProxy = haproxyEnvironments.contains(environment)
            spec.strategy = rolloutStrategy(strategy)
            analysisByHAProxy = false
        }
        if let reversible = map["reversible"] { spec.reversible = bool(reversible, "`reversible`") ?? true }
        return spec
    }
}
