#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

extension EndToEnd {
    @Suite("job cache")
    struct Cache {
        static let pipeline = """
            name: cache
            jobs:
              build:
                cache: { inputs: ["src/**"] }
                outputs: [digest]
                artifacts: [dist/]
                steps:
                  - run: |
                      echo run >> "$OUT/build"
                      mkdir -p dist
                      cat src/x.txt > dist/all.txt
                      echo "digest=$(sha256sum src/x.txt | cut -c1-12)" >> "$SLIPWAY_OUTPUT"
              use:
                needs: [build]
                steps:
                  - run: echo "$(cat dist/all.txt) ${{ needs.build.outputs.digest }}" >> "$OUT/use"
              pack:
                needs: [build]
                cache: { inputs: ["pack.cfg"] }
                steps:
                  - run: echo run >> "$OUT/pack"
            """

        @Test("hit, then miss naming the changed file; --no-cache; downstream keys follow upstream outputs; artifacts restored on a hit")
        func hitAndMiss() async throws {
            let box = try Sandbox(Self.pipeline, files: ["src/x.txt": "one", "pack.cfg": "cfg", "README.md": "readme"])
            let first = try await box.run()
            #expect(first.status == 0, "\(first)")
            #expect(box.count("build") == 1)
            #expect(box.count("pack") == 1)
            let useFirst = try #require(box.lines("use").last)
            #expect(useFirst.hasPrefix("one "), "\(useFirst)")

            // A file that is not a cache input changes: still a hit.
            try box.write("README.md", "changed readme")
            let second = try await box.run()
            #expect(second.status == 0, "\(second)")
            #expect(box.count("build") == 1, "build should be a cache hit")
            #expect(box.count("pack") == 1, "pack should be a cache hit")
            #expect(box.lines("use").last == useFirst, "outputs and artifacts of the hit must reach `use`")
            let explainHit = try await box.slipway("explain", "build")
            #expect(explainHit.stdout.contains("hit"), "\(explainHit)")
            let history = try await box.slipway("history", "2")
            #expect(history.stdout.contains("build: success (cache hit)"), "\(history)")

            // A cache input changes: miss, and explain names it; pack's key follows build's new output.
            try box.write("src/x.txt", "two")
            let third = try await box.run()
            #expect(third.status == 0, "\(third)")
            #expect(box.count("build") == 2, "a changed input must miss the cache")
            #expect(box.count("pack") == 2, "pack's key includes build's outputs and artifacts")
            let useThird = try #require(box.lines("use").last)
            #expect(useThird.hasPrefix("two ") && useThird != useFirst, "\(useThird)")
            let explainMiss = try await box.slipway("explain", "build")
            #expect(explainMiss.stdout.contains("miss"), "\(explainMiss)")
            #expect(explainMiss.stdout.contains("src/x.txt"), "\(explainMiss)")
            #expect(!explainMiss.stdout.contains("README"), "\(explainMiss)")
            let explainPack = try await box.slipway("explain", "pack")
            #expect(explainPack.stdout.contains("miss"), "\(explainPack)")
            #expect(explainPack.stdout.contains("'build'"), "\(explainPack)")

            // --no-cache runs everything.
            let fourth = try await box.run("--no-cache")
            #expect(fourth.status == 0, "\(fourth)")
            #expect(box.count("build") == 3)
            #expect(box.count("pack") == 3)

            // And the cache still hits afterwards.
            let fifth = try await box.run()
            #expect(fifth.status == 0, "\(fifth)")
            #expect(box.count("build") == 3)
            #expect(box.lines("use").last?.hasPrefix("two ") == true)
        }

        @Test("a failed job is not cached")
        func failureNotCached() async throws {
            let box = try Sandbox("""
                name: cache
                jobs:
                  build:
                    cache: { inputs: ["src/**"] }
                    steps: [{ run: 'echo run >> "$OUT/build"; exit $CODE' }]
                """, files: ["src/x.txt": "one"])
            let failed = try await box.run("--env", "CODE=1")
            #expect(failed.status == 1, "\(failed)")
            let passed = try await box.run("--env", "CODE=0")
            #expect(passed.status == 0, "\(passed)")
            #expect(box.count("build") == 2)
            let again = try await box.run("--env", "CODE=0")
            #expect(again.status == 0, "\(again)")
            #expect(box.count("build") == 2, "the successful run should now be cached")
        }
    }

    @Suite("secrets")
    struct Secrets {
        static let token = "s3cr3t-value-XYZ"
        static let password = "p@ss w/rd+1&x=y"
        static let lines = ["mline-alpha-7788", "mline-bravo-9911"]

        static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

        /// Everything that must never appear in output, logs or the database.
        static var forbidden: [String] {
            [token, base64(token), password, base64(password),
             password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!,
             "p%40ss%20w%2Frd%2B1%26x%3Dy", "s3cr3t-value"] + lines
        }

        static let pipeline = """
            name: secrets
            jobs:
              leak:
                cache: { inputs: ["src/**"] }
                outputs: [x]
                env:
                  T: ${{ secrets.TOKEN }}
                  P: ${{ secrets.PASS }}
                  M: ${{ secrets.MULTI }}
                reports: { junit: "reports/*.xml" }
                steps:
                  - run: echo "inline ${{ secrets.TOKEN }}"
                  - run: |
                      echo "env $T"
                      echo "stderr $T" >&2
                      printf %s "$T" | base64
                      printf %s "$P" | base64 -w0; echo
                      printf 'url %s\\n' "$(printf %s "$P" | jq -sRr @uri)"
                      printf 'embedded:%s:end\\n' "$T"
                      printf '%s\\n' "$M"
                      echo "each: ${M//$'\\n'/ | }"
                      printf 's3cr3t-va'; sleep 0.2; printf 'lue-XYZ\\n'
                      printf 'err-s3cr3t-va' >&2; sleep 0.2; printf 'lue-XYZ\\n' >&2
                      echo "x=$T" >> "$SLIPWAY_OUTPUT"
                      mkdir -p reports
                      printf '<testsuite name="s"><testcase classname="s" name="t"><failure message="bad %s">%s</failure></testcase></testsuite>\\n' "$T" "$T" > reports/r.xml
                  - name: fails with the secret
                    run: echo "failing with $T"; exit 3
                    continue-on-error: true
              clean-env:
                steps:
                  - run: |
                      env | grep -E 'SLIPWAY_SECRET|s3cr3t|mline|p@ss' > "$OUT/env-leak" || true
                      echo checked >> "$OUT/env-checked"
            """

        @Test("secrets are masked in the terminal, logs and database, in every encoding; steps only see referenced secrets")
        func masked() async throws {
            let box = try Sandbox(Self.pipeline, files: ["src/a.txt": "a"])
            try FileManager.default.createDirectory(atPath: box.dataDirectory, withIntermediateDirectories: true)
            try Data("MULTI<<EOF\n\(Self.lines.joined(separator: "\n"))\nEOF\nPASS=\(Self.password)\n".utf8)
                .write(to: URL(fileURLWithPath: box.dataDirectory + "/secrets"))
            let env = ["SLIPWAY_SECRET_TOKEN": Self.token]
            let result = try await box.run(env: env)
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("env-checked") == ["checked"])
            #expect(box.readOutside("env-leak").isEmpty, "secrets reached a step that does not reference them: \(box.readOutside("env-leak").count) bytes")

            var texts: [(String, String)] = [("stdout", result.stdout), ("stderr", result.stderr)]
            let logs = box.logFiles(run: 1)
            #expect(logs.count >= 3, "\(logs.keys.sorted())")  // steps that print nothing have no log file
            for (path, text) in logs { texts.append(("log \(path)", text)) }
            let allLogs = logs.values.joined()
            #expect(allLogs.contains("inline ***"), "\(allLogs)")
            #expect(allLogs.contains("env ***"))
            #expect(allLogs.contains("stderr ***"))
            #expect(allLogs.contains("url ***"), "\(allLogs)")
            #expect(allLogs.contains("embedded:***:end"))
            #expect(allLogs.contains("each: *** | ***"), "\(allLogs)")
            #expect(allLogs.contains("failing with ***"))
            // The split writes end up masked as one line.
            #expect(allLogs.contains(" o ***\n") && allLogs.contains(" e err-***\n"), "\(allLogs)")

            // Every command that shows run data.
            for arguments in [["logs", "1"], ["logs", "1", "leak", "--timestamps"], ["history", "1"], ["explain", "leak"], ["tests", "1"], ["history"]] {
                let shown = try await box.slipway(arguments, env: env)
                texts.append((arguments.joined(separator: " "), shown.output))
            }
            // A second run: a cache hit restores the masked outputs.
            let second = try await box.run(env: env)
            #expect(second.status == 0, "\(second)")
            texts.append(("second run", second.output))

            for (name, text) in texts {
                for secret in Self.forbidden {
                    #expect(!text.contains(secret), "\(name) shows a secret form (\(secret.count) chars, starts \(secret.prefix(3)))")
                }
            }
            // The database and its WAL, byte for byte.
            for file in ["state.db", "state.db-wal", "state.db-shm"] {
                guard let data = FileManager.default.contents(atPath: box.dataDirectory + "/" + file) else { continue }
                for secret in Self.forbidden {
                    #expect(data.range(of: Data(secret.utf8)) == nil, "\(file) holds a secret form starting \(secret.prefix(3))")
                }
            }
            #expect(FileManager.default.fileExists(atPath: box.dataDirectory + "/state.db"))
            // Every other file Slipway keeps (logs, output files, …), except the secrets file itself and copies
            // of the user's own files (snapshot, workspaces, artifacts), where a step may write what it likes.
            let enumerator = try #require(FileManager.default.enumerator(atPath: box.dataDirectory))
            var scanned = 0
            while let path = enumerator.nextObject() as? String {
                if path == "secrets" || path.hasPrefix("cache/") || path.contains("/ws/") || path.contains("/snapshot/") || path.contains("/artifacts/") { continue }
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: box.dataDirectory + "/" + path, isDirectory: &isDirectory), !isDirectory.boolValue,
                      let data = FileManager.default.contents(atPath: box.dataDirectory + "/" + path) else { continue }
                scanned += 1
                for secret in Self.forbidden {
                    #expect(data.range(of: Data(secret.utf8)) == nil, ".slipway/\(path) holds a secret form starting \(secret.prefix(3))")
                }
            }
            #expect(scanned >= 5)
            let tests = try await box.slipway("tests", "1", env: env)
            #expect(tests.stdout.contains("bad ***"), "\(tests)")
        }
    }

    @Suite("large output")
    struct LargeOutput {
        @Test("100 MB from one step is captured whole", .timeLimit(.minutes(2)))
        func hundredMegabytes() async throws {
            let box = try Sandbox("""
                name: big
                jobs:
                  big:
                    steps:
                      - run: head -c 100000000 < <(yes 0123456789012345678901234567890123456789012345678)
                      - run: echo "after" >> "$OUT/after"
                """)
            let stdoutPath = box.root + "/big-stdout"
            let result = try await box.slipway(["run", "--plain"] + box.outEnv, timeout: 100, stdoutPath: stdoutPath)
            #expect(result.status == 0, "\(result)")
            #expect(box.lines("after") == ["after"])
            let data = try Data(contentsOf: URL(fileURLWithPath: box.dataDirectory + "/runs/1/logs/big.1-1.log"), options: .alwaysMapped)
            var lines = 0
            var bad = 0
            let expected = Array("0123456789012345678901234567890123456789012345678".utf8)
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                guard let base = raw.baseAddress else { return }
                var offset = 0
                let count = raw.count
                while offset < count {
                    let found = memchr(base + offset, 0x0A, count - offset)
                    let end = found.map { UnsafeRawPointer($0) - base } ?? count
                    // `<unix-ms> o <text>`: 13 + 3 + 49 bytes.
                    let length = end - offset
                    if length != 16 + expected.count
                        || raw[offset + 14] != UInt8(ascii: "o")
                        || memcmp(base + offset + 16, expected, expected.count) != 0 {
                        bad += 1
                    }
                    lines += 1
                    offset = end + 1
                }
            }
            #expect(lines == 2_000_000, "the log has \(lines) lines")
            #expect(bad == 0, "\(bad) lines were not captured intact")
            let shown = (try FileManager.default.attributesOfItem(atPath: stdoutPath)[.size] as? NSNumber)?.intValue ?? 0
            #expect(shown >= 100_000_000, "plain output shows \(shown) bytes")
            let firstMillis = Double(String(decoding: data.prefix(13), as: UTF8.self)) ?? 0
            let lastMillis = Double(String(decoding: data.suffix(66).prefix(13), as: UTF8.self)) ?? 0
            print("100 MB captured: step \(Int(lastMillis - firstMillis)) ms from first to last line, slipway run \(String(format: "%.2f", result.seconds)) s in all")
        }
    }

    @Suite("JUnit reports")
    struct Reports {
        static let pipeline = """
            name: reports
            jobs:
              unit:
                reports: { junit: "reports/*.xml" }
                steps:
                  - run: |
                      mkdir -p reports
                      cat > reports/unit.xml <<'EOF'
                      <?xml version="1.0" encoding="UTF-8"?>
                      <testsuites>
                        <testsuite name="math" tests="3" failures="1" skipped="1">
                          <testcase classname="math.Add" name="adds" time="0.5"/>
                          <testcase classname="math.Sub" name="subtracts" time="0.25" file="Tests/SubTests.swift" line="42">
                            <failure message="expected 2, got 3">assertion failed</failure>
                          </testcase>
                          <testcase classname="math.Mul" name="multiplies"><skipped/></testcase>
                        </testsuite>
                      </testsuites>
                      EOF
                      exit 1
              net:
                retry: { max: 1, on: [any] }
                reports: { junit: "reports/*.xml" }
                steps:
                  - run: |
                      echo x >> "$OUT/net"
                      mkdir -p reports
                      if [ "$SLIPWAY_ATTEMPT" = 1 ]; then
                        echo '<testsuite name="net"><testcase classname="net.Fetch" name="downloads"><failure message="connection reset"/></testcase><testcase classname="net.Fetch" name="parses"/></testsuite>' > reports/net.xml
                        exit 1
                      fi
                      echo '<testsuite name="net"><testcase classname="net.Fetch" name="downloads"/><testcase classname="net.Fetch" name="parses"/></testsuite>' > reports/net.xml
            """

        @Test("totals, failure locations and flaky tests, per run and across runs")
        func junit() async throws {
            let box = try Sandbox(Self.pipeline)
            let result = try await box.run()
            #expect(result.status == 1, "\(result)")
            #expect(result.stdout.contains("tests: 5 total"), "\(result)")
            #expect(box.count("net") == 2)
            let tests = try await box.slipway("tests")
            #expect(tests.status == 0, "\(tests)")
            #expect(tests.stdout.contains("5 total, 3 passed, 1 failed, 1 skipped, 1 flaky"), "\(tests)")
            #expect(tests.stdout.contains("math.Sub.subtracts"), "\(tests)")
            #expect(tests.stdout.contains("Tests/SubTests.swift:42"), "\(tests)")
            #expect(tests.stdout.contains("expected 2, got 3"), "\(tests)")
            #expect(tests.stdout.contains("flaky: net.Fetch.downloads"), "\(tests)")
            #expect(!tests.stdout.contains("flaky: net.Fetch.parses"), "\(tests)")
            #expect(tests.stdout.contains("flaky in 1 run"), "\(tests)")

            // Flaky again in a second run: counted across runs.
            let second = try await box.run("--no-cache")
            #expect(second.status == 1, "\(second)")
            let again = try await box.slipway("tests", "2")
            #expect(again.stdout.contains("flaky in 2 runs"), "\(again)")
            let firstAgain = try await box.slipway("tests", "1")
            #expect(firstAgain.stdout.contains("1 flaky"), "\(firstAgain)")
        }
    }
}
