"""What every task experiment shares: the model and training flags (`TrainingOptions`), the
run itself (`fit`: the shared loop with evaluation, gradient-flow records, checkpoints and
resume), results (`finish`: results.json, loss curves, gradient-flow plot) and loading a
finished run for prediction (`load_run`).

An experiment module (see experiments/sentiment.py) declares a Config that extends
`TrainingOptions` with its data flags, and three functions of its own: load the data, build
the model from (config, vocabularies), and compute its task metric.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from flax import nnx

from rnn_jax import plots
from rnn_jax.cells import CELLS
from rnn_jax.config import (
    apply_quick,
    compute_dtype,
    dtype_option,
    environment,
    option,
    parse,
    require_at_least_one,
    user_errors,
    write_json,
)
from rnn_jax.gradflow import decay_rate
from rnn_jax.parallel import DEVICE_FLAGS, DataParallel, DeviceOptions
from rnn_jax.train import (
    BEST_BY,
    OPTIMIZERS,
    SCHEDULES,
    Checkpoints,
    LoopConfig,
    check_best_by,
    check_on_nan,
    TrainState,
    evaluate_batches,
    init_train_state,
    make_clipper,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    train_loop,
)


def best_by_option(default: str):
    """The --best-by field; a task whose test metric is an accuracy declares it with "accuracy"."""
    return option(default, f"the validation metric that picks the best checkpoint, the one tested: "
                           f"{' | '.join(f'{k} ({v})' for k, v in BEST_BY.items())}")


@dataclasses.dataclass
class TrainingOptions(DeviceOptions):
    """Model and training flags shared by the task experiments (and where they run,
    `DeviceOptions`). A subclass sets `QUICK`, the options of `--quick` (a CI-sized run), and
    adds its data flags."""

    QUICK: ClassVar[dict] = {}

    cell: str = option("lstm", f"recurrent cell: {' | '.join(CELLS)}")
    layers: int = option(1, "stacked recurrent layers")
    hidden: int = option(128, "hidden size")
    dropout: float = option(0.0, "dropout between layers")
    dtype: str = dtype_option()
    batch: int = option(32, "examples per training step")
    steps: int = option(2000, "training steps (also the horizon of the learning-rate decay)")
    minutes: float | None = option(None, "wall-clock budget of this invocation (also with --resume): stop, evaluated "
                                         "and saved, after this many minutes")
    optimizer: str = option("adam", f"optimizer: {' | '.join(OPTIMIZERS)}")
    lr: float = option(2e-3, "peak learning rate")
    schedule: str = option("cosine", f"learning-rate schedule after warm-up: {' | '.join(SCHEDULES)}")
    warmup: int = option(100, "linear warm-up steps")
    clip_norm: float | None = option(1.0, "clip gradients to this global norm; 0 disables (default: 1.0)")
    clip_value: float | None = option(None, "clip gradients element-wise to [-v, v] instead")
    eval_every: int = option(200, "evaluate on the validation split every N steps")
    best_by: str = best_by_option("loss")
    flow_every: int | None = option(None, "measure the gradient flow ||dL/dh_t|| every N steps "
                                          "(default: at the first and the last step)")
    on_nan: str = option("stop", "a step whose loss or gradient is NaN/Inf: stop (the run ends there, with that "
                                 "step's gradient-flow profile saved) | skip (no update; counted and logged)")
    checkpoint_every: int = option(200, "save a checkpoint every N steps (and at the end)")
    keep: int = option(2, "checkpoints to keep (besides the best, --best-by)")
    seed: int = option(0, "seed of initialisation, data split and order, and dropout")
    out: str | None = option(None, "output directory (default: runs/<experiment>/<timestamp>)")
    resume: str | None = option(None, "continue the run in this directory from its last checkpoint, with its "
                                      "saved config (other flags but --minutes are ignored)")
    quick: bool = option(False, "a small, fast configuration for a smoke test (see QUICK in the source), unless "
                                "given explicitly")

    def __post_init__(self):
        super().__post_init__()
        if self.quick:
            apply_quick(self, self.QUICK)
            self.quick = False  # applied: the saved config is the effective one
        if self.clip_norm == 0:
            self.clip_norm = None
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of: {', '.join(CELLS)}")
        require_at_least_one(self, ("layers", "hidden", "batch", "steps", "eval_every", "checkpoint_every", "keep"))
        check_best_by(self.best_by)
        check_on_nan(self.on_nan)
        compute_dtype(self.dtype)
        if self.flow_every is not None:
            require_at_least_one(self, ("flow_every",))
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        make_clipper(self.clip_norm, self.clip_value)
        make_optimizer(self.optimizer, self.lr)
        make_schedule(self.lr, schedule=self.schedule, warmup_steps=self.warmup, total_steps=self.steps)

    def layer_options(self) -> dict:
        """Options of every recurrent layer (`rnn_jax.layers.Recurrent`) set by the flags."""
        return {"compute_dtype": compute_dtype(self.dtype)}


@dataclasses.dataclass
class TaskOptions(TrainingOptions):
    """`TrainingOptions` and the prediction mode of a task experiment (--checkpoint, --input)."""

    checkpoint: str | None = option(None, "prediction mode: the output directory of a trained run (with --input)")
    input: str | None = option(None, "prediction mode: the input to predict for (see the examples above)")

    def __post_init__(self):
        super().__post_init__()
        if (self.checkpoint is None) != (self.input is None):
            raise ValueError("prediction needs both --checkpoint RUN_DIR and --input ...")


# what a resumed run takes from its command line rather than from its saved config: how long
# and where it runs, not what it trains
RUNTIME_FLAGS = ("minutes", *DEVICE_FLAGS)


def make_training(cfg: TrainingOptions):
    """(optimizer with its learning-rate schedule, gradient clipper) of `cfg`."""
    schedule = make_schedule(cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup, total_steps=cfg.steps)
    return make_optimizer(cfg.optimizer, schedule), make_clipper(cfg.clip_norm, cfg.clip_value)


@dataclasses.dataclass
class Fitted:
    graphdef: nnx.GraphDef
    state: TrainState  # at the end of training
    params: nnx.State  # the best by the validation metric cfg.best_by (what is tested)
    history: dict
    wall_time_s: float  # of this invocation


def fit(
    cfg: TrainingOptions,
    out: Path,
    resuming: bool,
    *,
    model: nnx.Module,
    loss_fn: Callable,
    get_batch: Callable[[int], dict],
    eval_batches: Iterable[dict],
    extra: dict,
    desc: str,
    tokens_per_step: int | None = None,
    stateful: bool = False,
) -> Fitted:
    """Train `model` on the shared loop (jitted step, optax, evaluation every
    `cfg.eval_every` steps, gradient flow from the training step itself, orbax checkpoints,
    JSONL + TensorBoard logs, Ctrl-C / time-budget stops) and restore its best parameters
    (by `cfg.best_by` on the validation batches).

    `extra` (vocabularies, label names, normalisation: what prediction needs besides the
    config) is saved with every checkpoint; on resume it must match what the data gives.
    `stateful`: truncated BPTT over `cfg.batch` parallel streams (see `make_train_step`); the
    evaluation batches are then consecutive windows of streams too, the state carried across.
    """
    optimizer, clipper = make_training(cfg)
    parallel = DataParallel(cfg.devices)
    parallel.check_batch(cfg.batch)
    graphdef, state = init_train_state(model, optimizer, jax.random.key(cfg.seed),
                                       stateful_batch=cfg.batch if stateful else None)
    state = parallel.place_state(state)  # a checkpoint restores into this placement, whatever it was saved from
    checkpoints = Checkpoints(out / "checkpoints", keep=cfg.keep, best_by=cfg.best_by)
    history = None
    if resuming:
        saved = checkpoints.restore_extra()  # first what the data must match, then the state
        changed = [k for k in extra if json.loads(json.dumps(extra[k])) != saved.get(k)]
        if changed:
            raise ValueError(f"{out}: the data gives a different {', '.join(changed)} than the checkpoint's; same data flags?")
        if saved["history"]["status"] == "completed":
            sys.exit(f"{out}: this run already finished ({checkpoints.latest_step()} steps); nothing to resume")
        state, saved = checkpoints.restore(state)
        history = saved["history"]
        print(f"resuming {out} at step {int(state.step)}", file=sys.stderr)
    started = time.time()
    state, history = train_loop(
        state,
        train_step=make_train_step(graphdef, optimizer, loss_fn, clipper=clipper, stateful=stateful),
        flow_step=make_train_step(graphdef, optimizer, loss_fn, clipper=clipper, stateful=stateful, measure_flow=True),
        get_batch=get_batch,
        parallel=parallel,
        evaluate=evaluate_batches(make_eval_step(graphdef, loss_fn), map(parallel.replicate, eval_batches),
                                  carry_over=stateful),
        loop=LoopConfig(steps=cfg.steps, log_every=10, eval_every=cfg.eval_every, flow_every=cfg.flow_every or cfg.steps,
                        checkpoint_every=cfg.checkpoint_every, max_seconds=cfg.minutes * 60 if cfg.minutes else None,
                        tokens_per_step=tokens_per_step, on_nan=cfg.on_nan),
        checkpoints=checkpoints,
        checkpoint_extra=lambda h: {"config": dataclasses.asdict(cfg), **extra, "history": h},
        history=history,
        log_dir=out / "logs",
        desc=desc,
    )
    wall = time.time() - started
    params = state.params
    if checkpoints.best.latest_step() is not None:
        params = checkpoints.restore(state, best=True, step=checkpoints.best.best_step())[0].params
    if jax.process_count() > 1:  # the tests and predictions after training run in each process alone
        params = jax.device_get(params)
    checkpoints.close()
    return Fitted(graphdef, state, params, history, wall)


def flow_summary(history: dict) -> dict:
    """Per measured step: the fitted decay rate of ||dL_T/dh_{T-k}|| of every probed state
    (see `rnn_jax.gradflow.decay_rate`)."""
    return {step: {key: decay_rate(norms) for key, norms in flow.get("by_lag", {}).items()}
            for step, flow in history["flow"].items()}


def finish(cfg: TrainingOptions, out: Path, fitted: Fitted, metrics: dict, *, title: str, extra: dict | None = None) -> dict:
    """Write results.json (config, environment, task metrics, status, wall time, history with
    the gradient-flow profiles and their decay rates), loss_curves.png and flow_vs_lag.png."""
    history = fitted.history
    results = {
        "config": dataclasses.asdict(cfg),
        "environment": environment(),
        **(extra or {}),
        "metrics": metrics,
        "status": history["status"],
        "steps": int(fitted.state.step),
        "wall_time_s": fitted.wall_time_s,
        "flow_decay_rates": flow_summary(history),
        "history": history,
    }
    write_json(out / "results.json", results)
    plot_history(cfg, out, history, title=title)
    results["out"] = str(out)
    return results


def class_probabilities(logits, labels) -> list[str]:
    """One line per class: its softmax probability under `logits` (classes,)."""
    return [f"class {label}: p = {p:.3f}" for label, p in zip(labels, np.asarray(jax.nn.softmax(logits)))]


def main(config_cls, run: Callable, predict: Callable, summary: Callable, argv=None, *, description: str) -> None:
    """The command line of a task experiment: prediction with --checkpoint/--input, else a
    run, then `summary(cfg, results)` printed."""
    cfg = parse(config_cls, argv, description=description)
    with user_errors():
        cfg.start_processes(cfg.out or cfg.resume)
        if cfg.checkpoint:
            print(predict(cfg.checkpoint, cfg.input))
            return
        print(summary(cfg, run(cfg)))


def plot_history(cfg: TrainingOptions, out: Path, history: dict, *, title: str, ylabel: str = "loss") -> None:
    """loss_curves.png (train and validation) and flow_vs_lag.png (the first and the last
    gradient-flow profile of the run)."""
    curves = {f"{cfg.cell} {split}": [([r["step"] for r in history[split]], [r["loss"] for r in history[split]])]
              for split in ("train", "eval") if history[split]}
    if curves:
        plots.loss_curves(curves, out / "loss_curves.png", title=title, ylabel=ylabel, log=False)
    steps = sorted(history["flow"], key=int)
    if steps:
        panels = {f"step {s}" + (" (initialisation)" if s == "0" else ""): {
            key: np.asarray(norms)[None] for key, norms in history["flow"][s].get("by_lag", {}).items()}
            for s in (steps[0], steps[-1])}
        plots.flow_vs_lag(panels, out / "flow_vs_lag.png", title=f"{title}: ||dL_T/dh_(T-k)|| ({cfg.cell})")


def load_run(run_dir: str | Path, config_cls, build_model: Callable, *, last: bool = False):
    """A trained run, for prediction: (config, extra saved with the checkpoint, model with the
    best parameters by validation loss, or the latest with `last`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
        sys.exit(f"--checkpoint {run_dir}: not a run directory (it needs config.json and checkpoints/)")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    saved = {k: v for k, v in json.loads((run_dir / "config.json").read_text()).items()
             if k not in ("resume", "checkpoint", "input")}
    if set(saved) - fields:
        sys.exit(f"--checkpoint {run_dir}: its config has fields {sorted(set(saved) - fields)} that a "
                 f"{config_cls.__module__} run does not: a run of another experiment?")
    cfg = config_cls(**saved, **{k: None for k in ("resume", "checkpoint", "input") if k in fields})
    checkpoints = Checkpoints(run_dir / "checkpoints", best_by=cfg.best_by)
    best = not last and checkpoints.best.latest_step() is not None
    manager = checkpoints.best if best else checkpoints.last
    step = manager.best_step() if best else manager.latest_step()
    if step is None:
        sys.exit(f"{run_dir}: no checkpoint saved yet")
    # the vocabularies live in the checkpoint's JSON: read it first to shape the model
    extra = checkpoints.restore_extra(best=best, step=step)
    model = build_model(cfg, extra)
    optimizer, _ = make_training(cfg)
    _, like = init_train_state(model, optimizer, jax.random.key(cfg.seed), **_stateful(model, cfg))
    state, _ = checkpoints.restore(like, best=best, step=step)
    checkpoints.close()
    nnx.update(model, state.params)
    return cfg, extra, model


def _stateful(model, cfg) -> dict:
    """char_lm's stateful truncated BPTT keeps the streams' carries in the state."""
    return {"stateful_batch": cfg.batch} if getattr(cfg, "tbptt", None) == "stateful" else {}
