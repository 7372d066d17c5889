"""Character-level language model (char-rnn): train an RNN / LSTM / GRU on a text, then sample.

    python -m experiments.char_lm --quick                                  # built-in corpus, ~1 minute
    python -m experiments.char_lm --data ../shared/data/tinyshakespeare/input.txt --minutes 20
    python -m experiments.char_lm --data ../shared/data/linux_c/input.txt --cell gru --layers 2
    python -m experiments.char_lm --hf-dataset karpathy/tiny_shakespeare --text-column text  # online
    python -m experiments.char_lm --resume runs/char_lm/20261127-120000

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
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.cells import make_cell
from rnn_jax.config import environment, option, parse, prepare_run_dir, require_at_least_one, user_errors, write_json
from rnn_jax.data import text
from rnn_jax.decode import sample
from rnn_jax.experiment import RUNTIME_FLAGS, TrainingOptions, fit, flow_summary, plot_history
from rnn_jax.layers import SequenceModel
from rnn_jax.parallel import is_primary
from rnn_jax.losses import sequence_cross_entropy

TBPTT_MODES = ("stateful", "random")


@dataclasses.dataclass
class Config(TrainingOptions):
    QUICK = dict(hidden=64, layers=1, batch=16, bptt=32, steps=200, eval_every=100, checkpoint_every=100,
                 sample_length=200)

    data: str | None = option(None, "text file or quoted glob (default: a built-in generated corpus)")
    hf_dataset: str | None = option(None, "instead of --data: a Hugging Face dataset (hub id, save_to_disk folder or .parquet)")
    text_column: str = option("text", "--hf-dataset: the column holding the text")
    hf_split: str = option("train", "--hf-dataset: the split to read")
    val_fraction: float = option(0.1, "the last fraction of the text held out for validation (contiguous)")
    layers: int = option(2, "stacked recurrent layers")
    hidden: int = option(256, "hidden size")
    embed: int | None = option(None, "embedding size (default: the hidden size)")
    bptt: int = option(128, "truncated BPTT window length")
    tbptt: str = option("stateful", "truncated BPTT mode: stateful | random (see above)")
    batch: int = option(32, "parallel streams (stateful) or windows (random) per step")
    steps: int = option(5000, "training steps (also the horizon of the learning-rate decay)")
    eval_every: int = option(500, "evaluate on the validation text every N steps")
    checkpoint_every: int = option(500, "save a checkpoint every N steps (and at the end)")
    keep: int = option(3, "checkpoints to keep (besides the best by validation loss)")
    sample_length: int = option(500, "characters to sample into samples.txt at the end")
    temperature: float = option(0.8, "sampling temperature for samples.txt")

    def __post_init__(self):
        super().__post_init__()
        if self.tbptt not in TBPTT_MODES:
            raise ValueError(f"--tbptt must be one of {', '.join(TBPTT_MODES)}, got {self.tbptt!r}")
        require_at_least_one(self, ("bptt",))
        if self.data and self.hf_dataset:
            raise ValueError("give --data or --hf-dataset, not both")


def load_corpus(cfg: Config) -> str:
    if cfg.hf_dataset:
        return text.load_hf_text(cfg.hf_dataset, text_column=cfg.text_column, split=cfg.hf_split)
    return text.load_text(cfg.data) if cfg.data else text.builtin_corpus(seed=cfg.seed)


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    """The model of `cfg` for the vocabulary ``extra["vocab"]`` (a string of characters)."""
    size = len(extra["vocab"])
    return SequenceModel(make_cell(cfg.cell), vocab_size=size, embed_size=cfg.embed, hidden_size=cfg.hidden,
                         output_size=size, num_layers=cfg.layers, dropout=cfg.dropout, **cfg.layer_options(),
                         rngs=nnx.Rngs(cfg.seed))


def run(cfg: Config) -> dict:
    out, cfg, resuming = prepare_run_dir(cfg, "char_lm", from_command_line=RUNTIME_FLAGS)
    corpus = load_corpus(cfg)
    train_text, val_text = text.split_text(corpus, cfg.val_fraction)
    vocab = text.CharVocab.from_text(train_text)
    unseen = sorted(set(val_text) - set(vocab.chars))
    if unseen:  # rare characters only in the held-out tail: drop them there, and say so
        print(f"validation text: dropping {len(unseen)} character kind(s) absent from training: {unseen!r}", file=sys.stderr)
        val_text = "".join(c for c in val_text if c in set(vocab.chars))
    train_ids, val_ids = jnp.asarray(vocab.encode(train_text)), jnp.asarray(vocab.encode(val_text))
    train_streams, windows = text.stream_layout(train_ids, cfg.batch, cfg.bptt)
    data_key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    if cfg.tbptt == "stateful":
        get_batch = jax.jit(lambda step: text.stream_window(train_streams, step % windows, cfg.bptt))
    else:
        get_batch = jax.jit(lambda step: text.random_windows(jax.random.fold_in(data_key, step), train_ids, cfg.batch, cfg.bptt))
    val_streams, val_windows = text.stream_layout(val_ids, cfg.batch, cfg.bptt)
    fitted = fit(cfg, out, resuming, model=build_model(cfg, {"vocab": vocab.chars}), loss_fn=sequence_cross_entropy,
                 get_batch=get_batch, eval_batches=[text.stream_window(val_streams, k, cfg.bptt) for k in range(val_windows)],
                 extra={"vocab": vocab.chars}, desc=f"char_lm {cfg.cell}", tokens_per_step=cfg.batch * cfg.bptt,
                 stateful=cfg.tbptt == "stateful")
    history = fitted.history

    prime = "\n" if "\n" in vocab.chars else train_text[0]
    samples = sample_text(fitted.graphdef, fitted.params, vocab, prime=prime, length=cfg.sample_length,
                          temperature=cfg.temperature, seed=cfg.seed)
    if is_primary():
        (out / "samples.txt").write_text(samples + "\n")
    results = summarise(cfg, vocab, history, fitted.wall_time_s)
    write_json(out / "results.json", results)
    plot_history(cfg, out, history, title=f"char LM: {cfg.data or cfg.hf_dataset or 'built-in corpus'}",
                 ylabel="cross-entropy (nats/char)")
    results["out"] = str(out)
    results["sample"] = samples
    return results


def sample_text(graphdef, params, vocab: text.CharVocab, *, prime: str, length: int, temperature: float = 1.0,
                top_k: int | None = None, argmax: bool = False, seed: int = 0) -> str:
    """`prime` followed by `length` sampled characters."""
    ids = vocab.encode(prime)  # raises, naming the characters, if the prime has unknown ones
    tokens = sample(graphdef, params, jnp.asarray(ids)[None], jax.random.key(seed), length=length,
                    temperature=temperature, top_k=top_k, argmax=argmax)
    return prime + vocab.decode(np.asarray(tokens[0]))


def summarise(cfg: Config, vocab: text.CharVocab, history: dict, wall: float) -> dict:
    evals, trains = history["eval"], history["train"]
    last_train = np.mean([r["loss"] for r in trains[-10:]]) if trains else float("nan")
    speeds = [r["tokens_per_s"] for r in trains if "tokens_per_s" in r]
    val = evals[-1]["loss"] if evals else float("nan")
    best = min((r["loss"] for r in evals), default=float("nan"))
    return {
        "config": dataclasses.asdict(cfg),
        "environment": environment(),
        "vocab": vocab.chars,
        "status": history["status"],
        "steps": evals[-1]["step"] if evals else 0,
        "train_loss_nats": float(last_train),
        "train_loss_bits": float(last_train / math.log(2)),
        "val_loss_nats": val,
        "val_loss_bits": val / math.log(2),
        "best_val_loss_nats": best,
        "tokens_per_s": float(np.median(speeds)) if speeds else None,
        "wall_time_s": wall,
        "flow_decay_rates": flow_summary(history),
        "history": history,
    }


def main(argv=None):
    cfg = parse(Config, argv, description=__doc__)
    with user_errors():
        cfg.start_processes(cfg.out or cfg.resume)
        results = run(cfg)
    print(f"\n{cfg.cell}: {results['steps']} steps in {results['wall_time_s'] / 60:.1f} min, "
          f"{results['tokens_per_s'] or 0:.0f} tokens/s -> {results['out']}")
    print(f"train {results['train_loss_nats']:.4f} nats/char, validation {results['val_loss_nats']:.4f} nats/char "
          f"({results['val_loss_bits']:.3f} bits/char), best validation {results['best_val_loss_nats']:.4f}")
    print("\n" + results["sample"])


if __name__ == "__main__":
    main()
