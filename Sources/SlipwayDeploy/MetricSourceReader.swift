#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSlipwaySystem
import Foundation
import SlipwayCore
import Synchronization

// Reads the value of a canary analysis metric from a source other than the router: a Prometheus
// query, a JSON endpoint, or a command. `AnalysisJudge.judge(_:value:error:)` turns the value into a
// verdict; `nil` means "no data" and is judged inconclusive, never a pass.

/// What a metric source may refer to through placeholders: `{{canary}}`, `{{stable}}`,
/// `{{environment}}` and `{{window}}` (the analysis window as a Prometheus duration, e.g. "60s").
public struct MetricContext: Sendable, Equatable {
    public var environment: String
    /// The version under analysis.
    public var canary: String
    /// The version it is compared with.
    public var stable: String
    /// Length of the analysis window.
    public var windowSeconds: Double

    public init(environment: String, canary: String, stable: String, windowSeconds: Double) {
        self.environment = environment
        self.canary = canary
        self.stable = stable
        self.windowSeconds = windowSeconds
    }

    /// The window in whole seconds, rounded up, at least one: "60s".
    public var window: String {
        let seconds = windowSeconds.isFinite ? Swift.min(Swift.max(1, windowSeconds.rounded(.up)), 1e9) : 1
        return "\(Int(seconds))s"
    }

    /// Placeholder name → value.
    var placeholders: [String: String] {
        ["canary": canary, "stable": stable, "environment": environment, "window": window]
    }
}

/// Why a metric source gave no value: what was asked, what came back, what to change.
public struct MetricSourceError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reads metric values for the analysis of a canary (sources `prometheus`, `http`, `command`).
public struct MetricSourceReader: Sendable {
    /// Most bytes a command may print on stdout.
    public static let commandOutputLimit = 1 << 20

    public var client: HTTPClient
    /// Deadline of one Prometheus query or HTTP request.
    public var httpTimeout: Duration
    /// How long a command may run before its process group is killed.
    public var commandTimeout: Duration
    /// Where commands run; nil: the current directory.
    public var workingDirectory: String?

    public init(client: HTTPClient = HTTPClient(), httpTimeout: Duration = .seconds(10), commandTimeout: Duration = .seconds(30),
                workingDirectory: String? = nil) {
        self.client = client
        self.httpTimeout = httpTimeout
        self.commandTimeout = commandTimeout
        self.workingDirectory = workingDirectory
    }

    /// The source's current value; `nil` when it has no data (no series, NaN, JSON null).
    public func read(_ source: MetricCheck.Source, context: MetricContext) async -> Result<Double?, MetricSourceError> {
        await reading(source, context: context).map(\.value)
    }

    /// Reads a non-router check's source and judges the value against its `max`/`min`.
    public func measure(_ check: MetricCheck, context: MetricContext) async -> SlipwayCore.Measurement {
        switch await reading(check.source, context: context) {
        case .failure(let error):
            return AnalysisJudge.judge(check, value: nil, error: error.message)
        case .success(let reading):
            var measurement = AnalysisJudge.judge(check, value: reading.value, error: reading.note)
            if let exit = reading.exitStatus, measurement.outcome != .inconclusive {
                measurement.reason = "exit code " + measurement.reason + exit.stderrSuffix
            }
            return measurement
        }
    }

    /// A value with what the judge should say when there is none.
    struct Reading: Sendable, Equatable {
        /// When the value is a command's exit code: its stderr, shown with a failing verdict.
        struct ExitStatus: Sendable, Equatable {
            var stderrSuffix: String
        }
        var value: Double?
        var note: String?
        var exitStatus: ExitStatus?
    }

    func reading(_ source: MetricCheck.Source, context: MetricContext) async -> Result<Reading, MetricSourceError> {
        switch source {
        case .router(let metric):
            return .failure(MetricSourceError("router metric \(metric) is measured by the traffic router; judge it with AnalysisJudge.judge(_:canary:baseline:)"))
        case .prometheus(let address, let query):
            return await readPrometheus(address: address, query: query, context: context)
        case .http(let url, let jsonPath):
            return await readHTTP(url: url, jsonPath: jsonPath, context: context)
        case .command(let command):
            return await readCommand(command, context: context)
        }
    }

    // MARK: Prometheus

    func readPrometheus(address: String, query: String, context: MetricContext) async -> Result<Reading, MetricSourceError> {
        var base = address.trimmingCharacters(in: .whitespaces)
        while base.hasSuffix("/") { base.removeLast() }
        let origin = "Prometheus at \(base)"
        let expanded = Placeholders.substitute(query, context)
        if let unknown = expanded.unknown.first {
            return .failure(MetricSourceError("\(origin): unknown placeholder {{\(unknown)}} in query `\(query)`; known: \(Placeholders.known)"))
        }
        let promQL = expanded.text
        let url = base + "/api/v1/query?query=" + Placeholders.percentEncode(promQL)
        let response: HTTPResponse
        do {
            response = try await client.get(url, headers: [("Accept", "application/json")], timeout: httpTimeout)
        } catch {
            return .failure(MetricSourceError("cannot query \(origin): \(Self.describe(error)); is it running, and is `address` right?"))
        }
        guard let json = JSONNode.parse(response.body), case .object(let top) = json else {
            return .failure(MetricSourceError("\(origin) answered \(response.status) with a body that is not a Prometheus API response: \(Self.excerpt(response.text)); is `address` the Prometheus server (no /api path)?"))
        }
        let status = top["status"]?.stringValue
        if status == "error" || !(200..<300).contains(response.status) {
            let kind = top["errorType"]?.stringValue ?? "HTTP \(response.status)"
            let message = top["error"]?.stringValue ?? Self.excerpt(response.text)
            return .failure(MetricSourceError("\(origin) rejected the query `\(promQL)`: \(kind): \(message)"))
        }
        guard status == "success" else {
            return .failure(MetricSourceError("\(origin) answered with status \(status.map { "\"\($0)\"" } ?? "(none)"), expected \"success\""))
        }
        guard case .object(let data)? = top["data"], let resultType = data["resultType"]?.stringValue, let result = data["result"] else {
            return .failure(MetricSourceError("\(origin): the response has no data.resultType/data.result: \(Self.excerpt(response.text))"))
        }
        switch resultType {
        case "vector":
            guard case .array(let samples) = result else {
                return .failure(MetricSourceError("\(origin): data.result of a vector is not an array"))
            }
            if samples.isEmpty {
                return .success(Reading(value: nil, note: "no data: the query `\(promQL)` returned no series (no traffic yet, or labels that match nothing)"))
            }
            if samples.count > 1 {
                let shown = samples.prefix(3).map(Self.seriesName).joined(separator: ", ")
                let more = samples.count > 3 ? ", …" : ""
                return .failure(MetricSourceError("\(origin): the query `\(promQL)` returned \(samples.count) series (\(shown)\(more)); a check needs one number, so aggregate them, e.g. sum(\(promQL))"))
            }
            guard case .object(let sample) = samples[0], let value = sample["value"] else {
                return .failure(MetricSourceError("\(origin): a sample without a value"))
            }
            return Self.sampleValue(value, origin: origin, query: promQL)
        case "scalar":
            return Self.sampleValue(result, origin: origin, query: promQL)
        case "matrix":
            return .failure(MetricSourceError("\(origin): the query `\(promQL)` returned a range vector; a check needs an instant value, e.g. rate(…[\(context.window)]) or max_over_time(…[\(context.window)]) instead of a bare range selector"))
        default:
            return .failure(MetricSourceError("\(origin): the query `\(promQL)` returned a \(resultType), not a number"))
        }
    }

    /// `[timestamp, "value"]` → the value; "NaN" is no data.
    static func sampleValue(_ pair: JSONNode, origin: String, query: String) -> Result<Reading, MetricSourceError> {
        guard case .array(let parts) = pair, parts.count == 2, let text = parts[1].stringValue else {
            return .failure(MetricSourceError("\(origin): a sample that is not [time, \"value\"]"))
        }
        switch text.lowercased() {
        case "nan":
            return .success(Reading(value: nil, note: "no data: the query `\(query)` is NaN (often 0/0: no requests in the window)"))
        case "+inf", "inf":
            return .success(Reading(value: .infinity, note: "the query `\(query)` is +Inf (a division by zero?)"))
        case "-inf":
            return .success(Reading(value: -.infinity, note: "the query `\(query)` is -Inf (a division by zero?)"))
        default:
            guard let value = Double(text) else {
                return .failure(MetricSourceError("\(origin): the sample value \"\(text)\" is not a number"))
            }
            return .success(Reading(value: value))
        }
    }

    /// `name{label="value",…}` of a vector sample.
    static func seriesName(_ sample: JSONNode) -> String {
        guard case .object(let fields) = sample, case .object(let metric)? = fields["metric"] else { return "?" }
        let name = metric["__name__"]?.stringValue ?? ""
        let labels = metric.keys.filter { $0 != "__name__" }.sorted().map { "\($0)=\"\(metric[$0]?.stringValue ?? "")\"" }
        return name + "{" + labels.joined(separator: ",") + "}"
    }

    // MARK: HTTP

    func readHTTP(url: String, jsonPath: String, context: MetricContext) async -> Result<Reading, MetricSourceError> {
        let path: JSONPath
        do {
            path = try JSONPath(jsonPath)
        } catch {
            return .failure(error)
        }
        let expanded = Placeholders.substitute(url, context, encode: Placeholders.percentEncode)
        if let unknown = expanded.unknown.first {
            return .failure(MetricSourceError("unknown placeholder {{\(unknown)}} in url \(url); known: \(Placeholders.known)"))
        }
        let target = expanded.text
        let response: HTTPResponse
        do {
            response = try await client.get(target, headers: [("Accept", "application/json")], timeout: httpTimeout)
        } catch {
            return .failure(MetricSourceError("GET \(target): \(Self.describe(error))"))
        }
        guard (200..<300).contains(response.status) else {
            return .failure(MetricSourceError("GET \(target) answered \(response.status): \(Self.excerpt(response.text))"))
        }
        guard let json = JSONNode.parse(response.body) else {
            return .failure(MetricSourceError("GET \(target): the response is not JSON: \(Self.excerpt(response.text))"))
        }
        return path.number(in: json).mapError { MetricSourceError("GET \(target): \($0.message)") }
    }

    // MARK: Command

    /// A command's value: when the last non-empty line of its stdout is a number, that number — and the
    /// command must exit 0, otherwise the reading fails with its exit code and the end of its stderr.
    /// When stdout has no number there, the value is the exit code itself, so `max: 0` passes exactly
    /// when the command succeeds. The command runs with `/bin/sh -c` in its own process group, with the
    /// placeholders substituted (as they are, unquoted) and also set as SLIPWAY_CANARY, SLIPWAY_STABLE,
    /// SLIPWAY_ENVIRONMENT and SLIPWAY_WINDOW — the variables are the safe way to use them in shell
    /// code. When it runs past `commandTimeout` the whole group is killed.
    func readCommand(_ command: String, context: MetricContext) async -> Result<Reading, MetricSourceError> {
        // Unknown {{…}} stays: it may be the command's own syntax (a Go template, say).
        let script = Placeholders.substitute(command, context).text
        var environment = ProcessInfo.processInfo.environment
        environment["SLIPWAY_CANARY"] = context.canary
        environment["SLIPWAY_STABLE"] = context.stable
        environment["SLIPWAY_ENVIRONMENT"] = context.environment
        environment["SLIPWAY_WINDOW"] = context.window
        let result = await MetricCommand.run(script: script, environment: environment, workingDirectory: workingDirectory,
                                             timeout: commandTimeout, outputLimit: Self.commandOutputLimit)
        let shown = "`" + (command.count > 80 ? command.prefix(77) + "…" : command) + "`"
        let stderrTail = Self.tail(result.stderr)
        let stderrSuffix = stderrTail.isEmpty ? "" : "; stderr: \(stderrTail)"
        switch result.ending {
        case .failedToStart(let why):
            return .failure(MetricSourceError("cannot run command \(shown): \(why)"))
        case .timedOut:
            return .failure(MetricSourceError("command \(shown) did not finish within \(DurationParser.format(commandTimeout)) and was killed\(stderrSuffix)"))
        case .outputTooLarge:
            return .failure(MetricSourceError("command \(shown) printed more than \(Self.commandOutputLimit >> 20) MB on stdout and was killed; print only the value, on the last line"))
        case .signalled(let signal):
            return .failure(MetricSourceError("command \(shown) was killed by signal \(signal)\(stderrSuffix)"))
        case .cancelled:
            return .failure(MetricSourceError("command \(shown) was killed: the analysis was cancelled"))
        case .exited(let code):
            if let number = Self.lastLineNumber(result.stdout) {
                guard code == 0 else {
                    return .failure(MetricSourceError("command \(shown) printed \(number.text) but exited with code \(code); a printed value counts only when the command exits 0\(stderrSuffix)"))
                }
                if number.value.isNaN {
                    return .success(Reading(value: nil, note: "no data: command \(shown) printed \(number.text)"))
                }
                return .success(Reading(value: number.value, note: "command \(shown) printed \(number.text)"))
            }
            return .success(Reading(value: Double(code), exitStatus: .init(stderrSuffix: code == 0 ? "" : stderrSuffix)))
        }
    }

    /// The last non-empty line of `output`, when it is a number.
    static func lastLineNumber(_ output: [UInt8]) -> (value: Double, text: String)? {
        let text = String(decoding: output, as: UTF8.self)
        guard let line = text.split(whereSeparator: \.isNewline).last(where: { !$0.allSatisfy(\.isWhitespace) }) else { return nil }
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard let value = Double(trimmed) else { return nil }
        return (value, trimmed)
    }

    // MARK: Helpers

    static func describe(_ error: any Error) -> String {
        (error as? HTTPClientError)?.description ?? String(describing: error)
    }

    /// The first 200 characters of a body, on one line.
    static func excerpt(_ text: String) -> String {
        let flat = text.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        if flat.isEmpty { return "(empty body)" }
        return flat.count > 200 ? flat.prefix(200) + "…" : flat
    }

    /// The last 300 characters of stderr, on one line.
    static func tail(_ bytes: [UInt8]) -> String {
        let flat = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "\n", with: " | ")
        return flat.count > 300 ? "…" + flat.suffix(300) : flat
    }
}

// MARK: - Placeholders

enum Placeholders {
    static let known = "{{canary}}, {{stable}}, {{environment}}, {{window}}"

    /// Replaces `{{name}}` (spaces inside allowed) with the context's values; unknown names stay as they are.
    static func substitute(_ text: String, _ context: MetricContext, encode: (String) -> String = { $0 }) -> (text: String, unknown: [String]) {
        let values = context.placeholders
        var output = ""
        var unknown: [String] = []
        var rest = text[...]
        while let open = rest.range(of: "{{") {
            output += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                rest = rest[open.lowerBound...]
                break
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            if let value = values[name] {
                output += encode(value)
            } else {
                output += rest[open.lowerBound..<close.upperBound]
                unknown.append(name)
            }
            rest = rest[close.upperBound...]
        }
        output += rest
        return (output, unknown)
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    static func percentEncode(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                bytes.append(byte)
            default:
                bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

// MARK: - JSON

/// A parsed JSON document, types kept apart (a bool is not the number 1).
indirect enum JSONNode: Sendable, Equatable, Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONNode]), object([String: JSONNode])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let n = try? container.decode(Double.self) { self = .number(n) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let a = try? container.decode([JSONNode].self) { self = .array(a) }
        else { self = .object(try container.decode([String: JSONNode].self)) }
    }

    static func parse(_ bytes: [UInt8]) -> JSONNode? { try? JSONDecoder().decode(JSONNode.self, from: Data(bytes)) }
    static func parse(_ text: String) -> JSONNode? { parse(Array(text.utf8)) }

    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// "an object with keys a, b", "the string \"x\"", …
    var summary: String {
        switch self {
        case .null: "null"
        case .bool(let b): "the boolean \(b)"
        case .number(let n): "the number " + (n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n))
        case .string(let s): "the string \"\(s.count > 40 ? s.prefix(40) + "…" : s)\""
        case .array(let a): "an array of \(a.count)"
        case .object(let o): o.isEmpty ? "an empty object" : "an object with keys \(JSONNode.keyList(o))"
        }
    }

    static func keyList(_ object: [String: JSONNode]) -> String {
        let keys = object.keys.sorted()
        return keys.prefix(20).joined(separator: ", ") + (keys.count > 20 ? ", … (\(keys.count) in all)" : "")
    }
}

/// A JSON path to one value: `$.a.b`, `$.a[0].b`, `$['key with space']`, `$.list[-1]` (from the end), or
/// the same without `$` (`a.b`). Wildcards, filters and `..` are not supported: a metric is one value.
public struct JSONPath: Sendable, Equatable, CustomStringConvertible {
    public enum Component: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    public let components: [Component]
    /// The path as written.
    public let text: String

    public init(_ text: String) throws(MetricSourceError) {
        self.text = text
        self.components = try Self.parse(text)
    }

    /// The path in canonical form: `$.a[0]['b c']`.
    public var description: String { Self.render(components[...]) }

    static func render(_ components: ArraySlice<Component>) -> String {
        "$" + components.map { component in
            switch component {
            case .index(let i): return "[\(i)]"
            case .key(let k):
                let plain = !k.isEmpty && k.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
                return plain ? ".\(k)" : "['" + k.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "']"
            }
        }.joined()
    }

    static func parse(_ path: String) throws(MetricSourceError) -> [Component] {
        let chars = Array(path.trimmingCharacters(in: .whitespaces))
        func fail(_ why: String) -> MetricSourceError {
            MetricSourceError("json-path `\(path)`: \(why); write it like $.a.b, $.a[0].b or $['key with space']")
        }
        guard !chars.isEmpty else { throw fail("empty path") }
        var components: [Component] = []
        var i = 0

        func readKey() throws(MetricSourceError) {
            let start = i
            while i < chars.count, chars[i] != ".", chars[i] != "[" { i += 1 }
            let key = String(chars[start..<i]).trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { throw fail("empty key at position \(start + 1)") }
            guard key != "*" else { throw fail("wildcards are not supported: a metric is one value") }
            components.append(.key(key))
        }

        if chars[0] == "$" {
            i = 1
        } else if chars[0] != "." && chars[0] != "[" {
            try readKey()
        }
        while i < chars.count {
            switch chars[i] {
            case ".":
                i += 1
                guard i >= chars.count || chars[i] != "." else { throw fail("recursive descent `..` is not supported") }
                try readKey()
            case "[":
                i += 1
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i < chars.count else { throw fail("unclosed [") }
                if chars[i] == "'" || chars[i] == "\"" {
                    let quote = chars[i]
                    i += 1
                    var key = ""
                    var closed = false
                    while i < chars.count {
                        if chars[i] == "\\", i + 1 < chars.count {
                            key.append(chars[i + 1])
                            i += 2
                        } else if chars[i] == quote {
                            closed = true
                            i += 1
                            break
                        } else {
                            key.append(chars[i])
                            i += 1
                        }
                    }
                    guard closed else { throw fail("unclosed quote \(quote)") }
                    components.append(.key(key))
                } else {
                    let start = i
                    while i < chars.count, chars[i] != "]" { i += 1 }
                    let inside = String(chars[start..<i]).trimmingCharacters(in: .whitespaces)
                    guard let index = Int(inside) else {
                        if inside == "*" { throw fail("wildcards are not supported: a metric is one value") }
                        throw fail("[\(inside)] is neither an array index nor a quoted key")
                    }
                    components.append(.index(index))
                }
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i < chars.count, chars[i] == "]" else { throw fail("missing ] at position \(i + 1)") }
                i += 1
            default:
                throw fail("unexpected \"\(chars[i])\" at position \(i + 1)")
            }
        }
        return components
    }

    /// The value the path points at, or an error naming where it failed and what is there.
    func value(in root: JSONNode) -> Result<JSONNode, MetricSourceError> {
        var current = root
        for (position, component) in components.enumerated() {
            let here = Self.render(components[..<position])
            switch (component, current) {
            case (.key(let key), .object(let object)):
                guard let next = object[key] else {
                    let existing = object.isEmpty ? "it is an empty object" : "keys there: \(JSONNode.keyList(object))"
                    return .failure(MetricSourceError("json-path `\(text)`: no key \"\(key)\" at \(here); \(existing)"))
                }
                current = next
            case (.index(let index), .array(let array)):
                let actual = index < 0 ? array.count + index : index
                guard array.indices.contains(actual) else {
                    return .failure(MetricSourceError("json-path `\(text)`: index \(index) is out of range at \(here), an array of \(array.count)"))
                }
                current = array[actual]
            case (.key(let key), .array(let array)):
                return .failure(MetricSourceError("json-path `\(text)`: \(here) is an array of \(array.count), not an object, so it has no key \"\(key)\"; index it, e.g. \(here)[0]"))
            case (.index(let index), _):
                return .failure(MetricSourceError("json-path `\(text)`: \(here) is \(current.summary), not an array, so it has no index \(index)"))
            case (.key(let key), _):
                return .failure(MetricSourceError("json-path `\(text)`: \(here) is \(current.summary), not an object, so it has no key \"\(key)\""))
            }
        }
        return .success(current)
    }

    /// The number the path points at: a JSON number, a numeric string, or a boolean (true 1, false 0); null is no data.
    func number(in root: JSONNode) -> Result<MetricSourceReader.Reading, MetricSourceError> {
        value(in: root).flatMap { node in
            switch node {
            case .number(let n):
                return .success(.init(value: n))
            case .bool(let b):
                return .success(.init(value: b ? 1 : 0))
            case .null:
                return .success(.init(value: nil, note: "no data: \(self) is null"))
            case .string(let s):
                let trimmed = s.trimmingCharacters(in: .whitespaces)
                if let n = Double(trimmed) {
                    return n.isNaN ? .success(.init(value: nil, note: "no data: \(self) is \"\(s)\"")) : .success(.init(value: n))
                }
                return .failure(MetricSourceError("json-path `\(text)`: the value is \(node.summary), not a number"))
            case .array, .object:
                return .failure(MetricSourceError("json-path `\(text)`: the value is \(node.summary), not a number; point the path at a number inside it"))
            }
        }
    }
}

// MARK: - Running a command

/// Runs `/bin/sh -c SCRIPT` in its own process group and collects its output on a dedicated thread, so
/// waiting never blocks the concurrency pool.
enum MetricCommand {
    enum Ending: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
        case outputTooLarge
        case cancelled
        case failedToStart(String)
    }

    struct Outcome: Sendable {
        var ending: Ending
        var stdout: [UInt8] = []
        /// The last few KB.
        var stderr: [UInt8] = []
    }

    /// Kills the group when the awaiting task is cancelled.
    final class Control: Sendable {
        private let state = Mutex((group: pid_t(0), cancelled: false))

        func started(_ group: pid_t) {
            state.withLock { $0.group = group }
        }

        func cancel() {
            let group = state.withLock {
                $0.cancelled = true
                return $0.group
            }
            if group > 0 { _ = kill(-group, SIGKILL) }
        }

        var cancelled: Bool { state.withLock { $0.cancelled } }
    }

    static let stderrKept = 4096

    static func run(script: String, environment: [String: String], workingDirectory: String?, timeout: Duration, outputLimit: Int) async -> Outcome {
        let pid: pid_t, stdout: Int32, stderr: Int32
        switch spawn(script: script, environment: environment, workingDirectory: workingDirectory) {
        case .failure(let error): return Outcome(ending: .failedToStart(error.message))
        case .success(let spawned): (pid, stdout, stderr) = spawned
        }
        let control = Control()
        control.started(pid)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let thread = Thread {
                    continuation.resume(returning: collect(pid: pid, stdout: stdout, stderr: stderr, timeout: timeout, outputLimit: outputLimit, control: control))
                }
                thread.stackSize = 256 * 1024
                thread.start()
            }
        } onCancel: {
            control.cancel()
        }
    }

    /// Reads both pipes until the shell exits; kills the group at the deadline, on cancellation, or past the output limit.
    static func collect(pid: pid_t, stdout: Int32, stderr: Int32, timeout: Duration, outputLimit: Int, control: Control) -> Outcome {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var result = Outcome(ending: .exited(0))
        var fds = [pollfd(fd: stdout, events: Int16(POLLIN), revents: 0), pollfd(fd: stderr, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var status: Int32 = 0
        var exited = false
        var killed: Ending?
        let size = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }

        func killGroup(_ why: Ending) {
            if killed == nil { killed = why }
            _ = kill(-pid, SIGKILL)
        }
        func closePipe(_ index: Int) {
            close(fds[index].fd)
            fds[index].fd = -1
            open -= 1
        }
        /// Reads once; false when nothing more is there now (EAGAIN) or ever (EOF, error).
        func readOnce(_ index: Int) -> Bool {
            let n = read(fds[index].fd, buffer.baseAddress, size)
            if n > 0 {
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                if index == 0 {
                    if result.stdout.count + n > outputLimit {
                        killGroup(.outputTooLarge)
                    } else {
                        result.stdout += bytes
                    }
                } else {
                    result.stderr += bytes
                    if result.stderr.count > stderrKept { result.stderr.removeFirst(result.stderr.count - stderrKept) }
                }
                return true
            }
            if n < 0, errno == EINTR { return true }
            if n < 0, errno == EAGAIN { return false }
            closePipe(index)
            return false
        }

        while true {
            if open > 0 {
                if poll(&fds, nfds_t(fds.count), 20) > 0 {
                    for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                        _ = readOnce(index)
                    }
                }
            } else {
                // Both pipes closed: the shell is ending, or closed them and runs on (the deadline still counts).
                usleep(5_000)
            }
            if !exited {
                let waited = waitpid(pid, &status, WNOHANG)
                if waited == pid || (waited < 0 && errno == ECHILD) { exited = true }
            }
            if exited {
                // Descendants that kept the pipes open are not waited for: take what is there.
                for index in fds.indices where fds[index].fd >= 0 {
                    _ = fcntl(fds[index].fd, F_SETFL, fcntl(fds[index].fd, F_GETFL) | O_NONBLOCK)
                    while fds[index].fd >= 0, readOnce(index) {}
                    if fds[index].fd >= 0 { closePipe(index) }
                }
                break
            }
            if killed == nil {
                if clock.now >= deadline {
                    killGroup(.timedOut)
                } else if control.cancelled {
                    killGroup(.cancelled)
                }
            } else if open == 0 {
                // Killed (SIGKILL cannot be caught) and the pipes are closed: only the reaping is left.
                _ = waitpid(pid, &status, 0)
                break
            }
        }
        if let killed {
            result.ending = killed
        } else if control.cancelled, !(status & 0x7f == 0 && (status >> 8) & 0xff == 0) {
            // `cancel()` kills the group itself: the shell may have died of it before this loop saw the request.
            result.ending = .cancelled
        } else if status & 0x7f == 0 {
            result.ending = .exited((status >> 8) & 0xff)
        } else {
            result.ending = .signalled(status & 0x7f)
        }
        return result
    }

    /// Descriptors inherited from the parent (a harness's pipe, a CI agent's socket) must not leak into the command.
    static let inheritedDescriptorsClosedOnExec: Void = {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for entry in entries {
            guard let fd = Int32(entry), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0, flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }()

    static func spawn(script: String, environment: [String: String], workingDirectory: String?) -> Swift.Result<(pid_t, Int32, Int32), MetricSourceError> {
        _ = inheritedDescriptorsClosedOnExec
        do {
            let spawned = try ProcessLauncher.spawnCapturing(executable: "/bin/sh", arguments: ["-c", script], environment: environment,
                                                             workingDirectory: workingDirectory, ownGroup: true)
            return .success((spawned.pid, spawned.stdout, spawned.stderr))
        } catch {
            return .failure(MetricSourceError(error.description))
        }
    }
}
