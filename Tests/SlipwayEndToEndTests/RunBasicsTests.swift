import Foundation
import Testing

extension EndToEnd {
    @Suite("exit codes and job selection")
    struct ExitCodes {
        @Test("`slipway init` writes a starter that validates and runs green, and refuses to overwrite without --force")
        func starterPipelineRuns() async throws {
            let box = try Sandbox("jobs: { placeholder: { steps: [ { run: 'true' } ] } }")
            let refused = try await box.slipway("init")
            #expect(refused.status == 2, "\(refused)")
            let written = try await box.slipway("init", "--force")
            #expect(written.status == 0, "\(written)")
            let validated = try await box.slipway("validate")
            #expect(validated.status == 0 && validated.stdout.contains("is valid"), "\(validated)")
            let run = try await box.run()
            #expect(run.status == 0, "\(run)")
            #expect(run.stdout.contains("tests finished with 'success'"), "\(run)")
        }

        @Test("a step is on record as running before its process starts, and its end (with its process group) before the next step or job")
        func stepRowsAreWrittenBeforeTheProcessStarts() async throws {
            let box = try Sandbox("""
                name: records
                jobs:
                  j:
                    steps:
                      - run: python3 "$OUT/steps.py" >> "$OUT/seen"
                      - run: python3 "$OUT/steps.py" >> "$OUT/seen"
                  k:
                    needs: [j]
                    steps:
                      - run: python3 "$OUT/steps.py" >> "$OUT/seen"
                """)
            // What the database says while the step runs: every step of this run, with its status. Any slipway
            // reader (here `history`) first applies the run's journal to the tables; then they are read raw.
            try """
                import os, sqlite3, subprocess
                subprocess.run([os.environ["SLIPWAY_BIN"], "history", "--data-dir", os.environ["DATA"], os.environ["SLIPWAY_RUN_NUMBER"]],
                               check=True, stdout=subprocess.DEVNULL)
                db = sqlite3.connect("file:" + os.environ["STATE_DB"] + "?mode=ro", uri=True)
                rows = db.execute(
                    "SELECT job.key, step.idx, step.status, step.process_group FROM step JOIN attempt ON attempt.id = step.attempt_id "
                    "JOIN job ON job.id = attempt.job_row_id WHERE job.run_id = ? ORDER BY job.key, step.idx", (int(os.environ["SLIPWAY_RUN_ID"]),))
                print(" ".join(f"{k}/{i}={s}" + ("+pg" if pg else "") for k, i, s, pg in rows))
                """.write(toFile: box.outside + "/steps.py", atomically: true, encoding: .utf8)
            let result = try await box.run("--env", "STATE_DB=\(box.dataDirectory)/state.db", "--env", "DATA=\(box.dataDirectory)",
                                           "--env", "SLIPWAY_BIN=\(try SlipwayBinary.require())")
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("seen") == ["j/0=running", "j/0=success+pg j/1=running", "j/0=success+pg j/1=success+pg k/0=running"])
        }

        static let pipeline = """
            name: codes
            jobs:
              a:
                steps:
                  - run: echo a >> "$OUT/ran"
              b:
                needs: [a]
                steps:
                  - run: echo b >> "$OUT/ran"
              c:
                steps:
                  - run: echo c >> "$OUT/ran"
            """

        /// A running step takes three of Slipway's descriptors (its pipes' read ends and its pidfd): 64 steps at
        /// once fit under a limit of 256, as they did before the pipes were watched late (five a step would not).
        @Test("64 steps at once under a 256-descriptor limit all run, and each sees that limit")
        func manyStepsUnderALowDescriptorLimit() async throws {
            let jobs = (1...64).map { "  j\($0): { steps: [ { run: 'sleep 0.5; ulimit -Sn >> \"$OUT/limits\"' } ] }" }
            let box = try Sandbox("name: descriptors\njobs:\n" + jobs.joined(separator: "\n") + "\n")
            let result = try await box.launch(["run", "--plain", "--jobs", "64"] + box.outEnv, softDescriptorLimit: 256).wait(timeout: 60)
            #expect(result.status == 0, "\(result)")
            #expect(result.stdout.contains("64 succeeded"), "\(result)")
            #expect(box.lines("limits") == Array(repeating: "256", count: 64))
        }

        @Test("a successful run exits 0 and runs every job")
        func success() async throws {
            let box = try Sandbox(Self.pipeline)
            let result = try await box.run()
            #expect(result.status == 0, "\(result)")
            #expect(Set(box.lines("ran")) == ["a", "b", "c"])
            #expect(box.lines("ran").firstIndex(of: "a")! < box.lines("ran").firstIndex(of: "b")!)
        }

        /// With fds 0 and 2 closed, the next files opened take those numbers: the database must not become
        /// stderr, and a step's pipe end numbered 0-2 must still reach the step as its stdout/stderr.
        @Test("started with stdin and stderr closed, a run still captures its steps' output and keeps its database")
        func closedStandardDescriptors() async throws {
            let box = try Sandbox("""
                name: closed
                jobs:
                  speak:
                    steps:
                      - run: echo to-stdout; echo to-stderr >&2
                      - run: echo second-step
                """)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "exec 0<&- 2>&-; exec \"$0\" run --plain", try SlipwayBinary.require()]
            process.currentDirectoryURL = URL(fileURLWithPath: box.repo)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            let logs = box.logFiles(run: 1).values.joined(separator: "\n")
            #expect(logs.contains(" o to-stdout"), "\(logs)")
            #expect(logs.contains(" e to-stderr"), "\(logs)")
            #expect(logs.contains(" o second-step"), "\(logs)")
            let history = try await box.slipway("history")
            #expect(history.status == 0 && history.stdout.contains("#1     success"), "\(history)")
        }

        @Test("a failing step exits 1 and its dependents do not run")
        func failure() async throws {
            let box = try Sandbox("""
                name: fails
                jobs:
                  a:
                    steps:
                      - run: echo a >> "$OUT/ran"; exit 7
                      - run: echo a2 >> "$OUT/ran"
                  b:
                    needs: [a]
                    steps:
                      - run: echo b >> "$OUT/ran"
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("ran") == ["a"], "the second step and job b must not run")
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("exit code 7"), "\(history)")
            #expect(history.stdout.contains("b: skipped"), "\(history)")
        }

        @Test("an invalid pipeline exits 2 with file:line:col and runs nothing")
        func invalidPipeline() async throws {
            let box = try Sandbox("""
                name: bad
                jobs:
                  a:
                    steps: [{ run: "echo a >> $OUT/ran" }]
                    timout: 5s
                """)
            let result = try await box.run()
            #expect(result.status == 2, "\(result)")
            #expect(result.stderr.contains("slipway.yml:5:5"), "\(result)")
            #expect(result.stderr.contains("timeout"), "the hint should suggest the nearest key: \(result)")
            #expect(box.lines("ran").isEmpty)
            let validate = try await box.slipway("validate")
            #expect(validate.status == 2, "\(validate)")
            #expect(validate.stderr.contains("slipway.yml:5:5"), "\(validate)")
        }

        @Test("bad command-line input exits 2")
        func badInput() async throws {
            let box = try Sandbox(Self.pipeline)
            let unknownJob = try await box.run("--job", "nope")
            #expect(unknownJob.status == 2, "\(unknownJob)")
            #expect(unknownJob.stderr.contains("nope"), "\(unknownJob)")
            let badGrace = try await box.run("--grace", "soon")
            #expect(badGrace.status == 2, "\(badGrace)")
            #expect(box.lines("ran").isEmpty)
        }

        @Test("--job J runs J and its needs only")
        func selectJob() async throws {
            let box = try Sandbox(Self.pipeline)
            let result = try await box.run("--job", "b")
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("ran") == ["a", "b"])
        }
    }

    @Suite("DAG order and parallelism")
    struct DAGOrder {
        @Test("every job starts after all its needs finished")
        func order() async throws {
            let box = try Sandbox("""
                name: dag
                jobs:
                  a:
                    steps: [{ run: '\(TimeLog.wrap("a"))' }]
                  b:
                    needs: [a]
                    steps: [{ run: '\(TimeLog.wrap("b", "sleep 0.4"))' }]
                  c:
                    needs: [a]
                    steps: [{ run: '\(TimeLog.wrap("c", "sleep 0.1"))' }]
                  d:
                    needs: [b, c]
                    steps: [{ run: '\(TimeLog.wrap("d"))' }]
                  e:
                    needs: [d, a]
                    steps: [{ run: '\(TimeLog.wrap("e", "true"))' }]
                  f:
                    needs: [c]
                    steps: [{ run: '\(TimeLog.wrap("f", "true"))' }]
                """)
            let result = try await box.run("--jobs", "4")
            #expect(result.status == 0, "\(result)")
            let log = TimeLog(box.lines("times"))
            let needs: [String: [String]] = ["b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d", "a"], "f": ["c"]]
            #expect(Set(log.starts.keys) == ["a", "b", "c", "d", "e", "f"], "\(box.readOutside("times"))")
            for (job, required) in needs {
                for need in required {
                    let started = try #require(log.starts[job])
                    let finished = try #require(log.ends[need])
                    #expect(started > finished, "\(job) started before its need \(need) finished")
                }
            }
            // f needs only c, so it must not wait for the slower b.
            let fStart = try #require(log.starts["f"]), bEnd = try #require(log.ends["b"])
            #expect(fStart < bEnd, "f waited for b although it only needs c")
        }

        @Test("a fan-out and fan-in on three lanes: each job runs once, after its needs, and a failure still stops its dependents")
        func lanes() async throws {
            var yaml = "name: lanes\njobs:\n  root:\n    steps: [{ run: '\(TimeLog.wrap("root", "true"))' }]\n"
            let middle = (1...16).map { "m\($0)" }
            for name in middle {
                yaml += "  \(name):\n    needs: [root]\n    steps: [{ run: '\(TimeLog.wrap(name, "sleep 0.0\(name.count)"))' }]\n"
            }
            yaml += "  sink:\n    needs: [\(middle.joined(separator: ", "))]\n    steps: [{ run: '\(TimeLog.wrap("sink", "true"))' }]\n"
            yaml += "  broken:\n    needs: [root]\n    steps: [{ run: 'exit 3' }]\n"
            yaml += "  after-broken:\n    needs: [broken]\n    steps: [{ run: '\(TimeLog.wrap("after-broken", "true"))' }]\n"
            let box = try Sandbox(yaml)
            let result = try await box.run("--jobs", "5", env: ["SLIPWAY_ENGINE_LANES": "3"])
            #expect(result.status == 1, "\(result)")
            let lines = box.lines("times")
            let log = TimeLog(lines)
            #expect(Set(log.starts.keys) == Set(["root", "sink"] + middle), "\(box.readOutside("times"))")
            #expect(lines.filter { $0.hasPrefix("start ") }.count == 18, "a job ran twice: \(box.readOutside("times"))")
            let rootEnd = try #require(log.ends["root"]), sinkStart = try #require(log.starts["sink"])
            for name in middle {
                let started = try #require(log.starts[name]), ended = try #require(log.ends[name])
                #expect(started > rootEnd, "\(name) started before root ended")
                #expect(sinkStart > ended, "sink started before \(name) ended")
            }
            #expect(result.stdout.contains("after-broken"), "\(result)")
        }

        static let siblings = """
            name: siblings
            jobs:
              x:
                steps: [{ run: '\(TimeLog.wrap("x", "sleep 0.5"))' }]
              y:
                steps: [{ run: '\(TimeLog.wrap("y", "sleep 0.5"))' }]
            """

        @Test("independent jobs overlap with --jobs 2 and do not with --jobs 1")
        func parallelSiblings() async throws {
            let box = try Sandbox(Self.siblings)
            let parallel = try await box.run("--jobs", "2")
            #expect(parallel.status == 0, "\(parallel)")
            var log = TimeLog(box.lines("times"))
            var span = Double(max(log.ends["x"]!, log.ends["y"]!) - min(log.starts["x"]!, log.starts["y"]!)) / 1e9
            #expect(span < 0.9, "two 0.5 s jobs took \(span) s with --jobs 2")

            try FileManager.default.removeItem(atPath: box.outside + "/times")
            let serial = try await box.run("--jobs", "1", "--no-cache")
            #expect(serial.status == 0, "\(serial)")
            log = TimeLog(box.lines("times"))
            span = Double(max(log.ends["x"]!, log.ends["y"]!) - min(log.starts["x"]!, log.starts["y"]!)) / 1e9
            #expect(span >= 1.0, "with --jobs 1 the jobs overlapped (\(span) s)")
        }
    }

    @Suite("outputs and artifacts")
    struct OutputsAndArtifacts {
        @Test("outputs (key=value and heredoc) reach needs.J.outputs; artifacts reach the dependent workspace")
        func passed() async throws {
            let box = try Sandbox("""
                name: outputs
                jobs:
                  a:
                    outputs: [x, notes]
                    artifacts: [dist/, report.txt]
                    steps:
                      - run: echo "x=hello-42" >> "$SLIPWAY_OUTPUT"
                      - run: |
                          {
                            echo "notes<<EOF"
                            echo "line one"
                            echo "line two"
                            echo "EOF"
                          } >> "$SLIPWAY_OUTPUT"
                      - run: |
                          mkdir -p dist/sub
                          echo binary > dist/app.bin
                          echo nested > dist/sub/inner.txt
                          echo report > report.txt
                  b:
                    needs: [a]
                    env:
                      X: ${{ needs.a.outputs.x }}
                    steps:
                      - run: echo "x=${{ needs.a.outputs.x }} env=$X" >> "$OUT/b"
                      - run: printf '%s\\n' "${{ needs.a.outputs.notes }}" >> "$OUT/notes"
                      - run: |
                          cat dist/app.bin dist/sub/inner.txt report.txt >> "$OUT/artifacts"
                """)
            let result = try await box.run()
            #expect(result.status == 0, "\(result)")
            #expect(box.readOutside("b") == "x=hello-42 env=hello-42\n")
            #expect(box.readOutside("notes") == "line one\nline two\n")
            #expect(box.readOutside("artifacts") == "binary\nnested\nreport\n")
        }

        @Test("a declared artifact that was not produced fails the job")
        func missingArtifact() async throws {
            let box = try Sandbox("""
                name: missing
                jobs:
                  a:
                    artifacts: [dist/]
                    steps:
                      - run: echo "no dist here"
                  b:
                    needs: [a]
                    steps:
                      - run: echo b >> "$OUT/ran"
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(result.output.contains("dist/"), "\(result)")
            #expect(box.lines("ran").isEmpty, "b must be skipped")
            let explain = try await box.slipway("explain", "a")
            #expect(explain.stdout.contains("artifact 'dist/'"), "\(explain)")
        }
    }

    @Suite("on: filters")
    struct Triggers {
        static let pipeline = """
            name: filtered
            on:
              push: { branches: [main] }
            jobs:
              a:
                steps: [{ run: 'echo a >> "$OUT/ran"' }]
            """

        @Test("a branch outside the filter is not triggered; main runs")
        func branches() async throws {
            let box = try Sandbox(Self.pipeline)
            let skipped = try await box.run("--event", "push", "--branch", "feature/x")
            #expect(skipped.status == 0, "\(skipped)")
            #expect(skipped.stdout.contains("not triggered"), "\(skipped)")
            #expect(box.lines("ran").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: box.dataDirectory + "/runs/1"), "no run should be recorded")

            let pullRequest = try await box.run("--event", "pull_request", "--branch", "main")
            #expect(pullRequest.stdout.contains("not triggered"), "\(pullRequest)")
            #expect(box.lines("ran").isEmpty)

            let main = try await box.run("--event", "push", "--branch", "main")
            #expect(main.status == 0, "\(main)")
            #expect(!main.stdout.contains("not triggered"), "\(main)")
            #expect(box.lines("ran") == ["a"])
        }
    }

    @Suite("workspace")
    struct Workspace {
        static let pipeline = """
            name: workspace
            jobs:
              look:
                steps:
                  - run: |
                      echo "tracked=$(cat tracked.txt)" >> "$OUT/seen"
                      if [ -e untracked.txt ]; then echo "untracked=$(cat untracked.txt)" >> "$OUT/seen"; else echo "untracked=absent" >> "$OUT/seen"; fi
                      if [ -e .slipway ]; then echo "slipway-dir=present" >> "$OUT/seen"; else echo "slipway-dir=absent" >> "$OUT/seen"; fi
                      if [ -e .git ]; then echo "git-dir=present" >> "$OUT/seen"; else echo "git-dir=absent" >> "$OUT/seen"; fi
                      echo "modify" > tracked.txt
                  - name: in sub
                    working-directory: sub/dir
                    run: echo "pwd=$(basename "$PWD") file=$(cat here.txt) ws=$([ "$SLIPWAY_WORKSPACE/sub/dir" = "$PWD" ] && echo yes)" >> "$OUT/seen"
            """

        @Test("uncommitted changes are included and marked dirty; --clean uses HEAD; .slipway is not copied")
        func snapshot() async throws {
            let box = try Sandbox(Self.pipeline, files: ["tracked.txt": "committed", "sub/dir/here.txt": "deep"])
            // First a clean tree: not dirty.
            let first = try await box.run()
            #expect(first.status == 0, "\(first)")
            #expect(box.lines("seen") == ["tracked=committed", "untracked=absent", "slipway-dir=absent", "git-dir=absent", "pwd=dir file=deep ws=yes"])
            #expect(!first.stdout.contains("uncommitted"), "\(first)")
            // The step changed its workspace copy only, never the project.
            #expect(try String(contentsOfFile: box.repo + "/tracked.txt", encoding: .utf8) == "committed")

            try box.write("tracked.txt", "edited")
            try box.write("untracked.txt", "new")
            try FileManager.default.removeItem(atPath: box.outside + "/seen")
            let dirty = try await box.run()
            #expect(dirty.status == 0, "\(dirty)")
            #expect(box.lines("seen").prefix(3) == ["tracked=edited", "untracked=new", "slipway-dir=absent"])
            #expect(dirty.stdout.contains("uncommitted changes"), "\(dirty)")
            let history2 = try await box.slipway("history", "2")
            #expect(history2.stdout.contains("uncommitted changes"), "\(history2)")

            try FileManager.default.removeItem(atPath: box.outside + "/seen")
            let clean = try await box.run("--clean")
            #expect(clean.status == 0, "\(clean)")
            #expect(box.lines("seen").prefix(3) == ["tracked=committed", "untracked=absent", "slipway-dir=absent"])
            let history3 = try await box.slipway("history", "3")
            #expect(!history3.stdout.contains("uncommitted changes"), "\(history3)")
            let list = try await box.slipway("history")
            let rows = list.stdout.split(separator: "\n")
            #expect(rows.contains { $0.hasPrefix("#2") && $0.contains("*") }, "run 2 should be listed as dirty: \(list)")
            #expect(rows.contains { $0.hasPrefix("#3") && !$0.contains("*") }, "run 3 should be clean: \(list)")
        }

        @Test("a working-directory that does not exist fails the step")
        func missingWorkingDirectory() async throws {
            let box = try Sandbox("""
                name: wd
                jobs:
                  a:
                    steps:
                      - working-directory: nowhere
                        run: echo ran >> "$OUT/ran"
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(result.output.contains("nowhere"), "\(result)")
            #expect(box.lines("ran").isEmpty)
        }
    }
}
