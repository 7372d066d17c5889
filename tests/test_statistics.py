"""Statistics over seeds (`rnn_jax.statistics`) against values computed from their formulas."""

import itertools
import math

import numpy as np
import pytest

from rnn_jax import statistics


def test_the_t_interval_is_mean_plus_minus_t_times_the_standard_error():
    values = [0.12, 0.15, 0.11, 0.19, 0.14]
    mean, s = np.mean(values), np.std(values, ddof=1)
    t_975_4 = 2.7764451051977987  # the 97.5% quantile of Student's t with 4 degrees of freedom
    low, high = statistics.t_interval(values)
    np.testing.assert_allclose([low, high], [mean - t_975_4 * s / np.sqrt(5), mean + t_975_4 * s / np.sqrt(5)])
    assert all(math.isnan(v) for v in statistics.t_interval([0.3]))  # one seed: no interval
    assert all(math.isnan(v) for v in statistics.t_interval([0.1, float("nan")]))


def test_a_seed_summary_has_its_intervals_and_keeps_the_population_std():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    summary = statistics.seed_summary(values)
    assert summary["mean"] == 3.0 and summary["std"] == pytest.approx(np.std(values)) and summary["n"] == 5
    low, high = summary["bootstrap"]
    assert 1.0 <= low < 3.0 < high <= 5.0  # the percentile bootstrap of the mean lies within the data
    assert statistics.seed_summary(values[:3])["bootstrap"] is None  # fewer than 5 seeds: none


def test_the_binomial_interval_is_clopper_pearson():
    """k = n: [(alpha/2)^(1/n), 1]; k = 0: [0, 1 - (alpha/2)^(1/n)] (the exact interval's closed forms)."""
    three = statistics.solved_fraction([True, True, True])
    assert three["solved"] == 3 and three["fraction"] == 1.0
    np.testing.assert_allclose(three["interval"], [0.025 ** (1 / 3), 1.0])
    none = statistics.solved_fraction([False] * 5)
    np.testing.assert_allclose(none["interval"], [0.0, 1 - 0.025 ** (1 / 5)])


def test_the_permutation_test_is_exact_and_welch_matches_its_formula():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 7.0])
    result = statistics.compare(a, b)
    # every split of the six values into two groups of three: the share with |difference| >= the observed
    pooled, observed = np.concatenate([a, b]), abs(a.mean() - b.mean())
    splits = list(itertools.combinations(range(6), 3))
    extreme = sum(abs(pooled[list(s)].mean() - np.delete(pooled, list(s)).mean()) >= observed - 1e-12 for s in splits)
    assert result["p_permutation"] == pytest.approx(extreme / len(splits))
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    assert result["welch_t"] == pytest.approx(t) and result["difference"] == pytest.approx(-10 / 3)
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch-Satterthwaite
    from scipy import stats

    assert result["p_welch"] == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert math.isnan(statistics.compare([1.0], [2.0, 3.0])["p_welch"])


def test_an_ablation_row_carries_intervals_for_the_loss_the_decay_rates_and_the_solved_fraction():
    """`summaries.grid_rows`: each row's intervals are those of its seeds, its p-values those of
    `compare` against the first grid point's seeds (ablate's summary.md prints these columns)."""
    from rnn_jax import summaries

    def results(finals, init, trained):
        summary = statistics.seed_summary
        return {
            "config": {"steps": 10},
            "task": {"baseline": 0.5},
            "cells": {
                "lstm": {
                    "final_eval_loss": summary(finals),
                    "solved": statistics.solved_fraction([f < 0.05 for f in finals]),
                    "decay_rate": {"0": summary(init), "9": summary(trained)},
                    "status": {str(s): "finished" for s in range(len(finals))},
                }
            },
        }

    base = [0.01, 0.02, 0.03, 0.02, 0.01]
    other = [0.3, 0.01, 0.4, 0.35, 0.2]
    init, trained = [-0.10, -0.08, -0.09, -0.11, -0.07], [-0.01, 0.0, -0.02, -0.01, -0.005]
    first, second = summaries.grid_rows(
        [({"v": "a"}, results(base, init, trained)), ({"v": "b"}, results(other, init, trained))]
    )
    np.testing.assert_allclose(
        [second["final_eval_loss_low"], second["final_eval_loss_high"]], statistics.t_interval(other)
    )
    np.testing.assert_allclose(
        [first["decay_rate_init_low"], first["decay_rate_init_high"]], statistics.t_interval(init)
    )
    np.testing.assert_allclose(
        [first["decay_rate_trained_low"], first["decay_rate_trained_high"]], statistics.t_interval(trained)
    )
    assert (first["solved"], second["solved"]) == (5, 1)
    np.testing.assert_allclose(
        [second["solved_low"], second["solved_high"]], statistics.solved_fraction([0, 1, 0, 0, 0])["interval"]
    )
    expected = statistics.compare(other, base)
    assert second["p_welch_vs_first"] == pytest.approx(expected["p_welch"])
    assert second["p_permutation_vs_first"] == pytest.approx(expected["p_permutation"])
    assert first["p_welch_vs_first"] == 1.0  # the first point against itself


def test_the_printed_table_gives_each_decay_rate_with_its_interval():
    """gradient_flow's table: the decay rate as mean ± the half-width of its 95% t-interval."""
    from types import SimpleNamespace

    from rnn_jax import summaries

    init, trained, finals = [-0.10, -0.08, -0.09], [-0.01, 0.0, -0.02], [0.1, 0.2, 0.15]
    record = {
        "decay_rate": {"0": statistics.seed_summary(init), "9": statistics.seed_summary(trained)},
        "final_eval_loss": statistics.seed_summary(finals),
        "status": {"0": "completed"},
    }
    results = {"task": {"metric": "MSE", "baseline": 0.5}, "cells": {"lstm": record}, "out": "runs/x"}
    table = summaries.cells_table(SimpleNamespace(task="adding", seq_len=5, hidden=4, steps=10, seeds=3), results)
    low, high = statistics.t_interval(trained)
    assert f"-0.0100±{(high - low) / 2:.4f}" in table and "-0.0900±" in table


def test_constant_samples_give_welch_t_and_its_p_value_that_agree():
    """Two samples without variance: means that differ give t = +-inf and p 0 (the limit), equal
    ones t and p NaN (0 / 0); the permutation test answers both (2/20 = 0.1 for 3 against 3)."""
    differ = statistics.compare([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert differ["welch_t"] == -math.inf and differ["p_welch"] == 0.0
    assert differ["p_permutation"] == pytest.approx(0.1)
    same = statistics.compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert math.isnan(same["welch_t"]) and math.isnan(same["p_welch"]) and same["p_permutation"] == 1.0
