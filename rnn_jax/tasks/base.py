"""`Task` (its batches, held-out data, model sizes, loss, metric and baseline), the registry of
tasks by name, and the batching every task shares (seeds stacked, held-out rows in order)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.data.batches import chunks
from rnn_jax.losses import LossFn
from rnn_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Batches:
    """A batch generator, ``fn(key, *data, **options)``, equal by value (a lambda or a partial is
    equal only to itself): equal tasks then share one jitted program (`stacked_batch`) across
    cells and grid points. Batch `index` of a stream is drawn with the stream's key folded with
    `index`; `by_step` generators take the stream's key and the index themselves,
    ``fn(key, index, *data, **options)`` (an epoch's permutation, `epoch_rows`)."""

    fn: Callable
    options: tuple[tuple[str, Any], ...] = ()
    by_step: bool = False

    def __call__(self, key, *data):
        return self.fn(key, *data, **dict(self.options))

    def draw(self, key, index, *data):
        """Batch `index` of the stream of `key`."""
        if self.by_step:
            return self(key, index, *data)
        return self(jax.random.fold_in(key, index), *data)


def batches(fn: Callable, *, by_step: bool = False, **options) -> Batches:
    """`fn(key, *data, **options)` as a value-equal `Batches` (`fn` a module-level function)."""
    return Batches(fn, tuple(sorted(options.items())), by_step)


@functools.partial(jax.jit, static_argnums=(0, 4))
def stacked_batch(batch: Batches, keys, index, data=(), view: Batches | None = None, view_data=()):
    """Batch `index` of every seed's stream (`keys`: one per seed; `index` traced: no retrace per
    step), each seen through `view(batch, *its row of view_data)` if given (`Task.view`)."""

    def one(key, *seed_view):
        drawn = batch.draw(key, index, *data)
        return drawn if view is None else view(drawn, *seed_view)

    return jax.vmap(one)(keys, *view_data)


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
    cfg.seed + 1, ...), e.g. each seed's own pixel order (mnist_permuted). `model`: the
    builder ``model(cfg, cell, seed, **model_io)`` where the default `SequenceModel` does not
    fit (an image captioner, an encoder-decoder). `stateful`: the batches are consecutive
    windows of parallel streams (truncated BPTT over a long text): the state is carried from
    window to window (reset where ``batch["reset"]``), the held-out windows' likewise.
    `eval_carried`: the held-out rows, in chunks, are consecutive windows of parallel streams,
    read with the state carried from chunk to chunk (a text's per-character loss), whatever
    the training does."""

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
    model: Callable | None = None
    stateful: bool = False
    eval_carried: bool = False

    @property
    def solved_threshold(self) -> float:
        return 0.1 * self.baseline if self.solved_below is None else self.solved_below

    def build_model(self, cfg, cell: str, seed: int):
        """The task's network of the cell named `cell`, initialised with `seed`."""
        if self.model is None:
            return cfg.sequence_model(cell, seed, **self.model_io)
        return self.model(cfg, cell, seed, **self.model_io)

    def check_seeds(self, seeds: int) -> None:
        """A task with per-seed views serves exactly the seeds it was built for."""
        if self.view_data and len(self.view_data[0]) != seeds:
            raise ValueError(f"the task was built for {len(self.view_data[0])} seed(s), the run trains {seeds}")

    def training_batch(self, keys, step) -> dict:
        """Batch `step` of every seed's training stream (`keys`: one per seed), with a leading seed axis."""
        return stacked_batch(self.batch, keys, step, self.data, self.view, self.view_data)

    def first_seed_batch(self, key) -> dict:
        """A batch of held-out data (the training data where there is none) as the run's first
        seed sees it: drawn with `key`, or, for held-out rows read in order, the first rows (as
        many as a training batch has)."""
        drawn = self.batch.draw(key, 0, *self.data) if self.batch.by_step else self.batch(key, *self.data)
        if self.eval_in_order:
            size = max(a.shape[0] for a in jax.tree.leaves(drawn) if a.ndim)
            drawn = jax.tree.map(lambda a: a[:size], self.eval_data[0])
        elif self.eval_data is not None:
            drawn = self.batch.draw(key, 0, *self.eval_data) if self.batch.by_step else self.batch(key, *self.eval_data)
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


def epoch_rows(key: jax.Array, step, arrays: dict, batch: int) -> dict:
    """Batch `step` of epochs over the rows of `arrays`: every epoch a fresh permutation (from
    `key` folded with the epoch), `batch` rows per step, an epoch's last partial batch skipped."""
    rows = len(next(iter(arrays.values())))
    per_epoch = rows // batch
    order = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), rows)
    take = jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch, batch)
    return {name: values[take] for name, values in arrays.items()}


def task_option(cfg, name: str, default):
    """A task's own option: the experiment's flag where it has one (sentiment's --min-count),
    else the task's default (gradient_flow has no --min-count)."""
    return getattr(cfg, name, default)


def label_entropy(counts) -> float:
    """Cross-entropy (nats) of predicting the labels' frequencies: what a model that ignores its
    input scores."""
    p = np.asarray(counts, np.float64) / np.sum(counts)
    return float(-np.sum(p[p > 0] * np.log(p[p > 0])))


def rows_task(splits: dict[str, dict], batch: int, data: str, *, epochs: bool = True, **fields) -> Task:
    """A task over rows held in memory: training batches from `splits["train"]` (`epochs`: in a
    fresh permutation every epoch, `epoch_rows`; else drawn with replacement, `random_rows`),
    the evaluation (and the choice of the best model) on every row of `splits["validation"]`,
    and every row of `splits["test"]`, if there is one, scored beside it."""
    if len(next(iter(splits["validation"].values()))) == 0:
        raise ValueError(f"--data {data}: the validation split is empty")
    training_rows = len(next(iter(splits["train"].values())))
    if epochs and training_rows < batch:
        raise ValueError(
            f"the training split has {training_rows} examples, fewer than one batch of {batch}; lower --batch"
        )
    held = {
        s: {k: jnp.asarray(v) for k, v in splits[s].items()} for s in ("train", "validation", "test") if s in splits
    }
    examples = {s: len(next(iter(arrays.values()))) for s, arrays in splits.items()}
    drawn = batches(epoch_rows, by_step=True, batch=batch) if epochs else batches(random_rows, batch=batch)
    return Task(
        batch=drawn,
        data=(held["train"],),
        eval_data=(held["validation"],),
        test_data=(held["test"],) if "test" in held else None,
        eval_in_order=True,
        **{**fields, "info": {"data": data, "examples": examples, **fields.get("info", {})}},
    )
