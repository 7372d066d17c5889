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
from rnn_jax.train import Batch, TrainState, step_number

ON_NAN = ("stop", "skip")


def check_on_nan(on_nan: str) -> str:
    if on_nan not in ON_NAN:
        raise ValueError(f"unknown on_nan {on_nan!r} (--on-nan); choose one of: {', '.join(ON_NAN)}")
    return on_nan


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
    on_nan: str = "stop"  # a step with a non-finite loss or gradient: "stop" the run there, or "skip" it

    def __post_init__(self):
        check_on_nan(self.on_nan)

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

    A NaN/Inf loss or gradient (the step has updated nothing): with ``loop.on_nan == "stop"``
    the run ends ``diverged`` with that step's gradient-flow profile recorded and no checkpoint
    after it; with ``"skip"`` the step is counted in ``skipped_steps`` and training goes on.
    Stacked seeds (`rnn_jax.seeds`): records hold one value per seed, and a NaN stops only the
    seeds concerned (their updates are switched off) until none is left.
    `checkpoint_extra(history)` builds the JSON saved beside the state. `parallel` places the
    state and each batch on its device mesh (data parallel; see `rnn_jax.parallel`).
    """
    run = _Run(
        state,
        loop,
        history or History(),
        parallel or DataParallel(1),
        checkpoints,
        checkpoint_extra,
        evaluate,
        log_dir,
        desc,
    )
    try:
        for step in run.bar:
            batch = run.parallel.place_batch(get_batch(step))
            measure = flow_step is not None and loop.measures_flow(step)
            run.state, out = (flow_step if measure else train_step)(run.state, batch)
            if out.flow is not None:
                run.history.flow[step] = to_python(out.flow)
            scalars = {k: host_value(v) for k, v in out.scalars().items()}
            bad = run.non_finite(scalars)
            if np.any(bad) and loop.on_nan == "stop" and run.stop_on_nan(step, bad, batch, flow_step, scalars):
                break
            if np.any(bad) and loop.on_nan == "skip":
                run.skip(step, bad)
            run.remember_finite(scalars)
            if not (np.ndim(bad) == 0 and bad):  # a single run's skipped step is not a record
                run.record(step, scalars)
            if run.after_step(step + 1):
                break
        else:
            run.history.status = "completed"
    finally:
        run.close()
    return run.state, run.history


class _Run:
    """The loop's state between steps, and what it does at each: record, evaluate, save, stop."""

    def __init__(self, state, loop, history, parallel, checkpoints, checkpoint_extra, evaluate, log_dir, desc):
        self.loop, self.history, self.parallel, self.desc = loop, history, parallel, desc
        self.checkpoints, self.checkpoint_extra, self.evaluate = checkpoints, checkpoint_extra, evaluate
        self.history.status = "running"
        self.state = parallel.place_state(state)
        self.log = MetricsLog(Path(log_dir) if log_dir and is_primary() else None, history)
        # stacked seeds: which are still training, mirrored on the host (read once, not every step)
        self.active = None if state.active is None else np.asarray(state.active)
        self.started = time.monotonic()
        start = step_number(self.state)
        self.last_record = (start, self.started)  # (step, time) of the last train record, for tokens/s
        self.last_finite_grad_norm = None
        self.bar = tqdm(
            range(start, loop.steps), initial=start, total=loop.steps, desc=desc, dynamic_ncols=True, leave=False
        )
        self.ctrl_c = _CtrlC()

    def non_finite(self, scalars) -> np.ndarray:
        """Per seed (if stacked): a non-finite loss or gradient, among the seeds still training."""
        finite = np.isfinite(scalars["loss"]) & np.isfinite(scalars["grad_norm"])
        return ~finite if self.active is None else ~finite & self.active

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

    def stop_on_nan(self, step, bad, batch, flow_step, scalars) -> bool:
        """Record the failed step (its gradient-flow profile, measured now if it was not) and
        stop the run, or, with stacked seeds, the seeds concerned. True: the loop ends."""
        if step not in self.history.flow and flow_step is not None:  # measure the step that failed, updating nothing
            frozen = self.state if self.active is None else self.state.replace(active=jnp.zeros_like(self.state.active))
            frozen, out = flow_step(frozen, batch)
            self.state = frozen.replace(step=frozen.step - 1, active=self.state.active)
            self.history.flow[step] = to_python(out.flow)
        self.bar.write(
            f"{self.desc}: non-finite loss/gradient at step {step} (loss {scalars['loss']}, last finite "
            f"gradient norm {self.last_finite_grad_norm}); the step's gradient-flow profile is in the "
            "history (--on-nan skip would go on)"
        )
        if np.ndim(bad) == 0:
            self.history.status, self.history.diverged_at = "diverged", step
            self.history.last_finite_grad_norm = self.last_finite_grad_norm
            self.bar.write(f"{self.desc}: stopping; the last good checkpoint is kept")
            return True
        stopped = self.history.diverged_at or [None] * bad.size
        for seed in np.flatnonzero(bad):
            stopped[seed] = step
        self.history.diverged_at = stopped
        self.history.last_finite_grad_norm = self.last_finite_grad_norm
        self.active = self.active & ~bad
        self.state = self.state.replace(active=self.parallel.replicate(jnp.asarray(self.active)))
        self.bar.write(f"{self.desc}: seed(s) {np.flatnonzero(bad).tolist()} stop at step {step}; the others go on")
        if not np.any(self.active):
            self.history.status = "diverged"
            return True
        return False

    def skip(self, step, bad) -> None:
        self.history.skipped_steps.append(step if np.ndim(bad) == 0 else [step, np.flatnonzero(bad).tolist()])
        self.log.write("train", step, {"skipped": len(self.history.skipped_steps)})

    def record(self, step, scalars) -> None:
        """Every `log_every` steps and at the last: a train record, logged and shown on the bar."""
        if step % self.loop.log_every and step != self.loop.steps - 1:
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
        """Evaluate, save and stop as due after `done` steps. True: the loop ends."""
        loop, history = self.loop, self.history
        out_of_time = loop.max_seconds is not None and time.monotonic() - self.started > loop.max_seconds
        last = done == loop.steps or out_of_time
        eval_metrics = None
        if self.evaluate is not None and loop.eval_every and (done % loop.eval_every == 0 or last):
            eval_metrics = self.run_eval(done)
        if out_of_time and done < loop.steps:
            history.status, history.stopped_at = "stopped", done
        elif last:
            history.status = "completed"  # before the final save, so the checkpoint says so
        if loop.checkpoint_every and (done % loop.checkpoint_every == 0 or last):
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
    evaluate_step: Callable, batches: Iterable[Batch], *, carry_over: bool = False
) -> Callable[[nnx.State], dict[str, float]]:
    """`evaluate(params)`: the mean loss and metrics of `evaluate_step(params, batch)` (a
    `LossOutput`) over fixed batches. `carry_over`: the batches are consecutive windows of
    parallel streams (stateful TBPTT), so each window starts from the previous window's final
    carries."""
    batches = list(batches)
    if not batches:
        raise ValueError("evaluation needs at least one batch")

    def evaluate(params):
        carries, results = None, []
        for batch in batches:
            out = evaluate_step(params, batch, carries)
            carries = out.carries if carry_over else None
            results.append({"loss": out.loss, **out.metrics})
        return {k: host_value(np.mean([np.asarray(r[k]) for r in results], axis=0)) for k in results[0]}

    return evaluate
