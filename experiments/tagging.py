"""Many-to-many, synchronous: part-of-speech tagging (one UPOS tag per word).

    python -m experiments.tagging                                       # UD English-EWT, train/dev/test
    python -m experiments.tagging --bidirectional --cell gru
    python -m experiments.tagging --data my_treebank/ --max-len 48
    python -m experiments.tagging --checkpoint runs/tagging/RUN --input "The old man the boats ."

--data is a corpus name (ud_english_ewt, the default: read from $RNN_JAX_DATA, else from the
hub as universal-dependencies/universal_dependencies, en_ewt), a folder with a treebank's
*-train / *-dev / *-test .conllu files, a save_to_disk folder or a hub dataset id with tokens
and upos columns (--hf-config its configuration). Words keep their case (a capital says much about PROPN); words
seen fewer than --min-count times in training become <unk>, so the model learns what to do
with a word it does not know. Sentences are right-padded; padding is masked out of the
recurrence, the loss and the accuracy. Reported: token accuracy on the test split of the best
checkpoint by validation accuracy (--best-by), beside the most-frequent-tag-per-word baseline (a
word unseen in training gets the most frequent tag overall). A bidirectional tagger sees the whole
sentence before it tags a word; a forward one only the words to its left.

Writes to --out: results.json, loss_curves.png, flow_vs_lag.png, logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax.config import require_at_least_one
from rnn_jax.data.batches import pad
from rnn_jax.data.vocab import UNK, Vocab
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.layers import SequenceModel
from rnn_jax.options import TaskOptions
from rnn_jax.tasks import Task, make_task


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "tagging"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(
        hidden=32, embed=32, batch=16, steps=60, eval_every=30, checkpoint_every=30, max_len=32
    )
    DEFAULTS: ClassVar[dict] = dict(best_by="accuracy")  # the metric tested (by loss: an early checkpoint)

    data: str = "ud_english_ewt"
    """a corpus name (ud_english_ewt), a folder holding *-train/*-dev/*-test .conllu files, a save_to_disk folder or a hub dataset id (with tokens
    and upos columns)"""
    hf_config: str | None = None
    """configuration of a hub dataset (e.g. en_ewt)"""
    max_len: int = 64
    """words per sentence in training (longer sentences are cut there; evaluation reads every word)"""
    min_count: int = 2
    """words seen fewer times in training become <unk>"""
    embed: int = 128
    """word embedding size"""
    bidirectional: bool = False
    """tag from a forward and a backward recurrence"""

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
        vocab_size=len(extra["words"]),
        input_size=cfg.embed,
        output_size=len(extra["tags"]),
        bidirectional=cfg.bidirectional,
    )


def token_accuracy(model, rows: dict) -> float:
    predicted = np.asarray(batched_outputs(model, rows).argmax(-1))
    mask = np.asarray(rows["mask"])
    return float(np.sum((predicted == np.asarray(rows["targets"])) & mask) / np.sum(mask))


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `tagging` (`rnn_jax.tasks.text`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    extra = {"words": list(task.vocab), "tags": task.info["tags"]}
    return single_task_data(task, cfg.seed, extra=extra, tokens_per_step=cfg.batch * cfg.max_len), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    metrics = {
        f"{s}_accuracy": token_accuracy(model, rows)
        for s, (rows,) in (("validation", task.eval_data), ("test", task.test_data))
    }
    metrics["test_most_frequent_tag_baseline"] = task.info["test_most_frequent_tag_accuracy"]
    info = {k: v for k, v in task.info.items() if k != "test_most_frequent_tag_accuracy"}
    return metrics, {**info, "tags": task.info["tags"][1:]}  # without <pad>


def predict(run_dir: str, sentence: str) -> str:
    """The tag of every word of `sentence` (split on spaces) under the trained run."""
    cfg, extra, model = load_run(run_dir, Config, build_model)
    sentence_words = sentence.split()
    if not sentence_words:
        raise ValueError("--input holds no word")
    words, tags = Vocab(extra["words"]), Vocab(extra["tags"])
    ids, mask = pad([words.encode(sentence_words)], len(sentence_words))
    predicted = batched_outputs(model, {"inputs": ids, "mask": mask})[0].argmax(-1)
    return " ".join(
        f"{w}/{tags.tokens[t]}" + ("" if w in words else f"({UNK})") for w, t in zip(sentence_words, predicted)
    )


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    return (
        f"\ntagging {cfg.cell}{' (bidirectional)' if cfg.bidirectional else ''}: {results['steps']} steps in "
        f"{results['wall_time_s'] / 60:.1f} min -> {results['out']}\n"
        f"test token accuracy {m['test_accuracy']:.4f} (most frequent tag per word "
        f"{m['test_most_frequent_tag_baseline']:.4f}); validation {m['validation_accuracy']:.4f}"
    )


EXPERIMENT = cli.TaskExperiment("tagging", Config, data, build_model, report, summary, predict=predict)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
