#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SlipwayCore
import SlipwayDeploy
import Testing

/// A real server and two real `slipway runner` processes over HTTP on loopback.
struct RunnerKit {
    let kit: ServerKit
    let sandbox: Sandbox
    let port: Int
    let runnerToken: String

    static func start(_ sandbox: Sandbox, timeout: String = "2s") async throws -> (RunnerKit, token: String, server: Launched) {
        let kit = ServerKit(sandbox)
        let token = try await kit.setUp()
        let created = try await sandbox.slipway("token", "create", "--role", "runner", "--name", "runners", "--data", kit.data)
        #expect(created.status == 0, "\(created)")
        let (server, port) = try await kit.start(["--runner-timeout", timeout])
        return (RunnerKit(kit: kit, sandbox: sandbox, port: port, runnerToken: created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), token, server)
    }

    func runner(_ name: String, labels: String = "e2e,linux") throws -> Launched {
        try sandbox.launch(["runner", "--server", "http://127.0.0.1:\(port)", "--token", runnerToken, "--labels", labels, "--name", name,
                            "--work", sandbox.root + "/runner-" + name])
    }

    /// Waits until the server lists these runners online.
    func waitOnline(_ names: [String], token: String) async throws {
        try await DeployKit.waitUntil("runners \(names) online", timeout: 60) {
            guard let (_, json) = try? await kit.api(port: port, token: token, "/api/runners"),
                  let runners = (json as? [String: Any])?["runners"] as? [[String: Any]] else { return false }
            let online = Set(runners.filter { $0["online"] as? Bool == true }.compactMap { $0["name"] as? String })
            return online.isSuperset(of: names)
        }
    }

    func queue(token: String) async throws -> Int {
        let (status, queued) = try await kit.api(port: port, token: token, "/api/projects/demo/requests", post: true, body: "{\"branch\": \"main\"}")
        #expect(status == 202)
        return try #require((queued as? [String: Any])?["id"] as? Int)
    }

    func job(_ key: String, token: String) async throws -> [String: Any] {
        let (_, run) = try await kit.api(port: port, token: token, "/api/projects/demo/runs/1")
        let jobs = ((run as? [String: Any])?["jobs"] as? [[String: Any]]) ?? []
        return jobs.first { $0["key"] as? String == key } ?? [:]
    }

    func text(_ path: String, token: String) async throws -> String {
        try await HTTPClient().request(method: .GET, url: "http://127.0.0.1:\(port)\(path)", headers: [("Authorization", "Bearer \(token)")], timeout: .seconds(10)).text
    }
}

extension EndToEnd {
    static func remotePipeline(_ sandbox: Sandbox, sleep number: String) -> String {
        """
        name: remote
        on:
          manual: {}
        jobs:
          slow:
            runs-on: [e2e]
            artifacts: [out/]
            outputs: [who]
            steps:
              - run: echo "$SLIPWAY_RUNNER" >> \(sandbox.outside)/slow-start; echo "who=$SLIPWAY_RUNNER" >> "$SLIPWAY_OUTPUT"
              - run: mkdir -p out && echo "built by $SLIPWAY_RUNNER" > out/built.txt && echo "logged by $SLIPWAY_RUNNER"; if [ ! -f \(sandbox.outside)/go ]; then sleep \(number); fi
          after:
            needs: slow
            runs-on: [e2e]
            steps:
              - run: cat out/built.txt; echo "after on $SLIPWAY_RUNNER, slow by ${{ needs.slow.outputs.who }}" >> \(sandbox.outside)/after
          here:
            needs: after
            steps:
              - run: echo "on the server" >> \(sandbox.outside)/here
        """
    }

    /// Filter: `RunnerEndToEnd` (CI runs these a second time on PostgreSQL).
    @Suite("remote runners") struct RunnerEndToEnd {
        @Test func twoRunnersShareTheJobsAndAKilledRunnersJobIsQueuedAgainOnTheOther() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let number = Processes.uniqueSleep(300)
            defer { Processes.killAll(number) }
            try sandbox.write("slipway.yml", EndToEnd.remotePipeline(sandbox, sleep: number))
            try sandbox.commit("remote pipeline")
            let (runners, token, server) = try await RunnerKit.start(sandbox)
            defer { server.signal(SIGKILL) }
            let r1 = try runners.runner("r1"), r2 = try runners.runner("r2")
            defer { r1.signal(SIGKILL); r2.signal(SIGKILL) }
            try await runners.waitOnline(["r1", "r2"], token: token)

            let id = try await runners.queue(token: token)
            try await DeployKit.waitUntil("the slow job to start on a runner", timeout: 60) { sandbox.count("slow-start") == 1 }
            let victimName = sandbox.lines("slow-start")[0]
            let survivorName = victimName == "r1" ? "r2" : "r1"
            #expect(["r1", "r2"].contains(victimName))
            // Its log reaches the server while the step still runs.
            try await DeployKit.waitUntil("the running step's log on the server", timeout: 30) {
                (try? await runners.text("/api/projects/demo/runs/1/logs?job=slow", token: token))?.contains("logged by \(victimName)") == true
            }
            let killedAt = Date()
            (victimName == "r1" ? r1 : r2).signal(SIGKILL)
            _ = FileManager.default.createFile(atPath: sandbox.outside + "/go", contents: nil)

            let request = try await runners.kit.finished(port: runners.port, token: token, request: id, timeout: 90)
            #expect(request["status"] as? String == "success", "\(request)")
            #expect(sandbox.lines("slow-start") == [victimName, survivorName], "attempt 2 ran on the other runner")
            #expect(sandbox.lines("after") == ["after on \(survivorName), slow by \(survivorName)"])
            #expect(sandbox.count("here") == 1, "a job without runs-on ran on the server")
            #expect(!FileManager.default.fileExists(atPath: runners.kit.data + "/projects/demo/state/runs/1/source.tar"), "the source archive is gone with the run")
            #expect(FileManager.default.fileExists(atPath: runners.kit.data + "/projects/demo/state/runs/1"), "the run itself stays")
            let slow = try await runners.job("slow", token: token)
            #expect(slow["attempts"] as? Int == 2, "\(slow)")
            // The artifact travelled from one runner through the server to the next job.
            let afterLog = try await runners.text("/api/projects/demo/runs/1/logs?job=after", token: token)
            #expect(afterLog.contains("built by \(survivorName)"), "\(afterLog)")
            // And it can be downloaded: listed by job, served as a tar archive; unknown jobs are 404.
            let listed = try await runners.text("/api/projects/demo/runs/1/artifacts", token: token)
            #expect(listed.contains("\"job\":\"slow\"") && listed.contains("\"files\":1"), "\(listed)")
            let archive = try await HTTPClient().request(method: .GET, url: "http://127.0.0.1:\(runners.port)/api/projects/demo/runs/1/artifacts/slow",
                                                         headers: [("Authorization", "Bearer \(token)")], timeout: .seconds(10))
            #expect(archive.status == 200)
            let bytes = String(decoding: archive.body, as: UTF8.self)
            #expect(bytes.contains("out/built.txt") && bytes.contains("built by \(survivorName)"))
            for missing in ["nope", "..%2F..%2Fserver.db", "after"] {
                let response = try await HTTPClient().request(method: .GET, url: "http://127.0.0.1:\(runners.port)/api/projects/demo/runs/1/artifacts/\(missing)",
                                                              headers: [("Authorization", "Bearer \(token)")], timeout: .seconds(10))
                #expect(response.status == 404, "\(missing)")
            }
            let metrics = try await runners.text("/metrics", token: token)
            #expect(metrics.contains("slipway_runner_lost_total 1"), "\(metrics)")
            // Detected within the timeout (2 s) plus the watchdog's tick, with room for a loaded machine.
            let runnerLost = try await runners.text("/api/projects/demo/runs/1", token: token)
            #expect(runnerLost.contains("runner '\(victimName)' was lost"), "\(runnerLost)")
            let history = slow["attemptHistory"] as? [[String: Any]] ?? []
            #expect(history.map { $0["status"] as? String } == ["failure", "success"])
            #expect((history.first?["failure"] as? String)?.contains("runner '\(victimName)' was lost") == true, "\(history)")
            #expect(Date().timeIntervalSince(killedAt) < 60)
        }

        @Test func aRunnerCutOffAndBackCannotReportIntoTheAttemptThatWasQueuedAgain() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let number = Processes.uniqueSleep(300)
            defer { Processes.killAll(number) }
            try sandbox.write("slipway.yml", EndToEnd.remotePipeline(sandbox, sleep: number))
            try sandbox.commit("remote pipeline")
            let (runners, token, server) = try await RunnerKit.start(sandbox)
            defer { server.signal(SIGKILL) }
            let r1 = try runners.runner("r1")
            defer { r1.signal(SIGKILL) }
            try await runners.waitOnline(["r1"], token: token)
            let id = try await runners.queue(token: token)
            try await DeployKit.waitUntil("the slow job to start on r1", timeout: 60) { sandbox.count("slow-start") == 1 }
            try await DeployKit.waitUntil("r1's sleeping step", timeout: 30) { !Processes.matching(number).isEmpty }

            // Cut off: stopped, it sends nothing; the server takes the lease back after 2 s.
            r1.signal(SIGSTOP)
            try await DeployKit.waitUntil("the lease to be taken back", timeout: 30) {
                (try? await runners.text("/metrics", token: token))?.contains("slipway_runner_lost_total 1") == true
            }
            // A second runner takes attempt 2; r1 comes back and learns its lease is gone.
            _ = FileManager.default.createFile(atPath: sandbox.outside + "/go", contents: nil)
            let r2 = try runners.runner("r2")
            defer { r2.signal(SIGKILL) }
            try await DeployKit.waitUntil("attempt 2 to start on r2", timeout: 60) { sandbox.count("slow-start") == 2 }
            r1.signal(SIGCONT)
            let request = try await runners.kit.finished(port: runners.port, token: token, request: id, timeout: 90)
            #expect(request["status"] as? String == "success", "\(request)")
            #expect(sandbox.lines("slow-start") == ["r1", "r2"])
            // r1 dropped its attempt: its sleeping step was killed, not left running or reported.
            #expect(await Processes.survivors(number, within: 15).isEmpty, "r1 stopped the step of the lease it lost")
            let slow = try await runners.job("slow", token: token)
            #expect(slow["attempts"] as? Int == 2)
            #expect(slow["status"] as? String == "success")
            let log = try String(contentsOfFile: r1.stdoutPath, encoding: .utf8)
            #expect(log.contains("dropped"), "\(log)")
        }

        @Test func twoRunnersCannotShareAWorkDirectory() async throws {
            let sandbox = try Sandbox("name: placeholder\njobs:\n  a:\n    steps:\n      - run: 'true'\n")
            let work = sandbox.root + "/shared-work"
            // Nothing listens on port 9: the first runner just keeps retrying while it holds the directory.
            let first = try sandbox.launch(["runner", "--server", "http://127.0.0.1:9", "--token", "slw_x", "--work", work])
            defer { first.signal(SIGKILL) }
            try await DeployKit.waitUntil("the first runner to hold its directory", timeout: 30) { FileManager.default.fileExists(atPath: work + "/runner.lock") }
            try await Task.sleep(for: .milliseconds(300))
            let second = try await sandbox.slipway("runner", "--server", "http://127.0.0.1:9", "--token", "slw_x", "--work", work, timeout: 30)
            #expect(second.status == 1)
            #expect(second.stderr.contains("another runner is using \(work)"), "\(second)")
        }
    }
}
