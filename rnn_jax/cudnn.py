"""The LSTM on cuDNN: the whole recurrence, forward and backward, as one fused library call on
an NVIDIA GPU (`jax.experimental.rnn.lstm`), for `run(..., scan="cudnn")`.

cuDNN's LSTM is the standard one (`LSTM(variant="standard")`, the default: forget gate, no
peepholes) with PyTorch's layout: gate order [i, f, g, o] as ours, weights W_ih (4 hidden, input)
and W_hh (4 hidden, hidden), two biases b_ih and b_hh where we have one b. `flat_weights`
maps our parameters onto its flat vector (b_hh = 0); gradients flow back through the map.

cuDNN takes each sequence as its first `length` steps. A `run` mask (one contiguous run of real
steps per sequence, padding on either side) is brought to that form by rolling each sequence's
real steps to the front, and `reverse` by flipping them within their length; outputs are moved
back. There is no entry between two steps, so a step that measures gradient flow (probes)
keeps the scan: `rnn_jax.recurrence.run` falls back to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn as experimental_rnn

from rnn_jax.cells import Cell, LSTMState

Array = jax.Array


def supports(cell: Cell) -> bool:
    """cuDNN runs the standard LSTM only (no peepholes, no variants)."""
    return cell.name == "lstm" and getattr(cell, "variant", None) == "standard"


def flat_weights(params: dict[str, Array]) -> Array:
    """Our LSTM parameters as cuDNN's flat weight vector: W_ih, W_hh, b_ih, b_hh (b_hh = 0)."""
    return jnp.concatenate(
        [params["W_xh"].T.ravel(), params["W_hh"].T.ravel(), params["b"], jnp.zeros_like(params["b"])]
    )


def cudnn_precision() -> jax.lax.Precision:
    """cuDNN's one precision switch from the matmul precision being traced at: full float32 for
    highest / float32, else TF32 allowed. (JAX raises for bfloat16, which cuDNN's LSTM lacks: a
    TPU-like `JAX_DEFAULT_MATMUL_PRECISION=bfloat16` then gets TF32, the nearest it has.)"""
    precision = jax.config.jax_default_matmul_precision
    return jax.lax.Precision.HIGHEST if precision in ("highest", "float32") else jax.lax.Precision.HIGH


def _cudnn_lstm(x, h0, c0, weights, lengths, input_size, hidden_size):
    return experimental_rnn.lstm(
        x, h0, c0, weights, lengths, input_size, hidden_size, 1, 0.0, False, precision=cudnn_precision()
    )


def reference_lstm(x, h0, c0, weights, lengths, input_size, hidden_size):
    """`jax.experimental.rnn`'s plain-JAX reference on cuDNN's weight layout: what the cuDNN
    call computes, on any device (the CPU tests check the layout and the masking with it)."""
    W_ih, W_hh, b_ih, b_hh = experimental_rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, False)
    return experimental_rnn.lstm_ref(x, h0, c0, W_ih, W_hh, b_ih, b_hh, lengths, input_size, hidden_size, 1, 0.0, False)


IMPLEMENTATION = {"kernel": _cudnn_lstm}  # tests swap in `reference_lstm` to run off-GPU


def _to_front(xs: Array, offsets: Array, lengths: Array, reverse: bool) -> Array:
    """(batch, time, ...) with each sequence's real steps [offset, offset + length) moved to
    [0, length), in reverse order if `reverse`. Applied to the outputs it inverts itself."""
    time = xs.shape[1]
    t = jnp.arange(time)[None, :]
    src = jnp.where(t < lengths[:, None], (lengths[:, None] - 1 - t) if reverse else t, t) + offsets[:, None]
    return jnp.take_along_axis(xs, (src % time).reshape(*src.shape, *([1] * (xs.ndim - 2))), axis=1)


def _from_front(ys: Array, offsets: Array, lengths: Array, reverse: bool) -> Array:
    time = ys.shape[1]
    t = jnp.arange(time)[None, :]
    local = t - offsets[:, None]
    real = (local >= 0) & (local < lengths[:, None])
    src = jnp.where(real, (lengths[:, None] - 1 - local) if reverse else local, 0)
    moved = jnp.take_along_axis(ys, src.reshape(*src.shape, 1), axis=1)
    return jnp.where(real[..., None], moved, 0)


def run_lstm(
    params: dict[str, Array], xs: Array, initial_carry: LSTMState, mask: Array | None, *, reverse: bool = False
) -> tuple[LSTMState, Array]:
    """The standard LSTM over xs (batch, time, input) in one cuDNN call: (final carry, ys
    (batch, time, hidden), zero at padded steps), as `rnn_jax.recurrence.run`."""
    batch, time, input_size = xs.shape
    hidden = params["W_hh"].shape[0]
    if mask is None:
        offsets, lengths = jnp.zeros((batch,), jnp.int32), jnp.full((batch,), time, jnp.int32)
    else:
        offsets, lengths = jnp.argmax(mask, axis=1).astype(jnp.int32), mask.sum(axis=1).astype(jnp.int32)
    inputs = xs if mask is None and not reverse else _to_front(xs, offsets, lengths, reverse)
    ys, h_n, c_n = IMPLEMENTATION["kernel"](
        inputs,
        initial_carry.h[None],
        initial_carry.c[None],
        flat_weights(params),
        jnp.maximum(lengths, 1),  # cuDNN needs a step; an empty sequence keeps its initial carry below
        input_size,
        hidden,
    )
    empty = (lengths == 0)[:, None]
    carry = LSTMState(
        c=jnp.where(empty, initial_carry.c, c_n[0]).astype(initial_carry.c.dtype),
        h=jnp.where(empty, initial_carry.h, h_n[0]).astype(initial_carry.h.dtype),
    )
    if mask is None and not reverse:
        return carry, ys
    return carry, _from_front(ys, offsets, lengths, reverse)
