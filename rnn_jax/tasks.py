"""What a model learns: `Task` (its batches, held-out data, model sizes, loss, metric and
baseline) and the registry of tasks by name, open like the cells'.

A task is built from the experiment's options by a function registered under its name:

    @register_task("parity")
    def parity(cfg) -> Task:          # cfg: the experiment's options (.batch, .seq_len, .seed, .data)
        return Task(batch=batches(parity_batch, batch=cfg.batch, length=cfg.seq_len), ...)

`python -m experiments.gradient_flow --imports my_task.py --task parity` then trains every cell
on it, with its flow profiles, spectra, gates, seeds, checkpoints and ablation grids.

Built in:
    adding, copy, selective_copy   synthetic long-lag tasks (`rnn_jax.data.synthetic`)
    flipflop                       the 3-bit flip-flop (Sussillo & Barak 2013): 8 memories to hold
    charlm                         next character of a corpus (--data; default a generated one)
    sentiment                      many-to-one: the polarity of a sentence (--data; default the
                                   sentence-polarity corpus), left-padded to --seq-len tokens
    tagging                        many-to-many: the UPOS tag of every word (--data; default UD
                                   English-EWT), right-padded to --seq-len words, padding masked
    mqar                           multi-query associative recall (Arora et al. 2023), Zoology's
                                   generator: D key-value pairs, each asked again later
    mnist_pixels, mnist_permuted,  sequential MNIST (Le et al. 2015): a digit pixel by pixel (T = 784;
    mnist_rows                     permuted: each seed its own order) or row by row (T = 28),
                                   classified from the final state; chosen on validation digits
                                   held out of the training ones, scored on a fixed test set
    forecast                       the next change of a time series (`rnn_jax.forecasting`; --data a
                                   built-in series, default airline), windows of --seq-len steps,
                                   evaluated on the one-step forecasts of the validation points

Every batch is a pure function of a PRNG key (and the task's arrays), so a run's data stream
is `batch(fold_in(key, step))`: reproducible and resumable at any step. Real-data tasks draw
their rows at random (with replacement) from the training split, and their held-out batches
from the validation split (the one a best model is chosen on); their test split, where they
have one, is scored beside it and chooses nothing. (translate and caption are encoder-decoder models and tabular has no
time axis: they stay experiments of their own.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import forecasting
from rnn_jax.choices import check_choice
from rnn_jax.data import corpora, loaders, synthetic, text
from rnn_jax.data.batches import chunks, pad
from rnn_jax.data.vocab import PAD, Vocab
from rnn_jax.losses import (
    LossFn,
    classification_cross_entropy,
    final_step_mse,
    sequence_cross_entropy,
    sequence_mse,
)
from rnn_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Batches:
    """A batch generator, ``fn(key, *data, **options)``, equal by value (a lambda or a partial is
    equal only to itself): equal tasks then share one jitted program (`stacked_batch`) across
    cells and grid points."""

    fn: Callable
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, key, *data):
        return self.fn(key, *data, **dict(self.options))


def batches(fn: Callable, **options) -> Batches:
    """`fn(key, *data, **options)` as a value-equal `Batches` (`fn` a module-level function)."""
    return Batches(fn, tuple(sorted(options.items())))


@functools.partial(jax.jit, static_argnums=(0, 4))
def stacked_batch(batch: Batches, keys, index, data=(), view: Batches | None = None, view_data=()):
    """Batch `index` of every seed's stream (`keys`: one per seed; `index` traced: no retrace per
    step), each seen through `view(batch, *its row of view_data)` if given (`Task.view`)."""

    def one(key, *seed_view):
        drawn = batch(key, *data)
        return drawn if view is None else view(drawn, *seed_view)

    return jax.vmap(one)(jax.vmap(jax.random.fold_in, (0, None))(keys, index), *view_data)


@functools.partial(jax.jit, static_argnums=0)
def _viewed(view: Batches, rows: dict, view_data):
    """The same rows as every seed sees them: a leading seed axis, one row of `view_data` each."""
    return jax.vmap(lambda *seed_view: view(rows, *seed_view))(*view_data)


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: `batch(key, *data)` gives a training batch ({"inputs", "targets"} and optionally
    "mask" (padding: the recurrence holds its state there) or "weights" (which steps the loss
    scores)); `eval_data` the held-out arrays (None: `data`, so a synthetic task evaluates on
    fresh draws). `model_io`: the `SequenceModel` sizes (vocab_size or input_size, output_size,
    readout). `loss_fn` (`rnn_jax.losses`) also names the metrics it returns (accuracy);
    `metric` names the loss and `baseline` is what a memoryless model scores. `vocab`: the
    tokens, for reading predictions; `info`: what results.json records about the data.
    `solved_below`: a final loss below it solves the task (default a tenth of the baseline).
    `test_data`: test rows (in order), scored beside the held-out (validation) ones and never
    used to choose a model. `view`: a `Batches` applied to every batch of seed i of the run with
    the i-th rows of `view_data` (arrays with a leading axis, one row per seed: cfg.seed,
    cfg.seed + 1, ...), e.g. each seed's own pixel order (mnist_permuted)."""

    batch: Batches
    loss_fn: LossFn
    model_io: Mapping[str, Any]
    metric: str
    baseline: float
    data: tuple = ()
    eval_data: tuple | None = None
    vocab: str | Sequence[str] | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    solved_below: float | None = None
    eval_in_order: bool = False  # evaluate on every held-out row, in chunks (rows held in memory), not on draws
    test_data: tuple | None = None
    view: Batches | None = None
    view_data: tuple = ()

    @property
    def solved_threshold(self) -> float:
        return 0.1 * self.baseline if self.solved_below is None else self.solved_below

    def check_seeds(self, seeds: int) -> None:
        """A task with per-seed views serves exactly the seeds it was built for."""
        if self.view_data and len(self.view_data[0]) != seeds:
            raise ValueError(f"the task was built for {len(self.view_data[0])} seed(s), the run trains {seeds}")

    def training_batch(self, keys, step) -> dict:
        """Batch `step` of every seed's training stream (`keys`: one per seed), with a leading seed axis."""
        return stacked_batch(self.batch, keys, step, self.data, self.view, self.view_data)

    def first_seed_batch(self, key) -> dict:
        """A batch drawn from the held-out data (the training data where there is none) as the
        run's first seed sees it."""
        drawn = self.batch(key, *(self.data if self.eval_data is None else self.eval_data))
        return drawn if self.view is None else self.view(drawn, *(d[0] for d in self.view_data))

    def decode(self, ids) -> str | list[str]:
        """Token ids as text (characters joined; words as a list)."""
        if self.vocab is None:
            raise ValueError("this task has no vocabulary to decode with")
        tokens = [self.vocab[int(i)] for i in np.ravel(ids)]
        return "".join(tokens) if isinstance(self.vocab, str) else tokens


TaskBuilder = Callable[[Any], Task]
TASKS = Registry("task", "decorate a function cfg -> rnn_jax.Task with @register_task in a file given to --imports")
# Register `fn(cfg) -> Task` (a decorator, `@register_task("name")` or bare for its __name__):
# experiments then take ``--task name``. `cfg` is the experiment's options; a task reads what it
# needs (batch, seq_len, seed, seeds, data and its own options).
register_task = TASKS.register


def make_task(name: str, cfg) -> Task:
    """The registered task `name`, built for the options `cfg`."""
    TASKS.check(name)
    task = TASKS[name](cfg)
    if not isinstance(task, Task):
        raise ValueError(f"task {name!r}: its builder returned a {type(task).__name__}, not an rnn_jax.Task")
    check_batch(name, task)
    return task


BATCH_KEYS = ("inputs", "targets")  # and optionally "mask", "weights", "reset"


def check_batch(name: str, task: Task) -> None:
    """A batch of `task` traced (shapes only, nothing computed) and checked before any training:
    a dict with "inputs" and "targets" of one batch size, or an error that names the task."""
    try:
        batch = jax.eval_shape(task.first_seed_batch, jax.random.key(0))
    except Exception as error:
        raise ValueError(f"task {name!r}: drawing a batch failed: {type(error).__name__}: {error}") from error
    if not isinstance(batch, Mapping) or not all(key in batch for key in BATCH_KEYS):
        found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(
            f"task {name!r}: its batch is {found}; a batch is a dict with 'inputs' and 'targets' (batch first), "
            "and optionally 'mask' or 'weights'"
        )
    sizes = {key: value.shape[0] for key, value in batch.items() if getattr(value, "ndim", 0)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"task {name!r}: its batch's arrays disagree on the batch size: {sizes}")


@register_task("adding")
def adding(cfg) -> Task:
    return Task(
        batch=batches(synthetic.adding_batch, batch=cfg.batch, length=cfg.seq_len),
        loss_fn=final_step_mse,
        model_io=dict(input_size=2, output_size=1),
        baseline=synthetic.ADDING_BASELINE_MSE,
        metric="MSE",
    )


@register_task("copy")
def copy(cfg) -> Task:
    return Task(
        batch=batches(synthetic.copy_batch, batch=cfg.batch, delay=cfg.seq_len),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=synthetic.COPY_VOCAB, output_size=synthetic.COPY_VOCAB),
        baseline=synthetic.copy_baseline(cfg.seq_len),
        metric="cross-entropy (nats/step)",
    )


@register_task("selective_copy")
def selective_copy(cfg) -> Task:
    return Task(
        batch=batches(synthetic.selective_copy_batch, batch=cfg.batch, length=cfg.seq_len, tokens=cfg.tokens),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=synthetic.COPY_VOCAB, output_size=synthetic.COPY_VOCAB),
        baseline=synthetic.selective_copy_baseline(),
        metric="cross-entropy of the copied tokens (nats)",
    )


@register_task("flipflop")
def flipflop(cfg) -> Task:
    """The 3-bit flip-flop of Sussillo & Barak 2013 (fixed points: `rnn_jax.fixed_points`)."""
    return Task(
        batch=batches(synthetic.flipflop_batch, batch=cfg.batch, length=cfg.seq_len),
        loss_fn=sequence_mse,
        model_io=dict(input_size=synthetic.FLIPFLOP_BITS, output_size=synthetic.FLIPFLOP_BITS),
        baseline=1.0 - synthetic.FLIPFLOP_PULSE,
        metric="MSE per step",
    )


@register_task("mqar")
def mqar(cfg) -> Task:
    """Multi-query associative recall (Arora et al. 2023) as Zoology generates it, T = --seq-len;
    --mqar-pairs, --mqar-vocab, --mqar-power-a and --mqar-noise set Zoology's choices."""
    options = dict(pairs=cfg.mqar_pairs, vocab=cfg.mqar_vocab, power_a=cfg.mqar_power_a, noise=cfg.mqar_noise)
    synthetic.check_mqar(cfg.seq_len, options["pairs"], options["vocab"], options["power_a"])
    baselines = synthetic.mqar_baselines(options["vocab"], options["pairs"])
    return Task(
        batch=batches(synthetic.mqar_batch, batch=cfg.batch, length=cfg.seq_len, **options),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=cfg.mqar_vocab, output_size=cfg.mqar_vocab),
        baseline=baselines["no_memory"]["nats"],
        metric="cross-entropy of the recalled values (nats)",
        info={**options, "baselines": baselines},
    )


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


def held_out_batches(task: Task, keys, *, batch: int, draws: int) -> list[dict]:
    """The evaluation batches of every seed (`keys`: one per seed), with a leading seed axis: every
    held-out row in chunks of `batch` for tasks that hold their rows (`Task.eval_in_order`), else
    `draws` batches drawn from the held-out data."""
    task.check_seeds(len(keys))
    if not task.eval_in_order:
        data = task.data if task.eval_data is None else task.eval_data
        return [stacked_batch(task.batch, keys, i, data, task.view, task.view_data) for i in range(draws)]
    return in_order_batches(task, task.eval_data[0], seeds=len(keys), batch=batch)


def in_order_batches(task: Task, rows: dict, *, seeds: int, batch: int) -> list[dict]:
    """Every row of `rows` in chunks of `batch`, with a leading axis of `seeds` (each seed's view)."""
    if task.view is not None:
        return [_viewed(task.view, c, task.view_data) for c in chunks(rows, batch)]
    return [jax.tree.map(lambda a: jnp.broadcast_to(a, (seeds, *a.shape)), c) for c in chunks(rows, batch)]


def test_batches(task: Task, *, seeds: int, batch: int) -> list[dict]:
    """The test rows (`Task.test_data`) in chunks, as every seed sees them; none without them."""
    return [] if task.test_data is None else in_order_batches(task, task.test_data[0], seeds=seeds, batch=batch)


def random_rows(key: jax.Array, arrays: dict, batch: int) -> dict:
    """`batch` rows of `arrays` (equal first dimension), drawn uniformly with replacement."""
    rows = jax.random.randint(key, (batch,), 0, len(next(iter(arrays.values()))))
    return {name: values[rows] for name, values in arrays.items()}


def label_entropy(counts) -> float:
    """Cross-entropy (nats) of predicting the labels' frequencies: what a model that ignores its
    input scores."""
    p = np.asarray(counts, np.float64) / np.sum(counts)
    return float(-np.sum(p[p > 0] * np.log(p[p > 0])))


def _rows_task(splits: dict[str, dict], batch: int, data: str, **fields) -> Task:
    """A task over rows held in memory: training batches drawn from `splits["train"]`, the
    evaluation (and the choice of the best model) on every row of `splits["validation"]`, and
    every row of `splits["test"]`, if there is one, scored beside it."""
    if len(next(iter(splits["validation"].values()))) == 0:
        raise ValueError(f"--data {data}: the validation split is empty")
    held = {
        s: {k: jnp.asarray(v) for k, v in splits[s].items()} for s in ("train", "validation", "test") if s in splits
    }
    examples = {s: len(next(iter(arrays.values()))) for s, arrays in splits.items()}
    return Task(
        batch=batches(random_rows, batch=batch),
        data=(held["train"],),
        eval_data=(held["validation"],),
        test_data=(held["test"],) if "test" in held else None,
        eval_in_order=True,
        **{**fields, "info": {"data": data, "examples": examples, **fields.get("info", {})}},
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
    return _rows_task(
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
    return _rows_task(
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


MNIST_TEST = 1000  # of a source without splits (the 5,000 digits): a fixed shuffle, whatever the run's seed
MNIST_VALIDATION = 8  # one training digit in 8 is held out to choose models on (500 of 4,000; 7,500 of 60,000)


def mnist_splits(data: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{train, validation, test: (pixels (n, 784) in [0, 1], labels)}. A source without splits
    (the 5,000 digits of $RNN_JAX_DATA/mnist) is shuffled once with seed 0 and cut into a fixed
    test set of `MNIST_TEST` digits and the rest; full MNIST keeps its own 60,000 / 10,000. Then
    one training digit in `MNIST_VALIDATION` (a fixed shuffle, seed 1) is the validation split,
    the one models are chosen on: the test digits are only ever reported."""
    loaded = corpora.read(data or "mnist", lambda source: loaders.load_mnist(source.location, on_hub=source.on_hub))
    if "all" in loaded:
        pixels, labels = loaded["all"]
        order = np.random.default_rng(0).permutation(len(labels))
        loaded = {"test": (pixels[order[:MNIST_TEST]], labels[order[:MNIST_TEST]])}
        loaded["train"] = (pixels[order[MNIST_TEST:]], labels[order[MNIST_TEST:]])
    pixels, labels = loaded["train"]
    order = np.random.default_rng(1).permutation(len(labels))
    held = len(labels) // MNIST_VALIDATION
    loaded["validation"] = (pixels[order[:held]], labels[order[:held]])
    loaded["train"] = (pixels[order[held:]], labels[order[held:]])
    return {split: (x.astype(np.float32) / 255.0, y) for split, (x, y) in loaded.items()}


def permuted_inputs(batch: dict, permutation) -> dict:
    """A batch of pixel sequences (batch, 784, 1) in the order `permutation` (784,)."""
    return {**batch, "inputs": batch["inputs"][:, permutation]}


def _mnist(cfg, layout: str) -> Task:
    """Sequential MNIST: each digit's pixels one per step ("pixels", T = 784; "permuted": in a
    random order of each seed's own, `default_rng(seed).permutation(784)` for the seeds
    cfg.seed .. cfg.seed + cfg.seeds - 1, recorded) or one row of 28 per step ("rows", T = 28),
    classified from the final state. Models are chosen on the validation digits; the test
    digits are scored beside them (`Task.test_data`)."""
    splits = mnist_splits(cfg.data)
    seeds = range(cfg.seed, cfg.seed + getattr(cfg, "seeds", 1))
    permutations = {seed: np.random.default_rng(seed).permutation(784) for seed in seeds}
    shape = (-1, 28, 28) if layout == "rows" else (-1, 784, 1)
    arrays = {s: {"inputs": x.reshape(shape), "targets": y} for s, (x, y) in splits.items()}
    info = {
        "layout": layout,
        "sequence_length": 28 if layout == "rows" else 784,
        "chosen_on": f"the validation digits ({len(splits['validation'][1])}, held out of the training ones)",
        "tested_on": f"the test digits ({len(splits['test'][1])})",
    }
    permuted = layout == "permuted"
    return _rows_task(
        arrays,
        cfg.batch,
        cfg.data or "mnist",
        loss_fn=classification_cross_entropy,
        model_io=dict(input_size=28 if layout == "rows" else 1, output_size=10, readout="final"),
        baseline=float(np.log(10)),
        metric="cross-entropy of the digit (nats)",
        info={**info, **({"permutations": {str(s): p.tolist() for s, p in permutations.items()}} if permuted else {})},
        **(
            dict(view=batches(permuted_inputs), view_data=(jnp.asarray(np.stack(list(permutations.values()))),))
            if permuted
            else {}
        ),
    )


register_task("mnist_pixels")(functools.partial(_mnist, layout="pixels"))
register_task("mnist_permuted")(functools.partial(_mnist, layout="permuted"))
register_task("mnist_rows")(functools.partial(_mnist, layout="rows"))


@register_task("forecast")
def forecast(cfg) -> Task:
    """Next-step changes of a built-in series (--data: airline, the default, | co2 | sunspots |
    nile | unemployment; its own season, holdout and log setting) in windows of --seq-len steps,
    every step scored; evaluated on the one-step forecast of each validation point. The baseline
    is persistence (no change). The experiment `experiments.forecast` adds files, test errors
    and multi-step forecasts."""
    series = cfg.data or "airline"
    check_choice("series (--data)", series, forecasting.SERIES)
    _, _, period, holdout, log = forecasting.SERIES[series]
    values = forecasting.load_values(series, log=log)
    splits = forecasting.split(values, holdout=holdout, period=period, window=cfg.seq_len)
    held = splits.validation
    return _rows_task(
        {"train": splits.train, "validation": held, "test": splits.test},
        cfg.batch,
        series,
        loss_fn=sequence_mse,
        model_io=dict(input_size=forecasting.feature_size(period), output_size=1),
        baseline=float(np.sum(held["weights"] * held["targets"] ** 2) / np.sum(held["weights"])),
        metric="MSE of the standardised next change",
        info={"points": len(values), "period": period, "holdout": holdout, "log": log, **splits.extra},
    )
