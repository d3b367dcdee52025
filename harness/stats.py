"""The statistics of a stock-versus-patched comparison, in the standard library only.

- Fisher's exact test (two-sided) on the 2x2 table of iterations with and without a failure
  per variant: how likely a difference this large is if both variants failed alike.
- Clopper-Pearson exact binomial confidence bounds: with 0 failures in n iterations the
  95% upper bound on the failure rate is 1 - 0.05 ** (1 / n) (about 3 / n).
"""

from __future__ import annotations

from math import comb


def fisher_exact_two_sided(a: int, b: int, c: int, d: int) -> float:
    """p-value for the table [[a, b], [c, d]] (rows: variants; columns: failed, passed)."""
    if min(a, b, c, d) < 0:
        raise ValueError("counts must be >= 0")
    row1, row2, col1 = a + b, c + d, a + c
    total = row1 + row2
    if total == 0:
        return 1.0

    def probability(x: int) -> float:
        return comb(row1, x) * comb(row2, col1 - x) / comb(total, col1)

    observed = probability(a)
    low, high = max(0, col1 - row2), min(row1, col1)
    p = sum(probability(x) for x in range(low, high + 1) if probability(x) <= observed * (1 + 1e-9))
    return min(1.0, p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, k + 1))


def clopper_pearson_upper(failures: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound on the failure rate after ``failures`` in ``n`` trials."""
    if n <= 0:
        return 1.0
    if failures >= n:
        return 1.0
    alpha = 1 - confidence
    if failures == 0:
        return float(1 - alpha ** (1 / n))
    low, high = failures / n, 1.0
    for _ in range(100):  # bisection: the p where P(X <= failures) = alpha
        mid = (low + high) / 2
        if binomial_cdf(failures, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high
