import ArgumentParser
import Foundation
import SlipwayArtifacts
import SlipwayCore
import SlipwayDeploy
import SlipwayEngine
import SlipwayStore

/// Shared by the commands that act on an environment.
struct EnvironmentContext {
    var project: ProjectContext
    var pipeline: Pipeline
    var store: SQLRunStore
    var environment: EnvironmentSpec

    init(_ options: ProjectOptions, environment name: String) throws {
        project = ProjectContext(options)
        (pipeline, _) = try project.loadPipeline()
        store = try project.openStore(create: true)
        guard let spec = pipeline.environments.first(where: { $0.name == name }) else {
            let known = pipeline.environments.map(\.name)
            throw CLIError.badInput("no environment '\(name)' in \(project.displayName)" + (known.isEmpty ? "; add one under `environments:`" : "; known: \(known.joined(separator: ", "))"))
        }
        environment = spec
    }

    func controller(returnWhenWaiting: Bool = false) -> RolloutController {
        var controller = RolloutController(store: store, dataDirectory: project.layout.root, agentExecutable: RunEngine.currentExecutable(),
                                           environment: environment) { line in
            Terminal.print("\(Terminal.dim(RolloutTimeline.clock())) \(line)")
        }
        controller.returnWhenWaiting = returnWhenWaiting
        return controller
    }

    /// Runs the rollout in this process when no live process drives it (its driver was killed, or it ended).
    func takeOverIfOrphaned() async throws {
        guard let active = try store.activeRollout(environment: environment.name) else { return }
        if let pid = active.ownerPID, pid != getpid(), ProcessLauncher.isAlive(pid) { return }
        Terminal.print(Terminal.dim("no process drives rollout #\(active.id) any more; continuing it here"))
        // With the strategy it started with: a deploy job's own strategy, when it has one (job key "deploy (a, b)").
        let job = active.job.flatMap { key in pipeline.jobs.first { key == $0.id || key.hasPrefix($0.id + " (") } }
        let outcome = try await controller(returnWhenWaiting: true).drive(active, strategy: job?.deploy?.strategy)
        report(outcome)
    }

    func report(_ outcome: RolloutOutcome) {
        let phase = outcome.phase
        if phase.isFinal {
            let text = "rollout #\(outcome.rollout.id) \(outcome.rollout.reference): \(phase.rawValue) — \(outcome.reason)"
            Terminal.print(phase == .promoted ? Terminal.green(text) : Terminal.red(text))
        } else {
            Terminal.print(Terminal.yellow("rollout #\(outcome.rollout.id) \(outcome.rollout.reference) waits at \(phase.rawValue): `slipway promote \(environment.name)` or `slipway abort \(environment.name)`"))
        }
    }
}

enum RolloutTimeline {
    static func clock() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss"
        return formatter.string(from: Date())
    }
}

/// `slipway deploy ENV NAME@VERSION`: roll a release out by the environment's strategy and wait for the verdict.
struct DeployCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deploy", abstract: "Roll a release out to an environment.")
    @OptionGroup var options: ProjectOptions
    @Argument(help: "The environment.") var environment: String
    @Argument(help: "NAME@VERSION of a release (see `slipway artifacts ls`).") var release: String
    @Option(help: "Override the environment's strategy: recreate, rolling, blue-green, canary (with the environment's settings).") var strategy: String?

    func run() async throws {
        let context = try EnvironmentContext(options, environment: environment)
        guard let at = release.lastIndex(of: "@") else { throw CLIError.badInput("'\(release)' is not NAME@VERSION") }
        let service = ReleaseService(store: context.store, dataRoot: context.project.layout.root)
        let verification = service.verify(name: String(release[..<at]), version: String(release[release.index(after: at)...]))
        guard verification.passed, let record = verification.release else {
            throw CLIError.failure("refusing to deploy \(release): \(verification.failure ?? "unknown release")")
        }
        var chosen: RolloutStrategy?
        if let strategy {
            guard strategy == context.environment.strategy.name || strategy == "recreate" else {
                throw CLIError.badInput("--strategy \(strategy): only the environment's own strategy (\(context.environment.strategy.name)) or recreate can be chosen here; set the strategy under `environments:`")
            }
            chosen = strategy == "recreate" ? .recreate : context.environment.strategy
        }
        let outcome = try await context.controller().deploy(record, strategy: chosen)
        context.report(outcome)
        if !outcome.succeeded { throw ExitCode(1) }
    }
}

/// promote / abort / pause / resume: a command for whichever process drives the rollout.
struct RolloutCommandOptions: ParsableArguments {
    @OptionGroup var options: ProjectOptions
    @Argument(help: "The environment.") var environment: String
    @Option(name: .customLong("as"), help: "Who does it (recorded in the audit trail).") var actor: String?

    func send(_ op: String) async throws {
        let context = try EnvironmentContext(options, environment: environment)
        guard let active = try context.store.activeRollout(environment: environment) else {
            throw CLIError.badInput("no rollout is in progress in '\(environment)' (see `slipway status \(environment)`)")
        }
        let who = actor ?? ProcessInfo.processInfo.environment["USER"] ?? "someone"
        try context.store.queueCommand(environment: environment, op: op, actor: who)
        Terminal.print("\(op): rollout #\(active.id) \(active.reference) in \(environment)")
        try await context.takeOverIfOrphaned()
    }
}

struct PromoteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "promote", abstract: "Continue a paused rollout (next canary step, or switch blue-green traffic).")
    @OptionGroup var command: RolloutCommandOptions
    func run() async throws { try await command.send("promote") }
}

struct AbortCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "abort", abstract: "Stop a rollout: traffic back to the stable version now; the release is marked aborted.")
    @OptionGroup var command: RolloutCommandOptions
    func run() async throws { try await command.send("abort") }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Hold a rollout where it is.")
    @OptionGroup var command: RolloutCommandOptions
    func run() async throws { try await command.send("pause") }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Continue a paused rollout.")
    @OptionGroup var command: RolloutCommandOptions
    func run() async throws { try await command.send("resume") }
}

/// `slipway rollback ENV`: back to the previous good release. During a rollout (or a blue-green scale-down delay,
/// while the old version is still warm) that is an abort: the traffic switch is immediate.
struct RollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rollback", abstract: "Go back to the previous good release of an environment.")
    @OptionGroup var options: ProjectOptions
    @Argument(help: "The environment.") var environment: String

    func run() async throws {
        let context = try EnvironmentContext(options, environment: environment)
        if let active = try context.store.activeRollout(environment: environment), active.stable != nil {
            try context.store.queueCommand(environment: environment, op: "abort", actor: (ProcessInfo.processInfo.environment["USER"] ?? "someone") + " (rollback)")
            Terminal.print("rollback: rollout #\(active.id) of \(active.reference) is aborted; traffic returns to \(active.stable!)")
            try await context.takeOverIfOrphaned()
            return
        }
        let promoted = try context.store.rollouts(environment: environment, limit: 100).filter { $0.phase == RolloutStateMachine.Phase.promoted.rawValue }
        guard let current = promoted.first else { throw CLIError.badInput("'\(environment)' has no promoted release yet") }
        guard let previous = promoted.first(where: { $0.version != current.version || $0.release != current.release }),
              let release = try context.store.release(name: previous.release, version: previous.version) else {
            throw CLIError.badInput("'\(environment)' has no earlier good release than \(current.reference) to go back to")
        }
        Terminal.print("rollback: \(current.reference) → \(release.reference)")
        var quick = BlueGreen()
        quick.autoPromote = true
        quick.scaleDownDelay = .zero
        let outcome = try await context.controller().deploy(release, strategy: .blueGreen(quick))
        context.report(outcome)
        if !outcome.succeeded { throw ExitCode(1) }
    }
}

/// `slipway approve RUN --as NAME`: an approval for the protected deploys of a run.
struct ApproveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "approve", abstract: "Approve the protected deploys of a run.")
    @OptionGroup var options: ProjectOptions
    @Argument(help: "The run number.") var runNumber: Int64
    @Option(name: .customLong("as"), help: "The approver.") var approver: String
    @Option(help: "Only this deploy job (default: every deploy job of the run).") var job: String?

    func run() throws {
        let project = ProjectContext(options)
        let store = try project.openStore(create: false)
        let record = try project.findRun(store, number: runNumber)
        let added = try store.addApproval(runID: record.id, job: job ?? "*", approver: approver)
        Terminal.print(added ? "approved run #\(record.number)\(job.map { " job \($0)" } ?? "") as \(approver)" : "\(approver) had already approved run #\(record.number)")
    }
}

/// `slipway status [ENV]`: what runs where, its health and traffic, and the rollout in progress with its analysis.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Environments: versions, weights, health, rollout step and analysis.")
    @OptionGroup var options: ProjectOptions
    @OptionGroup var remote: RemoteOptions
    @Argument(help: "One environment (default: all).") var environment: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let views: [EnvironmentView]
        let local: Bool
        if let (url, token, name) = try remote.resolved() {
            views = try await RemoteStatus.fetch(url: url, token: token, project: name, environment: environment)
            local = false
        } else {
            let project = ProjectContext(options)
            let store = try project.openStore(create: true)
            let running = (try? await AgentClient(dataDirectory: project.layout.root).status()) ?? []
            views = try EnvironmentView.collect(environment: environment, running: running, store: store)
            local = true
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            Terminal.print(String(decoding: try encoder.encode(views), as: UTF8.self))
            return
        }
        if views.isEmpty {
            Terminal.print("nothing deployed yet (deploy with a `deploy:` job or `slipway deploy ENV NAME@VERSION`)")
            return
        }
        for view in views { Self.print(view, local: local) }
    }

    /// `local`: the rollout's driving process can be looked for on this machine.
    static func print(_ view: EnvironmentView, local: Bool) {
        let name = view.environment
        let live = view.agent
        Terminal.print(Terminal.bold(name) + (live.map { "  http://127.0.0.1:\($0.listen)" } ?? Terminal.dim("  (not running)")))
        if let live {
            Terminal.print("  traffic: \(live.weights.isEmpty ? "none" : live.weights.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)%" }.joined(separator: ", "))")
            for instance in live.instances {
                let state = instance.state == "healthy" ? Terminal.green(instance.state) : Terminal.yellow(instance.state)
                var line = "  \(instance.id)  port \(instance.port)  pid \(instance.pid.map(String.init) ?? "-")  \(state)"
                if instance.restarts > 0 { line += "  restarts \(instance.restarts)" }
                if let failure = instance.lastFailure, instance.state != "healthy" { line += Terminal.dim("  (\(failure))") }
                Terminal.print(line)
            }
            for (version, m) in live.metrics.sorted(by: { $0.key < $1.key }) where m.requests > 0 {
                Terminal.print(String(format: "  %@: %d requests, %d errors (%.2f%%), p50 %.1f ms, p90 %.1f ms, p99 %.1f ms",
                                      version, m.requests, m.errors, Double(m.errors) / Double(max(1, m.requests)) * 100, m.p50, m.p90, m.p99))
            }
        }
        if let rollout = view.rollout {
            var line = "  rollout #\(rollout.id) \(rollout.release) (\(rollout.strategy)\(rollout.stable.map { " over \($0)" } ?? "")): \(rollout.phase)"
            if !rollout.finished {
                line += ", step \(rollout.step)"
                if let until = rollout.pausedUntil { line += ", paused \(max(0, Int(until.timeIntervalSinceNow)))s more" }
                if local, let pid = rollout.ownerPID, !ProcessLauncher.isAlive(pid) { line += Terminal.yellow("  (no process drives it: `slipway resume \(name)` continues it)") }
            }
            Terminal.print(line)
            if let outcome = rollout.outcome { Terminal.print("    \(outcome)") }
            for event in rollout.events.filter({ $0.kind == "measurement" }).suffix(6) {
                Terminal.print(Terminal.dim("    \(event.text)"))
            }
        }
    }
}

/// `slipway down [ENV]`: stop every instance (and the router) of an environment, or of all of them.
struct DownCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop an environment's instances and router (all environments by default).")
    @OptionGroup var options: ProjectOptions
    @Argument(help: "The environment.") var environment: String?

    func run() async throws {
        let project = ProjectContext(options)
        let agent = AgentClient(dataDirectory: project.layout.root)
        guard let pid = await agent.runningPID() else {
            Terminal.print("nothing is running")
            return
        }
        _ = try await agent.call(.down(environment: environment))
        // With no environment left the agent exits; return once it has, so nothing of Slipway's outlives `down`.
        // (An agent that no longer answers is on its way out too.)
        var last = environment == nil
        if !last { last = (try? await agent.status())?.isEmpty ?? true }
        if last, await !AgentClient.waitUntilExited(pid: pid) {
            Terminal.print("stopped every environment; the agent (pid \(pid)) is still running (see \(agent.paths.log))")
            return
        }
        Terminal.print("stopped \(environment ?? "every environment")")
    }
}

/// `slipway agent`: the background process that supervises instances and routes traffic (started on demand).
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agent", abstract: "Run the deploy agent of a data directory (started automatically).", shouldDisplay: false)
    @Option(name: .customLong("data-dir")) var dataDirectory: String

    func run() async throws {
        let agent = DeployAgent(dataDirectory: dataDirectory)
        if try await !agent.run() {
            FileHandle.standardError.write(Data("another agent already runs for \(dataDirectory)\n".utf8))
        }
    }
}

/// `slipway sample-service`: the demo's HTTP service (also used by the deploy tests). Reads `--config FILE`
/// (KEY=VALUE: version, error-percent, latency-ms, unhealthy, crash-after) and listens on $PORT.
struct SampleServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sample-service", abstract: "A small HTTP service for demos and tests.", shouldDisplay: false)
    @Option(help: "A KEY=VALUE file with the service's behaviour.") var config: String?
    @Option(help: "Port (default: $PORT).") var port: Int?

    func run() async throws {
        var behaviour = SampleService.Behaviour()
        behaviour.version = ProcessInfo.processInfo.environment["SLIPWAY_VERSION"] ?? "dev"
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else { throw CLIError.badInput("cannot read \(config)") }
            behaviour.read(String(decoding: data, as: UTF8.self))
        }
        guard let port = port ?? ProcessInfo.processInfo.environment["PORT"].flatMap(Int.init) else {
            throw CLIError.badInput("no port: pass --port or set $PORT")
        }
        try await SampleService(port: port, behaviour: behaviour).run()
    }
}
