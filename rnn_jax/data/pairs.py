"""Sequence pairs for encoder-decoder models (translation, captions): splits that keep a
source's translations together, and padded, teacher-forced arrays."""

from __future__ import annotations

import collections

import numpy as np

from rnn_jax.data import corpora, loaders
from rnn_jax.data.batches import pad
from rnn_jax.data.vocab import BOS, EOS, Vocab


def read_pairs(data: str, *, source_column, target_column, config=None, reverse=False, max_len: int):
    """Tokenised (source, target) pairs of the corpus or table `data` (`loaders.load_pairs`),
    swapped with `reverse`, keeping those with both sides of 1 to `max_len` tokens."""
    pairs = corpora.read(
        data,
        lambda source: loaders.load_pairs(
            source.location,
            source_column=source_column,
            target_column=target_column,
            config=source.config or config,
        ),
    )
    pairs = [
        (loaders.tokenize(b), loaders.tokenize(a)) if reverse else (loaders.tokenize(a), loaders.tokenize(b))
        for a, b in pairs
    ]
    kept = [(s, t) for s, t in pairs if 0 < len(s) <= max_len and 0 < len(t) <= max_len]
    if not kept:
        raise ValueError(f"{data}: no pair has both sides within --max-len {max_len} tokens")
    return kept


def split_by_source(pairs, seed: int) -> dict[str, list]:
    """90/5/5 over distinct source sentences (all translations of one sentence together):
    {split: [(source tokens, [target token lists])]}."""
    by_source = collections.defaultdict(list)
    for source, target in pairs:
        by_source[tuple(source)].append(target)
    sources = list(by_source)
    rows = loaders.split_indices(len(sources), seed, (0.9, 0.05, 0.05))
    return {s: [(list(sources[i]), by_source[sources[i]]) for i in idx] for s, idx in rows.items()}


def encode_sources(vocab: Vocab, sources, max_len: int) -> dict[str, np.ndarray]:
    """Source token lists as ids, left-padded to `max_len`: {"inputs", "source_mask"}."""
    ids, mask = pad([vocab.encode(s) for s in sources], max_len, side="left")
    return {"inputs": ids, "source_mask": mask}


def teacher_forced(vocab: Vocab, targets, max_len: int) -> dict[str, np.ndarray]:
    """Target token lists as decoder inputs (<bos> first) and outputs (<eos> last), both padded
    to `max_len` + 1: {"decoder_inputs", "targets", "mask"}."""
    ids = [vocab.encode(t) for t in targets]
    decoder_inputs, _ = pad([np.concatenate([[vocab.id(BOS)], t]) for t in ids], max_len + 1)
    outputs, mask = pad([np.concatenate([t, [vocab.id(EOS)]]) for t in ids], max_len + 1)
    return {"decoder_inputs": decoder_inputs, "targets": outputs, "mask": mask}


def encode_pairs(source_vocab: Vocab, target_vocab: Vocab, grouped, max_len: int) -> dict[str, np.ndarray]:
    """One row per (source, translation) of `split_by_source`'s groups."""
    flat = [(s, t) for s, targets in grouped for t in targets]
    return {
        **encode_sources(source_vocab, [s for s, _ in flat], max_len),
        **teacher_forced(target_vocab, [t for _, t in flat], max_len),
    }
