"""Training losses. Each is `loss_fn(model, batch, dropout_key=None, probes=None,
initial_carries=None) -> (loss, metrics)`, and reports in `metrics["final_step_loss"]` the
loss at the last time step alone (L_T), from which `rnn_jax.gradflow` measures the long-range
profile dL_T/dh_t, and in `metrics["final_carries"]` each layer's final carry (truncated
BPTT carries it into the next window; the training step removes it from the metrics).

Batches are dicts: ``inputs`` (batch, time) tokens or (batch, time, features); ``targets``;
optional ``mask`` (batch, time) for padded sequences; optional ``weights`` (batch, time) or
(batch,), e.g. to leave out targets that are missing.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


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
        weights = weights * batch["mask"].astype(jnp.float32)
    if batch.get("weights") is not None:
        weights = weights * batch["weights"].astype(jnp.float32)
    return weights


def _token_cross_entropy(logits, batch, carries):
    mask = batch.get("mask")
    logits = logits.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    weights = _step_weights(batch, losses.shape)
    metrics = {
        "accuracy": _weighted_mean(correct, weights),
        "final_step_loss": jnp.mean(_at_last_real_step(losses, mask)),
        "final_carries": carries,
    }
    return _weighted_mean(losses, weights), metrics


def sequence_cross_entropy(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Softmax cross-entropy at every (unmasked) step, averaged; targets (batch, time) ids.

    metrics: ``accuracy`` (per step), ``final_step_loss`` (cross-entropy at each sequence's
    last real step).
    """
    logits, carries = model(
        batch["inputs"], mask=batch.get("mask"), dropout_key=dropout_key, probes=probes, initial_carries=initial_carries
    )
    return _token_cross_entropy(logits, batch, carries)


def seq2seq_cross_entropy(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Teacher-forced cross-entropy of a conditional decoder (`rnn_jax.seq2seq`): ``inputs``
    (the source, or features), optional ``source_mask``, ``decoder_inputs`` (<bos> y_1 ...
    y_(T-1)), ``targets`` (y_1 ... <eos>), ``mask`` over the targets. ``final_step_loss`` is
    the loss of each target's last token (<eos>): its profile reaches back through the decoder
    into the encoder."""
    logits, carries = model(batch["inputs"], batch["decoder_inputs"], mask=batch.get("mask"),
                            source_mask=batch.get("source_mask"), dropout_key=dropout_key, probes=probes)
    return _token_cross_entropy(logits, batch, carries)


def classification_cross_entropy(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Many-to-one: softmax cross-entropy of one prediction per sequence (a model with the
    "final" readout); targets (batch,) class ids. The loss is a function of the final state
    alone, so it is its own L_T."""
    logits, carries = model(
        batch["inputs"], mask=batch.get("mask"), dropout_key=dropout_key, probes=probes, initial_carries=initial_carries
    )
    logits = logits.astype(jnp.float32)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]))
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32))
    return loss, {"accuracy": accuracy, "final_step_loss": loss, "final_carries": carries}


def sequence_mse(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Squared error at every step, averaged over real, weighted steps; targets (batch, time)
    or (batch, time, outputs) (e.g. next-value forecasting: the target at t is x_{t+1})."""
    mask = batch.get("mask")
    outputs, carries = model(
        batch["inputs"], mask=mask, dropout_key=dropout_key, probes=probes, initial_carries=initial_carries
    )
    outputs = outputs.astype(jnp.float32)
    errors = jnp.square(outputs - jnp.reshape(batch["targets"], outputs.shape)).mean(-1)
    weights = _step_weights(batch, errors.shape)
    metrics = {"final_step_loss": jnp.mean(_at_last_real_step(errors, mask)), "final_carries": carries}
    return _weighted_mean(errors, weights), metrics


def final_step_mse(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Mean squared error of the output at the last step; targets (batch, outputs) or (batch,).

    A many-to-one regression loss (e.g. the adding problem): here L and L_T coincide.
    """
    outputs, carries = model(batch["inputs"], dropout_key=dropout_key, probes=probes, initial_carries=initial_carries)
    prediction = outputs[:, -1].astype(jnp.float32)
    targets = jnp.reshape(batch["targets"], prediction.shape)
    loss = jnp.mean(jnp.square(prediction - targets))
    return loss, {"final_step_loss": loss, "final_carries": carries}
