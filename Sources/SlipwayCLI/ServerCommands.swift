import ArgumentParser
import Foundation
import SlipwayCore
import SlipwayDeploy
import SlipwayServer
import SlipwayStore

/// Options shared by the commands that work on a server's data directory.
struct ServerDataOptions: ParsableArguments {
    @Option(name: .customLong("data"), help: "The server's data directory (default: $SLIPWAY_DATA or ./.slipway-server).")
    var data: String?

    var directory: String {
        let value = data ?? ProcessInfo.processInfo.environment["SLIPWAY_DATA"] ?? ".slipway-server"
        return URL(fileURLWithPath: value).standardizedFileURL.path
    }

    @Option(help: "State database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME] (default: $SLIPWAY_DATABASE, else what `serve --database` last used with this data directory, else server.db in it). A password can also come from $PGPASSWORD.")
    var database: String?

    /// The location given by `--database` or `$SLIPWAY_DATABASE`; nil: the data directory decides.
    func location() throws -> DatabaseLocation? {
        guard let text = database ?? ProcessInfo.processInfo.environment["SLIPWAY_DATABASE"] else { return nil }
        do { return try DatabaseLocation.parse(text) } catch { throw CLIError.badInput("--database: \(error.message)") }
    }

    func openStore() throws -> ServerStore {
        let location = try location()
        do { return try SlipwayServer.openStore(ServerLayout(root: directory), database: location) } catch { throw CLIError.failure(error.message) }
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the Slipway server: webhooks, the run queue and the API.",
        discussion: "Stops gracefully on SIGTERM or Ctrl-C. After a crash, the next start resumes interrupted runs.")

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free one).")
    var listen = "127.0.0.1:8400"

    @OptionGroup var data: ServerDataOptions

    @Option(help: "Runs executed at once (default: the number of cores, at least 2).")
    var capacity: Int?

    @Option(help: "On SIGTERM, how long runs in progress may go on before the server exits anyway (they resume on the next start).")
    var grace = "30s"

    @Option(help: "Labels of the server's own executor, comma-separated: a job whose `runs-on` they cover runs here unless a connected runner matches it.")
    var labels = "local,linux"

    @Option(name: .customLong("runner-timeout"), help: "A runner silent this long is lost and its jobs are queued again.")
    var runnerTimeout = "5s"

    func validate() throws {
        guard Self.address(listen) != nil else { throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:8400") }
        if let capacity, capacity < 1 { throw ValidationError("--capacity must be at least 1") }
        guard DurationParser.parse(grace) != nil else { throw ValidationError("--grace takes a duration such as 30s or 2m") }
        guard let timeout = DurationParser.parse(runnerTimeout), timeout >= .seconds(2) else {
            // Runners heartbeat every second: a shorter timeout would take live runners for lost ones.
            throw ValidationError("--runner-timeout takes a duration of at least 2s, such as 5s")
        }
    }

    static func address(_ value: String) -> (String, Int)? {
        guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        let host = String(value[..<colon])
        return host.isEmpty ? nil : (host, port)
    }

    func run() async throws {
        let (host, port) = Self.address(listen)!
        let directory = data.directory
        var server = SlipwayServer(host: host, port: port, dataDirectory: directory, capacity: capacity ?? max(2, ProcessInfo.processInfo.activeProcessorCount),
                                   grace: DurationParser.parse(grace)!)
        server.database = try data.location()
        server.runners = .init(heartbeatTimeout: DurationParser.parse(runnerTimeout)!,
                               localLabels: Set(labels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }))
        do {
            try await server.run(onListening: { bound in
                // The port file lets scripts (and tests) find a server started with port 0.
                try? Data("\(bound)\n".utf8).write(to: URL(fileURLWithPath: directory + "/server.port"))
                Terminal.print("slipway server listening on http://\(host):\(bound) (data: \(directory))")
            }, onGraceExpired: { left in
                // Everything is in the database already: exiting now is as safe as a crash, and the
                // next start resumes these runs.
                // At once, before the engine could record the killed steps as failures.
                FileHandle.standardError.write(Data("grace period over with \(left) run(s) in progress; they resume on the next start\n".utf8))
                _exit(0)
            })
        } catch let error as ServerError {
            throw CLIError.failure(error.message)
        }
        Terminal.print("slipway server stopped")
    }
}

struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Add and list the server's projects.",
        subcommands: [ProjectAddCommand.self, ProjectListCommand.self])
}

struct ProjectAddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a project (a repository the server builds).")

    @Argument(help: "Project name.") var name: String
    @Option(help: "Repository URL or local path.") var repo: String
    @Option(help: "Pipeline file in the repository.") var file = "slipway.yml"
    @Option(name: .customLong("webhook-secret-from-env"), help: "Environment variable of `slipway serve` holding the webhook secret.")
    var secretVariable: String?
    @Option(help: "Also poll the repository's branches with `git ls-remote` this often, e.g. 30s.") var poll: String?
    @OptionGroup var data: ServerDataOptions

    func validate() throws {
        if let poll {
            guard let interval = DurationParser.parse(poll), interval >= .seconds(1) else {
                throw ValidationError("--poll takes a duration of at least 1s, e.g. 30s")
            }
        }
        guard !name.isEmpty, name.count <= 100, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), !name.hasPrefix(".") else {
            throw ValidationError("project names use letters, digits, '-', '_' and '.' (not first), up to 100 characters")
        }
        if let secretVariable, secretVariable.isEmpty || !secretVariable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            throw ValidationError("--webhook-secret-from-env takes an environment variable name, e.g. SLIPWAY_HOOK_SECRET")
        }
        guard !file.isEmpty, !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
            throw ValidationError("--file must be a path inside the repository")
        }
    }

    func run() throws {
        let store = try data.openStore()
        var repository = repo
        // A local path is stored absolute, so the server finds it from any directory.
        if !repo.contains("://"), !repo.contains("@"), FileManager.default.fileExists(atPath: repo) {
            repository = URL(fileURLWithPath: repo).standardizedFileURL.path
        }
        do {
            let pollSeconds = poll.flatMap(DurationParser.parse).map { Int($0.components.seconds) }
            try store.addProject(ProjectRecord(name: name, repository: repository, file: file, secretVariable: secretVariable, pollSeconds: pollSeconds))
        } catch {
            throw CLIError.badInput(error.message)
        }
        Terminal.print("added project \(name): \(repository) (\(file))")
        if let secretVariable {
            Terminal.print("webhooks: POST /hooks/github or /hooks/gitea, signed with the secret in $\(secretVariable) of `slipway serve`")
        }
    }
}

struct ProjectListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the server's projects.")
    @OptionGroup var data: ServerDataOptions

    func run() throws {
        let store = try data.openStore()
        let projects: [ProjectRecord]
        do { projects = try store.projects() } catch { throw CLIError.failure(error.message) }
        if projects.isEmpty { Terminal.print("no projects; add one with `slipway project add NAME --repo URL`") }
        for project in projects { Terminal.print("\(project.name)\t\(project.repository)\t\(project.file)") }
    }
}

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create and list API tokens.",
        subcommands: [TokenCreateCommand.self, TokenListCommand.self])
}

struct TokenCreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an API token; it is shown once and stored only as a hash.")

    @Option(help: "viewer, developer, deployer, admin or runner.") var role: String
    @Option(help: "A name to recognise the token by.") var name = "token"
    @OptionGroup var data: ServerDataOptions

    func validate() throws {
        guard TokenRole(rawValue: role) != nil else {
            throw ValidationError("--role must be one of \(TokenRole.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let store = try data.openStore()
        do {
            let (record, secret) = try store.createToken(name: name, role: TokenRole(rawValue: role)!)
            // The secret goes to stdout alone, so `TOKEN=$(slipway token create …)` works.
            print(secret)
            Terminal.note("created token #\(record.id) '\(record.name)' with role \(record.role.rawValue); it is not shown again")
        } catch {
            throw CLIError.failure(error.message)
        }
    }
}

struct TokenListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List API tokens (names and roles, never the secrets).")
    @OptionGroup var data: ServerDataOptions

    func run() throws {
        let store = try data.openStore()
        do {
            for token in try store.tokens() { Terminal.print("#\(token.id)\t\(token.name)\t\(token.role.rawValue)") }
        } catch { throw CLIError.failure(error.message) }
    }
}

/// Options for commands that talk to a running server.
struct ServerClientOptions: ParsableArguments {
    @Option(help: "Server URL (default: $SLIPWAY_SERVER).") var server: String?
    @Option(help: "API token (default: $SLIPWAY_TOKEN).") var token: String?

    func resolved() throws -> (String, String) {
        let environment = ProcessInfo.processInfo.environment
        guard var url = server ?? environment["SLIPWAY_SERVER"], !url.isEmpty else {
            throw CLIError.badInput("no server: pass --server URL or set SLIPWAY_SERVER")
        }
        while url.hasSuffix("/") { url.removeLast() }
        guard let token = token ?? environment["SLIPWAY_TOKEN"], !token.isEmpty else {
            throw CLIError.badInput("no token: pass --token or set SLIPWAY_TOKEN (create one with `slipway token create`)")
        }
        return (url, token)
    }

    /// The API's error message, or the status.
    static func failure(_ response: SlipwayDeploy.HTTPResponse) -> String {
        if let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
           let error = object["error"] as? [String: Any], let message = error["message"] as? String {
            return "server answered \(response.status): \(message)"
        }
        return "server answered \(response.status)"
    }
}

struct TriggerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trigger", abstract: "Queue a run of a project on a server.")

    @Argument(help: "Project name.") var project: String
    @Option(help: "Branch to build (default: the repository's HEAD).") var branch: String?
    @Option(help: "Exact commit to build.") var commit: String?
    @Option(help: "Event for `on:` (default: manual).") var event: String?
    @Option(name: .customLong("input"), help: "Manual input NAME=VALUE (repeatable).") var inputs: [String] = []
    @Flag(help: "Wait for the run to finish and exit with its result.") var wait = false
    @OptionGroup var client: ServerClientOptions

    func run() async throws {
        let (url, token) = try client.resolved()
        var body: [String: Any] = [:]
        if let branch { body["branch"] = branch }
        if let commit { body["commit"] = commit }
        if let event { body["event"] = event }
        let inputValues = try RunInvocation.keyValues(inputs, option: "--input")
        if !inputValues.isEmpty { body["inputs"] = inputValues }
        let http = HTTPClient()
        let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
        let encodedName = project.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? project
        let response: SlipwayDeploy.HTTPResponse
        do {
            response = try await http.request(method: .POST, url: "\(url)/api/projects/\(encodedName)/requests", headers: headers,
                                              body: Array(try JSONSerialization.data(withJSONObject: body)), timeout: .seconds(10))
        } catch { throw CLIError.failure("cannot reach \(url): \(error)") }
        guard response.status == 202, let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let id = object["id"] as? Int else {
            throw CLIError(message: ServerClientOptions.failure(response), code: response.status == 400 || response.status == 404 ? 2 : 1)
        }
        Terminal.print("queued request \(id) for \(project)")
        guard wait else { return }
        var failures = 0
        while true {
            try await Task.sleep(for: .milliseconds(300))
            let reply: SlipwayDeploy.HTTPResponse
            do { reply = try await http.get("\(url)/api/requests/\(id)", headers: headers) } catch {
                failures += 1
                if failures >= 20 { throw CLIError.failure("lost the server at \(url): \(error)") }
                continue
            }
            guard reply.status == 200 else { throw CLIError.failure(ServerClientOptions.failure(reply)) }
            guard let state = try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any], let status = state["status"] as? String else {
                throw CLIError.failure("the server's answer about request \(id) is not what this client understands")
            }
            if RunRequestRecord.finalStatuses.contains(status) {
                let number = (state["runNumber"] as? Int).map { " (run #\($0))" } ?? ""
                Terminal.print("request \(id): \(status)\(number)" + ((state["reason"] as? String).map { ": \($0)" } ?? ""))
                if status != "success" { throw ExitCode(1) }
                return
            }
        }
    }
}
