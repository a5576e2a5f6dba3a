import SlipwayTestSupport
import Testing

@testable import SlipwayCore

// MARK: - Helpers

private func ev(_ source: String, _ context: ExpressionContext = .init()) throws -> ExpressionValue {
    try Expression(parsing: source).evaluate(in: context)
}

private func parseError(_ source: String) -> ExpressionError? {
    do {
        _ = try Expression(parsing: source)
        return nil
    } catch {
        return error
    }
}

private func evalError(_ source: String, _ context: ExpressionContext = .init()) throws -> ExpressionError? {
    let expr = try Expression(parsing: source)
    do {
        _ = try expr.evaluate(in: context)
        return nil
    } catch {
        return error
    }
}

private func templateError(_ text: String) -> ExpressionError? {
    do {
        _ = try Template(parsing: text)
        return nil
    } catch {
        return error
    }
}

private let sampleContext = ExpressionContext(values: [
    "branch": "main",
    "event": "push",
    "commit": ["sha": "abc123", "message": "Fix it"],
    "run": ["number": 42],
    "env": ["MODE": "release", "EMPTY": ""],
    "secrets": ["TOKEN": "s3cret"],
    "matrix": ["shard": 2, "os": "linux", "list": [1, 2, 3]],
    "needs": [
        "build": ["result": "success", "outputs": ["version": "1.2.3", "nested": ["deep": ["x": true]]]],
        "build-app": ["result": "failure", "outputs": [:]],
    ],
])


// MARK: - Values

@Test func valueTruthiness() {
    #expect(!ExpressionValue.null.isTruthy)
    #expect(!ExpressionValue.bool(false).isTruthy)
    #expect(ExpressionValue.bool(true).isTruthy)
    #expect(!ExpressionValue.number(0).isTruthy)
    #expect(!ExpressionValue.number(-0.0).isTruthy)
    #expect(!ExpressionValue.number(.nan).isTruthy)
    #expect(ExpressionValue.number(-1).isTruthy)
    #expect(!ExpressionValue.string("").isTruthy)
    #expect(ExpressionValue.string("false").isTruthy)
    #expect(ExpressionValue.array([]).isTruthy)
    #expect(ExpressionValue.object([:]).isTruthy)
}

@Test func valueDescription() {
    #expect(ExpressionValue.null.description == "")
    #expect(ExpressionValue.bool(true).description == "true")
    #expect(ExpressionValue.bool(false).description == "false")
    #expect(ExpressionValue.number(3).description == "3")
    #expect(ExpressionValue.number(-7).description == "-7")
    #expect(ExpressionValue.number(2.5).description == "2.5")
    #expect(ExpressionValue.number(.nan).description == "NaN")
    #expect(ExpressionValue.string("hi").description == "hi")
    #expect(ExpressionValue.array([1, "a", .null, true]).description == #"[1,"a",null,true]"#)
    #expect(ExpressionValue.object(["b": 1, "a": ["x": "q\"uote"]]).description == #"{"a":{"x":"q\"uote"},"b":1}"#)
}

// MARK: - Literals

@Test func literals() throws {
    #expect(try ev("null") == .null)
    #expect(try ev("true") == .bool(true))
    #expect(try ev("false") == .bool(false))
    #expect(try ev("42") == .number(42))
    #expect(try ev("-9.5") == .number(-9.5))
    #expect(try ev("3.25") == .number(3.25))
    #expect(try ev("0xff") == .number(255))
    #expect(try ev("0X1A") == .number(26))
    #expect(try ev("-0x10") == .number(-16))
    #expect(try ev("2.5e2") == .number(250))
    #expect(try ev("1E-2") == .number(0.01))
    #expect(try ev("'hello'") == .string("hello"))
    #expect(try ev("'it''s'") == .string("it's"))
    #expect(try ev("''") == .string(""))
    #expect(try ev("'}} inside'") == .string("}} inside"))
    #expect(try ev("  'padded'  ") == .string("padded"))
}

@Test func literalErrors() {
    #expect(parseError("'unterminated")?.offset == 0)
    #expect(parseError("1 == 'abc")?.offset == 5)
    #expect(parseError("0x")?.message.contains("hexadecimal") == true)
    #expect(parseError("12abc")?.message.contains("invalid number") == true)
    let dq = parseError("branch == \"main\"")
    #expect(dq?.offset == 10)
    #expect(dq?.message.contains("single quotes") == true)
}

// MARK: - Operators

@Test func precedence() throws {
    // && binds tighter than ||
    #expect(try ev("true || false && false") == .bool(true))
    #expect(try ev("(true || false) && false") == .bool(false))
    // ! binds tighter than ==
    #expect(try ev("!true == false") == .bool(true))
    #expect(try ev("!(1 == 2)") == .bool(true))
    // relational binds tighter than equality
    #expect(try ev("1 < 2 == true") == .bool(true))
    #expect(try ev("true == 1 < 2") == .bool(true))
    // equality binds tighter than &&
    #expect(try ev("1 == 1 && 2 == 3") == .bool(false))
    #expect(try ev("1 == 2 || 3 == 3") == .bool(true))
    // left associativity of comparisons: (1 == 1) == true
    #expect(try ev("1 == 1 == true") == .bool(true))
    #expect(try ev("!!'x'") == .bool(true))
    #expect(try ev("!''") == .bool(true))
}

@Test func shortCircuitReturnsOperandValues() throws {
    #expect(try ev("'a' || 'b'") == .string("a"))
    #expect(try ev("'' || 'b'") == .string("b"))
    #expect(try ev("null || 0") == .number(0))
    #expect(try ev("'a' && 'b'") == .string("b"))
    #expect(try ev("0 && 'b'") == .number(0))
    #expect(try ev("null && true") == .null)
    #expect(try ev("env.MODE == 'release' && 'prod' || 'dev'", sampleContext) == .string("prod"))
    #expect(try ev("env.MODE == 'debug' && 'prod' || 'dev'", sampleContext) == .string("dev"))
    // Short-circuit: the right side is never evaluated (it would fail).
    #expect(try ev("true || fromJSON('not json')") == .bool(true))
    #expect(try ev("false && format('{5}')") == .bool(false))
    #expect(try evalError("false || fromJSON('not json')") != nil)
}

@Test func comparisonCoercions() throws {
    #expect(try ev("'1' == 1") == .bool(true))
    #expect(try ev("' 1 ' == 1") == .bool(true))
    #expect(try ev("'1.0' == 1") == .bool(true))
    #expect(try ev("'0x10' == 16") == .bool(true))
    #expect(try ev("'abc' == 0") == .bool(false))  // 'abc' -> NaN
    #expect(try ev("'' == 0") == .bool(true))
    #expect(try ev("null == 0") == .bool(true))
    #expect(try ev("null == false") == .bool(true))
    #expect(try ev("null == null") == .bool(true))
    #expect(try ev("null == ''") == .bool(true))
    #expect(try ev("true == 1") == .bool(true))
    #expect(try ev("false == 0") == .bool(true))
    #expect(try ev("true == 2") == .bool(false))
    #expect(try ev("'true' == true") == .bool(false))  // 'true' -> NaN
    #expect(try ev("'ABC' == 'abc'") == .bool(true))
    #expect(try ev("'ABC' != 'abd'") == .bool(true))
    #expect(try ev("'abc' < 'ABD'") == .bool(true))
    #expect(try ev("'b' > 'A'") == .bool(true))
    #expect(try ev("'10' > 9") == .bool(true))
    #expect(try ev("'10' > '9'") == .bool(false))  // both strings: lexical
    #expect(try ev("2 >= 2") == .bool(true))
    #expect(try ev("2 <= 1") == .bool(false))
    #expect(try ev("'x' < 1") == .bool(false))  // NaN comparisons are false
    #expect(try ev("'x' >= 1") == .bool(false))
    #expect(try ev("'x' != 1") == .bool(true))
    #expect(try ev("fromJSON('[]') == fromJSON('[]')") == .bool(false))
    #expect(try ev("fromJSON('{}') == 0") == .bool(false))
    #expect(try ev("fromJSON('[1]') < 2") == .bool(false))
}

// MARK: - Access

@Test func propertyAndIndexAccess() throws {
    let c = sampleContext
    #expect(try ev("branch", c) == .string("main"))
    #expect(try ev("commit.sha", c) == .string("abc123"))
    #expect(try ev("commit['sha']", c) == .string("abc123"))
    #expect(try ev("run.number", c) == .number(42))
    #expect(try ev("matrix.list[1]", c) == .number(2))
    #expect(try ev("matrix.list['2']", c) == .number(3))
    #expect(try ev("matrix['list'][0]", c) == .number(1))
    #expect(try ev("matrix.list[3]", c) == .null)
    #expect(try ev("matrix.list[-1]", c) == .null)
    #expect(try ev("matrix.list[0.5]", c) == .null)
    #expect(try ev("commit.missing", c) == .null)
    #expect(try ev("commit.missing.deeper.still", c) == .null)
    #expect(try ev("commit['missing']['x']", c) == .null)
    #expect(try ev("branch.length", c) == .null)
    #expect(try ev("inputs.anything", c) == .null)  // context absent entirely
    #expect(try ev("COMMIT.SHA", c) == .string("abc123"))  // case-insensitive names
    #expect(try ev("env.mode", c) == .string("release"))
    #expect(try ev("(commit).message", c) == .string("Fix it"))
    #expect(try ev("fromJSON('{\"a\":[10,20]}').a[1]") == .number(20))
}

@Test func needsOutputsLookup() throws {
    let c = sampleContext
    #expect(try ev("needs.build.outputs.version", c) == .string("1.2.3"))
    #expect(try ev("needs.build.result == 'success'", c) == .bool(true))
    #expect(try ev("needs.build-app.result", c) == .string("failure"))
    #expect(try ev("needs['build-app'].result", c) == .string("failure"))
    #expect(try ev("needs.build.outputs.nested.deep.x", c) == .bool(true))
    #expect(try ev("needs.build-app.outputs.version", c) == .null)
    #expect(try ev("needs.nope.outputs.version", c) == .null)
}

@Test func wildcardFilter() throws {
    let c = sampleContext
    // Object values are visited in sorted key order: build, build-app.
    #expect(try ev("needs.*.result", c) == .array(["success", "failure"]))
    #expect(try ev("contains(needs.*.result, 'failure')", c) == .bool(true))
    #expect(try ev("matrix.list.*", c) == .array([1, 2, 3]))
    #expect(try ev("fromJSON('[{\"a\":1},{\"b\":2},{\"a\":3}]')[*].a") == .array([1, 3]))
}

// MARK: - Functions

@Test func containsStartsWithEndsWith() throws {
    let c = sampleContext
    #expect(try ev("contains('Hello World', 'WORLD')") == .bool(true))
    #expect(try ev("contains('Hello', 'xyz')") == .bool(false))
    #expect(try ev("contains(matrix.list, 2)", c) == .bool(true))
    #expect(try ev("contains(matrix.list, '2')", c) == .bool(true))  // element equality coerces
    #expect(try ev("contains(matrix.list, 9)", c) == .bool(false))
    #expect(try ev("contains(fromJSON('[\"Push\",\"tag\"]'), event)", c) == .bool(true))
    #expect(try ev("contains(42, 4)") == .bool(true))  // coerced to strings
    #expect(try ev("startsWith('Release/1.0', 'release/')") == .bool(true))
    #expect(try ev("startsWith('main', 'release')") == .bool(false))
    #expect(try ev("endsWith('file.TAR.GZ', '.gz')") == .bool(true))
    #expect(try ev("endsWith('file.zip', '.gz')") == .bool(false))
    #expect(try ev("STARTSWITH(branch, 'ma')", c) == .bool(true))  // function names case-insensitive
}

@Test func formatFunction() throws {
    let c = sampleContext
    #expect(try ev("format('{0} and {1}', 'a', 'b')") == .string("a and b"))
    #expect(try ev("format('{1}{0}{1}', 'x', 'y')") == .string("yxy"))
    #expect(try ev("format('{{0}} is {0}', 5)") == .string("{0} is 5"))
    #expect(try ev("format('v{0}-{1}', needs.build.outputs.version, run.number)", c) == .string("v1.2.3-42"))
    #expect(try ev("format('{0}|{1}|{2}', null, true, 1.5)") == .string("|true|1.5"))
    #expect(try ev("format('plain')") == .string("plain"))

    let outOfRange = try evalError("format('{0} {1}', 'a')")
    #expect(outOfRange?.message.contains("out of range") == true)
    #expect(outOfRange?.offset == 0)
    let badBrace = try evalError("true && format('{x}', 1)")
    #expect(badBrace?.message.contains("invalid placeholder") == true)
    #expect(badBrace?.offset == 8)
    #expect(try evalError("format('a } b')")?.message.contains("unmatched '}'") == true)
    #expect(try evalError("format('{0', 1)") != nil)
}

@Test func joinToJSONFromJSON() throws {
    let c = sampleContext
    #expect(try ev("join(matrix.list)", c) == .string("1,2,3"))
    #expect(try ev("join(matrix.list, ' + ')", c) == .string("1 + 2 + 3"))
    #expect(try ev("join('solo', ';')") == .string("solo"))
    #expect(try ev("join(fromJSON('[]'))") == .string(""))

    #expect(try ev("toJSON('a\"b')") == .string(#""a\"b""#))
    #expect(try ev("toJSON(3)") == .string("3"))
    #expect(try ev("toJSON(null)") == .string("null"))
    #expect(try ev("toJSON(matrix.list)", c) == .string("[\n  1,\n  2,\n  3\n]"))
    #expect(try ev("toJSON(commit)", c) == .string("{\n  \"message\": \"Fix it\",\n  \"sha\": \"abc123\"\n}"))

    #expect(try ev("fromJSON('true')") == .bool(true))
    #expect(try ev("fromJSON('12.5')") == .number(12.5))
    #expect(try ev("fromJSON('null')") == .null)
    #expect(try ev("fromJSON('\"x\\u00e9\\ud83d\\ude00\"')") == .string("xé😀"))
    #expect(try ev("fromJSON(' {\"a\": [1, {\"b\": null}], \"c\": \"d\"} ')")
        == .object(["a": [1, ["b": .null]], "c": "d"]))
    // Round trip.
    #expect(try ev("fromJSON(toJSON(needs.build.outputs))", c) == (try ev("needs.build.outputs", c)))

    for bad in ["'not json'", "'{\"a\":}'", "'[1,2'", "'1 2'", "''", "'{a:1}'", "'\"\\q\"'", "'01x'"] {
        let err = try evalError("fromJSON(\(bad))")
        #expect(err != nil, "fromJSON(\(bad)) should fail")
        #expect(err?.message.hasPrefix("fromJSON()") == true)
    }
    #expect(try evalError("fromJSON(1)")?.message.contains("expects a string") == true)
    let deep = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
    #expect(try evalError("fromJSON('\(deep)')")?.message.contains("nesting") == true)
}

@Test func statusFunctions() throws {
    func status(_ s: JobStatus, _ expr: String) throws -> ExpressionValue {
        try ev(expr, ExpressionContext(status: s))
    }
    let ok = JobStatus(anyNeedFailed: false, anyNeedCancelled: false, runCancelled: false)
    let failed = JobStatus(anyNeedFailed: true, anyNeedCancelled: false, runCancelled: false)
    let cancelled = JobStatus(anyNeedFailed: false, anyNeedCancelled: true, runCancelled: true)
    let needCancelled = JobStatus(anyNeedFailed: false, anyNeedCancelled: true, runCancelled: false)

    #expect(try status(ok, "success()") == .bool(true))
    #expect(try status(ok, "failure()") == .bool(false))
    #expect(try status(ok, "cancelled()") == .bool(false))
    #expect(try status(ok, "always()") == .bool(true))

    #expect(try status(failed, "success()") == .bool(false))
    #expect(try status(failed, "failure()") == .bool(true))
    #expect(try status(failed, "cancelled()") == .bool(false))
    #expect(try status(failed, "always()") == .bool(true))

    #expect(try status(cancelled, "success()") == .bool(false))
    #expect(try status(cancelled, "failure()") == .bool(false))
    #expect(try status(cancelled, "cancelled()") == .bool(true))
    #expect(try status(cancelled, "always()") == .bool(true))

    #expect(try status(needCancelled, "success()") == .bool(false))
    #expect(try status(needCancelled, "cancelled()") == .bool(false))

    #expect(try status(failed, "failure() && !cancelled()") == .bool(true))
    #expect(try status(ok, "Success()") == .bool(true))
    #expect(try ev("success()") == .bool(true))  // default status
}

@Test func hashFilesIsRejected() {
    let err = parseError("hashFiles('**/*.lock')")
    #expect(err?.message == "hashFiles() is not supported; use cache.inputs")
    #expect(err?.offset == 0)
    #expect(parseError("true && HASHFILES('x')")?.offset == 8)
}

// MARK: - Parse errors

@Test func unknownContextSuggestion() {
    let err = parseError("brnch == 'main'")
    #expect(err?.message == "unknown context 'brnch'; did you mean 'branch'?")
    #expect(err?.offset == 0)
    let err2 = parseError("branch == 'main' && secret.TOKEN")
    #expect(err2?.message.contains("did you mean 'secrets'?") == true)
    #expect(err2?.offset == 20)
    let err3 = parseError("x == True")
    #expect(err3?.offset == 0)
    #expect(parseError("1 == True")?.message.contains("did you mean 'true'?") == true)
    let far = parseError("zzzzzzzzzz")
    #expect(far?.message.contains("did you mean") == false)
    #expect(far?.message.contains("branch") == true)  // lists the available contexts
}

@Test func unknownFunctionSuggestion() {
    let err = parseError("sucess()")
    #expect(err?.message == "unknown function 'sucess'; did you mean 'success'?")
    #expect(err?.offset == 0)
    let err2 = parseError("always() || startswith(branch, 'x') && contians(branch, 'y')")
    #expect(err2?.message.contains("did you mean 'contains'?") == true)
    #expect(err2?.offset == 39)
    let err3 = parseError("frobnicate(1)")
    #expect(err3?.message.contains("available functions") == true)
}

@Test func arityErrors() {
    let err = parseError("contains('a')")
    #expect(err?.message == "contains() takes 2 arguments, got 1")
    #expect(err?.offset == 0)
    #expect(parseError("1 == success(1)")?.offset == 5)
    #expect(parseError("format()")?.message.contains("at least 1 argument") == true)
    #expect(parseError("join(1, 2, 3)")?.message.contains("1 to 2 arguments") == true)
    #expect(parseError("toJSON()") != nil)
}

@Test func syntaxErrorsHaveOffsets() {
    #expect(parseError("")?.message == "empty expression")
    #expect(parseError("   ")?.message == "empty expression")
    #expect(parseError("branch = 'main'")?.offset == 7)
    #expect(parseError("branch = 'main'")?.message.contains("'=='") == true)
    #expect(parseError("true & false")?.offset == 5)
    #expect(parseError("true | false")?.offset == 5)
    #expect(parseError("(true")?.offset == 5)
    #expect(parseError("(true")?.message.contains("')'") == true)
    #expect(parseError("true)")?.offset == 4)
    #expect(parseError("branch branch")?.offset == 7)
    #expect(parseError("commit.")?.offset == 7)
    #expect(parseError("commit.'x'")?.offset == 7)
    #expect(parseError("commit['x'")?.offset == 10)
    #expect(parseError("1 ==")?.offset == 4)
    #expect(parseError("&& 1")?.offset == 0)
    #expect(parseError("contains('a' 'b')")?.offset == 13)
    #expect(parseError("1 # 2")?.offset == 2)
    #expect(parseError("'é' == x")?.offset == 7)  // offsets count Characters, not bytes
    #expect(parseError("'👨‍👩‍👧' == brnch")?.offset == 7)
}

@Test func wrappedExpressionSource() throws {
    #expect(try ev("${{ success() && branch == 'main' }}", sampleContext) == .bool(true))
    #expect(try ev("  ${{ 1 }}  ") == .number(1))
    #expect(parseError("${{ brnch }}")?.offset == 4)
    #expect(parseError("${{ 1 }} && ${{ 2 }}") != nil)
    #expect(parseError("${{ 1 ") != nil)
}

// MARK: - Static analysis

@Test func referencedSecretsNeedsAndStatus() throws {
    let e = try Expression(parsing: """
        secrets.TOKEN != '' && secrets['DEPLOY_KEY'] && needs.build.outputs.version \
        && needs['build-app'].result == 'success' && contains(needs.test.result, 'x') && env.SECRET_ISH
        """)
    #expect(e.referencedSecrets == ["TOKEN", "DEPLOY_KEY"])
    #expect(e.referencedNeeds == ["build", "build-app", "test"])
    #expect(!e.usesStatusFunction)

    #expect(try Expression(parsing: "always()").usesStatusFunction)
    #expect(try Expression(parsing: "!cancelled() && branch == 'main'").usesStatusFunction)
    #expect(try Expression(parsing: "format('{0}', failure())").usesStatusFunction)
    #expect(try Expression(parsing: "(SUCCESS())").usesStatusFunction)
    #expect(try !Expression(parsing: "contains(branch, 'success')").usesStatusFunction)

    let dynamic = try Expression(parsing: "secrets[env.NAME] && needs[matrix.job].result")
    #expect(dynamic.referencedSecrets.isEmpty)
    #expect(dynamic.referencedNeeds.isEmpty)
    #expect(try Expression(parsing: "format('{0}', secrets.A)").referencedSecrets == ["A"])
    #expect(try Expression(parsing: "commit.secrets.X").referencedSecrets.isEmpty)
}

@Test func expressionEqualityIsBySource() throws {
    #expect(try Expression(parsing: "success() || 1") == Expression(parsing: "success() || 1"))
    #expect(try Expression(parsing: "1") != Expression(parsing: "2"))
    #expect(try Expression(parsing: "matrix.os").source == "matrix.os")
}

// MARK: - Templates

@Test func templateRendering() throws {
    let c = sampleContext
    let t = try Template(parsing: "make test SHARD=${{ matrix.shard }} OS=${{matrix.os}} V=${{ needs.build.outputs.version }}!")
    #expect(!t.isLiteral)
    #expect(t.segments.count == 7)
    #expect(try t.render(in: c) == "make test SHARD=2 OS=linux V=1.2.3!")
    if case .expression(let e, let offset) = t.segments[1] {
        #expect(e.source == "matrix.shard")
        #expect(offset == 20)
    } else {
        Issue.record("segment 1 should be an expression")
    }
    #expect(t.segments[0] == .literal("make test SHARD="))

    #expect(try Template(parsing: "${{ 1 }}${{ 'a' }}").render(in: c) == "1a")
    #expect(try Template(parsing: "x=${{ inputs.missing }};").render(in: c) == "x=;")
    #expect(try Template(parsing: "${{ matrix.list }}").render(in: c) == "[1,2,3]")
    #expect(try Template(parsing: "${{ format('{{}}') }}").render(in: c) == "{}")
    #expect(try Template(parsing: "${{ '}}' }}").render(in: c) == "}}")
    #expect(try Template(parsing: "a ${ b } $ {{ c }} $${{ 1 }}").render(in: c) == "a ${ b } $ {{ c }} $1")
    #expect(try Template(parsing: "é${{ 1 }}").segments == [
        .literal("é"), .expression(try Expression(parsing: "1"), offset: 5),
    ])
}

@Test func literalTemplates() throws {
    let t = try Template(parsing: "echo hello world")
    #expect(t.isLiteral)
    #expect(t.segments == [.literal("echo hello world")])
    #expect(try t.render(in: .init()) == "echo hello world")
    let empty = try Template(parsing: "")
    #expect(empty.isLiteral)
    #expect(empty.segments.isEmpty)
    #expect(try empty.render(in: .init()) == "")
}

@Test func templateErrors() throws {
    let unterminated = templateError("echo ${{ matrix.shard ")
    #expect(unterminated?.offset == 5)
    #expect(unterminated?.message.contains("unterminated '${{'") == true)
    #expect(templateError("ok ${{ 1 }} then ${{ 'oops }}")?.offset == 17)
    #expect(templateError("x${{   }}")?.message.contains("empty expression") == true)
    // Parse errors inside a segment are reported relative to the whole template.
    let inner = templateError("run ${{ brnch }}")
    #expect(inner?.offset == 8)
    #expect(inner?.message.contains("did you mean 'branch'?") == true)
    #expect(templateError("a ${{ 1 }} b ${{ sucess() }}")?.offset == 17)
    // Evaluation errors too.
    let t = try Template(parsing: "v=${{ format('{3}', 1) }}")
    do {
        _ = try t.render(in: .init())
        Issue.record("render should fail")
    } catch {
        #expect(error.offset == 6)
        #expect(error.message.contains("out of range"))
    }
}

// MARK: - Robustness

@Test func deepNestingIsAnErrorNotACrash() {
    for input in [
        String(repeating: "(", count: 100_000) + "1" + String(repeating: ")", count: 100_000),
        String(repeating: "!", count: 100_000) + "true",
        String(repeating: "(", count: 100_000),
        "matrix" + String(repeating: "[matrix", count: 100_000),
        String(repeating: "format(", count: 100_000),
    ] {
        let err = parseError(input)
        #expect(err?.message.contains("expression nests too deeply") == true)
    }
    // Nesting within the limit is fine.
    let ok = String(repeating: "(", count: 60) + "1" + String(repeating: ")", count: 60)
    #expect(parseError(ok) == nil)
    #expect(parseError(String(repeating: "!", count: 60) + "true") == nil)
}

@Test func longFlatInputsAreFine() throws {
    let n = 50_000
    let ors = Array(repeating: "false", count: n).joined(separator: " || ") + " || 'last'"
    #expect(try ev(ors) == .string("last"))
    let ands = Array(repeating: "1", count: n).joined(separator: " && ")
    #expect(try ev(ands) == .number(1))
    let eqs = Array(repeating: "true", count: n).joined(separator: " == ")
    #expect(try ev(eqs) == .bool(true))
    let path = "commit" + String(repeating: ".x", count: n)
    #expect(try ev(path, sampleContext) == .null)
    let longString = "'" + String(repeating: "ab''", count: n) + "'"
    #expect(try ev("startsWith(\(longString), 'ab''')") == .bool(true))
    let template = String(repeating: "x${{ 1 }}", count: 10_000)
    #expect(try Template(parsing: template).render(in: .init()).count == 20_000)
    #expect(parseError(String(repeating: "a", count: 100_000)) != nil)  // huge unknown identifier
}

@Test func randomGarbageNeverCrashes() throws {
    var rng = SplitMix64(seed: 0x5EED_CAFE)
    let alphabet: [String] = [
        "(", ")", "[", "]", ".", ",", "!", "=", "==", "!=", "<", "<=", ">", ">=", "&", "&&", "|", "||", "*",
        "'", "''", "\"", " ", "\n", "$", "{", "}", "${{", "}}", "0", "1", "9", "0x", "-", "e", "1.5", "_",
        "a", "é", "😀", "true", "null", "branch", "needs", "secrets", "matrix", "success", "contains",
        "format", "fromJSON", "toJSON", "join", "hashFiles", "'{0}'", "'[1,'", "\\",
    ]
    var parsed = 0
    for _ in 0..<3000 {
        let length = Int(rng.next() % 24)
        var text = ""
        for _ in 0..<length { text += alphabet[Int(rng.next() % UInt64(alphabet.count))] }
        if let expr = try? Expression(parsing: text) {
            parsed += 1
            _ = try? expr.evaluate(in: sampleContext)
            _ = expr.referencedSecrets
            _ = expr.usesStatusFunction
        } else if let error = parseError(text) {
            #expect(error.offset >= 0 && error.offset <= text.count, "offset out of range for \(text)")
        }
        if let template = try? Template(parsing: text) {
            _ = try? template.render(in: sampleContext)
        } else if let error = templateError(text) {
            #expect(error.offset >= 0 && error.offset <= text.count)
        }
    }
    #expect(parsed > 0)  // the generator does produce some valid expressions
}

/// The byte scan that lets plain values skip template parsing agrees with a plain substring search,
/// on random strings of the characters that matter (and multi-byte ones around them).
@Test func mayHoldExpressionsAgreesWithContains() {
    var rng = SplitMix64(seed: 0x2411)
    let alphabet: [String] = ["$", "{", "{", "}", "a", "é", "💥", "\n"]
    var found = 0
    for _ in 0..<5000 {
        let length = Int(rng.next() % 12)
        let text = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }.joined()
        let expected = text.utf8.count >= 3 && (0...(text.utf8.count - 3)).contains { Array(text.utf8)[$0..<($0 + 3)] == ["$", "{", "{"].map { UInt8(ascii: $0) }[...] }
        #expect(Template.mayHoldExpressions(text) == expected, "\(text.debugDescription)")
        if expected { found += 1 }
    }
    #expect(found > 100)  // the generator does produce markers
    #expect(Template.mayHoldExpressions("run ${{ matrix.os }}"))
    #expect(!Template.mayHoldExpressions("${ {"))
}
