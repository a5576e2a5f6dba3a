import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayDeploy
import SlipwayEngine
import SlipwayStore

/// `slipway demo`: the whole product in two minutes on a fresh machine. A throw-away git repository with the
/// sample service; build → test → release → staging (rolling) → production (canary with baseline analysis)
/// while `slipway/load` drives traffic: v1 is deployed, v2 (healthy) is promoted, v3 (5 % errors) is caught
/// by the analysis and rolled back. Prints the timeline and the verdicts with their statistics, then cleans up.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo", abstract: "Show a whole delivery: build, release, canary with analysis, automatic rollback.")
    @Option(help: "Where to create the demo repository (default: a new temporary directory).") var directory: String?
    @Flag(help: "Keep the repository and leave production running afterwards (stop it with `slipway down`).") var keep = false
    @Option(help: "Port of the production router.") var port: Int = 18080
    @Option(help: "Port of the staging router.") var stagingPort: Int = 18081

    static func pipeline(executable: String, production: Int, staging: Int) -> String {
        """
        # The demo pipeline: build, test and release a small HTTP service, deploy it to staging (rolling),
        # then to production by canary, judged against the stable version by the router's own metrics.
        name: demo
        env:
          VERSION: "1.0.0"
        jobs:
          build:
            steps:
              - run: test -f app/config && echo "building web@$VERSION"
          test:
            needs: [build]
            steps:
              - run: grep -q '^version' app/config && echo "config ok"
          release:
            needs: [test]
            steps:
              - run: echo "releasing web@$VERSION"
            release: { name: web, version: "${{ env.VERSION }}", path: app }
          staging:
            needs: [release]
            deploy: { environment: staging }
          production:
            needs: [release, staging]
            deploy: { environment: production }
          load:
            needs: [staging]
            if: env.LOAD == 'yes'
            steps:
              - uses: slipway/load
                with: { url: "http://127.0.0.1:\(production)/", rps: 50, duration: 28s }
        environments:
          staging:
            target:
              local:
                instances: 2
                command: "\(executable) sample-service --config config"
                listen: \(staging)
                health: { path: /healthz, interval: 200ms, deadline: 20s }
                stop-grace: 2s
            strategy: { rolling: { batch: 1 } }
          production:
            target:
              local:
                instances: 3
                command: "\(executable) sample-service --config config"
                listen: \(production)
                health: { path: /healthz, interval: 200ms, deadline: 20s }
                stop-grace: 2s
            strategy:
              canary:
                steps: [ { weight: 20 }, { pause: 10s }, { weight: 50 }, { pause: 6s }, { weight: 100 } ]
                analysis:
                  interval: 2s
                  failure-limit: 0
                  inconclusive-limit: 30
                  metrics:
                    - { name: errors, source: router, metric: error-rate, compare: baseline }
                    - { name: latency, source: router, metric: latency-p99, max: 500ms }

        """
    }

    func run() async throws {
        let executable = RunEngine.currentExecutable()
        let root = directory ?? (FileManager.default.temporaryDirectory.path + "/slipway-demo-\(UUID().uuidString.prefix(8))")
        if FileManager.default.fileExists(atPath: root + "/slipway.yml") {
            throw CLIError.badInput("\(root) already holds a project; pass another --directory")
        }
        for p in [port, stagingPort] where await Self.answer(port: p) != nil {
            throw CLIError.badInput("port \(p) is in use; pick others with --port and --staging-port")
        }
        try FileManager.default.createDirectory(atPath: root + "/app", withIntermediateDirectories: true)
        let started = Date()
        Terminal.print(Terminal.bold("Slipway demo") + Terminal.dim("  in \(root)"))
        try Data(Self.pipeline(executable: executable, production: port, staging: stagingPort).utf8).write(to: URL(fileURLWithPath: root + "/slipway.yml"))
        try git(["init", "-q", "-b", "main"], in: root)

        var cleanedUp = false
        defer {
            if !cleanedUp { _ = try? runQuietly([executable, "down"], in: root) }
        }
        let shipments: [(version: String, config: String, story: String)] = [
            ("1.0.0", "version=1.0.0\n", "v1: the first release goes straight to full size"),
            ("2.0.0", "version=2.0.0\n", "v2: healthy — the canary should be promoted"),
            ("3.0.0", "version=3.0.0\nerror-percent=5\n", "v3: answers 5 % of requests with 500 — the analysis should roll it back"),
        ]
        var outcomes: [String] = []
        for shipment in shipments {
            try Data(shipment.config.utf8).write(to: URL(fileURLWithPath: root + "/app/config"))
            try git(["add", "-A"], in: root)
            try git(["-c", "user.name=Slipway Demo", "-c", "user.email=demo@slipway.invalid", "commit", "-q", "-m", "web \(shipment.version)"], in: root)
            Terminal.print("")
            Terminal.print(Terminal.bold("▶ \(shipment.story)"))
            var arguments = [executable, "run", "--plain", "--env", "VERSION=\(shipment.version)"]
            if shipment.version != "1.0.0" { arguments += ["--env", "LOAD=yes"] }
            let status = try stream(arguments, in: root, since: started)
            outcomes.append("\(shipment.version): run \(status == 0 ? "succeeded" : "failed (as expected for a bad canary)")")
        }

        Terminal.print("")
        Terminal.print(Terminal.bold("Verdicts"))
        let store = try SQLRunStore(path: root + "/.slipway/state.db")
        for rollout in try store.rollouts(environment: "production", limit: 10).reversed() {
            let head = "  \(rollout.reference): \(rollout.phase)"
            let painted = rollout.phase == "promoted" ? Terminal.green(head) : Terminal.red(head)
            Terminal.print(painted + Terminal.dim(" — \(rollout.outcome ?? "")"))
            let events = try store.rolloutEvents(rolloutID: rollout.id).filter { $0.kind == "measurement" }
            // The measurement that decided, or the last one of each metric.
            if let decisive = events.last(where: { $0.text.contains(": fail") }) {
                Terminal.print("    \(decisive.text)")
            } else {
                var shown = Set<String>()
                for event in events.reversed() {
                    let metric = String(event.text.prefix { $0 != ":" })
                    if shown.insert(metric).inserted { Terminal.print("    \(event.text)") }
                }
            }
        }
        let current = await Self.answer(port: port)
        Terminal.print("")
        Terminal.print("production now answers: \(current ?? "nothing")")
        Terminal.print(Terminal.dim("finished in \(Terminal.formatDuration(Date().timeIntervalSince(started)))"))
        if keep {
            cleanedUp = true
            Terminal.print("kept: \(root) — try `cd \(root) && slipway status`, `curl http://127.0.0.1:\(port)/`, then `slipway down`")
        } else {
            _ = try? runQuietly([executable, "down"], in: root)
            cleanedUp = true
            try? FileManager.default.removeItem(atPath: root)
            Terminal.print(Terminal.dim("stopped every instance and removed \(root) (keep it with --keep)"))
        }
    }

    /// The body `/` answers on a loopback port, or nil when nothing answers.
    static func answer(port: Int) async -> String? {
        guard let response = try? await HTTPClient().get("http://127.0.0.1:\(port)/", timeout: .seconds(2)) else { return nil }
        return response.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func git(_ arguments: [String], in directory: String) throws {
        let status = try runQuietly(["/usr/bin/env", "git"] + arguments, in: directory)
        if status != 0 { throw CLIError.failure("git \(arguments.joined(separator: " ")) failed in \(directory)") }
    }

    @discardableResult
    func runQuietly(_ arguments: [String], in directory: String) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs a pipeline and prints the lines of its timeline that tell the story (jobs, deploy steps, verdicts).
    func stream(_ arguments: [String], in directory: String, since start: Date) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var pending = Data()
        let handle = pipe.fileHandleForReading
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                if let shown = Self.timelineLine(line) {
                    let t = String(format: "%5.1fs", Date().timeIntervalSince(start))
                    Terminal.print(Terminal.dim(t) + "  " + shown)
                }
            }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Which lines of `slipway run --plain` the demo shows, shortened.
    static func timelineLine(_ line: String) -> String? {
        if line.hasPrefix("✓ ") || line.hasPrefix("✗ ") || line.hasPrefix("run #") { return line }
        guard line.hasPrefix("["), let close = line.firstIndex(of: "]") else { return nil }
        let job = line[line.index(after: line.startIndex)..<close]
        let text = line[line.index(after: close)...].trimmingCharacters(in: .whitespaces)
        let interesting = ["rollout #", "traffic:", "healthy", "promoted", "rolled", "errors:", "latency:", "released ", "requests in", "start ", "stop ", "paused", "did not", "slipway:"]
        guard interesting.contains(where: { text.contains($0) }) else { return nil }
        let shortened = text.count > 220 ? String(text.prefix(217)) + "…" : text
        return "[\(job)] \(shortened)"
    }
}
