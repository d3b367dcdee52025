"""The statistics of a stock-versus-patched comparison: the project's thin entry to scipy.stats.

Everything here is about counts of iterations that failed (the EOD race) out of iterations
run, per variant; rates are fractions in [0, 1].

- Fisher's exact test on the 2x2 table [[a, b], [c, d]] (rows: stock, patched; columns:
  failed, passed): ``scipy.stats.fisher_exact``, two-sided and one-sided ("greater": the
  stock failure rate is above the patched one).
- Clopper-Pearson exact one-sided upper bound on a failure rate:
  ``scipy.stats.binomtest(...).proportion_ci(method="exact")`` with ``alternative="less"``
  (with 0 failures in n the 95% bound is 1 - 0.05 ** (1 / n), about 3 / n), and the
  two-sided exact interval of a hit rate (the HTML pages' whiskers).
- The exact power of the one-sided Fisher test with n iterations per variant at given true
  rates, and the smallest n that reaches a wanted power (no library computes this for
  Fisher's test: it sums the two binomial distributions over the test's rejection region,
  whose p-values come from the hypergeometric distribution, in log space with
  ``scipy.special.gammaln``).

Importing this module imports scipy (about 1 s on the host). Only the host's ``compare``
uses it; nothing the guest runs imports it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaln
from scipy.stats import binom, binomtest, fisher_exact

DEFAULT_POWER = 0.8
MAX_ITERATIONS_SEARCHED = 2000  # per variant; iterations_for_power gives up above it


def _table(a: int, b: int, c: int, d: int) -> NDArray[np.int64]:
    if min(a, b, c, d) < 0:
        raise ValueError("counts must be >= 0")
    return np.array([[a, b], [c, d]], dtype=np.int64)


def fisher_exact_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher p-value for [[a, b], [c, d]] (rows: variants; columns: failed, passed).

    The probability, with both variants failing alike, of a table with these margins no more
    likely than the observed one. 1.0 for an empty table. Raises ValueError on a negative
    count. Source: ``scipy.stats.fisher_exact(alternative="two-sided")``.
    """
    table = _table(a, b, c, d)
    if a + b + c + d == 0:
        return 1.0
    return min(1.0, float(fisher_exact(table, alternative="two-sided").pvalue))


def fisher_exact_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher p-value: evidence that row 1 fails more often than row 2.

    For [[a, b], [c, d]] (rows: stock, patched; columns: failed, passed) it is
    P(X >= a) for X hypergeometric with the table's margins: how likely, with equal failure
    rates, the stock variant would hold at least ``a`` of the ``a + c`` failures. 1.0 for an
    empty table. Raises ValueError on a negative count. Source:
    ``scipy.stats.fisher_exact(alternative="greater")``.
    """
    table = _table(a, b, c, d)
    if a + b + c + d == 0:
        return 1.0
    return min(1.0, float(fisher_exact(table, alternative="greater").pvalue))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p) (``scipy.stats.binom.cdf``)."""
    return float(binom.cdf(k, n, p))


def clopper_pearson_upper(failures: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on the failure rate after ``failures`` in ``n`` trials.

    A fraction in [0, 1]: the true rate is below it with probability ``confidence``
    (Clopper-Pearson, exact). 1.0 when ``n <= 0`` or ``failures >= n`` (nothing to bound).
    Source: ``scipy.stats.binomtest(failures, n, alternative="less")
    .proportion_ci(confidence, method="exact")``.
    """
    if n <= 0 or failures >= n:
        return 1.0
    if failures < 0:
        raise ValueError("failures must be >= 0")
    interval = binomtest(failures, n, alternative="less").proportion_ci(
        confidence_level=confidence, method="exact"
    )
    return float(interval.high)


def clopper_pearson_interval(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) confidence interval of a rate: ``hits`` in ``n``.

    Returns (low, high), fractions in [0, 1]; (0.0, 1.0) when ``n <= 0``. Raises ValueError
    when ``hits`` is negative or above ``n``. Source: ``scipy.stats.binomtest(hits, n)
    .proportion_ci(confidence, method="exact")``.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= hits <= n:
        raise ValueError(f"hits must be in [0, {n}], not {hits}")
    interval = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def _log_comb(n: int) -> NDArray[np.float64]:
    """log C(n, k) for k = 0..n."""
    k = np.arange(n + 1, dtype=np.float64)
    # np.asarray: scipy-stubs 1.18 types the scalar-minus-array expression as np.float64
    # (mypy failed on a fresh install, 2026-12-07); at run time it is an array either way.
    return np.asarray(gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0), dtype=np.float64)


def _smallest_rejecting_failures(n: int, alpha: float) -> int | None:
    """The fewest stock failures that reject at ``alpha`` with n per variant and 0 patched ones.

    With 0 patched failures the one-sided p-value of x stock failures is C(n, x) / C(2n, x);
    a patched failure only raises it, so no table with fewer stock failures rejects.
    """
    p_value = 1.0
    for x in range(1, n + 1):
        p_value *= (n - x + 1) / (2 * n - x + 1)
        if p_value < alpha:
            return x
    return None


def fisher_power_greater(rate_stock: float, rate_patched: float, n: int, alpha: float) -> float:
    """Power of the one-sided Fisher test (reject when p < alpha) with ``n`` iterations per
    variant, when the true failure rates are ``rate_stock`` and ``rate_patched`` (fractions).

    Returns a probability in [0, 1]: the chance that the test calls the stock rate higher.
    Exact: sums P(X1 = x1) P(X2 = x2) (independent binomials) over every table whose
    hypergeometric p-value P(X >= x1 | x1 + x2 failures in all) is below ``alpha``.
    Raises ValueError on a rate outside [0, 1], ``n < 1`` or ``alpha`` outside (0, 1).
    """
    for rate in (rate_stock, rate_patched):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate {rate} is not in [0, 1]")
    if n < 1:
        raise ValueError("n must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is not in (0, 1)")
    log_comb_n = _log_comb(n)
    log_comb_2n = _log_comb(2 * n)
    x1 = np.arange(n + 1)[:, None]  # stock failures
    total = np.arange(2 * n + 1)[None, :]  # failures in both variants
    x2 = total - x1
    valid = (x2 >= 0) & (x2 <= n)
    x2_safe = np.clip(x2, 0, n)
    # P(X1 = x1 | total failures) under equal rates: hypergeometric, rows x1, columns total.
    log_conditional = log_comb_n[x1] + log_comb_n[x2_safe] - log_comb_2n[total]
    conditional = np.where(valid, np.exp(log_conditional), 0.0)
    # p-value of (x1, total): the upper tail, summed from the largest x1 down (small terms
    # first, so the tails that matter keep their precision).
    p_values = np.cumsum(conditional[::-1, :], axis=0)[::-1, :]
    reject = valid & (p_values < alpha)
    pmf_stock = binom.pmf(np.arange(n + 1), n, rate_stock)
    pmf_patched = binom.pmf(np.arange(n + 1), n, rate_patched)
    joint = pmf_stock[x1] * pmf_patched[x2_safe]
    return float(min(1.0, np.sum(np.where(reject, joint, 0.0))))


def iterations_for_power(
    rate_stock: float,
    rate_patched: float,
    alpha: float,
    power: float = DEFAULT_POWER,
    max_n: int = MAX_ITERATIONS_SEARCHED,
) -> int | None:
    """The smallest number of iterations per variant at which the one-sided Fisher test at
    ``alpha`` has at least ``power`` when the true failure rates are the given fractions.

    Scans n = 1, 2, ... (the power of an exact test is a sawtooth in n, so the first n that
    reaches the power is the answer, not a bisection's). Returns None when no n up to
    ``max_n`` reaches it: always when ``rate_stock <= rate_patched`` (then the power stays at
    most ``alpha``), or when the rates are too close for ``max_n``. Raises ValueError like
    ``fisher_power_greater``.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power {power} is not in (0, 1)")
    if rate_stock <= rate_patched:
        return None
    for n in range(1, max_n + 1):
        smallest = _smallest_rejecting_failures(n, alpha)
        if smallest is None:
            continue
        # An upper bound on the power, cheap: no table with fewer stock failures rejects.
        if float(binom.sf(smallest - 1, n, rate_stock)) < power:
            continue
        if fisher_power_greater(rate_stock, rate_patched, n, alpha) >= power:
            return n
    return None
