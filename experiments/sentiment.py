"""Many-to-one: the sentiment of a sentence or a whole review, read from the final state.

    python -m experiments.sentiment                                     # sentence polarity
    python -m experiments.sentiment --data movie_reviews_polarity --max-len 800 --batch 16
    python -m experiments.sentiment --data my_reviews.jsonl --text-column review --label-column stars
    python -m experiments.sentiment --checkpoint runs/sentiment/RUN --input "a gorgeous, witty, seductive movie ."

--data is a corpus name (rt_sentence_polarity, the default, or movie_reviews_polarity: read from
$RNN_JAX_DATA, else the hub where a copy is there), a local .tsv/.csv/.jsonl/.parquet file, a
save_to_disk folder or a hub dataset id (its splits are used).

Words are lower-cased and split from punctuation; the vocabulary is the training split's words
seen at least --min-count times (others become <unk>) and is saved with the checkpoint.
Sequences are padded on the left, so every one ends at the last step: the classifier reads
the final state, and the gradient-flow profile ||dL/dh_(T-k)|| has the same meaning (k tokens
before the end) for every example; a text longer than --max-len keeps its last --max-len
tokens. Splits: the data's own (hub splits; the review corpus's folds 0-7 / 8 / 9), else a
seeded 80/10/10 shuffle. The test accuracy is that of the best checkpoint by validation accuracy
(--best-by; by loss, the long reviews' best is an early checkpoint: an overconfident
classifier's validation loss rises while its accuracy still improves), beside the
majority-class baseline.

Writes to --out: results.json, loss_curves.png, flow_vs_lag.png, logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax.config import require_at_least_one
from rnn_jax.data import loaders
from rnn_jax.data.vocab import Vocab
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, class_probabilities, load_run, single_task_data
from rnn_jax.layers import SequenceModel
from rnn_jax.options import TaskOptions
from rnn_jax.tasks import Task, left_padded, make_task


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "sentiment"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(
        hidden=32, embed=32, batch=16, steps=60, eval_every=30, checkpoint_every=30, max_len=40
    )
    DEFAULTS: ClassVar[dict] = dict(best_by="accuracy")  # the metric tested (by loss: an early checkpoint)

    data: str = "rt_sentence_polarity"
    """labelled texts: a corpus name (rt_sentence_polarity | movie_reviews_polarity), a local
    .tsv/.csv/.jsonl/.parquet file, a save_to_disk folder, or a hub dataset id"""
    hf_config: str | None = None
    """configuration name of a hub dataset that has several"""
    text_column: str = "text"
    """the column holding the text"""
    label_column: str = "label"
    """the column holding the integer class"""
    max_len: int = 64
    """tokens per example (longer ones keep their last --max-len tokens)"""
    min_count: int = 2
    """words seen fewer times in training become <unk>"""
    embed: int = 128
    """word embedding size"""
    bidirectional: bool = False
    """a forward and a backward recurrence, final states concatenated"""

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, ("max_len", "min_count", "embed"))

    @property
    def seq_len(self) -> int:  # the tasks' name for --max-len
        return self.max_len


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    return cfg.sequence_model(
        cfg.cell,
        cfg.seed,
        vocab_size=len(extra["vocab"]),
        input_size=cfg.embed,
        output_size=len(extra["labels"]),
        bidirectional=cfg.bidirectional,
        readout="final",
    )


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `sentiment` (`rnn_jax.tasks.text`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    extra = {"vocab": list(task.vocab), "labels": task.info["labels"]}
    return single_task_data(task, cfg.seed, extra=extra, tokens_per_step=cfg.batch * cfg.max_len), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    metrics = {}
    for split, (rows,) in (("validation", task.eval_data), ("test", task.test_data)):
        predicted = np.asarray(batched_outputs(model, rows).argmax(-1))
        metrics[f"{split}_accuracy"] = float(np.mean(predicted == np.asarray(rows["targets"])))
        metrics[f"{split}_majority_baseline"] = task.info[f"{split}_majority_accuracy"]
    return metrics, {k: v for k, v in task.info.items() if "majority" not in k}


def predict(run_dir: str, text: str) -> str:
    """The class probabilities of `text` under the trained run in `run_dir`."""
    cfg, extra, model = load_run(run_dir, Config, build_model)
    tokens = loaders.tokenize(text)
    if not tokens:
        raise ValueError("--input holds no word")
    vocab = Vocab(extra["vocab"])
    logits = batched_outputs(model, left_padded(vocab, [tokens], cfg.max_len))[0]
    lines = [repr(text)] + ["  " + line for line in class_probabilities(logits, extra["labels"])]
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        lines.append(f"  (words unseen in training, read as <unk>: {unknown})")
    return "\n".join(lines)


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    return (
        f"\nsentiment {cfg.cell}: {results['steps']} steps in {results['wall_time_s'] / 60:.1f} min -> {results['out']}\n"
        f"test accuracy {m['test_accuracy']:.4f} (majority class {m['test_majority_baseline']:.4f}); "
        f"validation {m['validation_accuracy']:.4f}"
    )


EXPERIMENT = cli.TaskExperiment("sentiment", Config, data, build_model, report, summary, predict=predict)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
