"""The figures of the optimisation side (`experiments.curse_of_memory`): each student's final
loss against the teacher's memory (Zucchet & Orvieto 2024's Figure 3) and the Hessian at the
optimum (their Figure 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_jax.plots import _color, _save_with_grid_and_legend, plt
from rnn_jax.statistics import t_interval


def loss_against_memory(students: dict[str, list[dict]], path: Path) -> None:
    """Per student, its normalised final loss against nu_0 on the axis -log10(1 - nu_0): the
    geometric mean over seeds with the 95% t-interval of the mean of log10 (losses span decades,
    and an arithmetic interval would reach below zero)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, rows) in enumerate(students.items()):
        x = -np.log10(1.0 - np.array([r["nu"] for r in rows]))
        logs = [np.log10(np.asarray(r["normalised_loss_per_seed"], float)) for r in rows]
        logs = [v[np.isfinite(v)] for v in logs]
        centre = np.array([v.mean() if v.size else np.nan for v in logs])
        low, high = np.array([t_interval(v) if v.size > 1 else [c, c] for v, c in zip(logs, centre)]).T
        ax.errorbar(x, 10**centre, yerr=[10**centre - 10**low, 10**high - 10**centre], fmt="-o", capsize=3,
                    color=_color(label, i), label=label)  # fmt: skip
    nus = [r["nu"] for r in next(iter(students.values()))]
    ax.set_xticks(-np.log10(1.0 - np.array(nus)), [str(nu) for nu in nus])
    ax.set_yscale("log")
    ax.set_xlabel("teacher's nu_0 (its eigenvalues on [nu_0, 1))")
    ax.set_ylabel("final loss / loss of predicting zero (geometric mean, 95% CI)")
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


def _over_training(series: dict, pick=lambda v: v) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, seed min, seed max) of a measurement's {step: {"mean", "per_seed"}} record."""
    steps = sorted(series, key=int)
    per_seed = np.array([[pick(v) for v in series[s].get("per_seed", [series[s]["mean"]])] for s in steps], float)
    return (
        np.array([int(s) for s in steps]),
        np.array([pick(series[s]["mean"]) for s in steps], float),
        *(f(per_seed, axis=1) for f in (np.nanmin, np.nanmax)),
    )


def curvature_figures(cells: dict, out: Path, *, title: str) -> None:
    """The curvature measurements of a run (`rnn_jax.curvature`), where measured: hessian.png (the
    top eigenvalue of the loss Hessian over training, overall and per group, and through Adam's
    preconditioner), adam_lr.png (Adam's median effective learning rate per group) and
    sensitivity.png (E|dh_t/dtheta_rec|^2 by step t beside |dL/dh_t| by step, the last measured
    step: the two stories of the same run). Lines: means over seeds; bands: the seeds' range."""
    measured = {cell: record.get("measurements", {}) for cell, record in cells.items()}
    hessians = {
        c: next((v for k, v in m.items() if k.partition(":")[0] == "hessian"), None) for c, m in measured.items()
    }
    if any(hessians.values()):
        _groups_over_training(hessians, "['{}']['eigenvalues']", lambda v: v[0], "top Hessian eigenvalue",
                              out / "hessian.png", title, extra="['adam']['preconditioned_top']")  # fmt: skip
    adam = {c: {k: _after_first_update(v) for k, v in m.get("adam_lr", {}).items()} for c, m in measured.items()}
    if any(adam.values()):
        _groups_over_training(adam, "['{}']['median']", lambda v: v, "Adam's median lr / --lr", out / "adam_lr.png",
                              title)  # fmt: skip
    if any("sensitivity" in m for m in measured.values()):
        _sensitivity_beside_flow(cells, out / "sensitivity.png", title)


def _after_first_update(series: dict) -> dict:
    """A measurement of Adam's state without step 0's (before any update its v is 0: D = 1 / eps)."""
    return {s: v for s, v in series.items() if s != "0"}


def _groups_over_training(records, key: str, pick, ylabel: str, path: Path, title: str, extra: str | None = None):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"all": "-", "recurrent": "--", "input": ":", "readout": "-.", "bias": (0, (1, 3)), "other": (0, (5, 5))}
    for i, (cell, record) in enumerate((c, r) for c, r in records.items() if r):
        for group, style in styles.items():
            name = key.format(group)
            if name in record:
                steps, mean, low, high = _over_training(record[name], pick)
                ax.plot(steps, mean, linestyle=style, color=_color(cell, i), label=f"{cell} {group}")
                ax.fill_between(steps, low, high, color=_color(cell, i), alpha=0.1)
        if extra and extra in record:
            steps, mean, _, _ = _over_training(_after_first_update(record[extra]))
            ax.plot(steps, mean, "o-", ms=3, color=_color(cell, i), label=f"{cell} through Adam (x lr: 2 = edge)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    _save_with_grid_and_legend(fig, ax, path, title)


def _sensitivity_beside_flow(cells: dict, path: Path, title: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (cell, record) in enumerate(cells.items()):
        series = record.get("measurements", {}).get("sensitivity", {}).get("['layer0']['by_step']")
        if not series:
            continue
        last = max(series, key=int)
        left.semilogy(np.asarray(series[last]["mean"], float), color=_color(cell, i), label=f"{cell} (step {last})")
        flow = record["grad_norm_by_step"].get(last)
        if flow is not None:
            right.semilogy(np.asarray(flow, float), color=_color(cell, i), label=f"{cell} (step {last})")
    left.set(xlabel="step t of the sequence", ylabel="E |dh_t / dtheta_rec|^2 (layer 0)")
    left.set_title("the curse of memory: sensitivity to the recurrent parameters", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set(xlabel="step t of the sequence", ylabel="|dL / dh_t| (gradient flow)")
    _save_with_grid_and_legend(fig, right, path, title)
