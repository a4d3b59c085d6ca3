import math

import numpy as np
import pytest

from aejax import stats


def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    # 4,000 samples of n = 16 from N(3, 2): the interval must contain 3 in ~95% of them. The count of
    # hits is Binomial(4000, 0.95): standard deviation 13.8, so [3740, 3860] is about +-4.3 of them.
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        s = stats.summarize(rng.normal(3.0, 2.0, size=16))
        hits += s["ci95_low"] <= 3.0 <= s["ci95_high"]
    assert 3740 <= hits <= 3860


def test_summary_of_known_values():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))
    # t(0.975, 3) = 3.182446; half width = t * s / sqrt(4).
    assert s["ci95_high"] - s["mean"] == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)


def test_nan_members_are_left_out_and_tiny_samples_have_no_interval():
    s = stats.summarize([1.0, np.nan, 3.0])
    assert s["n"] == 2 and s["mean"] == 2.0
    assert stats.summarize([5.0]) == {"mean": 5.0, "std": None, "ci95_low": None, "ci95_high": None, "n": 1}
    assert stats.summarize([np.nan])["n"] == 0


def test_standard_error():
    mean, error = stats.mean_and_standard_error([1.0, 3.0])
    assert mean == 2.0 and error == pytest.approx(math.sqrt(2) / math.sqrt(2))
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.mean_and_standard_error([1.0])


def test_a_paired_difference_is_far_tighter_than_either_mean_when_the_examples_spread():
    """Two models' bounds on the same 1,000 examples that share a spread of 20 nats: the paired
    difference's standard error is the differences' own (0.1 / sqrt(1000)), not the spread's."""
    rng = np.random.default_rng(0)
    first = 227.0 + 20.0 * rng.standard_normal(1000)
    second = first - 0.5 + 0.1 * rng.standard_normal(1000)
    paired = stats.paired_difference(first, second)
    differences = first - second
    assert paired["nats"] == pytest.approx(differences.mean(), rel=1e-12)
    assert paired["standard_error"] == pytest.approx(differences.std(ddof=1) / math.sqrt(1000), rel=1e-12)
    assert paired["standard_error"] < stats.mean_and_standard_error(second)[1] / 100
    assert paired["share_lower"] == 1.0  # 0.5 lower give or take 0.1: lower on every example at 5 sigma
    assert stats.paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 2.0, 3.0])["share_lower"] == 0.75
    with pytest.raises(ValueError, match="the same examples"):
        stats.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
