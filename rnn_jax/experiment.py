"""What every experiment shares: the model and training options (`TrainingOptions`), the run
(`fit`: the shared loop with evaluation, gradient-flow records, checkpoints and resume; one
model or several seeds stacked), its results (`finish`: results.json, loss curves, gradient-flow
plot) and loading a finished run for prediction (`load_run`).

An experiment (see experiments/sentiment.py) is a Config that extends `TrainingOptions` (or
`TaskOptions`) with its data flags and its own defaults, a model builder, its data, one `fit`
and one `finish`. Everything here raises on bad input; the command line (`experiments.cli`)
turns that into a message.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from flax import nnx

from rnn_jax import plots
from rnn_jax.cells import CELLS, LSTM_VARIANTS, Cell, make_cell
from rnn_jax.checkpoints import Checkpoints, check_best_by
from rnn_jax.config import compute_dtype, config_from_json, environment, import_modules, require_at_least_one, write_json
from rnn_jax.gradflow import decay_rate
from rnn_jax.history import History
from rnn_jax.loop import LoopConfig, check_on_nan, evaluate_batches, to_python, train_loop
from rnn_jax.losses import LossFn
from rnn_jax.optim import default_warmup, make_clipper, make_optimizer, make_schedule
from rnn_jax.parallel import DEVICE_FLAGS, DataParallel, DeviceOptions
from rnn_jax.seeds import stack_seeds
from rnn_jax.train import TrainState, init_train_state, make_eval_step, make_flow_probe, make_train_step

GRU_FORMS = ("reset_after", "reset_before")


@dataclasses.dataclass
class TrainingOptions(DeviceOptions):
    """Model, cell and training options shared by every experiment (and where it runs,
    `DeviceOptions`). A subclass changes a default by redeclaring the field (`steps: int = 500`;
    the help text is inherited), sets `QUICK` (the values of `--quick`, a CI-sized run) and adds
    its data options."""

    QUICK: ClassVar[dict] = {}

    imports: tuple[str, ...] = ()
    """Python modules to import first, by name or path (my_cell.py): e.g. one that defines and registers
    your own cell, which --cell / --cells can then name"""
    layers: int = 1
    """stacked recurrent layers"""
    hidden: int = 128
    """hidden size"""
    dropout: float = 0.0
    """dropout between layers"""
    dtype: str = "float32"
    """compute dtype of the recurrent matmuls: float32 | bfloat16 (parameters, optimizer state and the carried
    state stay float32)"""
    activation: str = "tanh"
    """vanilla RNN activation: tanh | relu | linear"""
    recurrent_init: str = "orthogonal"
    """recurrent weights: orthogonal | identity | normal"""
    recurrent_scale: float = 1.0
    """spectral radius of each recurrent block at initialisation"""
    forget_bias: float = 1.0
    """LSTM forget-gate bias at initialisation"""
    lstm_variant: str = "standard"
    """LSTM structure (Greff et al. 2017): standard | vanilla | NIG | NFG | NOG | NIAF | NOAF | NP | CIFG | FGR | 1997"""
    gru_form: str = "reset_after"
    """GRU form: reset_after (cuDNN/PyTorch/Flax) | reset_before (Cho et al. 2014)"""
    batch: int = 32
    """examples per training step"""
    steps: int = 2000
    """training steps (also the horizon of the learning-rate decay); 0 measures the gradient flow at
    initialisation only"""
    minutes: float | None = None
    """wall-clock budget of this invocation (also with --resume): stop, evaluated and saved, after this many
    minutes"""
    optimizer: str = "adam"
    """optimizer: adam | adamw | rmsprop | sgd"""
    lr: float = 2e-3
    """peak learning rate"""
    schedule: str = "cosine"
    """learning-rate schedule after warm-up: constant | cosine | linear"""
    warmup: int | None = None
    """linear warm-up steps (default: min(100, steps // 10)); must be below --steps"""
    clip_norm: float | None = 1.0
    """clip gradients to this global norm; None or 0 disables"""
    clip_value: float | None = None
    """clip gradients element-wise to [-v, v] instead"""
    eval_every: int = 200
    """evaluate on the validation data every N steps (and at the end)"""
    best_by: str = "loss"
    """the validation metric that picks the best checkpoint, the one tested: loss (lowest) | accuracy (highest)"""
    flow_every: int | None = None
    """measure the gradient flow ||dL/dh_t|| every N steps (default: at the first and the last step)"""
    on_nan: str = "stop"
    """a step whose loss or gradient is NaN/Inf: stop (the run ends there, with that step's gradient-flow
    profile saved) | skip (no update; counted and logged)"""
    checkpoint_every: int = 200
    """save a checkpoint every N steps (and at the end)"""
    keep: int = 2
    """checkpoints to keep (besides the best, --best-by)"""
    seed: int = 0
    """seed of initialisation, data split and order, and dropout"""
    out: str | None = None
    """output directory (default: runs/<experiment>/<timestamp>)"""
    resume: str | None = None
    """continue the run in this directory from its last checkpoint, with its saved config (other flags but
    --minutes and the device flags are ignored)"""
    quick: bool = False
    """a small, fast configuration for a smoke test (QUICK in the source); flags given explicitly win"""

    def __post_init__(self):
        import_modules(self.imports)  # first: they may register the cells named below
        super().__post_init__()
        require_at_least_one(self, ("layers", "hidden", "batch", "eval_every", "checkpoint_every", "keep"))
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.flow_every is not None:
            require_at_least_one(self, ("flow_every",))
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if self.gru_form not in GRU_FORMS:
            raise ValueError(f"--gru-form must be one of {', '.join(GRU_FORMS)}, got {self.gru_form!r}")
        check_best_by(self.best_by)
        check_on_nan(self.on_nan)
        compute_dtype(self.dtype)
        self.make_training()  # validates optimizer, schedule, warm-up and clipping
        for name in CELLS:
            self.make_cell(name)  # validates the cell options

    @property
    def warmup_steps(self) -> int:
        return default_warmup(self.steps) if self.warmup is None else self.warmup

    def make_training(self):
        """(optimizer with its learning-rate schedule, gradient clipper)."""
        schedule = make_schedule(self.lr, schedule=self.schedule, warmup_steps=self.warmup_steps,
                                 total_steps=max(self.steps, 1))
        return make_optimizer(self.optimizer, schedule), make_clipper(self.clip_norm or None, self.clip_value)

    def make_cell(self, name: str) -> Cell:
        """The cell `name` with the options these flags set (each cell takes those it has)."""
        if name not in CELLS:
            raise ValueError(f"unknown cell {name!r}; choose one of: {', '.join(CELLS)}")
        if self.lstm_variant not in LSTM_VARIANTS:
            raise ValueError(f"unknown --lstm-variant {self.lstm_variant!r}; choose one of: {', '.join(LSTM_VARIANTS)}")
        options = dict(recurrent_init=self.recurrent_init, recurrent_scale=self.recurrent_scale,
                       activation=self.activation, forget_bias=self.forget_bias, variant=self.lstm_variant,
                       reset_after=self.gru_form == "reset_after")
        fields = {f.name for f in dataclasses.fields(CELLS[name])}
        return make_cell(name, **{k: v for k, v in options.items() if k in fields})

    def layer_options(self) -> dict:
        """Options of every recurrent layer (`rnn_jax.layers.Recurrent`) set by the flags."""
        return {"compute_dtype": compute_dtype(self.dtype)}


@dataclasses.dataclass
class TaskOptions(TrainingOptions):
    """`TrainingOptions` for one cell, and the prediction mode of a task experiment
    (--checkpoint, --input)."""

    cell: str = "lstm"
    """recurrent cell: rnn | lstm | gru, or one registered by --imports"""
    checkpoint: str | None = None
    """prediction mode: the output directory of a trained run (with --input)"""
    input: str | None = None
    """prediction mode: the input to predict for (see the examples above)"""

    def __post_init__(self):
        super().__post_init__()
        self.make_cell(self.cell)
        if (self.checkpoint is None) != (self.input is None):
            raise ValueError("prediction needs both --checkpoint RUN_DIR and --input ...")


# what a resumed run takes from its command line rather than from its saved config: how long
# and where it runs, not what it trains
RUNTIME_FLAGS = ("minutes", *DEVICE_FLAGS)


@dataclasses.dataclass
class Fitted:
    graphdef: nnx.GraphDef
    state: TrainState  # at the end of training (a leading seed axis if seeds were stacked)
    params: nnx.State  # the best by the validation metric cfg.best_by (what is tested)
    history: History
    wall_time_s: float  # of this invocation


def fit(cfg: TrainingOptions, out: Path, *, build_model: Callable[[int], nnx.Module], loss_fn: LossFn,
        get_batch: Callable[[int], dict], eval_batches: Iterable[dict], extra: dict | None = None, desc: str,
        seeds: Sequence[int] | None = None, name: str = "", tokens_per_step: int | None = None,
        stateful: bool = False) -> Fitted:
    """Train `build_model(seed)` on the shared loop (jitted step, optax, evaluation every
    `cfg.eval_every` steps, gradient flow from the training step itself, orbax checkpoints,
    JSONL + TensorBoard logs, Ctrl-C / time-budget stops) and restore its best parameters (by
    `cfg.best_by` on the validation batches). A run with checkpoints in `out` resumes from them
    (a finished one is not trained further).

    `seeds`: train the models of these seeds together, stacked (one vmapped step; batches and
    evaluation batches then have a leading seed axis); otherwise one model of `cfg.seed`.
    `name`: the run's subdirectory of checkpoints/ and logs/ (several runs in one `out`).
    `extra` (vocabularies, label names, normalisation: what prediction needs besides the
    config) is saved with every checkpoint; on resume it must match what the data gives.
    `stateful`: truncated BPTT over `cfg.batch` parallel streams (see `make_train_step`); the
    evaluation batches are then consecutive windows of streams too, the state carried across.
    """
    extra = extra or {}
    optimizer, clipper = cfg.make_training()
    stacked = seeds is not None
    parallel = DataParallel(cfg.devices, batch_axis=1 if stacked else 0)
    parallel.check_batch(cfg.batch)
    states = []
    for seed in seeds if stacked else [cfg.seed]:
        graphdef, state = init_train_state(build_model(seed), optimizer, jax.random.key(seed),
                                           stateful_batch=cfg.batch if stateful else None)
        states.append(state)
    state = parallel.place_state(stack_seeds(states) if stacked else states[0])
    if cfg.steps == 0:  # the gradient-flow profile at initialisation only
        _, flow = make_flow_probe(graphdef, loss_fn, seeds=stacked)(state.params, get_batch(0))
        return Fitted(graphdef, state, state.params, History(flow={0: to_python(flow)}, status="completed"), 0.0)
    checkpoints = Checkpoints(out / "checkpoints" / name, keep=cfg.keep, best_by=cfg.best_by)
    state, history = _resume(checkpoints, state, extra, f"{out / name}")
    started = time.time()
    if not history.finished:
        step = lambda measure_flow: make_train_step(graphdef, optimizer, loss_fn, clipper=clipper,  # noqa: E731
                                                    stateful=stateful, measure_flow=measure_flow, seeds=stacked)
        state, history = train_loop(
            state, train_step=step(False), flow_step=step(True), get_batch=get_batch, parallel=parallel,
            evaluate=evaluate_batches(make_eval_step(graphdef, loss_fn, seeds=stacked),
                                      map(parallel.replicate, eval_batches), carry_over=stateful),
            loop=LoopConfig(steps=cfg.steps, log_every=10, eval_every=cfg.eval_every,
                            flow_every=cfg.flow_every or cfg.steps, checkpoint_every=cfg.checkpoint_every,
                            max_seconds=cfg.minutes * 60 if cfg.minutes else None, tokens_per_step=tokens_per_step,
                            on_nan=cfg.on_nan),
            checkpoints=checkpoints,
            checkpoint_extra=lambda h: {"config": dataclasses.asdict(cfg), **extra, "history": h.to_json()},
            history=history, log_dir=out / "logs" / name, desc=desc)
    wall = time.time() - started
    params = state.params
    if checkpoints.best.latest_step() is not None:
        params = checkpoints.restore(state, best=True, step=checkpoints.best.best_step())[0].params
    if jax.process_count() > 1:  # the tests and predictions after training run in each process alone
        params = jax.device_get(params)
    checkpoints.close()
    return Fitted(graphdef, state, params, history, wall)


def _resume(checkpoints: Checkpoints, state: TrainState, extra: dict, where: str) -> tuple[TrainState, History]:
    """The state and history of the last checkpoint, if there is one (else `state`, a new history)."""
    if checkpoints.latest_step() is None:
        return state, History()
    saved = checkpoints.restore_extra()  # first what the data must match, then the state
    changed = [k for k in extra if json.loads(json.dumps(extra[k])) != saved.get(k)]
    if changed:
        raise ValueError(f"{where}: the data gives a different {', '.join(changed)} than the checkpoint's; same data "
                         "flags?")
    state, saved = checkpoints.restore(state)
    history = History.from_json(saved["history"])
    message = "finished: nothing left to train" if history.finished else "resuming"
    print(f"{where}: {message} at step {checkpoints.latest_step()}", file=sys.stderr)
    return state, history


def run_record(fitted: Fitted) -> dict:
    """A run's entry in results.json: how it ended, its history and the decay rates of its profiles."""
    return {"status": fitted.history.status, "steps": int(np.ravel(fitted.state.step)[0]),
            "wall_time_s": fitted.wall_time_s, "flow_decay_rates": flow_summary(fitted.history),
            "history": fitted.history.to_json()}


def flow_summary(history: History) -> dict[int, dict[str, float]]:
    """Per measured step: the fitted decay rate of ||dL_T/dh_{T-k}|| of every probed state
    (see `rnn_jax.gradflow.decay_rate`)."""
    return {step: {key: decay_rate(norms) for key, norms in flow.get("by_lag", {}).items()}
            for step, flow in sorted(history.flow.items())}


def finish(cfg: TrainingOptions, out: Path, fitted: Fitted, metrics: dict, *, title: str, extra: dict | None = None,
           ylabel: str = "loss") -> dict:
    """Write results.json (config, environment, `extra`, task metrics, and the run: status, wall
    time, history with the gradient-flow profiles and their decay rates), loss_curves.png and
    flow_vs_lag.png; returns the results."""
    results = write_results(cfg, out, {**(extra or {}), "metrics": metrics, **run_record(fitted)})
    plot_history(getattr(cfg, "cell", ""), out, fitted.history, title=title, ylabel=ylabel)
    return results


def write_results(cfg: TrainingOptions, out: Path, results: dict) -> dict:
    """results.json: the config, the environment and `results`; returns them with ``out``."""
    results = {"config": dataclasses.asdict(cfg), "environment": environment(), **results}
    write_json(out / "results.json", results)
    return {**results, "out": str(out)}


def plot_history(label: str, out: Path, history: History, *, title: str, ylabel: str = "loss") -> None:
    """loss_curves.png (train and validation) and flow_vs_lag.png (the first and the last
    gradient-flow profile of the run)."""
    curves = {f"{label} {split}": [([r["step"] for r in records], [r["loss"] for r in records])]
              for split, records in (("train", history.train), ("eval", history.eval)) if records}
    if curves:
        plots.loss_curves(curves, out / "loss_curves.png", title=title, ylabel=ylabel, log=False)
    steps = sorted(history.flow)
    if steps:
        panels = {f"step {s}" + (" (initialisation)" if s == 0 else ""): {
            key: np.asarray(norms)[None] for key, norms in history.flow[s].get("by_lag", {}).items()}
            for s in (steps[0], steps[-1])}
        plots.flow_vs_lag(panels, out / "flow_vs_lag.png", title=f"{title}: ||dL_T/dh_(T-k)|| ({label})")


def class_probabilities(logits, labels) -> list[str]:
    """One line per class: its softmax probability under `logits` (classes,)."""
    return [f"class {label}: p = {p:.3f}" for label, p in zip(labels, np.asarray(jax.nn.softmax(logits)))]


def load_run(run_dir: str | Path, config_cls, build_model: Callable[[TrainingOptions, dict], nnx.Module], *,
             last: bool = False):
    """A trained run, for prediction: (config, extra saved with the checkpoint, model with the
    best parameters by validation loss, or the latest with `last`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--checkpoint {run_dir}: not a run directory (it needs config.json and checkpoints/)")
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = config_from_json(config_cls, saved, resume=None, **{k: None for k in ("checkpoint", "input") if k in saved})
    checkpoints = Checkpoints(run_dir / "checkpoints", best_by=cfg.best_by)
    best = not last and checkpoints.best.latest_step() is not None
    manager = checkpoints.best if best else checkpoints.last
    step = manager.best_step() if best else manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint saved yet")
    # the vocabularies live in the checkpoint's JSON: read it first to shape the model
    extra = checkpoints.restore_extra(best=best, step=step)
    model = build_model(cfg, extra)
    optimizer, _ = cfg.make_training()
    stateful = {"stateful_batch": cfg.batch} if getattr(cfg, "tbptt", None) == "stateful" else {}
    _, like = init_train_state(model, optimizer, jax.random.key(cfg.seed), **stateful)
    state, _ = checkpoints.restore(like, best=best, step=step)
    checkpoints.close()
    nnx.update(model, state.params)
    return cfg, extra, model
