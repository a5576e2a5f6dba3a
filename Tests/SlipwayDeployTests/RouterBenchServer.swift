import Foundation
import NIOCore
import Testing

@testable import SlipwayDeploy

/// Not a test: the router side of `bench/router.sh`, run only when `SLIPWAY_ROUTER_BENCH_DIR` is set
/// (a hidden, test-only way to run the router as a process without adding an executable to the product).
///
/// Protocol, all through files in that directory:
/// - reads `table.json` (a `RoutingTable`) and optional `listen-port`, starts the router, writes `port`;
/// - when `switch.json` appears: applies it with `update(_:)` and measures, with its own keep-alive client,
///   the time from just before `update` until every response carries the new table's version (the first of
///   20 consecutive such responses), writes `switch-result.txt`, removes `switch.json`;
/// - when `stop` appears: writes `metrics.json` and shuts down.
@Suite("Router bench server (bench/router.sh only)")
struct RouterBenchServer {
    static let directory = ProcessInfo.processInfo.environment["SLIPWAY_ROUTER_BENCH_DIR"]

    @Test(.enabled(if: RouterBenchServer.directory != nil))
    func serveForBench() async throws {
        let directory = URL(fileURLWithPath: try #require(Self.directory))
        let file = { (name: String) in directory.appendingPathComponent(name) }
        let table = try JSONDecoder().decode(RoutingTable.self, from: Data(contentsOf: file("table.json")))
        let requestedPort = (try? String(contentsOf: file("listen-port"), encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        let router = TrafficRouter(host: "127.0.0.1", port: requestedPort, table: table)
        try await router.start()
        try Data("\(router.boundPort)\n".utf8).write(to: file("port"), options: .atomic)

        let fileManager = FileManager.default
        let deadline = ContinuousClock.now + .seconds(3600)
        while ContinuousClock.now < deadline {
            if fileManager.fileExists(atPath: file("stop").path) { break }
            if fileManager.fileExists(atPath: file("switch.json").path) {
                let next = try JSONDecoder().decode(RoutingTable.self, from: Data(contentsOf: file("switch.json")))
                let result = try await Self.measureSwitch(router: router, to: next)
                try Data(result.utf8).write(to: file("switch-result.txt"), options: .atomic)
                try fileManager.removeItem(at: file("switch.json"))
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let metrics = router.metrics(since: nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(metrics).write(to: file("metrics.json"), options: .atomic)
        try await router.shutdown()
    }

    /// Time from just before `update` until responses carry only the new version (first of 20 in a row).
    static func measureSwitch(router: TrafficRouter, to next: RoutingTable) async throws -> String {
        let target = try #require(next.weights.filter { $0.value > 0 }.max { $0.value < $1.value }?.key)
        let connection = try await TestHTTPConnection.connect(port: router.boundPort)
        // Warm the probe connection first.
        _ = try await connection.send()
        let clock = ContinuousClock()
        let start = clock.now
        router.update(next)
        let updateReturned = clock.now
        var streakStart: ContinuousClock.Instant?
        var streak = 0
        var probes = 0
        var oldAfterUpdate = 0
        while streak < 20, probes < 100_000 {
            let response = try await connection.send()
            probes += 1
            if response.version == target {
                if streak == 0 { streakStart = clock.now }
                streak += 1
            } else {
                oldAfterUpdate += 1
                streak = 0
            }
        }
        await connection.close()
        let switched = (streakStart ?? clock.now) - start
        let update = updateReturned - start
        return """
            target=\(target)
            update_call_us=\(Self.microseconds(update))
            switch_ms=\(Double(Self.microseconds(switched)) / 1000)
            probes=\(probes)
            old_version_responses_after_update=\(oldAfterUpdate)

            """
    }

    static func microseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
    }
}
