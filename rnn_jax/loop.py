"""The one training loop of every experiment: the jitted step over `get_batch(step)`, the
gradient-flow step at chosen steps, periodic evaluation and checkpoints, logs, a wall-clock
budget, Ctrl-C, and what to do with a NaN.

Data enters as `get_batch(step) -> batch`, a function of the step number, so a resumed run
sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from rnn_jax.checkpoints import Checkpoints
from rnn_jax.history import History
from rnn_jax.logs import MetricsLog
from rnn_jax.parallel import DataParallel, is_primary
from rnn_jax.train import Batch, StepOutput, TrainState, step_number


@dataclasses.dataclass
class LoopConfig:
    """How long to train and how often to do what (0 disables a periodic action)."""

    steps: int
    log_every: int = 10
    eval_every: int = 0
    flow_every: int = 0  # the gradient-flow step at multiples of this and at the last step
    checkpoint_every: int = 0
    max_seconds: float | None = None  # wall-clock budget of this invocation: stop (evaluated, saved) when spent
    tokens_per_step: int | None = None  # to log throughput (tokens/s) with each train record

    def measures_flow(self, step: int) -> bool:
        return bool(self.flow_every) and (step % self.flow_every == 0 or step == self.steps - 1)


def host_value(value) -> float | list[float]:
    """A scalar metric as a float; stacked seeds' metric (seeds,) as a list of floats."""
    value = np.asarray(value, np.float64)
    return float(value) if value.ndim == 0 else value.tolist()


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
    checkpoint_extra: Callable[[History], dict] | None = None,
    history: History | None = None,
    log_dir: str | Path | None = None,
    desc: str = "train",
) -> tuple[TrainState, History]:
    """Train `state` from `state.step` to `loop.steps`; returns the state and the `History`.

    `train_step` and `flow_step` come from `rnn_jax.train.make_train_step` (the latter with
    `measure_flow=True`: it replaces the plain step where `loop.measures_flow(step)`, so the
    flow is measured on exactly the gradient that trains). `evaluate(params)` returns scalar
    metrics including ``loss``. `history` (from a checkpoint, to resume) is continued.

    The steps' outputs stay on the device; every `loop.log_every` steps the loop reads those of
    the interval before (done by then), and all before an evaluation, a checkpoint or a stop:
    it never waits on the steps it has just dispatched.

    A NaN/Inf loss or gradient (the step has updated nothing), as the steps' policy says
    (`StepOptions.on_nan`): "stop" (the step halted the run on device, ``state.active``
    cleared) ends the run ``diverged`` at that step, with its gradient-flow profile recorded
    and no checkpoint after it; "skip" counts the step in ``skipped_steps`` and goes on.
    Stacked seeds (`rnn_jax.seeds`): records hold one value per seed, and a NaN stops only the
    seeds concerned (their updates are switched off) until none is left.
    `checkpoint_extra(history)` builds the JSON saved beside the state. `parallel` places the
    state and each batch on its device mesh (data parallel; see `rnn_jax.parallel`).
    """
    run = _Run(state, loop, history or History(), parallel or DataParallel(1), desc)
    run.get_batch, run.flow_step, run.evaluate = get_batch, flow_step, evaluate
    run.checkpoints, run.checkpoint_extra = checkpoints, checkpoint_extra
    run.log = MetricsLog(Path(log_dir) if log_dir and is_primary() else None, run.history)
    try:
        for step in run.bar:
            batch = run.parallel.place_batch(get_batch(step))
            measure = flow_step is not None and loop.measures_flow(step)
            run.state, out = (flow_step if measure else train_step)(run.state, batch)
            run.pending.append((step, out))  # read on the host later: no device sync per step
            if (step + 1) % loop.log_every == 0 and run.sync():
                break  # every seed stopped by a NaN
            if run.after_step(step + 1):
                break
        else:
            run.history.status = "completed"
    finally:
        run.close()
    return run.state, run.history


class _Run:
    """The loop's state between steps, and what it does: read the steps' outputs on the host
    (every `log_every` steps and before an evaluation, a checkpoint or a stop, never per step),
    record, handle NaNs, evaluate, save, stop."""

    get_batch: Callable
    flow_step: Callable | None
    evaluate: Callable | None
    checkpoints: Checkpoints | None
    checkpoint_extra: Callable | None
    log: MetricsLog

    def __init__(self, state, loop, history, parallel, desc):
        self.loop, self.history, self.parallel, self.desc = loop, history, parallel, desc
        self.history.status = "running"
        if state.active is None:  # a state made by hand: it trains
            state = state.replace(active=jnp.asarray(True))
        self.state = parallel.place_state(state)
        # which seeds (or the single run) still train, mirrored on the host at each read
        self.active = np.asarray(state.active)
        self.pending: list[tuple[int, StepOutput]] = []  # dispatched, not yet sent to the host
        self.in_flight: list[list[tuple[int, StepOutput]]] = []  # the previous interval's, not yet read
        self.started = time.monotonic()
        start = step_number(self.state)
        self.last_record = (start, self.started)  # (step, time) of the last train record, for tokens/s
        self.last_finite_grad_norm = None
        self.bar = tqdm(
            range(start, loop.steps), initial=start, total=loop.steps, desc=desc, dynamic_ncols=True, leave=False
        )
        self.ctrl_c = _CtrlC()

    def sync(self, wait: bool = False) -> bool:
        """Record the steps dispatched up to the previous call (done by now: the host never
        waits for the steps it has just dispatched; one small array a step, `StepOutput.packed`).
        `wait`: record every step up to now (before an evaluation, a checkpoint or the end). A NaN stops the seeds
        concerned (the step already halted them on device, see `StepOptions.on_nan`).
        True: none is left."""
        if self.pending:
            self.in_flight.append(self.pending)
            self.pending = []
        # the previous interval's steps are done by now: reading them does not wait on the device
        arrived, self.in_flight = (self.in_flight, []) if wait else (self.in_flight[:-1], self.in_flight[-1:])
        failed = {}
        for pending in arrived:
            names = pending[0][1].scalar_names()
            values = np.stack([_packed(out) for _, out in pending])  # (steps, [seeds,] metrics)
            self.read(pending, {name: values[..., i] for i, name in enumerate(names)}, failed)
        for step, bad in failed.items():
            self.measure_failed_step(step, bad)
        return bool(failed) and self.stop_seeds(failed)

    def read(self, pending: list[tuple[int, StepOutput]], stacked: dict, failed: dict) -> None:
        """Record the steps of `pending` (their metrics `stacked` on the host) and note in
        `failed` {step: which seeds} the non-finite ones."""
        for step, out in pending:
            if out.flow is not None:
                self.history.flow[step] = to_python(out.flow)
        if np.all(np.isfinite(stacked["loss"])) and np.all(np.isfinite(stacked["grad_norm"])):
            # the common case, without a look at every step: only the steps due a record
            self.last_finite_grad_norm = host_value(stacked["grad_norm"][-1])
            for i, (step, _) in enumerate(pending):
                if self.records(step):
                    self.record(step, {k: host_value(v[i]) for k, v in stacked.items()})
            return
        # the steps' policy (`StepOptions.on_nan`), read from the device only now: "stop" halted them
        halted = ~np.asarray(jax.device_get(self.state.active)).reshape(np.shape(self.active))
        for i, (step, _) in enumerate(pending):
            scalars = {k: host_value(v[i]) for k, v in stacked.items()}
            bad = ~(np.isfinite(scalars["loss"]) & np.isfinite(scalars["grad_norm"])) & self.active  # still training
            if np.any(bad & ~halted):
                self.skip(step, bad & ~halted)
            if np.any(bad & halted):
                failed[step] = bad & halted
                self.bar.write(
                    f"{self.desc}: non-finite loss/gradient at step {step} (loss {scalars['loss']}, last finite gradient "
                    f"norm {self.last_finite_grad_norm}); the step's gradient-flow profile is in the history (--on-nan "
                    "skip would go on)"
                )
                self.active = self.active & ~bad
            self.remember_finite(scalars)
            if not (np.ndim(bad) == 0 and bad):  # a single run's failed step is not a record
                self.record(step, scalars)

    def remember_finite(self, scalars) -> None:
        finite = np.isfinite(scalars["loss"]) & np.isfinite(scalars["grad_norm"])
        if np.ndim(finite) == 0:
            self.last_finite_grad_norm = scalars["grad_norm"] if finite else self.last_finite_grad_norm
            return
        previous = (
            np.full(finite.shape, np.nan)
            if self.last_finite_grad_norm is None
            else np.asarray(self.last_finite_grad_norm, np.float64)
        )
        self.last_finite_grad_norm = np.where(finite, scalars["grad_norm"], previous).tolist()

    def measure_failed_step(self, step, bad) -> None:
        """The gradient-flow profile of the step that failed, unless it was measured: the halted
        state is the one that step saw (it updated nothing since), so the flow step at that
        step number and batch, with every update off, sees what it saw. Seeds that did not fail
        there get NaN in that record."""
        if step in self.history.flow or self.flow_step is None:
            return
        frozen = self.state.replace(step=jnp.full_like(self.state.step, step), active=jnp.zeros_like(self.state.active))
        # the step donates its input: carry on with what it returns (nothing updated)
        unchanged, out = self.flow_step(frozen, self.parallel.place_batch(self.get_batch(step)))
        self.state = unchanged.replace(step=self.state.step, active=self.state.active)
        profile = jax.device_get(out.flow)
        if np.ndim(bad):  # stacked seeds: only the seeds that failed at this step
            seeds = lambda v: np.reshape(bad, (-1,) + (1,) * (np.ndim(v) - 1))  # noqa: E731
            profile = jax.tree.map(lambda v: np.where(seeds(v), v, np.nan), profile)
        self.history.flow[step] = to_python(profile)

    def stop_seeds(self, failed: dict) -> bool:
        """Record where each seed stopped; True when none is left."""
        history = self.history
        history.last_finite_grad_norm = self.last_finite_grad_norm
        if np.ndim(self.active) == 0:
            history.status, history.diverged_at = "diverged", min(failed)
            self.bar.write(f"{self.desc}: stopping; the last good checkpoint is kept")
            return True
        stopped = history.diverged_at or [None] * self.active.size
        for step, bad in sorted(failed.items()):
            for seed in np.flatnonzero(bad):
                stopped[seed] = step if stopped[seed] is None else stopped[seed]
            self.bar.write(f"{self.desc}: seed(s) {np.flatnonzero(bad).tolist()} stop at step {step}; the others go on")
        history.diverged_at = stopped
        if not np.any(self.active):
            history.status = "diverged"
            return True
        return False

    def skip(self, step, bad) -> None:
        self.history.skipped_steps.append(step if np.ndim(bad) == 0 else [step, np.flatnonzero(bad).tolist()])
        self.log.write("train", step, {"skipped": len(self.history.skipped_steps)})

    def records(self, step) -> bool:
        """Whether `step` gets a train record: every `log_every` steps and the last."""
        return step % self.loop.log_every == 0 or step == self.loop.steps - 1

    def record(self, step, scalars) -> None:
        """A train record of a step due one (`records`), logged and shown on the bar."""
        if not self.records(step):
            return
        now = time.monotonic()
        if self.loop.tokens_per_step and step > self.last_record[0]:
            scalars["tokens_per_s"] = (
                self.loop.tokens_per_step * (step - self.last_record[0]) / (now - self.last_record[1])
            )
        self.last_record = (step, now)
        self.history.train.append({"step": step, **scalars})
        self.log.write("train", step, scalars)
        postfix = {"loss": f"{np.mean(scalars['loss']):.4f}"}
        if "tokens_per_s" in scalars:
            postfix["tok/s"] = f"{scalars['tokens_per_s']:.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def after_step(self, done: int) -> bool:
        """Evaluate, save and stop as due after `done` steps (the pending steps are read first).
        True: the loop ends."""
        loop, history = self.loop, self.history
        out_of_time = loop.max_seconds is not None and time.monotonic() - self.started > loop.max_seconds
        last = done == loop.steps or out_of_time
        evaluates = self.evaluate is not None and loop.eval_every and (done % loop.eval_every == 0 or last)
        saves = loop.checkpoint_every and (done % loop.checkpoint_every == 0 or last)
        if (evaluates or saves or last or self.ctrl_c.pressed) and self.sync(wait=True):
            return True  # never evaluate or save a diverged state
        eval_metrics = None
        if evaluates:
            eval_metrics = self.run_eval(done)
        if out_of_time and done < loop.steps:
            history.status, history.stopped_at = "stopped", done
        elif last:
            history.status = "completed"  # before the final save, so the checkpoint says so
        if saves:
            self.save(eval_metrics)
        if out_of_time:
            return True
        if self.ctrl_c.pressed and not last:
            history.status = "interrupted"
            self.bar.write(f"{self.desc}: interrupted at step {done}; saving a checkpoint")
            self.save()
            return True
        return False

    def run_eval(self, step) -> dict:
        metrics = {k: host_value(v) for k, v in self.evaluate(self.state.params).items()}
        self.history.eval.append({"step": step, **metrics})
        self.log.write("eval", step, metrics)
        return metrics

    def save(self, eval_metrics=None) -> None:
        if self.checkpoints is not None:
            extra = (
                self.checkpoint_extra(self.history) if self.checkpoint_extra else {"history": self.history.to_json()}
            )
            self.checkpoints.save(self.state, extra, eval_metrics=eval_metrics)

    def close(self) -> None:
        self.ctrl_c.release()
        self.bar.close()
        self.log.close()
        if self.checkpoints is not None:
            self.checkpoints.wait()


def _packed(out: StepOutput) -> np.ndarray:
    """A step's scalars on the host as one ([seeds,] metrics) array (`StepOutput.packed`, or
    gathered here from a step that did not pack them)."""
    if out.packed is not None:
        return np.asarray(out.packed)
    scalars = out.scalars()
    return np.stack([np.asarray(scalars[name]) for name in out.scalar_names()], axis=-1)


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


def evaluate_batches(
    evaluate_step: Callable, batches: Iterable[Batch], *, carry_over: bool = False, rows_axis: int = 0
) -> Callable[[nnx.State], dict[str, float]]:
    """`evaluate(params)`: the loss and metrics of `evaluate_step(params, batch)` (a `LossOutput`)
    over fixed batches, each batch's means weighted by its rows (the size of `rows_axis`: 1 when
    seeds are stacked first), so a short last chunk of an in-order evaluation counts for its rows
    only. `carry_over`: the batches are consecutive windows of parallel streams (stateful TBPTT),
    so each window starts from the previous window's final carries."""
    batches = list(batches)
    if not batches:
        raise ValueError("evaluation needs at least one batch")
    rows = np.array([np.shape(jax.tree.leaves(batch)[0])[rows_axis] for batch in batches], np.float64)

    def evaluate(params):
        carries, results = None, []
        for batch in batches:
            out = evaluate_step(params, batch, carries)
            carries = out.carries if carry_over else None
            results.append({"loss": out.loss, **out.metrics})
        return {
            k: host_value(np.average([np.asarray(r[k]) for r in results], axis=0, weights=rows)) for k in results[0]
        }

    return evaluate
