import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayCore

extension ResolvedJob {
    /// What `canonicalJSON` must equal: Foundation's encoding, which wrote the cache keys of existing caches.
    func foundationCanonicalJSON() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)) ?? Data()
    }
}

/// The hand-written canonical JSON of a job's definition must be byte for byte what `JSONEncoder` with
/// `.sortedKeys` writes: cache keys of existing caches and `explain`'s comparisons are made of it.
@Suite struct ResolvedJobCanonicalJSONTests {
    static let pieces: [String] = [
        "a", "Z", "_", "-", "0", "9", "10", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1}", "\u{1f}", "\u{7f}",
        "é", "e\u{301}", "É", "ß", "İ", "ñ", "✓", "😀", "\u{2028}", "${{ x }}", "&&", "|", "'", "%", "=",
    ]

    static func text(_ random: inout SplitMix64, maxPieces: Int = 6) -> String {
        (0..<Int.random(in: 0...maxPieces, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined()
    }

    static func dictionary(_ random: inout SplitMix64) -> [String: String] {
        var values: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...5, using: &random) { values[text(&random, maxPieces: 3)] = text(&random) }
        return values
    }

    static func job(_ random: inout SplitMix64) -> ResolvedJob {
        func maybe<T>(_ make: () -> T) -> T? { Bool.random(using: &random) ? make() : nil }
        let steps = (0..<Int.random(in: 0...3, using: &random)).map { _ in
            ResolvedJob.ResolvedStep(
                name: text(&random), run: text(&random, maxPieces: 12), env: dictionary(&random),
                workingDirectory: maybe { text(&random) }, timeoutMilliseconds: maybe { Int64.random(in: -5...Int64.max, using: &random) },
                continueOnError: Bool.random(using: &random), condition: maybe { text(&random) },
                uses: maybe { BuiltinStep.allCases.randomElement(using: &random)! }, with: maybe { dictionary(&random) })
        }
        return ResolvedJob(
            key: text(&random), jobID: text(&random), matrix: dictionary(&random), env: dictionary(&random), steps: steps,
            timeoutMilliseconds: maybe { Int64.random(in: 0...100_000_000, using: &random) },
            outputs: (0..<Int.random(in: 0...3, using: &random)).map { _ in text(&random) },
            artifacts: (0..<Int.random(in: 0...3, using: &random)).map { _ in text(&random) },
            cacheInputs: maybe { (0..<Int.random(in: 0...3, using: &random)).map { _ in text(&random) } },
            junitReports: (0..<Int.random(in: 0...2, using: &random)).map { _ in text(&random) },
            release: maybe { ReleaseSpec(name: text(&random), version: text(&random), path: text(&random), sbom: Bool.random(using: &random)) },
            deployEnvironment: maybe { text(&random) }, deployArtifact: maybe { text(&random) })
    }

    @Test func equalsJSONEncoderOnRandomJobs() {
        var random = SplitMix64(seed: 0x5EED_2026)
        for index in 0..<3000 {
            let job = Self.job(&random)
            let expected = job.foundationCanonicalJSON()
            let written = job.canonicalJSON()
            #expect(written == expected, "job \(index): \(String(decoding: written, as: UTF8.self)) != \(String(decoding: expected, as: UTF8.self))")
            if written != expected { break }
        }
    }

    /// A field added to ResolvedJob or its step must be added to `canonicalJSON` too (JSONEncoder would
    /// write it; the hand-written form would silently leave it out of the cache key).
    @Test func everyFieldIsWritten() {
        var random = SplitMix64(seed: 1)
        let job = Self.job(&random)
        #expect(Mirror(reflecting: job).children.map(\.label) == [
            "key", "jobID", "matrix", "env", "steps", "timeoutMilliseconds", "outputs", "artifacts", "cacheInputs", "junitReports",
            "release", "deployEnvironment", "deployArtifact",
        ])
        #expect(Mirror(reflecting: ResolvedJob.ResolvedStep(name: "", run: "", env: [:], workingDirectory: nil, timeoutMilliseconds: nil,
                                                            continueOnError: false, condition: nil, uses: nil, with: nil)).children.map(\.label) == [
            "name", "run", "env", "workingDirectory", "timeoutMilliseconds", "continueOnError", "condition", "uses", "with",
        ])
        #expect(Mirror(reflecting: ReleaseSpec(name: "", version: "", path: "")).children.map(\.label) == ["name", "version", "path", "sbom"])
    }
}
