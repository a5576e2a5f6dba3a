import Foundation

/// A syntax or evaluation error in a `${{ … }}` expression.
public struct ExpressionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Actionable message, e.g. "unknown function 'sucess'; did you mean 'success'?".
    public var message: String
    /// Offset in Characters from the start of the expression (or template) source text.
    public var offset: Int

    public init(_ message: String, offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "\(message) (at offset \(offset))" }

    func shifted(by delta: Int) -> ExpressionError { ExpressionError(message, offset: offset + delta) }
}

/// The status of the job's dependencies, used by `success()`, `failure()`, `cancelled()`.
public struct JobStatus: Sendable, Equatable, Codable {
    public var anyNeedFailed: Bool
    /// A needed job was cancelled (or the run itself was cancelled).
    public var anyNeedCancelled: Bool
    public var runCancelled: Bool

    public init(anyNeedFailed: Bool = false, anyNeedCancelled: Bool = false, runCancelled: Bool = false) {
        self.anyNeedFailed = anyNeedFailed
        self.anyNeedCancelled = anyNeedCancelled
        self.runCancelled = runCancelled
    }
}

/// The values an expression is evaluated against.
public struct ExpressionContext: Sendable, Codable, Equatable {
    /// Top-level contexts: branch, event, commit, run, env, secrets, inputs, matrix, needs, job, …
    public var values: [String: ExpressionValue]
    public var status: JobStatus

    public init(
        values: [String: ExpressionValue] = [:],
        status: JobStatus = .init(anyNeedFailed: false, anyNeedCancelled: false, runCancelled: false)
    ) {
        self.values = values
        self.status = status
    }
}

/// A parsed GitHub-Actions-style expression (the text inside `${{ … }}`).
///
/// `Expression(parsing:)` also accepts a source that is wholly wrapped in `${{ … }}`
/// (as allowed for `if:` conditions); offsets then stay relative to the full source.
public struct Expression: Sendable, Equatable {
    public let source: String
    let root: Node

    public static let knownContexts: Set<String> = [
        "branch", "event", "commit", "run", "env", "secrets", "inputs", "matrix", "needs", "job", "steps", "tag",
    ]

    /// Maximum nesting of parentheses, `!`, index brackets and function calls.
    public static let maxNestingDepth = 64

    public init(parsing source: String) throws(ExpressionError) {
        self.source = source
        let chars = Array(source)
        var lo = 0
        var hi = chars.count
        while lo < hi, chars[lo].isWhitespace { lo += 1 }
        while hi > lo, chars[hi - 1].isWhitespace { hi -= 1 }
        if hi - lo >= 3, chars[lo] == "$", chars[lo + 1] == "{", chars[lo + 2] == "{" {
            let raw = try TemplateScanner.scan(chars)
            var inner: (Int, Int)?
            for segment in raw {
                switch segment {
                case .literal(let text):
                    if !text.allSatisfy(\.isWhitespace) {
                        throw ExpressionError(
                            "text outside '${{ }}'; write the whole condition inside a single '${{ … }}'", offset: lo)
                    }
                case .expression(let start, let end, let opening):
                    if inner != nil {
                        throw ExpressionError(
                            "more than one '${{ }}' in a condition; combine them into a single expression",
                            offset: opening)
                    }
                    inner = (start, end)
                }
            }
            guard let (start, end) = inner else { throw ExpressionError("empty expression", offset: lo) }
            self.root = try ExpressionParser.parse(chars, from: start, to: end)
        } else {
            self.root = try ExpressionParser.parse(chars, from: 0, to: chars.count)
        }
    }

    public static func == (lhs: Expression, rhs: Expression) -> Bool { lhs.source == rhs.source }

    /// True if the expression calls `success()`, `failure()`, `always()` or `cancelled()` anywhere.
    public var usesStatusFunction: Bool {
        var found = false
        root.walk { node in
            if case .call(let fn, _, _) = node, fn.isStatusFunction { found = true }
        }
        return found
    }

    /// Secret names referenced as `secrets.NAME` or `secrets['NAME']`.
    public var referencedSecrets: Set<String> { referencedNames(of: "secrets") }

    /// Job names referenced as `needs.JOB…` or `needs['JOB']…`.
    public var referencedNeeds: Set<String> { referencedNames(of: "needs") }

    /// Top-level contexts referenced by the expression (e.g. `matrix`, `env`).
    public var referencedContexts: Set<String> {
        var names: Set<String> = []
        root.walk { node in
            if case .context(let name, _) = node { names.insert(name) }
        }
        return names
    }

    private func referencedNames(of context: String) -> Set<String> {
        var names: Set<String> = []
        root.walk { node in
            guard case .access(let base, let accessors) = node, case .context(let name, _) = base, name == context,
                let first = accessors.first
            else { return }
            switch first {
            case .property(let p): names.insert(p)
            case .index(.literal(.string(let p))): names.insert(p)
            default: break
            }
        }
        return names
    }

    public func evaluate(in context: ExpressionContext) throws(ExpressionError) -> ExpressionValue {
        try ExpressionEvaluator(context: context).eval(root)
    }
}

/// A string that may contain `${{ expr }}` segments, e.g. "make test SHARD=${{ matrix.shard }}".
public struct Template: Sendable, Equatable {
    /// Whether `text` holds `${{` at all: a byte scan, since Foundation's `contains` costs a bridge per call
    /// and most values in a pipeline are plain.
    public static func mayHoldExpressions(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            guard bytes.count >= 3 else { return false }
            var index = 0
            let last = bytes.count - 3
            while index <= last {
                if bytes[index] == UInt8(ascii: "$"), bytes[index + 1] == UInt8(ascii: "{"), bytes[index + 2] == UInt8(ascii: "{") { return true }
                index += 1
            }
            return false
        }
    }

    public enum Segment: Sendable, Equatable {
        case literal(String)
        /// `offset` is the Character offset of the expression text inside the template string.
        case expression(Expression, offset: Int)
    }

    public let segments: [Segment]

    public init(parsing text: String) throws(ExpressionError) {
        let chars = Array(text)
        var segments: [Segment] = []
        for raw in try TemplateScanner.scan(chars) {
            switch raw {
            case .literal(let s):
                segments.append(.literal(s))
            case .expression(let start, let end, _):
                let source = String(chars[start..<end])
                do {
                    segments.append(.expression(try Expression(parsing: source), offset: start))
                } catch {
                    throw error.shifted(by: start)
                }
            }
        }
        self.segments = segments
    }

    /// True when the template contains no `${{ }}` segments.
    public var isLiteral: Bool {
        segments.allSatisfy { if case .literal = $0 { true } else { false } }
    }

    /// All expressions in the template, in order.
    public var expressions: [Expression] {
        segments.compactMap { if case .expression(let e, _) = $0 { e } else { nil } }
    }

    public func render(in context: ExpressionContext) throws(ExpressionError) -> String {
        var out = ""
        for segment in segments {
            switch segment {
            case .literal(let s):
                out += s
            case .expression(let expr, let offset):
                do {
                    out += try expr.evaluate(in: context).description
                } catch {
                    throw error.shifted(by: offset)
                }
            }
        }
        return out
    }
}

// MARK: - Template scanning

enum TemplateScanner {
    enum Raw {
        case literal(String)
        /// `start..<end` is the trimmed expression text; `opening` is the offset of `${{`.
        case expression(start: Int, end: Int, opening: Int)
    }

    static func scan(_ chars: [Character]) throws(ExpressionError) -> [Raw] {
        var result: [Raw] = []
        var literal = ""
        var i = 0
        let n = chars.count
        while i < n {
            guard chars[i] == "$", i + 2 < n, chars[i + 1] == "{", chars[i + 2] == "{" else {
                literal.append(chars[i])
                i += 1
                continue
            }
            let opening = i
            var j = i + 3
            var inString = false
            var closed = false
            while j < n {
                let c = chars[j]
                if inString {
                    if c == "'" {
                        if j + 1 < n, chars[j + 1] == "'" { j += 2; continue }
                        inString = false
                    }
                    j += 1
                    continue
                }
                if c == "'" {
                    inString = true
                } else if c == "}", j + 1 < n, chars[j + 1] == "}" {
                    closed = true
                    break
                }
                j += 1
            }
            guard closed else {
                let hint = inString ? " (a string literal inside it is not closed)" : ""
                throw ExpressionError("unterminated '${{'; expected a closing '}}'\(hint)", offset: opening)
            }
            var lo = i + 3
            var hi = j
            while lo < hi, chars[lo].isWhitespace { lo += 1 }
            while hi > lo, chars[hi - 1].isWhitespace { hi -= 1 }
            if lo == hi { throw ExpressionError("empty expression in '${{ }}'", offset: opening) }
            if !literal.isEmpty {
                result.append(.literal(literal))
                literal = ""
            }
            result.append(.expression(start: lo, end: hi, opening: opening))
            i = j + 2
        }
        if !literal.isEmpty { result.append(.literal(literal)) }
        return result
    }
}

// MARK: - Syntax tree

extension Expression {
    enum CompareOp: String, Sendable {
        case eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">="
    }

    struct CompareStep: Sendable {
        var op: CompareOp
        var operand: Node
    }

    enum Accessor: Sendable {
        case property(String)
        case index(Node)
        case wildcard
    }

    enum Function: String, Sendable, CaseIterable {
        case success, failure, always, cancelled
        case contains, startsWith, endsWith, format, join, toJSON, fromJSON

        var isStatusFunction: Bool {
            switch self {
            case .success, .failure, .always, .cancelled: true
            default: false
            }
        }

        /// Allowed argument counts (`nil` upper bound = unlimited).
        var arity: (min: Int, max: Int?) {
            switch self {
            case .success, .failure, .always, .cancelled: (0, 0)
            case .contains, .startsWith, .endsWith: (2, 2)
            case .format: (1, nil)
            case .join: (1, 2)
            case .toJSON, .fromJSON: (1, 1)
            }
        }

        static let byLowercasedName: [String: Function] = {
            var map: [String: Function] = [:]
            for f in allCases { map[f.rawValue.lowercased()] = f }
            return map
        }()
    }

    /// Chains (`a && b && …`, `a.b.c…`, `a == b == …`) are n-ary so tree depth is bounded by the
    /// parser's nesting limit, no matter how long the input is.
    indirect enum Node: Sendable {
        case literal(ExpressionValue)
        case context(String, offset: Int)
        case access(Node, [Accessor])
        case not(Node)
        case and([Node])
        case or([Node])
        case compare(Node, [CompareStep])
        case call(Function, [Node], offset: Int)

        func walk(_ visit: (Node) -> Void) {
            visit(self)
            switch self {
            case .literal, .context: break
            case .access(let base, let accessors):
                base.walk(visit)
                for a in accessors { if case .index(let n) = a { n.walk(visit) } }
            case .not(let n): n.walk(visit)
            case .and(let ns), .or(let ns): for n in ns { n.walk(visit) }
            case .compare(let first, let steps):
                first.walk(visit)
                for s in steps { s.operand.walk(visit) }
            case .call(_, let args, _): for a in args { a.walk(visit) }
            }
        }
    }
}

// MARK: - Suggestions

enum ExpressionSuggest {
    /// The closest candidate by (case-insensitive) edit distance, if it is close enough.
    static func closest(to name: String, in candidates: [String]) -> String? {
        let a = Array(name.lowercased())
        guard !a.isEmpty, a.count <= 64 else { return nil }
        let limit = a.count <= 3 ? 1 : (a.count <= 6 ? 2 : 3)
        var best: (String, Int)?
        for candidate in candidates.sorted() {
            let b = Array(candidate.lowercased())
            if abs(a.count - b.count) > limit { continue }
            let d = distance(a, b)
            if d <= limit, d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        return best?.0
    }

    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = Array(repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}
