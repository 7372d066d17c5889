"""The jitted training step: a pure function of (TrainState, batch).

The NNX model is split once into a static `graphdef` and its parameter state; the step
merges them inside `jax.jit`, so NNX's Python graph handling runs at trace time only and a
call costs what the XLA computation costs (see benchmarks/train_step.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

Array = jax.Array
Batch = dict[str, Array]
# loss_fn(model, batch, dropout_key) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[nnx.Module, Batch, Array | None], tuple[Array, dict[str, Array]]]


@flax.struct.dataclass
class TrainState:
    step: Array
    params: nnx.State
    opt_state: optax.OptState
    key: Array  # base key of the dropout masks; step s uses fold_in(key, s)


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation, key: Array):
    """Split `model` once. Returns (graphdef, TrainState)."""
    graphdef, params = nnx.split(model, nnx.Param)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=key)
    return graphdef, state


def sequence_cross_entropy(model: nnx.Module, batch: Batch, dropout_key: Array | None = None):
    """Mean softmax cross-entropy over the real (unmasked) steps.

    batch: ``inputs`` (batch, time) tokens or (batch, time, features), ``targets``
    (batch, time) class ids, optional ``mask`` (batch, time).
    """
    mask = batch.get("mask")
    logits, _ = model(batch["inputs"], mask=mask, dropout_key=dropout_key)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
    if mask is None:
        loss = losses.mean()
    else:
        loss = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)
    return loss, {}


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_fn: LossFn = sequence_cross_entropy):
    """A jitted `step(state, batch) -> (state, metrics)`; `state` is donated.

    metrics: ``loss``, ``grad_norm`` (global norm before the optimizer's own clipping, if
    any) and whatever `loss_fn` reports.
    """

    def loss_of_params(params, batch, dropout_key):
        return loss_fn(nnx.merge(graphdef, params), batch, dropout_key)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
        dropout_key = jax.random.fold_in(state.key, state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_of_params, has_aux=True)(
            state.params, batch, dropout_key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(step, donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: LossFn = sequence_cross_entropy):
    """A jitted `evaluate(params, batch) -> metrics` without dropout."""

    def evaluate(params, batch):
        loss, metrics = loss_fn(nnx.merge(graphdef, params), batch, None)
        return {"loss": loss, **metrics}

    return jax.jit(evaluate)
