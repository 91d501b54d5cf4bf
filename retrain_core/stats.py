"""Small-sample statistics for comparing conditions across seeds, without scipy.

Student t quantiles come from the regularised incomplete beta function (continued
fraction, Numerical Recipes §6.4), so intervals are exact to ~1e-10 at any seed count;
tests check them against scipy. The bootstrap uses numpy with a fixed seed, so the same
campaign always prints the same interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05          # two-sided: every interval is a 95% interval
POWER = 0.80          # for the minimum detectable effect
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t (bisection on the cdf: 200 halvings are plenty)."""
    if not 0.0 < p < 1.0 or df <= 0:
        return math.nan
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2.0

    def excludes_zero(self) -> bool:
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {"mean": _num(self.mean), "low": _num(self.low), "high": _num(self.high), "n": self.n}


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def t_interval(values: list[float]) -> Interval:
    """Mean and two-sided 95% Student t interval; the bounds are nan below two values."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_ppf(1 - ALPHA / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Interval:
    """Percentile bootstrap 95% interval of the mean (seeded: reproducible)."""
    n = len(values)
    if n < 2:
        mean = statistics.fmean(values) if values else math.nan
        return Interval(mean, math.nan, math.nan, n)
    data = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = data[idx].mean(axis=1)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return Interval(float(data.mean()), float(low), float(high), n)


def min_detectable_effect(values: list[float]) -> float:
    """Smallest true mean difference a paired t test at `ALPHA` (two-sided) detects with
    probability `POWER` given these differences' spread and count:
    (t_{1-α/2,n-1} + t_{power,n-1}) · sd / √n (the usual shifted-t approximation)."""
    n = len(values)
    if n < 2:
        return math.nan
    df = n - 1
    return (t_ppf(1 - ALPHA / 2, df) + t_ppf(POWER, df)) * statistics.stdev(values) / math.sqrt(n)
