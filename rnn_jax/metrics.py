"""Scores of what a trained model generates, and a language model's losses in the units of its
literature: BLEU (sacrebleu), edit distance, nats and bits per token."""

from __future__ import annotations

import math

import numpy as np


def bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """Corpus BLEU (sacrebleu, already-tokenised text) of token lists against each hypothesis's
    one or more reference token lists."""
    import sacrebleu

    streams = max(len(r) for r in references)
    refs = [[" ".join(r[k]) if k < len(r) else None for r in references] for k in range(streams)]
    # force: the text is tokenised on purpose (sacrebleu would warn three times a call that it looks so)
    return float(sacrebleu.corpus_bleu([" ".join(h) for h in hypotheses], refs, tokenize="none", force=True).score)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning `a` into `b`."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def language_model_metrics(history) -> dict:
    """Train (mean of the last 10 records) and validation loss in nats and bits per token, and the
    median speed, from a run's `History`."""
    evals, trains = history.eval, history.train
    train = float(np.mean([r["loss"] for r in trains[-10:]])) if trains else float("nan")
    val = evals[-1]["loss"] if evals else float("nan")
    speeds = [r["tokens_per_s"] for r in trains if "tokens_per_s" in r]
    return {
        "train_loss_nats": train,
        "train_loss_bits": train / math.log(2),
        "val_loss_nats": val,
        "val_loss_bits": val / math.log(2),
        "best_val_loss_nats": min((r["loss"] for r in evals), default=float("nan")),
        "tokens_per_s": float(np.median(speeds)) if speeds else None,
    }
