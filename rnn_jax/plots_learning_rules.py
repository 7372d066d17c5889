"""The figures of a learning-rule grid (`experiments.ablate` over ``--grid gradient=...``): how
truncated BPTT's gradient lines up with full BPTT's against the truncation K. (alignment.png
of one run, over training, is `rnn_jax.plots.alignment_over_training`.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_jax.plots import _color, _save_with_grid_and_legend, plt


def alignment_against_truncation(rows: list[dict], path: Path, *, title: str) -> None:
    """Per cell, how truncated:K's gradient lines up with full BPTT's at the last measured step
    against K (an ablation grid's rows with ``gradient`` truncated:K): cosine and norm ratio,
    mean over seeds with its 95% interval."""
    fig, ax = plt.subplots(figsize=(7, 4))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    for i, cell in enumerate(cells):
        mine = sorted((r for r in rows if r["cell"] == cell), key=lambda r: int(r["gradient"].partition(":")[2]))
        k = [int(r["gradient"].partition(":")[2]) for r in mine]
        for name, style in (("alignment_cosine", "-o"), ("alignment_norm_ratio", "--s")):
            mean = np.array([r[name] for r in mine], float)
            low, high = (np.array([r[f"{name}_{end}"] for r in mine], float) for end in ("low", "high"))
            label = f"{cell} {'cosine' if 'cosine' in name else '|rule| / |bptt|'}"
            ax.plot(k, mean, style, color=_color(cell, i), label=label)
            ax.fill_between(
                k,
                np.where(np.isnan(low), mean, low),
                np.where(np.isnan(high), mean, high),
                color=_color(cell, i),
                alpha=0.15,
            )
    ax.set_xscale("log")
    ax.set_xlabel("truncation K (steps)")
    ax.set_ylabel("against full BPTT, last measured step")
    _save_with_grid_and_legend(fig, ax, path, title)
