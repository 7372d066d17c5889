"""Training logs: metrics.jsonl (one JSON object per record) and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rnn_jax.history import History


class MetricsLog:
    """Writes each train / eval record to `log_dir`/metrics.jsonl and `log_dir`/tensorboard/
    (nothing without a `log_dir`). On resume, metrics.jsonl is rewritten from the restored
    `history`, so records written after the last checkpoint by the interrupted run do not
    appear twice."""

    def __init__(self, log_dir: Path | None, history: History):
        self.jsonl = self.tensorboard = None
        if log_dir is None:
            return
        from tensorboardX import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(log_dir / "metrics.jsonl", "w")
        self.tensorboard = SummaryWriter(str(log_dir / "tensorboard"))
        for split, records in (("train", history.train), ("eval", history.eval)):
            for record in records:
                self.jsonl.write(json.dumps({"split": split, **record}) + "\n")

    def write(self, split: str, step: int, scalars: dict[str, float | list[float]]) -> None:
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"split": split, "step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for name, value in scalars.items():
            curves = {f"{name}/seed{s}": v for s, v in enumerate(value)} if isinstance(value, list) else {name: value}
            for curve, v in curves.items():  # stacked seeds: one curve each
                if math.isfinite(v):  # a diverged step is in metrics.jsonl; TensorBoard would warn at every one
                    self.tensorboard.add_scalar(f"{split}/{curve}", v, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.tensorboard.close()
