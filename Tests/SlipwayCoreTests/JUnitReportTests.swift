import Foundation
import Testing
@testable import SlipwayCore

private func parse(_ xml: String, file: String = "report.xml") throws(JUnitReportError) -> [TestCaseResult] {
    try JUnitReport.parse(Data(xml.utf8), fileName: file)
}

@Suite struct JUnitReportTests {
    // pytest --junitxml (junit_family=xunit1 adds file/line; line is 0-based there).
    static let pytest = """
    <?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.093" timestamp="2024-05-01T10:00:00.000000" hostname="ci-1"><testcase classname="tests.test_math" name="test_add" file="tests/test_math.py" line="3" time="0.001" /><testcase classname="tests.test_math" name="test_sub" file="tests/test_math.py" line="6" time="0.002"><failure message="assert 1 == 2">def test_sub():
    &gt;       assert 1 == 2
    E       assert 1 == 2

    tests/test_math.py:8: AssertionError</failure><system-out>captured stdout</system-out></testcase><testcase classname="tests.test_math" name="test_skip" file="tests/test_math.py" line="10" time="0.000"><skipped type="pytest.skip" message="not ready yet">tests/test_math.py:11: not ready yet</skipped></testcase><testcase classname="tests.test_math" name="test_fixture" file="tests/test_math.py" line="14" time="0.090"><error message="failed on setup with &quot;RuntimeError: db down&quot;">@pytest.fixture
    def db():
    &gt;       raise RuntimeError("db down")
    E       RuntimeError: db down

    tests/conftest.py:5: RuntimeError</error></testcase></testsuite></testsuites>
    """

    // Maven Surefire (TEST-com.example.AppTest.xml).
    static let surefire = """
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report.xsd" version="3.0" name="com.example.AppTest" time="0.052" tests="5" errors="1" skipped="1" failures="1">
      <properties>
        <property name="java.version" value="21.0.2"/>
        <property name="os.name" value="Linux"/>
      </properties>
      <testcase name="testOk" classname="com.example.AppTest" time="0.001"/>
      <testcase name="testFail" classname="com.example.AppTest" time="0.012">
        <failure message="expected:&lt;1&gt; but was:&lt;2&gt;" type="java.lang.AssertionError"><![CDATA[java.lang.AssertionError: expected:<1> but was:<2>
    \tat org.junit.Assert.fail(Assert.java:89)
    \tat org.junit.Assert.failNotEquals(Assert.java:835)
    \tat com.example.AppTest.testFail(AppTest.java:27)
    ]]></failure>
        <system-out><![CDATA[some output]]></system-out>
      </testcase>
      <testcase name="testSkipped" classname="com.example.AppTest" time="0">
        <skipped message="ignored for now"/>
      </testcase>
      <testcase name="testBoom" classname="com.example.AppTest" time="0.003">
        <error message="boom" type="java.lang.IllegalStateException">java.lang.IllegalStateException: boom
    \tat com.example.App.run(App.java:12)
    \tat com.example.AppTest.testBoom(AppTest.java:40)
    </error>
      </testcase>
      <testcase name="testFlaky" classname="com.example.AppTest" time="0.020">
        <flakyFailure message="first attempt" type="java.lang.AssertionError">
          <stackTrace>java.lang.AssertionError at com.example.AppTest.testFlaky(AppTest.java:50)</stackTrace>
        </flakyFailure>
      </testcase>
    </testsuite>
    """

    // go-junit-report.
    static let goJUnit = """
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuites tests="3" failures="1">
    \t<testsuite name="github.com/acme/svc/pkg/store" tests="3" failures="1" errors="0" id="0" hostname="ci" time="0.015" timestamp="2024-05-01T10:00:00Z">
    \t\t<properties>
    \t\t\t<property name="go.version" value="go1.22.2 linux/amd64"></property>
    \t\t</properties>
    \t\t<testcase name="TestPut" classname="github.com/acme/svc/pkg/store" time="0.000"></testcase>
    \t\t<testcase name="TestGet" classname="github.com/acme/svc/pkg/store" time="0.010">
    \t\t\t<failure message="Failed"><![CDATA[    store_test.go:42: got "a", want "b"]]></failure>
    \t\t</testcase>
    \t\t<testcase name="TestGet/sub_case" classname="github.com/acme/svc/pkg/store" time="0.000">
    \t\t\t<skipped message="Skipped"><![CDATA[    store_test.go:50: flaky on CI]]></skipped>
    \t\t</testcase>
    \t\t<system-out><![CDATA[ok  \tgithub.com/acme/svc/pkg/store\t0.015s]]></system-out>
    \t</testsuite>
    </testsuites>
    """

    // swift test --xunit-output (XCTest), with a Swift Testing-style name.
    static let swiftXUnit = """
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuites>
    <testsuite name="TestResults" errors="0" tests="3" failures="1" time="0.0123">
    <testcase classname="SlipwayCoreTests.ParserTests" name="testParses" time="0.001">
    </testcase>
    <testcase classname="SlipwayCoreTests.ParserTests" name="testRejects" time="0.010">
    <failure message="XCTAssertEqual failed: (&quot;1&quot;) is not equal to (&quot;2&quot;)">/work/Tests/SlipwayCoreTests/ParserTests.swift:31: error: XCTAssertEqual failed</failure>
    </testcase>
    <testcase classname="SlipwayCoreTests" name="example()" time="0.0013">
    </testcase>
    </testsuite>
    </testsuites>
    """

    @Test func pytestShape() throws {
        let cases = try parse(Self.pytest)
        #expect(cases.count == 4)
        #expect(cases.map(\.status) == [.passed, .failed, .skipped, .error])
        let fail = cases[1]
        #expect(fail.suite == "pytest")
        #expect(fail.classname == "tests.test_math")
        #expect(fail.id == "tests.test_math.test_sub")
        #expect(fail.file == "tests/test_math.py")
        #expect(fail.line == 7) // pytest's 0-based line 6 → 1-based 7
        #expect(fail.duration == 0.002)
        #expect(fail.message == "assert 1 == 2")
        #expect(fail.details?.contains("tests/test_math.py:8: AssertionError") == true)
        #expect(fail.details?.contains("captured stdout") == false)
        #expect(cases[2].message == "not ready yet")
        #expect(cases[2].details == nil)
        #expect(cases[3].message == "failed on setup with \"RuntimeError: db down\"")
        #expect(cases[3].details?.hasPrefix("@pytest.fixture") == true)
        let summary = TestReportSummary(cases: cases)
        #expect(summary == TestReportSummary(cases: cases))
        #expect((summary.total, summary.passed, summary.failed, summary.errors, summary.skipped) == (4, 1, 1, 1, 1))
        #expect(abs(summary.duration - 0.093) < 1e-9)
    }

    @Test func surefireShape() throws {
        let cases = try parse(Self.surefire)
        #expect(cases.map(\.name) == ["testOk", "testFail", "testSkipped", "testBoom", "testFlaky"])
        #expect(cases.map(\.status) == [.passed, .failed, .skipped, .error, .passed])
        #expect(cases.allSatisfy { $0.suite == "com.example.AppTest" && $0.classname == "com.example.AppTest" })
        let fail = cases[1]
        #expect(fail.message == "expected:<1> but was:<2>")
        #expect(fail.details?.hasPrefix("java.lang.AssertionError: expected:<1> but was:<2>") == true)
        // No file attribute: the stack frame of the test class is preferred over the assertion library's.
        #expect(fail.file == "AppTest.java")
        #expect(fail.line == 27)
        #expect(cases[3].file == "AppTest.java")
        #expect(cases[3].line == 40)
        #expect(cases[2].message == "ignored for now")
        #expect(cases[0].file == nil && cases[0].line == nil)
        let summary = TestReportSummary(cases: cases)
        #expect((summary.total, summary.passed, summary.failed, summary.errors, summary.skipped) == (5, 2, 1, 1, 1))
    }

    @Test func goJUnitReportShape() throws {
        let cases = try parse(Self.goJUnit)
        #expect(cases.count == 3)
        #expect(cases[1].status == .failed)
        #expect(cases[1].message == "Failed")
        #expect(cases[1].details == "store_test.go:42: got \"a\", want \"b\"")
        #expect(cases[1].file == "store_test.go")
        #expect(cases[1].line == 42)
        #expect(cases[1].id == "github.com/acme/svc/pkg/store.TestGet")
        #expect(cases[2].status == .skipped)
        #expect(cases[2].name == "TestGet/sub_case")
        #expect(cases.allSatisfy { $0.suite == "github.com/acme/svc/pkg/store" })
    }

    @Test func swiftXUnitShape() throws {
        let cases = try parse(Self.swiftXUnit)
        #expect(cases.count == 3)
        #expect(cases.map(\.status) == [.passed, .failed, .passed])
        #expect(cases[1].message == "XCTAssertEqual failed: (\"1\") is not equal to (\"2\")")
        #expect(cases[1].file == "/work/Tests/SlipwayCoreTests/ParserTests.swift")
        #expect(cases[1].line == 31)
        #expect(cases[2].id == "SlipwayCoreTests.example()")
        #expect(cases[2].duration == 0.0013)
    }

    @Test func nestedSuitesAndMissingAttributes() throws {
        let xml = """
        <testsuites name="all">
          <testsuite name="outer" file="src/outer.spec.ts">
            <testsuite name="inner">
              <testcase name="works" time="garbage"/>
              <testcase name="fails" classname="Inner" time="-3"><failure>Error: nope
            at Object.&lt;anonymous&gt; (src/outer.spec.ts:12:5)</failure></testcase>
            </testsuite>
            <testcase name="outerCase" time="1,234.5"/>
          </testsuite>
          <testsuite name="">
            <testcase name="anonymous"/>
          </testsuite>
        </testsuites>
        """
        let cases = try parse(xml)
        #expect(cases.map(\.name) == ["works", "fails", "outerCase", "anonymous"])
        #expect(cases[0].suite == "inner")
        #expect(cases[0].classname == "inner") // falls back to the suite name
        #expect(cases[0].duration == 0)
        #expect(cases[0].file == "src/outer.spec.ts") // suite-level file attribute
        #expect(cases[1].duration == 0)
        #expect(cases[1].message == "Error: nope")
        #expect(cases[2].suite == "outer")
        #expect(cases[2].duration == 1234.5)
        #expect(cases[3].suite == "all")
    }

    @Test func locationFromFailureText() {
        #expect(JUnitReport.location(in: "boom\n  at x (lib/a.js:10:3)", classname: "x")! == ("lib/a.js", 10))
        #expect(JUnitReport.location(in: "see http://example.com:8080/x and nothing else", classname: "C") == nil)
        #expect(JUnitReport.location(in: "version 1.2.3:45", classname: "C") == nil)
        #expect(JUnitReport.location(in: "no location here", classname: "C") == nil)
        #expect(JUnitReport.location(in: "Foo.kt:0: x", classname: "Foo") == nil)
        let trace = "at org.junit.Assert.fail(Assert.java:89)\nat com.acme.FooTest.t(FooTest.java:12)"
        #expect(JUnitReport.location(in: trace, classname: "com.acme.FooTest")! == ("FooTest.java", 12))
        #expect(JUnitReport.location(in: trace, classname: "com.acme.Other")! == ("Assert.java", 89))
    }

    @Test func emptyReports() throws {
        #expect(try parse("<testsuites/>").isEmpty)
        #expect(try parse("<?xml version=\"1.0\"?>\n<testsuites>\n</testsuites>").isEmpty)
        #expect(try parse("<testsuite name=\"x\" tests=\"0\"></testsuite>").isEmpty)
        let summary = TestReportSummary(cases: [])
        #expect(summary.total == 0 && summary.duration == 0)
    }

    @Test func malformedXMLThrowsWithLine() {
        let xml = "<testsuites>\n<testsuite name=\"a\">\n<testcase name=\"x\">\n</testsuite>\n</testsuites>\n"
        do {
            _ = try parse(xml, file: "reports/bad.xml")
            Issue.record("expected an error")
        } catch {
            #expect(error.file == "reports/bad.xml")
            #expect(error.line == 4)
            #expect(error.description.hasPrefix("reports/bad.xml:4: "))
        }
        for bad in ["", "not xml at all", "<testsuites><testcase", "<testsuites></testsuite>", "\u{0}\u{1}garbage<"] {
            #expect(throws: JUnitReportError.self, "\(bad.debugDescription)") { try parse(bad) }
        }
        #expect(throws: JUnitReportError.self) { try parse("<html><body>502 Bad Gateway</body></html>") }
    }

    @Test func externalEntitiesAreNotResolved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("junit-xxe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let secretFile = dir.appendingPathComponent("secret.txt")
        try Data("TOP-SECRET-CONTENT".utf8).write(to: secretFile)
        let xml = """
        <?xml version="1.0"?>
        <!DOCTYPE testsuites [<!ENTITY xxe SYSTEM "\(secretFile.absoluteString)">]>
        <testsuites><testsuite name="s"><testcase name="t"><failure message="m">&xxe;</failure></testcase></testsuite></testsuites>
        """
        do {
            let cases = try parse(xml)
            #expect(cases.allSatisfy { !($0.details ?? "").contains("TOP-SECRET") && !($0.message ?? "").contains("TOP-SECRET") })
        } catch {
            // Refusing the document is fine too.
        }
    }

    @Test func detailsAreTruncatedTo64KiB() throws {
        let big = String(repeating: "é", count: 50_000) // 100 000 bytes
        let xml = "<testsuite name=\"s\"><testcase name=\"t\"><failure>\(big)</failure></testcase></testsuite>"
        let cases = try parse(xml)
        let details = try #require(cases.first?.details)
        #expect(details.utf8.count <= JUnitReport.maxDetailsBytes)
        #expect(details.utf8.count >= JUnitReport.maxDetailsBytes - 1)
        #expect(details.allSatisfy { $0 == "é" })
    }

    @Test func tenMegabyteReport() throws {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n"
        var expected = 0
        var suite = 0
        while xml.utf8.count < 10_000_000 {
            xml += "<testsuite name=\"suite\(suite)\" tests=\"100\">\n"
            for i in 0..<100 {
                if i % 10 == 0 {
                    xml += "<testcase classname=\"pkg.Suite\(suite)\" name=\"test\(i)\" time=\"0.5\"><failure message=\"bad &amp; worse\" type=\"AssertionError\">"
                    xml += String(repeating: "  at pkg.Suite\(suite).test\(i)(Suite\(suite).java:\(i + 1))\n", count: 20)
                    xml += "</failure><system-out>\(String(repeating: "log line\n", count: 20))</system-out></testcase>\n"
                } else {
                    xml += "<testcase classname=\"pkg.Suite\(suite)\" name=\"test\(i)\" time=\"0.5\"/>\n"
                }
                expected += 1
            }
            xml += "</testsuite>\n"
            suite += 1
        }
        xml += "</testsuites>\n"
        let cases = try parse(xml)
        #expect(cases.count == expected)
        let summary = TestReportSummary(cases: cases)
        #expect(summary.failed == expected / 10)
        #expect(summary.passed == expected - expected / 10)
        #expect(abs(summary.duration - Double(expected) * 0.5) < 1e-6)
        #expect(cases[0].file == "Suite0.java" && cases[0].line == 1)
        #expect(cases[0].message == "bad & worse")
    }

    @Test func codableRoundTrip() throws {
        let cases = try parse(Self.surefire)
        let data = try JSONEncoder().encode(cases)
        #expect(try JSONDecoder().decode([TestCaseResult].self, from: data) == cases)
        let summary = TestReportSummary(cases: cases)
        #expect(try JSONDecoder().decode(TestReportSummary.self, from: JSONEncoder().encode(summary)) == summary)
    }
}
