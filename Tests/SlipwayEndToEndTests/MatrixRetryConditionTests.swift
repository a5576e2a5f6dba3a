import Foundation
import Testing

extension EndToEnd {
    @Suite("matrix")
    struct MatrixRuns {
        @Test("every combination runs, with include and exclude")
        func expansion() async throws {
            let box = try Sandbox("""
                name: matrix
                jobs:
                  m:
                    strategy:
                      matrix:
                        os: [linux, mac]
                        v: [1, 2, 3]
                        exclude:
                          - { os: mac, v: 3 }
                        include:
                          - { os: linux, v: 1, extra: big }
                          - { os: win, v: 9 }
                    steps:
                      - run: echo "${{ matrix.os }}-${{ matrix.v }}-${SLIPWAY_MATRIX_EXTRA:-none}-$SLIPWAY_MATRIX_OS" >> "$OUT/combos"
                """)
            let result = try await box.run("--jobs", "4")
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("combos").sorted() == [
                "linux-1-big-linux", "linux-2-none-linux", "linux-3-none-linux",
                "mac-1-none-mac", "mac-2-none-mac", "win-9-none-win",
            ])
        }

        @Test("max-parallel: 1 runs the combinations one at a time")
        func maxParallel() async throws {
            let box = try Sandbox("""
                name: serial
                jobs:
                  s:
                    strategy: { matrix: { n: [1, 2, 3] }, max-parallel: 1 }
                    steps: [{ run: '\(TimeLog.wrap("s${{ matrix.n }}", "sleep 0.3"))' }]
                  free:
                    strategy: { matrix: { n: [1, 2] } }
                    steps: [{ run: '\(TimeLog.wrap("f${{ matrix.n }}", "sleep 0.5"))' }]
                """)
            let result = try await box.run("--jobs", "4")
            #expect(result.status == 0, "\(result)")
            let log = TimeLog(box.lines("times"))
            let intervals = ["s1", "s2", "s3"].compactMap { name in log.starts[name].flatMap { s in log.ends[name].map { (s, $0) } } }
                .sorted { $0.0 < $1.0 }
            #expect(intervals.count == 3, "\(box.readOutside("times"))")
            for (previous, next) in zip(intervals, intervals.dropFirst()) {
                #expect(next.0 > previous.1, "two combinations of a max-parallel: 1 job overlapped")
            }
            // Without max-parallel the combinations of `free` overlap (so the check above can fail).
            let f1 = try #require(log.starts["f1"]), f2 = try #require(log.starts["f2"])
            let e1 = try #require(log.ends["f1"]), e2 = try #require(log.ends["f2"])
            #expect(max(f1, f2) < min(e1, e2), "free combinations should overlap")
        }

        static func failFastPipeline(failFast: Bool, marker: String) -> String {
            """
            name: failfast
            jobs:
              t:
                strategy:
                  matrix: { n: [1, 2, 3] }
                  fail-fast: \(failFast)
                steps:
                  - run: |
                      if [ "${{ matrix.n }}" = 1 ]; then
                        for i in $(seq 200); do [ "$(cat "$OUT/started" 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.05; done
                        exit 1
                      fi
                      echo "${{ matrix.n }}" >> "$OUT/started"
                      sleep \(marker)
                      echo "${{ matrix.n }}" >> "$OUT/done"
            """
        }

        @Test("fail-fast cancels the running siblings")
        func failFast() async throws {
            let marker = Processes.uniqueSleep(20)
            defer { Processes.killAll(marker) }
            let box = try Sandbox(Self.failFastPipeline(failFast: true, marker: marker))
            let result = try await box.run("--jobs", "4")
            #expect(result.status == 1, "\(result)")
            #expect(result.seconds < 8, "fail-fast should stop the 20 s siblings at once: \(result)")
            #expect(box.lines("started").sorted() == ["2", "3"])
            #expect(box.lines("done").isEmpty, "cancelled siblings must not finish")
            #expect(await Processes.survivors(marker).isEmpty, "cancelled siblings left processes behind")
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("t (2): cancelled"), "\(history)")
            #expect(history.stdout.contains("t (3): cancelled"), "\(history)")
            #expect(history.stdout.contains("t (1): failure"), "\(history)")
        }

        @Test("fail-fast: false lets the siblings finish")
        func noFailFast() async throws {
            let box = try Sandbox(Self.failFastPipeline(failFast: false, marker: "1"))
            let result = try await box.run("--jobs", "4")
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("done").sorted() == ["2", "3"])
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("t (2): success"), "\(history)")
            #expect(history.stdout.contains("t (1): failure"), "\(history)")
        }
    }

    @Suite("retries")
    struct Retries {
        @Test("a listed exit code is retried and succeeds on attempt 2; history shows both attempts")
        func retried() async throws {
            let box = try Sandbox("""
                name: retry
                jobs:
                  flaky:
                    retry: { max: 2, on: ["exit:3"] }
                    steps:
                      - run: |
                          echo "attempt $SLIPWAY_ATTEMPT" >> "$OUT/count"
                          if [ "$(wc -l < "$OUT/count")" -lt 2 ]; then exit 3; fi
                  after:
                    needs: [flaky]
                    steps: [{ run: 'echo after >> "$OUT/ran"' }]
                """)
            let result = try await box.run()
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("count") == ["attempt 1", "attempt 2"])
            #expect(box.lines("ran") == ["after"])
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("attempt 1: failure"), "\(history)")
            #expect(history.stdout.contains("exit code 3"), "\(history)")
            #expect(history.stdout.contains("attempt 2: success"), "\(history)")
            #expect(!history.stdout.contains("attempt 3"), "\(history)")
            // Attempts keep their own logs (a step that prints nothing has none).
            let logs = box.logFiles(run: 1)
            #expect(logs.keys.contains("flaky.1-1.log"), "\(logs.keys.sorted())")
            #expect(logs["flaky.1-1.log"]?.contains("exit code 3") == true, "\(logs)")
        }

        @Test("an exit code that is not listed is not retried")
        func notListed() async throws {
            let box = try Sandbox("""
                name: retry
                jobs:
                  flaky:
                    retry: { max: 2, on: ["exit:3"] }
                    steps:
                      - run: |
                          echo "attempt $SLIPWAY_ATTEMPT" >> "$OUT/count"
                          exit 4
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("count") == ["attempt 1"])
            let history = try await box.slipway("history", "1")
            #expect(!history.stdout.contains("attempt 2"), "\(history)")
        }

        @Test("retries stop after max; a timeout is retried when listed")
        func exhaustedAndTimeout() async throws {
            let box = try Sandbox("""
                name: retry
                jobs:
                  always-fails:
                    retry: { max: 2, on: [any] }
                    steps: [{ run: 'echo x >> "$OUT/fails"; exit 9' }]
                  slow-once:
                    retry: { max: 1, on: [timeout] }
                    steps:
                      - timeout: 500ms
                        run: |
                          echo x >> "$OUT/slow"
                          if [ "$SLIPWAY_ATTEMPT" = 1 ]; then sleep 30; fi
                """)
            let result = try await box.run("--jobs", "2")
            #expect(result.status == 1, "\(result)")
            #expect(box.count("fails") == 3, "max: 2 means three attempts in all")
            #expect(box.count("slow") == 2)
            #expect(result.seconds < 15, "\(result)")
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("slow-once: success"), "\(history)")
            #expect(history.stdout.contains("timed out"), "\(history)")
        }
    }

    @Suite("conditions")
    struct Conditions {
        static let pipeline = """
            name: conditions
            env: { CODE: "0" }
            jobs:
              build:
                steps: [{ run: 'echo build >> "$OUT/ran"; exit $CODE' }]
              after:
                needs: [build]
                steps: [{ run: 'echo after >> "$OUT/ran"' }]
              cleanup:
                needs: [after]
                if: ${{ always() }}
                steps: [{ run: 'echo "cleanup ${{ needs.after.result }}" >> "$OUT/ran"' }]
              on-failure:
                needs: [build]
                if: ${{ failure() }}
                steps: [{ run: 'echo on-failure >> "$OUT/ran"' }]
            """

        @Test("always() runs after a failure, needs of a failed job are skipped, failure() runs only on failure")
        func afterFailure() async throws {
            let box = try Sandbox(Self.pipeline)
            let failed = try await box.run("--env", "CODE=1")
            #expect(failed.status == 1, "\(failed)")
            #expect(Set(box.lines("ran")) == ["build", "cleanup skipped", "on-failure"], "\(box.readOutside("ran"))")
            let explain = try await box.slipway("explain", "after")
            #expect(explain.stdout.contains("skipped"), "\(explain)")

            try FileManager.default.removeItem(atPath: box.outside + "/ran")
            let passed = try await box.run()
            #expect(passed.status == 0, "\(passed)")
            #expect(Set(box.lines("ran")) == ["build", "after", "cleanup success"], "\(box.readOutside("ran"))")
            let history = try await box.slipway("history", "2")
            #expect(history.stdout.contains("on-failure: skipped"), "\(history)")
        }

        @Test("continue-on-error lets dependents run and the run succeed")
        func continueOnError() async throws {
            let box = try Sandbox("""
                name: tolerant
                jobs:
                  lint:
                    continue-on-error: true
                    steps: [{ run: 'echo lint >> "$OUT/ran"; exit 2' }]
                  test:
                    steps:
                      - run: 'echo step1 >> "$OUT/ran"; exit 5'
                        continue-on-error: true
                      - run: 'echo step2 >> "$OUT/ran"'
                  deploy:
                    needs: [lint, test]
                    steps: [{ run: 'echo deploy >> "$OUT/ran"' }]
                """)
            let result = try await box.run("--jobs", "1")
            #expect(result.status == 0, "\(result)")
            #expect(Set(box.lines("ran")) == ["lint", "step1", "step2", "deploy"])
            let explain = try await box.slipway("explain", "lint")
            #expect(explain.stdout.contains("continue-on-error"), "\(explain)")
        }
    }
}
