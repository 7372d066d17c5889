"""Sequential MNIST (Le et al. 2015): a digit pixel by pixel, in each seed's own order of the
pixels, or row by row, classified from the final state."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from rnn_jax.data import corpora, loaders
from rnn_jax.losses import classification_cross_entropy
from rnn_jax.tasks.base import Task, batches, register_task, rows_task

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
    return rows_task(
        arrays,
        cfg.batch,
        cfg.data or "mnist",
        epochs=False,  # drawn with replacement, as the published tables were (docs/published.md)
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
