#!/usr/bin/env python3
"""Reference vectors for CanaryStatisticsTests, computed with SciPy.

Regenerate with:  python3 make_vectors.py  (writes vectors.json next to this file)

Mann-Whitney follows the shared canary fixtures README (../shared/fixtures/canary/README.md next to the
repository; Kayenta's port of R's
wilcox.test(conf.int=TRUE, exact=FALSE, correct=TRUE)): average-tie ranks of concat(x - d, y),
wdiff(d, zq) = (dz - 0.5*sign(dz))/sigma - zq, search interval [min(x)-max(y), max(x)-min(y)], a bound
returned as is when wdiff does not change sign inside, else brentq(xtol=1e-4); CI = [root(+z), root(-z)],
z = norm.ppf(1 - alpha/2); estimate = root of wdiff(., 0). The p-value is SciPy's own
mannwhitneyu(method="asymptotic", use_continuity=True, alternative="two-sided").

Count tests: scipy.stats.fisher_exact(alternative="greater") and a hand-written (statsmodels-free)
one-sided two-proportion z-test with pooled variance and R prop.test's continuity correction.
"""
import json
import os

import numpy as np
import scipy
from scipy import optimize, stats

HERE = os.path.dirname(os.path.abspath(__file__))


def wdiff(d, zq, x, y):
    nx, ny = len(x), len(y)
    r = stats.rankdata(np.concatenate([x - d, y]), method="average")
    _, t = np.unique(r, return_counts=True)
    tie = float(np.sum(t.astype(float) ** 3 - t))
    n = float(nx + ny)
    dz = float(np.sum(r[:nx])) - nx * (nx + 1) / 2 - nx * ny / 2
    sigma = np.sqrt(nx * ny / 12 * ((n + 1) - tie / (n * (n - 1))))
    return (dz - 0.5 * np.sign(dz)) / sigma - zq


def root(zq, x, y):
    lo, hi = float(np.min(x) - np.max(y)), float(np.max(x) - np.min(y))
    if wdiff(lo, zq, x, y) <= 0:
        return lo
    if wdiff(hi, zq, x, y) >= 0:
        return hi
    return optimize.brentq(wdiff, lo, hi, args=(zq, x, y), xtol=1e-4)


def mann_whitney(name, x, y, conf):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    z = stats.norm.ppf(1 - (1 - conf) / 2)
    res = stats.mannwhitneyu(x, y, method="asymptotic", use_continuity=True, alternative="two-sided")
    return {
        "name": name,
        "canary": x.tolist(),
        "baseline": y.tolist(),
        "confidenceLevel": conf,
        "lower": root(z, x, y),
        "upper": root(-z, x, y),
        "estimate": root(0.0, x, y),
        "pValue": float(res.pvalue),
        "statistic": float(res.statistic),
    }


def mann_whitney_cases():
    rng = np.random.default_rng(20240604)
    cases = [mann_whitney("kayenta-readme", [10, 20, 30, 40], [1, 2, 3, 4], 0.95)]
    sizes = [(5, 5), (5, 8), (7, 6), (10, 10), (12, 20), (25, 25), (30, 17), (50, 50), (64, 80),
             (100, 100), (150, 120), (200, 200), (300, 300), (500, 500), (500, 350)]
    for i, (nx, ny) in enumerate(sizes):
        conf = 0.95 if i % 2 == 0 else 0.98
        # continuous normal, canary shifted by a fraction of the spread
        shift = [0.0, 0.3, 1.0][i % 3]
        x = rng.normal(100 + 10 * shift, 10, nx)
        y = rng.normal(100, 10, ny)
        cases.append(mann_whitney(f"normal-{nx}x{ny}-shift{shift}", x, y, conf))
        # lognormal latencies in ms, canary slower by a factor
        factor = [1.0, 1.1, 1.3][(i + 1) % 3]
        x = np.round(rng.lognormal(np.log(120), 0.5, nx) * factor, 3)
        y = np.round(rng.lognormal(np.log(120), 0.5, ny), 3)
        cases.append(mann_whitney(f"lognormal-{nx}x{ny}-x{factor}", x, y, 0.98 if i % 2 == 0 else 0.95))
    # heavy ties: whole-millisecond latencies from a narrow range, and small integer counts
    for i, (nx, ny) in enumerate([(6, 9), (20, 20), (40, 60), (100, 100), (250, 200)]):
        x = np.floor(rng.gamma(3, 2, nx) + (1 if i % 2 else 0))
        y = np.floor(rng.gamma(3, 2, ny))
        cases.append(mann_whitney(f"ties-{nx}x{ny}", x, y, [0.95, 0.98, 0.9][i % 3]))
        x = rng.poisson(2 + i % 2, nx).astype(float)
        y = rng.poisson(2, ny).astype(float)
        cases.append(mann_whitney(f"poisson-{nx}x{ny}", x, y, 0.98))
    # negative values and a clear decrease
    cases.append(mann_whitney("decrease-40x45", rng.normal(-5, 3, 40), rng.normal(0, 3, 45), 0.95))
    cases.append(mann_whitney("canary-constant", [7.0] * 12, rng.normal(7, 1, 15), 0.98))
    return cases


def fisher_cases():
    tables = [
        (3, 1000, 0, 1000), (5, 50, 0, 50), (20, 2000, 0, 2000), (1, 100, 0, 100), (0, 100, 0, 100),
        (0, 100, 5, 100), (10, 100, 10, 100), (2, 10, 1, 12), (7, 1500, 2, 1500), (90, 1500, 15, 1500),
        (15, 1500, 15, 1500), (40, 1500, 15, 1500), (1, 1, 0, 1), (4, 4, 0, 4), (100, 100, 0, 100),
        (100, 100, 100, 100), (3, 700, 9, 2100), (12, 300, 30, 900), (0, 5000, 1, 5000), (1, 5000, 0, 5000),
        (30, 20000, 18, 20000), (250, 10000, 200, 10000), (8, 120000, 1, 130000), (500, 1000, 480, 1000),
        (60, 3000, 40, 3000), (3, 40000, 0, 60000), (999, 1000, 990, 1000), (17, 250, 3, 5000),
        (2, 2500, 30, 2500), (45, 45000, 30, 45000),
    ]
    rows = []
    for a, n1, b, n2 in tables:
        table = [[a, n1 - a], [b, n2 - b]]
        p = stats.fisher_exact(table, alternative="greater").pvalue
        rows.append({"canaryErrors": a, "canaryTotal": n1, "baselineErrors": b, "baselineTotal": n2,
                     "pValue": float(p), "method": method(a, n1, b, n2)})
    return rows


def method(a, n1, b, n2):
    """The rule ErrorRateComparison.test uses to pick the test."""
    n, k = n1 + n2, a + b
    smallest_expected = min(n1, n2) * min(k, n - k) / n
    return "fisher-exact" if smallest_expected < 5 or min(n1, n2) <= 2000 else "two-proportion-z"


def two_proportion_z(a, n1, b, n2):
    """One-sided (canary greater) z-test, pooled variance, prop.test's Yates correction."""
    p1, p2 = a / n1, b / n2
    pooled = (a + b) / (n1 + n2)
    inverse_sum = 1 / n1 + 1 / n2
    variance = pooled * (1 - pooled) * inverse_sum
    if variance <= 0:
        return 1.0
    delta = p1 - p2
    yates = min(0.5, abs(delta) / inverse_sum)
    z = np.sign(delta) * (abs(delta) - yates * inverse_sum) / np.sqrt(variance)
    return float(stats.norm.sf(z))


def z_cases():
    tables = [
        (30, 20000, 18, 20000), (250, 10000, 200, 10000), (60, 3000, 40, 3000), (45, 45000, 30, 45000),
        (2, 2500, 30, 2500), (20, 2000, 0, 2000), (15, 1500, 15, 1500), (90, 1500, 15, 1500),
        (1000, 100000, 950, 100000), (10_000_000, 1_000_000_000, 9_990_000, 1_000_000_000),
        (5000, 400000, 4200, 500000), (12, 5000, 10, 6000),
    ]
    return [{"canaryErrors": a, "canaryTotal": n1, "baselineErrors": b, "baselineTotal": n2,
             "pValue": two_proportion_z(a, n1, b, n2)} for a, n1, b, n2 in tables]


def quantile_cases():
    ps = [1e-300, 1e-100, 1e-20, 1e-10, 1e-6, 1e-4, 0.001, 0.005, 0.01, 0.02, 0.02425, 0.025, 0.03, 0.05,
          0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.7, 0.9, 0.95, 0.975, 0.98, 0.99, 0.995, 0.999, 0.9999]
    return [{"p": p, "x": float(stats.norm.ppf(p))} for p in ps]


def rank_cases():
    rng = np.random.default_rng(7)
    vals = [[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [5.0, 2.0, 5.0, 2.0, 2.0, 9.0], [], [4.0],
            np.floor(rng.normal(10, 3, 40)).tolist(), rng.normal(0, 1, 25).tolist()]
    out = []
    for v in vals:
        r = stats.rankdata(v, method="average") if v else np.array([])
        _, t = np.unique(v, return_counts=True)
        out.append({"values": [float(u) for u in v], "ranks": r.tolist(),
                    "tieCorrection": float(np.sum(t.astype(float) ** 3 - t))})
    return out


def main():
    data = {
        "generator": "make_vectors.py",
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "normalQuantile": quantile_cases(),
        "ranks": rank_cases(),
        "mannWhitney": mann_whitney_cases(),
        "fisher": fisher_cases(),
        "twoProportionZ": z_cases(),
    }
    with open(os.path.join(HERE, "vectors.json"), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"{len(data['mannWhitney'])} Mann-Whitney, {len(data['fisher'])} Fisher, "
          f"{len(data['twoProportionZ'])} z, {len(data['normalQuantile'])} quantile cases")


if __name__ == "__main__":
    main()
