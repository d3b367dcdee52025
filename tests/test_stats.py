"""Fisher's exact test, Clopper-Pearson bounds and the power of the one-sided test, against
known values and exact arithmetic (harness.analysis.stats wraps scipy.stats; these pin its meaning).

Known values (hand-computed from the hypergeometric distribution, agree with R's
fisher.test and scipy.stats.fisher_exact):
- [[3, 7], [0, 10]]: P(table) for a = 0..3 is 120, 450, 450, 120 over C(20, 3) = 1140, so the
  two-sided p = (120 + 120) / 1140 = 0.210526...
- [[8, 2], [0, 10]]: the two extreme tables each have 45 / C(20, 8) = 45 / 125970, so
  p = 90 / 125970 = 0.000714...
- one-sided ("stock fails more"), [[4, 16], [0, 20]]: P(all 4 failures in the stock row)
  = C(20, 4) / C(40, 4) = 4845 / 91390 = 0.053015; [[9, 1], [0, 10]]: 10 / C(20, 9) =
  10 / 167960; [[6, 14], [0, 20]]: C(20, 6) / C(40, 6) = 38760 / 3838380 = 0.010098.
Clopper-Pearson one-sided 95% upper bounds: 0/10 -> 1 - 0.05 ** 0.1 = 0.258866;
1/10 -> the p with P(X <= 1) = 0.05, 0.394163.
Power with a patched rate of 0: only tables with no patched failure can occur, and with n per
variant x stock failures reject at alpha iff C(n, x) / C(2n, x) < alpha, so the power is a
binomial tail: n = 20, alpha = 0.01 rejects from x = 6 on (C(20,6)/C(40,6) = 0.0101 does not,
C(20,7)/C(40,7) = 0.00414 does: x >= 7), power = P(Binomial(20, 0.2) >= 7) = 0.0867.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.stats import (
    binomial_cdf,
    clopper_pearson_interval,
    clopper_pearson_upper,
    fisher_exact_greater,
    fisher_exact_two_sided,
    fisher_power_greater,
    iterations_for_power,
)


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


def test_clopper_pearson_two_sided_interval() -> None:
    """Closed forms at the ends (0 or n hits: 0.025 ** (1 / n)) and a textbook value."""
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025**0.1))
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025**0.1, 1.0))
    assert clopper_pearson_interval(2, 10) == pytest.approx((0.025211, 0.556095), abs=2e-6)
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="hits"):
        clopper_pearson_interval(11, 10)


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


# --- one-sided Fisher -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "p"),
    [
        ((4, 16, 0, 20), comb(20, 4) / comb(40, 4)),
        ((9, 1, 0, 10), 10 / comb(20, 9)),
        ((6, 14, 0, 20), comb(20, 6) / comb(40, 6)),
        ((0, 20, 0, 20), 1.0),
        ((0, 20, 3, 17), 1.0),  # the patched variant failing more is no evidence at all
        ((0, 0, 0, 0), 1.0),
    ],
)
def test_fisher_greater_known_values(table: tuple[int, int, int, int], p: float) -> None:
    assert fisher_exact_greater(*table) == pytest.approx(p, rel=1e-9)


def exact_fisher_greater(a: int, b: int, c: int, d: int) -> Fraction:
    """P(X >= a) for X hypergeometric with the margins of [[a, b], [c, d]], exactly."""
    row1, row2, col1 = a + b, c + d, a + c
    total = comb(row1 + row2, col1)
    return sum(
        (
            Fraction(comb(row1, x) * comb(row2, col1 - x), total)
            for x in range(a, min(row1, col1) + 1)
        ),
        Fraction(0),
    )


@settings(max_examples=200, deadline=None)
@given(counts, counts, counts, counts)
def test_fisher_greater_matches_exact_arithmetic(a: int, b: int, c: int, d: int) -> None:
    if a + b + c + d == 0:
        return
    p = fisher_exact_greater(a, b, c, d)
    assert p == pytest.approx(float(exact_fisher_greater(a, b, c, d)), rel=1e-9)


def test_fisher_greater_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        fisher_exact_greater(1, -2, 3, 4)


# --- power and iterations needed ----------------------------------------------------------------


def brute_force_power(rate_stock: float, rate_patched: float, n: int, alpha: float) -> float:
    """Sum over every table of P(table) for the tables whose one-sided p is below alpha."""
    power = 0.0
    for x1 in range(n + 1):
        p1 = comb(n, x1) * rate_stock**x1 * (1 - rate_stock) ** (n - x1)
        for x2 in range(n + 1):
            if fisher_exact_greater(x1, n - x1, x2, n - x2) < alpha:
                power += p1 * comb(n, x2) * rate_patched**x2 * (1 - rate_patched) ** (n - x2)
    return power


@pytest.mark.parametrize(
    ("rates", "n", "alpha"),
    [((0.3, 0.1), 12, 0.05), ((0.5, 0.0), 9, 0.01), ((0.2, 0.2), 10, 0.05), ((0.9, 0.4), 7, 0.1)],
)
def test_power_matches_a_brute_force_sum(rates: tuple[float, float], n: int, alpha: float) -> None:
    expected = brute_force_power(*rates, n, alpha)
    assert fisher_power_greater(*rates, n, alpha) == pytest.approx(expected, abs=1e-12)


def test_power_with_no_patched_failures_is_a_binomial_tail() -> None:
    # n = 20, alpha = 0.01: 7 stock failures and none patched is the least that rejects
    assert fisher_exact_greater(6, 14, 0, 20) >= 0.01 > fisher_exact_greater(7, 13, 0, 20)
    tail = 1 - binomial_cdf(6, 20, 0.2)
    assert fisher_power_greater(0.2, 0.0, 20, 0.01) == pytest.approx(tail, rel=1e-9)
    assert round(tail, 4) == 0.0867


def test_power_under_equal_rates_is_at_most_alpha() -> None:
    for rate in (0.05, 0.3, 0.7):
        for n in (5, 20, 40):
            assert fisher_power_greater(rate, rate, n, 0.05) <= 0.05


def test_power_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        fisher_power_greater(1.5, 0.0, 10, 0.01)
    with pytest.raises(ValueError, match="n must"):
        fisher_power_greater(0.5, 0.0, 0, 0.01)
    with pytest.raises(ValueError, match="alpha"):
        fisher_power_greater(0.5, 0.0, 10, 0.0)
    with pytest.raises(ValueError, match="power"):
        iterations_for_power(0.5, 0.0, 0.01, power=1.0)


@pytest.mark.parametrize(
    ("rates", "alpha", "needed"),
    [
        ((0.2, 0.0), 0.01, 44),  # 4/20 vs 0/20, the case that started this
        ((0.3, 0.0), 0.01, 29),
        ((0.05, 0.0), 0.01, 180),
        ((0.9, 0.0), 0.01, 6),
        ((0.3, 0.05), 0.01, 49),
    ],
)
def test_iterations_for_power_is_the_first_n_with_80_percent(
    rates: tuple[float, float], alpha: float, needed: int
) -> None:
    assert iterations_for_power(*rates, alpha) == needed
    assert fisher_power_greater(*rates, needed, alpha) >= 0.8
    # the first: no smaller n reaches it (the power is a sawtooth, so check them all)
    assert all(fisher_power_greater(*rates, n, alpha) < 0.8 for n in range(1, needed))


def test_no_iterations_decide_equal_or_reversed_rates() -> None:
    assert iterations_for_power(0.0, 0.0, 0.01) is None
    assert iterations_for_power(0.2, 0.2, 0.01) is None
    assert iterations_for_power(0.1, 0.3, 0.01) is None
    assert iterations_for_power(0.02, 0.0, 0.01, max_n=100) is None  # needs 453
