"""The figures of the optimisation side (`experiments.curse_of_memory`): each student's final
loss against the teacher's memory (Zucchet & Orvieto 2024's Figure 3) and the Hessian at the
optimum (their Figure 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_jax.plots import _color, _save_with_grid_and_legend, plt


def loss_against_memory(students: dict[str, list[dict]], path: Path) -> None:
    """Per student, its normalised final loss (mean over seeds, 95% interval) against nu_0, on
    the axis -log10(1 - nu_0) (nu_0 = 0.9, 0.99: one decade apart)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, rows) in enumerate(students.items()):
        x = -np.log10(1.0 - np.array([r["nu"] for r in rows]))
        mean = np.array([r["normalised_loss"] for r in rows], float)
        low, high = (np.array([r[f"normalised_loss_{end}"] for r in rows], float) for end in ("low", "high"))
        low, high = np.where(np.isnan(low), mean, low), np.where(np.isnan(high), mean, high)
        ax.errorbar(
            x,
            mean,
            yerr=[mean - np.minimum(low, mean), np.maximum(high, mean) - mean],
            fmt="-o",
            color=_color(label, i),
            label=label,
            capsize=3,
        )
    nus = [r["nu"] for r in next(iter(students.values()))]
    ax.set_xticks(-np.log10(1.0 - np.array(nus)), [str(nu) for nu in nus])
    ax.set_yscale("log")
    ax.set_xlabel("teacher's nu_0 (its eigenvalues on [nu_0, 1))")
    ax.set_ylabel("final loss / loss of predicting zero")
    _save_with_grid_and_legend(fig, ax, path, "The curse of memory: each student at its best learning rate")


def hessian_at_optimum(students: dict[str, dict], path: Path) -> None:
    """Per student set to the teacher (`rnn_jax.optimum`): the Hessian's eigenvalues, largest
    first (log scale), and how many coordinates each top eigenvector spreads over."""
    fig, (spectrum, spread) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, found) in enumerate(students.items()):
        values = np.asarray(found["eigenvalues"])
        spectrum.semilogy(
            np.arange(1, values.size + 1),
            np.clip(values, 1e-12, None),
            "-o",
            ms=3,
            color=_color(label, i),
            label=f"{label} ({found['parameters']} parameters)",
        )
        coordinates = found["effective_coordinates"]
        spread.plot(np.arange(1, len(coordinates) + 1), coordinates, "-o", color=_color(label, i), label=label)
    spectrum.set_xlabel("eigenvalue rank")
    spectrum.set_ylabel("Hessian eigenvalue (clipped at 1e-12)")
    spectrum.grid(alpha=0.3)
    spectrum.legend(fontsize=8)
    spread.set_xlabel("eigenvector rank")
    spread.set_ylabel("effective coordinates, 1 / sum v_i^4")
    _save_with_grid_and_legend(fig, spread, path, "The Hessian at the optimum (student = teacher, float64)")
