"""Character-level language model (char-rnn): train an RNN / LSTM / GRU on a text, then sample.

    python -m experiments.char_lm --quick                                  # built-in corpus, ~15 s
    python -m experiments.char_lm --data tinyshakespeare --minutes 20
    python -m experiments.char_lm --data linux_c --cell gru --layers 2
    python -m experiments.char_lm --data 'my_texts/*.txt'                  # your own files
    python -m experiments.char_lm --hf-dataset karpathy/tiny_shakespeare --text-column text  # a hub dataset
    python -m experiments.char_lm --checkpoint runs/char_lm/RUN --input "ROMEO:"    # continue a text
    python -m experiments.char_lm --resume runs/char_lm/20261127-120000

--data is a corpus name (tinyshakespeare | stacks_latex | linux_c: read from $RNN_JAX_DATA, a
folder laid out as <corpus>/input.txt, else from the Hugging Face hub where it is there), a text
file or a quoted glob; without it, a built-in generated corpus (no download).

Truncated BPTT, two modes (--tbptt):
  stateful (default)  the training text is `batch` parallel streams; each window continues where
                      the previous one ended, starting from its final state (gradients stop at
                      the window edge), as in char-rnn. The model learns to use context longer
                      than --bptt, and every character is seen once per pass.
  random              windows at random offsets, each from a zero state.
The validation loss is always that of the whole validation text read as parallel streams
with the state carried across windows: the model's per-character loss on that text.

Writes to --out: results.json (config, environment, vocabulary, train/val loss in nats and
bits per character, tokens/s, wall time), samples.txt, loss_curves.png, logs/ (JSONL,
TensorBoard) and checkpoints/ (orbax: last K, and the best by validation loss).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from experiments import cli
from rnn_jax.config import require_at_least_one
from rnn_jax.data import text
from rnn_jax.decode import sample_text
from rnn_jax.experiment import TrainingData, load_run
from rnn_jax.layers import SequenceModel
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.metrics import language_model_metrics
from rnn_jax.options import TaskOptions
from rnn_jax.parallel import is_primary

TBPTT_MODES = ("stateful", "random")


@dataclasses.dataclass
class Config(TaskOptions):
    QUICK: ClassVar[dict] = dict(
        hidden=64, layers=1, batch=16, bptt=32, steps=200, eval_every=100, checkpoint_every=100, sample_length=200
    )
    DEFAULTS: ClassVar[dict] = dict(layers=2, hidden=256, steps=5000, eval_every=500, checkpoint_every=500, keep=3)

    data: str | None = None
    """a corpus name (tinyshakespeare | stacks_latex | linux_c), a text file or a quoted glob (None: a
    built-in generated corpus)"""
    hf_dataset: str | None = None
    """instead of --data: a Hugging Face dataset (hub id, save_to_disk folder or .parquet)"""
    text_column: str = "text"
    """--hf-dataset: the column holding the text"""
    hf_split: str = "train"
    """--hf-dataset: the split to read"""
    val_fraction: float = 0.1
    """the last fraction of the text held out for validation (contiguous)"""
    embed: int | None = None
    """embedding size (None: the hidden size)"""
    bptt: int = 128
    """truncated BPTT window length"""
    tbptt: str = "stateful"
    """truncated BPTT mode: stateful | random (see above)"""
    sample_length: int = 500
    """characters to sample into samples.txt at the end (and after --input)"""
    temperature: float = 0.8
    """sampling temperature"""

    def __post_init__(self):
        super().__post_init__()
        if self.tbptt not in TBPTT_MODES:
            raise ValueError(f"--tbptt must be one of {', '.join(TBPTT_MODES)}, got {self.tbptt!r}")
        require_at_least_one(self, ("bptt", "sample_length"))
        if self.data and self.hf_dataset:
            raise ValueError("give --data or --hf-dataset, not both")


def load_corpus(cfg: Config) -> str:
    if cfg.hf_dataset:
        return text.load_hf_text(cfg.hf_dataset, text_column=cfg.text_column, split=cfg.hf_split)
    return text.read_text(cfg.data, seed=cfg.seed)


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    """The model of `cfg` for the vocabulary ``extra["vocab"]`` (a string of characters)."""
    size = len(extra["vocab"])
    return cfg.sequence_model(cfg.cell, cfg.seed, vocab_size=size, input_size=cfg.embed, output_size=size)


def data(cfg: Config) -> tuple[TrainingData, dict]:
    train_text, val_text = text.split_text(load_corpus(cfg), cfg.val_fraction)
    vocab = text.CharVocab.from_text(train_text)
    unseen = sorted(set(val_text) - set(vocab.chars))
    if unseen:  # rare characters only in the held-out tail: drop them there, and say so
        print(
            f"validation text: dropping {len(unseen)} character kind(s) absent from training: {unseen!r}",
            file=sys.stderr,
        )
        val_text = "".join(c for c in val_text if c in set(vocab.chars))
    train_ids, val_ids = jnp.asarray(vocab.encode(train_text)), jnp.asarray(vocab.encode(val_text))
    train_streams, windows = text.stream_layout(train_ids, cfg.batch, cfg.bptt)
    data_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    if cfg.tbptt == "stateful":
        get_batch = jax.jit(lambda step: text.stream_window(train_streams, step % windows, cfg.bptt))
    else:
        get_batch = jax.jit(
            lambda step: text.random_windows(jax.random.fold_in(data_key, step), train_ids, cfg.batch, cfg.bptt)
        )
    val_streams, val_windows = text.stream_layout(val_ids, cfg.batch, cfg.bptt)
    training = TrainingData(
        sequence_cross_entropy,
        get_batch,
        [text.stream_window(val_streams, k, cfg.bptt) for k in range(val_windows)],
        extra={"vocab": vocab.chars},
        tokens_per_step=cfg.batch * cfg.bptt,
        stateful=cfg.tbptt == "stateful",
    )
    return training, {"vocab": vocab, "train_text": train_text}


def report(cfg: Config, model, held: dict, out, fitted) -> tuple[dict, dict]:
    vocab, train_text = held["vocab"], held["train_text"]
    prime = "\n" if "\n" in vocab.chars else train_text[0]
    samples = sample_text(
        fitted.graphdef,
        fitted.params,
        vocab,
        prime=prime,
        length=cfg.sample_length,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )
    if is_primary():
        (out / "samples.txt").write_text(samples + "\n")
    return language_model_metrics(fitted.history), {"vocab": vocab.chars, "sample": samples}


def predict(run_dir: str, prime: str) -> str:
    """The text `prime` continued by the trained run in `run_dir` (see experiments/sample.py for more options)."""
    cfg, extra, model = load_run(run_dir, Config, build_model)
    graphdef, params = nnx.split(model)
    return sample_text(
        graphdef,
        params,
        text.CharVocab(extra["vocab"]),
        prime=prime,
        length=cfg.sample_length,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    return (
        f"\n{cfg.cell}: {results['steps']} steps in {results['wall_time_s'] / 60:.1f} min, "
        f"{m['tokens_per_s'] or 0:.0f} tokens/s -> {results['out']}\n"
        f"train {m['train_loss_nats']:.4f} nats/char, validation {m['val_loss_nats']:.4f} nats/char "
        f"({m['val_loss_bits']:.3f} bits/char), best validation {m['best_val_loss_nats']:.4f}\n\n{results['sample']}"
    )


EXPERIMENT = cli.TaskExperiment(
    "char_lm",
    Config,
    data,
    build_model,
    report,
    summary,
    predict=predict,
    title=lambda cfg: f"char LM: {cfg.data or cfg.hf_dataset or 'built-in corpus'}",
    ylabel="cross-entropy (nats/char)",
)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
