import Foundation
import SlipwayTestSupport
import Testing
@testable import SlipwayEngine

/// The environment a step's process gets: what `execve` receives must equal the dictionary form.
@Suite("StepEnvironment")
struct StepEnvironmentTests {
    /// The `KEY=value` strings `execve` would get, as a dictionary; a name twice is a failure.
    static func passed(_ environment: StepEnvironment) -> [String: String] {
        var result: [String: String] = [:]
        environment.encoded().withPointers { pointers in
            var index = 0
            while let pointer = pointers[index] {
                let entry = String(cString: pointer)
                let equals = entry.firstIndex(of: "=")!
                let name = String(entry[..<equals])
                #expect(result[name] == nil, "\(name) passed twice")
                result[name] = String(entry[entry.index(after: equals)...])
                index += 1
            }
        }
        return result
    }

    @Test func setVariablesWinOverInheritedOnesAndLaterOverEarlier() {
        var environment = StepEnvironment(["PATH": "/bin", "HOME": "/root", "LANG": "C"])
        environment["HOME"] = "/job"
        environment["SLIPWAY_JOB"] = "build"
        environment["HOME"] = "/step"
        #expect(environment["HOME"] == "/step")
        #expect(environment["PATH"] == "/bin")
        #expect(environment["MISSING"] == nil)
        let expected = ["PATH": "/bin", "HOME": "/step", "LANG": "C", "SLIPWAY_JOB": "build"]
        #expect(environment.dictionary == expected)
        #expect(Self.passed(environment) == expected)
    }

    @Test func removingAVariableDropsItFromWhatIsPassed() {
        var environment = StepEnvironment(["A": "1", "B": "2"])
        environment["C"] = "3"
        environment["A"] = nil
        #expect(Self.passed(environment) == ["B": "2", "C": "3"])
    }

    @Test func randomOverlaysMatchTheDictionaryForm() {
        var random = SplitMix64(seed: 0x5EED_E11F)
        for _ in 0..<200 {
            var base: [String: String] = [:]
            for _ in 0..<Int(random.next() % 12) { base["V\(random.next() % 16)"] = "\(random.next() % 1000)" }
            var environment = StepEnvironment(base)
            var model = base
            for _ in 0..<Int(random.next() % 12) {
                let name = "V\(random.next() % 20)", value = random.next() % 3 == 0 ? "" : "x=\(random.next() % 1000)"
                environment[name] = value
                model[name] = value
            }
            #expect(environment.dictionary == model)
            #expect(Self.passed(environment) == model)
        }
    }
}
