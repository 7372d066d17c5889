"""The figures (matplotlib, Agg backend: PNG files, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnn_jax.gradflow import top_state  # noqa: E402

COLORS = {
    "rnn": "tab:red",
    "lstm": "tab:blue",
    "gru": "tab:green",
    "mingru": "tab:orange",
    "minlstm": "tab:purple",
    "lru": "tab:brown",
}
# Other names (a cell written outside the package, an ablation's variants) take these in turn:
# tab20 without the colours above, dark ones first, so that no two lines of a figure share one.
_NAMED = {matplotlib.colors.to_hex(c) for c in COLORS.values()}
_OTHER = [c for c in plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2] if matplotlib.colors.to_hex(c) not in _NAMED]


def _color(name: str, i: int):
    return COLORS.get(name, _OTHER[i % len(_OTHER)])


def _save_with_grid_and_legend(fig, ax, path: Path, title: str) -> None:
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    if jax.process_index() == 0:  # in a multi-process run, process 0 writes the figures
        fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_band(profiles: np.ndarray):
    """Geometric mean and +-1 std band (in log space) over seeds of (seeds, lags) norms."""
    logs = np.log10(np.maximum(profiles, 1e-38))
    return 10 ** logs.mean(0), 10 ** (logs.mean(0) - logs.std(0)), 10 ** (logs.mean(0) + logs.std(0))


def flow_vs_lag(curves: dict[str, dict[str, np.ndarray]], path: Path, *, title: str, slopes=None) -> None:
    """Panels (e.g. "at initialisation", "after training"), each with log-norm vs lag per cell.

    curves: {panel: {cell: (seeds, lags) array of ||dL_T/dh_{T-k}||}}; slopes: {panel: {cell: str}}.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), sharey=True, squeeze=False)
    for ax, (panel, by_cell) in zip(axes[0], curves.items()):
        for i, (cell, profiles) in enumerate(by_cell.items()):
            mean, low, high = _log_band(profiles)
            label = cell + (f"  (slope {slopes[panel][cell]})" if slopes else "")
            ax.semilogy(np.arange(mean.size), mean, color=_color(cell, i), label=label)
            if profiles.shape[0] > 1:
                ax.fill_between(np.arange(mean.size), low, high, color=_color(cell, i), alpha=0.2)
        ax.set_title(panel)
        ax.set_xlabel("lag k (steps before the last)")
        ax.grid(True, which="major", alpha=0.3)
        if by_cell:  # every seed of every cell diverged before this panel: nothing to label
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel(r"$\|\partial L_T / \partial h_{T-k}\|$")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def flow_heatmaps(maps: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str) -> None:
    """One heatmap per cell of log10 ||dL_T/dh_{T-k}|| over (training step x lag).

    maps: {cell: (steps (n,), norms (n, lags))}; a shared colour scale across cells, at most 12
    decades deep (anything smaller, including exact zeros, shows as the darkest colour).
    """
    logs = {cell: np.log10(np.maximum(norms, 1e-38)) for cell, (_, norms) in maps.items()}
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in logs.values()])
    vmin, vmax = np.percentile(finite, [1, 99.5]) if finite.size else (-10, 0)
    vmin = max(vmin, vmax - 12)  # 12 decades; float32 underflow (exact zeros) would swamp the scale
    columns = min(3, len(maps))  # six cells in one row would be a 30-inch strip
    rows = -(-len(maps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.8 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(maps) :]:
        ax.set_visible(False)
    for ax, (cell, (steps, _)) in zip(axes.flat, maps.items()):
        image = ax.imshow(
            logs[cell],
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=(-0.5, logs[cell].shape[1] - 0.5, -0.5, len(steps) - 0.5),
            interpolation="nearest",
        )
        ticks = np.linspace(0, len(steps) - 1, min(6, len(steps))).round().astype(int)
        ax.set_yticks(ticks, [str(steps[t]) for t in ticks])
        ax.set_title(cell)
        ax.set_xlabel("lag k")
        ax.set_ylabel("training step")
    fig.colorbar(image, ax=axes.ravel().tolist(), label=r"$\log_{10}\|\partial L_T/\partial h_{T-k}\|$")
    fig.suptitle(title)
    _save(fig, path)


def loss_curves(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    baseline: float | None = None,
    log: bool = True,
) -> None:
    """Loss against training step, one colour per cell, one line per seed.

    curves: {label: [(steps, values), ...]} (several seeds per label)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bases = list(dict.fromkeys(label.split()[0] for label in curves))  # "<cell> train" and "<cell> eval" share one
    for label, runs in curves.items():
        base = label.split()[0]
        for j, (steps, values) in enumerate(runs):
            ax.plot(
                steps,
                values,
                color=_color(base, bases.index(base)),
                alpha=0.85 if j == 0 else 0.45,
                label=label if j == 0 else None,
                linestyle="--" if "eval" in label else "-",
            )
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle=":", label=f"baseline {baseline:.3g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    _save_with_grid_and_legend(fig, ax, path, title)


def _interval_bars(rows: list[dict], name: str) -> np.ndarray:
    """Error bars (2, len(rows)) from each row's `name`_low / `name`_high: a row with one seed has none."""
    mean = np.array([r[name] for r in rows])
    interval = np.array([[r[f"{name}_low"], r[f"{name}_high"]] for r in rows])
    return np.nan_to_num(np.abs(interval.T - mean))


def ablation_bars(labels: list[str], rows: list[dict], path: Path, *, metric: str, baseline: float) -> None:
    """Per grid point: final eval loss (log scale, baseline dotted) and the fitted decay rate
    of ||dL_T/dh_{T-k}|| at initialisation and after training, each with its 95% t-interval over
    seeds."""
    y = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    left.barh(y, [r["final_eval_loss"] for r in rows], xerr=_interval_bars(rows, "final_eval_loss"), color="tab:blue")
    left.axvline(baseline, color="black", linestyle=":", label=f"baseline {baseline:.3g}")
    left.set_xscale("log")
    left.set_xlabel(f"final eval {metric} (95% interval over seeds)")
    left.legend(fontsize=8)
    height = 0.4
    right.barh(
        y - height / 2,
        [r["decay_rate_init"] for r in rows],
        height,
        xerr=_interval_bars(rows, "decay_rate_init"),
        color="tab:gray",
        label="at initialisation",
    )
    right.barh(
        y + height / 2,
        [r["decay_rate_trained"] for r in rows],
        height,
        xerr=_interval_bars(rows, "decay_rate_trained"),
        color="tab:orange",
        label="after training",
    )
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel(r"decay rate of $\|\partial L_T/\partial h_{T-k}\|$ (ln per step, 95% interval)")
    right.legend(fontsize=8)
    left.set_yticks(y, labels)
    left.invert_yaxis()
    for ax in (left, right):
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def forecast(series: np.ndarray, forecasts: dict[str, np.ndarray], origin: int, path: Path, *, title: str) -> None:
    """The series (the last few seasons before `origin` and everything after) with forecasts of
    the points from `origin` on."""
    start = max(0, origin - 3 * len(next(iter(forecasts.values()))))
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    t = np.arange(start, len(series))
    ax.plot(t, series[start:], color="black", linewidth=1.2, label="actual")
    for i, (label, values) in enumerate(forecasts.items()):
        ax.plot(origin + np.arange(len(values)), values, color=plt.cm.tab10(i), linestyle="--", marker=".", label=label)
    ax.axvline(origin - 0.5, color="gray", linestyle=":")
    ax.set_xlabel("time step")
    _save_with_grid_and_legend(fig, ax, path, title)


def attention(weights: np.ndarray, source: list[str], target: list[str], path: Path) -> None:
    """Attention weights (target step x source word) of one translation."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(source), 1.0 + 0.4 * len(target)))
    ax.imshow(weights[: len(target)], cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(target)), target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    _save(fig, path)


def spectra(spectra_by_cell: dict[str, dict[int, np.ndarray]], path: Path, *, title: str) -> None:
    """One panel per cell: the Lyapunov exponents (descending) at each measured training step,
    darker = later. spectra_by_cell: {cell: {step: (K,) exponents}}."""
    fig, axes = plt.subplots(1, len(spectra_by_cell), figsize=(4.5 * len(spectra_by_cell), 3.8), squeeze=False)
    for ax, (cell, by_step) in zip(axes[0], spectra_by_cell.items()):
        steps = sorted(by_step)
        for j, step in enumerate(steps):
            shade = plt.cm.viridis(1 - j / max(1, len(steps) - 1))
            ax.plot(
                np.arange(1, len(by_step[step]) + 1),
                by_step[step],
                marker=".",
                color=shade,
                label=f"step {step}" if j in (0, len(steps) - 1) else None,
            )
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(cell)
        ax.set_xlabel("exponent index i")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(r"$\lambda_i$ (nats / step)")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def gate_dynamics(gates_by_cell: dict[str, dict], path: Path, *, title: str) -> None:
    """Over training, per cell with gates: each gate's mean (solid) and saturated fractions
    (dotted: < 0.05, dashed: > 0.95); below, the distribution over units of each unit's time
    constant -1 / ln(its keep gate averaged over batch and steps): median, 90th percentile and max (the few slow
    units that carry a long memory; a mean over units and steps would be dominated by saturated
    gates). gates_by_cell: {cell: {"gates": {step: {gate: {mean, low, high}}},
    "time_constant_median" | "_p90" | "_max": {step: tau}}}."""
    cells = [c for c, record in gates_by_cell.items() if record.get("gates")]
    if not cells:
        return
    fig, axes = plt.subplots(2, len(cells), figsize=(max(7.0, 4.5 * len(cells)), 6), squeeze=False, sharex="col")
    for col, cell in enumerate(cells):
        record = gates_by_cell[cell]
        steps = sorted(record["gates"], key=int)
        x = [int(s) for s in steps]
        for i, gate in enumerate(record["gates"][steps[0]]):
            color = plt.cm.tab10(i)
            for stat, style in (("mean", "-"), ("low", ":"), ("high", "--")):
                ax = axes[0][col]
                ax.plot(
                    x,
                    [record["gates"][s][gate][stat] for s in steps],
                    style,
                    color=color,
                    label=gate if stat == "mean" else None,
                )
        axes[0][col].set_title(cell)
        axes[0][col].set_ylim(-0.02, 1.02)
        axes[0][col].legend(fontsize=8)
        axes[0][col].grid(True, alpha=0.3)
        for key, style, label in (("median", "-", "median"), ("p90", "--", "90th percentile"), ("max", ":", "max")):
            values = record.get(f"time_constant_{key}")
            if values:
                axes[1][col].semilogy(x, [values[s] for s in steps], style, color="k", label=label)
        if record.get("time_constant_median"):
            axes[1][col].legend(fontsize=8)
        axes[1][col].set_xlabel("training step")
        axes[1][col].grid(True, alpha=0.3)
    axes[0][0].set_ylabel("mean (-), < 0.05 (:), > 0.95 (--)")
    axes[1][0].set_ylabel("unit τ = -1/ln(mean keep), steps")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def exponents_over_training(cells: dict[str, dict], path: Path, *, title: str) -> None:
    """One panel per cell: the finite-time Lyapunov exponents measured on each flow step over
    training (lambda_1 with +-1 standard error across the batch's sequences, lambda_2 and
    lambda_3 thinner) beside the gradient's decay rate per step of lag (dashed). Both in nats per
    step: where the gradient decays along the slowest direction, the two curves meet.
    cells: results.json's `cells` records (``lyapunov``, ``lyapunov_summary``, ``decay_rate``)."""
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.6), squeeze=False, sharey=True)
    for i, (ax, (cell, record)) in enumerate(zip(axes[0], cells.items())):
        steps = sorted(record.get("lyapunov", {}), key=int)
        if steps:
            x = np.array([int(s) for s in steps])
            spectra = np.array([record["lyapunov"][s][:3] for s in steps])
            stderr = np.array([record["lyapunov_summary"][s]["leading_stderr"] for s in steps])
            ax.plot(x, spectra[:, 0], marker=".", color=_color(cell, i), label=r"$\lambda_1$")
            ax.fill_between(x, spectra[:, 0] - stderr, spectra[:, 0] + stderr, color=_color(cell, i), alpha=0.2)
            for j in range(1, spectra.shape[1]):
                ax.plot(x, spectra[:, j], lw=0.8, color=_color(cell, i), alpha=0.5, label=rf"$\lambda_{j + 1}$")
        rates = sorted(record.get("decay_rate", {}), key=int)
        ax.plot(
            [int(s) for s in rates],
            [record["decay_rate"][s]["mean"] for s in rates],
            "k--",
            marker="x",
            label="flow decay rate",
        )
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(cell)
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("nats / step")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def alignment_over_training(cells: dict[str, dict], path: Path, *, title: str) -> None:
    """Per cell, the cosine (solid) and norm ratio (dashed) of the learning rule's gradient with
    full BPTT's over training, mean over seeds with its 95% interval (results.json's
    ``measurements.alignment``, overall: `rnn_jax.learning_rules.alignment`)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (cell, record) in enumerate(cells.items()):
        for key, style in (("['all']['cosine']", "-"), ("['all']['norm_ratio']", "--")):
            by_step = record["measurements"]["alignment"][key]
            steps = sorted(by_step, key=int)
            mean = np.array([by_step[s]["mean"] for s in steps])
            low, high = (np.array([by_step[s]["interval"][j] for s in steps], float) for j in (0, 1))
            x = [int(s) for s in steps]
            label = f"{cell} {'cosine' if 'cosine' in key else '|rule| / |bptt|'}"
            ax.plot(x, mean, style, color=_color(cell, i), label=label)
            ax.fill_between(
                x, np.nan_to_num(low, nan=mean), np.nan_to_num(high, nan=mean), color=_color(cell, i), alpha=0.15
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("against full BPTT")
    _save_with_grid_and_legend(fig, ax, path, title)


def training_figures(cfg, task, histories: dict, cells: dict, out: Path) -> None:
    """The figures of a run of cells over seeds (`experiments.gradient_flow`): flow_vs_lag.png
    (at initialisation and after training), lyapunov.png and lyapunov_vs_flow.png (with
    --spectrum), gates.png, flow_heatmap.png, loss_curves.png and, under a learning rule other
    than bptt, alignment.png. `cfg`: the run's options;
    `task`: its `rnn_jax.Task`; `histories`: {cell: {seed: History}}; `cells`:
    `rnn_jax.summaries.summarise_cells`."""
    title = f"{cfg.task}, T={task.info.get('sequence_length', cfg.seq_len)}, hidden {cfg.hidden}, {cfg.seeds} seed(s)"
    last = max(0, cfg.steps - 1)
    panels = {"at initialisation": 0, f"after training (step {last})": last} if cfg.steps else {"at initialisation": 0}
    curves, slopes = {}, {}
    for panel, step in panels.items():
        curves[panel], slopes[panel] = {}, {}
        for cell, by_seed in histories.items():
            if str(step) in cells[cell]["decay_rate"]:
                top = top_state(next(iter(by_seed.values())).flow[step]["by_lag"], cfg.layers)
                curves[panel][cell] = np.array([h.flow[step]["by_lag"][top] for h in by_seed.values()])
                rate = cells[cell]["decay_rate"][str(step)]
                interval = " [{:.3f}, {:.3f}]".format(*rate["interval"]) if rate["n"] > 1 else ""  # 95% t-interval
                slopes[panel][cell] = f"{rate['mean']:.3f}{interval}"
    flow_vs_lag(curves, out / "flow_vs_lag.png", title=title, slopes=slopes)
    if cfg.spectrum and all("lyapunov" in record for record in cells.values()):  # (an encoder-decoder has none)
        by_step = {cell: {int(s): v for s, v in record["lyapunov"].items()} for cell, record in cells.items()}
        spectra(by_step, out / "lyapunov.png", title=title + ": Lyapunov spectrum of layer 0 over training")
        exponents_over_training(cells, out / "lyapunov_vs_flow.png", title=title + ": layer 0")
    gate_dynamics(cells, out / "gates.png", title=title + ": gates of layer 0 over training")
    if not cfg.steps:
        return
    if all("alignment" in record.get("measurements", {}) for record in cells.values()):
        alignment_over_training(cells, out / "alignment.png", title=f"{title}: --gradient {cfg.gradient}")
    heatmaps = {}
    for cell, record in cells.items():
        steps = sorted(record["grad_norm_by_lag"], key=int)
        heatmaps[cell] = ([int(s) for s in steps], np.array([record["grad_norm_by_lag"][s] for s in steps]))
    flow_heatmaps(heatmaps, out / "flow_heatmap.png", title=title + ": log-norm over training")
    losses = {}
    for cell, by_seed in histories.items():
        for split in ("train", "eval"):
            losses[f"{cell} {split}"] = [
                ([r["step"] for r in getattr(h, split)], [r["loss"] for r in getattr(h, split)])
                for h in by_seed.values()
            ]
    loss_curves(losses, out / "loss_curves.png", title=title, ylabel=task.metric, baseline=task.baseline)
