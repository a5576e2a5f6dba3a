import ArgumentParser
import Foundation

/// `slipway`: the root command; each verb lives in its own file.
public struct SlipwayCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "slipway",
        abstract: "A deployment pipeline in one binary: build, test, release, deploy.",
        discussion: "Exit codes: 0 success, 1 the pipeline failed, 2 bad input.",
        version: "0.1.0",
        subcommands: [InitCommand.self, ValidateCommand.self, RunCommand.self, HistoryCommand.self, LogsCommand.self, ExplainCommand.self, TestsCommand.self, ArtifactsCommand.self, KeysCommand.self,
                      DeployCommand.self, PromoteCommand.self, AbortCommand.self, PauseCommand.self, ResumeCommand.self, RollbackCommand.self,
                      StatusCommand.self, DownCommand.self, ApproveCommand.self, AgentCommand.self, SampleServiceCommand.self, DemoCommand.self,
                      ServeCommand.self, ProjectCommand.self, TokenCommand.self, TriggerCommand.self, RunnerCommand.self]
    )

    public init() {}

    /// Runs the command line, mapping errors to the documented exit codes.
    public static func start() async {
        // Started with stdin, stdout or stderr closed (a daemon's child, `cmd <&- 2>&-`), the next file this
        // process opens would take that number: SQLite's database as fd 2 would receive error messages.
        for fd in Int32(0)...2 where fcntl(fd, F_GETFD) < 0 && errno == EBADF {
            let null = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY)
            if null >= 0, null != fd {
                dup2(null, fd)
                close(null)
            }
        }
        do {
            let arguments = CommandLine.arguments.dropFirst()
            if arguments.first == "run", let invocation = RunInvocation(fastParsing: arguments.dropFirst()) {
                try await invocation.run()
                // Here and now: returned, the process would end on a dispatch thread made only for that.
                Foundation.exit(0)
            }
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            Terminal.error(error.message)
            Foundation.exit(error.code)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure || code.rawValue == 64 {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// An error that ends the command with a message and an exit code (2 = bad input, 1 = failure).
struct CLIError: Error {
    var message: String
    var code: Int32

    static func badInput(_ message: String) -> CLIError { CLIError(message: message, code: 2) }
    static func failure(_ message: String) -> CLIError { CLIError(message: message, code: 1) }
}
