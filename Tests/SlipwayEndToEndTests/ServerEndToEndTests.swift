#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import SlipwayDeploy
import Testing

/// A real `slipway serve` process, a real git repository, real signed webhooks over HTTP.
struct ServerKit {
    let sandbox: Sandbox
    let data: String
    let secret = "e2e hook secret"

    /// With `SLIPWAY_TEST_POSTGRES=postgres://…` the server keeps its state in a fresh schema of that database
    /// (given once, to `project add`; the data directory remembers it for the other commands and `serve`).
    let database: String?

    init(_ sandbox: Sandbox) {
        self.sandbox = sandbox
        self.data = sandbox.root + "/server"
        database = ProcessInfo.processInfo.environment["SLIPWAY_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 + "?schema=e2e\(getpid())_\(UInt32.random(in: 0...UInt32.max))" }
    }

    func setUp() async throws -> String {
        let added = try await sandbox.slipway(["project", "add", "demo", "--repo", sandbox.repo, "--webhook-secret-from-env", "HOOK_SECRET", "--data", data] + (database.map { ["--database", $0] } ?? []))
        #expect(added.status == 0, "\(added)")
        let token = try await sandbox.slipway("token", "create", "--role", "developer", "--name", "e2e", "--data", data)
        #expect(token.status == 0, "\(token)")
        return token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts the server on a free port and waits until it answers.
    func start(_ extra: [String] = []) async throws -> (Launched, Int) {
        try? FileManager.default.removeItem(atPath: data + "/server.port")
        let server = try sandbox.launch(["serve", "--listen", "127.0.0.1:0", "--data", data] + extra, env: ["HOOK_SECRET": secret])
        try await DeployKit.waitUntil("the server's port file", timeout: 60) {
            (try? String(contentsOfFile: data + "/server.port", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } != nil
        }
        let port = Int(try String(contentsOfFile: data + "/server.port", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))!
        try await DeployKit.waitUntil("the server to answer", timeout: 30) { DeployKit.get(port: port, "/health")?.status == 200 }
        return (server, port)
    }

    /// GitHub's new-branch push payload, for `ref` at `commit` of the sandbox repository.
    func pushPayload(ref: String, commit: String) throws -> Data {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../SlipwayCoreTests/Fixtures/webhooks/github/push-with-new-branch.payload.json").standardizedFileURL
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        object["ref"] = ref
        object["after"] = commit
        if var commits = object["commits"] as? [[String: Any]], !commits.isEmpty {
            commits[0]["id"] = commit
            object["commits"] = commits
        }
        return try JSONSerialization.data(withJSONObject: object)
    }

    func deliver(port: Int, body: Data, delivery: String, event: String = "push", signature: String? = nil) async throws -> SlipwayDeploy.HTTPResponse {
        try await HTTPClient().request(method: .POST, url: "http://127.0.0.1:\(port)/hooks/github?project=demo", headers: [
            ("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery), ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", signature ?? WebhookSignature.header(body: body, secret: secret, provider: .github)),
        ], body: Array(body), timeout: .seconds(10))
    }

    func api(port: Int, token: String, _ path: String, post: Bool = false, body: String? = nil) async throws -> (Int, Any?) {
        let response = try await HTTPClient().request(method: post ? .POST : .GET, url: "http://127.0.0.1:\(port)\(path)",
                                                      headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                                      body: body.map { Array($0.utf8) }, timeout: .seconds(10))
        return (response.status, try? JSONSerialization.jsonObject(with: Data(response.body)))
    }

    /// Waits until request `id` has finished; returns it.
    func finished(port: Int, token: String, request id: Int, timeout: Double = 60) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        try await DeployKit.waitUntil("request \(id) to finish", timeout: timeout) {
            guard let (_, json) = try? await api(port: port, token: token, "/api/requests/\(id)"), let object = json as? [String: Any] else { return false }
            last = object
            return ["success", "failure", "cancelled", "skipped", "error"].contains(object["status"] as? String ?? "")
        }
        return last
    }
}

extension EndToEnd {
    /// Filter: `ServerEndToEnd` (CI runs these a second time on PostgreSQL).
    @Suite("server") struct ServerEndToEnd {
        @Test func serverBuildsASignedPushAtItsCommitOnceAndSkipsWhatOnDoesNotMatch() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            try sandbox.write("slipway.yml", """
                name: served
                on:
                  push:
                    branches: [main]
                jobs:
                  build:
                    steps:
                      - run: echo "$SLIPWAY_COMMIT $SLIPWAY_BRANCH $SLIPWAY_EVENT" >> \(sandbox.outside)/builds
                      - run: echo "hook=${HOOK_SECRET:-hidden}" >> \(sandbox.outside)/environment
                  test:
                    needs: build
                    steps:
                      - run: cat slipway.yml > /dev/null && echo tested >> \(sandbox.outside)/tests
                """)
            try sandbox.commit("served pipeline")
            let commit = try sandbox.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
            let kit = ServerKit(sandbox)
            let token = try await kit.setUp()
            let (server, port) = try await kit.start()
            defer { server.signal(SIGKILL) }

            let body = try kit.pushPayload(ref: "refs/heads/main", commit: commit)
            let bad = try await kit.deliver(port: port, body: body, delivery: "e2e-0", signature: "sha256=" + String(repeating: "0", count: 64))
            #expect(bad.status == 401)
            let first = try await kit.deliver(port: port, body: body, delivery: "e2e-1")
            #expect(first.status == 202, "\(first.text)")
            let id = try #require((try JSONSerialization.jsonObject(with: Data(first.body)) as? [String: Any])?["request"] as? Int)
            let request = try await kit.finished(port: port, token: token, request: id)
            #expect(request["status"] as? String == "success", "\(request)")
            #expect(request["runNumber"] as? Int == 1)
            #expect(sandbox.lines("builds") == ["\(commit) main push"])
            #expect(sandbox.count("tests") == 1)
            #expect(sandbox.lines("environment") == ["hook=hidden"], "the webhook secret must not reach steps")

            let (status, run) = try await kit.api(port: port, token: token, "/api/projects/demo/runs/1")
            #expect(status == 200)
            let jobs = ((run as? [String: Any])?["jobs"] as? [[String: Any]]) ?? []
            #expect(jobs.map { $0["status"] as? String } == ["success", "success"])
            let logs = try await HTTPClient().request(method: .GET, url: "http://127.0.0.1:\(port)/api/projects/demo/runs/1/logs?job=build",
                                                      headers: [("Authorization", "Bearer \(token)")], timeout: .seconds(10))
            #expect(logs.status == 200)
            #expect(!logs.text.contains("tested"))

            // The same delivery again: answered, nothing started twice.
            let again = try await kit.deliver(port: port, body: body, delivery: "e2e-1")
            #expect(again.status == 200)
            #expect(again.text.contains("\"duplicate\":true"))
            try await Task.sleep(for: .seconds(1.5))
            #expect(sandbox.count("builds") == 1)

            // A push to a branch `on:` does not list: recorded as skipped, with the reason.
            try sandbox.git("checkout", "-q", "-b", "feature")
            try sandbox.write("feature.txt", "x")
            try sandbox.commit("feature")
            let featureCommit = try sandbox.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
            let feature = try await kit.deliver(port: port, body: try kit.pushPayload(ref: "refs/heads/feature", commit: featureCommit), delivery: "e2e-2")
            #expect(feature.status == 202)
            let featureID = try #require((try JSONSerialization.jsonObject(with: Data(feature.body)) as? [String: Any])?["request"] as? Int)
            let skipped = try await kit.finished(port: port, token: token, request: featureID)
            #expect(skipped["status"] as? String == "skipped", "\(skipped)")
            #expect((skipped["reason"] as? String ?? "").contains("feature"))
            #expect(sandbox.count("builds") == 1)

            // A commit that is not on the branch it is said to be on is refused (protection rules trust the branch).
            let (_, mismatched) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true,
                                                    body: "{\"branch\": \"main\", \"event\": \"push\", \"commit\": \"\(featureCommit)\"}")
            let mismatchID = try #require((mismatched as? [String: Any])?["id"] as? Int)
            let refused = try await kit.finished(port: port, token: token, request: mismatchID)
            #expect(refused["status"] as? String == "error", "\(refused)")
            #expect((refused["reason"] as? String ?? "").contains("is not on branch main"), "\(refused)")
            #expect(sandbox.count("builds") == 1)

            // The CLI: queue a run of main, follow it, exit with its result; a bad token is refused.
            let triggered = try await sandbox.slipway("trigger", "demo", "--branch", "main", "--event", "push", "--wait",
                                                      "--server", "http://127.0.0.1:\(port)", "--token", token)
            #expect(triggered.status == 0, "\(triggered)")
            #expect(triggered.stdout.contains("success (run #2)"), "\(triggered)")
            #expect(sandbox.count("builds") == 2)
            let unauthorized = try await sandbox.slipway("trigger", "demo", "--server", "http://127.0.0.1:\(port)", "--token", "slw_" + String(repeating: "1", count: 64))
            #expect(unauthorized.status == 1)
            #expect(unauthorized.output.contains("401"), "\(unauthorized)")
        }

        @Test func serverKilledMidRunResumesItOnRestartWithoutRepeatingFinishedJobs() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let number = Processes.uniqueSleep(300)
            try sandbox.write("slipway.yml", """
                name: resumable
                on:
                  manual: {}
                jobs:
                  first:
                    steps:
                      - run: echo first >> \(sandbox.outside)/first
                  second:
                    needs: first
                    steps:
                      - run: echo start >> \(sandbox.outside)/second-start; if [ ! -f \(sandbox.outside)/go ]; then sleep \(number); fi; echo done >> \(sandbox.outside)/second
                """)
            try sandbox.commit("resumable pipeline")
            let kit = ServerKit(sandbox)
            let token = try await kit.setUp()
            var (server, port) = try await kit.start()
            let (status, queued) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"main\"}")
            #expect(status == 202)
            let id = try #require((queued as? [String: Any])?["id"] as? Int)
            try await DeployKit.waitUntil("the second job to start", timeout: 60) { sandbox.count("second-start") == 1 }
            server.signal(SIGKILL)
            _ = try? await server.wait(timeout: 10)
            // The next attempt of `second` must not wait for the sleep.
            _ = FileManager.default.createFile(atPath: sandbox.outside + "/go", contents: nil)

            (server, port) = try await kit.start()
            defer { server.signal(SIGKILL) }
            let request = try await kit.finished(port: port, token: token, request: id)
            #expect(request["status"] as? String == "success", "\(request)")
            #expect(request["runNumber"] as? Int == 1, "the interrupted run continues; no new run")
            #expect(sandbox.count("first") == 1, "a finished job is not run again")
            #expect(sandbox.count("second-start") == 2)
            #expect(sandbox.count("second") == 1)
            #expect(await Processes.survivors(number).isEmpty, "the interrupted step's process was ended")
            let (_, run) = try await kit.api(port: port, token: token, "/api/projects/demo/runs/1")
            let jobs = ((run as? [String: Any])?["jobs"] as? [[String: Any]]) ?? []
            #expect(jobs.first(where: { $0["key"] as? String == "second" })?["attempts"] as? Int == 2)
        }

        @Test func sigtermLetsRunsFinishWithinTheGraceAndLeavesLongerOnesToTheNextStart() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let out = sandbox.outside
            try sandbox.write("slipway.yml", """
                name: graceful
                on:
                  manual: {}
                jobs:
                  slow:
                    steps:
                      - run: echo start >> \(out)/start-$SLIPWAY_BRANCH; sleep 1.5; echo done >> \(out)/done-$SLIPWAY_BRANCH
                  gated:
                    needs: slow
                    steps:
                      - run: for i in $(seq 1 300); do [ -f \(out)/go-$SLIPWAY_BRANCH ] && break; sleep 0.1; done; echo gated >> \(out)/gated-$SLIPWAY_BRANCH
                """)
            try sandbox.commit("graceful pipeline")
            try sandbox.git("branch", "second")
            _ = FileManager.default.createFile(atPath: out + "/go-main", contents: nil)
            let kit = ServerKit(sandbox)
            let token = try await kit.setUp()

            // Enough grace: the run in progress finishes, then the server exits 0.
            var (server, port) = try await kit.start(["--grace", "30s"])
            let (_, first) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"main\"}")
            let firstID = try #require((first as? [String: Any])?["id"] as? Int)
            try await DeployKit.waitUntil("the slow step to start", timeout: 60) { sandbox.count("start-main") == 1 }
            server.signal(SIGTERM)
            let stopped = try await server.wait(timeout: 30)
            #expect(stopped.status == 0, "\(stopped)")
            #expect(sandbox.count("done-main") == 1)
            #expect(sandbox.count("gated-main") == 1, "the whole run finished before the server exited")

            // Too little grace: the server exits with the run in progress; the next start finishes it.
            (server, port) = try await kit.start(["--grace", "1s"])
            let done = try await kit.finished(port: port, token: token, request: firstID)
            #expect(done["status"] as? String == "success")
            let (_, second) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"second\"}")
            let secondID = try #require((second as? [String: Any])?["id"] as? Int)
            try await DeployKit.waitUntil("the slow step of the second run to finish", timeout: 60) { sandbox.count("done-second") == 1 }
            let stopping = Date()
            server.signal(SIGTERM)
            let exited = try await server.wait(timeout: 30)
            #expect(exited.status == 0, "\(exited)")
            #expect(Date().timeIntervalSince(stopping) < 10)
            #expect(sandbox.count("gated-second") == 0)
            _ = FileManager.default.createFile(atPath: out + "/go-second", contents: nil)
            (server, port) = try await kit.start()
            defer { server.signal(SIGKILL) }
            let resumed = try await kit.finished(port: port, token: token, request: secondID)
            #expect(resumed["status"] as? String == "success", "\(resumed)")
            #expect(sandbox.count("start-second") == 1, "the finished job is not run again")
            #expect(sandbox.count("gated-second") == 1)
        }

        @Test func concurrencyGroupCancelsSupersededRunsAndKeepsOtherGroups() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let out = sandbox.outside
            try sandbox.write("slipway.yml", """
                name: grouped
                on:
                  manual: {}
                concurrency: { group: "deploy-${{ branch }}", cancel-in-progress: true }
                jobs:
                  slow:
                    steps:
                      - run: echo "$SLIPWAY_BRANCH" >> \(out)/started; for i in $(seq 1 300); do [ -f \(out)/go ] && break; sleep 0.1; done; echo "$SLIPWAY_BRANCH" >> \(out)/finished
                """)
            try sandbox.commit("grouped pipeline")
            try sandbox.git("branch", "other")
            let kit = ServerKit(sandbox)
            let token = try await kit.setUp()
            let (server, port) = try await kit.start()
            defer { server.signal(SIGKILL) }
            func queue(_ branch: String) async throws -> Int {
                let (status, body) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"\(branch)\"}")
                #expect(status == 202)
                return try #require((body as? [String: Any])?["id"] as? Int)
            }
            let a = try await queue("main")
            try await DeployKit.waitUntil("the first run to start", timeout: 60) { sandbox.count("started") == 1 }
            let b = try await queue("main")
            let c = try await queue("main")
            let d = try await queue("other")
            let first = try await kit.finished(port: port, token: token, request: a)
            #expect(first["status"] as? String == "cancelled", "\(first)")
            #expect((first["reason"] as? String ?? "").contains("superseded by request"), "\(first)")
            _ = FileManager.default.createFile(atPath: out + "/go", contents: nil)
            let second = try await kit.finished(port: port, token: token, request: b)
            #expect(second["status"] as? String == "cancelled", "\(second)")
            let third = try await kit.finished(port: port, token: token, request: c)
            #expect(third["status"] as? String == "success", "\(third)")
            let other = try await kit.finished(port: port, token: token, request: d)
            #expect(other["status"] as? String == "success", "another group is not touched: \(other)")
            #expect(sandbox.lines("finished").sorted() == ["main", "other"])
        }

        @Test func cliFollowsLogsAndListsRunsOfAServer() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            try sandbox.write("slipway.yml", """
                name: chatty
                on:
                  manual: {}
                jobs:
                  talk:
                    steps:
                      - run: for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.25; done; echo oops >&2
                """)
            try sandbox.commit("chatty pipeline")
            let kit = ServerKit(sandbox)
            let token = try await kit.setUp()
            let (server, port) = try await kit.start()
            defer { server.signal(SIGKILL) }
            let remote = ["--server", "http://127.0.0.1:\(port)", "--token", token, "--project", "demo"]
            let (_, queued) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"main\"}")
            let id = try #require((queued as? [String: Any])?["id"] as? Int)
            try await DeployKit.waitUntil("the run to start", timeout: 30) {
                guard let (_, json) = try? await kit.api(port: port, token: token, "/api/requests/\(id)") else { return false }
                return (json as? [String: Any])?["runNumber"] as? Int == 1
            }
            // Follows the run while it is going: every line, in order, then the result.
            let followed = try await sandbox.slipway(["logs", "1", "-f"] + remote, timeout: 30)
            #expect(followed.status == 0, "\(followed)")
            let lines = followed.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("line ") }
            #expect(lines == (1...6).map { "line \($0)" }, "\(followed)")
            #expect(followed.stdout.contains("oops"))
            #expect(followed.stdout.contains("run #1 success"))
            let history = try await sandbox.slipway(["history"] + remote)
            #expect(history.status == 0, "\(history)")
            #expect(history.stdout.contains("#1") && history.stdout.contains("success"), "\(history)")
            let logs = try await sandbox.slipway(["logs", "1", "talk"] + remote)
            #expect(logs.stdout.contains("line 6"), "\(logs)")
            let missing = try await sandbox.slipway(["logs", "9"] + remote)
            #expect(missing.status == 2, "\(missing)")
            // `explain` and `status` against the server say what they say locally.
            let explained = try await sandbox.slipway(["explain", "talk"] + remote)
            #expect(explained.status == 0, "\(explained)")
            #expect(explained.stdout.contains("talk in run #1: success"), "\(explained)")
            #expect(explained.stdout.contains("why: all steps succeeded"), "\(explained)")
            #expect(explained.stdout.contains("cache: not used"), "\(explained)")
            let unknown = try await sandbox.slipway(["explain", "nope", "--run", "1"] + remote)
            #expect(unknown.status == 2, "\(unknown)")
            #expect(unknown.output.contains("no run has a job 'nope'"), "\(unknown)")
            let status = try await sandbox.slipway(["status", "--json"] + remote)
            #expect(status.status == 0, "\(status)")
            #expect(status.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]" || status.stdout.contains("[]"), "\(status)")
            let plain = try await sandbox.slipway(["status"] + remote)
            #expect(plain.stdout.contains("nothing deployed yet"), "\(plain)")
        }
    }
}
