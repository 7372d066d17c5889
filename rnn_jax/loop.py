"""The one training loop of every experiment: the jitted step over `get_batch(step)`, the
gradient-flow step at chosen steps, periodic evaluation and checkpoints, logs, a wall-clock
budget, Ctrl-C, and what to do with a NaN.

Data enters as `get_batch(step) -> batch`, a function of the step number, so a resumed run
sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
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


@dataclasses.dataclass
class LoopHooks:
    """What the loop calls besides the training step, each optional.

    `flow_step` (`rnn_jax.train.make_train_step` with ``measure_flow=True``) replaces the plain
    step where `LoopConfig.measures_flow(step)`, so the flow is measured on exactly the gradient
    that trains. `evaluate(params)` returns scalar metrics including ``loss``. `checkpoints`
    saves the state with `checkpoint_extra(history)` (default: the history) as its JSON.
    `history` (from a checkpoint, to resume) is continued. `parallel` places the state and each
    batch on its device mesh (data parallel; `rnn_jax.parallel`). `log_dir`: TensorBoard and
    JSONL logs; `desc`: the progress bar's label.
    """

    flow_step: Callable | None = None
    evaluate: Callable[[nnx.State], dict[str, float]] | None = None
    checkpoints: Checkpoints | None = None
    checkpoint_extra: Callable[[History], dict] | None = None
    history: History | None = None
    parallel: DataParallel | None = None
    log_dir: str | Path | None = None
    desc: str = "train"


def itstime(done: int, every: int, last: bool) -> bool:
    """Whether a periodic action (every `every` steps, and at the `last`; 0: never) is due
    after `done` steps (big_vision's predicate)."""
    return bool(every) and (done % every == 0 or last)


def train_loop(
    state: TrainState, train_step: Callable, get_batch: Callable[[int], Batch], loop: LoopConfig, hooks=None
):
    """Train `state` from `state.step` to `loop.steps`; returns the state and the `History`.

    The steps' outputs stay on the device; every `loop.log_every` steps the loop reads those
    dispatched before the last interval (done by then), and all of them before an evaluation, a
    checkpoint or a stop: it never waits on the steps it has just dispatched. What the read
    steps say (records, skipped and failed steps, which seeds still train) is `judge_steps`.

    A NaN/Inf loss or gradient (the step has updated nothing), as the steps' policy says
    (`StepOptions.on_nan`): "stop" (the step halted the run on device) ends the run
    ``diverged`` at that step, with its gradient-flow profile recorded and no checkpoint after
    it; "skip" counts the step in ``skipped_steps`` and goes on. Stacked seeds
    (`rnn_jax.seeds`): records hold one value per seed, and a NaN stops only the seeds
    concerned until none is left. Ctrl-C saves and stops between steps; `loop.max_seconds`
    stops (evaluated, saved) when spent.
    """
    hooks = hooks or LoopHooks()
    book = _Book(loop, hooks, get_batch)
    state = book.parallel.place_state(state if state.active is not None else state.replace(active=jnp.asarray(True)))
    started, unread, ctrl_c = time.monotonic(), [], _CtrlC()
    try:
        for step in book.progress(state):
            measure = hooks.flow_step is not None and loop.measures_flow(step)
            state, out = (hooks.flow_step if measure else train_step)(state, book.batch(step))
            unread.append((step, out))  # read on the host later: no device sync per step
            done = step + 1
            out_of_time = loop.max_seconds is not None and time.monotonic() - started > loop.max_seconds
            last = done == loop.steps or out_of_time
            evaluates = hooks.evaluate is not None and itstime(done, loop.eval_every, last)
            saves = itstime(done, loop.checkpoint_every, last)
            if evaluates or saves or last or ctrl_c.pressed:
                state, unread = book.read(state, unread), []  # never evaluate or save a diverged state
            elif done % loop.log_every == 0:  # the last interval's steps may still run: leave them
                state, unread = book.read(state, unread[: -loop.log_every]), unread[-loop.log_every :]
            if book.history.status == "diverged":
                break
            metrics = book.evaluate(state, done) if evaluates else None
            if out_of_time and done < loop.steps:
                book.history.status, book.history.stopped_at = "stopped", done
            elif last:
                book.history.status = "completed"  # before the final save, so the checkpoint says so
            if saves:
                book.save(state, metrics)
            if out_of_time:
                break
            if ctrl_c.pressed and not last:
                book.history.status = "interrupted"
                book.bar.write(f"{hooks.desc}: interrupted at step {done}; saving a checkpoint")
                book.save(state)
                break
        else:
            book.history.status = "completed"
    finally:
        ctrl_c.release()
        book.close()
    return state, book.history


@dataclasses.dataclass(frozen=True)
class Seeds:
    """Which seeds still train (a 0-d array for a single run) and each one's last finite
    gradient norm (NaN before the first)."""

    active: np.ndarray
    last_finite_grad_norm: np.ndarray


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a read of some steps' scalars says (`judge_steps`)."""

    records: list  # (step, {name: host value}) of the steps due a train record
    skipped: list  # `History.skipped_steps` entries: a step, or [step, seeds] when stacked
    failed: dict  # {step: which seeds it halted}, in step order
    seeds: Seeds  # after these steps


def judge_steps(steps, packed: np.ndarray, names, seeds: Seeds, due: Callable[[int], bool]) -> Verdict:
    """The loop's NaN / skip / divergence bookkeeping, as one pure function of the steps' packed
    scalars (`StepOutput.packed`: (steps, [seeds,] names) and, when `names` is one short of the
    last axis, each step's ``active`` after it). A step is bad for a seed that still trained
    before it and saw a non-finite loss or gradient norm; bad and halted by the step's policy,
    it failed there (the seed stops); bad and not halted, it was skipped. `due(step)`: whether
    it gets a train record (a single run's bad step, or one after it stopped, never does)."""
    columns = {name: packed[..., i] for i, name in enumerate(names)}
    halted = packed[..., len(names)] == 0 if packed.shape[-1] > len(names) else np.zeros(packed.shape[:-1], bool)
    finite = np.isfinite(columns["loss"]) & np.isfinite(columns["grad_norm"])
    active, last_finite = seeds.active, seeds.last_finite_grad_norm
    records, skipped, failed = [], [], {}
    for i, step in enumerate(steps):
        trained, bad = active, ~finite[i] & active
        if np.any(bad & ~halted[i]):
            skipped.append(step if np.ndim(bad) == 0 else [step, np.flatnonzero(bad & ~halted[i]).tolist()])
        if np.any(bad & halted[i]):
            failed[step] = bad & halted[i]
        active = active & ~(bad & halted[i])
        last_finite = np.where(finite[i], columns["grad_norm"][i], last_finite)
        if due(step) and (np.ndim(bad) or (trained and not bad)):  # stacked: stopped seeds' records hold NaN
            records.append((step, {k: host_value(v[i]) for k, v in columns.items()}))
    return Verdict(records, skipped, failed, Seeds(active, last_finite))


def diverged_at(previous, failed: dict, seeds: int | None):
    """`History.diverged_at` after the steps `failed` ({step: which seeds}): the first failed
    step (a single run, `seeds` None), or one entry per seed, None for those still training."""
    if seeds is None:
        return previous if previous is not None else min(failed)
    stopped = list(previous or [None] * seeds)
    for step, bad in sorted(failed.items()):
        for seed in np.flatnonzero(bad):
            stopped[seed] = step if stopped[seed] is None else stopped[seed]
    return stopped


class _Book:
    """The loop's host side: the history, logs and progress bar, and which seeds still train
    (`Seeds`), updated from each read of the steps' outputs (`judge_steps`)."""

    def __init__(self, loop: LoopConfig, hooks: LoopHooks, get_batch):
        self.loop, self.hooks, self.get_batch = loop, hooks, get_batch
        self.parallel = hooks.parallel or DataParallel(1)
        self.history = hooks.history or History()
        self.history.status = "running"
        self.log = MetricsLog(Path(hooks.log_dir) if hooks.log_dir and is_primary() else None, self.history)
        self.last_record = None  # (step, time) of the last train record, for tokens/s

    def progress(self, state: TrainState):
        """The steps left, on a progress bar; which seeds still train, from the state."""
        start = step_number(state)
        active = np.asarray(state.active)
        self.seeds = Seeds(active, np.full(active.shape, np.nan))
        self.last_record = (start, time.monotonic())
        self.bar = tqdm(
            range(start, self.loop.steps),
            initial=start,
            total=self.loop.steps,
            desc=self.hooks.desc,
            dynamic_ncols=True,
            leave=False,
            disable=not sys.stderr.isatty(),  # a job's log (SLURM, a file): one line per evaluation instead
        )
        self.started = time.monotonic()
        return self.bar

    def batch(self, step: int) -> Batch:
        return self.parallel.place_batch(self.get_batch(step))

    def read(self, state: TrainState, outputs: list[tuple[int, StepOutput]]) -> TrainState:
        """Record `outputs` (done by now), and stop the seeds whose step failed."""
        if not outputs:
            return state
        names = outputs[0][1].scalar_names()
        packed = np.stack([_packed(out) for _, out in outputs])
        due = lambda step: step % self.loop.log_every == 0 or step == self.loop.steps - 1  # noqa: E731
        verdict = judge_steps([step for step, _ in outputs], packed, names, self.seeds, due)
        self.seeds = verdict.seeds
        for step, out in outputs:
            if out.flow is not None:
                self.history.flow[step] = to_python(out.flow)
        for step, scalars in verdict.records:
            self.record(step, scalars)
        for entry in verdict.skipped:
            self.history.skipped_steps.append(entry)
            self.log.write(
                "train", entry if np.ndim(entry) == 0 else entry[0], {"skipped": len(self.history.skipped_steps)}
            )
        for step, bad in verdict.failed.items():
            state = self.measure_failed_step(state, step, bad)
        if verdict.failed:
            self.stop(verdict.failed)
        return state

    def record(self, step: int, scalars: dict) -> None:
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

    def measure_failed_step(self, state: TrainState, step: int, bad) -> TrainState:
        """The gradient-flow profile of the step that failed, unless it was measured: the halted
        state is the one that step saw (it updated nothing since), so the flow step at that
        step number and batch, with every update off, sees what it saw. Seeds that did not fail
        there get NaN in that record."""
        self.bar.write(
            f"{self.hooks.desc}: non-finite loss/gradient at step {step} (last finite gradient norm "
            f"{host_value(self.seeds.last_finite_grad_norm)}); the step's gradient-flow profile is in the "
            "history (--on-nan skip would go on)"
        )
        if step in self.history.flow or self.hooks.flow_step is None:
            return state
        frozen = state.replace(step=jnp.full_like(state.step, step), active=jnp.zeros_like(state.active))
        # the step donates its input: carry on with what it returns (nothing updated)
        unchanged, out = self.hooks.flow_step(frozen, self.batch(step))
        profile = jax.device_get(out.flow)
        if np.ndim(bad):  # stacked seeds: only the seeds that failed at this step
            seeds = lambda v: np.reshape(bad, (-1,) + (1,) * (np.ndim(v) - 1))  # noqa: E731
            profile = jax.tree.map(lambda v: np.where(seeds(v), v, np.nan), profile)
        self.history.flow[step] = to_python(profile)
        return unchanged.replace(step=state.step, active=state.active)

    def stop(self, failed: dict) -> None:
        """Record where each seed stopped; the run is ``diverged`` when none is left."""
        history, active = self.history, self.seeds.active
        history.last_finite_grad_norm = host_value(self.seeds.last_finite_grad_norm)
        history.diverged_at = diverged_at(history.diverged_at, failed, active.size if np.ndim(active) else None)
        if np.ndim(active):
            for step, bad in failed.items():
                self.bar.write(
                    f"{self.hooks.desc}: seed(s) {np.flatnonzero(bad).tolist()} stop at step {step}; the others go on"
                )
        if not np.any(active):
            history.status = "diverged"
            self.bar.write(f"{self.hooks.desc}: stopping; the last good checkpoint is kept")

    def evaluate(self, state: TrainState, step: int) -> dict:
        metrics = {k: host_value(v) for k, v in self.hooks.evaluate(state.params).items()}
        self.history.eval.append({"step": step, **metrics})
        self.log.write("eval", step, metrics)
        if self.bar.disable:
            shown = ", ".join(f"{k} {np.mean(v):.4g}" for k, v in metrics.items() if np.size(v))
            train = f"train loss {np.mean(self.history.train[-1]['loss']):.4g}, " if self.history.train else ""
            elapsed = time.monotonic() - self.started
            print(
                f"{self.hooks.desc}: step {step}/{self.loop.steps}, {train}eval {shown} ({elapsed:.0f} s)",
                file=sys.stderr,
            )
        return metrics

    def save(self, state: TrainState, eval_metrics=None) -> None:
        hooks = self.hooks
        if hooks.checkpoints is not None:
            extra = (
                hooks.checkpoint_extra(self.history) if hooks.checkpoint_extra else {"history": self.history.to_json()}
            )
            hooks.checkpoints.save(state, extra, eval_metrics=eval_metrics)

    def close(self) -> None:
        if hasattr(self, "bar"):
            self.bar.close()
        self.log.close()
        if self.hooks.checkpoints is not None:
            self.hooks.checkpoints.wait()


def _packed(out: StepOutput) -> np.ndarray:
    """A step's scalars (and ``active``) on the host as one ([seeds,] columns) array
    (`StepOutput.packed`, or gathered here from a step that did not pack them)."""
    if out.packed is not None:
        return np.asarray(out.packed)
    return np.asarray(out.with_packed().packed)


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
