/// One combination of matrix values, in dimension order.
public struct MatrixCombination: Sendable, Hashable, Codable {
    public var entries: [Entry]

    public struct Entry: Sendable, Hashable, Codable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(_ entries: [(String, String)]) {
        self.entries = entries.map { Entry(name: $0.0, value: $0.1) }
    }

    public subscript(name: String) -> String? { entries.first { $0.name == name }?.value }

    /// "1, linux": the suffix GitHub shows after a matrix job's name.
    public var label: String { entries.map(\.value).joined(separator: ", ") }

    public var expressionValue: ExpressionValue {
        .object(Dictionary(entries.map { ($0.name, ExpressionValue.string($0.value)) }, uniquingKeysWith: { _, new in new }))
    }
}

/// Expands `strategy.matrix` the way GitHub Actions does: the cartesian product of the dimensions,
/// minus `exclude` matches, then `include` entries extend matching combinations or add new ones.
public enum MatrixExpansion {
    public static let maximumCombinations = 256

    public static func combinationCount(_ matrix: Matrix) -> Int {
        var count = matrix.dimensions.isEmpty ? 0 : 1
        for dimension in matrix.dimensions {
            count = count.multipliedReportingOverflow(by: max(1, dimension.values.count)).overflow ? Int.max : count * max(1, dimension.values.count)
            if count > 1_000_000 { return count }
        }
        return count + matrix.include.count
    }

    public static func expand(_ matrix: Matrix) -> [MatrixCombination] {
        var product: [[(String, String)]] = matrix.dimensions.isEmpty ? [] : [[]]
        for dimension in matrix.dimensions {
            var next: [[(String, String)]] = []
            for partial in product {
                for value in dimension.values { next.append(partial + [(dimension.name, value)]) }
            }
            product = next
        }
        product.removeAll { combination in
            matrix.exclude.contains { exclusion in
                exclusion.allSatisfy { key, value in combination.contains { $0.0 == key && $0.1 == value } }
            }
        }
        let dimensionNames = Set(matrix.dimensions.map(\.name))
        var extras: [[(String, String)]] = []
        for inclusion in matrix.include {
            // An entry extends every combination whose original values it does not overwrite;
            // when it fits none, it becomes a combination of its own.
            var extendedAny = false
            for index in product.indices {
                let fits = inclusion.allSatisfy { key, value in
                    !dimensionNames.contains(key) || product[index].contains { $0.0 == key && $0.1 == value }
                }
                guard fits else { continue }
                extendedAny = true
                for (key, value) in inclusion where !dimensionNames.contains(key) {
                    if let existing = product[index].firstIndex(where: { $0.0 == key }) {
                        product[index][existing].1 = value
                    } else {
                        product[index].append((key, value))
                    }
                }
            }
            if !extendedAny { extras.append(inclusion) }
        }
        return (product + extras).map(MatrixCombination.init)
    }
}
