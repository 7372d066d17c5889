"""Tasks on real text: the next character of a corpus (charlm), the polarity of a sentence
(sentiment, many-to-one) and the part of speech of every word (tagging)."""

from __future__ import annotations

import collections

import jax.numpy as jnp
import numpy as np

from rnn_jax.data import corpora, loaders, text
from rnn_jax.data.batches import pad
from rnn_jax.data.vocab import PAD, Vocab
from rnn_jax.losses import classification_cross_entropy, sequence_cross_entropy
from rnn_jax.tasks.base import Task, batches, label_entropy, register_task, rows_task, task_option


@register_task("charlm")
def charlm(cfg) -> Task:
    """The next character of a corpus (--data; the char_lm experiment's --hf-dataset) in windows
    of --seq-len characters: the first 90% of the text trains (the char_lm experiment's
    --val-fraction), the last part is held out (no held-out window was ever seen; characters
    unseen in training are dropped from it and listed in `info`). Windows are drawn at random
    (held-out ones too: --eval-batches draws); with the char_lm experiment's --tbptt the text is
    read as --batch parallel streams (char-rnn), the held-out text window by window in order,
    and with `stateful` the state carried from window to window."""
    train_text, val_text = text.split_text(_corpus(cfg), task_option(cfg, "val_fraction", 0.1))
    vocab = text.CharVocab.from_text(train_text)
    unseen = sorted(set(val_text) - set(vocab.chars))
    val_text = "".join(c for c in val_text if c in set(vocab.chars))
    train, val = (jnp.asarray(vocab.encode(t)) for t in (train_text, val_text))
    fields = dict(
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=vocab.size, output_size=vocab.size),
        baseline=float(np.log(vocab.size)),
        metric="cross-entropy (nats/char)",
        vocab=vocab.chars,
        info={"characters": {"train": len(train_text), "validation": len(val_text)}, "validation_dropped": unseen},
    )
    random = batches(text.random_windows, batch=cfg.batch, length=cfg.seq_len)
    tbptt = task_option(cfg, "tbptt", None)
    if tbptt is None:
        return Task(batch=random, data=(train,), eval_data=(val,), **fields)
    held = (_stream_rows(val, cfg.batch, cfg.seq_len),)
    if tbptt == "random":
        return Task(batch=random, data=(train,), eval_data=held, eval_in_order=True, eval_carried=True, **fields)
    streams, _ = text.stream_layout(train, cfg.batch, cfg.seq_len)
    stream = batches(stream_batch, by_step=True, length=cfg.seq_len)
    streamed = dict(eval_in_order=True, stateful=True, eval_carried=True)
    return Task(batch=stream, data=(streams,), eval_data=held, **streamed, **fields)


def _corpus(cfg) -> str:
    hub = task_option(cfg, "hf_dataset", None)
    if hub:
        column, split = task_option(cfg, "text_column", "text"), task_option(cfg, "hf_split", "train")
        return text.load_hf_text(hub, text_column=column, split=split)
    return text.read_text(cfg.data, seed=cfg.seed)


def stream_batch(key, step, streams, *, length: int) -> dict:
    """Window `step` (modulo a pass) of every parallel stream (`text.stream_window`); the key is
    not used: the streams are read in order."""
    windows = (streams.shape[1] - 1) // length
    return text.stream_window(streams, step % windows, length)


def _stream_rows(ids, streams: int, length: int) -> dict:
    """Every window of `ids` laid out as `streams` parallel streams, as rows in window order
    (window k of every stream, then window k + 1): in chunks of `streams` rows they are the
    consecutive windows a stateful model reads with its state carried."""
    layout, windows = text.stream_layout(ids, streams, length)
    rows = [text.stream_window(layout, k, length) for k in range(windows)]
    return {key: jnp.concatenate([row[key] for row in rows]) for key in ("inputs", "targets")}


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
    reads), classified from the final state of left-padded sequences of --seq-len words (the
    last ones of longer texts); words seen fewer than --min-count times in training are <unk>.
    The sentiment experiment's own flags (--text-column, --label-column, --hf-config,
    --min-count) apply where the experiment has them."""
    data = cfg.data or "rt_sentence_polarity"
    columns = dict(
        text_column=task_option(cfg, "text_column", "text"), label_column=task_option(cfg, "label_column", "label")
    )
    config = task_option(cfg, "hf_config", None)
    splits = corpora.read(
        data,
        lambda source: loaders.load_sentiment(
            source.location, **columns, seed=cfg.seed, config=source.config or config
        ),
    )
    min_count = task_option(cfg, "min_count", 2)
    arrays, vocab, labels = labelled_text_arrays(splits, length=cfg.seq_len, min_count=min_count, data=data)
    counts = np.bincount(arrays["train"]["targets"])
    lengths = np.asarray([len(tokens) for tokens in splits["train"][0]])
    majority = {f"{s}_majority_accuracy": float(np.mean(arrays[s]["targets"] == counts.argmax())) for s in arrays}
    return rows_task(
        arrays,
        cfg.batch,
        data,
        loss_fn=classification_cross_entropy,
        model_io=dict(vocab_size=vocab.size, output_size=len(labels), readout="final"),
        baseline=label_entropy(counts),
        metric="cross-entropy of the label (nats)",
        vocab=vocab.tokens,
        info={
            "vocab_size": vocab.size,
            "labels": labels,
            **majority,
            "train_tokens_median": float(np.median(lengths)),
            "train_truncated_fraction": float(np.mean(lengths > cfg.seq_len)),
        },
    )


@register_task("tagging")
def tagging(cfg) -> Task:
    """Part-of-speech tags of UD English-EWT (or --data: a treebank `load_treebank` reads),
    one per word; training sentences cut at --seq-len words, held-out ones scored on every
    word. Words seen fewer than --min-count times in training are <unk> (the tagging
    experiment's --min-count and --hf-config apply where it has them)."""
    data = cfg.data or "ud_english_ewt"
    config = task_option(cfg, "hf_config", None)
    splits = corpora.read(data, lambda source: loaders.load_treebank(source.location, config=source.config or config))
    arrays, words, tags = tagged_arrays(splits, length=cfg.seq_len, min_count=task_option(cfg, "min_count", 2))
    counts = np.bincount(arrays["train"]["targets"][arrays["train"]["mask"]], minlength=tags.size)
    test_words = [w for sentence, _ in splits["test"] for w in sentence]
    return rows_task(
        arrays,
        cfg.batch,
        data,
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=words.size, output_size=tags.size),
        baseline=label_entropy(counts),
        metric="cross-entropy per word (nats)",
        vocab=words.tokens,
        info={
            "vocab_size": words.size,
            "tags": list(tags.tokens),
            "test_most_frequent_tag_accuracy": most_frequent_tag_accuracy(splits["train"], splits["test"]),
            "test_unknown_word_fraction": float(np.mean([w not in words for w in test_words])),
        },
    )


def most_frequent_tag_accuracy(train, test) -> float:
    """Token accuracy of tagging each word with its most frequent training tag (the most
    frequent tag overall for words unseen in training)."""
    by_word = collections.defaultdict(collections.Counter)
    overall = collections.Counter()
    for words, tags in train:
        for w, t in zip(words, tags):
            by_word[w][t] += 1
            overall[t] += 1
    fallback = overall.most_common(1)[0][0]
    best = {w: c.most_common(1)[0][0] for w, c in by_word.items()}
    return float(np.mean([best.get(w, fallback) == t for words, tags in test for w, t in zip(words, tags)]))
