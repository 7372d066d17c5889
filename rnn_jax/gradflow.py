"""Gradient flow through time, measured inside the jitted training step.

The probes: a zero tensor shaped like each layer's carry with a time axis is added to the
carry after every step (`rnn_jax.recurrence.run(probes=...)`). Adding zero changes nothing,
and the gradient with respect to the probe at step t is the gradient with respect to the
state at step t, through every path (recurrent and output). One forward pass, then:

- a backward pass of the training loss L gives the parameter gradient and, for free,
  dL/dh_t (and dL/dc_t for the LSTM) for every t and layer;
- a second backward pass, from the same forward pass (`jax.vjp`), of L_T — the loss at the
  final time step alone — gives dL_T/dh_t: the classic vanishing-gradient profile. Its
  parameter gradient is unused and removed by XLA, so this pass costs only the recurrent
  part of a backward pass.

Norms are reduced on device to one number per step: the sum over the batch of per-sequence
norms ||dL/dh_t^(b)||. For a loss that is a batch mean, L = mean_b l_b, that is the batch
average of ||dl_b/dh_t^(b)||: the per-sequence gradient norm, independent of batch size.

Keys of the returned dicts: ``layer{i}/{h|c}``, or ``layer{i}/{forward|backward}/{h|c}``
for bidirectional layers, prefixed by the stack's name in models of several stacks
(``encoder/layer0/h``); values are (time,) arrays indexed by t. A model states which stacks
it has and how its probes are shaped with `probes_for(batch)` and `probe_groups(probes)`
(see `rnn_jax.layers.SequenceModel`). Probes at padded steps get no gradient (the masked
step discards them), so a padded step contributes zero to the norms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.cells import accumulation_dtype
from rnn_jax.losses import LossFn, LossOutput, apply

Array = jax.Array


def _per_step_norms(probe_grad: Array) -> Array:
    """(batch, time, hidden) -> (time,): sum over the batch of the per-sequence L2 norm."""
    probe_grad = probe_grad.astype(accumulation_dtype(probe_grad.dtype))
    return jnp.sum(jnp.sqrt(jnp.sum(jnp.square(probe_grad), axis=-1)), axis=0)


def probe_norms(model: nnx.Module, probe_grads) -> dict[str, Array]:
    """Per-step norms of the probe gradients of a model, one (time,) array per recurrent
    stack (`model.probe_groups`, e.g. an encoder and a decoder), layer, direction and carry
    component."""
    norms = {}
    for group, stack, stack_grads in model.probe_groups(probe_grads):
        for i, (layer, grads) in enumerate(zip(stack.layers, stack_grads)):
            directions = zip(("forward", "backward"), grads) if layer.bidirectional else [(None, grads)]
            for direction, carry_grads in directions:
                prefix = f"{group}layer{i}/" + (f"{direction}/" if direction else "")
                for name, grad in zip(layer.cell.carry_names, jax.tree.leaves(carry_grads)):
                    norms[prefix + name] = _per_step_norms(grad)
    return norms


def grads_and_flow(loss_fn: LossFn, graphdef: nnx.GraphDef, params: nnx.State, batch, dropout_key, *,
                   initial_carries=None, long_range: bool = True) -> tuple[LossOutput, nnx.State, dict]:
    """The loss, parameter gradient and gradient-flow norms from one forward pass.

    Returns (loss output, grads, flow) where flow holds
      ``by_step``: {key: (time,)}  ||dL/dh_t||, L the training loss;
      ``by_lag``:  {key: (time,)}  ||dL_T/dh_{T-k}|| at entry k (k = 0 is the last step),
                   L_T the loss output's `final_step_loss` (only with `long_range`).
    """
    model = nnx.merge(graphdef, params)

    def losses(params, probes):
        out = apply(loss_fn, nnx.merge(graphdef, params), batch, dropout_key=dropout_key, probes=probes,
                    initial_carries=initial_carries)
        return jnp.stack([out.loss, out.final_step_loss]), out

    both, pullback, out = jax.vjp(losses, params, model.probes_for(batch), has_aux=True)
    grads, probe_grads = pullback(jnp.array([1.0, 0.0], both.dtype))
    flow = {"by_step": probe_norms(model, probe_grads)}
    if long_range:
        _, final_probe_grads = pullback(jnp.array([0.0, 1.0], both.dtype))
        flow["by_lag"] = {k: v[::-1] for k, v in probe_norms(model, final_probe_grads).items()}
    return out, grads, flow


def decay_rate(norms_by_lag, *, skip: int = 1, floor: float = 1e-30) -> float:
    """Least-squares slope of ln ||dL_T/dh_{T-k}|| against the lag k, in nats per step.

    Negative: the gradient shrinks with distance (vanishing); e.g. -0.1 means it falls by a
    factor e every 10 steps. Entries k < `skip` are left out (the last step's state also
    feeds the output directly), as are entries at or below `floor` (underflow to zero, where
    the logarithm says nothing). NaN if fewer than two points remain.
    """
    norms = np.asarray(norms_by_lag, np.float64)
    lags = np.arange(norms.size)
    keep = (lags >= skip) & np.isfinite(norms) & (norms > floor)
    if keep.sum() < 2:
        return float("nan")
    slope, _ = np.polyfit(lags[keep], np.log(norms[keep]), 1)
    return float(slope)
