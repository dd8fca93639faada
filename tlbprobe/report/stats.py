"""Small statistics for repeats: spread, confidence interval, Welch's t-test, LKP's overlap rule.

Written out here because scipy is not a dependency: Student's t distribution comes from
the regularised incomplete beta function (continued fraction, modified Lentz), which is
accurate to ~1e-12 for the degrees of freedom repeats give (1..100s).

Why both a t-test and an overlap rule: mmtests marks a change by a t-test, LKP's compare
only when the [min, max] ranges of the two sides do not overlap. With 3-5 repeats either
alone is easy to fool (a t-test by one outlier-free but tiny-variance side, the overlap
rule by one outlier), so a change is called significant only when both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple

#: Two-sided level for Welch's t-test and the confidence interval.
ALPHA = 0.05


@dataclass(frozen=True)
class Spread:
    """Location and spread of one figure over the repeats of a run."""

    n: int
    mean: float
    median: float
    min: float
    max: float
    sd: Optional[float]  # sample standard deviation, None with one value
    ci95: Optional[Tuple[float, float]]  # t-interval for the mean, only with 3 or more values

    @property
    def ci_half(self) -> Optional[float]:
        return None if self.ci95 is None else (self.ci95[1] - self.ci95[0]) / 2


def describe(values: Sequence[float]) -> Optional[Spread]:
    """Spread of ``values``; None when there are none (a run without finished repeats)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    s = sorted(xs)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    ci = None
    if n >= 3 and sd is not None:
        half = t_ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
    return Spread(n, mean, median, s[0], s[-1], sd, ci)


@dataclass(frozen=True)
class Welch:
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Optional[Welch]:
    """Welch's unequal-variance t-test, two-sided. None when either side has < 2 values.

    Both sides constant: p = 1 when the means are equal and 0 otherwise (a deterministic
    difference, e.g. 384 collapses against 0).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = describe(a), describe(b)
    assert sa is not None and sb is not None and sa.sd is not None and sb.sd is not None
    va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
    diff = sa.mean - sb.mean
    if va + vb == 0:
        return Welch(0.0 if diff == 0 else math.copysign(math.inf, diff), float(sa.n + sb.n - 2), 1.0 if diff == 0 else 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 / (sa.n - 1) if va else 0.0) + (vb**2 / (sb.n - 1) if vb else 0.0))
    return Welch(t, df, 2 * t_sf(abs(t), df))


def ranges_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """LKP's rule: a change counts only when [min, max] of the two sides are disjoint."""
    return not (max(a) < min(b) or max(b) < min(a))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2, 0.5, x)
    return tail if t >= 0 else 1 - tail


def t_cdf(t: float, df: float) -> float:
    return 1 - t_sf(t, df)


@lru_cache(maxsize=512)
def t_ppf(p: float, df: float) -> float:
    """The t quantile: solve t_cdf(t) = p by bisection (monotone, ~45 steps to 1e-12).

    Memoised: a report asks for the same (0.975, n-1) once per figure and run.
    """
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b), modified Lentz's method."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h
