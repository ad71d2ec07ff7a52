"""The report's statistics: 95% intervals of a mean over seeds (Student's t) and of a proportion (Wilson)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

Z95 = 1.959963984540054
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t (table to 30, Cornish-Fisher expansion beyond: error < 1e-4)."""
    if df < 1:
        raise ValueError(f"t needs at least 1 degree of freedom, got {df}")
    if df <= len(T95):
        return T95[df - 1]
    z = Z95
    g = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def mean_interval(values) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean (NaN bounds for fewer than two values)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna())
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def wilson_interval(p: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p observed on n trials."""
    if not (n and n > 0) or p is None or math.isnan(p):
        return math.nan, math.nan
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_band(frame: pd.DataFrame, *, by: str, value: str) -> pd.DataFrame:
    """Mean and 95% t-interval of `value` across seeds at each `by` (epoch, N): columns by, mean, low, high, count."""
    stats = frame.groupby(by)[value].agg(["mean", "std", "count"]).reset_index()
    half = np.array(
        [
            t_quantile(int(n) - 1) * sd / math.sqrt(n) if n > 1 else math.nan
            for sd, n in zip(stats["std"], stats["count"], strict=True)
        ]
    )
    return stats.assign(low=stats["mean"] - half, high=stats["mean"] + half)[[by, "mean", "low", "high", "count"]]


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def t_test(values, null: float = 0.0) -> float:
    """Two-sided p-value of the one-sample Student t-test of mean(values) = null (NaN for fewer than two values)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna())
    if len(x) < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    if sd == 0:
        return 1.0 if x.mean() == null else 0.0
    t = (float(x.mean()) - null) / (sd / math.sqrt(len(x)))
    df = len(x) - 1
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))
