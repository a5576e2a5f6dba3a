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
    }
}
