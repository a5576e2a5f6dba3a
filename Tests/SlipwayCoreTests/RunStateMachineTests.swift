import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayCore

/// Drives the state machine by hand: no processes, no I/O.
struct RunStateMachineTests {
    func pipeline(_ yaml: String) throws -> Pipeline {
        let result = PipelineLoader.load(text: yaml, file: "test.yml")
        #expect(result.errors.isEmpty, "\(result.errors)")
        return try #require(result.pipeline)
    }

    func machine(_ yaml: String, parallelism: Int = 4, targets: [String]? = nil, previous: [InstanceRecord] = []) throws -> RunStateMachine {
        let plan = try RunPlan(pipeline: try pipeline(yaml), selecting: targets)
        let context = ExpressionContext(values: ["branch": .string("main"), "event": .string("push")])
        return RunStateMachine(plan: plan, baseContext: context, parallelism: parallelism, previous: previous)
    }

    static func started(_ actions: [RunStateMachine.Action]) -> [String] {
        actions.compactMap { if case .startAttempt(let key, _, _) = $0 { key } else { nil } }
    }

    static func finished(_ actions: [RunStateMachine.Action]) -> [String: JobResult] {
        var result: [String: JobResult] = [:]
        for action in actions { if case .finishInstance(let key, let r, _, _) = action { result[key] = r } }
        return result
    }

    static func runResult(_ actions: [RunStateMachine.Action]) -> JobResult? {
        for action in actions { if case .finishRun(let r) = action { return r } }
        return nil
    }

    let diamond = """
    jobs:
      a: { steps: [ { run: x } ] }
      b: { needs: [a], steps: [ { run: x } ] }
      c: { needs: [a], steps: [ { run: x } ] }
      d: { needs: [b, c], steps: [ { run: x } ] }
    """

    @Test func diamondRunsInDependencyOrder() throws {
        var m = try machine(diamond)
        #expect(Self.started(m.handle(.start)) == ["a"])
        let afterA = m.handle(.attemptFinished(key: "a", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Set(Self.started(afterA)) == ["b", "c"])
        #expect(Self.started(m.handle(.attemptFinished(key: "b", attempt: 1, outcome: .succeeded(outputs: [:])))).isEmpty)
        let afterC = m.handle(.attemptFinished(key: "c", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.started(afterC) == ["d"])
        let end = m.handle(.attemptFinished(key: "d", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.runResult(end) == .success)
        #expect(m.isFinished)
    }

    /// A matrix that lists a value twice plans two instances with one key: they are one job, which runs once,
    /// and the run ends when it does (two attempts of one key would share its logs, outputs and rows).
    @Test func instancesWithTheSameKeyRunOnce() throws {
        var m = try machine("""
        jobs:
          test:
            strategy: { matrix: { shard: [1, 1, 2] } }
            steps: [ { run: x } ]
          after: { needs: [test], steps: [ { run: x } ] }
        """)
        let keys = m.plan.instances.map(\.key)
        #expect(keys.count == 4 && Set(keys).count == 3, "\(keys)")
        let first = Self.started(m.handle(.start))
        #expect(first.count == 2 && Set(first).count == 2, "\(first)")
        var next: [RunStateMachine.Action] = []
        for key in first { next += m.handle(.attemptFinished(key: key, attempt: 1, outcome: .succeeded(outputs: [:]))) }
        #expect(Self.started(next) == ["after"])
        let end = m.handle(.attemptFinished(key: "after", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.runResult(end) == .success)
        #expect(m.isFinished)
    }

    /// Random DAGs mixing plain jobs (no needs, no `if`) with jobs that have needs or conditions, random
    /// outcomes, parallelism 1 to 3: every job ends exactly once, none starts before its needs end or while
    /// the slots are full, one whose need failed is skipped unless `always()`, and slots are never left idle
    /// while a ready job waits.
    @Test func randomDAGsScheduleEveryJobOnceWithinTheLimits() throws {
        var rng = SplitMix64(seed: 0x5CED)
        for round in 0..<150 {
            let count = 2 + Int(rng.next() % 14)
            var lines = ["jobs:"]
            var needsOf: [String: [String]] = [:]
            var always: Set<String> = []
            for j in 0..<count {
                var needs: [String] = []
                if j > 0, rng.next() % 2 == 0 {
                    for k in 0..<j where rng.next() % 3 == 0 { needs.append("j\(k)") }
                }
                needsOf["j\(j)"] = needs
                var fields = ["steps: [ { run: x } ]"]
                if !needs.isEmpty { fields.append("needs: [\(needs.joined(separator: ", "))]") }
                switch rng.next() % 6 {
                case 0: fields.append("if: always()"); always.insert("j\(j)")
                case 1: fields.append("if: success()")
                default: break
                }
                lines.append("  j\(j): { \(fields.joined(separator: ", ")) }")
            }
            let parallelism = 1 + Int(rng.next() % 3)
            var m = try machine(lines.joined(separator: "\n"), parallelism: parallelism)
            var results: [String: JobResult] = [:]
            var running: [String] = []
            var actions = m.handle(.start)
            var turns = 0
            while true {
                turns += 1
                try #require(turns < 200, "round \(round): the run does not end")
                for (key, result) in Self.finished(actions) {
                    #expect(results[key] == nil, "round \(round): \(key) finished twice")
                    results[key] = result
                }
                for key in Self.started(actions) {
                    #expect(results[key] == nil && !running.contains(key), "round \(round): \(key) started twice")
                    for need in needsOf[key] ?? [] { #expect(results[need] != nil, "round \(round): \(key) started before \(need) ended") }
                    if !always.contains(key) {
                        #expect((needsOf[key] ?? []).allSatisfy { results[$0] == .success }, "round \(round): \(key) ran after a failed need")
                    }
                    running.append(key)
                }
                #expect(running.count <= parallelism, "round \(round): \(running.count) running, limit \(parallelism)")
                if Self.runResult(actions) != nil || running.isEmpty { break }
                // Every slot is used while some pending job has all its needs ended.
                let ready = needsOf.keys.filter { results[$0] == nil && !running.contains($0) && needsOf[$0]!.allSatisfy { results[$0] != nil } }
                #expect(ready.isEmpty || running.count == parallelism, "round \(round): \(ready) ready with a free slot")
                let key = running.remove(at: Int(rng.next() % UInt64(running.count)))
                let outcome: AttemptOutcome = rng.next() % 4 == 0 ? .failed(.exit(1), outputs: [:]) : .succeeded(outputs: [:])
                actions = m.handle(.attemptFinished(key: key, attempt: 1, outcome: outcome))
            }
            #expect(results.count == count, "round \(round): \(count - results.count) job(s) never ended")
            #expect(m.isFinished)
        }
    }

    @Test func parallelismLimitsRunningJobs() throws {
        let yaml = "jobs:\n" + (1...5).map { "  j\($0): { steps: [ { run: x } ] }" }.joined(separator: "\n")
        var m = try machine(yaml, parallelism: 2)
        let first = Self.started(m.handle(.start))
        #expect(first.count == 2)
        let next = Self.started(m.handle(.attemptFinished(key: first[0], attempt: 1, outcome: .succeeded(outputs: [:]))))
        #expect(next.count == 1)
        #expect(m.runningCount == 2)
    }

    @Test func failedNeedSkipsDependentsButAlwaysRuns() throws {
        let yaml = """
        jobs:
          build: { steps: [ { run: x } ] }
          test: { needs: [build], steps: [ { run: x } ] }
          cleanup: { needs: [test], if: "${{ always() }}", steps: [ { run: x } ] }
          notify: { needs: [test], if: "${{ failure() }}", steps: [ { run: x } ] }
          deploy: { needs: [test], if: "${{ success() }}", steps: [ { run: x } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let actions = m.handle(.attemptFinished(key: "build", attempt: 1, outcome: .failed(.exit(2), outputs: [:])))
        let finished = Self.finished(actions)
        #expect(finished["build"] == .failure)
        #expect(finished["test"] == .skipped)
        #expect(finished["deploy"] == .skipped)
        #expect(Set(Self.started(actions)) == ["cleanup", "notify"])
        _ = m.handle(.attemptFinished(key: "cleanup", attempt: 1, outcome: .succeeded(outputs: [:])))
        let end = m.handle(.attemptFinished(key: "notify", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.runResult(end) == .failure)
    }

    @Test func retriesOnlyListedFailures() throws {
        let yaml = """
        jobs:
          flaky: { retry: { max: 2, on: ["exit:75", timeout] }, steps: [ { run: x } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        var actions = m.handle(.attemptFinished(key: "flaky", attempt: 1, outcome: .failed(.exit(75), outputs: [:])))
        #expect(actions.contains { if case .startAttempt("flaky", 2, _) = $0 { true } else { false } })
        actions = m.handle(.attemptFinished(key: "flaky", attempt: 2, outcome: .failed(.timeout, outputs: [:])))
        #expect(actions.contains { if case .startAttempt("flaky", 3, _) = $0 { true } else { false } })
        actions = m.handle(.attemptFinished(key: "flaky", attempt: 3, outcome: .failed(.timeout, outputs: [:])))
        #expect(Self.finished(actions)["flaky"] == .failure)
        #expect(Self.runResult(actions) == .failure)

        var other = try machine(yaml)
        _ = other.handle(.start)
        let noRetry = other.handle(.attemptFinished(key: "flaky", attempt: 1, outcome: .failed(.exit(1), outputs: [:])))
        #expect(Self.started(noRetry).isEmpty)
        #expect(Self.finished(noRetry)["flaky"] == .failure)
    }

    @Test func aLostRunnerQueuesTheJobAgainWithoutUsingItsRetries() throws {
        let yaml = """
        jobs:
          build: { retry: 1, steps: [ { run: x } ] }
          strict: { retry: { max: 0, lost: 0 }, steps: [ { run: x } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        // Two lost runners (the default budget), then a real failure still has its one retry.
        var actions = m.handle(.attemptFinished(key: "build", attempt: 1, outcome: .failed(.runnerLost("runner 'a' was lost"), outputs: [:])))
        #expect(actions.contains { if case .startAttempt("build", 2, let reason) = $0 { reason.contains("runner 'a' was lost") } else { false } })
        actions = m.handle(.attemptFinished(key: "build", attempt: 2, outcome: .failed(.runnerLost("runner 'b' was lost"), outputs: [:])))
        #expect(actions.contains { if case .startAttempt("build", 3, _) = $0 { true } else { false } })
        actions = m.handle(.attemptFinished(key: "build", attempt: 3, outcome: .failed(.exit(1), outputs: [:])))
        #expect(actions.contains { if case .startAttempt("build", 4, let reason) = $0 { reason.hasPrefix("retry 1 of 1") } else { false } })
        actions = m.handle(.attemptFinished(key: "build", attempt: 4, outcome: .failed(.exit(1), outputs: [:])))
        #expect(Self.finished(actions)["build"] == .failure)

        // `retry.lost: 0`: a lost runner fails the job at once, with the reason.
        actions = m.handle(.attemptFinished(key: "strict", attempt: 1, outcome: .failed(.runnerLost("runner 'c' was lost"), outputs: [:])))
        #expect(Self.started(actions).isEmpty)
        #expect(actions.contains { if case .finishInstance("strict", .failure, _, let reason) = $0 { reason.contains("runner 'c' was lost") } else { false } })
    }

    /// After a restart the lost attempts so far still count: the budget is per job, not per process.
    @Test func lostAttemptsBeforeARestartStillSpendTheBudget() throws {
        let yaml = "jobs:\n  build: { retry: { max: 1, lost: 2 }, steps: [ { run: x } ] }\n"
        // Attempts 1 and 2 were lost before the restart, attempt 3 was interrupted by it.
        var m = try machine(yaml, previous: [InstanceRecord(key: "build", result: nil, attempts: 3, lostAttempts: 2)])
        let resumed = m.handle(.start)
        #expect(resumed.contains { if case .startAttempt("build", 4, _) = $0 { true } else { false } })
        // A third lost runner is past `retry.lost: 2`: the job fails instead of being queued again.
        let actions = m.handle(.attemptFinished(key: "build", attempt: 4, outcome: .failed(.runnerLost("runner 'c' was lost"), outputs: [:])))
        #expect(Self.started(actions).isEmpty)
        #expect(Self.finished(actions)["build"] == .failure)

        // Without the record of those losses the same event would have been queued again.
        var forgetful = try machine(yaml, previous: [InstanceRecord(key: "build", result: nil, attempts: 3)])
        _ = forgetful.handle(.start)
        let requeued = forgetful.handle(.attemptFinished(key: "build", attempt: 4, outcome: .failed(.runnerLost("runner 'c' was lost"), outputs: [:])))
        #expect(Self.started(requeued) == ["build"])
    }

    @Test func retryLostIsValidated() throws {
        let result = PipelineLoader.load(text: "jobs:\n  a: { retry: { max: 1, lost: 11 }, steps: [ { run: x } ] }\n", file: "test.yml")
        #expect(result.errors.contains { $0.message.contains("`retry.lost` must be between 0 and 10") && $0.location.line == 2 })
    }

    @Test func expressionContextsSurviveJSON() throws {
        let context = ExpressionContext(values: ["n": .number(.nan), "i": .number(-.infinity), "x": .number(1.5), "b": .bool(true),
                                                 "o": .object(["a": .array([.string("s"), .null])])],
                                        status: .init(anyNeedFailed: true, anyNeedCancelled: false, runCancelled: true))
        let decoded = try JSONDecoder().decode(ExpressionContext.self, from: JSONEncoder().encode(context))
        #expect(decoded.status == context.status)
        #expect(decoded.values["i"] == .number(-.infinity))
        #expect(decoded.values["x"] == .number(1.5))
        #expect(decoded.values["b"] == .bool(true))
        #expect(decoded.values["o"] == context.values["o"])
        if case .number(let n)? = decoded.values["n"] { #expect(n.isNaN) } else { Issue.record("NaN did not survive") }
    }

    @Test func staleAttemptEventsAreIgnored() throws {
        var m = try machine("jobs:\n  a: { retry: 1, steps: [ { run: x } ] }")
        _ = m.handle(.start)
        _ = m.handle(.attemptFinished(key: "a", attempt: 1, outcome: .failed(.exit(1), outputs: [:])))
        // A late report from attempt 1 must not finish attempt 2.
        #expect(m.handle(.attemptFinished(key: "a", attempt: 1, outcome: .succeeded(outputs: [:]))).isEmpty)
        #expect(m.result(of: "a") == nil)
    }

    @Test func failFastCancelsMatrixSiblings() throws {
        let yaml = """
        jobs:
          test:
            strategy: { matrix: { shard: [1, 2, 3] }, max-parallel: 2 }
            steps: [ { run: x } ]
        """
        var m = try machine(yaml)
        let started = Self.started(m.handle(.start))
        #expect(started == ["test (1)", "test (2)"])
        let actions = m.handle(.attemptFinished(key: "test (1)", attempt: 1, outcome: .failed(.exit(1), outputs: [:])))
        #expect(actions.contains(.cancelAttempt(key: "test (2)", reason: "fail-fast: 'test (1)' failed")))
        #expect(Self.finished(actions)["test (3)"] == .cancelled)
        let end = m.handle(.attemptFinished(key: "test (2)", attempt: 1, outcome: .cancelled))
        #expect(Self.runResult(end) == .failure)
    }

    @Test func failFastFalseLetsSiblingsFinish() throws {
        let yaml = """
        jobs:
          test:
            strategy: { matrix: { shard: [1, 2] }, fail-fast: false }
            steps: [ { run: x } ]
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let actions = m.handle(.attemptFinished(key: "test (1)", attempt: 1, outcome: .failed(.exit(1), outputs: [:])))
        #expect(!actions.contains { if case .cancelAttempt = $0 { true } else { false } })
        #expect(m.result(of: "test (2)") == nil)
    }

    @Test func continueOnErrorCountsAsSuccessForDependents() throws {
        let yaml = """
        jobs:
          lint: { continue-on-error: true, steps: [ { run: x } ] }
          release: { needs: [lint], steps: [ { run: x } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let actions = m.handle(.attemptFinished(key: "lint", attempt: 1, outcome: .failed(.exit(1), outputs: [:])))
        #expect(Self.started(actions) == ["release"])
        let end = m.handle(.attemptFinished(key: "release", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.runResult(end) == .success)
    }

    @Test func outputsAndResultsReachNeedsContext() throws {
        let yaml = """
        jobs:
          build: { outputs: [version], steps: [ { run: x } ] }
          ship: { needs: [build], if: "${{ needs.build.outputs.version == '1.2' }}", steps: [ { run: "echo ${{ needs.build.outputs.version }}" } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let actions = m.handle(.attemptFinished(key: "build", attempt: 1, outcome: .succeeded(outputs: ["version": "1.2"])))
        #expect(Self.started(actions) == ["ship"])
        let context = m.context(for: JobInstance(jobID: "ship"))
        let resolved = try ResolvedJob.resolve(JobInstance(jobID: "ship"), in: m.plan.pipeline, context: context)
        #expect(resolved.steps[0].run == "echo 1.2")
        #expect(try Expression(parsing: "needs.build.result").evaluate(in: context) == .string("success"))
    }

    /// Each `env` value sees the ones before it (pipeline, then job), steps see all of them, and a job without
    /// needs or matrix still finds both contexts, empty.
    @Test func envValuesSeeEarlierOnesAndPlainJobsSeeEmptyNeedsAndMatrix() throws {
        let yaml = """
        env: { A: one, B: "${{ env.A }}-two" }
        jobs:
          plain:
            env: { C: "${{ env.B }}-three", D: "${{ env.C }}!" }
            steps:
              - run: "echo ${{ env.D }} ${{ matrix.x }}"
                env: { E: "${{ env.A }}${{ matrix.y }}" }
              - run: echo literal
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let context = m.context(for: JobInstance(jobID: "plain"))
        #expect(context.values["needs"] == .object([:]))
        #expect(context.values["matrix"] == .object([:]))
        #expect(m.baseContext.values["needs"] == nil)
        let resolved = try ResolvedJob.resolve(JobInstance(jobID: "plain"), in: m.plan.pipeline, context: context)
        #expect(resolved.env == ["A": "one", "B": "one-two", "C": "one-two-three", "D": "one-two-three!"])
        #expect(resolved.steps[0].run == "echo one-two-three! ")
        #expect(resolved.steps[0].env == ["E": "one"])
        #expect(resolved.steps[1].run == "echo literal")
    }

    @Test func falseConditionSkipsWithReason() throws {
        var m = try machine("jobs:\n  a: { if: \"${{ branch == 'release' }}\", steps: [ { run: x } ] }")
        let actions = m.handle(.start)
        guard case .finishInstance("a", .skipped, _, let reason)? = actions.first else {
            Issue.record("expected a skip, got \(actions)")
            return
        }
        #expect(reason.contains("was false"))
        #expect(Self.runResult(actions) == .success)
    }

    @Test func cancellationCancelsRunningAndPendingButRunsAlwaysJobs() throws {
        let yaml = """
        jobs:
          a: { steps: [ { run: x } ] }
          b: { needs: [a], steps: [ { run: x } ] }
          cleanup: { needs: [a], if: "${{ always() }}", steps: [ { run: x } ] }
        """
        var m = try machine(yaml)
        _ = m.handle(.start)
        let cancel = m.handle(.cancelRequested)
        #expect(cancel.contains { if case .cancelAttempt("a", _) = $0 { true } else { false } })
        let actions = m.handle(.attemptFinished(key: "a", attempt: 1, outcome: .cancelled))
        #expect(Self.finished(actions)["b"] == .cancelled)
        #expect(Self.finished(actions)["a"] == .cancelled)
        #expect(Self.started(actions) == ["cleanup"])
        let end = m.handle(.attemptFinished(key: "cleanup", attempt: 1, outcome: .succeeded(outputs: [:])))
        #expect(Self.runResult(end) == .cancelled)
    }

    @Test func resumeKeepsFinishedJobsAndRestartsInterruptedOnes() throws {
        let previous = [
            InstanceRecord(key: "a", result: .success, attempts: 1, outputs: ["v": "1"]),
            InstanceRecord(key: "b", result: nil, attempts: 1),
        ]
        var m = try machine("jobs:\n  a: { steps: [ { run: x } ] }\n  b: { needs: [a], steps: [ { run: x } ] }\n  c: { needs: [b], steps: [ { run: x } ] }", previous: previous)
        let actions = m.handle(.start)
        #expect(actions == [.startAttempt(key: "b", attempt: 2, reason: "attempt 2 (the previous attempt was interrupted)")])
        #expect(m.outputs["a"] == ["v": "1"])
    }

    @Test func jobSelectionIncludesTransitiveNeeds() throws {
        let plan = try RunPlan(pipeline: try pipeline(diamond), selecting: ["c"])
        #expect(plan.instances.map(\.key) == ["a", "c"])
        #expect(throws: CoreError.self) { try RunPlan(pipeline: try pipeline(diamond), selecting: ["e"]) }
    }
}

struct KeyValueFileTests {
    @Test func parsesPairsAndHeredocs() {
        let (values, problems) = KeyValueFile.parse("a=1\nb=x=y\n# comment\nnotes<<EOF\nline 1\nline 2\nEOF\nempty=\n")
        #expect(problems.isEmpty)
        #expect(values.map(\.0) == ["a", "b", "notes", "empty"])
        #expect(values[1].1 == "x=y")
        #expect(values[2].1 == "line 1\nline 2")
        #expect(values[3].1 == "")
    }

    @Test func reportsProblemsWithLineNumbers() {
        let (_, problems) = KeyValueFile.parse("ok=1\nnot a pair\nx<<END\nnever closed")
        #expect(problems.map(\.line) == [2, 4])
    }
}

struct CacheKeyTests {
    func resolved(_ run: String) -> ResolvedJob {
        ResolvedJob(key: "b", jobID: "b", matrix: [:], env: [:], steps: [.init(name: "s", run: run, env: [:], workingDirectory: nil, timeoutMilliseconds: nil, continueOnError: false, condition: nil, uses: nil, with: nil)], timeoutMilliseconds: nil, outputs: [], artifacts: [], cacheInputs: ["src/**"], junitReports: [], release: nil)
    }

    @Test func keyChangesWithEachComponentAndNamesIt() {
        let base = CacheKey.make(job: resolved("make"), inputFiles: ["src/a.c": "1"], upstream: ["a": "x"])
        #expect(base.digest == CacheKey.make(job: resolved("make"), inputFiles: ["src/a.c": "1"], upstream: ["a": "x"]).digest)
        let file = CacheKey.make(job: resolved("make"), inputFiles: ["src/a.c": "2"], upstream: ["a": "x"])
        #expect(file.digest != base.digest)
        #expect(file.differences(from: base) == ["input file 'src/a.c' changed"])
        let command = CacheKey.make(job: resolved("make all"), inputFiles: ["src/a.c": "1"], upstream: ["a": "x"])
        #expect(command.differences(from: base).first?.contains("job definition") == true)
        let upstream = CacheKey.make(job: resolved("make"), inputFiles: ["src/a.c": "1", "src/b.c": "3"], upstream: ["a": "y"])
        #expect(upstream.differences(from: base) == ["input file 'src/b.c' is new", "outputs/artifacts of needed job 'a' changed"])
    }
}
