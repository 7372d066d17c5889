"""Gradient flow through time: vanilla RNN vs LSTM vs GRU on a long-lag task.

Trains each cell (same hidden size, data, seed and optimizer) and records, from the jitted
training step itself, the long-range profile ||dL_T/dh_{T-k}|| and the full-loss profile
||dL/dh_t|| at initialisation, every --flow-every steps and at the last step.

    python -m experiments.gradient_flow                       # adding problem, T = 100
    python -m experiments.gradient_flow --quick               # < 2 minutes
    python -m experiments.gradient_flow --task copy --seq-len 50 --seeds 3
    python -m experiments.gradient_flow --task charlm --data ../shared/data/tinyshakespeare/input.txt
    python -m experiments.gradient_flow --cells rnn --recurrent-scale 1.5 --clip-norm 1.0
    python -m experiments.gradient_flow --resume runs/gradient_flow/20261127-120000

Writes to --out: results.json (config, environment, per-cell profiles, decay rates, losses),
grad_norms.csv (long form), flow_vs_lag.png, flow_heatmap.png, loss_curves.png, logs/
(metrics.jsonl + TensorBoard per run) and checkpoints/ (orbax, resumable).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from rnn_jax import plots
from rnn_jax.cells import CELLS, LSTM_VARIANTS, make_cell
from rnn_jax.config import (
    apply_quick,
    compute_dtype,
    dtype_option,
    environment,
    option,
    parse,
    prepare_run_dir,
    require_at_least_one,
    user_errors,
    write_json,
)
from rnn_jax.data import synthetic, text
from rnn_jax.gradflow import decay_rate
from rnn_jax.layers import SequenceModel
from rnn_jax.losses import final_step_mse, sequence_cross_entropy
from rnn_jax.parallel import DEVICE_FLAGS, DataParallel, DeviceOptions, is_primary
from rnn_jax.train import (
    OPTIMIZERS,
    Checkpoints,
    LoopConfig,
    check_on_nan,
    evaluate_batches,
    init_train_state,
    make_clipper,
    make_eval_step,
    make_flow_probe,
    make_optimizer,
    make_train_step,
    split_seeds,
    stack_seeds,
    step_number,
    to_python,
    train_loop,
)

TASKS = ("adding", "copy", "charlm")
QUICK = dict(seq_len=50, hidden=32, steps=300, flow_every=50, eval_every=50)


@dataclasses.dataclass
class Config(DeviceOptions):
    task: str = option("adding", f"long-lag task: {' | '.join(TASKS)}")
    cells: str = option("rnn,lstm,gru", "comma-separated cells to compare")
    seq_len: int = option(100, "T: sequence length (adding), delay (copy: sequences are T + 20), window (charlm)")
    hidden: int = option(64, "hidden size of every cell")
    layers: int = option(1, "stacked recurrent layers")
    dtype: str = dtype_option()
    batch: int = option(64, "sequences per batch")
    steps: int = option(1500, "training steps per cell and seed; 0 records the profile at initialisation only")
    optimizer: str = option("adam", f"optimizer: {' | '.join(OPTIMIZERS)}")
    lr: float = option(3e-3, "learning rate")
    clip_norm: float | None = option(None, "clip gradients to this global norm (default: no clipping)")
    clip_value: float | None = option(None, "clip gradients element-wise to [-v, v] (default: no clipping)")
    activation: str = option("tanh", "vanilla RNN activation: tanh | relu | linear")
    recurrent_init: str = option("orthogonal", "recurrent weights: orthogonal | identity | normal")
    recurrent_scale: float = option(1.0, "spectral radius of each recurrent block at initialisation")
    forget_bias: float = option(1.0, "LSTM forget-gate bias at initialisation")
    lstm_variant: str = option("standard", f"LSTM structure (Greff et al. 2017): {' | '.join(LSTM_VARIANTS)}")
    gru_form: str = option("reset_after", "GRU form: reset_after (cuDNN/PyTorch/Flax) | reset_before (Cho et al. 2014)")
    flow_every: int = option(100, "measure the gradient flow every N training steps (and at the first and last)")
    eval_every: int = option(100, "evaluate on held-out batches every N steps")
    eval_batches: int = option(4, "held-out batches per evaluation")
    checkpoint_every: int = option(500, "save an orbax checkpoint every N steps (and at the end)")
    on_nan: str = option("stop", "a step whose loss or gradient is NaN/Inf: stop (that cell's run, all its seeds, "
                                 "ends there, with the step's gradient-flow profile saved) | skip (no update for the "
                                 "seeds concerned; counted and logged)")
    seeds: int = option(1, "independent seeds per cell (seed, seed + 1, ...), trained together by one vmapped "
                           "step: mean +- std in the results, each seed's numbers under `seeds`")
    seed: int = option(0, "first seed: model initialisation and data")
    data: str | None = option(None, "charlm: text file or glob (default: a built-in generated corpus)")
    out: str | None = option(None, "output directory (default: runs/gradient_flow/<timestamp>)")
    resume: str | None = option(None, "resume the run in this directory (its config.json replaces the other flags)")
    quick: bool = option(False, f"a small, fast configuration for a smoke test: {QUICK}, unless given explicitly")

    def __post_init__(self):
        super().__post_init__()
        if self.quick:
            apply_quick(self, QUICK)
            self.quick = False  # applied: the saved config is the effective one
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        unknown = [c for c in self.cell_names if c not in CELLS]
        if unknown or not self.cell_names:
            raise ValueError(f"--cells: unknown cell(s) {unknown}; choose from: {', '.join(CELLS)}")
        require_at_least_one(self, ("seq_len", "hidden", "layers", "batch", "seeds", "flow_every", "eval_batches"))
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.gru_form not in ("reset_after", "reset_before"):
            raise ValueError(f"--gru-form must be reset_after or reset_before, got {self.gru_form!r}")
        check_on_nan(self.on_nan)
        compute_dtype(self.dtype)
        make_clipper(self.clip_norm, self.clip_value)  # validates the combination
        make_optimizer(self.optimizer, self.lr)
        for name in self.cell_names:
            self.cell_options(name)  # validates activation, init and variant names

    @property
    def cell_names(self) -> list[str]:
        return [c.strip() for c in self.cells.split(",") if c.strip()]

    def cell_options(self, name: str) -> dict:
        common = dict(recurrent_init=self.recurrent_init, recurrent_scale=self.recurrent_scale)
        specific = {
            "rnn": dict(activation=self.activation),
            "lstm": dict(forget_bias=self.forget_bias, variant=self.lstm_variant),
            "gru": dict(reset_after=self.gru_form == "reset_after"),
        }[name]
        make_cell(name, **common, **specific)
        return {**common, **specific}


@dataclasses.dataclass
class Task:
    batch: callable  # key -> batch
    loss_fn: callable
    model_io: dict  # SequenceModel input/output sizes
    baseline: float
    metric: str
    vocab: str | None = None


def make_task(cfg: Config) -> Task:
    if cfg.task == "adding":
        return Task(
            batch=functools.partial(synthetic.adding_batch, batch=cfg.batch, length=cfg.seq_len),
            loss_fn=final_step_mse,
            model_io=dict(input_size=2, output_size=1),
            baseline=synthetic.ADDING_BASELINE_MSE,
            metric="MSE",
        )
    if cfg.task == "copy":
        return Task(
            batch=functools.partial(synthetic.copy_batch, batch=cfg.batch, delay=cfg.seq_len),
            loss_fn=sequence_cross_entropy,
            model_io=dict(vocab_size=synthetic.COPY_VOCAB, output_size=synthetic.COPY_VOCAB),
            baseline=synthetic.copy_baseline(cfg.seq_len),
            metric="cross-entropy (nats/step)",
        )
    corpus = text.load_text(cfg.data) if cfg.data else text.builtin_corpus(seed=cfg.seed)
    vocab = text.CharVocab.from_text(corpus)
    data = jax.numpy.asarray(vocab.encode(corpus))
    return Task(
        batch=lambda key: text.random_windows(key, data, cfg.batch, cfg.seq_len),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=vocab.size, output_size=vocab.size),
        baseline=float(np.log(vocab.size)),
        metric="cross-entropy (nats/char)",
        vocab=vocab.chars,
    )


def train_cell(cfg: Config, task: Task, cell_name: str, out: Path) -> dict[int, dict]:
    """Train one cell for every seed at once (or resume it): the seeds' models are stacked
    and trained by one vmapped step, each on its own data. Returns {seed: history}."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)
    states = []
    for seed in seeds:
        model = SequenceModel(
            make_cell(cell_name, **cfg.cell_options(cell_name)), hidden_size=cfg.hidden, num_layers=cfg.layers,
            compute_dtype=compute_dtype(cfg.dtype), rngs=nnx.Rngs(seed), **task.model_io,
        )
        graphdef, state = init_train_state(model, optimizer, jax.random.key(seed))
        states.append(state)
    parallel = DataParallel(cfg.devices, batch_axis=1)  # batches are (seed, batch, ...)
    parallel.check_batch(cfg.batch)
    state = parallel.place_state(stack_seeds(states))
    # each seed's (data, evaluation) keys, as a single-seed run of that seed has them: (seeds, 2)
    keys = jax.numpy.stack([jax.random.split(jax.random.fold_in(jax.random.key(seed), 1)) for seed in seeds])
    data_keys, eval_keys = keys[:, 0], keys[:, 1]
    # batch `index` of every seed's stream, one jitted call (`index` traced: no retrace per step)
    batches = jax.jit(lambda keys, index: jax.vmap(task.batch)(jax.vmap(jax.random.fold_in, (0, None))(keys, index)))

    def get_batch(step):
        return batches(data_keys, step)

    if cfg.steps == 0:  # the profile at initialisation only
        _, flow = make_flow_probe(graphdef, task.loss_fn, seeds=True)(state.params, get_batch(0))
        history = {"train": [], "eval": [], "flow": {"0": to_python(flow)}, "status": "completed"}
        return dict(zip(seeds, split_seeds(history, len(seeds))))

    checkpoints = Checkpoints(out / "checkpoints" / cell_name, keep=2)
    history = None
    if checkpoints.latest_step() is not None:
        state, extra = checkpoints.restore(state)
        history = extra["history"]
        if history["status"] in ("completed", "diverged"):
            checkpoints.close()
            return dict(zip(seeds, split_seeds(history, len(seeds))))
        print(f"{cell_name}: resuming at step {step_number(state)}", file=sys.stderr)

    clipper = make_clipper(cfg.clip_norm, cfg.clip_value)
    evaluate = evaluate_batches(make_eval_step(graphdef, task.loss_fn, seeds=True),
                                [parallel.replicate(batches(eval_keys, i)) for i in range(cfg.eval_batches)])
    _, history = train_loop(
        state,
        train_step=make_train_step(graphdef, optimizer, task.loss_fn, clipper=clipper, seeds=True),
        flow_step=make_train_step(graphdef, optimizer, task.loss_fn, clipper=clipper, measure_flow=True, seeds=True),
        get_batch=get_batch,
        parallel=parallel,
        evaluate=evaluate,
        loop=LoopConfig(steps=cfg.steps, log_every=10, eval_every=cfg.eval_every, flow_every=cfg.flow_every,
                        checkpoint_every=cfg.checkpoint_every, on_nan=cfg.on_nan),
        checkpoints=checkpoints,
        checkpoint_extra=lambda h: {"config": dataclasses.asdict(cfg), "history": h},
        history=history,
        log_dir=out / "logs" / cell_name,
        desc=f"{cell_name} x {len(seeds)} seed(s)",
    )
    checkpoints.close()
    return dict(zip(seeds, split_seeds(history, len(seeds))))


def summarise(cfg: Config, task: Task, histories: dict[str, dict[int, dict]]) -> dict:
    """results.json's `cells` section: per cell, profiles averaged over seeds (the top layer's
    h), decay rates, final metric; each seed's full record under `seeds`."""
    top = f"layer{cfg.layers - 1}/h"
    cells = {}
    for cell, by_seed in histories.items():
        steps = sorted({int(s) for h in by_seed.values() for s in h["flow"]}, key=int)
        steps = [s for s in steps if all(str(s) in h["flow"] for h in by_seed.values())]
        by_lag = {s: np.array([h["flow"][str(s)]["by_lag"][top] for h in by_seed.values()]) for s in steps}
        by_step = {s: np.array([h["flow"][str(s)]["by_step"][top] for h in by_seed.values()]) for s in steps}
        rates = {s: [decay_rate(p) for p in by_lag[s]] for s in steps}
        finals = [h["eval"][-1]["loss"] if h["eval"] else float("nan") for h in by_seed.values()]
        cells[cell] = {
            "grad_norm_by_lag": {str(s): by_lag[s].mean(0).tolist() for s in steps},
            "grad_norm_by_step": {str(s): by_step[s].mean(0).tolist() for s in steps},
            "decay_rate": {str(s): {"mean": float(np.mean(r)), "std": float(np.std(r)), "per_seed": r} for s, r in rates.items()},
            "final_eval_loss": {"mean": float(np.mean(finals)), "std": float(np.std(finals)), "per_seed": finals},
            "status": {str(seed): h["status"] for seed, h in by_seed.items()},
            "seeds": {str(seed): h for seed, h in by_seed.items()},
        }
    return cells


def write_csv(path: Path, histories: dict[str, dict[int, dict]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "seed", "training_step", "profile", "component", "index", "grad_norm"])
        for cell, by_seed in histories.items():
            for seed, history in by_seed.items():
                for step, flow in history["flow"].items():
                    for profile, by_key in flow.items():
                        for component, norms in by_key.items():
                            for index, norm in enumerate(norms):
                                writer.writerow([cell, seed, step, profile, component, index, norm])


def make_plots(cfg: Config, task: Task, cells: dict, out: Path) -> None:
    title = f"{cfg.task}, T={cfg.seq_len}, hidden {cfg.hidden}, {cfg.seeds} seed(s)"
    top = f"layer{cfg.layers - 1}/h"
    first, last = "0", str(max(0, cfg.steps - 1))
    panels = {"at initialisation": first, f"after training (step {last})": last} if cfg.steps else {"at initialisation": first}
    curves, slopes = {}, {}
    for panel, step in panels.items():
        curves[panel], slopes[panel] = {}, {}
        for cell, record in cells.items():
            if step in record["grad_norm_by_lag"]:
                curves[panel][cell] = np.array([h["flow"][step]["by_lag"][top] for h in record["seeds"].values()])
                rate = record["decay_rate"][step]
                slopes[panel][cell] = f"{rate['mean']:.3f}" + (f"±{rate['std']:.3f}" if cfg.seeds > 1 else "")
    plots.flow_vs_lag(curves, out / "flow_vs_lag.png", title=title, slopes=slopes)
    if not cfg.steps:
        return
    maps = {}
    for cell, record in cells.items():
        steps = sorted(record["grad_norm_by_lag"], key=int)
        maps[cell] = ([int(s) for s in steps], np.array([record["grad_norm_by_lag"][s] for s in steps]))
    plots.flow_heatmaps(maps, out / "flow_heatmap.png", title=title + ": log-norm over training")
    losses = {}
    for cell, record in cells.items():
        losses[f"{cell} train"] = [([r["step"] for r in h["train"]], [r["loss"] for r in h["train"]]) for h in record["seeds"].values()]
        losses[f"{cell} eval"] = [([r["step"] for r in h["eval"]], [r["loss"] for r in h["eval"]]) for h in record["seeds"].values()]
    plots.loss_curves(losses, out / "loss_curves.png", title=title, ylabel=task.metric, baseline=task.baseline)


def main(argv=None):
    cfg = parse(Config, argv, description=__doc__)
    with user_errors():
        cfg.start_processes(cfg.out or cfg.resume)
        results = run(cfg)
    print_summary(results)


def run(cfg: Config) -> dict:
    """Run (or resume) the experiment described by `cfg`; returns results.json's content."""
    out, cfg, _ = prepare_run_dir(cfg, "gradient_flow", from_command_line=DEVICE_FLAGS)
    task = make_task(cfg)
    started = time.time()
    histories = {cell: train_cell(cfg, task, cell, out) for cell in cfg.cell_names}
    cells = summarise(cfg, task, histories)
    results = {
        "config": dataclasses.asdict(cfg),
        "environment": environment(),
        "task": {"name": cfg.task, "metric": task.metric, "baseline": task.baseline, "vocab": task.vocab},
        "wall_time_s": time.time() - started,
        "cells": cells,
    }
    write_json(out / "results.json", results)
    if is_primary():
        write_csv(out / "grad_norms.csv", histories)
    make_plots(cfg, task, cells, out)
    results["out"] = str(out)
    return results


def print_summary(results: dict) -> None:
    cfg, task = results["config"], results["task"]
    last = str(max(0, cfg["steps"] - 1))
    print(f"\n{cfg['task']}: T={cfg['seq_len']}, hidden {cfg['hidden']}, {cfg['steps']} steps, "
          f"{cfg['seeds']} seed(s) -> {results['out']}")
    print(f"{'cell':<6} {'decay/step at init':>19} {'decay/step trained':>19} {'final eval ' + task['metric']:>28}  status")
    for cell, record in results["cells"].items():
        rate = lambda s: (f"{record['decay_rate'][s]['mean']:+.4f}" if s in record["decay_rate"] else "-")
        final = record["final_eval_loss"]
        print(f"{cell:<6} {rate('0'):>19} {rate(last):>19} {final['mean']:>28.4g}  {','.join(set(record['status'].values()))}")
    print(f"baseline {task['metric']}: {task['baseline']:.4g}")


if __name__ == "__main__":
    main()
