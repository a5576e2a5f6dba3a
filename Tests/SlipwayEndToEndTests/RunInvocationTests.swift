@testable import SlipwayCLI
import Testing

/// `slipway run`'s own reading of common command lines must give what ArgumentParser gives, and leave to
/// ArgumentParser everything else.
@Suite("run command line")
struct RunInvocationTests {
    static let accepted: [[String]] = [
        [],
        ["--plain"],
        ["--plain", "--jobs", "2"],
        ["--jobs=3", "--no-cache", "--clean"],
        ["--job", "build", "--job=test", "--env", "A=1", "--env=B=2", "--input", "x=y"],
        ["--event", "manual", "--branch", "main", "--grace", "2s", "--file", "ci/slipway.yml", "--data-dir", "/tmp/state"],
        ["--resume", "--run", "12"],
    ]

    @Test("reads the common forms as ArgumentParser does", arguments: accepted)
    func sameAsArgumentParser(_ arguments: [String]) throws {
        let fast = try #require(RunInvocation(fastParsing: arguments))
        #expect(fast == (try RunCommand.parse(arguments)).invocation)
    }

    static let leftToArgumentParser: [[String]] = [
        ["-h"], ["--help"], ["build"], ["--jobs"], ["--jobs", "two"], ["--jobs", "0"], ["--jobs", "-1"], ["--event", "nope"],
        ["--grace", "soon"], ["--plain=yes"], ["--branch", "a", "--branch", "b"], ["--unknown"], ["--run"], ["--job", "--plain"], ["--file="],
    ]

    @Test("leaves help, unknown names and bad values to ArgumentParser", arguments: leftToArgumentParser)
    func fallsBack(_ arguments: [String]) {
        #expect(RunInvocation(fastParsing: arguments) == nil)
    }
}
