"""Orbax checkpoints of a run: the last few and the best by a validation metric, each with
the TrainState and a JSON item (config, history, vocabularies: what prediction and resume need)."""

from __future__ import annotations

import math
import warnings
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
    half_written = sorted(
        str(p.relative_to(directory)) for p in directory.glob("*/*") if ocp.utils.TMP_DIR_SUFFIX in p.name
    )
    if half_written:
        warnings.warn(
            f"{directory}: ignoring and removing half-written checkpoint(s) {half_written} (a save was "
            "interrupted); the last complete checkpoint is used",
            stacklevel=3,
        )


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
