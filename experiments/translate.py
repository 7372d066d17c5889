"""Many-to-many, encoder-decoder: translation (English -> French on the Tatoeba pairs).

    python -m experiments.translate                                  # no attention: the state is the bottleneck
    python -m experiments.translate --attention --cell gru
    python -m experiments.translate --reverse                        # French -> English
    python -m experiments.translate --data Helsinki-NLP/opus_books --hf-config en-fr   # a hub dataset, online
    python -m experiments.translate --checkpoint runs/translate/RUN --input "I am very hungry."

--data is a corpus name (tatoeba_eng_fra, the default, read from $RNN_JAX_DATA), a
source<TAB>target file, a table or save_to_disk folder with --source-column/--target-column,
or a hub dataset id (a "translation" column of {source: ..., target: ...} rows works too).
Sentences are lower-cased and split from punctuation; pairs with a side longer than
--max-len tokens are left out. The split (seeded, 90/5/5) is by source sentence, so the
several translations of one sentence never straddle splits, and each test sentence is scored
against all its translations (multi-reference BLEU, sacrebleu, on the tokenised text). The
source is padded on the left (the encoder ends on the last real word; attention ignores the
padding); training is teacher-forced (<bos> y_1 ... -> y_1 ... <eos>). Reported: test BLEU of
greedy decoding and of beam search (--beam, --length-penalty) with the best checkpoint by
validation loss, beside copying the source (names, numbers and cognates give it some BLEU).
The gradient-flow profile of the loss at <eos> reaches back through the decoder into the
encoder (keys encoder/... and decoder/...).

Writes to --out: results.json (with sample translations), loss_curves.png, flow_vs_lag.png,
attention.png (with --attention), logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax import plots
from rnn_jax.config import require_at_least_one
from rnn_jax.data import loaders
from rnn_jax.data.pairs import encode_sources
from rnn_jax.data.vocab import BOS, EOS, Vocab
from rnn_jax.decode import generate
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.metrics import bleu
from rnn_jax.options import TaskOptions
from rnn_jax.seq2seq import Seq2Seq
from rnn_jax.tasks import Task, make_task
from rnn_jax.tasks.translate import seq2seq, translation_splits


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "translate"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(hidden=32, embed=32, batch=16, steps=60, eval_every=30, checkpoint_every=30, max_len=8)
    DEFAULTS: ClassVar[dict] = dict(hidden=256, batch=64, steps=3000, eval_every=500, checkpoint_every=500)

    data: str = "tatoeba_eng_fra"
    """sentence pairs: a corpus name (tatoeba_eng_fra), a source<TAB>target file, a table/save_to_disk folder with --source-column/--target-column,
    or a hub id"""
    hf_config: str | None = None
    """configuration of a hub dataset (e.g. en-fr)"""
    source_column: str = "en"
    """tables: the source-language column (or key of a 'translation' column)"""
    target_column: str = "fr"
    """tables: the target-language column"""
    reverse: bool = False
    """translate from the second language into the first"""
    max_len: int = 12
    """longest sentence kept, in tokens (either side)"""
    min_count: int = 3
    """words seen fewer times in training become <unk>"""
    embed: int = 128
    """word embedding size (both languages)"""
    attention: bool = False
    """additive attention over the encoder's states (Bahdanau et al., 2015)"""
    beam: int = 4
    """beam width of beam-search decoding"""
    length_penalty: float = 0.6
    """beam search ranks log p / length**penalty"""
    test_sentences: int | None = None
    """decode at most this many test sentences (None: all)"""

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, ("max_len", "min_count", "embed", "beam"))

    @property
    def seq_len(self) -> int:  # the tasks' name for --max-len
        return self.max_len


def build_model(cfg: Config, extra: dict) -> Seq2Seq:
    sizes = dict(source_vocab=len(extra["source_vocab"]), target_vocab=len(extra["target_vocab"]))
    return seq2seq(cfg, cfg.cell, cfg.seed, **sizes)


def translate(model: Seq2Seq, cfg: Config, source_vocab: Vocab, target_vocab: Vocab, sources, *, beam: bool):
    arrays = encode_sources(source_vocab, sources, cfg.max_len)
    options = dict(beam=cfg.beam, length_penalty=cfg.length_penalty) if beam else {}
    return generate(model, arrays, target_vocab, max_len=cfg.max_len + 1, **options)


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `translate` (`rnn_jax.tasks.translate`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    extra = {"source_vocab": task.info["source_vocab"], "target_vocab": list(task.vocab)}
    return single_task_data(
        task, cfg.seed, chunk=1024, extra=extra, tokens_per_step=cfg.batch * (cfg.max_len + 1)
    ), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    splits, source_vocab, target_vocab = translation_splits(cfg)
    test = splits["test"][: cfg.test_sentences]
    sources, references = [s for s, _ in test], [ts for _, ts in test]
    hypotheses = {
        kind: translate(model, cfg, source_vocab, target_vocab, sources, beam=kind == "beam")
        for kind in ("greedy", "beam")
    }
    metrics = {f"test_bleu_{kind}": bleu(h, references) for kind, h in hypotheses.items()}
    metrics["test_bleu_copy_source"] = bleu(sources, references)
    samples = [
        {
            "source": " ".join(s),
            "references": [" ".join(r) for r in refs],
            **{k: " ".join(h[i]) for k, h in hypotheses.items()},
        }
        for i, (s, refs) in enumerate(zip(sources[:20], references[:20]))
    ]
    if cfg.attention:
        plot_attention(model, test[0], source_vocab, target_vocab, hypotheses["greedy"][0], cfg, out)
    info = {k: task.info[k] for k in ("pairs", "source_sentences", "vocab_sizes")}
    return metrics, {**info, "test_sentences_decoded": len(test), "samples": samples}


def plot_attention(model, example, source_vocab, target_vocab, hypothesis, cfg, out):
    source, _ = example
    batch = encode_sources(source_vocab, [source], cfg.max_len)
    carries, memory = model.encode(batch["inputs"], mask=batch["source_mask"])
    decoder_inputs = target_vocab.encode([BOS, *hypothesis])[None]
    weights = np.asarray(model.decoder.attention_weights(decoder_inputs, initial_carries=carries, **memory))[0]
    plots.attention(weights[:, -len(source) :], source, [*hypothesis, EOS], out / "attention.png")


def predict(run_dir: str, sentence: str) -> str:
    cfg, extra, model = load_run(run_dir, Config, build_model)
    source_vocab, target_vocab = Vocab(extra["source_vocab"]), Vocab(extra["target_vocab"])
    tokens = loaders.tokenize(sentence)
    if not tokens:
        raise ValueError("--input holds no word")
    if len(tokens) > cfg.max_len:
        raise ValueError(f"--input has {len(tokens)} tokens; this model was trained on at most {cfg.max_len}")
    unknown = [t for t in tokens if t not in source_vocab]
    lines = [
        f"greedy: {' '.join(translate(model, cfg, source_vocab, target_vocab, [tokens], beam=False)[0])}",
        f"beam {cfg.beam}: {' '.join(translate(model, cfg, source_vocab, target_vocab, [tokens], beam=True)[0])}",
    ]
    if unknown:
        lines.append(f"(words unseen in training, read as <unk>: {unknown})")
    return "\n".join(lines)


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    lines = [
        f"\ntranslate {cfg.cell}{' + attention' if cfg.attention else ''}: {results['steps']} steps in "
        f"{results['wall_time_s'] / 60:.1f} min -> {results['out']}",
        f"test BLEU greedy {m['test_bleu_greedy']:.2f}, beam {cfg.beam} {m['test_bleu_beam']:.2f} "
        f"(copying the source {m['test_bleu_copy_source']:.2f})",
    ]
    lines += [f"  {s['source']}  ->  {s['beam']}   (reference: {s['references'][0]})" for s in results["samples"][:5]]
    return "\n".join(lines)


EXPERIMENT = cli.TaskExperiment("translate", Config, data, build_model, report, summary, predict=predict)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
