#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

extension EndToEnd {
    @Suite("timeouts leave no orphans")
    struct Timeouts {
        @Test("a reader that stops reading stdout holds up the output only: a timeout still fires and the run ends; the output comes whole once read")
        func stalledStdoutDoesNotStallTheRun() async throws {
            let box = try Sandbox("""
                name: stalled
                jobs:
                  chatty:
                    steps:
                      - run: seq 1 100000
                  slow:
                    steps:
                      - timeout: 1s
                        run: sleep 30
                """)
            let fifo = box.outside + "/stdout.fifo"
            #expect(mkfifo(fifo, 0o600) == 0)
            // Held open and not read: the pipe fills at 64 KiB and slipway's writes to it block.
            let reader = open(fifo, O_RDONLY | O_NONBLOCK)
            #expect(reader >= 0)
            defer { close(reader) }
            let launched = try box.launch(["run", "--plain"] + box.outEnv, stdoutPath: fifo)
            var ended = false
            let deadline = Date().addingTimeInterval(20)
            while !ended, Date() < deadline {
                try await Task.sleep(for: .milliseconds(250))
                let history = try await box.slipway("history", "1")
                ended = history.stdout.contains("chatty: success") && history.stdout.contains("slow: failure")
            }
            #expect(ended, "with stdout unread the run did not get both jobs to their end (the timeout did not fire)")
            // Now read it all: the run finishes writing and exits. (This process holds the FIFO's write end
            // too, through the Process's file handle, so the end is the exit, not an EOF.)
            var output: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            var exited = false
            while Date() < deadline.addingTimeInterval(20) {
                let n = read(reader, &buffer, buffer.count)
                if n > 0 { output += buffer[0..<n]; continue }
                if exited { break }
                exited = !launched.process.isRunning
                if !exited { try await Task.sleep(for: .milliseconds(10)) }
            }
            let result = try await launched.wait(timeout: 20)
            #expect(result.status == 1, "\(result)")
            let text = String(decoding: output, as: UTF8.self)
            #expect(text.contains("[chatty] 100000\n"), "the output was not written whole")
            #expect(text.contains("slow"))
        }

        @Test("a step timeout ends the whole process tree, however deep")
        func stepTimeout() async throws {
            let marker = Processes.uniqueSleep(301)
            defer { Processes.killAll(marker) }
            let box = try Sandbox("""
                name: timeouts
                jobs:
                  deep:
                    steps:
                      - timeout: 1s
                        run: |
                          echo started >> "$OUT/started"
                          bash -c 'trap "" TERM; sleep \(marker)' &
                          bash -c 'sleep \(marker) & bash -c "sleep \(marker) & wait" & wait'
                      - run: echo never >> "$OUT/ran"
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("started") == ["started"])
            #expect(box.lines("ran").isEmpty)
            #expect(result.seconds < 8, "a 1 s timeout took \(result.seconds) s")
            let left = await Processes.survivors(marker)
            #expect(left.isEmpty, "processes of the timed-out step survived: \(left)")
            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("timed out"), "\(history)")
        }

        @Test("a job timeout bounds all its steps together")
        func jobTimeout() async throws {
            let marker = Processes.uniqueSleep(302)
            defer { Processes.killAll(marker) }
            let box = try Sandbox("""
                name: timeouts
                jobs:
                  slow:
                    timeout: 1500ms
                    steps:
                      - run: sleep 0.5; echo one >> "$OUT/ran"
                      - run: bash -c 'sleep \(marker) & wait'
                      - run: echo never >> "$OUT/ran"
                """)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("ran") == ["one"])
            #expect(result.seconds < 8, "\(result)")
            #expect(await Processes.survivors(marker).isEmpty)
            let explain = try await box.slipway("explain", "slow")
            #expect(explain.stdout.contains("timed out"), "\(explain)")
        }

        @Test("--grace 1s kills a step that ignores SIGTERM one second after it")
        func grace() async throws {
            let marker = Processes.uniqueSleep(303)
            defer { Processes.killAll(marker) }
            let pipeline = """
                name: grace
                jobs:
                  stubborn:
                    steps:
                      - timeout: 500ms
                        run: |
                          trap 'echo got-term >> "$OUT/term"' TERM
                          bash -c 'trap "" TERM; sleep \(marker)' &
                          for i in $(seq 300); do sleep 0.1 || true; done
                """
            let box = try Sandbox(pipeline)
            let result = try await box.run("--grace", "1s")
            #expect(result.status == 1, "\(result)")
            #expect(box.lines("term").count >= 1, "the step should have received SIGTERM first")
            #expect(result.seconds >= 1.4, "SIGKILL came before the grace period ended (\(result.seconds) s)")
            #expect(result.seconds < 6, "SIGKILL did not come about 1 s after SIGTERM (\(result.seconds) s)")
            #expect(await Processes.survivors(marker).isEmpty)
        }
    }

    @Suite("Ctrl-C")
    struct Interrupt {
        static func pipeline(_ marker: String, trapTerm: Bool = false) -> String {
            """
            name: interrupt
            jobs:
              long:
                steps:
                  - run: |
                      \(trapTerm ? "trap '' TERM" : "")
                      bash -c 'sleep \(marker) & wait' &
                      echo started >> "$OUT/started"
                      for i in $(seq 600); do sleep 0.1; done
              other:
                needs: [long]
                steps: [{ run: 'echo other >> "$OUT/ran"' }]
            """
        }

        @Test("SIGINT cancels the run within seconds, leaving no step processes; history says cancelled")
        func sigint() async throws {
            let marker = Processes.uniqueSleep(304)
            defer { Processes.killAll(marker) }
            let box = try Sandbox(Self.pipeline(marker))
            let run = try box.launch(["run", "--plain"] + box.outEnv)
            let started = await eventually(within: 30) { box.count("started") > 0 && !Processes.matching(marker).isEmpty }
            guard started else {
                run.signal(SIGKILL)
                Issue.record("the step never started: \(run.result())")
                return
            }
            let sent = Date()
            run.signal(SIGINT)
            let result = try await run.wait(timeout: 30)
            let elapsed = Date().timeIntervalSince(sent)
            #expect(result.status == 130, "Ctrl-C should exit 130: \(result)")
            #expect(elapsed < 7, "took \(elapsed) s to stop after SIGINT")
            #expect(await Processes.survivors(marker).isEmpty, "step processes survived Ctrl-C")
            #expect(box.lines("ran").isEmpty, "no new job may start after Ctrl-C")
            let history = try await box.slipway("history")
            #expect(history.stdout.contains("cancelled"), "\(history)")
            #expect(!history.stdout.contains("running"), "\(history)")
            let detail = try await box.slipway("history", "1")
            #expect(detail.stdout.contains("long: cancelled"), "\(detail)")
        }

        @Test("a second SIGINT kills a step that ignores SIGTERM at once")
        func secondSigint() async throws {
            let marker = Processes.uniqueSleep(305)
            defer { Processes.killAll(marker) }
            let box = try Sandbox(Self.pipeline(marker, trapTerm: true))
            // A long grace: only the second interrupt can end this quickly.
            let run = try box.launch(["run", "--plain", "--grace", "60s"] + box.outEnv)
            let started = await eventually(within: 30) { box.count("started") > 0 && !Processes.matching(marker).isEmpty }
            guard started else {
                run.signal(SIGKILL)
                Issue.record("the step never started: \(run.result())")
                return
            }
            run.signal(SIGINT)
            try await Task.sleep(for: .milliseconds(500))
            #expect(run.process.isRunning, "the first SIGINT should wait for the grace period")
            let sent = Date()
            run.signal(SIGINT)
            let result = try await run.wait(timeout: 30)
            #expect(result.status != 0, "\(result)")
            #expect(Date().timeIntervalSince(sent) < 5, "\(result)")
            #expect(await Processes.survivors(marker).isEmpty, "processes survived a second Ctrl-C")
        }
    }

    @Suite("resume after kill -9")
    struct Resume {
        @Test("finished jobs are kept, the interrupted job runs again as attempt 2, leftovers are ended")
        func killAndResume() async throws {
            let marker = Processes.uniqueSleep(306)
            defer { Processes.killAll(marker) }
            let box = try Sandbox("""
                name: resume
                jobs:
                  a:
                    outputs: [v]
                    steps:
                      - run: |
                          echo a >> "$OUT/a"
                          echo "v=from-a" >> "$SLIPWAY_OUTPUT"
                  b:
                    needs: [a]
                    steps:
                      - run: |
                          echo "attempt $SLIPWAY_ATTEMPT ${{ needs.a.outputs.v }}" >> "$OUT/b"
                          if [ "$SLIPWAY_ATTEMPT" = 1 ]; then
                            touch "$OUT/b-marker"
                            sleep \(marker)
                          fi
                  c:
                    needs: [b]
                    steps: [{ run: 'echo c >> "$OUT/c"' }]
                """)
            let run = try box.launch(["run", "--plain"] + box.outEnv)
            let reached = await eventually(within: 30) {
                FileManager.default.fileExists(atPath: box.outside + "/b-marker") && !Processes.matching(marker).isEmpty
            }
            guard reached else {
                run.signal(SIGKILL)
                Issue.record("b never started: \(run.result())")
                return
            }
            run.signal(SIGKILL)
            let killed = try await run.wait(timeout: 10)
            #expect(killed.status == 128 + SIGKILL, "\(killed)")
            // The step of the killed run may outlive it (it has its own process group); resume must end it.
            let orphans = Processes.matching(marker)
            print("processes of the killed run still alive before resume: \(orphans.count)")

            let list = try await box.slipway("history")
            #expect(list.stdout.contains("interrupted"), "\(list)")

            // Another project's run #1 (same run id in its own database) is going on meanwhile: resume must not touch it.
            let otherMarker = Processes.uniqueSleep(307)
            defer { Processes.killAll(otherMarker) }
            let other = try Sandbox("""
                name: other
                jobs:
                  busy:
                    steps: [{ run: 'sleep \(otherMarker)' }]
                """)
            let otherRun = try other.launch(["run", "--plain"])
            #expect(await eventually(within: 30) { !Processes.matching(otherMarker).isEmpty }, "the other project's step never started")

            let resumed = try await box.run("--resume")
            #expect(resumed.status == 0, "\(resumed)")
            #expect(!Processes.matching(otherMarker).isEmpty, "resume killed the processes of another project's run")
            #expect(otherRun.process.isRunning)
            otherRun.signal(SIGINT)
            let otherResult = try await otherRun.wait(timeout: 30)
            #expect(otherResult.status == 130, "\(otherResult)")
            #expect(box.lines("a") == ["a"], "a finished before the kill and must not run again")
            #expect(box.lines("b") == ["attempt 1 from-a", "attempt 2 from-a"], "b reruns as attempt 2 with a's outputs")
            #expect(box.lines("c") == ["c"])
            #expect(await Processes.survivors(marker).isEmpty, "leftover processes of the killed run are still alive")

            let history = try await box.slipway("history", "1")
            #expect(history.stdout.contains("run #1 of resume: success"), "\(history)")
            #expect(history.stdout.contains("attempt 1: interrupted"), "\(history)")
            #expect(history.stdout.contains("attempt 2: success"), "\(history)")
            #expect(history.stdout.contains("run-resumed"), "\(history)")
            let again = try await box.run("--resume")
            #expect(again.status == 2, "nothing left to resume: \(again)")
        }
    }
}
