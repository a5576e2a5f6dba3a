/// Glob patterns as used in `on` filters, `cache.inputs`, `artifacts` and `reports.junit`:
/// `*` matches within one path segment, `**` across segments, `?` one character, `[abc]` a class.
public struct Glob: Sendable, Equatable {
    public let pattern: String
    private let scalars: [Unicode.Scalar]

    public init(_ pattern: String) {
        self.pattern = pattern
        self.scalars = Array(pattern.unicodeScalars)
    }

    /// The directory part before the first wildcard, for walking only what can match.
    public var literalPrefix: String {
        var prefix = ""
        for part in pattern.split(separator: "/", omittingEmptySubsequences: false) {
            if part.contains(where: { "*?[".contains($0) }) { break }
            prefix += (prefix.isEmpty ? "" : "/") + part
        }
        return prefix
    }

    public var hasWildcards: Bool { pattern.contains { "*?[".contains($0) } }

    public func matches(_ path: String) -> Bool {
        let text = Array(path.unicodeScalars)
        var failed = Set<Int>()
        return match(0, text, 0, depth: 0, failed: &failed)
    }

    /// `failed` remembers (pattern, text) positions that cannot match, so patterns such as `*a*a*a*b`
    /// take polynomial rather than exponential time.
    private func match(_ pi: Int, _ text: [Unicode.Scalar], _ ti: Int, depth: Int, failed: inout Set<Int>) -> Bool {
        if depth > 64 { return false }
        let memo = pi * (text.count + 1) + ti
        if failed.contains(memo) { return false }
        if matchUncached(pi, text, ti, depth: depth, failed: &failed) { return true }
        failed.insert(memo)
        return false
    }

    private func matchUncached(_ pi: Int, _ text: [Unicode.Scalar], _ ti: Int, depth: Int, failed: inout Set<Int>) -> Bool {
        var p = pi, t = ti
        while p < scalars.count {
            let c = scalars[p]
            switch c {
            case "*":
                let doubleStar = p + 1 < scalars.count && scalars[p + 1] == "*"
                if doubleStar {
                    var next = p + 2
                    // "**/" matches zero or more whole directories: what follows starts a path segment.
                    if next < scalars.count, scalars[next] == "/" {
                        next += 1
                        var k = t
                        while k <= text.count {
                            if k == t || text[k - 1] == "/", match(next, text, k, depth: depth + 1, failed: &failed) { return true }
                            k += 1
                        }
                        return false
                    }
                    if next >= scalars.count { return true }
                    var k = t
                    while k <= text.count {
                        if match(next, text, k, depth: depth + 1, failed: &failed) { return true }
                        k += 1
                    }
                    return false
                }
                var k = t
                while true {
                    if match(p + 1, text, k, depth: depth + 1, failed: &failed) { return true }
                    if k >= text.count || text[k] == "/" { return false }
                    k += 1
                }
            case "?":
                if t >= text.count || text[t] == "/" { return false }
                p += 1; t += 1
            case "[":
                guard t < text.count, let (matched, end) = matchClass(p, text[t]) else {
                    if t < text.count, text[t] == "[" { p += 1; t += 1; continue }
                    return false
                }
                if !matched { return false }
                p = end; t += 1
            case "\\" where p + 1 < scalars.count:
                if t >= text.count || text[t] != scalars[p + 1] { return false }
                p += 2; t += 1
            default:
                if t >= text.count || text[t] != c { return false }
                p += 1; t += 1
            }
        }
        return t == text.count
    }

    /// Matches a `[...]` class at pattern index `p`; nil when the class is unterminated.
    private func matchClass(_ p: Int, _ ch: Unicode.Scalar) -> (Bool, Int)? {
        var i = p + 1
        var negate = false
        if i < scalars.count, scalars[i] == "!" || scalars[i] == "^" { negate = true; i += 1 }
        var matched = false
        var first = true
        while i < scalars.count {
            let c = scalars[i]
            if c == "]", !first { return (matched != negate, i + 1) }
            first = false
            if i + 2 < scalars.count, scalars[i + 1] == "-", scalars[i + 2] != "]" {
                if c.value <= ch.value, ch.value <= scalars[i + 2].value { matched = true }
                i += 3
            } else {
                if c == ch { matched = true }
                i += 1
            }
        }
        return nil
    }

    /// GitHub-style pattern lists: later `!pattern` entries exclude what earlier ones included.
    public static func matchesList(_ patterns: [String], _ path: String) -> Bool {
        var result = false
        for pattern in patterns {
            if pattern.hasPrefix("!") {
                if Glob(String(pattern.dropFirst())).matches(path) { result = false }
            } else if Glob(pattern).matches(path) {
                result = true
            }
        }
        return result
    }
}
