"""Many-to-many, encoder-decoder: translation (English -> French on the Tatoeba pairs).

    python -m experiments.translate                                  # no attention: the state is the bottleneck
    python -m experiments.translate --attention --cell gru
    python -m experiments.translate --reverse                        # French -> English
    python -m experiments.translate --data Helsinki-NLP/opus_books --hf-config en-fr   # a hub dataset, online
    python -m experiments.translate --checkpoint runs/translate/RUN --input "I am very hungry."

--data: a corpus name (tatoeba_eng_fra, the default, from $RNN_JAX_DATA), a source<TAB>target
file, a table or save_to_disk folder (--source-column, --target-column) or a hub id. Sentences
are lower-cased and tokenised; pairs with a side over --max-len tokens are left out; the seeded
90/5/5 split is by source sentence, and each test sentence is scored against all its
translations (multi-reference BLEU, sacrebleu). Sources are left-padded, training is
teacher-forced (the registered task `translate`, rnn_jax/tasks/translate.py). Reported: test
BLEU of greedy and beam-search decoding (--beam, --length-penalty) with the best checkpoint by
validation loss, beside copying the source. The gradient-flow profile of the loss at <eos>
reaches back through the decoder into the encoder (keys encoder/... and decoder/...).

Writes to --out: results.json (with sample translations), loss_curves.png, flow_vs_lag.png,
attention.png (with --attention), logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from experiments import cli
from rnn_jax import plots
from rnn_jax.config import require_at_least_one
from rnn_jax.data import loaders
from rnn_jax.data.vocab import Vocab
from rnn_jax.decode import Beam
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.metrics import bleu
from rnn_jax.options import TaskOptions
from rnn_jax.seq2seq import Seq2Seq
from rnn_jax.tasks import Task, make_task
from rnn_jax.tasks.translate import attention_map, seq2seq, translate_sentences, translation_splits


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


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `translate` (`rnn_jax.tasks.translate`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    extra = {"source_vocab": task.info["source_vocab"], "target_vocab": list(task.vocab)}
    tokens = cfg.batch * (cfg.max_len + 1)
    return single_task_data(task, cfg.seed, chunk=1024, extra=extra, tokens_per_step=tokens), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    splits, *vocabs = translation_splits(cfg)
    test = splits["test"][: cfg.test_sentences]
    sources, references = [s for s, _ in test], [ts for _, ts in test]
    searches = {"greedy": None, "beam": Beam(cfg.beam, cfg.length_penalty)}
    hypotheses = {kind: translate_sentences(model, vocabs, sources, cfg.max_len, b) for kind, b in searches.items()}
    metrics = {f"test_bleu_{kind}": bleu(h, references) for kind, h in hypotheses.items()}
    metrics["test_bleu_copy_source"] = bleu(sources, references)
    text = " ".join
    samples = [
        {"source": text(s), "references": list(map(text, refs)), **{k: text(h[i]) for k, h in hypotheses.items()}}
        for i, (s, refs) in enumerate(zip(sources[:20], references[:20]))
    ]
    if cfg.attention:
        weights, rows, columns = attention_map(model, vocabs, test[0][0], hypotheses["greedy"][0], cfg.max_len)
        plots.attention(weights, rows, columns, out / "attention.png")
    info = {k: task.info[k] for k in ("pairs", "source_sentences", "vocab_sizes")}
    return metrics, {**info, "test_sentences_decoded": len(test), "samples": samples}


def predict(run_dir: str, sentence: str) -> str:
    cfg, extra, model = load_run(run_dir, Config, build_model)
    source_vocab, target_vocab = Vocab(extra["source_vocab"]), Vocab(extra["target_vocab"])
    tokens = loaders.tokenize(sentence)
    if not tokens:
        raise ValueError("--input holds no word")
    if len(tokens) > cfg.max_len:
        raise ValueError(f"--input has {len(tokens)} tokens; this model was trained on at most {cfg.max_len}")
    unknown = [t for t in tokens if t not in source_vocab]
    greedy, beam = (
        " ".join(translate_sentences(model, (source_vocab, target_vocab), [tokens], cfg.max_len, b)[0])
        for b in (None, Beam(cfg.beam, cfg.length_penalty))
    )
    unseen = f"\n(words unseen in training, read as <unk>: {unknown})" if unknown else ""
    return f"greedy: {greedy}\nbeam {cfg.beam}: {beam}{unseen}"


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
