import Foundation
import SlipwayTestSupport
import Testing

@testable import SlipwayCore

/// The malformed-pipeline corpus: every file in `Fixtures/malformed` starts with one or more lines
///
///     # expect: LINE:COLUMN message substring ~ hint substring
///
/// (the `~ hint` part is optional). Loading the file must report exactly these errors, all at once:
/// one error per `expect` line, each at that exact location, with that text in its message (and hint).
enum MalformedCorpus {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/malformed")

    struct Expectation: CustomStringConvertible {
        var line: Int
        var column: Int
        var message: String
        var hint: String?
        var description: String { "\(line):\(column) \(message)" + (hint.map { " ~ \($0)" } ?? "") }

        func matches(_ d: Diagnostic) -> Bool {
            d.location.line == line && d.location.column == column && d.message.contains(message)
                && (hint.map { d.hint?.contains($0) ?? false } ?? true)
        }
    }

    static func files() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".yml") }.sorted()
    }

    static func text(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
    }

    static func expectations(in text: String) -> [Expectation] {
        var result: [Expectation] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            guard line.hasPrefix("# expect: ") else { continue }
            var rest = line.dropFirst("# expect: ".count)
            guard let space = rest.firstIndex(of: " ") else { continue }
            let position = rest[..<space].split(separator: ":")
            rest = rest[rest.index(after: space)...]
            guard position.count == 2, let l = Int(position[0]), let c = Int(position[1]) else { continue }
            var message = String(rest)
            var hint: String?
            if let tilde = message.range(of: " ~ ") {
                hint = String(message[tilde.upperBound...])
                message = String(message[..<tilde.lowerBound])
            }
            result.append(Expectation(line: l, column: c, message: message, hint: hint))
        }
        return result
    }
}

@Suite struct MalformedPipelineTests {
    @Test func corpusIsLargeEnough() {
        #expect(MalformedCorpus.files().count >= 45)
    }

    @Test(arguments: MalformedCorpus.files())
    func reportsEveryExpectedError(file: String) throws {
        let text = try MalformedCorpus.text(file)
        let expected = MalformedCorpus.expectations(in: text)
        #expect(!expected.isEmpty, "\(file) has no `# expect:` line")
        let result = PipelineLoader.load(text: text, file: file)
        #expect(result.pipeline == nil, "\(file) should not load")
        let errors = result.errors
        let report = errors.map { "\($0.location.line):\($0.location.column) \($0.message) [hint: \($0.hint ?? "-")]" }
            .joined(separator: "\n")
        #expect(errors.count == expected.count, "\(file): expected \(expected.count) errors, got:\n\(report)")
        var unmatched = errors
        for expectation in expected {
            if let index = unmatched.firstIndex(where: expectation.matches) {
                unmatched.remove(at: index)
            } else {
                Issue.record("\(file): missing error \(expectation); got:\n\(report)")
            }
        }
        for error in errors {
            #expect(error.location.file == file)
            #expect(!error.message.isEmpty)
            #expect(error.hint != nil, "\(file): every error should say how to fix it: \(error.message)")
        }
    }

    @Test(arguments: ["", "\n", "   \n\n  \n", "# only a comment", "---\n", "---\n...\n", "~\n", "null\n"])
    func emptyDocumentsAreReportedAsEmpty(text: String) {
        let result = PipelineLoader.load(text: text, file: "slipway.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message.contains("the file is empty") == true, "\(result.errors)")
        #expect(result.errors.first?.location == SlipwayCore.SourceLocation(file: "slipway.yml", line: 1, column: 1))
    }

    @Test func errorsAreSortedByPosition() throws {
        let result = PipelineLoader.load(text: try MalformedCorpus.text("many-errors.yml"), file: "many-errors.yml")
        let positions = result.errors.map { [$0.location.line, $0.location.column] }
        #expect(positions == positions.sorted { $0.lexicographicallyPrecedes($1) })
    }
}

// MARK: - Robustness: no input crashes the loader

/// The shared seeded generator, under the name these tests use.
typealias SeededGenerator = SplitMix64

/// Either a pipeline and no errors, or no pipeline and at least one error, each at a real position.
func expectWellFormed(_ result: PipelineLoader.Result, lineCount: Int, _ what: @autoclosure () -> String,
                      sourceLocation: Testing.SourceLocation = #_sourceLocation) {
    if result.pipeline != nil {
        #expect(result.errors.isEmpty, "\(what()): a pipeline with errors", sourceLocation: sourceLocation)
    } else {
        #expect(!result.errors.isEmpty, "\(what()): no pipeline and no error", sourceLocation: sourceLocation)
    }
    for d in result.diagnostics {
        let ok = d.location.line >= 1 && d.location.line <= lineCount + 1 && d.location.column >= 1
        #expect(ok, "\(what()): diagnostic outside the file: \(d)", sourceLocation: sourceLocation)
    }
}

private func lineCount(_ text: String) -> Int { text.utf8.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) } }

private func temporaryFile(_ data: Data) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-\(UUID().uuidString).yml")
    try data.write(to: url)
    return url
}

@Suite struct PipelineLoaderRobustnessTests {
    @Test(arguments: ["[", "{", "[{", "{a: [", "- [", "x: {y: ["])
    func deeplyNestedFlowCollections(opening: String) {
        let text = "jobs: " + String(repeating: opening, count: 100_000 / opening.count)
        let result = PipelineLoader.load(text: text, file: "deep.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message.contains("nest more than") == true, "\(result.errors)")
    }

    @Test func deeplyNestedBlockSequences() {
        // `- - - - x`: block collections that nest without growing the indentation much.
        let text = "jobs:\n  a:\n    steps:\n      " + String(repeating: "- ", count: 100_000) + "run\n"
        let result = PipelineLoader.load(text: text, file: "deep.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message.contains("nesting") == true, "\(result.errors)")
    }

    @Test func deeplyNestedBlockMappings() {
        // Indentation grows by one space per level: 2000 levels is about 2 MB.
        var text = ""
        for depth in 0..<2000 { text += String(repeating: " ", count: depth) + "k\(depth):\n" }
        text += String(repeating: " ", count: 2000) + "leaf\n"
        let result = PipelineLoader.load(text: text, file: "deep.yml")
        #expect(result.pipeline == nil)
        #expect(!result.errors.isEmpty)
        expectWellFormed(result, lineCount: lineCount(text), "deep block mappings")
    }

    @Test func deeplyNestedCompactMappingsInSequences() {
        // `- a:` then `  - a:`: each level costs two columns.
        var text = "jobs:\n"
        for depth in 0..<1500 { text += String(repeating: "  ", count: depth + 1) + "- a:\n" }
        let result = PipelineLoader.load(text: text, file: "deep.yml")
        #expect(result.pipeline == nil)
        #expect(!result.errors.isEmpty)
    }

    @Test func billionLaughs() {
        var text = "a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n"
        for level in 1...9 {
            let refs = Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
            text += "a\(level): &a\(level) [\(refs)]\n"
        }
        text += "jobs:\n  build:\n    steps: [ { run: make } ]\n    env: *a9\n"
        let clock = ContinuousClock()
        var result: PipelineLoader.Result?
        let elapsed = clock.measure { result = PipelineLoader.load(text: text, file: "lol.yml") }
        #expect(result?.pipeline == nil)
        #expect(result?.errors.count == 1)
        #expect(result?.errors.first?.message.contains("more than") == true, "\(result?.errors ?? [])")
        #expect(elapsed < .seconds(5))
    }

    @Test func aliasesWithinLimitsStillLoad() {
        let text = """
            defaults: &defaults { MODE: release }
            jobs:
              build:
                env: *defaults
                steps: [ { run: make } ]
            """
        let result = PipelineLoader.load(text: text, file: "alias.yml")
        // `defaults` is not a known key: the alias itself works, the stray key is reported.
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message.contains("unknown key 'defaults'") == true)
    }

    /// A big but legitimate file: thousands of jobs with real scripts, in a chain of needs.
    static func bigPipeline(jobs: Int) -> String {
        var text = "name: big\nenv: { MODE: release }\njobs:\n"
        let script = (0..<8).map { "          echo \"line \($0) of a longer build script that does real work\" >> log.txt\n" }.joined()
        for index in 0..<jobs {
            text += "  job\(index):\n"
            if index > 0 { text += "    needs: [job\(index - 1)]\n" }
            text += "    timeout: 10m\n    steps:\n      - name: step \(index)\n        run: |\n" + script
        }
        return text
    }

    @Test func threeMegabyteFileLoadsReasonablyFast() throws {
        let text = Self.bigPipeline(jobs: 4_500)
        #expect(text.utf8.count > 3_000_000)
        #expect(text.utf8.count < PipelineLoader.maximumFileSize)
        let clock = ContinuousClock()
        var result: PipelineLoader.Result?
        let elapsed = clock.measure { result = PipelineLoader.load(text: text, file: "big.yml") }
        #expect(result?.errors == [], "\(result?.errors.prefix(3) ?? [])")
        #expect(result?.pipeline?.jobs.count == 4_500)
        #expect(result?.pipeline?.jobs.last?.needs == ["job4498"])
        #expect(elapsed < .seconds(20), "loading 3 MB took \(elapsed)")
    }

    @Test func filesOverTheSizeLimitAreRefused() throws {
        let text = Self.bigPipeline(jobs: 6_500)
        #expect(text.utf8.count > PipelineLoader.maximumFileSize)
        let result = PipelineLoader.load(text: text, file: "huge.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message.contains("larger than") == true)

        let url = try temporaryFile(Data(text.utf8))
        defer { try? FileManager.default.removeItem(at: url) }
        let fromFile = PipelineLoader.load(contentsOf: url, displayName: "huge.yml")
        #expect(fromFile.pipeline == nil)
        #expect(fromFile.errors.count == 1)
        #expect(fromFile.errors.first?.message.contains("bytes") == true)
        #expect(fromFile.errors.first?.location == SlipwayCore.SourceLocation(file: "huge.yml", line: 1, column: 1))
    }

    @Test func missingFileIsAnError() {
        let result = PipelineLoader.load(contentsOf: URL(fileURLWithPath: "/nonexistent/slipway.yml"))
        #expect(result.pipeline == nil)
        #expect(result.errors.first?.message.contains("cannot read") == true)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func binaryGarbage(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let size = Int.random(in: 1...20_000, using: &rng)
        var bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if seed.isMultiple(of: 2) { bytes.insert(contentsOf: [0xC3, 0x28, 0xFF], at: 0) }  // surely invalid UTF-8
        let url = try temporaryFile(Data(bytes))
        defer { try? FileManager.default.removeItem(at: url) }
        let result = PipelineLoader.load(contentsOf: url, displayName: "garbage.yml")
        #expect(result.pipeline == nil)
        #expect(!result.errors.isEmpty)
        if seed.isMultiple(of: 2) { #expect(result.errors.first?.message.contains("UTF-8") == true) }
    }

    @Test(arguments: [
        "jobs:\n  a:\n    steps: [ { run: \"\u{0}\" } ]\n",
        "\u{FEFF}jobs:\n  a:\n    steps: [ { run: make } ]\n",
        "jobs:\r\n  a:\r\n    steps: [ { run: make } ]\r\n",
        "jobs:\n  a:\n    steps: [ { run: \"\u{1B}[31mred\" } ]\n",
        "%YAML 1.1\n--- !!map\njobs: { a: { steps: [ { run: make } ] } }\n",
        "jobs: { a: { steps: [ { run: make } ] } }\n---\njobs: {}\n",
        "? [a, b]\n: c\njobs: { a: { steps: [ { run: make } ] } }\n",
        "jobs:\n  ? [x]\n  : { steps: [ { run: make } ] }\n",
        "jobs: !!binary aGVsbG8=\n",
        "jobs:\n  a: &x\n    steps: [ { run: make } ]\n  b: *x\n  c: *x\n",
        "jobs:\n  a:\n    steps:\n      - run: ${{ '${{' }}\n",
        "jobs:\n  a:\n    needs: [a, b, c, a]\n    steps: []\n  b: { needs: c, steps: [run: x] }\n  c: { needs: [b] }\n",
        String(repeating: "jobs:\n", count: 1000),
        "jobs:\n  a:\n    steps:\n      - run: |\n" + String(repeating: "          ${{\n", count: 1000),
        "jobs:\n  a:\n    if: " + String(repeating: "!(", count: 5000) + "\n    steps: [ { run: make } ]\n",
        "jobs:\n  a:\n    steps: [ { run: \"" + String(repeating: "${{ a[", count: 3000) + "\" } ]\n",
    ])
    func oddButValidUTF8Inputs(text: String) {
        let result = PipelineLoader.load(text: text, file: "odd.yml")
        expectWellFormed(result, lineCount: lineCount(text), "odd input")
    }

    static let fuzzSeed = """
        name: shop-api
        on:
          push: { branches: [main, "release/*"], paths: ["src/**"] }
          pull_request: {}
          schedule: [{ cron: "0 3 * * *" }]
          manual: { inputs: { target: { default: staging } } }
        env: { APP: shop-api }
        jobs:
          build:
            timeout: 10m
            env: { MODE: release }
            cache: { inputs: ["src/**", "Package.swift"] }
            steps:
              - name: compile
                run: make build
              - run: echo "version=1.2.${{ run.number }}" >> "$SLIPWAY_OUTPUT"
            outputs: [version]
            artifacts: [dist/]
          test:
            needs: [build]
            strategy: { matrix: { shard: [1, 2, 3], include: [{ shard: 4, slow: "true" }] }, max-parallel: 2, fail-fast: false }
            retry: { max: 2, on: [timeout, "exit:75"] }
            steps: [{ run: "make test SHARD=${{ matrix.shard }}" }]
            reports: { junit: "reports/*.xml" }
          lint:
            needs: [build]
            if: "${{ event == 'push' && needs.build.outputs.version != '' }}"
            continue-on-error: true
            steps: [{ run: make lint }]
          notify:
            needs: [test, lint]
            if: ${{ always() }}
            steps:
              - run: |
                  echo "${{ needs.test.result }}"
                  echo done
        """

    @Test func fuzzSeedIsValid() {
        let result = PipelineLoader.load(text: Self.fuzzSeed, file: "seed.yml")
        #expect(result.errors == [])
        #expect(result.pipeline?.jobs.count == 4)
    }

    @Test(arguments: [11, 22, 33] as [UInt64])
    func randomMutationsNeverCrash(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let original = Array(Self.fuzzSeed.unicodeScalars)
        let alphabet = Array("-:{}[],'\"#&*!|>%@`?$ \t\n\\xa0".unicodeScalars)
        var loaded = 0, rejected = 0
        for iteration in 0..<1_200 {
            var scalars = original
            for _ in 0..<Int.random(in: 1...4, using: &rng) where !scalars.isEmpty {
                let i = Int.random(in: 0..<scalars.count, using: &rng)
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: scalars.remove(at: i)
                case 1: scalars.insert(scalars[i], at: i)
                case 2: if i + 1 < scalars.count { scalars.swapAt(i, i + 1) }
                case 3: scalars.insert(alphabet.randomElement(using: &rng)!, at: i)
                default:
                    // Duplicate or delete a whole line.
                    let j = min(scalars.count, i + Int.random(in: 1...80, using: &rng))
                    if Bool.random(using: &rng) { scalars.insert(contentsOf: scalars[i..<j], at: j) } else { scalars.removeSubrange(i..<j) }
                }
            }
            var text = ""
            text.unicodeScalars.append(contentsOf: scalars)
            let result = PipelineLoader.load(text: text, file: "fuzz.yml")
            expectWellFormed(result, lineCount: lineCount(text), "seed \(seed) iteration \(iteration):\n\(text)")
            if let pipeline = result.pipeline {
                loaded += 1
                // Whatever loads must also plan without crashing.
                _ = try? RunPlan(pipeline: pipeline)
            } else {
                rejected += 1
            }
        }
        #expect(loaded > 0)
        #expect(rejected > 0)
    }
}
