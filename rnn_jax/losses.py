"""Training losses. Each is `loss_fn(model, batch, dropout_key=None, probes=None,
initial_carries=None) -> (loss, metrics)`, and reports in `metrics["final_step_loss"]` the
loss at the last time step alone (L_T), from which `rnn_jax.gradflow` measures the long-range
profile dL_T/dh_t, and in `metrics["final_carries"]` each layer's final carry (truncated
BPTT carries it into the next window; the training step removes it from the metrics).

Batches are dicts: ``inputs`` (batch, time) tokens or (batch, time, features); ``targets``;
optional ``mask`` (batch, time) for right-padded sequences.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def sequence_cross_entropy(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Softmax cross-entropy at every (unmasked) step, averaged; targets (batch, time) ids.

    metrics: ``accuracy`` (per step), ``final_step_loss`` (cross-entropy at the last step).
    """
    mask = batch.get("mask")
    logits, carries = model(
        batch["inputs"], mask=mask, dropout_key=dropout_key, probes=probes, initial_carries=initial_carries
    )
    logits = logits.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    weights = jnp.ones_like(losses) if mask is None else mask.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    metrics = {
        "accuracy": jnp.sum(correct * weights) / total,
        "final_step_loss": jnp.mean(losses[:, -1]),
        "final_carries": carries,
    }
    return jnp.sum(losses * weights) / total, metrics


def final_step_mse(model, batch, dropout_key=None, probes=None, initial_carries=None):
    """Mean squared error of the output at the last step; targets (batch, outputs) or (batch,).

    A many-to-one regression loss (e.g. the adding problem): here L and L_T coincide.
    """
    outputs, carries = model(batch["inputs"], dropout_key=dropout_key, probes=probes, initial_carries=initial_carries)
    prediction = outputs[:, -1].astype(jnp.float32)
    targets = jnp.reshape(batch["targets"], prediction.shape)
    loss = jnp.mean(jnp.square(prediction - targets))
    return loss, {"final_step_loss": loss, "final_carries": carries}
