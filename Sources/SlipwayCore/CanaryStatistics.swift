import Foundation

// Pure statistics for canary analysis (issue 4, "Analysis"). Nothing here does I/O or keeps state, so
// every verdict can be recomputed later from its stored inputs by `slipway explain`.
//
// Latency follows Spinnaker Kayenta's NetflixACAJudge, which ports R's
// `wilcox.test(x = canary, y = baseline, conf.int = TRUE, exact = FALSE, correct = TRUE)`; see
// ../shared/fixtures/canary/README.md. Error rates use a one-sided test on counts
// (StatisticsErrorRates.swift) because Mann-Whitney misjudges sparse error counts.

public enum Statistics {
    /// Average ranks with tie groups (like scipy.stats.rankdata(method="average")), 1-based, plus the
    /// tie correction sum(t^3 - t) over tie groups that the Mann-Whitney variance needs.
    /// NaN sorts after every number (as in SciPy); callers that care filter non-finite values first.
    public static func ranks(_ values: [Double]) -> (ranks: [Double], tieCorrection: Double) {
        let order = values.indices.sorted { precedes(values[$0], values[$1]) }
        var ranks = [Double](repeating: 0, count: values.count)
        var tie = 0.0
        var start = 0
        while start < order.count {
            var end = start + 1
            while end < order.count && same(values[order[end]], values[order[start]]) { end += 1 }
            // Positions start..<end share the average of the 1-based ranks start+1 ... end.
            let average = Double(start + 1 + end) / 2
            for k in start..<end { ranks[order[k]] = average }
            let t = Double(end - start)
            tie += t * t * t - t
            start = end
        }
        return (ranks, tie)
    }

    /// Phi^-1(p), the standard normal quantile. Acklam's rational approximation (relative error 1.2e-9)
    /// refined by one Halley step on erfc, which brings it to about 1e-15: the CI's z must match R/SciPy
    /// closely or the roots drift. 0 -> -inf, 1 -> +inf, outside [0, 1] or NaN -> NaN.
    public static func normalQuantile(_ p: Double) -> Double {
        guard p >= 0 && p <= 1 else { return .nan }
        if p == 0 { return -.infinity }
        if p == 1 { return .infinity }
        // Work in the lower half, where p is represented with full relative precision; 1 - p is exact
        // for p >= 0.5 (Sterbenz), so the upper half is the mirror image.
        if p > 0.5 { return -lowerQuantile(1 - p) }
        return lowerQuantile(p)
    }

    private static func lowerQuantile(_ p: Double) -> Double {
        let a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00]
        let b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                 6.680131188771972e+01, -1.328068155288572e+01]
        let c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                 -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00]
        let d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                 3.754408661907416e+00]
        var x: Double
        if p < 0.02425 {
            let q = (-2 * log(p)).squareRoot()
            x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        } else {
            let q = p - 0.5
            let r = q * q
            x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        }
        // Halley step: e = Phi(x) - p, u = e / phi(x).
        let e = 0.5 * erfc(-x / 2.0.squareRoot()) - p
        let u = e * (2 * Double.pi).squareRoot() * exp(x * x / 2)
        if u.isFinite { x -= u / (1 + x * u / 2) }
        return x
    }

    /// Phi(x), the standard normal CDF, via erfc so the far tails keep their relative precision
    /// (1 - Phi would round to 0 long before the p-values we report do).
    public static func normalCDF(_ x: Double) -> Double {
        0.5 * erfc(-x / 2.0.squareRoot())
    }

    /// Brent's root finding on [a, b] (as R's uniroot / scipy brentq; this is the same iteration as
    /// SciPy's brentq.c, so results can be compared step for step): stops when the bracket is narrower
    /// than `tolerance` (plus 4 ulp relative), returns nil when f(a) and f(b) have the same sign, or f
    /// gives NaN. On a step function (the Wilcoxon statistic) it converges onto the jump.
    public static func brent(_ f: (Double) -> Double, _ a: Double, _ b: Double, tolerance: Double = 1e-4,
                             maxIterations: Int = 1000) -> Double? {
        let rtol = 4 * Double.ulpOfOne
        var xpre = a, xcur = b
        var fpre = f(xpre), fcur = f(xcur)
        guard !fpre.isNaN, !fcur.isNaN, a.isFinite, b.isFinite else { return nil }
        if fpre == 0 { return xpre }
        if fcur == 0 { return xcur }
        // Sign tests rather than SciPy's product, so tiny values cannot underflow the product to 0.
        func opposite(_ u: Double, _ v: Double) -> Bool { (u < 0 && v > 0) || (u > 0 && v < 0) }
        guard opposite(fpre, fcur) else { return nil }
        var xblk = 0.0, fblk = 0.0, spre = 0.0, scur = 0.0
        for _ in 0..<max(1, maxIterations) {
            if opposite(fpre, fcur) {
                xblk = xpre
                fblk = fpre
                spre = xcur - xpre
                scur = spre
            }
            if abs(fblk) < abs(fcur) {
                xpre = xcur; xcur = xblk; xblk = xpre
                fpre = fcur; fcur = fblk; fblk = fpre
            }
            let delta = (tolerance + rtol * abs(xcur)) / 2
            let sbis = (xblk - xcur) / 2
            if fcur == 0 || abs(sbis) < delta { return xcur }
            if abs(spre) > delta && abs(fcur) < abs(fpre) {
                let stry: Double
                if xpre == xblk {
                    stry = -fcur * (xcur - xpre) / (fcur - fpre)  // secant
                } else {
                    let dpre = (fpre - fcur) / (xpre - xcur)       // inverse quadratic
                    let dblk = (fblk - fcur) / (xblk - xcur)
                    stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
                }
                if 2 * abs(stry) < min(abs(spre), 3 * abs(sbis) - delta) {
                    spre = scur
                    scur = stry
                } else {
                    spre = sbis
                    scur = sbis
                }
            } else {
                spre = sbis
                scur = sbis
            }
            xpre = xcur
            fpre = fcur
            xcur += abs(scur) > delta ? scur : (sbis > 0 ? delta : -delta)
            fcur = f(xcur)
            if fcur.isNaN { return nil }
        }
        return xcur
    }

    /// Total order used for ranking: numbers ascending, NaN last (SciPy's convention).
    private static func precedes(_ u: Double, _ v: Double) -> Bool {
        if u.isNaN { return false }
        if v.isNaN { return true }
        return u < v
    }

    private static func same(_ u: Double, _ v: Double) -> Bool { u == v || (u.isNaN && v.isNaN) }

    /// The finite values, sorted ascending. A plain merge sort on raw buffers rather than the generic
    /// `sorted()`, which is unspecialized and ~20x slower in debug builds (the Monte Carlo tests sort a lot).
    static func sortedFinite(_ values: [Double]) -> [Double] {
        var a = values.filter(\.isFinite)
        let n = a.count
        guard n > 1 else { return a }
        var b = a
        a.withUnsafeMutableBufferPointer { pa in
            b.withUnsafeMutableBufferPointer { pb in
                guard let original = pa.baseAddress, var dst = pb.baseAddress else { return }
                var src = original
                var width = 1
                while width < n {
                    var start = 0
                    while start < n {
                        let mid = min(start + width, n), end = min(start + 2 * width, n)
                        var i = start, j = mid, k = start
                        while i < mid && j < end {
                            if src[j] < src[i] { dst[k] = src[j]; j += 1 } else { dst[k] = src[i]; i += 1 }
                            k += 1
                        }
                        while i < mid { dst[k] = src[i]; i += 1; k += 1 }
                        while j < end { dst[k] = src[j]; j += 1; k += 1 }
                        start = end
                    }
                    swap(&src, &dst)
                    width *= 2
                }
                if src != original { original.update(from: src, count: n) }
            }
        }
        return a
    }

    /// Mean that stays finite for any finite input (sum/count overflows for values near 1e308).
    static func mean(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let n = Double(values.count)
        let sum = values.reduce(0, +)
        if sum.isFinite { return sum / n }
        return values.reduce(0) { $0 + $1 / n }
    }

    /// Ratio canary/baseline kept finite so a verdict always encodes to JSON: 1 when both are 0,
    /// +-greatestFiniteMagnitude when only the baseline is 0 (a rate appearing from nothing).
    static func ratio(_ numerator: Double, _ denominator: Double) -> Double {
        if denominator == 0 {
            if numerator == 0 { return 1 }
            return numerator > 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude
        }
        let r = numerator / denominator
        if r.isNaN { return 1 }
        return min(max(r, -.greatestFiniteMagnitude), .greatestFiniteMagnitude)
    }
}

/// Kayenta's NetflixACAJudge: R wilcox.test(x = canary, y = baseline, conf.int = TRUE, exact = FALSE,
/// correct = TRUE). The interval and estimate are for the location shift canary - baseline.
public struct MannWhitneyResult: Sendable, Equatable, Codable {
    public var lowerConfidence: Double
    public var upperConfidence: Double
    /// Hodges-Lehmann-style estimate of the shift: the root of wdiff(., 0).
    public var estimate: Double
    /// Two-sided, normal approximation with continuity and tie correction (as R and SciPy compute it).
    public var pValue: Double
    /// R's W: the canary's rank sum minus nx(nx+1)/2 (SciPy's U1 for x = canary).
    public var statistic: Double

    public init(lowerConfidence: Double, upperConfidence: Double, estimate: Double, pValue: Double,
                statistic: Double) {
        self.lowerConfidence = lowerConfidence
        self.upperConfidence = upperConfidence
        self.estimate = estimate
        self.pValue = pValue
        self.statistic = statistic
    }
}

public enum MannWhitney {
    /// nil when either sample is empty (after dropping NaN/inf, which have no rank meaning), when all
    /// values are equal (sigma 0: nothing to test) or the confidence level is not inside (0, 1).
    public static func test(canary: [Double], baseline: [Double], confidenceLevel: Double = 0.95)
        -> MannWhitneyResult?
    {
        test(sortedCanary: Statistics.sortedFinite(canary), sortedBaseline: Statistics.sortedFinite(baseline),
             confidenceLevel: confidenceLevel)
    }

    /// The test on samples already filtered to finite values and sorted ascending.
    static func test(sortedCanary x: [Double], sortedBaseline y: [Double], confidenceLevel: Double)
        -> MannWhitneyResult?
    {
        guard let xMin = x.first, let xMax = x.last, let yMin = y.first, let yMax = y.last,
              confidenceLevel > 0, confidenceLevel < 1
        else { return nil }
        let sums = RankSums(x: x, y: y)
        let atZero = sums.evaluate(shift: 0)
        guard atZero.sigma > 0 else { return nil }

        let dz = atZero.dz
        let z = dz == 0 ? 0 : (dz - 0.5 * sign(dz)) / atZero.sigma
        let pValue = min(1, erfc(abs(z) / 2.0.squareRoot()))  // = 2 * min(Phi(z), 1 - Phi(z))

        let muMin = xMin - yMax
        let muMax = xMax - yMin
        guard muMin.isFinite, muMax.isFinite else { return nil }

        func wdiff(_ d: Double, _ zq: Double) -> Double {
            let r = sums.evaluate(shift: d)
            // Every value tied (possible only at one shift): that shift is the centre, standardized 0.
            guard r.sigma > 0 else { return -zq }
            return (r.dz - 0.5 * sign(r.dz)) / r.sigma - zq
        }
        // R's root(): wdiff decreases in d; a bound is returned as is when there is no sign change inside.
        func root(_ zq: Double) -> Double {
            let fLower = wdiff(muMin, zq)
            if fLower <= 0 { return muMin }
            let fUpper = wdiff(muMax, zq)
            if fUpper >= 0 { return muMax }
            return Statistics.brent({ wdiff($0, zq) }, muMin, muMax, tolerance: 1e-4) ?? (muMin + muMax) / 2
        }
        let alpha = 1 - confidenceLevel
        let zq = Statistics.normalQuantile(1 - alpha / 2)
        return MannWhitneyResult(lowerConfidence: root(zq), upperConfidence: root(-zq), estimate: root(0),
                                 pValue: pValue, statistic: atZero.w)
    }

    private static func sign(_ v: Double) -> Double { v > 0 ? 1 : (v < 0 ? -1 : 0) }
}

/// Rank sum of canary - d within concat(canary - d, baseline), evaluated by merging the two sorted
/// samples: O(N) per call instead of a sort, which matters because Brent calls it ~50 times per root.
/// The ranks are those of rankdata on the concatenation (ranks depend on the values only; x - d keeps
/// x's order because IEEE subtraction is monotone), and every partial sum is a multiple of 0.5, so the
/// result is bit-identical to SciPy's.
private struct RankSums {
    let x: [Double]
    let y: [Double]

    func evaluate(shift d: Double) -> (w: Double, dz: Double, sigma: Double) {
        let nx = x.count, ny = y.count
        // Raw pointers and integer counters: this loop dominates Monte Carlo runs in debug builds.
        let (rankSumX, tie) = x.withUnsafeBufferPointer { xb in
            y.withUnsafeBufferPointer { yb in
                guard let xp = xb.baseAddress, let yp = yb.baseAddress else { return (0.0, 0.0) }
                return Self.merge(xp, nx, yp, ny, d)
            }
        }
        let fx = Double(nx), fy = Double(ny), n = Double(nx + ny)
        let w = rankSumX - fx * (fx + 1) / 2
        let dz = w - fx * fy / 2
        let sigma = (fx * fy / 12 * ((n + 1) - tie / (n * (n - 1)))).squareRoot()
        return (w, dz, sigma.isNaN ? 0 : sigma)
    }

    /// Returns (sum of x's ranks, sum(t^3 - t)); twice the rank sum is an integer, so it is summed exactly.
    private static func merge(_ x: UnsafePointer<Double>, _ nx: Int, _ y: UnsafePointer<Double>, _ ny: Int,
                              _ d: Double) -> (Double, Double)
    {
        var i = 0, j = 0, position = 0
        var twiceRankSumX = 0, tie = 0.0
        while i < nx || j < ny {
            let value: Double
            if i < nx && (j >= ny || x[i] - d <= y[j]) { value = x[i] - d } else { value = y[j] }
            let firstX = i
            while i < nx && x[i] - d == value { i += 1 }
            let firstY = j
            while j < ny && y[j] == value { j += 1 }
            let countX = i - firstX, count = countX + j - firstY
            // Average rank of positions position+1 ... position+count.
            twiceRankSumX += countX * (2 * position + count + 1)
            let t = Double(count)  // Double: t^3 would overflow Int for millions of tied samples
            tie += t * t * t - t
            position += count
        }
        return (Double(twiceRankSumX) / 2, tie)
    }
}

/// Per-metric verdict like Kayenta: High / Low / Pass with the effect size, plus our Inconclusive for
/// too little data. Carries its inputs and statistics so `slipway explain` can show why.
public struct MetricComparison: Sendable, Equatable, Codable {
    public enum Verdict: String, Sendable, Codable { case pass, high, low, inconclusive }
    public var verdict: Verdict
    /// A human sentence with the numbers that decided the verdict.
    public var reason: String
    public var canaryCount: Int
    public var baselineCount: Int
    public var canaryMean: Double
    public var baselineMean: Double
    /// Mean ratio canary/baseline (kept finite: see Statistics.ratio).
    public var effectSize: Double
    public var pValue: Double?
    public var lowerConfidence: Double?
    public var upperConfidence: Double?
    public var estimate: Double?

    public init(verdict: Verdict, reason: String, canaryCount: Int, baselineCount: Int, canaryMean: Double,
                baselineMean: Double, effectSize: Double, pValue: Double? = nil, lowerConfidence: Double? = nil,
                upperConfidence: Double? = nil, estimate: Double? = nil) {
        self.verdict = verdict
        self.reason = reason
        self.canaryCount = canaryCount
        self.baselineCount = baselineCount
        self.canaryMean = canaryMean
        self.baselineMean = baselineMean
        self.effectSize = effectSize
        self.pValue = pValue
        self.lowerConfidence = lowerConfidence
        self.upperConfidence = upperConfidence
        self.estimate = estimate
    }
}

/// Kayenta's defaults: 98% confidence, tolerance 0.25 of |estimate|, no effect-size gate.
public struct LatencyComparisonConfig: Sendable, Equatable, Codable {
    /// Which way is bad: latency is bad when it increases; throughput when it decreases.
    public enum Direction: String, Sendable, Codable { case increase, decrease, either }

    public var confidenceLevel = 0.98
    /// High only when the CI's lower end exceeds tolerance * |estimate| (Kayenta's critical value), so a
    /// shift that is significant but small relative to its own size does not fail a rollout.
    public var tolerance = 0.25
    /// Effect size ratio (canary mean / baseline mean) needed for High, e.g. 1.1 = +10 %.
    public var allowedIncrease = 1.0
    /// Ratio at or below which a significant decrease is Low (Kayenta's mirror of allowedIncrease).
    public var allowedDecrease = 1.0
    /// Fewer finite samples than this on either side is Inconclusive rather than a guess.
    public var minimumSamples = 50
    public var direction: Direction = .increase

    public init(confidenceLevel: Double = 0.98, tolerance: Double = 0.25, allowedIncrease: Double = 1.0,
                allowedDecrease: Double = 1.0, minimumSamples: Int = 50, direction: Direction = .increase) {
        self.confidenceLevel = confidenceLevel
        self.tolerance = tolerance
        self.allowedIncrease = allowedIncrease
        self.allowedDecrease = allowedDecrease
        self.minimumSamples = minimumSamples
        self.direction = direction
    }
}

public enum LatencyComparison {
    /// Kayenta's MannWhitneyClassifier on samples (e.g. request latencies in ms) of canary vs baseline.
    public static func compare(canary: [Double], baseline: [Double], config: LatencyComparisonConfig = .init())
        -> MetricComparison
    {
        let fmt = Statistics.format
        let x = Statistics.sortedFinite(canary)
        let y = Statistics.sortedFinite(baseline)
        let dropped = (canary.count - x.count, baseline.count - y.count)
        let canaryMean = Statistics.mean(x), baselineMean = Statistics.mean(y)
        let effect = Statistics.ratio(canaryMean, baselineMean)
        var notes: [String] = []
        if dropped.0 + dropped.1 > 0 {
            notes.append("ignored \(dropped.0) canary and \(dropped.1) baseline non-finite values (NaN/inf)")
        }
        let counts = "\(x.count) canary / \(y.count) baseline samples"
        let means = "mean \(fmt(canaryMean)) vs \(fmt(baselineMean)) (ratio \(fmt(effect)))"
        func result(_ verdict: MetricComparison.Verdict, _ sentence: String, _ mw: MannWhitneyResult? = nil)
            -> MetricComparison
        {
            let reason = ([sentence] + notes).joined(separator: "; ")
            return MetricComparison(verdict: verdict, reason: reason, canaryCount: x.count, baselineCount: y.count,
                                    canaryMean: canaryMean, baselineMean: baselineMean, effectSize: effect,
                                    pValue: mw?.pValue, lowerConfidence: mw?.lowerConfidence,
                                    upperConfidence: mw?.upperConfidence, estimate: mw?.estimate)
        }

        let minimum = max(1, config.minimumSamples)
        guard x.count >= minimum, y.count >= minimum else {
            return result(.inconclusive, "Inconclusive: too little data, \(counts) (need at least \(minimum) each)")
        }
        guard config.confidenceLevel > 0, config.confidenceLevel < 1, config.tolerance.isFinite,
              config.tolerance >= 0
        else {
            return result(.inconclusive, "Inconclusive: invalid configuration (confidence level "
                + "\(fmt(config.confidenceLevel)), tolerance \(fmt(config.tolerance)))")
        }
        if x == y {
            return result(.pass, "Pass: canary and baseline samples are identical, \(counts)")
        }
        guard let mw = MannWhitney.test(sortedCanary: x, sortedBaseline: y, confidenceLevel: config.confidenceLevel)
        else {
            return result(.pass, "Pass: every value is equal (\(fmt(x[0]))), \(counts)")
        }
        let level = fmt(config.confidenceLevel * 100) + "%"
        let critical = config.tolerance * abs(mw.estimate)
        let ci = "\(level) CI of the shift [\(fmt(mw.lowerConfidence)), \(fmt(mw.upperConfidence))], "
            + "estimate \(fmt(mw.estimate)), p = \(fmt(mw.pValue))"
        let significantHigh = mw.lowerConfidence > critical
        let significantLow = mw.upperConfidence < -critical
        let watchHigh = config.direction != .decrease, watchLow = config.direction != .increase

        if watchHigh && significantHigh {
            if effect >= config.allowedIncrease {
                return result(.high, "High: canary is higher than baseline — \(ci); the CI lies above "
                    + "\(fmt(config.tolerance)) x |estimate| = \(fmt(critical)); \(means) >= allowed "
                    + "\(fmt(config.allowedIncrease)); \(counts)", mw)
            }
            return result(.pass, "Pass: canary is significantly higher (\(ci)) but the \(means) is below the "
                + "allowed increase \(fmt(config.allowedIncrease)); \(counts)", mw)
        }
        if watchLow && significantLow {
            if effect <= config.allowedDecrease {
                return result(.low, "Low: canary is lower than baseline — \(ci); the CI lies below "
                    + "-\(fmt(config.tolerance)) x |estimate| = \(fmt(-critical)); \(means) <= allowed "
                    + "\(fmt(config.allowedDecrease)); \(counts)", mw)
            }
            return result(.pass, "Pass: canary is significantly lower (\(ci)) but the \(means) is above the "
                + "allowed decrease \(fmt(config.allowedDecrease)); \(counts)", mw)
        }
        var sentence = "Pass: no significant difference — \(ci); critical value \(fmt(config.tolerance)) x "
            + "|estimate| = \(fmt(critical)); \(means); \(counts)"
        if significantHigh || significantLow {
            let way = significantHigh ? "higher" : "lower"
            sentence = "Pass: canary is significantly \(way), which is not bad for a metric watched for "
                + "\(config.direction.rawValue) — \(ci); \(means); \(counts)"
        }
        return result(.pass, sentence, mw)
    }
}

extension Statistics {
    /// Compact number for reasons (4 significant digits); the finite stand-ins for infinity print as inf.
    public static func format(_ value: Double) -> String {
        if value == .greatestFiniteMagnitude { return "inf" }
        if value == -.greatestFiniteMagnitude { return "-inf" }
        return String(format: "%.4g", value)
    }
}
