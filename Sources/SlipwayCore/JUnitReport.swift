import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// One test case of a JUnit XML report.
public struct TestCaseResult: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable { case passed, failed, error, skipped }

    public var suite: String
    public var classname: String
    public var name: String
    public var file: String?
    public var line: Int?
    /// Seconds.
    public var duration: Double
    public var status: Status
    /// Failure/error/skip message attribute, or the first non-empty line of its text.
    public var message: String?
    /// Failure/error text (stack trace), truncated to 64 KiB.
    public var details: String?

    /// Identity across runs, for flaky counting.
    public var id: String { "\(classname).\(name)" }

    public init(suite: String, classname: String, name: String, file: String? = nil, line: Int? = nil,
                duration: Double = 0, status: Status = .passed, message: String? = nil, details: String? = nil)
    {
        self.suite = suite
        self.classname = classname
        self.name = name
        self.file = file
        self.line = line
        self.duration = duration
        self.status = status
        self.message = message
        self.details = details
    }
}

public struct TestReportSummary: Sendable, Codable, Equatable {
    public var total: Int
    public var passed: Int
    public var failed: Int
    public var errors: Int
    public var skipped: Int
    /// Sum of the test case durations, in seconds.
    public var duration: Double

    public init(cases: [TestCaseResult]) {
        total = cases.count
        passed = 0; failed = 0; errors = 0; skipped = 0; duration = 0
        for c in cases {
            switch c.status {
            case .passed: passed += 1
            case .failed: failed += 1
            case .error: errors += 1
            case .skipped: skipped += 1
            }
            duration += c.duration
        }
    }
}

public struct JUnitReportError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { return "\(file):\(line): \(message)" }
        return "\(file): \(message)"
    }
}

/// JUnit XML report parser, for the shapes produced by pytest, Maven Surefire / Gradle, go-junit-report,
/// `swift test --xunit-output`, jest-junit and similar tools.
public enum JUnitReport {
    /// Maximum size in bytes of `TestCaseResult.details`.
    public static let maxDetailsBytes = 64 * 1024

    public static func parse(_ data: Data, fileName: String) throws(JUnitReportError) -> [TestCaseResult] {
        // Stream mode feeds libxml2 in chunks: with one big chunk it refuses documents over 10 MB
        // ("huge input lookup"). Errors are reported through the delegate (parse() may still return true).
        let parser = XMLParser(stream: InputStream(data: data))
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.shouldReportNamespacePrefixes = false
        let delegate = JUnitParserDelegate()
        parser.delegate = delegate
        let ok = parser.parse()
        if let message = delegate.abortMessage {
            throw JUnitReportError(file: fileName, line: delegate.abortLine, message: message)
        }
        if !ok {
            let code = (parser.parserError as NSError?)?.code
            throw JUnitReportError(file: fileName, line: parser.lineNumber > 0 ? parser.lineNumber : nil,
                                   message: Self.describeXMLError(code))
        }
        if !delegate.sawRoot {
            throw JUnitReportError(file: fileName, line: nil, message: "empty document, expected <testsuites> or <testsuite>")
        }
        return delegate.cases
    }

    /// Human description of a libxml2 error code as reported by `XMLParser`.
    static func describeXMLError(_ code: Int?) -> String {
        let detail: String? = switch code {
        case 1: "internal parser error"
        case 4: "document is empty or not XML"
        case 5: "premature end of document or extra content at its end"
        case 9: "invalid character"
        case 23: "entity reference without ';'"
        case 26, 27: "undefined entity"
        case 38: "'<' in attribute value"
        case 39, 40: "unterminated attribute value"
        case 41: "attribute without value"
        case 42: "duplicate attribute"
        case 73: "'>' expected"
        case 76: "opening and ending tag mismatch"
        case 77: "unterminated tag"
        default: nil
        }
        switch (detail, code) {
        case let (detail?, _): return "malformed XML: \(detail)"
        case let (nil, code?): return "malformed XML (libxml2 error \(code))"
        default: return "malformed XML"
        }
    }

    // MARK: Location fallback

    /// Extracts a `path/to/file.ext:LINE` location from failure text. When several locations appear, one
    /// whose file name matches the last component of `classname` (Java stack frames) is preferred, then
    /// the first one.
    static func location(in text: String, classname: String) -> (file: String, line: Int)? {
        var found: [(file: String, line: Int)] = []
        let bytes = Array(text.utf8.prefix(maxDetailsBytes))
        var i = 0
        let n = bytes.count
        func isPathByte(_ b: UInt8) -> Bool {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: "\\"),
                 UInt8(ascii: "@"), UInt8(ascii: "+"):
                return true
            default:
                return b >= 0x80
            }
        }
        while i < n, found.count < 50 {
            guard bytes[i] == UInt8(ascii: ":") else { i += 1; continue }
            // Digits after the colon.
            var j = i + 1
            var line = 0
            while j < n, bytes[j] >= UInt8(ascii: "0"), bytes[j] <= UInt8(ascii: "9"), j - i <= 9 {
                line = line * 10 + Int(bytes[j] - UInt8(ascii: "0"))
                j += 1
            }
            guard j > i + 1, line > 0 else { i += 1; continue }
            // A path with an extension before the colon.
            var s = i
            while s > 0, isPathByte(bytes[s - 1]) { s -= 1 }
            let path = bytes[s..<i]
            if let dot = path.lastIndex(of: UInt8(ascii: ".")), dot > path.startIndex, dot + 1 < i {
                let ext = path[(dot + 1)...]
                let extOK = ext.count <= 10
                    && ext.allSatisfy { ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }
                    && (ext.first.map { !($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) } ?? false)
                let beforeDot = path[path.startIndex..<dot].last
                if extOK, beforeDot != UInt8(ascii: "/"), beforeDot != UInt8(ascii: "."),
                   // Not a URL (scheme://host:port).
                   !(s >= 1 && bytes[s - 1] == UInt8(ascii: ":")) && !(path.starts(with: Array("//".utf8)))
                {
                    found.append((String(decoding: path, as: UTF8.self), line))
                }
            }
            i = j
        }
        guard !found.isEmpty else { return nil }
        if let simple = classname.split(whereSeparator: { $0 == "." || $0 == "/" }).last.map(String.init), !simple.isEmpty {
            if let match = found.first(where: { f in
                let base = f.file.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? f.file
                let stem = base.split(separator: ".").first.map(String.init) ?? base
                return stem == simple
            }) {
                return match
            }
        }
        return found[0]
    }
}

// MARK: - XMLParser delegate

/// Used synchronously by a single `XMLParser` inside `JUnitReport.parse`, never shared.
private final class JUnitParserDelegate: NSObject, XMLParserDelegate {
    struct Suite {
        var name: String
        var file: String?
    }

    enum Capture {
        case none
        case failure
        case error
        case skipped
    }

    var cases: [TestCaseResult] = []
    var sawRoot = false
    var abortMessage: String?
    var abortLine: Int?

    private var depth = 0
    private var suites: [Suite] = []
    private var current: TestCaseResult?
    private var currentHasOutcome = false
    private var capture: Capture = .none
    private var captureDepth = 0
    private var text = ""
    private var textBytes = 0
    private var textTruncated = false
    private var ignoredDepth = 0 // inside an element whose content is ignored (system-out, flakyFailure, …)
    private var isPytest = false

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?, attributes: [String: String] = [:])
    {
        depth += 1
        if depth == 1 {
            guard elementName == "testsuites" || elementName == "testsuite" else {
                abortMessage = "not a JUnit report: root element is <\(elementName)>, expected <testsuites> or <testsuite>"
                abortLine = parser.lineNumber
                parser.abortParsing()
                return
            }
            sawRoot = true
        }
        if ignoredDepth > 0 { ignoredDepth += 1; return }
        switch elementName {
        case "testsuite", "testsuites":
            let name = attributes["name"] ?? ""
            if name == "pytest" { isPytest = true }
            suites.append(Suite(name: name, file: attributes["file"] ?? attributes["filepath"]))
        case "testcase" where current == nil:
            let suite = suites.last(where: { !$0.name.isEmpty })?.name ?? ""
            let classname = nonEmpty(attributes["classname"]) ?? nonEmpty(attributes["class"]) ?? suite
            var file = nonEmpty(attributes["file"]) ?? nonEmpty(attributes["filepath"])
            var line = attributes["line"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            if file == nil, let suiteFile = suites.last(where: { $0.file != nil })?.file {
                file = suiteFile
            }
            if isPytest, line != nil, attributes["file"] != nil {
                // pytest (junit_family=xunit1) reports 0-based line numbers.
                line = line.map { $0 + 1 }
            }
            current = TestCaseResult(suite: suite, classname: classname, name: attributes["name"] ?? "",
                                     file: file, line: line, duration: Self.seconds(attributes["time"]))
            currentHasOutcome = false
        case "failure", "error", "skipped":
            guard current != nil, capture == .none else { break }
            if !currentHasOutcome {
                currentHasOutcome = true
                switch elementName {
                case "failure": current?.status = .failed
                case "error": current?.status = .error
                default: current?.status = .skipped
                }
                current?.message = nonEmpty(attributes["message"])
                capture = elementName == "failure" ? .failure : elementName == "error" ? .error : .skipped
                captureDepth = depth
                text = ""
                textBytes = 0
                textTruncated = false
            } else {
                ignoredDepth = 1
            }
        case "system-out", "system-err", "properties",
             "flakyFailure", "flakyError", "rerunFailure", "rerunError":
            // Output is ignored; Surefire's flaky/rerun elements describe earlier attempts of a test whose
            // final outcome is given by the testcase itself.
            ignoredDepth = 1
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?)
    {
        defer { depth -= 1 }
        if ignoredDepth > 0 { ignoredDepth -= 1; return }
        if capture != .none && depth == captureDepth {
            finishCapture()
            return
        }
        switch elementName {
        case "testsuite", "testsuites":
            if !suites.isEmpty { suites.removeLast() }
        case "testcase":
            if var c = current {
                if c.file == nil, let details = c.details ?? c.message,
                   let loc = JUnitReport.location(in: details, classname: c.classname)
                {
                    c.file = loc.file
                    c.line = loc.line
                }
                cases.append(c)
            }
            current = nil
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        guard capture != .none, ignoredDepth == 0 else { return }
        append(string)
    }

    func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
        guard capture != .none, ignoredDepth == 0 else { return }
        append(String(decoding: CDATABlock, as: UTF8.self))
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) {
        guard abortMessage == nil else { return }
        abortMessage = JUnitReport.describeXMLError((parseError as NSError).code)
        abortLine = parser.lineNumber > 0 ? parser.lineNumber : nil
        parser.abortParsing()
    }

    func parser(_ parser: XMLParser, validationErrorOccurred validationError: any Error) {}

    func parser(_ parser: XMLParser, resolveExternalEntityName name: String, systemID: String?) -> Data? {
        nil
    }

    private func append(_ s: String) {
        if textTruncated { return }
        let limit = JUnitReport.maxDetailsBytes
        let count = s.utf8.count
        if textBytes + count <= limit {
            text += s
            textBytes += count
        } else {
            // Cut on a character boundary.
            var taken = 0
            var end = s.startIndex
            for ch in s {
                let w = ch.utf8.count
                if textBytes + taken + w > limit { break }
                taken += w
                end = s.index(after: end)
            }
            text += s[s.startIndex..<end]
            textBytes += taken
            textTruncated = true
        }
    }

    private func finishCapture() {
        let body = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if capture == .failure || capture == .error {
            if !body.isEmpty { current?.details = body }
        }
        if current?.message == nil {
            let firstLine = body.split(whereSeparator: \.isNewline).lazy
                .map { $0.trimmingCharacters(in: .whitespaces) }
                .first(where: { !$0.isEmpty })
            current?.message = firstLine
        }
        capture = .none
        text = ""
        textBytes = 0
        textTruncated = false
    }

    private func nonEmpty(_ s: String?) -> String? {
        guard let s else { return nil }
        let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        return t.isEmpty ? nil : t
    }

    static func seconds(_ s: String?) -> Double {
        guard let s else { return 0 }
        // Some tools write "1,234.5" (thousands separators).
        let cleaned = s.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ",", with: "")
        guard let v = Double(cleaned), v.isFinite, v >= 0 else { return 0 }
        return v
    }
}
