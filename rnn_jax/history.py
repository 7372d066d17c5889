"""The record of a training run: what the loop measured, by integer step, and its JSON form."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

STATUSES = ("running", "completed", "diverged", "stopped", "interrupted")


@dataclasses.dataclass
class History:
    """Train and eval records (``{"step": int, "loss": ..., ...}``; with stacked seeds every
    metric is a list, one value per seed), the gradient-flow measurements by step (``flow[step]``:
    ``{"by_step": {key: norms}, "by_lag": {key: norms}}``, a leading seed axis when stacked) and
    how the run ended.

    status: ``running``; ``completed``; ``diverged`` (a NaN/Inf loss or gradient stopped it at
    `diverged_at`, with `last_finite_grad_norm`; stacked seeds: one entry per seed, None for those
    still training); ``stopped`` (the time budget ran out after `stopped_at` steps, evaluated and
    saved); ``interrupted`` (Ctrl-C, saved). `skipped_steps`: steps not applied under
    ``--on-nan skip`` (stacked seeds: ``[step, [seeds]]``).
    """

    train: list[dict] = dataclasses.field(default_factory=list)
    eval: list[dict] = dataclasses.field(default_factory=list)
    flow: dict[int, dict] = dataclasses.field(default_factory=dict)
    status: str = "running"
    skipped_steps: list = dataclasses.field(default_factory=list)
    diverged_at: Any = None
    last_finite_grad_norm: Any = None
    stopped_at: int | None = None

    @property
    def finished(self) -> bool:
        """Nothing left to train: it completed, or every seed diverged."""
        return self.status in ("completed", "diverged")

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["flow"] = {str(step): record for step, record in sorted(self.flow.items())}
        return data

    @classmethod
    def from_json(cls, data: dict) -> History:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"not a training history: unknown fields {sorted(unknown)}")
        return cls(**{**data, "flow": {int(step): record for step, record in data.get("flow", {}).items()}})

    def seed(self, index: int) -> History:
        """The history of one seed of a run over stacked seeds: its value of every record, its
        flow profiles, and its own end (records of a seed stopped by a NaN end there)."""
        stopped = None if self.diverged_at is None else self.diverged_at[index]
        end = math.inf if stopped is None else stopped

        def pick(value):
            return value[index] if isinstance(value, list) else value

        def record(r):
            return {k: (v if k == "step" else pick(v)) for k, v in r.items()}

        flow = {step: _pick_tree(profiles, index) for step, profiles in self.flow.items() if step <= end}
        return History(
            train=[record(r) for r in self.train if r["step"] < end],
            eval=[record(r) for r in self.eval if r["step"] <= end],
            flow=flow,
            status="diverged" if stopped is not None else self.status,
            skipped_steps=[s for s, bad in self.skipped_steps if index in bad],
            diverged_at=stopped,
            last_finite_grad_norm=pick(self.last_finite_grad_norm) if stopped is not None else None,
            stopped_at=self.stopped_at,
        )


def _pick_tree(tree, index):
    """Entry `index` of every leaf list (the seed axis) of nested dicts."""
    if isinstance(tree, dict):
        return {k: _pick_tree(v, index) for k, v in tree.items()}
    return tree[index]
