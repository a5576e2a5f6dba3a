import Foundation

/// Error rates: a one-sided test on counts (canary worse than baseline). Mann-Whitney on sparse error
/// counts misjudges a zero-error baseline against a canary with a few errors (README of the canary
/// fixtures); a count test does not.
public struct CountTestResult: Sendable, Equatable, Codable {
    /// P(canary at least this bad | both versions share one error rate).
    public var pValue: Double
    public var canaryRate: Double
    public var baselineRate: Double
    /// "fisher-exact" or "two-proportion-z".
    public var method: String

    public init(pValue: Double, canaryRate: Double, baselineRate: Double, method: String) {
        self.pValue = pValue
        self.canaryRate = canaryRate
        self.baselineRate = baselineRate
        self.method = method
    }
}

public enum ErrorRateComparison {
    /// Counts above this are refused (nil) rather than lose integer precision in Double arithmetic.
    static let maximumCount = 1 << 50

    /// One-sided Fisher exact test (hypergeometric tail, computed in log space with lgamma so large counts
    /// don't overflow) when counts are small — any expected cell < 5, or either version has ≤ 2000
    /// requests — else a one-sided two-proportion z-test with pooled variance and continuity correction
    /// (R's prop.test(alternative = "greater")), whose normal tail is accurate once every cell is large.
    /// nil for negative counts, errors > total, a zero total, or counts beyond 2^50.
    public static func test(canaryErrors: Int, canaryTotal: Int, baselineErrors: Int, baselineTotal: Int)
        -> CountTestResult?
    {
        guard canaryErrors >= 0, baselineErrors >= 0, canaryTotal > 0, baselineTotal > 0,
              canaryErrors <= canaryTotal, baselineErrors <= baselineTotal,
              canaryTotal <= maximumCount, baselineTotal <= maximumCount
        else { return nil }
        let n1 = Double(canaryTotal), n2 = Double(baselineTotal), n = n1 + n2
        let errors = Double(canaryErrors + baselineErrors)
        let smallestExpected = min(n1, n2) * min(errors, n - errors) / n
        let canaryRate = Double(canaryErrors) / n1, baselineRate = Double(baselineErrors) / n2
        if smallestExpected < 5 || min(canaryTotal, baselineTotal) <= 2000 {
            let p = fisherExactGreater(canaryErrors: canaryErrors, canaryTotal: canaryTotal,
                                       baselineErrors: baselineErrors, baselineTotal: baselineTotal)
            return CountTestResult(pValue: p, canaryRate: canaryRate, baselineRate: baselineRate,
                                   method: "fisher-exact")
        }
        let p = twoProportionZGreater(canaryErrors: canaryErrors, canaryTotal: canaryTotal,
                                      baselineErrors: baselineErrors, baselineTotal: baselineTotal)
        return CountTestResult(pValue: p, canaryRate: canaryRate, baselineRate: baselineRate,
                               method: "two-proportion-z")
    }

    /// Fewer canary requests than this make the comparison Inconclusive.
    public static let minimumCanaryRequests = 100

    /// Verdict: high (fail) when p < alpha AND the canary rate exceeds the baseline rate by more than
    /// `minimumDifference` (absolute, e.g. 0.01 = 1 percentage point) — protects against flagging tiny
    /// but significant differences at huge volume; inconclusive when canaryTotal < minimumRequests or the
    /// counts are invalid; else pass. `estimate` is the rate difference canary - baseline.
    public static func compare(canaryErrors: Int, canaryTotal: Int, baselineErrors: Int, baselineTotal: Int,
                               alpha: Double = 0.01, minimumDifference: Double = 0.005,
                               minimumRequests: Int = minimumCanaryRequests) -> MetricComparison
    {
        let fmt = Statistics.format
        func percent(_ rate: Double) -> String { fmt(rate * 100) + "%" }
        guard let result = test(canaryErrors: canaryErrors, canaryTotal: canaryTotal,
                                baselineErrors: baselineErrors, baselineTotal: baselineTotal)
        else {
            let valid = canaryTotal >= 0 && baselineTotal >= 0 && canaryErrors >= 0 && baselineErrors >= 0
            let why = valid && (canaryTotal == 0 || baselineTotal == 0)
                ? "no requests on \(canaryTotal == 0 ? "the canary" : "the baseline")"
                : "invalid counts"
            return MetricComparison(
                verdict: .inconclusive,
                reason: "Inconclusive: \(why) (canary \(canaryErrors)/\(canaryTotal), baseline "
                    + "\(baselineErrors)/\(baselineTotal) errors/requests)",
                canaryCount: max(0, canaryTotal), baselineCount: max(0, baselineTotal), canaryMean: 0,
                baselineMean: 0, effectSize: 1)
        }
        let difference = result.canaryRate - result.baselineRate
        let effect = Statistics.ratio(result.canaryRate, result.baselineRate)
        let counts = "canary \(canaryErrors)/\(canaryTotal) = \(percent(result.canaryRate)) vs baseline "
            + "\(baselineErrors)/\(baselineTotal) = \(percent(result.baselineRate)) errors"
        let evidence = "one-sided \(result.method) p = \(fmt(result.pValue)) (alpha \(fmt(alpha))), "
            + "difference \(fmt(difference * 100)) percentage points (ratio \(fmt(effect)))"
        func verdict(_ v: MetricComparison.Verdict, _ sentence: String) -> MetricComparison {
            MetricComparison(verdict: v, reason: sentence, canaryCount: canaryTotal, baselineCount: baselineTotal,
                             canaryMean: result.canaryRate, baselineMean: result.baselineRate, effectSize: effect,
                             pValue: result.pValue, estimate: difference)
        }
        if canaryTotal < minimumRequests {
            return verdict(.inconclusive, "Inconclusive: too little data, \(canaryTotal) canary requests "
                + "(need at least \(minimumRequests)); \(counts); \(evidence)")
        }
        if result.pValue < alpha && difference > minimumDifference {
            return verdict(.high, "High: canary errors are significantly higher — \(counts); \(evidence) "
                + "> minimum \(fmt(minimumDifference * 100)) points")
        }
        if result.pValue < alpha {
            return verdict(.pass, "Pass: canary errors are significantly higher but only by "
                + "\(fmt(difference * 100)) points, within the allowed \(fmt(minimumDifference * 100)); "
                + "\(counts); \(evidence)")
        }
        return verdict(.pass, "Pass: no significant increase in errors — \(counts); \(evidence)")
    }

    /// P(X >= canaryErrors) for X ~ Hypergeometric (the table's margins fixed): SciPy's
    /// fisher_exact(alternative="greater"). The first term comes from lgamma, the rest by the exact ratio
    /// of neighbouring terms, summed from the far side of the mode outward so the loop stops as soon as
    /// terms become negligible — cheap even for a billion requests.
    static func fisherExactGreater(canaryErrors a: Int, canaryTotal n1: Int, baselineErrors b: Int,
                                   baselineTotal n2: Int) -> Double
    {
        let n = n1 + n2, k = a + b  // errors in total
        let lowest = max(0, k - n2), highest = min(k, n1)
        guard a > lowest else { return 1 }  // the whole support
        // pmf(j + 1) / pmf(j)
        func ratioUp(_ j: Int) -> Double {
            Double(k - j) * Double(n1 - j) / (Double(j + 1) * Double(n - k - n1 + j + 1))
        }
        func logPMF(_ j: Int) -> Double {
            logChoose(k, j) + logChoose(n - k, n1 - j) - logChoose(n, n1)
        }
        let mode = Int((Double(n1 + 1) * Double(k + 1) / Double(n + 2)).rounded(.down))
        if a > mode {
            // Upper tail, terms decreasing from a upward.
            var term = exp(logPMF(a)), sum = 0.0, j = a
            while true {
                sum += term
                if j >= highest || term <= sum * 1e-18 { break }
                term *= ratioUp(j)
                j += 1
            }
            return min(1, max(0, sum))
        }
        // Lower tail P(X <= a - 1), terms decreasing from a - 1 downward.
        var term = exp(logPMF(a - 1)), sum = 0.0, j = a - 1
        while true {
            sum += term
            if j <= lowest || term <= sum * 1e-18 { break }
            term /= ratioUp(j - 1)
            j -= 1
        }
        return min(1, max(0, 1 - sum))
    }

    /// R's prop.test(c(canaryErrors, baselineErrors), c(canaryTotal, baselineTotal), alternative = "greater",
    /// correct = TRUE): pooled variance, Yates correction min(0.5, |delta| / (1/n1 + 1/n2)).
    static func twoProportionZGreater(canaryErrors a: Int, canaryTotal n1: Int, baselineErrors b: Int,
                                      baselineTotal n2: Int) -> Double
    {
        let fn1 = Double(n1), fn2 = Double(n2)
        let p1 = Double(a) / fn1, p2 = Double(b) / fn2
        let pooled = Double(a + b) / (fn1 + fn2)
        let inverseSum = 1 / fn1 + 1 / fn2
        let variance = pooled * (1 - pooled) * inverseSum
        guard variance > 0 else { return 1 }  // no errors anywhere, or only errors: no evidence
        let delta = p1 - p2
        let yates = min(0.5, abs(delta) / inverseSum)
        let magnitude = (abs(delta) - yates * inverseSum) / variance.squareRoot()
        let z = delta > 0 ? magnitude : (delta < 0 ? -magnitude : 0)
        return Statistics.normalCDF(-z)
    }

    private static func logChoose(_ n: Int, _ k: Int) -> Double {
        logFactorial(n) - logFactorial(k) - logFactorial(n - k)
    }

    /// log(n!) through the thread-safe lgamma overload (the C one writes the global signgam).
    private static func logFactorial(_ n: Int) -> Double {
        let (value, _): (Double, Int) = lgamma(Double(n) + 1)
        return value
    }
}
