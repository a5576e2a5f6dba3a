import Foundation
import SlipwayTestSupport
import Testing

@testable import SlipwayCore

// MARK: - Helpers

private func load(_ text: String, file: String = "slipway.yml", sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> Pipeline {
    let result = PipelineLoader.load(text: text, file: file)
    #expect(result.diagnostics.isEmpty, "\(result.diagnostics)", sourceLocation: sourceLocation)
    return try #require(result.pipeline, sourceLocation: sourceLocation)
}

private func combinations(_ matrix: Matrix) -> [[String: String]] {
    MatrixExpansion.expand(matrix).map { combination in
        Dictionary(combination.entries.map { ($0.name, $0.value) }, uniquingKeysWith: { _, b in b })
    }
}

private func env(_ variables: [EnvironmentVariable]) -> [String: String] {
    Dictionary(variables.map { ($0.name, $0.value) }, uniquingKeysWith: { _, b in b })
}

// MARK: - The reference pipeline

/// PRODUCT.md's sketch, without release/deploy jobs and environments, plus the step-level keys.
let referencePipeline = """
    name: shop-api
    on:
      push: { branches: [main, "release/*"], paths: ["src/**", "Package.swift"] }
      pull_request: {}
      schedule: [{ cron: "0 3 * * *" }]
      manual: { inputs: { target: { default: staging }, reason: { required: true, description: why } } }

    env: { APP: shop-api }
    concurrency: { group: "${{ branch }}", cancel-in-progress: true }

    jobs:
      build:
        runs-on: [linux]                 # runner labels (server mode); ignored by a local run
        timeout: 10m                     # durations: 500ms, 30s, 10m, 1h
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
        strategy: { matrix: { shard: [1, 2, 3] }, max-parallel: 2, fail-fast: false }
        retry: { max: 2, on: [timeout, "exit:75"] }
        steps: [{ run: "make test SHARD=${{ matrix.shard }}" }]
        reports: { junit: "reports/*.xml" }

      lint:
        needs: [build]
        if: "${{ event == 'push' }}"
        continue-on-error: true
        steps: [{ run: make lint }]

      package:
        needs: [build, test, lint]
        if: ${{ branch == 'main' && needs.build.outputs.version != '' }}
        steps:
          - make package
    """

@Suite struct PipelineLoaderTests {
    @Test func referencePipelineLoadsIntoTheModel() throws {
        let pipeline = try load(referencePipeline)
        #expect(pipeline.name == "shop-api")
        #expect(pipeline.file == "slipway.yml")
        #expect(pipeline.env == [EnvironmentVariable(name: "APP", value: "shop-api")])
        #expect(pipeline.jobs.map(\.id) == ["build", "test", "lint", "package"])

        let triggers = pipeline.triggers
        #expect(triggers.declared)
        #expect(triggers.push?.branches == ["main", "release/*"])
        #expect(triggers.push?.paths == ["src/**", "Package.swift"])
        #expect(triggers.pullRequest == RefFilter())
        #expect(triggers.schedules == ["0 3 * * *"])
        #expect(triggers.manualInputs == [
            ManualInput(name: "target", defaultValue: "staging", required: false),
            ManualInput(name: "reason", defaultValue: nil, required: true),
        ])

        let build = try #require(pipeline.job("build"))
        #expect(build.location == SlipwayCore.SourceLocation(file: "slipway.yml", line: 12, column: 3))
        #expect(build.needs.isEmpty)
        #expect(build.runsOn == ["linux"])
        #expect(build.timeout == .seconds(600))
        #expect(build.env == [EnvironmentVariable(name: "MODE", value: "release")])
        #expect(build.cache == CacheSpec(inputs: ["src/**", "Package.swift"]))
        #expect(build.steps.count == 2)
        #expect(build.steps[0].name == "compile")
        #expect(build.steps[0].run == "make build")
        #expect(build.steps[0].location.line == 18)
        #expect(build.steps[1].name == nil)
        #expect(build.steps[1].run == "echo \"version=1.2.${{ run.number }}\" >> \"$SLIPWAY_OUTPUT\"")
        #expect(build.steps[1].displayName(index: 1).hasPrefix("echo \"version="))
        #expect(build.outputs == ["version"])
        #expect(build.artifacts == ["dist/"])
        #expect(build.retry == RetryPolicy())
        #expect(build.matrix == nil)
        #expect(build.failFast)
        #expect(!build.continueOnError)
        #expect(build.condition == nil)

        let test = try #require(pipeline.job("test"))
        #expect(test.needs == ["build"])
        #expect(test.matrix == Matrix(dimensions: [(name: "shard", values: ["1", "2", "3"])]))
        #expect(test.maxParallel == 2)
        #expect(!test.failFast)
        #expect(test.retry == RetryPolicy(max: 2, on: [.timeout, .exitCode(75)]))
        #expect(test.junitReports == ["reports/*.xml"])
        #expect(test.steps.map(\.run) == ["make test SHARD=${{ matrix.shard }}"])

        let lint = try #require(pipeline.job("lint"))
        #expect(lint.continueOnError)
        let lintIf = try #require(lint.condition)
        #expect(try lintIf.evaluate(in: ExpressionContext(values: ["event": "push"])).isTruthy)
        #expect(try !lintIf.evaluate(in: ExpressionContext(values: ["event": "pull_request"])).isTruthy)
        #expect(!lintIf.usesStatusFunction)

        let package = try #require(pipeline.job("package"))
        #expect(package.needs == ["build", "test", "lint"])
        #expect(package.condition?.referencedNeeds == ["build"])
        #expect(package.steps.map(\.run) == ["make package"])  // the string shorthand
    }

    @Test func stepLevelKeys() throws {
        let pipeline = try load("""
            jobs:
              build:
                steps:
                  - name: unit
                    id: unit
                    run: |
                      make test
                      make check
                    env: { LEVEL: "2", NAME: "${{ matrix.os }}" }
                    working-directory: src/app
                    timeout: 1m30s
                    continue-on-error: true
                    if: ${{ always() }}
                  - run: make
                    timeout: 500ms
            """)
        let step = try #require(pipeline.jobs.first?.steps.first)
        #expect(step.name == "unit")
        #expect(step.run == "make test\nmake check\n")
        #expect(env(step.env) == ["LEVEL": "2", "NAME": "${{ matrix.os }}"])
        #expect(step.workingDirectory == "src/app")
        #expect(step.timeout == .seconds(90))
        #expect(step.continueOnError)
        #expect(step.condition?.usesStatusFunction == true)
        #expect(pipeline.jobs.first?.steps.last?.timeout == .milliseconds(500))
    }

    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)), ("30s", .seconds(30)), ("10m", .seconds(600)), ("1h", .seconds(3600)),
        ("1h30m", .seconds(5400)), ("1.5s", .milliseconds(1500)), ("168h", .seconds(7 * 24 * 3600)),
    ])
    func durations(text: String, expected: Duration) throws {
        let pipeline = try load("jobs: { a: { timeout: \(text), steps: [ { run: x } ] } }")
        #expect(pipeline.jobs.first?.timeout == expected)
    }

    @Test func shorthandForms() throws {
        let pipeline = try load("""
            on: push
            jobs:
              a:
                steps: [make]
                retry: 3
                runs-on: linux
                artifacts: out/bin
                reports: { junit: "build/test-results/**/*.xml" }
                cache: { inputs: "src/**" }
              b:
                needs: a
                steps: [ { run: make b } ]
            """)
        #expect(pipeline.triggers.declared)
        #expect(pipeline.triggers.push == RefFilter())
        #expect(pipeline.triggers.pullRequest == nil)
        let a = try #require(pipeline.job("a"))
        #expect(a.steps.map(\.run) == ["make"])
        #expect(a.retry == RetryPolicy(max: 3, on: [.any]))
        #expect(a.runsOn == ["linux"])
        #expect(a.artifacts == ["out/bin"])
        #expect(a.junitReports == ["build/test-results/**/*.xml"])
        #expect(a.cache?.inputs == ["src/**"])
        #expect(pipeline.job("b")?.needs == ["a"])
    }

    @Test func onAsAList() throws {
        let pipeline = try load("on: [push, manual]\njobs: { a: { steps: [ { run: x } ] } }")
        #expect(pipeline.triggers.push != nil)
        #expect(pipeline.triggers.manualInputs == [])
        #expect(pipeline.triggers.schedules.isEmpty)
    }

    @Test func noOnBlockMeansEveryEvent() throws {
        let pipeline = try load("jobs: { a: { steps: [ { run: x } ] } }")
        #expect(!pipeline.triggers.declared)
        #expect(TriggerMatcher.decide(pipeline.triggers, event: "push", branch: "anything").matches)
        #expect(TriggerMatcher.decide(pipeline.triggers, event: "manual", branch: nil).matches)
    }

    @Test func retryConditions() throws {
        let pipeline = try load("""
            jobs:
              a:
                retry: { max: 10, on: [any, timeout, "exit:0", "exit:255"] }
                steps: [ { run: x } ]
            """)
        let retry = try #require(pipeline.jobs.first?.retry)
        #expect(retry.max == 10)
        #expect(retry.on == [.any, .timeout, .exitCode(0), .exitCode(255)])
        #expect(RetryPolicy(max: 1, on: [.exitCode(75)]).allows(.exit(75)))
        #expect(!RetryPolicy(max: 1, on: [.exitCode(75)]).allows(.exit(1)))
        #expect(!RetryPolicy(max: 1, on: [.timeout]).allows(.exit(1)))
        #expect(RetryPolicy(max: 1, on: [.timeout]).allows(.timeout))
        #expect(RetryPolicy(max: 1, on: [.any]).allows(.signal(9)))
    }

    @Test func envValuesKeepTheirTemplates() throws {
        let pipeline = try load("""
            env:
              A: plain
              B: "${{ branch }}-${{ run.number }}"
              N: 42
              T: true
            jobs:
              a:
                env: { C: "${{ env.A }}" }
                steps: [ { run: x } ]
            """)
        #expect(env(pipeline.env) == ["A": "plain", "B": "${{ branch }}-${{ run.number }}", "N": "42", "T": "true"])
        #expect(pipeline.env.map(\.name) == ["A", "B", "N", "T"])
        #expect(env(pipeline.jobs[0].env) == ["C": "${{ env.A }}"])
    }

    @Test func anchorsAndAliasesWork() throws {
        let pipeline = try load("""
            jobs:
              a:
                env: &common { MODE: release, LEVEL: "3" }
                steps: &steps [ { run: make } ]
              b:
                env: *common
                steps: *steps
            """)
        #expect(env(pipeline.jobs[1].env) == ["MODE": "release", "LEVEL": "3"])
        #expect(pipeline.jobs[1].steps.map(\.run) == ["make"])
    }

    @Test func warningsFreeFileFromDisk() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("slipway-\(UUID().uuidString).yml")
        try Data(referencePipeline.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let result = PipelineLoader.load(contentsOf: url, displayName: "slipway.yml")
        #expect(result.diagnostics.isEmpty)
        #expect(result.pipeline?.file == "slipway.yml")
    }
}

// MARK: - Matrix expansion (GitHub Actions' documented examples)

@Suite struct MatrixExpansionTests {
    static func matrix(_ yaml: String) throws -> Matrix {
        let pipeline = try load("jobs:\n  m:\n    steps: [ { run: x } ]\n    strategy:\n      matrix:\n" + yaml)
        return try #require(pipeline.jobs.first?.matrix)
    }

    @Test func cartesianProductInDimensionOrder() throws {
        let m = try Self.matrix("""
                    os: [linux, macos]
                    version: [10, 12, 14]

            """)
        #expect(MatrixExpansion.combinationCount(m) == 6)
        #expect(MatrixExpansion.expand(m).map(\.label) == [
            "linux, 10", "linux, 12", "linux, 14", "macos, 10", "macos, 12", "macos, 14",
        ])
    }

    /// docs.github.com "Expanding or adding matrix configurations" example.
    @Test func includeExtendsAndAddsLikeGitHub() throws {
        let m = try Self.matrix("""
                    fruit: [apple, pear]
                    animal: [cat, dog]
                    include:
                      - color: green
                      - color: pink
                        animal: cat
                      - fruit: apple
                        shape: circle
                      - fruit: banana
                      - fruit: banana
                        animal: cat

            """)
        #expect(combinations(m) == [
            ["fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"],
            ["fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"],
            ["fruit": "pear", "animal": "cat", "color": "pink"],
            ["fruit": "pear", "animal": "dog", "color": "green"],
            ["fruit": "banana"],
            ["fruit": "banana", "animal": "cat"],
        ])
    }

    /// docs.github.com "Excluding matrix configurations" example: 12 combinations, 3 excluded.
    @Test func excludeRemovesPartialMatchesLikeGitHub() throws {
        let m = try Self.matrix("""
                    os: [macos-latest, windows-latest]
                    version: [12, 14, 16]
                    environment: [staging, production]
                    exclude:
                      - os: macos-latest
                        version: 12
                        environment: production
                      - os: windows-latest
                        version: 16

            """)
        let result = combinations(m)
        #expect(result.count == 9)
        #expect(!result.contains(["os": "macos-latest", "version": "12", "environment": "production"]))
        #expect(!result.contains { $0["os"] == "windows-latest" && $0["version"] == "16" })
        #expect(result.contains(["os": "macos-latest", "version": "12", "environment": "staging"]))
    }

    /// docs.github.com "Example: Adding configurations": one include adds a key to one combination.
    @Test func includeAddsAVariableToOneCombination() throws {
        let m = try Self.matrix("""
                    os: [windows-latest, ubuntu-latest]
                    node: [14, 16]
                    include:
                      - os: windows-latest
                        node: 16
                        npm: 6

            """)
        #expect(combinations(m) == [
            ["os": "windows-latest", "node": "14"],
            ["os": "windows-latest", "node": "16", "npm": "6"],
            ["os": "ubuntu-latest", "node": "14"],
            ["os": "ubuntu-latest", "node": "16"],
        ])
    }

    /// An include that would overwrite an original value becomes a job of its own.
    @Test func includeNeverOverwritesOriginalValues() throws {
        let m = try Self.matrix("""
                    os: [linux]
                    include:
                      - os: windows
                        experimental: "true"

            """)
        #expect(combinations(m) == [["os": "linux"], ["os": "windows", "experimental": "true"]])
    }

    /// docs.github.com: a matrix with only `include` runs one job per entry.
    @Test func includeOnly() throws {
        let m = try Self.matrix("""
                    include:
                      - site: production
                        datacenter: site-a
                      - site: staging
                        datacenter: site-b

            """)
        #expect(MatrixExpansion.combinationCount(m) == 2)
        #expect(combinations(m) == [["site": "production", "datacenter": "site-a"], ["site": "staging", "datacenter": "site-b"]])
    }

    @Test func excludeIsAppliedBeforeInclude() throws {
        let m = try Self.matrix("""
                    shard: [1, 2]
                    exclude: [ { shard: 2 } ]
                    include: [ { shard: 2, slow: "yes" } ]

            """)
        #expect(combinations(m) == [["shard": "1"], ["shard": "2", "slow": "yes"]])
    }

    @Test func exactlyTheLimitIsAllowed() throws {
        let values = (1...16).map(String.init).joined(separator: ", ")
        let m = try Self.matrix("        a: [\(values)]\n        b: [\(values)]\n")
        #expect(MatrixExpansion.combinationCount(m) == 256)
        #expect(MatrixExpansion.expand(m).count == 256)
    }

    @Test func combinationLabelsAndExpressionValues() {
        let c = MatrixCombination([("shard", "1"), ("os", "linux")])
        #expect(c.label == "1, linux")
        #expect(c["os"] == "linux")
        #expect(c["missing"] == nil)
        #expect(JobInstance(jobID: "test", matrix: c).key == "test (1, linux)")
        #expect(JobInstance(jobID: "build").key == "build")
        #expect(c.expressionValue == .object(["shard": "1", "os": "linux"]))
    }
}

// MARK: - Run plans

@Suite struct RunPlanTests {
    static let pipelineText = """
        jobs:
          docs:
            steps: [ { run: make docs } ]
          build:
            steps: [ { run: make } ]
          test:
            needs: [build]
            strategy: { matrix: { shard: [1, 2], os: [linux, "${{ inputs.os }}"] } }
            steps: [ { run: make test } ]
          lint:
            needs: [build]
            steps: [ { run: make lint } ]
          package:
            needs: [test, lint]
            steps: [ { run: make package } ]
          publish:
            needs: [package, docs]
            steps: [ { run: make publish } ]
        """

    @Test func instancesInTopologicalOrderStableWithTheFile() throws {
        let pipeline = try load(Self.pipelineText)
        let plan = try RunPlan(pipeline: pipeline, matrixContext: ExpressionContext(values: ["inputs": ["os": "macos"]]))
        #expect(plan.instances.map(\.key) == [
            "docs", "build",
            "test (1, linux)", "test (1, macos)", "test (2, linux)", "test (2, macos)",
            "lint", "package", "publish",
        ])
        #expect(plan.needs["publish"] == ["package", "docs"])
        // Every instance comes after everything its job needs.
        let position = Dictionary(plan.instances.enumerated().map { ($1.key, $0) }, uniquingKeysWith: min)
        for (index, instance) in plan.instances.enumerated() {
            for need in plan.needs[instance.jobID] ?? [] {
                let needed = plan.instances.indices.filter { plan.instances[$0].jobID == need }
                #expect(needed.allSatisfy { $0 < index }, "\(instance.key) before \(need)")
            }
        }
        #expect(position.count == plan.instances.count)
    }

    @Test func jobSelectionIncludesWhatItNeeds() throws {
        let pipeline = try load(Self.pipelineText)
        let lint = try RunPlan(pipeline: pipeline, selecting: ["lint"])
        #expect(lint.instances.map(\.key) == ["build", "lint"])
        let package = try RunPlan(pipeline: pipeline, selecting: ["package"])
        #expect(Set(package.instances.map(\.jobID)) == ["build", "test", "lint", "package"])
        let two = try RunPlan(pipeline: pipeline, selecting: ["docs", "lint"])
        #expect(two.instances.map(\.key) == ["docs", "build", "lint"])
        let all = try RunPlan(pipeline: pipeline, selecting: [])
        #expect(all.instances.count == 9)
    }

    @Test func unknownSelectedJobSuggestsTheNearest() throws {
        let pipeline = try load(Self.pipelineText)
        #expect {
            try RunPlan(pipeline: pipeline, selecting: ["lnit"])
        } throws: { error in
            (error as? CoreError)?.message.contains("did you mean 'lint'?") == true
        }
    }

    @Test func matrixValueThatCannotRenderIsAnError() throws {
        let pipeline = try load("""
            jobs:
              a:
                strategy: { matrix: { v: ["${{ fromJSON('nope') }}"] } }
                steps: [ { run: x } ]
            """)
        #expect(throws: CoreError.self) { try RunPlan(pipeline: pipeline) }
    }
}

// MARK: - DAG

@Suite struct DAGTests {
    @Test func noCycleInADAG() {
        let edges = ["b": ["a"], "c": ["a", "b"], "d": ["c"]]
        #expect(DAG.findCycle(nodes: ["a", "b", "c", "d"], edges: edges) == nil)
    }

    @Test func findsTwoAndThreeJobCycles() throws {
        #expect(DAG.findCycle(nodes: ["a", "b"], edges: ["a": ["b"], "b": ["a"]]) == ["a", "b"])
        let three = try #require(DAG.findCycle(nodes: ["x", "a", "b", "c"], edges: ["a": ["b"], "b": ["c"], "c": ["a", "x"]]))
        #expect(three == ["a", "b", "c"])
        #expect(DAG.findCycle(nodes: ["s"], edges: ["s": ["s"]]) == ["s"])
    }

    @Test func findsACycleBehindAnAcyclicPrefix() throws {
        let cycle = try #require(DAG.findCycle(nodes: ["start", "m", "n"], edges: ["start": ["m"], "m": ["n"], "n": ["m"]]))
        #expect(cycle == ["m", "n"])
    }

    @Test func longChainsDoNotOverflowTheStack() {
        let nodes = (0..<20_000).map { "j\($0)" }
        var edges: [String: [String]] = [:]
        for i in 1..<nodes.count { edges[nodes[i]] = [nodes[i - 1]] }
        #expect(DAG.findCycle(nodes: nodes, edges: edges) == nil)
        #expect(DAG.topologicalOrder(nodes: nodes.reversed(), edges: edges) == nodes)
        edges[nodes[0]] = [nodes.last!]
        #expect(DAG.findCycle(nodes: nodes, edges: edges)?.count == nodes.count)
    }

    @Test func topologicalOrderIsStable() {
        let edges = ["c": ["a"], "b": ["c"]]
        #expect(DAG.topologicalOrder(nodes: ["a", "b", "c", "d"], edges: edges) == ["a", "d", "c", "b"])
    }

    @Test func closureAndAncestors() {
        let edges = ["b": ["a"], "c": ["b"], "d": ["a"]]
        #expect(DAG.closure(of: ["c"], nodes: ["a", "b", "c", "d"], edges: edges) == ["a", "b", "c"])
        #expect(DAG.ancestors(of: "c", edges: edges) == ["a", "b"])
        #expect(DAG.ancestors(of: "a", edges: edges).isEmpty)
    }
}

// MARK: - Glob

@Suite struct GlobTests {
    @Test(arguments: [
        ("src/**", "src/main.swift", true),
        ("src/**", "src/a/b/c.swift", true),
        ("src/**", "srcs/a.swift", false),
        ("src/**", "src", false),
        ("**/*.xml", "report.xml", true),
        ("**/*.xml", "reports/unit/report.xml", true),
        ("**/*.xml", "reports/unit/report.json", false),
        ("a/**/b", "a/b", true),
        ("a/**/b", "a/x/b", true),
        ("a/**/b", "a/x/y/b", true),
        ("a/**/b", "a/xb", false),
        ("a/**/b", "a/x/yb", false),
        ("reports/*.xml", "reports/unit.xml", true),
        ("reports/*.xml", "reports/unit/x.xml", false),
        ("*", "Package.swift", true),
        ("*", "src/main.swift", false),
        ("release/*", "release/1.2", true),
        ("release/*", "release/1.2/hotfix", false),
        ("release/*", "release/", true),
        ("file?.txt", "file1.txt", true),
        ("file?.txt", "file12.txt", false),
        ("file?.txt", "file/.txt", false),
        ("v[0-9].*", "v1.2", true),
        ("v[0-9].*", "vx.2", false),
        ("[abc]x", "bx", true),
        ("[abc]x", "dx", false),
        ("[!abc]x", "dx", true),
        ("[^abc]x", "ax", false),
        ("[]]x", "]x", true),
        ("a[", "a[", true),
        ("\\*.md", "*.md", true),
        ("\\*.md", "x.md", false),
        ("Package.swift", "Package.swift", true),
        ("Package.swift", "Package.swiftx", false),
        ("", "", true),
        ("", "a", false),
    ])
    func matches(pattern: String, path: String, expected: Bool) {
        #expect(Glob(pattern).matches(path) == expected, "\(pattern) ~ \(path)")
    }

    @Test func negationLists() {
        let patterns = ["src/**", "!src/generated/**", "src/generated/keep.swift"]
        #expect(Glob.matchesList(patterns, "src/app/main.swift"))
        #expect(!Glob.matchesList(patterns, "src/generated/api.swift"))
        #expect(Glob.matchesList(patterns, "src/generated/keep.swift"))
        #expect(!Glob.matchesList(patterns, "docs/readme.md"))
        #expect(!Glob.matchesList([], "anything"))
        #expect(!Glob.matchesList(["!*"], "a"))
    }

    @Test func literalPrefixAndWildcards() {
        #expect(Glob("src/**/*.swift").literalPrefix == "src")
        #expect(Glob("reports/unit/*.xml").literalPrefix == "reports/unit")
        #expect(Glob("*.xml").literalPrefix == "")
        #expect(Glob("dist/app.tar.gz").literalPrefix == "dist/app.tar.gz")
        #expect(Glob("a/[bc]/d").literalPrefix == "a")
        #expect(Glob("src/**").hasWildcards)
        #expect(!Glob("Package.swift").hasWildcards)
    }

    @Test func pathologicalPatternsFinish() {
        let pattern = String(repeating: "*a", count: 40) + "b"
        let clock = ContinuousClock()
        let elapsed = clock.measure { _ = Glob(pattern).matches(String(repeating: "a", count: 40)) }
        #expect(elapsed < .seconds(5))
        #expect(!Glob(String(repeating: "**/", count: 100) + "x").matches(String(repeating: "d/", count: 10) + "y"))
    }
}

// MARK: - Triggers

@Suite struct TriggerMatcherTests {
    static func triggers(_ on: String) throws -> Triggers {
        try load("on:\n" + on + "\njobs: { a: { steps: [ { run: x } ] } }").triggers
    }

    @Test func pushBranchFilters() throws {
        let t = try Self.triggers("  push: { branches: [main, \"release/*\"] }")
        #expect(TriggerMatcher.decide(t, event: "push", branch: "main").matches)
        #expect(TriggerMatcher.decide(t, event: "push", branch: "release/1.0").matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: "release/1.0/hotfix").matches)
        let feature = TriggerMatcher.decide(t, event: "push", branch: "feature/x")
        #expect(!feature.matches)
        #expect(feature.reason.contains("does not match"))
        #expect(!TriggerMatcher.decide(t, event: "pull_request", branch: "main").matches)
        #expect(TriggerMatcher.decide(t, event: "pull_request", branch: "main").reason.contains("does not list"))
    }

    @Test func branchNegationAndIgnore() throws {
        let t = try Self.triggers("""
              push: { branches: ["**", "!wip/**"] }
              pull_request: { branches-ignore: ["dependabot/**", docs] }
            """)
        #expect(TriggerMatcher.decide(t, event: "push", branch: "feature/a").matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: "wip/a/b").matches)
        #expect(TriggerMatcher.decide(t, event: "pull_request", branch: "main").matches)
        #expect(!TriggerMatcher.decide(t, event: "pull_request", branch: "dependabot/npm/x").matches)
        #expect(!TriggerMatcher.decide(t, event: "pull_request", branch: "docs").matches)
        #expect(TriggerMatcher.decide(t, event: "pull_request", branch: "docs2").matches)
    }

    @Test func pathFiltersApplyOnlyWhenChangedFilesAreKnown() throws {
        let t = try Self.triggers("""
              push: { branches: [main], paths: ["src/**", Package.swift] }
              pull_request: { paths-ignore: ["docs/**", "*.md"] }
            """)
        #expect(TriggerMatcher.decide(t, event: "push", branch: "main").matches)
        #expect(TriggerMatcher.decide(t, event: "push", branch: "main", changedFiles: ["src/a.swift", "README.md"]).matches)
        #expect(TriggerMatcher.decide(t, event: "push", branch: "main", changedFiles: ["Package.swift"]).matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: "main", changedFiles: ["docs/x.md"]).matches)
        #expect(!TriggerMatcher.decide(t, event: "pull_request", branch: "x", changedFiles: ["docs/a.md", "README.md"]).matches)
        #expect(TriggerMatcher.decide(t, event: "pull_request", branch: "x", changedFiles: ["docs/a.md", "src/a.swift"]).matches)
    }

    @Test func tags() throws {
        let t = try Self.triggers("  push: { tags: [\"v*\"] }")
        #expect(TriggerMatcher.decide(t, event: "push", branch: nil, tag: "v1.2.3").matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: nil, tag: "nightly").matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: "main").matches)
        let branchesOnly = try Self.triggers("  push: { branches: [main] }")
        #expect(!TriggerMatcher.decide(branchesOnly, event: "push", branch: nil, tag: "v1").matches)
    }

    @Test func scheduleAndManual() throws {
        let t = try Self.triggers("""
              schedule: [ { cron: "*/15 * * * 1-5" } ]
              manual: {}
            """)
        #expect(TriggerMatcher.decide(t, event: "schedule", branch: "main").matches)
        #expect(TriggerMatcher.decide(t, event: "manual", branch: "main").matches)
        #expect(!TriggerMatcher.decide(t, event: "push", branch: "main").matches)
        let unknown = TriggerMatcher.decide(t, event: "tag", branch: nil)
        #expect(!unknown.matches)
        #expect(unknown.reason.contains("unknown event"))
        let pushOnly = try Self.triggers("  push:")
        #expect(!TriggerMatcher.decide(pushOnly, event: "schedule", branch: nil).matches)
        #expect(!TriggerMatcher.decide(pushOnly, event: "manual", branch: nil).matches)
        #expect(TriggerMatcher.decide(pushOnly, event: "push", branch: "any/branch").matches)
    }
}

@Suite struct ZeroDelayTests {
    @Test func delaysMayBeZeroButTimeoutsMayNot() throws {
        let text = """
            jobs:
              a: { steps: [ { run: "true" } ] }
            environments:
              p:
                target: { local: { instances: 1, command: "x", listen: 18001 } }
                strategy:
                  blue-green:
                    scale-down-delay: 0s
                    pre-promotion: { interval: 5s, initial-delay: 0s, metrics: [ { name: e, source: router, metric: error-rate, max: 1 } ] }
            """
        let pipeline = try load(text)
        guard case .blueGreen(let bg) = pipeline.environments.first?.strategy else { Issue.record("not blue-green"); return }
        #expect(bg.scaleDownDelay == .zero)
        #expect(bg.prePromotion?.initialDelay == .zero)
        let bad = PipelineLoader.load(text: "jobs:\n  a: { timeout: 0s, steps: [ { run: \"true\" } ] }\n", file: "slipway.yml")
        #expect(bad.errors.contains { $0.message.contains("'0s' is not a duration") })
    }
}

@Suite struct ConcurrencyPolicyTests {
    @Test func mappingAndShorthandFormsAndTheGroupName() throws {
        let mapped = try load("concurrency: { group: \"deploy-${{ branch }}-${{ event }}\", cancel-in-progress: true }\njobs:\n  a: { steps: [ { run: make } ] }\n")
        let policy = try #require(mapped.concurrency)
        #expect(policy.cancelInProgress)
        #expect(policy.groupName(event: "push", branch: "main") == "deploy-main-push")
        let plain = try load("concurrency: releases\njobs:\n  a: { steps: [ { run: make } ] }\n")
        #expect(plain.concurrency == ConcurrencyPolicy(group: "releases", cancelInProgress: false))
        #expect(plain.concurrency?.groupName(event: "manual", branch: nil) == "releases")
    }
}

/// The byte check of ASCII job ids agrees with the Unicode rule (a letter or `_`, then letters, digits, `_`, `-`;
/// at most 100 characters) on random ASCII ids, controls and punctuation included, and around the length limit.
@Test func asciiIdentifierCheckAgreesWithTheUnicodeRule() {
    func rule(_ id: String) -> Bool {
        guard let first = id.unicodeScalars.first, first == "_" || CharacterSet.letters.contains(first) else { return false }
        return id.unicodeScalars.allSatisfy { $0 == "_" || $0 == "-" || CharacterSet.alphanumerics.contains($0) } && id.count <= 100
    }
    var rng = SplitMix64(seed: 0x1D5)
    var valid = 0
    for _ in 0..<20000 {
        let length = Int(rng.next() % 7)
        let id = String(decoding: (0..<length).map { _ in UInt8(rng.next() % 128) }, as: UTF8.self)
        #expect(PipelineLoader.isValidIdentifier(id) == rule(id), "\(id.debugDescription)")
        if rule(id) { valid += 1 }
    }
    #expect(valid > 100)
    for id in [String(repeating: "a", count: 100), String(repeating: "a", count: 101), "é-job", "job_1-x", "1job", "-x", "_"] {
        #expect(PipelineLoader.isValidIdentifier(id) == rule(id), "\(id)")
    }
}
