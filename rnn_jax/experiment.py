"""What every experiment shares: the run (`fit`: the shared loop with evaluation, gradient-flow
records, checkpoints and resume; one model or several seeds stacked), its results (`finish`:
results.json, loss curves, gradient-flow plot) and loading a finished run for prediction
(`load_run`).

An experiment (see experiments/sentiment.py) is a Config that extends
`rnn_jax.options.TrainingOptions` (or `TaskOptions`) with its data flags and its own defaults, a model builder, its data, one `fit`
and one `finish`. Everything here raises on bad input; the command line (`experiments.cli`)
turns that into a message.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from rnn_jax import backend, plots
from rnn_jax.checkpoints import Checkpoints
from rnn_jax.config import (
    config_from_json,
    config_record,
    environment,
    write_json,
)
from rnn_jax.gradflow import decay_rate
from rnn_jax.history import History
from rnn_jax.loop import LoopHooks, evaluate_batches, to_python, train_loop
from rnn_jax.losses import LossFn
from rnn_jax.options import TrainingOptions
from rnn_jax.parallel import DataParallel
from rnn_jax.seeds import stack_seeds
from rnn_jax.tasks import Task, held_out_batches, test_batches
from rnn_jax.train import TrainState, init_train_state, make_eval_step, make_flow_probe, make_train_step


@dataclasses.dataclass
class Fitted:
    graphdef: nnx.GraphDef
    state: TrainState  # at the end of training (a leading seed axis if seeds were stacked)
    params: nnx.State  # the best by the validation metric cfg.best_by (what is tested)
    history: History
    wall_time_s: float  # of this invocation


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What `fit` trains on: `get_batch(step)` (a function of the step: a resumed run sees the
    same batches), the validation batches and the loss. `extra` (vocabularies, label names,
    normalisation: what prediction needs besides the config) is saved with every checkpoint; on
    resume it must match what the data gives. `tokens_per_step`: to log throughput. `stateful`:
    truncated BPTT over `cfg.batch` parallel streams (see `make_train_step`); the validation
    batches are then consecutive windows of streams too, the state carried across.
    `test_batches`: scored at every evaluation beside the validation ones (``test_loss``,
    ``test_accuracy``, ...), never used to choose the best checkpoint."""

    loss_fn: LossFn
    get_batch: Callable[[int], dict]
    eval_batches: Iterable[dict]
    extra: dict = dataclasses.field(default_factory=dict)
    tokens_per_step: int | None = None
    stateful: bool = False
    test_batches: Iterable[dict] = ()
    eval_carried: bool = False  # the validation batches are windows of streams read with the state carried


def task_data(task: Task, data_keys, eval_keys, *, chunk: int, draws: int, **fields) -> TrainingData:
    """What `fit` trains on for a registered `task`: every stream's training batches (`data_keys`:
    one key per seed, stacked seeds), the held-out batches (every row in chunks of `chunk`
    rows, or `draws` draws with `eval_keys`) and the test rows beside them; `fields`: the rest
    of `TrainingData` (extra, tokens_per_step)."""
    held = held_out_batches(task, eval_keys, batch=chunk, draws=draws)
    tests = test_batches(task, seeds=len(data_keys), batch=chunk)
    get_batch = functools.partial(task.training_batch, data_keys)
    carried = dict(stateful=task.stateful, eval_carried=task.eval_carried)
    return TrainingData(task.loss_fn, get_batch, held, test_batches=tests, **carried, **fields)


def single_task_data(task: Task, seed: int, *, chunk: int = 512, **fields) -> TrainingData:
    """`task_data` of one model: the stream of `seed`'s key (``jax.random.key(seed)``, the
    single-model experiments' key since their first runs), without the seed axis."""
    key = jax.random.key(seed)[None]
    stacked = task_data(task, key, key, chunk=chunk, draws=1, **fields)
    return dataclasses.replace(
        stacked,
        get_batch=lambda step: _first_seed(stacked.get_batch(step)),
        eval_batches=[_first_seed(b) for b in stacked.eval_batches],
        test_batches=[_first_seed(b) for b in stacked.test_batches],
    )


@jax.jit
def _first_seed(batch: dict) -> dict:
    return jax.tree.map(lambda a: a[0], batch)


def fit(
    cfg: TrainingOptions,
    out: Path,
    build_model: Callable[[int], nnx.Module],
    data: TrainingData,
    *,
    desc: str,
    seeds: Sequence[int] | None = None,
    name: str = "",
) -> Fitted:
    """Train `build_model(seed)` on the shared loop (jitted step, optax, evaluation every
    `cfg.eval_every` steps, gradient flow from the training step itself, orbax checkpoints,
    JSONL + TensorBoard logs, Ctrl-C / time-budget stops) and restore its best parameters (by
    `cfg.best_by` on the validation batches). A run with checkpoints in `out` resumes from them
    (a finished one is not trained further).

    `seeds`: train the models of these seeds together, stacked (one vmapped step; batches and
    evaluation batches then have a leading seed axis); otherwise one model of `cfg.seed`.
    `name`: the run's subdirectory of checkpoints/ and logs/ (several runs in one `out`).
    """
    stacked = seeds is not None
    parallel = DataParallel(cfg.devices, batch_axis=1 if stacked else 0)
    parallel.check_batch(cfg.batch)
    graphdef, state = initial_state(cfg, build_model, seeds, parallel, data.stateful)
    options = cfg.step_options(data.loss_fn, stateful=data.stateful, seeds=stacked)
    if cfg.steps == 0:  # the gradient-flow profile at initialisation only
        probe = make_flow_probe(
            graphdef, data.loss_fn, spectrum=cfg.spectrum, seeds=stacked, measurements=options.measurements
        )
        _, flow = probe(state.params, data.get_batch(0))
        return Fitted(graphdef, state, state.params, History(flow={0: to_python(flow)}, status="completed"), 0.0)
    checkpoints = Checkpoints(out / "checkpoints" / name, keep=cfg.keep, best_by=cfg.best_by)
    try:  # closed on every way out: orbax's threads left open end the process with asyncio noise
        place = _Place(out / name, out / "logs" / name, desc)
        return _train(cfg, place, graphdef, state, data, options, parallel, checkpoints)
    finally:
        checkpoints.close()


@dataclasses.dataclass(frozen=True)
class _Place:
    """Where one run of `fit` is: its folder name (for messages), its logs and its progress label."""

    run: Path
    logs: Path
    desc: str


def _train(cfg, place: _Place, graphdef, state, data: TrainingData, options, parallel, checkpoints):
    """Resume from the checkpoints, train what is left, restore the best parameters."""
    state, history = _resume(checkpoints, state, data.extra, place.run, cfg.steps)
    started = time.time()
    if not history.finished:
        train_step, flow_step = (
            make_train_step(graphdef, cfg.make_training()[0], dataclasses.replace(options, measure_flow=measure))
            for measure in (False, True)
        )
        hooks = LoopHooks(
            flow_step=flow_step,
            evaluate=_evaluation(cfg, graphdef, data, options.seeds, parallel),
            checkpoints=checkpoints,
            checkpoint_extra=lambda h: {"config": config_record(cfg), **data.extra, "history": h.to_json()},
            history=history,
            parallel=parallel,
            log_dir=place.logs,
            desc=place.desc,
        )
        state, history = train_loop(state, train_step, data.get_batch, cfg.loop_config(data.tokens_per_step), hooks)
    wall = time.time() - started
    return Fitted(graphdef, state, _best_params(checkpoints, state), history, wall)


def _evaluation(cfg: TrainingOptions, graphdef, data: TrainingData, seeds: bool, parallel: DataParallel):
    """`evaluate(params)`: the validation metrics, and the test ones prefixed ``test_`` if any."""
    step = make_eval_step(graphdef, data.loss_fn, seeds=seeds, matmul_precision=cfg.matmul_precision)
    carry_over = data.stateful or data.eval_carried
    on = functools.partial(evaluate_batches, step, carry_over=carry_over, rows_axis=1 if seeds else 0)
    validation = on(map(parallel.replicate, data.eval_batches))
    test_batches = list(data.test_batches)
    if not test_batches:
        return validation
    test = on(map(parallel.replicate, test_batches))
    return lambda params: {**validation(params), **{f"test_{k}": v for k, v in test(params).items()}}


def _best_params(checkpoints: Checkpoints, state: TrainState) -> nnx.State:
    """The parameters of the best checkpoint by the validation metric (else the last state's)."""
    params = state.params
    if checkpoints.best.latest_step() is not None:
        try:
            params = checkpoints.restore(state, best=True, step=checkpoints.best.best_step())[0].params
        except ValueError as error:  # a damaged best checkpoint: the last state is what there is
            print(f"warning: {error}; the last state's parameters are used instead", file=sys.stderr)
    if jax.process_count() > 1:  # the tests and predictions after training run in each process alone
        params = jax.device_get(params)
    return params


def initial_state(cfg: TrainingOptions, build_model, seeds, parallel: DataParallel, stateful: bool = False):
    """(graphdef, the train state at step 0): one model of `cfg.seed`, or the models of `seeds`
    stacked; placed on the devices."""
    optimizer, _ = cfg.make_training()
    states = []
    for seed in [cfg.seed] if seeds is None else seeds:
        graphdef, state = init_train_state(
            build_model(seed), optimizer, jax.random.key(seed), stateful_batch=cfg.batch if stateful else None
        )
        states.append(state)
    return graphdef, parallel.place_state(states[0] if seeds is None else stack_seeds(states))


def _resume(
    checkpoints: Checkpoints, state: TrainState, extra: dict, where: Path, steps: int
) -> tuple[TrainState, History]:
    """The state and history of the newest intact checkpoint, if there is one (else `state`, a new
    history); a damaged one is reported and passed over (`Checkpoints.restore_intact`, its full
    cause in logs/<run>/checkpoint_errors.log)."""
    if not checkpoints.last.all_steps() and not checkpoints.best.all_steps():
        return state, History()

    def same_data(saved: dict) -> None:  # first what the data must match, then the state
        changed = [k for k in extra if json.loads(json.dumps(extra[k])) != saved.get(k)]
        if changed:
            raise ValueError(
                f"{where}: the data gives a different {', '.join(changed)} than the checkpoint's; same data flags?"
            )

    log = where.parent / "logs" / where.name / "checkpoint_errors.log"
    state, saved, step = checkpoints.restore_intact(state, check_extra=same_data, log=log)
    history = History.from_json(saved["history"])
    if history.status == "completed" and step < steps:  # resumed with more --steps (`continued_with`)
        history.status = "running"
    message = "finished: nothing left to train" if history.finished else "resuming"
    print(f"{where}: {message} at step {step}", file=sys.stderr)
    return state, history


def run_record(fitted: Fitted) -> dict:
    """A run's entry in results.json: how it ended, its history and the decay rates of its profiles."""
    return {
        "status": fitted.history.status,
        "steps": int(np.ravel(fitted.state.step)[0]),
        "wall_time_s": fitted.wall_time_s,
        "flow_decay_rates": flow_summary(fitted.history),
        "history": fitted.history.to_json(),
    }


def flow_summary(history: History) -> dict[int, dict[str, float]]:
    """Per measured step: the fitted decay rate of ||dL_T/dh_{T-k}|| of every probed state
    (see `rnn_jax.gradflow.decay_rate`)."""
    return {
        step: {key: decay_rate(norms) for key, norms in flow.get("by_lag", {}).items()}
        for step, flow in sorted(history.flow.items())
    }


def finish(
    cfg: TrainingOptions,
    out: Path,
    fitted: Fitted,
    metrics: dict,
    *,
    title: str,
    extra: dict | None = None,
    ylabel: str = "loss",
) -> dict:
    """Write results.json (config, environment, `extra`, task metrics, and the run: status, wall
    time, history with the gradient-flow profiles and their decay rates), loss_curves.png and
    flow_vs_lag.png; returns the results."""
    results = write_results(cfg, out, {**(extra or {}), "metrics": metrics, **run_record(fitted)})
    plot_history(getattr(cfg, "cell", ""), out, fitted.history, title=title, ylabel=ylabel)
    return results


def write_results(cfg: TrainingOptions, out: Path, results: dict) -> dict:
    """results.json: the config, the environment and `results`; returns them with ``out``."""
    results = {
        "config": {**config_record(cfg), "out": str(out)},
        "environment": environment(),
        "matmul_precision": backend.precision_record(getattr(cfg, "matmul_precision", None)),
        **results,
    }
    write_json(out / "results.json", results)
    return {**results, "out": str(out)}


def plot_history(label: str, out: Path, history: History, *, title: str, ylabel: str = "loss") -> None:
    """loss_curves.png (train and validation) and flow_vs_lag.png (the first and the last
    gradient-flow profile of the run)."""
    curves = {
        f"{label} {split}": [([r["step"] for r in records], [r["loss"] for r in records])]
        for split, records in (("train", history.train), ("eval", history.eval))
        if records
    }
    if curves:
        plots.loss_curves(curves, out / "loss_curves.png", title=title, ylabel=ylabel, log=False)
    steps = sorted(history.flow)
    if steps:
        panels = {
            f"step {s}" + (" (initialisation)" if s == 0 else ""): {
                key: np.asarray(norms)[None] for key, norms in history.flow[s].get("by_lag", {}).items()
            }
            for s in (steps[0], steps[-1])
        }
        plots.flow_vs_lag(panels, out / "flow_vs_lag.png", title=f"{title}: ||dL_T/dh_(T-k)|| ({label})")


def class_probabilities(logits, labels) -> list[str]:
    """One line per class: its softmax probability under `logits` (classes,)."""
    return [f"class {label}: p = {p:.3f}" for label, p in zip(labels, np.asarray(jax.nn.softmax(logits)))]


def stacked_seed_model(cfg: TrainingOptions, build_model: Callable[[int], nnx.Module], checkpoint_dir: Path):
    """The first seed's model of a run whose seeds were trained stacked (gradient_flow's layout:
    one `checkpoint_dir` per cell, seeds cfg.seed, cfg.seed + 1, ...), from its best checkpoint
    by validation if there is one, else its last. `build_model(seed)`: that seed's fresh model."""
    seeds = range(cfg.seed, cfg.seed + getattr(cfg, "seeds", 1))
    graphdef, like = initial_state(cfg, build_model, seeds, DataParallel(1))
    checkpoints = Checkpoints(checkpoint_dir, best_by=cfg.best_by)
    best, step = checkpoints.preferred_step()
    if step is None:
        raise FileNotFoundError(f"{checkpoint_dir}: no checkpoint saved there")
    state, _ = checkpoints.restore(like, best=best, step=step)
    checkpoints.close()
    return nnx.merge(graphdef, jax.tree.map(lambda leaf: leaf[0], state.params))


def load_run(
    run_dir: str | Path, config_cls, build_model: Callable[[TrainingOptions, dict], nnx.Module], *, last: bool = False
):
    """A trained run, for prediction: (config, extra saved with the checkpoint, model with the
    best parameters by validation loss, or the latest with `last`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--checkpoint {run_dir}: not a run directory (it needs config.json and checkpoints/)")
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = config_from_json(
        config_cls, saved, where=run_dir, resume=None, **{k: None for k in ("checkpoint", "input") if k in saved}
    )
    checkpoints = Checkpoints(run_dir / "checkpoints", best_by=cfg.best_by)
    best, step = checkpoints.preferred_step(last=last)
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
