"""Fixed-shape batches of a dataset held in memory: padding with masks, shuffled training
batches as a pure function of the step (so a resumed run sees the same batches), and
evaluation chunks."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def pad(sequences: Sequence[np.ndarray], length: int, *, side: str = "right", value: int = 0):
    """Pad (or cut) integer sequences to one `length`: returns (ids (n, length), mask (n, length)).

    side="right": tokens first, padding after (tagging, decoders); a sequence too long keeps
    its first `length` tokens. side="left": padding first, so that every sequence *ends* at
    the last step (many-to-one classification: the readout is the final state, and the
    gradient-flow profile's lag k means k tokens before the end for every sequence); a
    sequence too long keeps its last `length` tokens.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    ids = np.full((len(sequences), length), value, np.int32)
    mask = np.zeros((len(sequences), length), bool)
    for row, sequence in enumerate(sequences):
        sequence = np.asarray(sequence)
        sequence = sequence[:length] if side == "right" else sequence[max(len(sequence) - length, 0) :]
        n = len(sequence)
        if n == 0:
            continue
        where = slice(0, n) if side == "right" else slice(length - n, length)
        ids[row, where], mask[row, where] = sequence, True
    return ids, mask


def shuffled_batches(arrays: dict[str, np.ndarray], batch: int, seed: int):
    """`get_batch(step)`: rows of `arrays` (equal first dimension) in a fresh permutation every
    epoch, `batch` rows per step (a jitted function of the step; the last, partial batch of
    an epoch is skipped)."""
    arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    rows = len(next(iter(arrays.values())))
    if rows < batch:
        raise ValueError(f"the training split has {rows} examples, fewer than one batch of {batch}; lower --batch")
    per_epoch = rows // batch
    key = jax.random.key(seed)

    @jax.jit
    def get_batch(step):
        order = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), rows)
        take = jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch, batch)
        return {k: v[take] for k, v in arrays.items()}

    return get_batch


def chunks(arrays: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive row blocks of at most `size` rows (evaluation in order, every row once)."""
    rows = len(next(iter(arrays.values())))
    if rows == 0:
        raise ValueError("an evaluation split is empty")
    return [{k: v[i : i + size] for k, v in arrays.items()} for i in range(0, rows, size)]
