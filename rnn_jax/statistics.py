"""Statistics over seeds, for every summary: a comparison rests on an interval, not on +- std.

  seed_summary    mean, standard deviation, the 95% t-interval of the mean and, from 5 seeds,
                  a percentile bootstrap interval (10,000 resamples, seeded);
  solved_fraction the fraction of seeds that solve a task, with its exact (Clopper-Pearson)
                  binomial interval: with 3 seeds, 3/3 solved is an interval of [0.29, 1];
  compare         one grid point's seeds against another's: Welch's t-test (unequal variances)
                  and a two-sided permutation test of the difference in means (exact for
                  small samples), with their p-values. The permutation p-value is SciPy's
                  two-sided one: twice the smaller one-sided p-value, at most 1 (with 5
                  against 5 seeds its smallest value is 2/252 = 0.008).

All through SciPy (scipy.stats); NaN values (a diverged seed) make every statistic NaN, as the
mean would be.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_FROM = 5  # seeds: fewer give a bootstrap interval too narrow to mean anything
RESAMPLES = 10_000


def seed_summary(values) -> dict:
    """{"mean", "std", "n", "interval": [low, high] (t, 95%), "bootstrap": [low, high] or None,
    "per_seed"}; `std` is the population standard deviation (ddof 0, as results.json has always
    had it); the interval uses the sample's."""
    values = np.asarray(values, np.float64)
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    std = float(np.std(values)) if n else math.nan
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "interval": t_interval(values),
        "bootstrap": bootstrap_interval(values) if n >= BOOTSTRAP_FROM else None,
        "per_seed": values.tolist(),
    }


def t_interval(values, level: float = LEVEL) -> list[float]:
    """The t-interval of the mean: mean +- t_(n-1) s / sqrt(n); [nan, nan] for fewer than 2 values."""
    values = np.asarray(values, np.float64)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return [math.nan, math.nan]
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0.0:
        return [mean, mean]
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return [float(low), float(high)]


def bootstrap_interval(values, level: float = LEVEL, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean (`RESAMPLES` resamples, seeded)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return [math.nan, math.nan]
    if np.all(values == values[0]):
        return [float(values[0])] * 2
    result = stats.bootstrap(
        (values,), np.mean, confidence_level=level, n_resamples=RESAMPLES, method="percentile", random_state=seed
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def solved_fraction(solved: list[bool], level: float = LEVEL) -> dict:
    """{"solved": k, "n": n, "fraction": k / n, "interval": exact binomial (Clopper-Pearson) [low, high]}."""
    k, n = int(sum(bool(s) for s in solved)), len(solved)
    if n == 0:
        return {"solved": 0, "n": 0, "fraction": math.nan, "interval": [math.nan, math.nan]}
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return {"solved": k, "n": n, "fraction": k / n, "interval": [float(interval.low), float(interval.high)]}


def compare(a, b, seed: int = 0) -> dict:
    """Seeds `a` against seeds `b`: {"difference": mean(a) - mean(b), "welch_t", "p_welch",
    "p_permutation"}; p-values NaN where a sample has fewer than 2 finite values.

    Two samples without variance: Welch's t is the limit of the statistic, +-inf with p_welch 0
    where their means differ (no overlap, no noise), NaN with p_welch NaN where they are equal
    (0 / 0); the permutation test is defined for both (its p is then its smallest possible
    value, and 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    difference = float(np.mean(a) - np.mean(b)) if len(a) and len(b) else math.nan
    if min(len(a), len(b)) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"difference": difference, "welch_t": math.nan, "p_welch": math.nan, "p_permutation": math.nan}
    with np.errstate(all="ignore"), warnings.catch_warnings():  # constant samples: SciPy's precision warning
        warnings.simplefilter("ignore", RuntimeWarning)
        welch = stats.ttest_ind(a, b, equal_var=False)
    permutation = stats.permutation_test(
        (a, b),
        lambda x, y: np.mean(x) - np.mean(y),
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=RESAMPLES,
        random_state=seed,
    )
    return {
        "difference": difference,
        "welch_t": float(welch.statistic),  # +-inf where both samples are constant and differ
        "p_welch": float(welch.pvalue),
        "p_permutation": float(permutation.pvalue),
    }
