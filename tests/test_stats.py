"""Fisher's exact test and Clopper-Pearson bounds, against known values and exact arithmetic.

Known values (hand-computed from the hypergeometric distribution, agree with R's
fisher.test and scipy.stats.fisher_exact):
- [[3, 7], [0, 10]]: P(table) for a = 0..3 is 120, 450, 450, 120 over C(20, 3) = 1140, so the
  two-sided p = (120 + 120) / 1140 = 0.210526...
- [[8, 2], [0, 10]]: the two extreme tables each have 45 / C(20, 8) = 45 / 125970, so
  p = 90 / 125970 = 0.000714...
Clopper-Pearson one-sided 95% upper bounds: 0/10 -> 1 - 0.05 ** 0.1 = 0.258866;
1/10 -> the p with P(X <= 1) = 0.05, 0.394163.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.stats import binomial_cdf, clopper_pearson_upper, fisher_exact_two_sided


@pytest.mark.parametrize(
    ("table", "p"),
    [
        ((3, 7, 0, 10), 240 / 1140),
        ((8, 2, 0, 10), 90 / 125970),
        ((0, 10, 0, 10), 1.0),  # no failures on either side
        ((5, 5, 5, 5), 1.0),  # identical rows
        ((10, 0, 0, 10), 2 / comb(20, 10)),
        ((1, 0, 0, 1), 1.0),
        ((0, 0, 0, 0), 1.0),
    ],
)
def test_fisher_known_values(table: tuple[int, int, int, int], p: float) -> None:
    assert fisher_exact_two_sided(*table) == pytest.approx(p, rel=1e-9)


def test_fisher_known_values_rounded() -> None:
    assert round(fisher_exact_two_sided(3, 7, 0, 10), 4) == 0.2105
    assert round(fisher_exact_two_sided(8, 2, 0, 10), 6) == 0.000714


def exact_fisher(a: int, b: int, c: int, d: int) -> Fraction:
    """Two-sided Fisher p by exact rational arithmetic (the sum of all tables with the same
    margins that are no more likely than the observed one)."""
    row1, row2, col1 = a + b, c + d, a + c
    total = comb(row1 + row2, col1)
    probs = {
        x: Fraction(comb(row1, x) * comb(row2, col1 - x), total)
        for x in range(max(0, col1 - row2), min(row1, col1) + 1)
    }
    return sum((q for q in probs.values() if q <= probs[a]), Fraction(0))


counts = st.integers(0, 40)


@settings(max_examples=300, deadline=None)
@given(counts, counts, counts, counts)
def test_fisher_matches_exact_arithmetic(a: int, b: int, c: int, d: int) -> None:
    if a + b + c + d == 0:
        return
    p = fisher_exact_two_sided(a, b, c, d)
    assert 0.0 < p <= 1.0
    assert p == pytest.approx(float(exact_fisher(a, b, c, d)), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(counts, counts, counts, counts)
def test_fisher_is_symmetric(a: int, b: int, c: int, d: int) -> None:
    p = fisher_exact_two_sided(a, b, c, d)
    assert fisher_exact_two_sided(c, d, a, b) == pytest.approx(p)  # swap the variants
    assert fisher_exact_two_sided(b, a, d, c) == pytest.approx(p)  # swap failed/passed


def test_fisher_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        fisher_exact_two_sided(-1, 2, 3, 4)


def test_fisher_more_iterations_give_a_smaller_p() -> None:
    """A 30% failure rate against 0%: more iterations, stronger evidence."""
    assert (
        fisher_exact_two_sided(3, 7, 0, 10)
        > fisher_exact_two_sided(6, 14, 0, 20)
        > fisher_exact_two_sided(30, 70, 0, 100)
    )
    assert fisher_exact_two_sided(30, 70, 0, 100) < 1e-6


# --- Clopper-Pearson ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "n", "upper"),
    [
        (0, 10, 0.258866),
        (1, 10, 0.394163),
        (0, 100, 0.029513),
        (0, 1, 0.95),
        (5, 10, 0.777559),
    ],
)
def test_clopper_pearson_known_values(failures: int, n: int, upper: float) -> None:
    assert clopper_pearson_upper(failures, n) == pytest.approx(upper, abs=2e-6)


@pytest.mark.parametrize(("failures", "n"), [(0, 0), (3, 3), (4, 3), (0, -1)])
def test_clopper_pearson_degenerate(failures: int, n: int) -> None:
    assert clopper_pearson_upper(failures, n) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_clopper_pearson_bound_has_tail_probability_alpha(case: tuple[int, int]) -> None:
    failures, n = case
    upper = clopper_pearson_upper(failures, n)
    assert failures / n < upper < 1.0
    assert binomial_cdf(failures, n, upper) == pytest.approx(0.05, abs=1e-6)


def test_clopper_pearson_confidence_and_monotonicity() -> None:
    assert clopper_pearson_upper(1, 10, confidence=0.99) > clopper_pearson_upper(1, 10)
    assert clopper_pearson_upper(0, 20) < clopper_pearson_upper(0, 10)
    assert clopper_pearson_upper(2, 10) > clopper_pearson_upper(1, 10)
    # the rule of three: 0 in n gives about 3 / n at 95%
    assert clopper_pearson_upper(0, 300) == pytest.approx(3 / 300, rel=0.01)


def test_binomial_cdf() -> None:
    assert binomial_cdf(0, 10, 0.5) == pytest.approx(1 / 1024)
    assert binomial_cdf(10, 10, 0.3) == pytest.approx(1.0)
    assert binomial_cdf(1, 2, 0.5) == pytest.approx(0.75)
