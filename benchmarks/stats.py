"""Results as distributions over seeds: the interquartile mean and percentile bootstrap confidence intervals.

As in "Deep RL at the Edge of the Statistical Precipice" (Agarwal et al., 2021) and its library rliable:
``rliable.metrics.aggregate_iqm`` is ``scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=None)``, and
``rliable.library.get_interval_estimates`` defaults to ``method="percentile"`` over resampled runs (with one
task, stratified resampling is plain resampling of the seeds). NumPy only: no SciPy, no arch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

# Fewer runs than this get an IQM but no interval: below 4 the IQM trims nothing (it is the mean), and a
# bootstrap of 3 seeds has only 10 distinct resamples, too few for a 95% interval to mean anything.
MIN_RUNS_FOR_CI = 4

Statistic = Callable[..., "float | np.ndarray"]


def _checked(values: ArrayLike) -> np.ndarray:
    """``values`` as a float array of at least one value; ValueError for NaN, or for both +inf and -inf."""
    a = np.asarray(values, dtype=float)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"need at least one value, got {values!r}")
    if np.isnan(a).any():
        raise ValueError("NaN among the values; count a run that never got there as +inf or -inf (its worst)")
    if np.isposinf(a).any() and np.isneginf(a).any():
        raise ValueError("both +inf and -inf among the values: a missing run is worst one way, not both")
    return a


def _runs(values: ArrayLike) -> np.ndarray:
    """:func:`_checked`, and one value per run (1-D)."""
    x = _checked(values)
    if x.ndim != 1:
        raise ValueError(f"need one value per run (1-D), got shape {x.shape}")
    return x


def iqm(values: ArrayLike, axis: int = -1) -> float | np.ndarray:
    """Interquartile mean: the mean after dropping the lowest and highest ``int(0.25 * n)`` of the ``n`` values.

    ``scipy.stats.trim_mean(values, 0.25)``, rliable's ``aggregate_iqm``: the cut is rounded down, so 1..8 drops
    1, 2 and 7, 8 (4.5), 10 values drop 2 at each end and fewer than 4 drop none (the mean). Infinite values
    (a run that never got there, counted as worst) are allowed; NaN is refused. A 1-D sample gives a float,
    a 2-D array one IQM per row (``axis=-1``, as :func:`bootstrap_ci` calls it).
    """
    a = np.sort(_checked(values), axis=axis)
    n = a.shape[axis]
    cut = int(0.25 * n)
    out = np.mean(np.take(a, range(cut, n - cut), axis=axis), axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def _quantile(ordered: np.ndarray, q: float) -> float:
    """NumPy's default (``linear``) quantile of sorted values, where an infinite neighbour of nonzero weight wins."""
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    t, a, b = h - lo, ordered[lo], ordered[min(lo + 1, len(ordered) - 1)]
    if t == 0 or a == b or np.isinf(a):
        return float(a)
    return float(b) if np.isinf(b) else float(a + t * (b - a))


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = iqm,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over the runs in ``values`` (1-D).

    Draws ``resamples`` samples of the ``n`` runs with replacement (``numpy.random.default_rng(seed)``, all at
    once: an array of ``resamples`` x ``n``), calls ``statistic(samples, axis=-1)`` once (``iqm``, ``np.mean``,
    ``np.median`` all take ``axis``), and returns the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the results, linearly interpolated as ``np.percentile`` and rliable's percentile method (arch).
    """
    x = _runs(values)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    samples = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))]
    results = np.asarray(statistic(samples, axis=-1), dtype=float)
    if results.shape != (resamples,):
        raise ValueError(f"statistic must reduce axis -1 to one value per resample, gave shape {results.shape}")
    ordered, tail = np.sort(results), (1 - confidence) / 2
    return _quantile(ordered, tail), _quantile(ordered, 1 - tail)


def iqm_ci(
    values: ArrayLike,
    min_runs: int = MIN_RUNS_FOR_CI,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, tuple[float, float] | None]:
    """The IQM of ``values`` (1-D) and its :func:`bootstrap_ci`; no interval (None) with fewer than ``min_runs``."""
    x = _runs(values)
    point = float(iqm(x))
    return point, (bootstrap_ci(x, iqm, confidence, resamples, seed) if len(x) >= min_runs else None)


def format_ci(point: float | None, interval: Sequence[float | None] | None = None, spec: str = ".1f") -> str:
    """``"221.4 [205.1, 238.0]"``: the point and its interval by ``spec``; ``-`` for a None or infinite number
    (a run that never got there); the point alone without an interval, ``-`` alone if all three are."""

    def one(v: float | None) -> str:
        return "-" if v is None or not math.isfinite(v) else format(v, spec)

    text = [one(v) for v in (point, *(interval or ()))]
    return text[0] if interval is None or text == ["-"] * 3 else f"{text[0]} [{text[1]}, {text[2]}]"
