import Foundation

/// A value produced or consumed by a `${{ … }}` expression.
public enum ExpressionValue: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([ExpressionValue])
    case object([String: ExpressionValue])

    /// GitHub truthiness: `null`, `false`, `0`, `-0`, `NaN` and `""` are falsy; everything else
    /// (including empty arrays and objects) is truthy.
    public var isTruthy: Bool {
        switch self {
        case .null: return false
        case .bool(let b): return b
        case .number(let n): return !(n == 0 || n.isNaN)
        case .string(let s): return !s.isEmpty
        case .array, .object: return true
        }
    }

    /// The string used when the value is interpolated into a template: `null` renders as the empty
    /// string, integral numbers without a fractional part, arrays and objects as compact JSON.
    public var description: String {
        switch self {
        case .null: return ""
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return Self.formatNumber(n)
        case .string(let s): return s
        case .array, .object: return jsonString(pretty: false)
        }
    }

    /// The value serialised as JSON. Object keys are sorted so the output is deterministic;
    /// non-finite numbers become `null`.
    public func jsonString(pretty: Bool = false) -> String {
        var out = ""
        writeJSON(into: &out, pretty: pretty, indent: 0)
        return out
    }

    /// Parses JSON text into a value. Errors carry offset 0; callers re-anchor them.
    public static func parseJSON(_ text: String) throws(ExpressionError) -> ExpressionValue {
        var parser = ExpressionJSONParser(bytes: Array(text.utf8))
        return try parser.parseDocument()
    }

    // MARK: - Coercions (GitHub Actions rules)

    /// Number coercion used by comparisons: null → 0, bool → 0/1, string → JSON number or NaN
    /// (empty / whitespace-only → 0), array/object → NaN.
    var numericValue: Double {
        switch self {
        case .null: return 0
        case .bool(let b): return b ? 1 : 0
        case .number(let n): return n
        case .string(let s): return Self.parseNumber(s)
        case .array, .object: return .nan
        }
    }

    static func parseNumber(_ raw: String) -> Double {
        let s = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if s.isEmpty { return 0 }
        var chars = Array(s.utf8)
        var negative = false
        if chars.first == UInt8(ascii: "-") || chars.first == UInt8(ascii: "+") {
            negative = chars.first == UInt8(ascii: "-")
            chars.removeFirst()
        }
        if chars.count > 2, chars[0] == UInt8(ascii: "0"), chars[1] == UInt8(ascii: "x") || chars[1] == UInt8(ascii: "X") {
            var value = 0.0
            for c in chars[2...] {
                guard let d = hexDigitValue(c) else { return .nan }
                value = value * 16 + Double(d)
            }
            return negative ? -value : value
        }
        // Validate a JSON-style decimal: digits [. digits] [e [+-] digits]
        var i = 0
        func digits() -> Int {
            let start = i
            while i < chars.count, chars[i] >= UInt8(ascii: "0"), chars[i] <= UInt8(ascii: "9") { i += 1 }
            return i - start
        }
        let intDigits = digits()
        var fracDigits = 0
        if i < chars.count, chars[i] == UInt8(ascii: ".") {
            i += 1
            fracDigits = digits()
        }
        if intDigits + fracDigits == 0 { return .nan }
        if i < chars.count, chars[i] == UInt8(ascii: "e") || chars[i] == UInt8(ascii: "E") {
            i += 1
            if i < chars.count, chars[i] == UInt8(ascii: "+") || chars[i] == UInt8(ascii: "-") { i += 1 }
            if digits() == 0 { return .nan }
        }
        if i != chars.count { return .nan }
        guard let value = Double(s) else { return .nan }
        return value
    }

    static func hexDigitValue(_ c: UInt8) -> Int? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(c - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(c - UInt8(ascii: "A")) + 10
        default: return nil
        }
    }

    static func formatNumber(_ n: Double) -> String {
        if n.isNaN { return "NaN" }
        if n.isInfinite { return n < 0 ? "-Infinity" : "Infinity" }
        if n == n.rounded(), abs(n) < 1e15 { return String(Int64(n)) }
        return "\(n)"
    }

    // MARK: - JSON writing

    private func writeJSON(into out: inout String, pretty: Bool, indent: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n.isFinite ? Self.formatNumber(n) : "null"
        case .string(let s): Self.writeJSONString(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: "  ", count: indent + 1) }
                item.writeJSON(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n" + String(repeating: "  ", count: indent) }
            out += "]"
        case .object(let dict):
            if dict.isEmpty { out += "{}"; return }
            out += "{"
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: "  ", count: indent + 1) }
                Self.writeJSONString(key, into: &out)
                out += pretty ? ": " : ":"
                dict[key]!.writeJSON(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n" + String(repeating: "  ", count: indent) }
            out += "}"
        }
    }

    private static func writeJSONString(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

extension ExpressionValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: ExpressionValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, ExpressionValue)...) {
        var dict: [String: ExpressionValue] = [:]
        for (k, v) in elements { dict[k] = v }
        self = .object(dict)
    }
}

/// A small, depth-limited JSON parser for `fromJSON()`.
private struct ExpressionJSONParser {
    static let maxDepth = 256
    let bytes: [UInt8]
    var i = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    private func fail(_ message: String) -> ExpressionError {
        ExpressionError("invalid JSON at byte \(i): \(message)", offset: 0)
    }

    private mutating func skipWhitespace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
    }

    mutating func parseDocument() throws(ExpressionError) -> ExpressionValue {
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        if i != bytes.count { throw fail("unexpected trailing characters") }
        return value
    }

    private mutating func parseValue() throws(ExpressionError) -> ExpressionValue {
        guard i < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("unexpected character")
        }
    }

    private mutating func expectWord(_ word: String) throws(ExpressionError) {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<(i + w.count)]) == w else {
            throw fail("expected '\(word)'")
        }
        i += w.count
    }

    private mutating func enter() throws(ExpressionError) {
        depth += 1
        if depth > Self.maxDepth { throw fail("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func parseArray() throws(ExpressionError) -> ExpressionValue {
        try enter()
        defer { depth -= 1 }
        i += 1
        var items: [ExpressionValue] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated array") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw fail("expected ',' or ']'")
        }
    }

    private mutating func parseObject() throws(ExpressionError) -> ExpressionValue {
        try enter()
        defer { depth -= 1 }
        i += 1
        var dict: [String: ExpressionValue] = [:]
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(dict) }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipWhitespace()
            dict[key] = try parseValue()
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(dict) }
            throw fail("expected ',' or '}'")
        }
    }

    private mutating func parseHex4() throws(ExpressionError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let d = ExpressionValue.hexDigitValue(bytes[i]) else { throw fail("invalid \\u escape") }
            v = v * 16 + UInt32(d)
            i += 1
        }
        return v
    }

    private mutating func parseString() throws(ExpressionError) -> String {
        i += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "/"): out.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800...0xDBFF).contains(code) {
                    guard i + 6 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate")
                    }
                    i += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid surrogate pair") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(code) {
                    throw fail("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point") }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: throw fail("invalid escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private mutating func parseNumber() throws(ExpressionError) -> Double {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        let intStart = i
        while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        if i == intStart { throw fail("invalid number") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            let fracStart = i
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            if i == fracStart { throw fail("invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            let expStart = i
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            if i == expStart { throw fail("invalid number") }
        }
        guard let v = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else { throw fail("invalid number") }
        return v
    }
}

/// Plain JSON, so a context can travel to a remote runner; non-finite numbers (which JSON lacks)
/// travel as `{"$number": "nan" | "inf" | "-inf"}`.
extension ExpressionValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([ExpressionValue].self) { self = .array(value) }
        else {
            let object = try container.decode([String: ExpressionValue].self)
            if object.count == 1, case .string(let text)? = object["$number"], let number = Double(text) {
                self = .number(number)
            } else {
                self = .object(object)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value) where !value.isFinite: try container.encode(["$number": value.isNaN ? "nan" : value > 0 ? "inf" : "-inf"])
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
