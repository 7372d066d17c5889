"""Training: the jitted step (a pure function of (TrainState, batch)) and the one loop that
every experiment uses (evaluation, gradient-flow records, checkpoints, logs, resume).

The NNX model is split once into a static `graphdef` and its parameter state; the step
merges them inside `jax.jit`, so NNX's Python graph handling runs at trace time only and a
call costs what the XLA computation costs (see benchmarks/train_step.py).

Data enters the loop as `get_batch(step) -> batch`, a function of the step number, so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from rnn_jax import gradflow
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.parallel import DataParallel, is_primary

Array = jax.Array
Batch = dict[str, Array]
LossFn = gradflow.LossFn


@flax.struct.dataclass
class TrainState:
    step: Array
    params: nnx.State
    opt_state: optax.OptState
    key: Array  # raw uint32 key data (checkpointable); dropout at step s uses fold_in(key, s)
    carry: Any = None  # stateful truncated BPTT: each layer's carry at the end of the last window
    active: Any = None  # stacked seeds: (seeds,) bool, False for a seed stopped by a NaN (its updates are off)


def init_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, key: Array, *, stateful_batch: int | None = None
):
    """Split `model` once. Returns (graphdef, TrainState). `stateful_batch`: the number of
    parallel streams of stateful truncated BPTT (the state then carries their hidden states)."""
    graphdef, params = nnx.split(model, nnx.Param)
    key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    # distinct buffers per leaf (zero carries may share one array), as the step donates the state
    carry = None if stateful_batch is None else jax.tree.map(jnp.array, model.zero_carries(stateful_batch))
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=key_data, carry=carry
    )
    return graphdef, state


OPTIMIZERS = {"adam": optax.adam, "adamw": optax.adamw, "rmsprop": optax.rmsprop, "sgd": optax.sgd}


SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(learning_rate: float, *, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int | None = None, final_fraction: float = 0.1) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then constant, or a cosine / linear decay to
    `final_fraction * learning_rate` at `total_steps`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if learning_rate <= 0 or warmup_steps < 0:
        raise ValueError(f"need learning_rate > 0 and warmup_steps >= 0, got {learning_rate}, {warmup_steps}")
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else None
    if schedule == "constant":
        after = optax.constant_schedule(learning_rate)
    else:
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(f"a {schedule} decay needs total_steps > warmup_steps, got {total_steps}")
        decay_steps, end = total_steps - warmup_steps, final_fraction * learning_rate
        after = (optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_fraction) if schedule == "cosine"
                 else optax.linear_schedule(learning_rate, end, decay_steps))
    return optax.join_schedules([warmup, after], [warmup_steps]) if warmup else after


def make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
    """An optax optimizer by name; `learning_rate` is a float or an optax schedule."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate)


def make_clipper(clip_norm: float | None = None, clip_value: float | None = None) -> optax.GradientTransformation:
    """Gradient clipping by global norm or element-wise by value (at most one), or none."""
    if clip_norm is not None and clip_value is not None:
        raise ValueError("choose one of clip_norm (global norm) and clip_value (element-wise), not both")
    if clip_norm is not None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        return optax.clip_by_global_norm(clip_norm)
    if clip_value is not None:
        if clip_value <= 0:
            raise ValueError(f"clip_value must be > 0, got {clip_value}")
        return optax.clip(clip_value)
    return optax.identity()


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn = sequence_cross_entropy,
    *,
    clipper: optax.GradientTransformation | None = None,
    measure_flow: bool = False,
    stateful: bool = False,
    seeds: bool = False,
):
    """A jitted `step(state, batch) -> (state, metrics)`; `state` is donated.

    metrics: ``loss``, ``grad_norm`` (global norm of the raw gradient), ``clipped_grad_norm``
    (after `clipper`, a stateless optax clipping transform) and what `loss_fn` reports. A step
    whose loss or gradient is not finite updates nothing but ``state.step``. With
    `measure_flow`, also ``flow`` (see `rnn_jax.gradflow.grads_and_flow`), from the same
    forward pass that produces the gradient; without it, the step contains no probes at all.

    `stateful`: truncated BPTT over parallel streams. The window starts from `state.carry`
    (zeros where ``batch["reset"]`` is True, i.e. when the streams restart) and its final
    carry, with `stop_gradient`, becomes the next `state.carry`.

    `seeds`: independent models trained in one step, `jax.vmap` over a leading seed axis of
    the state (`stack_seeds`), the batch and every metric.
    """
    clipper = clipper or optax.identity()

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        carries = None
        if stateful:
            carries = jax.tree.map(lambda c: jnp.where(batch["reset"], jnp.zeros_like(c), c), state.carry)
        if measure_flow:
            loss, metrics, grads, flow = gradflow.grads_and_flow(
                loss_fn, graphdef, state.params, batch, dropout_key, initial_carries=carries
            )
            metrics = {**metrics, "flow": flow}
        else:
            (loss, metrics), grads = jax.value_and_grad(
                lambda p: loss_fn(nnx.merge(graphdef, p), batch, dropout_key, None, carries), has_aux=True
            )(state.params)
        final_carries = metrics.pop("final_carries")
        clipped, _ = clipper.update(grads, clipper.init(state.params))
        updates, opt_state = optimizer.update(clipped, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        metrics = {"loss": loss, "grad_norm": grad_norm, "clipped_grad_norm": optax.tree.norm(clipped), **metrics}
        carry = jax.lax.stop_gradient(final_carries) if stateful else state.carry
        # a non-finite loss or gradient leaves the state as it was (the loop then skips the
        # step or stops on it, see LoopConfig.on_nan): one NaN never reaches the parameters
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if state.active is not None:
            finite &= state.active
        params, opt_state, carry = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                                (params, opt_state, carry), (state.params, state.opt_state, state.carry))
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, carry=carry), metrics

    return jax.jit(jax.vmap(step) if seeds else step, donate_argnums=0)


def step_number(state: TrainState) -> int:
    """The state's step (stacked seeds all step together)."""
    return int(np.ravel(state.step)[0])


def stack_seeds(states: list[TrainState]) -> TrainState:
    """Train states of independent seeds (same model shapes) as one, with a leading seed axis
    (and every seed active)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states).replace(active=jnp.ones(len(states), bool))


def make_flow_probe(graphdef: nnx.GraphDef, loss_fn: LossFn = sequence_cross_entropy, *, seeds: bool = False):
    """A jitted `probe(params, batch) -> (loss, flow)`: the gradient-flow measurement alone,
    without an update (e.g. of a model at initialisation or after training); `seeds`: vmapped
    over stacked seeds."""

    def probe(params, batch, carries=None):
        loss, _, _, flow = gradflow.grads_and_flow(loss_fn, graphdef, params, batch, None, initial_carries=carries)
        return loss, flow

    return jax.jit(jax.vmap(probe) if seeds else probe)


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: LossFn = sequence_cross_entropy, *, seeds: bool = False):
    """A jitted `evaluate(params, batch, carries=None) -> (metrics, final carries)`, without
    dropout. Pass the returned carries back in to evaluate a long text window by window.
    `seeds`: vmapped over stacked seeds (params, batch and carries)."""

    def evaluate(params, batch, carries=None):
        loss, metrics = loss_fn(nnx.merge(graphdef, params), batch, None, None, carries)
        final_carries = metrics.pop("final_carries")
        return {"loss": loss, **metrics}, final_carries

    return jax.jit(jax.vmap(evaluate) if seeds else evaluate)


# -- checkpoints --------------------------------------------------------------------------


BEST_BY = {"loss": "min", "accuracy": "max"}  # validation metric -> which end is best


def check_best_by(best_by: str) -> str:
    if best_by not in BEST_BY:
        raise ValueError(f"unknown best_by {best_by!r} (--best-by); choose one of: {', '.join(BEST_BY)}")
    return best_by


class Checkpoints:
    """Orbax checkpoints of a run: the last `keep` under ``last/`` and the best by a validation
    metric (`best_by`: lowest loss, or highest accuracy) under ``best/``. Each holds the
    TrainState and a JSON item (config, history, ...).

    Orbax writes a step to a temporary directory and renames it when complete, so a killed
    save never leaves a checkpoint that restores half-written: such a temporary directory is
    not a step; opening the checkpoints warns about it and removes it.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, best_by: str = "loss"):
        self.best_by = check_best_by(best_by)
        self.directory = Path(directory).absolute()
        _warn_half_written(self.directory)
        # in a multi-process run the two managers save the same step at once: their barriers
        # (named by step) need distinct prefixes
        common = lambda name: dict(create=True, cleanup_tmp_directories=True,  # noqa: E731
                                   multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
        self.last = ocp.CheckpointManager(
            self.directory / "last", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common("last"))
        )
        self.best = ocp.CheckpointManager(
            self.directory / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[best_by], best_mode=BEST_BY[best_by],
                                                 **common("best")),
        )

    def save(self, state: TrainState, extra: dict, *, eval_metrics: dict[str, float] | None = None) -> None:
        """Save as the latest; with `eval_metrics` (the validation metrics of this state), also
        as the best if it beats the best so far by `best_by`."""
        step = step_number(state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra))
        if step not in self.last.all_steps():
            self.last.save(step, args=args)
        if eval_metrics is None:
            return
        if self.best_by not in eval_metrics:
            raise ValueError(f"the evaluation reports {sorted(eval_metrics)}: no {self.best_by!r} to pick the best "
                             "checkpoint by; use --best-by loss")
        value = float(np.mean(eval_metrics[self.best_by]))  # the mean over seeds, if stacked
        if math.isfinite(value) and step not in self.best.all_steps():
            self.best.save(step, args=args, metrics={self.best_by: value})

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def restore_extra(self, *, best: bool = False, step: int | None = None) -> dict:
        """Only the JSON saved beside the state (config, vocabularies, history): what a run
        needs to know before it can build the model the state belongs to."""
        manager = self.best if best else self.last
        step = _checkpoint_step(manager, step)
        return manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]

    def restore(self, like: TrainState, *, best: bool = False, step: int | None = None) -> tuple[TrainState, dict]:
        """Restore into the structure of `like` (a freshly initialised TrainState)."""
        return restore_checkpoint(self.best if best else self.last, like, step)

    def wait(self) -> None:
        self.last.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.last.close()
        self.best.close()


def _warn_half_written(directory: Path) -> None:
    half_written = sorted(str(p.relative_to(directory)) for p in directory.glob("*/*") if ocp.utils.TMP_DIR_SUFFIX in p.name)
    if half_written:
        warnings.warn(f"{directory}: ignoring and removing half-written checkpoint(s) {half_written} (a save was "
                      "interrupted); the last complete checkpoint is used", stacklevel=3)


def _checkpoint_step(manager: ocp.CheckpointManager, step: int | None) -> int:
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}: nothing to restore or resume from")
    return step


def restore_checkpoint(manager: ocp.CheckpointManager, like: TrainState, step: int | None = None):
    step = _checkpoint_step(manager, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore())
        )
    except Exception as error:  # orbax raises many types; say which checkpoint and why
        raise ValueError(
            f"cannot restore checkpoint step {step} from {manager.directory}: {error}. It is corrupt or "
            "was written by a different model configuration (cell, sizes, layers)."
        ) from error
    return restored["state"], restored["extra"]


# -- the loop -----------------------------------------------------------------------------


@dataclasses.dataclass
class LoopConfig:
    """How long to train and how often to do what (0 disables a periodic action)."""

    steps: int
    log_every: int = 10
    eval_every: int = 0
    flow_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    max_seconds: float | None = None  # wall-clock budget of this invocation: stop (evaluated, saved) when spent
    tokens_per_step: int | None = None  # to log throughput (tokens/s) with each train record
    on_nan: str = "stop"  # a step with a non-finite loss or gradient: "stop" the run there, or "skip" it

    def __post_init__(self):
        check_on_nan(self.on_nan)


ON_NAN = ("stop", "skip")


def check_on_nan(on_nan: str) -> str:
    if on_nan not in ON_NAN:
        raise ValueError(f"unknown on_nan {on_nan!r} (--on-nan); choose one of: {', '.join(ON_NAN)}")
    return on_nan


def host_value(value) -> float | list[float]:
    """A scalar metric as a float; stacked seeds' metric (seeds,) as a list of floats."""
    value = np.asarray(value, np.float64)
    return float(value) if value.ndim == 0 else value.tolist()


def split_seeds(history: dict, seeds: int) -> list[dict]:
    """The history of a loop over stacked seeds (records holding a list per metric, flow
    profiles with a leading seed axis) as one history per seed."""
    def pick(value, i):
        return value[i] if isinstance(value, list) else value

    def record(r, i):
        return {k: (v if k == "step" else pick(v, i)) for k, v in r.items()}

    per_seed = []
    for i in range(seeds):
        stopped = history.get("diverged_at", [None] * seeds)[i]
        end = math.inf if stopped is None else stopped  # a seed stopped by a NaN: its records end there
        flow = {step: {profile: {key: norms[i] for key, norms in by_key.items()} for profile, by_key in profiles.items()}
                for step, profiles in history["flow"].items() if int(step) <= end}
        single = {**history, "train": [record(r, i) for r in history["train"] if r["step"] < end],
                  "eval": [record(r, i) for r in history["eval"] if r["step"] <= end], "flow": flow,
                  "skipped_steps": [s for s, bad in history.get("skipped_steps", []) if i in bad]}
        if stopped is not None:
            single.update(status="diverged", diverged_at=stopped)
        else:
            single.pop("diverged_at", None)
        if "last_finite_grad_norm" in history:
            single["last_finite_grad_norm"] = pick(history["last_finite_grad_norm"], i)
        per_seed.append(single)
    return per_seed


def to_python(tree):
    """A pytree of device arrays as nested Python lists/floats (for JSON)."""
    return jax.tree.map(lambda x: np.asarray(x).tolist(), jax.device_get(tree))


def train_loop(
    state: TrainState,
    *,
    train_step: Callable,
    get_batch: Callable[[int], Batch],
    loop: LoopConfig,
    parallel: DataParallel | None = None,
    flow_step: Callable | None = None,
    evaluate: Callable[[nnx.State], dict[str, float]] | None = None,
    checkpoints: Checkpoints | None = None,
    checkpoint_extra: Callable[[dict], dict] | None = None,
    history: dict | None = None,
    log_dir: str | Path | None = None,
    desc: str = "train",
) -> tuple[TrainState, dict]:
    """Train `state` from `state.step` to `loop.steps`.

    `train_step` and `flow_step` come from `make_train_step` (the latter with
    `measure_flow=True`; it replaces the plain step at steps divisible by `loop.flow_every`
    and at the last step, so the flow is measured on exactly the gradient that trains). `evaluate(params)` returns
    scalar metrics including ``loss``. `history` (from a checkpoint, to resume) collects
    ``train`` and ``eval`` records, ``flow`` profiles by step, ``skipped_steps`` and ``status``:
    ``completed``, ``diverged`` (with ``loop.on_nan == "stop"``, a NaN/Inf loss or gradient
    stops the run: the step, the last finite gradient norm and the gradient-flow profile of
    that step are recorded; no checkpoint is written after it), ``stopped`` (the `max_seconds`
    budget ran out: evaluated and saved first) or ``interrupted`` (Ctrl-C: a checkpoint is saved
    first). With ``on_nan == "skip"`` such a step updates nothing and is counted in
    ``skipped_steps`` (and logged as ``train/skipped``) instead.

    Stacked seeds (`stack_seeds`, a step made with ``seeds=True``): records hold one value per
    seed, and a NaN stops only the seeds concerned (``diverged_at`` per seed; their updates are
    switched off) until none is left; `split_seeds` gives each seed's own history.
    `checkpoint_extra(history)` builds the JSON saved beside the state. `parallel` places the
    state and each batch on its device mesh (data parallel; see `rnn_jax.parallel`).
    """
    history = history or {"train": [], "eval": [], "flow": {}}
    history.setdefault("skipped_steps", [])
    history["status"] = "running"
    log_dir = Path(log_dir) if log_dir else None
    writer = _open_logs(log_dir if is_primary() else None, history)
    parallel = parallel or DataParallel(1)
    state = parallel.place_state(state)
    start = step_number(state)
    # stacked seeds: which are still training, mirrored on the host (read once, not every step)
    active = None if state.active is None else np.asarray(state.active)
    started = time.monotonic()
    log_mark = [start, started]  # (step, time) of the last train record, for tokens/s
    last_finite_grad_norm = None

    def save(eval_metrics=None):
        if checkpoints is not None:
            extra = checkpoint_extra(history) if checkpoint_extra else {"history": history}
            checkpoints.save(state, extra, eval_metrics=eval_metrics)

    def run_eval(step):
        metrics = {k: host_value(v) for k, v in evaluate(state.params).items()}
        history["eval"].append({"step": step, **metrics})
        writer.log("eval", step, metrics)
        return metrics

    bar = tqdm(range(start, loop.steps), initial=start, total=loop.steps, desc=desc, dynamic_ncols=True, leave=False)
    ctrl_c = _CtrlC()
    try:
        for step in bar:
            batch = parallel.place_batch(get_batch(step))
            measure = flow_step is not None and loop.flow_every and (step % loop.flow_every == 0 or step == loop.steps - 1)
            state, metrics = (flow_step if measure else train_step)(state, batch)
            flow = metrics.pop("flow", None)
            scalars = {k: host_value(v) for k, v in metrics.items()}
            if flow is not None:
                history["flow"][str(step)] = to_python(flow)
            # per seed if stacked; a seed already stopped by a NaN no longer counts
            finite = np.isfinite(scalars["loss"]) & np.isfinite(scalars["grad_norm"])
            bad = ~finite if active is None else ~finite & active
            if np.any(bad) and loop.on_nan == "skip":
                history["skipped_steps"].append(step if np.ndim(bad) == 0 else [step, np.flatnonzero(bad).tolist()])
                writer.log("train", step, {"skipped": len(history["skipped_steps"])})
            elif np.any(bad):
                if flow is None and flow_step is not None:  # measure the step that failed, updating nothing
                    frozen = state if active is None else state.replace(active=jnp.zeros_like(state.active))
                    frozen, metrics = flow_step(frozen, batch)
                    state = frozen.replace(step=frozen.step - 1, active=state.active)
                    history["flow"][str(step)] = to_python(metrics["flow"])
                bar.write(f"{desc}: non-finite loss/gradient at step {step} (loss {scalars['loss']}, last finite gradient "
                          f"norm {last_finite_grad_norm}); the step's gradient-flow profile is in the history (--on-nan "
                          "skip would go on)")
                if np.ndim(bad) == 0:
                    history.update(status="diverged", diverged_at=step, last_finite_grad_norm=last_finite_grad_norm)
                    bar.write(f"{desc}: stopping; the last good checkpoint is kept")
                    break
                # stacked seeds: those seeds stop here (updates off), the others go on
                stopped = history.setdefault("diverged_at", [None] * bad.size)
                history["last_finite_grad_norm"] = last_finite_grad_norm
                for seed in np.flatnonzero(bad):
                    stopped[seed] = step
                active = active & ~bad
                state = state.replace(active=parallel.replicate(jnp.asarray(active)))
                bar.write(f"{desc}: seed(s) {np.flatnonzero(bad).tolist()} stop at step {step}; the others go on")
                if not np.any(active):
                    history["status"] = "diverged"
                    break
            last_finite_grad_norm = _last_finite(last_finite_grad_norm, scalars["grad_norm"], finite)
            # a single run's skipped step is not a record; stacked seeds' records go on (a stopped
            # seed's records end at its stop, see `split_seeds`)
            if (np.ndim(bad) > 0 or not bad) and (step % loop.log_every == 0 or step == loop.steps - 1):
                now = time.monotonic()
                if loop.tokens_per_step and step > log_mark[0]:
                    scalars["tokens_per_s"] = loop.tokens_per_step * (step - log_mark[0]) / (now - log_mark[1])
                log_mark[:] = [step, now]
                history["train"].append({"step": step, **scalars})
                writer.log("train", step, scalars)
                postfix = {"loss": f"{np.mean(scalars['loss']):.4f}"}
                if "tokens_per_s" in scalars:
                    postfix["tok/s"] = f"{scalars['tokens_per_s']:.0f}"
                bar.set_postfix(postfix, refresh=False)
            done = step + 1
            out_of_time = loop.max_seconds is not None and time.monotonic() - started > loop.max_seconds
            last = done == loop.steps or out_of_time
            eval_metrics = None
            if evaluate is not None and loop.eval_every and (done % loop.eval_every == 0 or last):
                eval_metrics = run_eval(done)
            if out_of_time and done < loop.steps:
                history.update(status="stopped", stopped_by="time budget", stopped_at=done)
            elif last:
                history["status"] = "completed"  # before the final save, so the checkpoint says so
            if loop.checkpoint_every and (done % loop.checkpoint_every == 0 or last):
                save(eval_metrics)
            if out_of_time:
                break
            if ctrl_c.pressed and not last:
                history["status"] = "interrupted"
                bar.write(f"{desc}: interrupted at step {done}; saving a checkpoint")
                save()
                break
        else:
            history["status"] = "completed"
    finally:
        ctrl_c.release()
        bar.close()
        writer.close()
        if checkpoints is not None:
            checkpoints.wait()
    return state, history


def _last_finite(previous, current, finite):
    """The last finite gradient norm (per seed, if stacked), updated with this step's."""
    if np.ndim(finite) == 0:
        return current if finite else previous
    previous = np.full(finite.shape, np.nan) if previous is None else np.asarray(previous, np.float64)
    return np.where(finite, current, previous).tolist()


class _CtrlC:
    """Ctrl-C (SIGINT) during the loop sets a flag that the loop reads between steps, so the
    state it saves is never one whose buffers a running step has donated. A second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.pressed = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def release(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class _Logs:
    """metrics.jsonl (one JSON object per record) and TensorBoard event files."""

    def __init__(self, log_dir: Path | None):
        self.jsonl = self.tb = None
        if log_dir is not None:
            from tensorboardX import SummaryWriter

            log_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(log_dir / "metrics.jsonl", "a")
            self.tb = SummaryWriter(str(log_dir / "tensorboard"))

    def log(self, split: str, step: int, scalars: dict[str, float | list[float]]):
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"split": split, "step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for name, value in scalars.items():
            if isinstance(value, list):  # stacked seeds: one curve each
                for seed, v in enumerate(value):
                    self.tb.add_scalar(f"{split}/{name}/seed{seed}", v, step)
            else:
                self.tb.add_scalar(f"{split}/{name}", value, step)

    def close(self):
        if self.jsonl is not None:
            self.jsonl.close()
            self.tb.close()


def _open_logs(log_dir: Path | None, history: dict) -> _Logs:
    """Open the logs; on resume, rewrite metrics.jsonl from the restored history, so records
    written after the last checkpoint by the interrupted run do not appear twice."""
    if log_dir is not None and (log_dir / "metrics.jsonl").exists():
        (log_dir / "metrics.jsonl").unlink()
    logs = _Logs(log_dir)
    if logs.jsonl is not None:
        for split in ("train", "eval"):
            for record in history[split]:
                logs.jsonl.write(json.dumps({"split": split, **record}) + "\n")
    return logs


def evaluate_batches(
    evaluate_step: Callable, batches: Iterable[Batch], *, carry_over: bool = False
) -> Callable[[nnx.State], dict[str, float]]:
    """`evaluate(params)`: the mean of `evaluate_step(params, batch)` over fixed batches.
    `carry_over`: the batches are consecutive windows of parallel streams (stateful TBPTT),
    so each window starts from the previous window's final carries."""
    batches = list(batches)
    if not batches:
        raise ValueError("evaluation needs at least one batch")

    def evaluate(params):
        carries, results = None, []
        for batch in batches:
            metrics, final_carries = evaluate_step(params, batch, carries)
            carries = final_carries if carry_over else None
            results.append(metrics)
        return {k: host_value(np.mean([np.asarray(r[k]) for r in results], axis=0)) for k in results[0]}

    return evaluate
