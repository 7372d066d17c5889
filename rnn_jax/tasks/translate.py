"""Many-to-many, encoder-decoder: a sentence of one language in, its translation out
(`rnn_jax.seq2seq`), every target word scored teacher-forced."""

from __future__ import annotations

import functools

import numpy as np
from flax import nnx

from rnn_jax.data.pairs import encode_pairs, encode_sources, read_pairs, split_by_source
from rnn_jax.data.vocab import BOS, EOS, PAD, UNK, Vocab
from rnn_jax.decode import Beam, generate
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.seq2seq import Seq2Seq
from rnn_jax.tasks.base import Task, label_entropy, register_task, rows_task, task_option

SPECIALS = (PAD, UNK, BOS, EOS)


@functools.lru_cache(maxsize=2)  # the task and the experiment's report read the same corpus once
def _pairs(data, source_column, target_column, config, reverse, max_len):
    return read_pairs(
        data,
        source_column=source_column,
        target_column=target_column,
        config=config,
        reverse=reverse,
        max_len=max_len,
    )


def translation_splits(cfg) -> tuple[dict[str, list], Vocab, Vocab]:
    """({split: [(source tokens, [its translations])]}, source and target vocabularies) of the
    pairs `cfg` names (--data, default tatoeba_eng_fra; the translate experiment's
    --source-column, --target-column, --hf-config, --reverse and --min-count where it has them),
    both sides of 1 to --seq-len tokens, split 90/5/5 by source sentence with --seed."""
    option = functools.partial(task_option, cfg)
    pairs = _pairs(
        cfg.data or "tatoeba_eng_fra",
        option("source_column", "en"),
        option("target_column", "fr"),
        option("hf_config", None),
        option("reverse", False),
        cfg.seq_len,
    )
    splits = split_by_source(pairs, cfg.seed)
    min_count = option("min_count", 3)
    source_vocab = Vocab.build([s for s, _ in splits["train"]], min_count=min_count, specials=SPECIALS)
    target_vocab = Vocab.build([t for _, ts in splits["train"] for t in ts], min_count=min_count, specials=SPECIALS)
    return splits, source_vocab, target_vocab


def seq2seq(cfg, cell: str, seed: int, *, source_vocab: int, target_vocab: int) -> Seq2Seq:
    """The encoder's final carries start the decoder; the translate experiment's --embed (128
    elsewhere) and --attention (additive, Bahdanau et al. 2015) where it has them."""
    made = cfg.make_cell(cell)
    return Seq2Seq(
        made,
        source_vocab=source_vocab,
        target_vocab=target_vocab,
        embed_size=task_option(cfg, "embed", 128),
        hidden_size=cfg.hidden,
        attention=task_option(cfg, "attention", False),
        stack=cfg.stack_options(made),
        rngs=nnx.Rngs(seed),
    )


@register_task("translate")
def translate(cfg) -> Task:
    """Sentence pairs (`translation_splits`) as left-padded sources and teacher-forced targets,
    one row per (source, translation). The baseline is the entropy of the training targets'
    words (a decoder that reads neither the source nor the words before)."""
    splits, source_vocab, target_vocab = translation_splits(cfg)
    arrays = {s: encode_pairs(source_vocab, target_vocab, groups, cfg.seq_len) for s, groups in splits.items()}
    train = arrays["train"]
    return rows_task(
        arrays,
        cfg.batch,
        cfg.data or "tatoeba_eng_fra",
        loss_fn=sequence_cross_entropy,
        model_io=dict(source_vocab=source_vocab.size, target_vocab=target_vocab.size),
        model=seq2seq,
        baseline=label_entropy(np.bincount(train["targets"][train["mask"]], minlength=target_vocab.size)),
        metric="cross-entropy per target word (nats)",
        vocab=target_vocab.tokens,
        info={
            "sequence_length": cfg.seq_len + 1,
            "source_vocab": list(source_vocab.tokens),
            "pairs": {s: sum(len(ts) for _, ts in groups) for s, groups in splits.items()},
            "source_sentences": {s: len(groups) for s, groups in splits.items()},
            "vocab_sizes": {"source": source_vocab.size, "target": target_vocab.size},
        },
    )


def translate_sentences(model: Seq2Seq, vocabs: tuple[Vocab, Vocab], sources, max_len: int, beam: Beam | None = None):
    """Token lists translated by `model` (greedy, or by beam search with `beam`); `vocabs`: the
    (source, target) vocabularies; sources left-padded to `max_len` as in training."""
    source_vocab, target_vocab = vocabs
    arrays = encode_sources(source_vocab, sources, max_len)
    options = dict(beam=beam.width, length_penalty=beam.length_penalty) if beam else {}
    return generate(model, arrays, target_vocab, max_len=max_len + 1, **options)


def attention_map(model: Seq2Seq, vocabs: tuple[Vocab, Vocab], source, hypothesis, max_len: int):
    """(attention weights (target steps, source words), the source words, the target tokens with
    <eos>) of `model` translating `source` into `hypothesis`, for `rnn_jax.plots.attention`."""
    source_vocab, target_vocab = vocabs
    batch = encode_sources(source_vocab, [source], max_len)
    carries, memory = model.encode(batch["inputs"], mask=batch["source_mask"])
    decoder_inputs = target_vocab.encode([BOS, *hypothesis])[None]
    weights = np.asarray(model.decoder.attention_weights(decoder_inputs, initial_carries=carries, **memory))[0]
    return weights[:, -len(source) :], source, [*hypothesis, EOS]
