"""Orbax checkpoints of a run: the last few and the best by a validation metric, each with
the TrainState and a JSON item (config, history, vocabularies: what prediction and resume need)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from rnn_jax.choices import check_choice
from rnn_jax.train import TrainState, step_number

BEST_BY = {"loss": "min", "accuracy": "max"}  # validation metric -> which end is best


def check_best_by(best_by: str) -> str:
    check_choice("--best-by", best_by, BEST_BY)
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
        def common(name):
            return dict(
                create=True,
                cleanup_tmp_directories=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
            )

        with _quiet_orbax():  # a damaged checkpoint's metadata is reported once, by `restore_intact`
            self.last = ocp.CheckpointManager(
                self.directory / "last", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common("last"))
            )
            self.best = ocp.CheckpointManager(
                self.directory / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda m: m[best_by], best_mode=BEST_BY[best_by], **common("best")
                ),
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
            raise ValueError(
                f"the evaluation reports {sorted(eval_metrics)}: no {self.best_by!r} to pick the best "
                "checkpoint by; use --best-by loss"
            )
        value = float(np.mean(eval_metrics[self.best_by]))  # the mean over seeds, if stacked
        if math.isfinite(value) and step not in self.best.all_steps():
            self.best.save(step, args=args, metrics={self.best_by: value})

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def preferred_step(self, *, last: bool = False) -> tuple[bool, int | None]:
        """(from best/, its step): the best checkpoint by `best_by` where there is one (and not
        `last`), else the latest; step None when there is none."""
        best = not last and self.best.latest_step() is not None
        return best, self.best.best_step() if best else self.latest_step()

    def restore_extra(self, *, best: bool = False, step: int | None = None) -> dict:
        """Only the JSON saved beside the state (config, vocabularies, history): what a run
        needs to know before it can build the model the state belongs to."""
        manager = self.best if best else self.last
        step = _checkpoint_step(manager, step)
        return manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]

    def restore(self, like: TrainState, *, best: bool = False, step: int | None = None) -> tuple[TrainState, dict]:
        """Restore into the structure of `like` (a freshly initialised TrainState)."""
        return restore_checkpoint(self.best if best else self.last, like, step)

    def restore_intact(
        self, like: TrainState, *, check_extra: Callable[[dict], None] | None = None, log: Path | None = None
    ) -> tuple[TrainState, dict, int]:
        """(state, extra, step) of the newest checkpoint that restores: ``last/`` newest first,
        then ``best/``. Each damaged one (unreadable metadata, array data or JSON, a missing file)
        costs one line on stderr (step, folder, cause) and its full traceback in `log`; once an
        intact one is found, the damaged ones are moved to ``damaged/`` (kept, and out of the way
        of the saves that replace them). `check_extra(extra)` may refuse an intact checkpoint
        whose JSON does not fit the data: its ValueError is not damage and propagates. None
        intact: a ValueError listing what was tried, and nothing is moved."""
        candidates = [(self.last, s) for s in sorted(self.last.all_steps(), reverse=True)]
        candidates += [(self.best, s) for s in sorted(self.best.all_steps(), reverse=True)]
        if not candidates:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: nothing to restore or resume from")
        damaged = []
        _quiet_orbax_leftovers(log)
        for manager, step in candidates:
            try:
                with _quiet_orbax():
                    extra = _read_extra(manager, step)
                if check_extra is not None:
                    check_extra(extra)
                with _quiet_orbax():
                    state, extra = restore_checkpoint(manager, like, step)
            except _Damaged as damage:
                damaged.append((manager, step, self._report(manager, step, damage.__cause__, log)))
                continue
            for manager_, step_, _ in damaged:
                self._set_aside(manager_, step_)
            return state, extra, step
        tried = "; ".join(f"{Path(m.directory).name}/{s}: {cause}" for m, s, cause in damaged)
        raise ValueError(
            f"no intact checkpoint in {self.directory}; tried (newest first) {tried}"
            + (f" (full causes in {log})" if log else "")
            + ". They are damaged, or were written by a different model configuration (cell, sizes, layers) than "
            "the run's config.json describes now"
        )

    def wait(self) -> None:
        self.last.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.last.close()
        self.best.close()

    @staticmethod
    def _report(manager: ocp.CheckpointManager, step: int, error: BaseException, log: Path | None) -> str:
        """One line on stderr for a damaged checkpoint, its traceback in `log`; returns the cause."""
        cause = _one_line(error)
        print(
            f"warning: checkpoint step {step} in {manager.directory} is damaged ({cause}); trying the one before",
            file=sys.stderr,
        )
        if log is not None and jax.process_index() == 0:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {Path(manager.directory) / str(step)}:\n")
                f.write("".join(traceback.format_exception(error)) + "\n")
        return cause

    def _set_aside(self, manager: ocp.CheckpointManager, step: int) -> None:
        where = Path(manager.directory) / str(step)
        if where.exists() and jax.process_index() == 0:
            aside = self.directory / "damaged" / f"{where.parent.name}-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(where), aside)
        manager.reload()


def _warn_half_written(directory: Path) -> None:
    half_written = sorted(
        str(p.relative_to(directory)) for p in directory.glob("*/*") if ocp.utils.TMP_DIR_SUFFIX in p.name
    )
    if half_written:
        warnings.warn(
            f"{directory}: ignoring and removing half-written checkpoint(s) {half_written} (a save was "
            "interrupted); the last complete checkpoint is used",
            stacklevel=3,
        )


class _Damaged(ValueError):
    """A checkpoint that cannot be read; the cause is chained."""


def _read_extra(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON item of a checkpoint, after checking its metadata file parses (orbax only logs a
    metadata file it cannot parse, and restores on)."""
    try:
        metadata = Path(manager.directory) / str(step) / "_CHECKPOINT_METADATA"
        if metadata.exists():
            json.loads(metadata.read_text())
        return manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]
    except Exception as error:  # orbax and TensorStore raise many types: any failure to read is damage
        raise _Damaged from error


def _one_line(error: BaseException) -> str:
    """The cause of a failed read in one line: its type and first sentence, without TensorStore's
    spec dump."""
    text = str(error).split(" See full TensorStore details")[0].split("\n")[0].strip()
    return f"{type(error).__name__}: {text[:200]}"


@contextlib.contextmanager
def _quiet_orbax():
    """absl ERROR lines that orbax logs while a damaged checkpoint is read stay out of the
    terminal (the failure is reported once, by `restore_intact`)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet_orbax_leftovers(log: Path | None) -> None:
    """After a failed read, orbax leaves reads of the other arrays as coroutines whose errors
    Python prints when it collects them ("Exception ignored in: <coroutine ...>", with the
    TensorStore spec): send those to `log` instead of the terminal; every other unraisable
    exception is printed as before."""
    previous = sys.unraisablehook

    def hook(unraisable):
        code = getattr(getattr(unraisable.object, "cr_code", None), "co_filename", "")
        closed_loop = isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
            unraisable.exc_value
        )  # TensorStore completing a read whose event loop orbax closed on the failure
        if "orbax" not in code and not closed_loop:
            return previous(unraisable)
        if log is not None and jax.process_index() == 0:
            with open(log, "a") as f:
                f.write(f"(left over from the failed read) {_one_line(unraisable.exc_value)}\n")

    if getattr(sys.unraisablehook, "__qualname__", "") != hook.__qualname__:  # once
        sys.unraisablehook = hook
        logging.getLogger("asyncio").addFilter(_orbax_task_left_over)


def _orbax_task_left_over(record: logging.LogRecord) -> bool:
    """asyncio's "Task exception was never retrieved" for one of orbax's reads left over from a
    failed restore (measured: 1 run in 7 of the damaged-checkpoint test printed its traceback,
    as the task was collected before or after exit): dropped, as `_quiet_orbax_leftovers` drops
    the coroutines; every other asyncio record is kept."""
    tb = record.exc_info[2] if record.exc_info else None
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return not ("never retrieved" in record.getMessage() and any("orbax" in f for f in files))


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
        raise _Damaged(
            f"cannot restore checkpoint step {step} from {manager.directory}: {_one_line(error)}. It is corrupt or "
            "was written by a different model configuration (cell, sizes, layers)."
        ) from error
    return restored["state"], restored["extra"]
