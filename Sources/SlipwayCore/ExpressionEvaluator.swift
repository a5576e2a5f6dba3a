/// Tree-walking evaluator. Tree depth is bounded by `Expression.maxNestingDepth`, so recursion is safe.
struct ExpressionEvaluator {
    typealias Node = Expression.Node
    let context: ExpressionContext

    func eval(_ node: Node) throws(ExpressionError) -> ExpressionValue {
        switch node {
        case .literal(let v):
            return v
        case .context(let name, _):
            return context.values[name] ?? Self.caseInsensitiveLookup(context.values, name) ?? .null
        case .access(let base, let accessors):
            return try evalAccess(base, accessors)
        case .not(let inner):
            return .bool(!(try eval(inner).isTruthy))
        case .and(let operands):
            var last = ExpressionValue.null
            for operand in operands {
                last = try eval(operand)
                if !last.isTruthy { return last }
            }
            return last
        case .or(let operands):
            var last = ExpressionValue.null
            for operand in operands {
                last = try eval(operand)
                if last.isTruthy { return last }
            }
            return last
        case .compare(let first, let steps):
            var left = try eval(first)
            for step in steps {
                let right = try eval(step.operand)
                left = .bool(Self.compare(left, step.op, right))
            }
            return left
        case .call(let function, let args, let offset):
            return try call(function, args, offset: offset)
        }
    }

    // MARK: Property / index access

    /// During access, a `*` filter turns the single current value into a list that subsequent
    /// accessors map over (e.g. `needs.*.result`).
    private enum Current {
        case single(ExpressionValue)
        case many([ExpressionValue])
    }

    private func evalAccess(_ base: Node, _ accessors: [Expression.Accessor]) throws(ExpressionError) -> ExpressionValue {
        var current = Current.single(try eval(base))
        for accessor in accessors {
            switch accessor {
            case .property(let name):
                current = Self.apply(current) { Self.property($0, name) }
            case .index(let keyNode):
                let key = try eval(keyNode)
                current = Self.apply(current) { Self.index($0, key) }
            case .wildcard:
                switch current {
                case .single(let v): current = .many(Self.children(v))
                case .many(let vs): current = .many(vs.flatMap(Self.children))
                }
            }
        }
        switch current {
        case .single(let v): return v
        case .many(let vs): return .array(vs)
        }
    }

    private static func apply(_ current: Current, _ f: (ExpressionValue) -> ExpressionValue?) -> Current {
        switch current {
        case .single(let v): return .single(f(v) ?? .null)
        case .many(let vs): return .many(vs.compactMap(f))
        }
    }

    private static func children(_ v: ExpressionValue) -> [ExpressionValue] {
        switch v {
        case .array(let items): return items
        case .object(let dict): return dict.keys.sorted().map { dict[$0]! }
        default: return []
        }
    }

    private static func caseInsensitiveLookup(_ dict: [String: ExpressionValue], _ key: String) -> ExpressionValue? {
        let lower = key.lowercased()
        var match: (String, ExpressionValue)?
        for (k, v) in dict where k.lowercased() == lower {
            if match == nil || k < match!.0 { match = (k, v) }
        }
        return match?.1
    }

    /// Property lookup: exact key first, then case-insensitive (GitHub property names are
    /// case-insensitive). `nil` means "no such property".
    private static func property(_ v: ExpressionValue, _ name: String) -> ExpressionValue? {
        guard case .object(let dict) = v else { return nil }
        return dict[name] ?? caseInsensitiveLookup(dict, name)
    }

    private static func index(_ v: ExpressionValue, _ key: ExpressionValue) -> ExpressionValue? {
        switch v {
        case .array(let items):
            let n = key.numericValue
            guard n.isFinite, n == n.rounded(), n >= 0, n < Double(items.count) else { return nil }
            return items[Int(n)]
        case .object:
            switch key {
            case .string, .number, .bool: return property(v, key.description)
            default: return nil
            }
        default:
            return nil
        }
    }

    // MARK: Comparison (GitHub coercion rules)

    static func equals(_ a: ExpressionValue, _ b: ExpressionValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.string(let x), .string(let y)): return x.lowercased() == y.lowercased()
        // Arrays/objects compare by identity in GitHub; values have no identity here.
        case (.array, _), (_, .array), (.object, _), (_, .object): return false
        default: return a.numericValue == b.numericValue
        }
    }

    static func compare(_ a: ExpressionValue, _ op: Expression.CompareOp, _ b: ExpressionValue) -> Bool {
        switch op {
        case .eq: return equals(a, b)
        case .ne: return !equals(a, b)
        default: break
        }
        if case .string(let x) = a, case .string(let y) = b {
            let l = x.lowercased()
            let r = y.lowercased()
            switch op {
            case .lt: return l < r
            case .le: return l <= r
            case .gt: return l > r
            case .ge: return l >= r
            case .eq, .ne: return false
            }
        }
        let l = a.numericValue
        let r = b.numericValue
        switch op {
        case .lt: return l < r
        case .le: return l <= r
        case .gt: return l > r
        case .ge: return l >= r
        case .eq, .ne: return false
        }
    }

    // MARK: Functions

    private func call(_ function: Expression.Function, _ argNodes: [Node], offset: Int) throws(ExpressionError) -> ExpressionValue {
        let status = context.status
        switch function {
        case .success: return .bool(!status.anyNeedFailed && !status.anyNeedCancelled && !status.runCancelled)
        case .failure: return .bool(status.anyNeedFailed)
        case .cancelled: return .bool(status.runCancelled)
        case .always: return .bool(true)
        default: break
        }
        var args: [ExpressionValue] = []
        args.reserveCapacity(argNodes.count)
        for node in argNodes { args.append(try eval(node)) }
        switch function {
        case .contains:
            if case .array(let items) = args[0] {
                return .bool(items.contains { Self.equals($0, args[1]) })
            }
            let haystack = args[0].description.lowercased()
            let needle = args[1].description.lowercased()
            return .bool(needle.isEmpty || haystack.contains(needle))
        case .startsWith:
            return .bool(args[0].description.lowercased().hasPrefix(args[1].description.lowercased()))
        case .endsWith:
            return .bool(args[0].description.lowercased().hasSuffix(args[1].description.lowercased()))
        case .format:
            return .string(try Self.format(args[0].description, Array(args.dropFirst()), offset: offset))
        case .join:
            let separator = args.count > 1 ? args[1].description : ","
            switch args[0] {
            case .array(let items): return .string(items.map(\.description).joined(separator: separator))
            case .string(let s): return .string(s)
            case .null: return .string("")
            default: return .string(args[0].description)
            }
        case .toJSON:
            return .string(args[0].jsonString(pretty: true))
        case .fromJSON:
            guard case .string(let text) = args[0] else {
                throw ExpressionError("fromJSON() expects a string, got \(Self.typeName(args[0]))", offset: offset)
            }
            do {
                return try ExpressionValue.parseJSON(text)
            } catch {
                throw ExpressionError("fromJSON(): \(error.message)", offset: offset)
            }
        case .success, .failure, .cancelled, .always:
            return .null  // handled above
        }
    }

    static func typeName(_ v: ExpressionValue) -> String {
        switch v {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    static func format(_ template: String, _ args: [ExpressionValue], offset: Int) throws(ExpressionError) -> String {
        let chars = Array(template)
        var out = ""
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "{" {
                if i + 1 < chars.count, chars[i + 1] == "{" { out.append("{"); i += 2; continue }
                var j = i + 1
                var index = 0
                while j < chars.count, let d = chars[j].wholeNumberValue, chars[j].isASCII {
                    index = min(index * 10 + d, 1_000_000)
                    j += 1
                }
                guard j > i + 1, j < chars.count, chars[j] == "}" else {
                    throw ExpressionError(
                        "format(): invalid placeholder at position \(i) of the format string; use {0}, {1}, … or '{{' for a literal '{'",
                        offset: offset)
                }
                guard index < args.count else {
                    throw ExpressionError(
                        "format(): placeholder {\(index)} is out of range; \(args.count) argument\(args.count == 1 ? " was" : "s were") given",
                        offset: offset)
                }
                out += args[index].description
                i = j + 1
            } else if c == "}" {
                guard i + 1 < chars.count, chars[i + 1] == "}" else {
                    throw ExpressionError(
                        "format(): unmatched '}' at position \(i) of the format string; use '}}' for a literal '}'",
                        offset: offset)
                }
                out.append("}")
                i += 2
            } else {
                out.append(c)
                i += 1
            }
        }
        return out
    }
}
