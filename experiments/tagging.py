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

import collections
import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax.config import require_at_least_one
from rnn_jax.data import corpora, loaders
from rnn_jax.data.batches import chunks, pad, shuffled_batches
from rnn_jax.data.vocab import UNK, Vocab
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, load_run
from rnn_jax.layers import SequenceModel
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.options import TaskOptions
from rnn_jax.tasks import tagged_arrays


@dataclasses.dataclass
class Config(TaskOptions):
    QUICK: ClassVar[dict] = dict(
        hidden=32, embed=32, batch=16, steps=60, eval_every=30, checkpoint_every=30, max_len=32
    )

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
    best_by: str = "accuracy"  # the metric tested (by loss: an early checkpoint)

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, ("max_len", "min_count", "embed"))


def load_splits(cfg: Config) -> dict[str, list[tuple[list[str], list[str]]]]:
    return corpora.read(
        cfg.data, lambda source: loaders.load_treebank(source.location, config=source.config or cfg.hf_config)
    )


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    return cfg.sequence_model(
        cfg.cell,
        cfg.seed,
        vocab_size=len(extra["words"]),
        embed_size=cfg.embed,
        output_size=len(extra["tags"]),
        bidirectional=cfg.bidirectional,
    )


def most_frequent_tag_baseline(train, test) -> float:
    """Token accuracy of tagging each word with its most frequent training tag."""
    by_word = collections.defaultdict(collections.Counter)
    overall = collections.Counter()
    for words, tags in train:
        for w, t in zip(words, tags):
            by_word[w][t] += 1
            overall[t] += 1
    fallback = overall.most_common(1)[0][0]
    best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
    hits = [best.get(w, fallback) == t for words, tags in test for w, t in zip(words, tags)]
    return float(np.mean(hits))


def token_accuracy(model, data: dict) -> float:
    predicted = batched_outputs(model, data).argmax(-1)
    return float(np.sum((predicted == data["targets"]) & data["mask"]) / np.sum(data["mask"]))


def data(cfg: Config) -> tuple[TrainingData, dict]:
    splits = load_splits(cfg)
    arrays, words, tags = tagged_arrays(splits, length=cfg.max_len, min_count=cfg.min_count)
    training = TrainingData(
        sequence_cross_entropy,
        shuffled_batches(arrays["train"], cfg.batch, cfg.seed),
        chunks(arrays["validation"], 512),
        extra={"words": list(words.tokens), "tags": list(tags.tokens)},
        tokens_per_step=cfg.batch * cfg.max_len,
    )
    return training, {"arrays": arrays, "splits": splits, "words": words, "tags": tags}


def report(cfg: Config, model, held: dict, out, fitted) -> tuple[dict, dict]:
    arrays, splits, words = held["arrays"], held["splits"], held["words"]
    metrics = {f"{s}_accuracy": token_accuracy(model, arrays[s]) for s in ("validation", "test")}
    metrics["test_most_frequent_tag_baseline"] = most_frequent_tag_baseline(splits["train"], splits["test"])
    test_words = [w for ws, _ in splits["test"] for w in ws]
    info = {
        "vocab_size": words.size,
        "tags": list(held["tags"].tokens[1:]),
        "sentences": {s: len(v) for s, v in splits.items()},
        "test_unknown_word_fraction": float(np.mean([w not in words for w in test_words])),
    }
    return metrics, info


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
