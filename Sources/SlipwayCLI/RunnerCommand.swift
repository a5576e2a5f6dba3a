import ArgumentParser
import Foundation
import SlipwayEngine
import SlipwayRunner

/// `slipway runner`: a remote runner for a `slipway serve` server.
struct RunnerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Run jobs for a server: lease jobs whose `runs-on` labels this runner has, run them, report back.",
        discussion: "Needs a token with role runner (`slipway token create NAME --role runner`). Stops on SIGTERM or Ctrl-C; the server queues its unfinished jobs again.")

    @OptionGroup var client: ServerClientOptions
    @Option(help: "Labels, comma-separated; a job runs here when its `runs-on` is a subset of them.") var labels = "linux"
    @Option(help: "Jobs run at once.") var capacity = 1
    @Option(help: "Name shown on the server (default: HOSTNAME-PID).") var name: String?
    @Option(help: "Work directory for sources and workspaces, one runner each (default: ./.slipway-runner/NAME, or HOSTNAME without --name).") var work: String?

    func validate() throws {
        guard (1...256).contains(capacity) else { throw ValidationError("--capacity must be between 1 and 256") }
        if let name, !RunnerProgress.isValidName(name) { throw ValidationError("--name takes 1–100 letters, digits, '.', '_' or '-'") }
        for label in labelList where !RunnerProgress.isValidName(label) { throw ValidationError("label '\(label)': use letters, digits, '.', '_' or '-'") }
    }

    var labelList: [String] { labels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

    func run() async throws {
        let (url, token) = try client.resolved()
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "runner"
        let runnerName = name ?? String("\(host)-\(getpid())".map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "-" })
        // Per host by default, so a restarted runner finds (and ends) what its previous process left.
        let directory = URL(fileURLWithPath: work ?? ".slipway-runner/\(name ?? host)").standardizedFileURL.path
        let agent = RunnerAgent(configuration: .init(server: url, token: token, name: runnerName, labels: labelList, capacity: capacity, workDirectory: directory),
                                log: { Terminal.print($0) })
        do { try await agent.run() } catch let error as CustomStringConvertible { throw CLIError.failure(error.description) }
    }
}
