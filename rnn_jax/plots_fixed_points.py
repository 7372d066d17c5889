"""The figures of what a trained network computes (`experiments.fixed_points`): its fixed and
slow points among its trajectories, and the eigenvalues of their Jacobians."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_jax.plots import _save, plt


def fixed_points(by_cell: dict[str, tuple[np.ndarray, list[dict]]], path: Path, *, title: str) -> None:
    """One 3-D panel per cell: trajectories (faint) in their top three principal components,
    with the fixed points (filled: stable; open: saddles, annotated by their unstable modes) and
    slow points (small) projected on the same axes. by_cell: {cell: (trajectories (batch, time,
    d), the points' JSON records)}."""
    fig = plt.figure(figsize=(4.8 * len(by_cell), 4.4))
    for i, (cell, (paths, points)) in enumerate(by_cell.items()):
        ax = fig.add_subplot(1, len(by_cell), i + 1, projection="3d")
        flat = paths.reshape(-1, paths.shape[-1])
        mean = flat.mean(0)
        _, _, components = np.linalg.svd(flat - mean, full_matrices=False)
        project = lambda v, c=components[:3], m=mean: (np.asarray(v) - m) @ c.T  # noqa: E731
        for path_ in paths[: min(len(paths), 16)]:
            ax.plot(*np.pad(project(path_), ((0, 0), (0, 3 - min(3, components.shape[0])))).T, lw=0.4, alpha=0.4)
        for point in points:
            x = np.pad(project(point["state"]), (0, 3 - min(3, components.shape[0])))
            slow = point["kind"] == "slow"
            ax.scatter(
                *x,
                s=12 if slow else 40,
                c="k" if point["stable"] else "none",
                edgecolors="k" if not point["stable"] else None,
                marker="o",
            )
            if not point["stable"] and not slow:
                ax.text(*x, f" {point['unstable_modes']}", fontsize=7)
        stable = sum(p["stable"] and p["kind"] == "fixed" for p in points)
        saddles = sum(not p["stable"] and p["kind"] == "fixed" for p in points)
        ax.set_title(f"{cell}: {stable} stable, {saddles} unstable", fontsize=9)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        ax.set_zlabel("PC3")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def eigenvalues(by_cell: dict[str, list[dict]], path: Path, *, title: str) -> None:
    """One panel per cell: the eigenvalues of the Jacobian at every fixed point in the complex
    plane with the unit circle (inside: decaying modes; outside: unstable), stable points' in
    black, the others' in red. by_cell: {cell: the points' JSON records}."""
    fig, axes = plt.subplots(1, len(by_cell), figsize=(4 * len(by_cell), 4), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    for ax, (cell, points) in zip(axes[0], by_cell.items()):
        ax.plot(circle.real, circle.imag, "k", lw=0.8)
        for point in points:
            values = np.array(point["eigenvalues"])
            ax.scatter(values[:, 0], values[:, 1], s=8, c="k" if point["stable"] else "tab:red", alpha=0.6)
        ax.set_aspect("equal")
        ax.set_title(f"{cell}: {len(points)} point(s)")
        ax.set_xlabel("Re")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("Im")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
