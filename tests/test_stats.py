"""benchmarks/stats.py: the interquartile mean and the percentile bootstrap interval, on data known by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import stats  # noqa: E402


def test_iqm_drops_a_quarter_at_each_end() -> None:
    assert stats.iqm(range(1, 9)) == 4.5  # drops 1, 2 and 7, 8: mean of 3, 4, 5, 6
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # the order does not matter
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]) == 5.5  # int(2.5) = 2 at each end: mean of 3..8
    assert stats.iqm([1, 2, 3, 100]) == 2.5  # one at each end
    assert stats.iqm([1, 2, 30]) == 11.0  # int(0.75) = 0: below 4 runs, the mean
    assert stats.iqm([7.5]) == 7.5
    assert isinstance(stats.iqm([1, 2]), float)


def test_iqm_of_rows_and_of_runs_that_never_got_there() -> None:
    rows = stats.iqm(np.array([range(1, 9), range(11, 19)]))
    assert isinstance(rows, np.ndarray) and rows.tolist() == [4.5, 14.5]
    assert stats.iqm([1, 2, 3, math.inf]) == 2.5  # one missing run of 4: trimmed away
    assert stats.iqm([1, 2, math.inf, math.inf]) == math.inf  # two: the IQM never got there either
    with pytest.raises(ValueError, match="both"):
        stats.iqm([-math.inf, 1, 2, math.inf])
    assert stats.iqm([-math.inf, 5, 6, 7]) == 5.5  # a score never made: the lowest, trimmed


def test_iqm_matches_scipy_trim_mean() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 99):  # 0.25 * n fractional: the cut rounds down
        x = rng.normal(size=n) * 100
        assert stats.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25), rel=1e-12)


@pytest.mark.parametrize(
    "bad",
    [[], np.array([]), [1.0, math.nan, 2.0], 5.0, np.zeros((2, 0))],
    ids=["empty", "empty array", "NaN", "scalar", "empty rows"],
)
def test_bad_input_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="need at least one value|NaN"):
        stats.iqm(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need at least one value|NaN|1-D"):
        stats.bootstrap_ci(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0}, "confidence"),
        ({"resamples": 0}, "resamples"),
        ({"resamples": 2.5}, "resamples"),
        ({"statistic": lambda x, axis: x}, "reduce axis -1"),
    ],
    ids=["confidence 1", "confidence 0", "no resamples", "fractional resamples", "statistic keeps the axis"],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.bootstrap_ci([1.0, 2.0, 3.0, 4.0], **kwargs)
    with pytest.raises(ValueError, match="1-D"):
        stats.bootstrap_ci(np.ones((3, 4)))


def test_a_constant_sample_has_its_constant_as_interval() -> None:
    assert stats.bootstrap_ci([221.4] * 7) == (221.4, 221.4)
    assert stats.bootstrap_ci([3.0], np.mean) == (3.0, 3.0)
    assert stats.iqm_ci([0.91] * 5) == (pytest.approx(0.91), (pytest.approx(0.91), pytest.approx(0.91)))


def test_the_interval_holds_the_statistic_and_narrows_with_more_runs() -> None:
    population = np.random.default_rng(7).normal(200.0, 30.0, size=400)
    widths = []
    for n in (10, 40, 160):
        x = population[:n]
        for statistic in (stats.iqm, np.mean, np.median):
            low, high = stats.bootstrap_ci(x, statistic, resamples=4000, seed=1)
            assert low < float(statistic(x)) < high
        low, high = stats.bootstrap_ci(x, resamples=4000, seed=1)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]  # about halves with four times the runs
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)
    narrow = stats.bootstrap_ci(population[:40], confidence=0.5, seed=1)
    wide = stats.bootstrap_ci(population[:40], confidence=0.99, seed=1)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_the_same_seed_gives_the_same_interval() -> None:
    x = np.random.default_rng(2).normal(200.0, 30.0, size=12)
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x.tolist(), seed=5)
    assert stats.bootstrap_ci(x) == stats.bootstrap_ci(x, seed=0)
    assert stats.bootstrap_ci(x, seed=5) != stats.bootstrap_ci(x, seed=6)  # another seed, other resamples


def test_percentiles_are_numpy_linear_ones_of_the_resampled_statistic() -> None:
    """The same resamples by hand: np.percentile (linear) at 2.5 and 97.5 of the resampled means."""
    x = np.array([196.3, 246.8, 221.4, 215.6, 227.4, 190.0])
    means = x[np.random.default_rng(0).integers(0, 6, size=(1000, 6))].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert stats.bootstrap_ci(x, np.mean, resamples=1000) == pytest.approx(tuple(expected), rel=1e-12)


def test_an_infinite_bound_when_resamples_never_get_there() -> None:
    low, high = stats.bootstrap_ci([100.0, 200.0, 300.0, math.inf])
    assert 100 <= low <= 250 and high == math.inf
    assert stats.bootstrap_ci([math.inf] * 4) == (math.inf, math.inf)


def test_iqm_ci_gives_no_interval_below_four_runs() -> None:
    assert stats.MIN_RUNS_FOR_CI == 4
    assert stats.iqm_ci([1.0, 2.0, 30.0]) == (11.0, None)
    point, interval = stats.iqm_ci([1.0, 2.0, 3.0, 100.0])
    assert point == 2.5 and interval is not None and interval[0] <= 2.5 <= interval[1]
    assert stats.iqm_ci([1.0, 2.0, 3.0, 100.0], min_runs=5) == (2.5, None)
    with pytest.raises(ValueError, match="1-D"):
        stats.iqm_ci([[1.0, 2.0]])


def test_format_ci() -> None:
    assert stats.format_ci(221.42, (205.06, 238.0)) == "221.4 [205.1, 238.0]"
    assert stats.format_ci(0.914, [0.86, 0.95], ".0%") == "91% [86%, 95%]"
    assert stats.format_ci(730.0, (690.0, None), ".0f") == "730 [690, -]"
    assert stats.format_ci(730.0, (690.0, math.inf), ".0f") == "730 [690, -]"
    assert stats.format_ci(None, (None, None)) == "-"
    assert stats.format_ci(math.inf, (500.0, math.inf), ".0f") == "- [500, -]"
    assert stats.format_ci(221.42) == "221.4"
    assert stats.format_ci(None) == "-"


def test_the_interval_matches_scipy_bootstrap_percentile() -> None:
    """Another implementation of the same method: scipy.stats.bootstrap(method="percentile"), if installed."""
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(4).normal(200.0, 30.0, size=20)
    theirs = scipy_stats.bootstrap(
        (x,), lambda a, axis: scipy_stats.trim_mean(a, 0.25, axis=axis), method="percentile", n_resamples=10_000
    ).confidence_interval
    assert stats.bootstrap_ci(x) == pytest.approx((theirs.low, theirs.high), rel=0.01)  # other draws: close
