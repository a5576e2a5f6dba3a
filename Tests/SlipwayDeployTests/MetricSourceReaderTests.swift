import Foundation
import NIOCore
import NIOPosix
import SlipwayCore
import Testing

@testable import SlipwayDeploy

#if canImport(Glibc)
import Glibc
#endif

// The non-router metric sources of a canary analysis, against a real Prometheus, a real HTTP server and
// real processes.

private let production = MetricContext(environment: "production", canary: "v2", stable: "v1", windowSeconds: 60)

/// The error message of a failed read, "" when it succeeded.
private func message(_ result: Result<Double?, MetricSourceError>) -> String {
    if case .failure(let error) = result { return error.message }
    return ""
}

private struct PrometheusNotReady: Error, CustomStringConvertible {
    var description: String
}

// MARK: - Prometheus

/// Runs `/usr/bin/prometheus` scraping `127.0.0.1:port` every second, waits (at most 20 s) until a query
/// sees the scraped series, runs `body` with its address, and stops it afterwards whatever happened.
private func withPrometheus<T: Sendable>(scraping port: Int, _ body: (String) async throws -> T) async throws -> T {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus", "/opt/homebrew/bin/prometheus"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    let executable = try #require(binary, "prometheus is not installed (apt-get install prometheus)")
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-prometheus-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let config = """
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: app
            static_configs:
              - targets: ['127.0.0.1:\(port)']

        """
    try config.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
    let logPath = directory.appendingPathComponent("prometheus.log").path
    try #require(FileManager.default.createFile(atPath: logPath, contents: nil), "cannot create \(logPath)")
    let log = try #require(FileHandle(forWritingAtPath: logPath))
    defer { try? log.close() }

    /// Starts Prometheus on a free port; nil when that port was taken before Prometheus bound it.
    func start() async throws -> (Process, String)? {
        let listen = try await unusedPort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--config.file=\(directory.appendingPathComponent("prometheus.yml").path)",
            "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
            "--web.listen-address=127.0.0.1:\(listen)",
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // Ready (or gone) within a few seconds; "Start listening" is logged just before the bind.
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning, ContinuousClock.now < deadline {
            let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if output.contains("Server is ready to receive web requests") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        if !process.isRunning, ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").contains("address already in use") {
            return nil
        }
        return (process, "http://127.0.0.1:\(listen)")
    }

    func stop(_ process: Process) async {
        if process.isRunning { process.terminate() }
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { _ = kill(process.processIdentifier, SIGKILL) }
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
    }

    var started: (Process, String)?
    for _ in 0..<3 where started == nil {
        started = try await start()
    }
    let (process, address) = try #require(started, "Prometheus found no free port")
    do {
        let reader = MetricSourceReader(httpTimeout: .seconds(2))
        let deadline = ContinuousClock.now + .seconds(20)
        var last = ""
        while true {
            let result = await reader.read(.prometheus(address: address, query: "count(http_requests_total)"), context: production)
            if result == .success(4) { break }
            last = "\(result)"
            guard ContinuousClock.now < deadline, process.isRunning else {
                let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw PrometheusNotReady(description: "Prometheus saw no scraped series within 20 s (last: \(last)); its log ends:\n\(output.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let result = try await body(address)
        await stop(process)
        return result
    } catch {
        await stop(process)
        throw error
    }
}

/// A free port below the kernel's ephemeral range (32768 and up), so servers that bind port 0 in tests
/// running in parallel do not take it before Prometheus binds it.
private func unusedPort() async throws -> Int {
    for _ in 0..<50 {
        let candidate = Int.random(in: 20_000..<32_000)
        if let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: candidate).get() {
            try await channel.close().get()
            return candidate
        }
    }
    throw PrometheusNotReady(description: "no free port between 20000 and 32000")
}

@Suite("MetricSource prometheus")
struct MetricSourcePrometheusTests {
    @Test("queries a real Prometheus: placeholders, scalars, no data, several series, syntax errors")
    func realPrometheus() async throws {
        let server = try await MetricsTestServer.start()
        do {
            try await withPrometheus(scraping: server.port) { address in
                let reader = MetricSourceReader(httpTimeout: .seconds(5))
                func read(_ query: String, at base: String? = nil) async -> Result<Double?, MetricSourceError> {
                    await reader.read(.prometheus(address: base ?? address, query: query), context: production)
                }
                // The canary's own series, through the placeholder; the stable's; a trailing slash on the address.
                #expect(await read(#"sum(http_requests_total{version="{{canary}}",code="500"})"#) == .success(7))
                #expect(await read(#"sum(http_requests_total{version="{{stable}}",code="500"})"#, at: address + "/") == .success(2))
                #expect(await read(#"http_requests_total{version="{{canary}}",code="200"}"#) == .success(40))
                // The window, as a Prometheus duration.
                #expect(await read(#"sum(max_over_time(http_requests_total{version="{{canary}}",code="500"}[{{window}}]))"#) == .success(7))
                // A scalar; a ratio.
                #expect(await read(#"scalar(sum(http_requests_total{code="500"}))"#) == .success(9))
                #expect(await read(#"sum(http_requests_total{version="{{canary}}",code=~"5.."}) / sum(http_requests_total{version="{{canary}}"})"#)
                    == .success(7.0 / 47.0))
                // No series, NaN: no data. +Inf is a value (the judge calls it inconclusive).
                #expect(await read(#"sum(http_requests_total{version="v9"})"#) == .success(nil))
                #expect(await read("0/0") == .success(nil))
                #expect(await read("1/0") == .success(.infinity))

                // Several series: the error says how many and suggests sum(…).
                let several = message(await read(#"http_requests_total{code="500"}"#))
                #expect(several.contains("returned 2 series"), "\(several)")
                #expect(several.contains(#"version="v1""#) && several.contains(#"version="v2""#), "\(several)")
                #expect(several.contains(#"sum(http_requests_total{code="500"})"#), "\(several)")

                // A syntax error: Prometheus's own words.
                let syntax = message(await read(#"sum(http_requests_total{version="v2"}"#))
                #expect(syntax.contains("bad_data"), "\(syntax)")
                #expect(syntax.contains("parse error"), "\(syntax)")
                #expect(syntax.contains("rejected the query"), "\(syntax)")

                // A range vector is not a value.
                let range = message(await read(#"http_requests_total{version="v2",code="500"}[1m]"#))
                #expect(range.contains("range vector"), "\(range)")

                // Judged: 7 errors against max 5.
                let check = MetricCheck(name: "checkout-5xx", source: .prometheus(address: address, query: #"sum(http_requests_total{version="{{canary}}",code="500"})"#), max: 5)
                let measurement = await reader.measure(check, context: production)
                #expect(measurement.outcome == .fail)
                #expect(measurement.value == 7)
                #expect(measurement.reason == "7 > max 5")
                let stable = await reader.measure(check, context: MetricContext(environment: "production", canary: "v1", stable: "v2", windowSeconds: 60))
                #expect(stable.outcome == .pass)
                let empty = await reader.measure(MetricCheck(name: "none", source: .prometheus(address: address, query: #"sum(http_requests_total{version="v9"})"#), max: 5), context: production)
                #expect(empty.outcome == .inconclusive)
                #expect(empty.reason.contains("no data"), "\(empty.reason)")
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("Prometheus that cannot be reached, an unknown placeholder, a server that is not Prometheus")
    func prometheusErrors() async throws {
        let reader = MetricSourceReader(httpTimeout: .seconds(2))
        // Port 1: nothing listens there (a port freed by closedPort() may be taken again by a test running in parallel).
        let port = 1
        let unreachable = message(await reader.read(.prometheus(address: "http://127.0.0.1:\(port)", query: "up"), context: production))
        #expect(unreachable.contains("cannot query Prometheus at http://127.0.0.1:\(port)"), "\(unreachable)")
        #expect(unreachable.contains("could not connect"), "\(unreachable)")

        let unknown = message(await reader.read(.prometheus(address: "http://127.0.0.1:\(port)", query: #"up{version="{{canry}}"}"#), context: production))
        #expect(unknown.contains("unknown placeholder {{canry}}"), "\(unknown)")

        let server = try await MetricsTestServer.start()
        let notPrometheus = message(await reader.read(.prometheus(address: server.address, query: "up"), context: production))
        await server.stop()
        #expect(notPrometheus.contains("answered 404"), "\(notPrometheus)")
        #expect(notPrometheus.contains("not a Prometheus API response"), "\(notPrometheus)")
    }
}

// MARK: - HTTP

@Suite("MetricSource http")
struct MetricSourceHTTPTests {
    static let stats = """
        {"service": {"errors": {"rate": 0.02, "count": "3"}},
         "instances": [{"name": "a", "p99": 120.5}, {"name": "b", "p99": 180}],
         "healthy": true, "label": "abc", "nothing": null, "key with space": 4}
        """
    static let brokenBody = "upstream exploded: " + String(repeating: "x", count: 181) + "TAIL-NOT-SHOWN"

    func withServer(_ body: (MetricsTestServer) async throws -> Void) async throws {
        let server = try await MetricsTestServer.start(routes: [
            "/stats.json": MetricsRoute(body: Self.stats),
            "/versions/v2.json": MetricsRoute(body: #"{"errorRate": "0.013"}"#),
            "/broken": MetricsRoute(status: 500, contentType: "text/plain", body: Self.brokenBody),
            "/page": MetricsRoute(contentType: "text/html", body: "<html>hello</html>"),
        ])
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("nested keys, array indexes, quoted keys, numeric strings, booleans, null, placeholders in the URL")
    func values() async throws {
        try await withServer { server in
            let reader = MetricSourceReader()
            func read(_ path: String, url: String? = nil) async -> Result<Double?, MetricSourceError> {
                await reader.read(.http(url: url ?? server.address + "/stats.json", jsonPath: path), context: production)
            }
            #expect(await read("$.service.errors.rate") == .success(0.02))
            #expect(await read("$.instances[1].p99") == .success(180))
            #expect(await read("$.instances[0].p99") == .success(120.5))
            #expect(await read("instances[-1].p99") == .success(180))
            #expect(await read("service.errors.count") == .success(3))
            #expect(await read("$['key with space']") == .success(4))
            #expect(await read("$.healthy") == .success(1))
            #expect(await read("$.nothing") == .success(nil))
            #expect(await read("errorRate", url: server.address + "/versions/{{canary}}.json") == .success(0.013))

            let check = MetricCheck(name: "error-rate", source: .http(url: server.address + "/stats.json", jsonPath: "$.service.errors.rate"), max: 0.01)
            let measurement = await reader.measure(check, context: production)
            #expect(measurement.outcome == .fail)
            #expect(measurement.value == 0.02)
        }
    }

    @Test("a missing key names the path and the keys there; a string or an object is not a number")
    func pathErrors() async throws {
        try await withServer { server in
            let reader = MetricSourceReader()
            let url = server.address + "/stats.json"
            let missing = message(await reader.read(.http(url: url, jsonPath: "$.service.errors.ratio"), context: production))
            #expect(missing.contains("GET \(url)"), "\(missing)")
            #expect(missing.contains("$.service.errors.ratio"), "\(missing)")
            #expect(missing.contains(#"no key "ratio" at $.service.errors; keys there: count, rate"#), "\(missing)")

            let index = message(await reader.read(.http(url: url, jsonPath: "$.instances[2].p99"), context: production))
            #expect(index.contains("index 2 is out of range at $.instances, an array of 2"), "\(index)")

            let text = message(await reader.read(.http(url: url, jsonPath: "$.label"), context: production))
            #expect(text.contains(#"the value is the string "abc", not a number"#), "\(text)")

            let object = message(await reader.read(.http(url: url, jsonPath: "$.service"), context: production))
            #expect(object.contains("an object with keys errors, not a number"), "\(object)")

            let badPath = message(await reader.read(.http(url: url, jsonPath: "$..rate"), context: production))
            #expect(badPath.contains("recursive descent"), "\(badPath)")

            let measurement = await reader.measure(MetricCheck(name: "label", source: .http(url: url, jsonPath: "$.label"), max: 1), context: production)
            #expect(measurement.outcome == .inconclusive)
            #expect(measurement.reason.contains("not a number"), "\(measurement.reason)")
        }
    }

    @Test("a non-2xx status shows the status and the first 200 characters; not JSON; no server")
    func responseErrors() async throws {
        try await withServer { server in
            let reader = MetricSourceReader()
            let broken = message(await reader.read(.http(url: server.address + "/broken", jsonPath: "$.x"), context: production))
            #expect(broken.contains("answered 500"), "\(broken)")
            #expect(broken.contains(String(Self.brokenBody.prefix(200))), "\(broken)")
            #expect(!broken.contains("TAIL"), "\(broken)")

            let page = message(await reader.read(.http(url: server.address + "/page", jsonPath: "$.x"), context: production))
            #expect(page.contains("not JSON: <html>hello</html>"), "\(page)")

            let unknown = message(await reader.read(.http(url: server.address + "/{{version}}", jsonPath: "$.x"), context: production))
            #expect(unknown.contains("unknown placeholder {{version}}"), "\(unknown)")
        }
        let refused = message(await MetricSourceReader().read(.http(url: "http://127.0.0.1:1/x", jsonPath: "$.x"), context: production))
        #expect(refused.contains("could not connect"), "\(refused)")
    }
}

// MARK: - Command

@Suite("MetricSource command")
struct MetricSourceCommandTests {
    let reader = MetricSourceReader()

    func read(_ command: String, reader: MetricSourceReader? = nil) async -> Result<Double?, MetricSourceError> {
        await (reader ?? self.reader).read(.command(command), context: production)
    }

    @Test("the number on the last non-empty line of stdout is the value")
    func numberOnStdout() async {
        #expect(await read("echo 0.25") == .success(0.25))
        #expect(await read(#"printf 'checking...\n42\n\n   \n'"#) == .success(42))
        #expect(await read("echo '  -3.5e2  '") == .success(-350))
        #expect(await read("echo nan") == .success(nil))
    }

    @Test("without a number on stdout the exit code is the value, so max: 0 passes exactly on success")
    func exitCodeAsValue() async {
        #expect(await read("true") == .success(0))
        #expect(await read("echo all good; exit 3") == .success(3))
        #expect(await read("/nonexistent/probe") == .success(127))

        let check = MetricCheck(name: "smoke", source: .command("echo checking; exit 0"), max: 0)
        let passed = await reader.measure(check, context: production)
        #expect(passed.outcome == .pass)
        #expect(passed.reason == "exit code 0 ≤ max 0")
        let failed = await reader.measure(MetricCheck(name: "smoke", source: .command("echo 'db unreachable' >&2; exit 2"), max: 0), context: production)
        #expect(failed.outcome == .fail)
        #expect(failed.reason == "exit code 2 > max 0; stderr: db unreachable")
    }

    @Test("a printed number with a non-zero exit code is an error with the code and the end of stderr")
    func numberWithFailure() async {
        let error = message(await read("echo 5; echo 'could not reach metrics' >&2; exit 2"))
        #expect(error.contains("printed 5 but exited with code 2"), "\(error)")
        #expect(error.contains("stderr: could not reach metrics"), "\(error)")
        let measurement = await reader.measure(MetricCheck(name: "x", source: .command("echo 5; exit 2"), max: 10), context: production)
        #expect(measurement.outcome == .inconclusive)
    }

    @Test("a command past its timeout is killed with its whole process group")
    func timeoutKillsGroup() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-metric-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("child.pid").path
        let short = MetricSourceReader(commandTimeout: .milliseconds(300))
        let start = ContinuousClock.now
        let result = await read("sleep 5 & echo $! > '\(pidFile)'; sleep 5; echo 1", reader: short)
        let elapsed = ContinuousClock.now - start
        #expect(message(result).contains("did not finish within 300ms and was killed"), "\(result)")
        #expect(elapsed < .seconds(2), "took \(elapsed)")

        // The background sleep was in the group: it is gone (or a zombie waiting for its new parent to reap it).
        let text = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let child = try #require(Int32(text))
        let deadline = ContinuousClock.now + .seconds(2)
        func alive() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8) else { return false }
            let state = stat.split(separator: ")").last?.split(separator: " ").first
            return state != "Z" && state != "X"
        }
        while alive(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!alive(), "background child \(child) survived the timeout")
    }

    @Test("cancelling the reading task kills the command")
    func cancellation() async {
        let start = ContinuousClock.now
        let reader = self.reader
        let task = Task { await reader.read(.command("sleep 5"), context: production) }
        try? await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let result = await task.value
        #expect(message(result).contains("cancelled"), "\(result)")
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test("waiting does not block the concurrency pool: twelve 1 s commands finish together")
    func concurrent() async {
        let reader = self.reader
        let start = ContinuousClock.now
        let results = await withTaskGroup(of: Result<Double?, MetricSourceError>.self) { group in
            for i in 0..<12 { group.addTask { await reader.read(.command("sleep 1; echo \(i)"), context: production) } }
            var all: [Result<Double?, MetricSourceError>] = []
            for await result in group { all.append(result) }
            return all
        }
        let values = Set(results.compactMap { try? $0.get() })
        #expect(values == Set((0..<12).map(Double.init)))
        #expect(ContinuousClock.now - start < .seconds(4), "blocking waits would take ≥ 6 s on two threads")
    }

    @Test("placeholders are substituted and also set as SLIPWAY_* variables")
    func placeholders() async {
        #expect(await read(#"test "$SLIPWAY_CANARY" = v2 && test "$SLIPWAY_STABLE" = v1 && test "$SLIPWAY_ENVIRONMENT" = production && test "$SLIPWAY_WINDOW" = 60s"#)
            == .success(0))
        #expect(await read(#"test "{{canary}}/{{stable}}/{{environment}}/{{window}}" = "v2/v1/production/60s" && echo 1.5"#) == .success(1.5))
        // Unknown {{…}} is left alone: it may be the command's own syntax.
        #expect(await read(#"test '{{.State}}' = '{{.State}}' && echo 2"#) == .success(2))
    }

    @Test("runs in the working directory; stdout over 1 MB is refused")
    func directoryAndLimit() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-metric-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "0.75\n".write(to: directory.appendingPathComponent("value.txt"), atomically: true, encoding: .utf8)
        let inDirectory = MetricSourceReader(workingDirectory: directory.path)
        #expect(await read("cat value.txt", reader: inDirectory) == .success(0.75))

        let large = message(await read("head -c 1100000 /dev/zero | tr '\\0' x; echo; echo 1"))
        #expect(large.contains("more than 1 MB on stdout"), "\(large)")
    }
}

// MARK: - Units

@Suite("MetricSource JSON path, placeholders, parsing")
struct MetricSourceUnitTests {
    @Test("paths parse to keys and indexes, with or without $")
    func parsing() throws {
        #expect(try JSONPath("$.a.b").components == [.key("a"), .key("b")])
        #expect(try JSONPath("$.a[0].b").components == [.key("a"), .index(0), .key("b")])
        #expect(try JSONPath("$['key with space']").components == [.key("key with space")])
        #expect(try JSONPath(#"$["double"]['it\'s']"#).components == [.key("double"), .key("it's")])
        #expect(try JSONPath("a.b").components == [.key("a"), .key("b")])
        #expect(try JSONPath("a[2][-1]").components == [.key("a"), .index(2), .index(-1)])
        #expect(try JSONPath(".a").components == [.key("a")])
        #expect(try JSONPath("$").components == [])
        #expect(try JSONPath("$.p99-ms").components == [.key("p99-ms")])
        #expect(try JSONPath("a['b c'].d[0]").description == "$.a['b c'].d[0]")
    }

    @Test("malformed paths are rejected with the reason", arguments: [
        ("", "empty path"), ("$..a", "recursive descent"), ("$.a[*]", "wildcards"), ("$.*", "wildcards"),
        ("$.a[", "unclosed ["), ("$['a", "unclosed quote"), ("$.a[x]", "neither an array index nor a quoted key"),
        ("$a", "unexpected \"a\""), ("$.a.", "empty key"), ("$[0", "missing ]"),
    ])
    func malformed(path: String, reason: String) {
        #expect(throws: MetricSourceError.self) { try JSONPath(path) }
        do {
            _ = try JSONPath(path)
        } catch {
            #expect(error.message.contains(reason), "\(error.message)")
            #expect(error.message.contains("$.a[0].b"), "suggests the syntax: \(error.message)")
        }
    }

    @Test("evaluation walks objects and arrays and says where it failed")
    func evaluation() throws {
        let json = try #require(JSONNode.parse(#"{"a": {"b": [10, {"c": "2.5"}, true, false, null, "NaN"]}, "e": {}, "n": 3}"#))
        func number(_ path: String) throws -> Result<Double?, MetricSourceError> {
            try JSONPath(path).number(in: json).map(\.value)
        }
        #expect(try number("$.a.b[0]") == .success(10))
        #expect(try number("$.a.b[1].c") == .success(2.5))
        #expect(try number("$.a.b[2]") == .success(1))
        #expect(try number("$.a.b[3]") == .success(0))
        #expect(try number("$.a.b[4]") == .success(nil))
        #expect(try number("$.a.b[5]") == .success(nil))
        #expect(try number("$.n") == .success(3))

        func error(_ path: String) throws -> String {
            if case .failure(let error) = try JSONPath(path).number(in: json) { return error.message }
            return ""
        }
        #expect(try error("$.a.x") == #"json-path `$.a.x`: no key "x" at $.a; keys there: b"#)
        #expect(try error("$.e.x").contains("no key \"x\" at $.e; it is an empty object"))
        #expect(try error("$.x").contains("no key \"x\" at $; keys there: a, e, n"))
        #expect(try error("$.a.b[9]").contains("index 9 is out of range at $.a.b, an array of 6"))
        #expect(try error("$.a.b.c").contains("$.a.b is an array of 6, not an object, so it has no key \"c\"; index it, e.g. $.a.b[0]"))
        #expect(try error("$.a[0]").contains("$.a is an object with keys b, not an array"))
        #expect(try error("$.n.x").contains("$.n is the number 3, not an object"))
        #expect(try error("$.a.b").contains("the value is an array of 6, not a number"))

        #expect(JSONNode.parse("42") == .number(42))
        let bare = try #require(JSONNode.parse("42"))
        #expect(try JSONPath("$").number(in: bare).map(\.value) == .success(42))
        #expect(JSONNode.parse("{not json") == nil)
    }

    @Test("placeholders, the window, percent-encoding")
    func placeholders() {
        let substituted = Placeholders.substitute("{{canary}} {{ stable }} {{environment}} {{window}} {{other}} {{open", production)
        #expect(substituted.text == "v2 v1 production 60s {{other}} {{open")
        #expect(substituted.unknown == ["other"])
        #expect(Placeholders.substitute("/{{canary}}", MetricContext(environment: "e", canary: "a b/c", stable: "s", windowSeconds: 1),
                                        encode: Placeholders.percentEncode).text == "/a%20b%2Fc")
        #expect(Placeholders.percentEncode(#"sum(x{v="1"}[1m])"#) == "sum%28x%7Bv%3D%221%22%7D%5B1m%5D%29")
        #expect(Placeholders.percentEncode("é") == "%C3%A9")

        func window(_ seconds: Double) -> String { MetricContext(environment: "", canary: "", stable: "", windowSeconds: seconds).window }
        #expect(window(60) == "60s")
        #expect(window(59.1) == "60s")
        #expect(window(0.2) == "1s")
        #expect(window(0) == "1s")
        #expect(window(-5) == "1s")
        #expect(window(.nan) == "1s")
        #expect(window(600) == "600s")
    }

    @Test("the last non-empty stdout line")
    func lastLine() {
        func parse(_ text: String) -> Double? { MetricSourceReader.lastLineNumber(Array(text.utf8))?.value }
        #expect(parse("1\n2\n") == 2)
        #expect(parse("2\n\n \t\n") == 2)
        #expect(parse("2\nok\n") == nil)
        #expect(parse("") == nil)
        #expect(parse("\r\n7\r\n") == 7)
    }

    @Test("router sources are not read here")
    func router() async {
        let reader = MetricSourceReader()
        let result = await reader.read(.router(metric: "error-rate"), context: production)
        #expect(message(result).contains("traffic router"))
        let measurement = await reader.measure(MetricCheck(name: "errors", source: .router(metric: "error-rate"), max: 1), context: production)
        #expect(measurement.outcome == .inconclusive)
    }
}
