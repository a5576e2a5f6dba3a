/// Lexer and recursive-descent parser for `${{ … }}` expressions.
///
/// Grammar (lowest to highest precedence):
///   or      := and ('||' and)*
///   and     := equality ('&&' equality)*
///   equality:= relational (('==' | '!=') relational)*
///   relational := unary (('<' | '<=' | '>' | '>=') unary)*
///   unary   := '!' unary | postfix
///   postfix := primary ('.' (ident | '*') | '[' (or | '*') ']')*
///   primary := literal | '(' or ')' | ident '(' args ')' | context-ident
struct ExpressionParser {
    typealias Node = Expression.Node

    enum Punct: String {
        case lparen = "(", rparen = ")", lbracket = "[", rbracket = "]", dot = ".", comma = ","
        case not = "!", eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">="
        case and = "&&", or = "||", star = "*"
    }

    enum TokenKind {
        case number(Double)
        case string(String)
        case identifier(String)
        case punct(Punct)
        case end
    }

    struct Token {
        var kind: TokenKind
        var offset: Int

        var display: String {
            switch kind {
            case .number(let n): return "number \(ExpressionValue.formatNumber(n))"
            case .string(let s): return "string '\(s.count > 20 ? String(s.prefix(20)) + "…" : s)'"
            case .identifier(let s): return "'\(s.count > 30 ? String(s.prefix(30)) + "…" : s)'"
            case .punct(let p): return "'\(p.rawValue)'"
            case .end: return "end of expression"
            }
        }
    }

    private let tokens: [Token]
    private var pos = 0
    private var depth = 0

    static func parse(_ chars: [Character], from start: Int, to end: Int) throws(ExpressionError) -> Node {
        let tokens = try lex(chars, from: start, to: end)
        var parser = ExpressionParser(tokens: tokens)
        if case .end = tokens[0].kind { throw ExpressionError("empty expression", offset: tokens[0].offset) }
        let node = try parser.parseOr()
        let next = parser.peek
        if case .end = next.kind { return node }
        throw ExpressionError("unexpected \(next.display) after a complete expression; missing an operator?", offset: next.offset)
    }

    private init(tokens: [Token]) { self.tokens = tokens }

    // MARK: Lexer

    private static func isIdentifierStart(_ c: Character) -> Bool { c == "_" || c.isLetter }
    private static func isIdentifierPart(_ c: Character) -> Bool {
        c == "_" || c == "-" || c.isLetter || c.isASCII && c.isNumber
    }
    private static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
    private static func isHexDigit(_ c: Character) -> Bool { c.isASCII && c.isHexDigit }

    static func lex(_ chars: [Character], from start: Int, to end: Int) throws(ExpressionError) -> [Token] {
        var tokens: [Token] = []
        var i = start
        func at(_ k: Int) -> Character? { k < end ? chars[k] : nil }
        while i < end {
            let c = chars[i]
            if c.isWhitespace { i += 1; continue }
            let offset = i
            switch c {
            case "(": tokens.append(Token(kind: .punct(.lparen), offset: i)); i += 1
            case ")": tokens.append(Token(kind: .punct(.rparen), offset: i)); i += 1
            case "[": tokens.append(Token(kind: .punct(.lbracket), offset: i)); i += 1
            case "]": tokens.append(Token(kind: .punct(.rbracket), offset: i)); i += 1
            case ",": tokens.append(Token(kind: .punct(.comma), offset: i)); i += 1
            case "*": tokens.append(Token(kind: .punct(.star), offset: i)); i += 1
            case ".": tokens.append(Token(kind: .punct(.dot), offset: i)); i += 1
            case "!":
                if at(i + 1) == "=" { tokens.append(Token(kind: .punct(.ne), offset: i)); i += 2 }
                else { tokens.append(Token(kind: .punct(.not), offset: i)); i += 1 }
            case "=":
                guard at(i + 1) == "=" else { throw ExpressionError("unexpected '='; did you mean '=='?", offset: i) }
                tokens.append(Token(kind: .punct(.eq), offset: i)); i += 2
            case "<":
                if at(i + 1) == "=" { tokens.append(Token(kind: .punct(.le), offset: i)); i += 2 }
                else { tokens.append(Token(kind: .punct(.lt), offset: i)); i += 1 }
            case ">":
                if at(i + 1) == "=" { tokens.append(Token(kind: .punct(.ge), offset: i)); i += 2 }
                else { tokens.append(Token(kind: .punct(.gt), offset: i)); i += 1 }
            case "&":
                guard at(i + 1) == "&" else { throw ExpressionError("unexpected '&'; did you mean '&&'?", offset: i) }
                tokens.append(Token(kind: .punct(.and), offset: i)); i += 2
            case "|":
                guard at(i + 1) == "|" else { throw ExpressionError("unexpected '|'; did you mean '||'?", offset: i) }
                tokens.append(Token(kind: .punct(.or), offset: i)); i += 2
            case "'":
                var value = ""
                var j = i + 1
                var closed = false
                while j < end {
                    if chars[j] == "'" {
                        if at(j + 1) == "'" { value.append("'"); j += 2; continue }
                        closed = true
                        break
                    }
                    value.append(chars[j])
                    j += 1
                }
                guard closed else {
                    throw ExpressionError("unterminated string literal; close it with ' (write '' for a quote)", offset: offset)
                }
                tokens.append(Token(kind: .string(value), offset: offset))
                i = j + 1
            case "\"":
                throw ExpressionError("strings use single quotes, e.g. 'text'", offset: i)
            default:
                if isDigit(c) || (c == "-" && (at(i + 1).map(isDigit) ?? false)) {
                    let (value, next) = try lexNumber(chars, at: i, end: end)
                    tokens.append(Token(kind: .number(value), offset: offset))
                    i = next
                } else if isIdentifierStart(c) {
                    var j = i + 1
                    while j < end, isIdentifierPart(chars[j]) { j += 1 }
                    tokens.append(Token(kind: .identifier(String(chars[i..<j])), offset: offset))
                    i = j
                } else {
                    throw ExpressionError("unexpected character '\(c)'", offset: i)
                }
            }
        }
        tokens.append(Token(kind: .end, offset: end))
        return tokens
    }

    private static func lexNumber(_ chars: [Character], at start: Int, end: Int) throws(ExpressionError) -> (Double, Int) {
        var i = start
        var negative = false
        if chars[i] == "-" { negative = true; i += 1 }
        var value: Double
        if chars[i] == "0", i + 1 < end, chars[i + 1] == "x" || chars[i + 1] == "X" {
            i += 2
            let digitsStart = i
            value = 0
            while i < end, isHexDigit(chars[i]) {
                value = value * 16 + Double(chars[i].hexDigitValue ?? 0)
                i += 1
            }
            if i == digitsStart {
                throw ExpressionError("invalid hexadecimal number; expected digits after '0x'", offset: start)
            }
        } else {
            let digitsStart = i
            while i < end, isDigit(chars[i]) { i += 1 }
            if i + 1 < end, chars[i] == ".", isDigit(chars[i + 1]) {
                i += 1
                while i < end, isDigit(chars[i]) { i += 1 }
            }
            if i < end, chars[i] == "e" || chars[i] == "E" {
                var j = i + 1
                if j < end, chars[j] == "+" || chars[j] == "-" { j += 1 }
                if j < end, isDigit(chars[j]) {
                    i = j
                    while i < end, isDigit(chars[i]) { i += 1 }
                }
            }
            guard let parsed = Double(String(chars[digitsStart..<i])) else {
                throw ExpressionError("invalid number literal", offset: start)
            }
            value = parsed
        }
        if i < end, isIdentifierPart(chars[i]) {
            throw ExpressionError("invalid number literal '\(String(chars[start...i]))'", offset: start)
        }
        return (negative ? -value : value, i)
    }

    // MARK: Parser

    private var peek: Token { tokens[pos] }

    private mutating func advance() -> Token {
        let t = tokens[pos]
        if pos < tokens.count - 1 { pos += 1 }
        return t
    }

    private func isPunct(_ p: Punct) -> Bool {
        if case .punct(let q) = peek.kind, q == p { return true }
        return false
    }

    private mutating func expect(_ p: Punct, _ context: String) throws(ExpressionError) {
        guard isPunct(p) else {
            throw ExpressionError("expected '\(p.rawValue)' \(context), found \(peek.display)", offset: peek.offset)
        }
        _ = advance()
    }

    private mutating func enter(at offset: Int) throws(ExpressionError) {
        depth += 1
        if depth > Expression.maxNestingDepth {
            throw ExpressionError("expression nests too deeply (limit \(Expression.maxNestingDepth) levels)", offset: offset)
        }
    }

    private mutating func parseOr() throws(ExpressionError) -> Node {
        try enter(at: peek.offset)
        defer { depth -= 1 }
        var operands = [try parseAnd()]
        while isPunct(.or) {
            _ = advance()
            operands.append(try parseAnd())
        }
        return operands.count == 1 ? operands[0] : .or(operands)
    }

    private mutating func parseAnd() throws(ExpressionError) -> Node {
        var operands = [try parseEquality()]
        while isPunct(.and) {
            _ = advance()
            operands.append(try parseEquality())
        }
        return operands.count == 1 ? operands[0] : .and(operands)
    }

    private mutating func parseEquality() throws(ExpressionError) -> Node {
        let first = try parseRelational()
        var steps: [Expression.CompareStep] = []
        while case .punct(let p) = peek.kind, p == .eq || p == .ne {
            _ = advance()
            steps.append(.init(op: p == .eq ? .eq : .ne, operand: try parseRelational()))
        }
        return steps.isEmpty ? first : .compare(first, steps)
    }

    private mutating func parseRelational() throws(ExpressionError) -> Node {
        let first = try parseUnary()
        var steps: [Expression.CompareStep] = []
        while case .punct(let p) = peek.kind, let op = Self.relationalOp(p) {
            _ = advance()
            steps.append(.init(op: op, operand: try parseUnary()))
        }
        return steps.isEmpty ? first : .compare(first, steps)
    }

    private static func relationalOp(_ p: Punct) -> Expression.CompareOp? {
        switch p {
        case .lt: .lt
        case .le: .le
        case .gt: .gt
        case .ge: .ge
        default: nil
        }
    }

    private mutating func parseUnary() throws(ExpressionError) -> Node {
        if isPunct(.not) {
            let bang = advance()
            try enter(at: bang.offset)
            defer { depth -= 1 }
            return .not(try parseUnary())
        }
        return try parsePostfix()
    }

    private mutating func parsePostfix() throws(ExpressionError) -> Node {
        let base = try parsePrimary()
        var accessors: [Expression.Accessor] = []
        while true {
            if isPunct(.dot) {
                _ = advance()
                let t = advance()
                switch t.kind {
                case .identifier(let name): accessors.append(.property(name))
                case .punct(.star): accessors.append(.wildcard)
                default:
                    throw ExpressionError("expected a property name after '.', found \(t.display)", offset: t.offset)
                }
            } else if isPunct(.lbracket) {
                let open = advance()
                if isPunct(.star) {
                    _ = advance()
                    accessors.append(.wildcard)
                } else {
                    accessors.append(.index(try parseOr()))
                }
                try expect(.rbracket, "to close '[' at offset \(open.offset)")
            } else {
                break
            }
        }
        return accessors.isEmpty ? base : .access(base, accessors)
    }

    private mutating func parsePrimary() throws(ExpressionError) -> Node {
        let t = advance()
        switch t.kind {
        case .number(let n): return .literal(.number(n))
        case .string(let s): return .literal(.string(s))
        case .punct(.lparen):
            let inner = try parseOr()
            try expect(.rparen, "to close '(' at offset \(t.offset)")
            return inner
        case .identifier(let name):
            if isPunct(.lparen) { return try parseCall(name: name, at: t.offset) }
            switch name {
            case "true": return .literal(.bool(true))
            case "false": return .literal(.bool(false))
            case "null": return .literal(.null)
            default: break
            }
            let lower = name.lowercased()
            if Expression.knownContexts.contains(lower) { return .context(lower, offset: t.offset) }
            let candidates = Array(Expression.knownContexts) + ["true", "false", "null"]
            if let suggestion = ExpressionSuggest.closest(to: name, in: candidates) {
                throw ExpressionError("unknown context '\(name)'; did you mean '\(suggestion)'?", offset: t.offset)
            }
            let list = Expression.knownContexts.sorted().joined(separator: ", ")
            throw ExpressionError(
                "unknown context '\(name)'; expected one of: \(list) (strings need single quotes)", offset: t.offset)
        case .end:
            throw ExpressionError("unexpected end of expression; expected a value", offset: t.offset)
        case .punct(let p):
            throw ExpressionError("unexpected '\(p.rawValue)'; expected a value", offset: t.offset)
        }
    }

    private mutating func parseCall(name: String, at offset: Int) throws(ExpressionError) -> Node {
        let lower = name.lowercased()
        if lower == "hashfiles" {
            throw ExpressionError("hashFiles() is not supported; use cache.inputs", offset: offset)
        }
        guard let function = Expression.Function.byLowercasedName[lower] else {
            let names = Expression.Function.allCases.map(\.rawValue)
            if let suggestion = ExpressionSuggest.closest(to: name, in: names) {
                throw ExpressionError("unknown function '\(name)'; did you mean '\(suggestion)'?", offset: offset)
            }
            throw ExpressionError(
                "unknown function '\(name)'; available functions: \(names.joined(separator: ", "))", offset: offset)
        }
        let open = advance()  // '('
        var args: [Node] = []
        if !isPunct(.rparen) {
            while true {
                args.append(try parseOr())
                if isPunct(.comma) { _ = advance(); continue }
                break
            }
        }
        try expect(.rparen, "to close the argument list of '\(function.rawValue)(' at offset \(open.offset)")
        let (minArgs, maxArgs) = function.arity
        if args.count < minArgs || (maxArgs.map { args.count > $0 } ?? false) {
            let expected: String
            if let maxArgs, maxArgs == minArgs {
                expected = "\(minArgs) argument\(minArgs == 1 ? "" : "s")"
            } else if let maxArgs {
                expected = "\(minArgs) to \(maxArgs) arguments"
            } else {
                expected = "at least \(minArgs) argument\(minArgs == 1 ? "" : "s")"
            }
            throw ExpressionError(
                "\(function.rawValue)() takes \(expected), got \(args.count)", offset: offset)
        }
        return .call(function, args, offset: offset)
    }
}
