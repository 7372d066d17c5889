"""Gradient flow through time: vanilla RNN vs LSTM vs GRU on a long-lag task.

Trains each cell (same hidden size, data, seed and optimizer) and records, from the jitted
training step itself, the long-range profile ||dL_T/dh_{T-k}|| and the full-loss profile
||dL/dh_t|| at initialisation, every --flow-every steps and at the last step.

    python -m experiments.gradient_flow                       # adding problem, T = 100
    python -m experiments.gradient_flow --quick               # < 2 minutes
    python -m experiments.gradient_flow --task copy --seq-len 50 --seeds 3
    python -m experiments.gradient_flow --task charlm --data tinyshakespeare
    python -m experiments.gradient_flow --cells rnn --recurrent-scale 1.5 --clip-norm 1.0
    python -m experiments.gradient_flow --resume runs/gradient_flow/20261127-120000

Writes to --out: results.json (config, environment, per-cell profiles, decay rates, losses),
grad_norms.csv (long form), flow_vs_lag.png, flow_heatmap.png, loss_curves.png, lyapunov.png and lyapunov_vs_flow.png
(with --spectrum), gates.png, logs/
(metrics.jsonl + TensorBoard per run) and checkpoints/ (orbax, resumable).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from experiments import cli
from rnn_jax import plots, summaries
from rnn_jax.cells import CELLS
from rnn_jax.choices import check_choice
from rnn_jax.config import prepare_run_dir, require_at_least_one
from rnn_jax.data.batches import chunks
from rnn_jax.experiment import TrainingData, fit, write_results
from rnn_jax.history import History
from rnn_jax.options import RUNTIME_FLAGS, TrainingOptions
from rnn_jax.parallel import is_primary
from rnn_jax.seeds import split_seeds
from rnn_jax.tasks import TASKS, Task, make_task, stacked_batch


@dataclasses.dataclass
class Config(TrainingOptions):
    QUICK: ClassVar[dict] = dict(seq_len=50, hidden=32, steps=200, flow_every=50, eval_every=50)

    task: str = "adding"
    """the task (rnn_jax.tasks): adding | copy | selective_copy | flipflop | mqar | charlm | sentiment | tagging |
    mnist_pixels | mnist_permuted | mnist_rows | forecast, or one registered by --imports"""
    cells: tuple[str, ...] = ("rnn", "lstm", "gru")
    """the cells to compare (space- or comma-separated): rnn | lstm | gru | mingru | minlstm | lru, or ones
    registered by --imports"""
    seq_len: int = 100
    """T: sequence length (adding), delay (copy: sequences are T + 20), noise length (selective_copy: sequences
    are T + 1 + --tokens), window (charlm), tokens per text, left-padded (sentiment) or words per sentence,
    right-padded (tagging), steps (flipflop, mqar), window (forecast); MNIST's is fixed (784 pixels, 28 rows)"""
    tokens: int = 16
    """selective_copy: data tokens to find among the T steps and copy"""
    seeds: int = 1
    """independent seeds per cell (seed, seed + 1, ...), trained together by one vmapped step: mean +- std in
    the results, each seed's numbers under `seeds`"""
    eval_batches: int = 4
    """held-out batches per evaluation (tasks on rows of a dataset: every held-out row, in --batch chunks)"""
    data: str | None = None
    """the task's data: charlm: a corpus name (tinyshakespeare | stacks_latex | linux_c, from $RNN_JAX_DATA or
    the hub), a text file or a quoted glob (default: a built-in generated corpus); sentiment: labelled texts
    (default rt_sentence_polarity); tagging: a treebank (default ud_english_ewt); mnist_*: digits (default
    mnist: $RNN_JAX_DATA/mnist, else the hub's ylecun/mnist); forecast: a built-in series (airline | co2 |
    sunspots | nile | unemployment; default airline)"""
    # this experiment's defaults (measured in docs/gradient-flow.md with them)
    hidden: int = 64
    batch: int = 64
    steps: int = 1500
    lr: float = 3e-3
    schedule: str = "constant"
    warmup: int | None = 0
    clip_norm: float | None = None
    eval_every: int = 100
    flow_every: int | None = 100
    checkpoint_every: int = 500
    spectrum: int = 16

    def __post_init__(self):
        # "rnn,lstm" and ("rnn", "lstm") alike (idempotent, so a saved config reloads unchanged)
        self.cells = tuple(name.strip() for part in self.cells for name in part.split(",") if name.strip())
        super().__post_init__()
        check_choice("task", self.task, TASKS)  # after --imports: they may register it
        if not self.cells:
            raise ValueError(f"--cells: name at least one of: {', '.join(CELLS)}")
        for cell in self.cells:
            check_choice("cell", cell, CELLS)
        require_at_least_one(self, ("seq_len", "seeds", "eval_batches"))

    def selected_cells(self) -> tuple[str, ...]:
        return self.cells


def train_cell(cfg: Config, task: Task, cell_name: str, out: Path) -> dict[int, History]:
    """Train one cell for every seed at once (or resume it): the seeds' models are stacked and
    trained by one vmapped step, each on its own data. Returns {seed: history}."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    # each seed's (data, evaluation) keys, as a single-seed run of that seed has them: (seeds, 2)
    keys = jax.numpy.stack([jax.random.split(jax.random.fold_in(jax.random.key(seed), 1)) for seed in seeds])
    data_keys, eval_keys = keys[:, 0], keys[:, 1]

    fitted = fit(
        cfg,
        out,
        lambda seed: cfg.sequence_model(cell_name, seed, **task.model_io),
        TrainingData(
            task.loss_fn,
            lambda step: stacked_batch(task.batch, data_keys, step, task.data),
            held_out_batches(cfg, task, eval_keys),
        ),
        seeds=seeds,
        name=cell_name,
        desc=f"{cell_name} x {len(seeds)} seed(s)",
    )
    return dict(zip(seeds, split_seeds(fitted.history, len(seeds))))


def make_plots(cfg: Config, task: Task, histories: dict[str, dict[int, History]], cells: dict, out: Path) -> None:
    title = f"{cfg.task}, T={task.info.get('sequence_length', cfg.seq_len)}, hidden {cfg.hidden}, {cfg.seeds} seed(s)"
    top = f"layer{cfg.layers - 1}/h"
    last = max(0, cfg.steps - 1)
    panels = {"at initialisation": 0, f"after training (step {last})": last} if cfg.steps else {"at initialisation": 0}
    curves, slopes = {}, {}
    for panel, step in panels.items():
        curves[panel], slopes[panel] = {}, {}
        for cell, by_seed in histories.items():
            if str(step) in cells[cell]["decay_rate"]:
                curves[panel][cell] = np.array([h.flow[step]["by_lag"][top] for h in by_seed.values()])
                rate = cells[cell]["decay_rate"][str(step)]
                slopes[panel][cell] = f"{rate['mean']:.3f}" + (f"±{rate['std']:.3f}" if cfg.seeds > 1 else "")
    plots.flow_vs_lag(curves, out / "flow_vs_lag.png", title=title, slopes=slopes)
    if cfg.spectrum:
        spectra = {cell: {int(s): v for s, v in record["lyapunov"].items()} for cell, record in cells.items()}
        plots.spectra(spectra, out / "lyapunov.png", title=title + ": Lyapunov spectrum of layer 0 over training")
        plots.exponents_over_training(cells, out / "lyapunov_vs_flow.png", title=title + ": layer 0")
    plots.gate_dynamics(cells, out / "gates.png", title=title + ": gates of layer 0 over training")
    if not cfg.steps:
        return
    maps = {}
    for cell, record in cells.items():
        steps = sorted(record["grad_norm_by_lag"], key=int)
        maps[cell] = ([int(s) for s in steps], np.array([record["grad_norm_by_lag"][s] for s in steps]))
    plots.flow_heatmaps(maps, out / "flow_heatmap.png", title=title + ": log-norm over training")
    losses = {}
    for cell, by_seed in histories.items():
        for split in ("train", "eval"):
            losses[f"{cell} {split}"] = [
                ([r["step"] for r in getattr(h, split)], [r["loss"] for r in getattr(h, split)])
                for h in by_seed.values()
            ]
    plots.loss_curves(losses, out / "loss_curves.png", title=title, ylabel=task.metric, baseline=task.baseline)


def run(cfg: Config) -> dict:
    """Run (or resume) the experiment described by `cfg`; returns results.json's content."""
    out, cfg, _ = prepare_run_dir(cfg, "gradient_flow", from_command_line=RUNTIME_FLAGS)
    task = make_task(cfg.task, cfg)
    started = time.time()
    histories = {cell: train_cell(cfg, task, cell, out) for cell in cfg.cells}
    cells = summaries.summarise_cells(cfg, histories, solved_below=task.solved_threshold)
    for line in summaries.unconverged(cells):
        print(f"warning: {line}", file=sys.stderr)
    results = write_results(
        cfg,
        out,
        {
            "task": {
                "name": cfg.task,
                "metric": task.metric,
                "baseline": task.baseline,
                "vocab": task.vocab,
                "solved_below": task.solved_threshold,
                **task.info,
            },
            "wall_time_s": time.time() - started,
            "cells": cells,
        },
    )
    if is_primary():
        summaries.write_flow_csv(out / "grad_norms.csv", histories)
    make_plots(cfg, task, histories, cells, out)
    return results


def held_out_batches(cfg: Config, task: Task, keys) -> list[dict]:
    """The evaluation batches, with a leading seed axis: every held-out row in chunks of --batch
    for tasks that hold their rows (`Task.eval_in_order`), else --eval-batches draws."""
    if not task.eval_in_order:
        data = task.data if task.eval_data is None else task.eval_data
        return [stacked_batch(task.batch, keys, i, data) for i in range(cfg.eval_batches)]
    seeds = len(keys)
    return [
        jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (seeds, *a.shape)), c)
        for c in chunks(task.eval_data[0], cfg.batch)
    ]


def summary(cfg: Config, results: dict) -> str:
    """The printed table: per cell, decay rate and leading Lyapunov exponent at initialisation
    and after training, the final evaluation (seed mean with its 95% t-interval, then each seed),
    the seeds that solved the task (with the exact binomial interval) and the status."""
    task, last = results["task"], str(max(0, cfg.steps - 1))
    lines = [
        f"\n{cfg.task}: T={task.get('sequence_length', cfg.seq_len)}, hidden {cfg.hidden}, {cfg.steps} steps, "
        f"{cfg.seeds} seed(s) -> "
        f"{results['out']}",
        f"{'cell':<8} {'decay/step':>10} {'trained':>8} {'lambda_1':>9} {'trained':>8}  final eval {task['metric']}",
    ]
    for cell, record in results["cells"].items():
        rate = lambda s: f"{record['decay_rate'][s]['mean']:+.4f}" if s in record["decay_rate"] else "-"  # noqa: E731
        spectra = record.get("lyapunov_summary", {})
        lead = lambda s: f"{spectra[s]['leading']:+.4f}" if s in spectra else "-"  # noqa: E731
        final = record["final_eval_loss"]
        per_seed = " ".join(f"{v:.4g}" for v in final["per_seed"])
        low, high = final.get("interval", [float("nan")] * 2)
        line = f"{final['mean']:.4g} [{low:.3g}, {high:.3g}] ({per_seed})" if cfg.seeds > 1 else f"{final['mean']:.4g}"
        if "solved" in record:
            solved = record["solved"]
            line += (
                f", solved {solved['solved']}/{solved['n']} [{solved['interval'][0]:.2f}, {solved['interval'][1]:.2f}]"
            )
        if "final_eval_accuracy" in record:
            line += f", accuracy {record['final_eval_accuracy']['mean']:.4f}"
        status = ",".join(sorted(set(record["status"].values())))
        lines.append(f"{cell:<8} {rate('0'):>10} {rate(last):>8} {lead('0'):>9} {lead(last):>8}  {line}  [{status}]")
    lines.append(f"baseline {task['metric']}: {task['baseline']:.4g}; solved: below {task.get('solved_below', 0):.4g}")
    if cfg.seeds > 1:
        lines.append("[intervals: 95% t-interval of the seed mean; solved: exact binomial 95% interval]")
    return "\n".join(lines)


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
