"""Tasks on real text: the next character of a corpus (charlm), the polarity of a sentence
(sentiment, many-to-one) and the part of speech of every word (tagging)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rnn_jax.data import corpora, loaders, text
from rnn_jax.data.batches import pad
from rnn_jax.data.vocab import PAD, Vocab
from rnn_jax.losses import classification_cross_entropy, sequence_cross_entropy
from rnn_jax.tasks.base import Task, batches, label_entropy, register_task, rows_task


@register_task("charlm")
def charlm(cfg) -> Task:
    """Windows of --seq-len characters: of the first 90% of the text in training, of the last
    10% held out (no held-out window was ever seen)."""
    train_text, val_text = text.split_text(text.read_text(cfg.data, seed=cfg.seed))
    vocab = text.CharVocab.from_text(train_text)
    val_text = "".join(c for c in val_text if c in set(vocab.chars))
    train, val = (jnp.asarray(vocab.encode(t)) for t in (train_text, val_text))
    return Task(
        batch=batches(text.random_windows, batch=cfg.batch, length=cfg.seq_len),
        data=(train,),
        eval_data=(val,),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=vocab.size, output_size=vocab.size),
        baseline=float(np.log(vocab.size)),
        metric="cross-entropy (nats/char)",
        vocab=vocab.chars,
    )


def labelled_text_arrays(splits: dict, *, length: int, min_count: int = 2, data: str = "the data"):
    """Token lists with integer labels ({split: (token lists, labels)}) as left-padded arrays
    ({split: {"inputs", "mask", "targets"}}), every sequence ending at the last step; the
    vocabulary is the training split's words seen `min_count` times. Returns (arrays, vocab,
    labels 0..K-1)."""
    vocab = Vocab.build(splits["train"][0], min_count=min_count)
    labels = sorted(set(np.asarray(splits["train"][1]).tolist()))
    if labels != list(range(len(labels))) or len(labels) < 2:
        raise ValueError(f"{data}: labels must be 0..K-1 with K >= 2; the training split has {labels}")
    arrays = {s: {**left_padded(vocab, tokens, length), "targets": np.asarray(y)} for s, (tokens, y) in splits.items()}
    return arrays, vocab, labels


def left_padded(vocab: Vocab, token_lists, length: int) -> dict[str, np.ndarray]:
    """Token lists as ids left-padded to `length` (the last `length` tokens of longer ones), so
    every sequence ends at the last step: {"inputs", "mask"}."""
    ids, mask = pad([vocab.encode(t) for t in token_lists], length, side="left")
    return {"inputs": ids, "mask": mask}


def tagged_arrays(splits: dict, *, length: int, min_count: int = 2, eval_length: int | None = None):
    """Tagged sentences ({split: [(words, tags)]}) as right-padded arrays ({split: {"inputs",
    "mask", "targets"}}), training sentences cut at `length` words and the others at
    `eval_length` (None: their longest, so every word is scored). Returns (arrays, word
    vocabulary, tag vocabulary), both built from the training split."""
    words = Vocab.build([w for w, _ in splits["train"]], min_count=min_count)
    tags = Vocab.build([t for _, t in splits["train"]], specials=(PAD,))
    arrays = {}
    for split, sentences in splits.items():
        cut = length if split == "train" else eval_length or max(len(w) for w, _ in sentences)
        ids, mask = pad([words.encode(w) for w, _ in sentences], cut)
        targets, _ = pad([tags.encode(t) for _, t in sentences], cut)
        arrays[split] = {"inputs": ids, "mask": mask, "targets": targets}
    return arrays, words, tags


@register_task("sentiment")
def sentiment(cfg) -> Task:
    """Sentence polarity (or --data: any labelled texts `rnn_jax.data.loaders.load_sentiment`
    reads), classified from the final state; words seen once in training are <unk>."""
    data = cfg.data or "rt_sentence_polarity"
    splits = corpora.read(data, lambda source: loaders.load_sentiment(source.location, seed=cfg.seed))
    arrays, vocab, labels = labelled_text_arrays(splits, length=cfg.seq_len, data=data)
    counts = np.bincount(arrays["train"]["targets"])
    majority = float(np.mean(arrays["validation"]["targets"] == counts.argmax()))
    return rows_task(
        arrays,
        cfg.batch,
        data,
        loss_fn=classification_cross_entropy,
        model_io=dict(vocab_size=vocab.size, output_size=len(labels), readout="final"),
        baseline=label_entropy(counts),
        metric="cross-entropy of the label (nats)",
        vocab=vocab.tokens,
        info={"vocab_size": vocab.size, "validation_majority_accuracy": majority},
    )


@register_task("tagging")
def tagging(cfg) -> Task:
    """Part-of-speech tags of UD English-EWT (or --data: a treebank `load_treebank` reads),
    one per word; sentences cut at --seq-len words."""
    data = cfg.data or "ud_english_ewt"
    splits = corpora.read(data, lambda source: loaders.load_treebank(source.location, config=source.config))
    arrays, words, tags = tagged_arrays(splits, length=cfg.seq_len, eval_length=cfg.seq_len)
    counts = np.bincount(arrays["train"]["targets"][arrays["train"]["mask"]], minlength=tags.size)
    return rows_task(
        arrays,
        cfg.batch,
        data,
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=words.size, output_size=tags.size),
        baseline=label_entropy(counts),
        metric="cross-entropy per word (nats)",
        vocab=words.tokens,
        info={"vocab_size": words.size, "tags": list(tags.tokens)},
    )
