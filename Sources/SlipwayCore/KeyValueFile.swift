/// The `key=value` format of `$SLIPWAY_OUTPUT` and `.slipway/secrets`, with GitHub's heredoc form for
/// multi-line values:
/// ```
/// version=1.2.3
/// notes<<EOF
/// line one
/// line two
/// EOF
/// ```
public enum KeyValueFile {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public static func parse(_ text: String) -> (values: [(String, String)], problems: [Problem]) {
        var values: [(String, String)] = []
        var problems: [Problem] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        var index = 0
        while index < lines.count {
            let line = lines[index]
            index += 1
            if line.isEmpty || line.hasPrefix("#") { continue }
            if let heredoc = line.range(of: "<<"), !line[..<heredoc.lowerBound].contains("=") {
                let key = String(line[..<heredoc.lowerBound]).trimmingWhitespace()
                let delimiter = String(line[heredoc.upperBound...]).trimmingWhitespace()
                guard !key.isEmpty, !delimiter.isEmpty else {
                    problems.append(Problem(line: index, message: "expected NAME<<DELIMITER"))
                    continue
                }
                var body: [Substring] = []
                var closed = false
                while index < lines.count {
                    let next = lines[index]
                    index += 1
                    if next == delimiter[...] { closed = true; break }
                    body.append(next)
                }
                if !closed { problems.append(Problem(line: index, message: "'\(key)<<\(delimiter)' is never closed by a line '\(delimiter)'")) }
                values.append((key, body.joined(separator: "\n")))
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                problems.append(Problem(line: index, message: "expected NAME=value"))
                continue
            }
            let key = String(line[..<equals]).trimmingWhitespace()
            if key.isEmpty {
                problems.append(Problem(line: index, message: "the name before '=' is empty"))
                continue
            }
            values.append((key, String(line[line.index(after: equals)...])))
        }
        return (values, problems)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars = scalars.dropFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars = scalars.dropLast() }
        return String(scalars)
    }
}
