#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SlipwayEngine
import SlipwayDeploy

/// `--server`/`--token`/`--project` for commands that can read from a server instead of the local `.slipway/`.
struct RemoteOptions: ParsableArguments {
    @Option(help: "Read from this Slipway server instead of the local state (default: $SLIPWAY_SERVER).") var server: String?
    @Option(help: "API token for --server (default: $SLIPWAY_TOKEN).") var token: String?
    @Option(name: .customLong("project"), help: "The server's project (default: $SLIPWAY_PROJECT).") var projectName: String?

    /// (server URL, token, project) when a server is set, nil for local state.
    func resolved() throws -> (url: String, token: String, project: String)? {
        let environment = ProcessInfo.processInfo.environment
        guard let server = server ?? environment["SLIPWAY_SERVER"], !server.isEmpty else { return nil }
        let (url, token) = try ServerClientOptions(server: server, token: token).resolved()
        guard let project = projectName ?? environment["SLIPWAY_PROJECT"], !project.isEmpty else {
            throw CLIError.badInput("with --server, name the project: --project NAME or SLIPWAY_PROJECT")
        }
        return (url, token, project.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? project)
    }

    static func get(_ url: String, token: String) async throws -> SlipwayDeploy.HTTPResponse {
        let response: SlipwayDeploy.HTTPResponse
        do {
            response = try await HTTPClient().get(url, headers: [("Authorization", "Bearer \(token)")], timeout: .seconds(30))
        } catch { throw CLIError.failure("cannot reach \(url): \(error)") }
        guard response.status == 200 else {
            throw CLIError(message: ServerClientOptions.failure(response), code: response.status == 404 || response.status == 400 ? 2 : 1)
        }
        return response
    }
}

extension ServerClientOptions {
    init(server: String?, token: String?) {
        self.init()
        self.server = server
        self.token = token
    }
}

enum RemoteExplain {
    static func fetch(url: String, token: String, project: String, subject: String, run: Int64?, rollout: Int64?) async throws -> [ExplainLine] {
        var path = "\(url)/api/projects/\(project)/explain/\(subject.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? subject)"
        let query = [run.map { "run=\($0)" }, rollout.map { "rollout=\($0)" }].compactMap { $0 }
        if !query.isEmpty { path += "?" + query.joined(separator: "&") }
        let response = try await RemoteOptions.get(path, token: token)
        struct Explanation: Decodable { var lines: [ExplainLine] }
        guard let explanation = try? JSONDecoder().decode(Explanation.self, from: Data(response.body)) else {
            throw CLIError.failure("the server's answer is not an explanation")
        }
        return explanation.lines
    }
}

enum RemoteStatus {
    static func fetch(url: String, token: String, project: String, environment: String?) async throws -> [EnvironmentView] {
        let query = environment.map { "?environment=" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0) } ?? ""
        let response = try await RemoteOptions.get("\(url)/api/projects/\(project)/environments\(query)", token: token)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let views = try? decoder.decode([EnvironmentView].self, from: Data(response.body)) else {
            throw CLIError.failure("the server's answer is not a list of environments")
        }
        return views
    }
}

enum RemoteHistory {
    static func list(url: String, token: String, project: String, limit: Int) async throws {
        let response = try await RemoteOptions.get("\(url)/api/projects/\(project)/runs?limit=\(limit)", token: token)
        guard let runs = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] else {
            throw CLIError.failure("the server's answer is not a list of runs")
        }
        if runs.isEmpty { Terminal.print("no runs yet") }
        Terminal.print(Terminal.bold("RUN    STATUS       EVENT         BRANCH           COMMIT      STARTED"))
        for run in runs {
            let number = run["number"] as? Int ?? 0
            let status = run["status"] as? String ?? "?"
            let event = run["event"] as? String ?? "?"
            let branch = run["branch"] as? String ?? "-"
            let commit = (run["commit"] as? String).map { String($0.prefix(10)) } ?? "-"
            let created = run["createdAt"] as? String ?? ""
            Terminal.print("#\(String(number).padding(toLength: 5, withPad: " ", startingAt: 0)) \(status.padding(toLength: 12, withPad: " ", startingAt: 0)) \(event.padding(toLength: 13, withPad: " ", startingAt: 0)) \(branch.padding(toLength: 16, withPad: " ", startingAt: 0)) \(commit.padding(toLength: 11, withPad: " ", startingAt: 0)) \(created)")
        }
    }
}

enum RemoteLogs {
    static func show(url: String, token: String, project: String, run: Int64?, job: String?, follow: Bool) async throws {
        var number = run
        if number == nil {
            let response = try await RemoteOptions.get("\(url)/api/projects/\(project)/runs?limit=1", token: token)
            number = ((try? JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]])?.first?["number"] as? Int).map(Int64.init)
            guard number != nil else { throw CLIError.badInput("project has no runs yet") }
        }
        var path = "/api/projects/\(project)/runs/\(number!)/logs"
        var query: [String] = []
        if let job { query.append("job=" + (job.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? job)) }
        if !follow {
            if !query.isEmpty { path += "?" + query.joined(separator: "&") }
            let response = try await RemoteOptions.get(url + path, token: token)
            Terminal.write(response.body)
            return
        }
        query.append("follow=1")
        path += "?" + query.joined(separator: "&")
        var header = ""
        let status = try EventStreamReader.read(url: url, path: path, token: token) { event, data in
            guard event == "log", let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else { return }
            let step = "── \(object["job"] as? String ?? "?") · attempt \(object["attempt"] as? Int ?? 0) · \(object["step"] as? String ?? "?")"
            if step != header {
                Terminal.print(Terminal.bold(step))
                header = step
            }
            let text = object["text"] as? String ?? ""
            Terminal.print(object["stream"] as? String == "e" ? Terminal.yellow(text) : text)
        }
        Terminal.print(Terminal.dim("run #\(number!) \(status)"))
        if status != "success" { throw ExitCode(1) }
    }
}

/// A small blocking reader of a Server-Sent Events response (HTTP/1.1, chunked or not) over a plain
/// socket: the CLI's client reads whole bodies, and a followed log never ends by itself.
enum EventStreamReader {
    /// Calls `onEvent(event, data)` for each event until the `end` event; returns its data's `status`.
    static func read(url: String, path: String, token: String, onEvent: (String, String) -> Void) throws -> String {
        guard let target = HTTPClient.Target(url: url + path) else { throw CLIError.badInput("bad server URL \(url)") }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(target.host, String(target.port), &hints, &info) == 0, let first = info else {
            throw CLIError.failure("cannot resolve \(target.host)")
        }
        defer { freeaddrinfo(info) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0, connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            if fd >= 0 { close(fd) }
            throw CLIError.failure("cannot connect to \(url)")
        }
        defer { close(fd) }
        let request = "GET \(path) HTTP/1.1\r\nHost: \(target.host):\(target.port)\r\nAuthorization: Bearer \(token)\r\nAccept: text/event-stream\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }

        var buffer = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 16_384)
        func fill() throws {
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { throw CLIError.failure("the server closed the log stream") }
            buffer.append(contentsOf: chunk[0..<n])
        }
        func line() throws -> String {
            while true {
                if let index = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let text = String(decoding: buffer[..<index], as: UTF8.self)
                    buffer.removeSubrange(...index)
                    return text.hasSuffix("\r") ? String(text.dropLast()) : text
                }
                try fill()
            }
        }
        let statusLine = try line()
        var chunked = false
        while true {
            let header = try line()
            if header.isEmpty { break }
            if header.lowercased().hasPrefix("transfer-encoding:"), header.lowercased().contains("chunked") { chunked = true }
        }
        guard statusLine.contains(" 200") else {
            throw CLIError(message: "server answered \(statusLine.split(separator: " ").dropFirst().joined(separator: " "))", code: statusLine.contains(" 404") ? 2 : 1)
        }
        // The body as a stream of bytes, chunk headers removed.
        var body = [UInt8]()
        func more() throws {
            if !chunked {
                if buffer.isEmpty { try fill() }
                body.append(contentsOf: buffer)
                buffer.removeAll()
                return
            }
            let size = Int(try line().split(separator: ";").first ?? "", radix: 16) ?? 0
            guard size > 0 else { throw CLIError.failure("the log stream ended early") }
            while buffer.count < size + 2 { try fill() }
            body.append(contentsOf: buffer[0..<size])
            buffer.removeSubrange(0..<(size + 2))
        }
        while true {
            guard let end = body.firstRange(of: [UInt8(ascii: "\n"), UInt8(ascii: "\n")]) else {
                try more()
                continue
            }
            let block = String(decoding: body[..<end.lowerBound], as: UTF8.self)
            body.removeSubrange(..<end.upperBound)
            var event = "message", data = ""
            for field in block.split(separator: "\n") {
                if field.hasPrefix("event: ") { event = String(field.dropFirst(7)) }
                if field.hasPrefix("data: ") { data += (data.isEmpty ? "" : "\n") + field.dropFirst(6) }
            }
            if event == "end" {
                return ((try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any])?["status"] as? String ?? "?"
            }
            onEvent(event, data)
        }
    }
}
