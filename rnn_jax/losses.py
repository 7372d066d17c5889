"""Training losses, and the one place a model meets its loss.

A loss is a pure function of the model's outputs and the batch, `loss_fn(outputs, batch) ->
LossOutput`; the model is called once, by `apply`, which fills in the final carries. Every
loss reports `final_step_loss`, the loss at the last (real) time step alone, L_T, from which
`rnn_jax.gradflow` measures the long-range profile dL_T/dh_t.

A model (`rnn_jax.layers.SequenceModel`, `rnn_jax.seq2seq.Seq2Seq`, ...) reads a batch with
`model.forward(batch, dropout_key=, probes=, initial_carries=) -> (outputs, carries)`.
Batches are dicts: ``inputs`` (batch, time) tokens or (batch, time, features); ``targets``;
optional ``mask`` (batch, time) for padded sequences; optional ``weights`` (batch, time) or
(batch,), e.g. to leave out targets that are missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnn_jax.cells import accumulation_dtype

Array = jax.Array


class LossOutput(NamedTuple):
    """What a loss gives the training step: the scalar loss that is differentiated, the loss at
    the final step alone (L_T, for the long-range gradient-flow profile; a many-to-one loss
    passes its loss itself, and `rnn_jax.gradflow` then skips L_T's backward pass), further
    scalar metrics (accuracy, ...) and each layer's final carry (filled in by `apply`; truncated
    BPTT carries it into the next window)."""

    loss: Array
    final_step_loss: Array
    metrics: dict[str, Array]
    carries: Any = None


LossFn = Callable[[Array, dict], LossOutput]


def apply(loss_fn: LossFn, model, batch: dict, *, dropout_key=None, probes=None, initial_carries=None) -> LossOutput:
    """Run `model` on `batch` once and score its outputs with `loss_fn`."""
    outputs, carries = model.forward(batch, dropout_key=dropout_key, probes=probes, initial_carries=initial_carries)
    return loss_fn(outputs, batch)._replace(carries=carries)


def _at_last_real_step(values, mask):
    """values (batch, time) -> (batch,): the value at each sequence's last real step (the
    last step when there is no mask)."""
    if mask is None:
        return values[:, -1]
    time = mask.shape[1]
    last = time - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]


def _weighted_mean(values, weights):
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _step_weights(batch, shape):
    weights = jnp.ones(shape, jnp.float32)
    if batch.get("mask") is not None:
        weights = weights * batch["mask"]
    if batch.get("weights") is not None:
        weights = weights * batch["weights"]
    return weights


def sequence_cross_entropy(logits, batch) -> LossOutput:
    """Softmax cross-entropy at every (unmasked) step, averaged; targets (batch, time) ids.
    Also the decoder loss of `rnn_jax.seq2seq` (teacher forcing; its L_T is the loss of each
    target's last token, <eos>, whose profile reaches back through the decoder into the
    encoder). metrics: ``accuracy`` per step."""
    logits = logits.astype(accumulation_dtype(logits.dtype))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(logits.dtype)
    weights = _step_weights(batch, losses.shape)
    final = jnp.mean(_at_last_real_step(losses, batch.get("mask")))
    return LossOutput(_weighted_mean(losses, weights), final, {"accuracy": _weighted_mean(correct, weights)})


def sequence_bits_cross_entropy(logits, batch) -> LossOutput:
    """Binary cross-entropy of every bit at every (unmasked, weighted) step, averaged over the
    bits and the steps; targets (batch, time, bits) in {0, 1}, one logit per bit (the same
    predictions as a two-way softmax per bit). metrics: ``accuracy`` per bit."""
    logits = logits.astype(accumulation_dtype(logits.dtype))
    losses = optax.sigmoid_binary_cross_entropy(logits, batch["targets"]).mean(-1)
    correct = ((logits > 0) == (batch["targets"] > 0.5)).astype(logits.dtype).mean(-1)
    weights = _step_weights(batch, losses.shape)
    final = jnp.mean(_at_last_real_step(losses, batch.get("mask")))
    return LossOutput(_weighted_mean(losses, weights), final, {"accuracy": _weighted_mean(correct, weights)})


def classification_cross_entropy(logits, batch) -> LossOutput:
    """Many-to-one: softmax cross-entropy of one prediction per sequence (a model with the
    "final" readout); targets (batch,) class ids. The loss is a function of the final state
    alone, so it is its own L_T."""
    logits = logits.astype(accumulation_dtype(logits.dtype))
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]))
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["targets"]).astype(logits.dtype))
    return LossOutput(loss, loss, {"accuracy": accuracy})


def sequence_mse(outputs, batch) -> LossOutput:
    """Squared error at every step, averaged over real, weighted steps; targets (batch, time)
    or (batch, time, outputs) (e.g. next-value forecasting: the target at t is x_{t+1})."""
    outputs = outputs.astype(accumulation_dtype(outputs.dtype))
    errors = jnp.square(outputs - jnp.reshape(batch["targets"], outputs.shape)).mean(-1)
    weights = _step_weights(batch, errors.shape)
    final = jnp.mean(_at_last_real_step(errors, batch.get("mask")))
    return LossOutput(_weighted_mean(errors, weights), final, {})


def final_step_mse(outputs, batch) -> LossOutput:
    """Mean squared error of the output at the last step; targets (batch, outputs) or (batch,).

    A many-to-one regression loss (e.g. the adding problem): here L and L_T coincide.
    """
    prediction = outputs[:, -1].astype(accumulation_dtype(outputs.dtype))
    loss = jnp.mean(jnp.square(prediction - jnp.reshape(batch["targets"], prediction.shape)))
    return LossOutput(loss, loss, {})
