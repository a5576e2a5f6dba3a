import SlipwayTestSupport
import Testing
@testable import SlipwayCore

struct SimpleCommandTests {
    @Test func plainCommandsAreExecutedDirectly() {
        #expect(SimpleCommand.arguments("/bin/true") == ["/bin/true"])
        #expect(SimpleCommand.arguments("  make test  SHARD-1 ") == ["make", "test", "SHARD-1"])
        #expect(SimpleCommand.arguments("python3 -m compileall -q src") == ["python3", "-m", "compileall", "-q", "src"])
    }

    @Test func anythingWithShellSyntaxGoesThroughBash() {
        for script in ["echo hi", "cd src", "a | b", "a && b", "a; b", "x=1 make", "ls *.c", "echo $HOME", "cat <in", "a\nb",
                       "\"quoted\"", "make 'x y'", "exit 3", "test -f x", "true", "~/bin/tool", "f() { :; }", "[ -f x ]", ""] {
            #expect(SimpleCommand.arguments(script) == nil, "\(script)")
        }
        #expect(SimpleCommand.arguments("tool a\r\nb") == nil, "CR LF is one Character but still needs a shell")
    }

    /// The byte scan agrees with the plain reading of the rule (trim blanks, no special character, split on
    /// spaces and tabs, no builtin first) on random scripts mixing specials, blanks and multi-byte letters.
    @Test func byteScanAgreesWithTheRule() {
        func reference(_ script: String) -> [String]? {
            let scalars = script.unicodeScalars
            var trimmed = Substring.UnicodeScalarView(scalars)
            while let c = trimmed.first, " \t\n\r".unicodeScalars.contains(c) { trimmed.removeFirst() }
            while let c = trimmed.last, " \t\n\r".unicodeScalars.contains(c) { trimmed.removeLast() }
            let text = String(trimmed)
            guard !text.isEmpty, !text.unicodeScalars.contains(where: { $0.isASCII && SimpleCommand.special.contains(Character($0)) }) else { return nil }
            let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = words.first, !SimpleCommand.builtins.contains(first) else { return nil }
            return words
        }
        var rng = SplitMix64(seed: 0x51C0)
        let pieces = ["make", "/bin/true", " ", "\t", "\n", "-x", "é", "日本", "$", "'", "|", "true", "a=b", "\r", "~", "build"]
        var direct = 0
        for _ in 0..<4000 {
            let script = (0..<Int(rng.next() % 6)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
            let expected = reference(script)
            #expect(SimpleCommand.arguments(script) == expected, "\(script.debugDescription)")
            if expected != nil { direct += 1 }
        }
        #expect(direct > 200)
    }
}
