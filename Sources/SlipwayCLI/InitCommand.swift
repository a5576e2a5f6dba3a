import ArgumentParser
import Foundation
import SlipwayCore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Write a commented starter slipway.yml.")

    @Option(name: [.short, .long], help: "Where to write the pipeline file.")
    var file: String = "slipway.yml"

    @Flag(help: "Overwrite an existing file.")
    var force = false

    func run() throws {
        if FileManager.default.fileExists(atPath: file), !force {
            throw CLIError.badInput("\(file) already exists; use --force to overwrite it")
        }
        guard FileManager.default.createFile(atPath: file, contents: Data(Self.starter.utf8)) else {
            throw CLIError.failure("cannot write \(file)")
        }
        // The starter must always be valid: it is the first thing a user runs (a test checks it too).
        let result = PipelineLoader.load(text: Self.starter, file: file)
        if let problem = result.errors.first { throw CLIError.failure("the starter pipeline is invalid (a Slipway bug): \(problem)") }
        Terminal.print("wrote \(file) (\(result.pipeline?.jobs.count ?? 0) jobs). Next: `slipway validate` then `slipway run`.")
    }

    static let starter = """
    # slipway.yml: the pipeline Slipway runs. Reference: docs/pipeline.md
    name: my-service

    # When the pipeline runs. `slipway run --event push --branch main` checks these filters locally.
    on:
      push: { branches: [main, "release/*"] }
      pull_request: {}
      manual: {}

    # Environment for every step of every job.
    env:
      APP: my-service

    jobs:
      build:
        timeout: 10m                      # durations: 500ms, 30s, 10m, 1h
        cache: { inputs: ["src/**", "Makefile"] }   # skip the job when these files did not change
        steps:
          - name: compile
            run: |
              mkdir -p dist
              echo "built $APP" > dist/app.txt
          - name: version
            run: echo "version=1.0.0+${SLIPWAY_COMMIT:0:7}" >> "$SLIPWAY_OUTPUT"
        outputs: [version]                # read as ${{ needs.build.outputs.version }}
        artifacts: [dist/]                # copied into the workspace of jobs that need this one

      test:
        needs: [build]
        strategy:
          matrix: { shard: [1, 2] }
          fail-fast: false
        retry: { max: 1, on: [timeout, "exit:75"] }
        steps:
          - run: test -f dist/app.txt && echo "shard ${{ matrix.shard }} of version ${{ needs.build.outputs.version }}"

      report:
        needs: [test]
        if: ${{ always() }}              # runs even when tests fail, like a clean-up or notification
        steps:
          - run: echo "tests finished with '${{ needs.test.result }}'"
    """
}

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "validate", abstract: "Check a pipeline file and report every problem at once.")

    @Argument(help: "The pipeline file.")
    var file: String = "slipway.yml"

    func run() throws {
        let url = URL(fileURLWithPath: file)
        let result = PipelineLoader.load(contentsOf: url, displayName: file)
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        DiagnosticRenderer.print(result.diagnostics, source: text)
        guard let pipeline = result.pipeline else {
            let count = result.errors.count
            throw CLIError.badInput("\(file): \(count) error\(count == 1 ? "" : "s")")
        }
        var instances = 0
        for job in pipeline.jobs { instances += job.matrix.map { MatrixExpansion.expand($0).count } ?? 1 }
        Terminal.print("\(file) is valid: \(pipeline.jobs.count) job\(pipeline.jobs.count == 1 ? "" : "s") (\(instances) with matrix expansion)")
    }
}
