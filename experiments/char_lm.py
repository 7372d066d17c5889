"""Character-level language model (char-rnn): train an RNN / LSTM / GRU on a text, then sample.

    python -m experiments.char_lm --quick                                  # built-in corpus, ~15 s
    python -m experiments.char_lm --data tinyshakespeare --minutes 20
    python -m experiments.char_lm --data linux_c --cell gru --layers 2
    python -m experiments.char_lm --data 'my_texts/*.txt'                  # your own files
    python -m experiments.char_lm --hf-dataset karpathy/tiny_shakespeare --text-column text  # a hub dataset
    python -m experiments.char_lm --checkpoint runs/char_lm/RUN --input "ROMEO:"    # continue a text
    python -m experiments.char_lm --resume runs/char_lm/20261127-120000

--data: a corpus name (tinyshakespeare | stacks_latex | linux_c: from $RNN_JAX_DATA, else the hub),
a text file or a quoted glob; without it, a built-in generated corpus. The data is the
registered task `charlm` (rnn_jax/tasks/text.py). Truncated BPTT (--tbptt): stateful (default,
char-rnn's) reads the training text as --batch parallel streams, each window starting from the
previous one's final state (the gradient stops at the window's edge); random draws windows at
random offsets, each from a zero state. Either way the validation loss is that of the whole
validation text, read as parallel streams with the state carried: a per-character loss.

Writes to --out: results.json (config, environment, vocabulary, losses in nats and bits per
character, tokens/s), samples.txt, loss_curves.png, logs/ and checkpoints/ (last K and best).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import ClassVar

import numpy as np
from flax import nnx

from experiments import cli
from rnn_jax.choices import check_choice
from rnn_jax.config import require_at_least_one
from rnn_jax.data import text
from rnn_jax.decode import sample_text
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.layers import SequenceModel
from rnn_jax.metrics import language_model_metrics
from rnn_jax.options import TaskOptions
from rnn_jax.parallel import is_primary
from rnn_jax.tasks import Task, make_task


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "charlm"  # the registered task (rnn_jax.tasks) it trains on
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
        check_choice("--tbptt", self.tbptt, ("stateful", "random"))
        require_at_least_one(self, ("bptt", "sample_length"))
        if self.data and self.hf_dataset:
            raise ValueError("give --data or --hf-dataset, not both")

    @property
    def seq_len(self) -> int:  # the tasks' name for --bptt
        return self.bptt


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    """The model of `cfg` for the vocabulary ``extra["vocab"]`` (a string of characters)."""
    size = len(extra["vocab"])
    return cfg.sequence_model(cfg.cell, cfg.seed, vocab_size=size, input_size=cfg.embed, output_size=size)


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `charlm` (`rnn_jax.tasks.text`) read as --tbptt says, one model's batches."""
    task = make_task(cfg.TASK, cfg)
    if dropped := task.info["validation_dropped"]:  # rare characters only in the held-out tail
        print(
            f"validation text: dropped {len(dropped)} character kind(s) unseen in training: {dropped!r}",
            file=sys.stderr,
        )
    tokens = cfg.batch * cfg.bptt
    return single_task_data(task, cfg.seed, chunk=cfg.batch, extra={"vocab": task.vocab}, tokens_per_step=tokens), task


def sampled(cfg: Config, model, vocab: text.CharVocab, prime: str) -> str:
    """`prime` continued by `model`: --sample-length characters at --temperature, seeded."""
    graphdef, params = nnx.split(model)
    options = dict(length=cfg.sample_length, temperature=cfg.temperature, seed=cfg.seed)
    return sample_text(graphdef, params, vocab, prime=prime, **options)


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    vocab = text.CharVocab(task.vocab)
    first = vocab.decode(np.asarray(task.data[0]).ravel()[:1])  # the training text's first character
    samples = sampled(cfg, model, vocab, "\n" if "\n" in vocab.chars else first)
    if is_primary():
        (out / "samples.txt").write_text(samples + "\n")
    return language_model_metrics(fitted.history), {"vocab": vocab.chars, "sample": samples}


def predict(run_dir: str, prime: str) -> str:
    """The text `prime` continued by the trained run in `run_dir` (see experiments/sample.py for more options)."""
    cfg, extra, model = load_run(run_dir, Config, build_model)
    return sampled(cfg, model, text.CharVocab(extra["vocab"]), prime)


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    return (
        f"\n{cfg.cell}: {results['steps']} steps in {results['wall_time_s'] / 60:.1f} min, "
        f"{m['tokens_per_s'] or 0:.0f} tokens/s -> {results['out']}\n"
        f"train {m['train_loss_nats']:.4f} nats/char, validation {m['val_loss_nats']:.4f} nats/char "
        f"({m['val_loss_bits']:.3f} bits/char), best validation {m['best_val_loss_nats']:.4f}\n\n{results['sample']}"
    )


title = lambda cfg: f"char LM: {cfg.data or cfg.hf_dataset or 'built-in corpus'}"  # noqa: E731
EXPERIMENT = cli.TaskExperiment(
    "char_lm", Config, data, build_model, report, summary, predict, title, "cross-entropy (nats/char)"
)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
