"""One-to-many: an 8x8 digit sets a decoder's initial state, the decoder writes the digit's
caption ("a thin seven leaning right", `rnn_jax.data.captions`) word by word."""

from __future__ import annotations

import numpy as np
from flax import nnx

from rnn_jax.data import loaders
from rnn_jax.data.captions import CAPTION_LEN, describe, load_digits
from rnn_jax.data.pairs import teacher_forced
from rnn_jax.data.vocab import BOS, EOS, PAD, UNK, Vocab
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.seq2seq import Captioner
from rnn_jax.tasks.base import Task, label_entropy, register_task, rows_task, task_option


def caption_splits(seed: int) -> tuple[np.ndarray, list[list[str]], dict[str, np.ndarray]]:
    """(images (1797, 64) in 0-16, every image's caption, {split: rows}): scikit-learn's digits
    (shipped with it), split stratified 60/20/20 with `seed`."""
    images, labels = load_digits()
    return images, describe(images, labels), loaders.stratified_split(labels, seed)


def encode(vocab: Vocab, images: np.ndarray, captions) -> dict[str, np.ndarray]:
    """Images (pixels / 16) with their captions teacher-forced (<bos> in, <eos> out)."""
    return {"inputs": images / 16.0, **teacher_forced(vocab, captions, CAPTION_LEN)}


def captioner(cfg, cell: str, seed: int, *, feature_size: int, vocab_size: int) -> Captioner:
    """The image through h_0 = tanh(W x + b) into every decoder layer's initial state; the
    caption experiment's --embed (32 elsewhere) sizes the word embedding."""
    made = cfg.make_cell(cell)
    return Captioner(
        made,
        feature_size=feature_size,
        vocab_size=vocab_size,
        embed_size=task_option(cfg, "embed", 32),
        hidden_size=cfg.hidden,
        stack=cfg.stack_options(made),
        rngs=nnx.Rngs(seed),
    )


@register_task("caption")
def caption(cfg) -> Task:
    """The captions of scikit-learn's digits (1,797 images, no download), each word scored
    teacher-forced; the vocabulary is the training captions'. The baseline is the entropy of the
    training captions' words (a decoder that sees neither the image nor the words before)."""
    images, captions, rows = caption_splits(cfg.seed)
    vocab = Vocab.build([captions[i] for i in rows["train"]], specials=(PAD, UNK, BOS, EOS))
    arrays = {s: encode(vocab, images[r], [captions[i] for i in r]) for s, r in rows.items()}
    train = arrays["train"]
    return rows_task(
        arrays,
        cfg.batch,
        "sklearn digits",
        loss_fn=sequence_cross_entropy,
        model_io=dict(feature_size=images.shape[1], vocab_size=vocab.size),
        model=captioner,
        baseline=label_entropy(np.bincount(train["targets"][train["mask"]], minlength=vocab.size)),
        metric="cross-entropy per caption word (nats)",
        vocab=vocab.tokens,
        info={"sequence_length": CAPTION_LEN + 1},
    )
