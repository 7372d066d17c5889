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
  part of a backward pass. A many-to-one loss (the adding problem, classification) is its
  own L_T: it returns one value as both, and then dL_T/dh_t is dL/dh_t and the second pass
  is skipped.

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

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.cells import accumulation_dtype, matmul, matmul_transposed
from rnn_jax.choices import check_choice
from rnn_jax.layers import param_values
from rnn_jax.losses import LossFn, LossOutput, apply
from rnn_jax.measurements import Context, builtin, run_measurements
from rnn_jax.recurrence import time_major

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


@builtin("flow_profile", key=None)
def flow_profile(ctx: Context) -> dict:
    """The gradient-flow profiles of a step (keys: see the module's docstring):
    ``by_step``: {key: (time,)}  ||dL/dh_t||, L the training loss;
    ``by_lag``:  {key: (time,)}  ||dL_T/dh_{T-k}|| at entry k (k = 0 is the last step), L_T the
                 loss output's `final_step_loss` (where `ctx.final_state_grads` is given)."""
    flow = {"by_step": probe_norms(ctx.model, ctx.state_grads)}
    if ctx.final_state_grads is not None:
        flow["by_lag"] = {k: v[::-1] for k, v in probe_norms(ctx.model, ctx.final_state_grads()).items()}
    return flow


def measurement_context(
    loss_fn: LossFn, graphdef, params, batch, dropout_key, *, initial_carries=None, opt_state=None, spectrum=None
) -> tuple[LossOutput, nnx.State, Context]:
    """One forward and one backward pass (`loss_and_pullback`): (the loss output, the parameter
    gradient, the `Context` every measurement of the step reads)."""
    out, pullback, final_is_loss = loss_and_pullback(
        loss_fn, graphdef, params, batch, dropout_key, initial_carries=initial_carries
    )
    grads, state_grads = pullback(1.0, 0.0)

    def loss(params):
        model = nnx.merge(graphdef, params)
        return apply(loss_fn, model, batch, dropout_key=dropout_key, initial_carries=initial_carries).loss

    # a many-to-one loss is its own L_T: its gradients are those of L (no second pass)
    final = (lambda: state_grads) if final_is_loss else (lambda: pullback(0.0, 1.0)[1])
    model = nnx.merge(graphdef, params)
    context = Context(model, params, batch, state_grads, loss, opt_state, initial_carries, final, spectrum, grads)
    return out, grads, context


def grads_and_flow(
    loss_fn: LossFn, graphdef, params, batch, dropout_key, *, initial_carries=None, long_range=True, measurements=()
) -> tuple[LossOutput, nnx.State, dict]:
    """The loss, parameter gradient and gradient-flow record from one forward pass: the
    profiles (`flow_profile`; ``by_lag`` only with `long_range`) and ``measurements``: {name:
    fn(...)} for each (name, fn) of `measurements` (`rnn_jax.measurements`), if any."""
    out, grads, context = measurement_context(
        loss_fn, graphdef, params, batch, dropout_key, initial_carries=initial_carries
    )
    if not long_range:
        context = dataclasses.replace(context, final_state_grads=None)
    return out, grads, run_measurements(context, (("flow_profile", flow_profile), *measurements))


def loss_and_pullback(
    loss_fn: LossFn, graphdef: nnx.GraphDef, params: nnx.State, batch, dropout_key, *, initial_carries=None
):
    """One forward pass with zero probes: (loss output, `pullback(a, b)`, `final_is_loss`), where
    pullback gives the gradients of a L + b L_T with respect to the parameters and the probes
    (the latter: with respect to every layer's carry at every step, through every path), and
    `final_is_loss` says that the loss function returned one traced value as both L and L_T (a
    many-to-one loss), so that pullback(1, 0) already holds L_T's gradients."""
    model = nnx.merge(graphdef, params)
    final_is_loss = False

    def losses(params, probes):
        nonlocal final_is_loss
        out = apply(
            loss_fn,
            nnx.merge(graphdef, params),
            batch,
            dropout_key=dropout_key,
            probes=probes,
            initial_carries=initial_carries,
        )
        final_is_loss = out.final_step_loss is out.loss
        return jnp.stack([out.loss, out.final_step_loss]), out

    both, vjp, out = jax.vjp(losses, params, model.probes_for(batch), has_aux=True)
    return out, lambda a, b: vjp(jnp.array([a, b], both.dtype)), final_is_loss


REGULARIZER_FORMS = ("trajectory", "authors")


def flow_regularizer(
    graphdef: nnx.GraphDef, params: nnx.State, batch, state_grads, *, initial_carries=None, form: str = "trajectory"
):
    """Pascanu et al. (2013)'s vanishing-gradient regulariser Omega, in one of two forms.

    With v_k = dE/dh_k (`state_grads`: the probe gradients of `loss_and_pullback`, held
    constant, as in the paper) and J_k = dh_k/dh_(k-1) the step Jacobian:

    ``"trajectory"`` (the paper's eq. 9 as written):
        Omega = sum_(k >= 2) ( ||v_k J_k|| / ||v_k|| - 1 )^2, averaged over the sequences;
        its gradient reaches every parameter through the Jacobians and the trajectory they are
        taken along (W_xh and b too). The pair h_0 -> h_1 is left out: h_0 is no state.
    ``"authors"`` (pascanur/trainingRNNs, ``RNN.py``):
        Omega = mean over (k >= 1, sequence) of ( ||v_k J_k||^2 / ||v_k||^2 - 1 )^2, a ratio
        of *squared* norms, over the pairs with ||v_k||^2 >= 1e-20 (their ``bound``); its
        gradient is taken with respect to W_hh only, with v_k, the states and so the
        activations' derivatives held constant (for the tanh RNN, J_k = W_hh diag(1 - h_k^2)
        with the diagonal fixed). For a gated cell: every path of J_k except the product
        h_(k-1) W_hh is held constant, so a cell must have that product (`Cell.gates`).

    Summed over the layers of a `SequenceModel` (the full carry: (c, h) for the LSTM). Dropout
    is not applied (the trajectory is the deterministic one)."""
    check_choice("regulariser form", form, REGULARIZER_FORMS)
    model = nnx.merge(graphdef, params)
    xs = model.rnn.prepare(model.stack_inputs(batch))
    carries = [None] * len(model.rnn.layers) if initial_carries is None else initial_carries
    layer_omega = _layer_regularizer if form == "trajectory" else _layer_regularizer_authors
    total = 0.0
    for layer, grads, carry in zip(model.rnn.layers, state_grads, carries):
        if layer.bidirectional:
            raise ValueError("the flow regulariser is implemented for forward layers only")
        total = total + layer_omega(layer, layer.recurrence_inputs(xs), jax.lax.stop_gradient(grads), carry)
        xs = layer(xs, initial_carry=carry)[1]
    return total


def _layer_regularizer(layer, xs, grads, initial_carry):
    cell = layer.cell
    params = param_values(layer.forward)
    carry = _initial_carry(layer, xs, initial_carry)

    def step(carry, inputs):
        xw_t, v = inputs  # v = dE/d carry_t, the cotangent of this step's output
        new_carry, pullback = jax.vjp(lambda c: cell.recur(params, c, xw_t)[0], carry)
        (u,) = pullback(v)  # dE/d carry_t . d carry_t / d carry_(t-1)
        v_norm, u_norm = _row_norm(v), _row_norm(u)
        term = jnp.where(v_norm > 1e-20, jnp.square(u_norm / jnp.maximum(v_norm, 1e-20) - 1.0), 0.0)
        return new_carry, term

    _, terms = jax.lax.scan(step, carry, (time_major(cell.project_inputs(params, xs)), time_major(grads)))
    return jnp.mean(jnp.sum(terms[1:], axis=0))  # k from the first step on: dh_1/dh_0 links no two states


def _layer_regularizer_authors(layer, xs, grads, initial_carry):
    """The authors' form: u_k = direct_k + delta_k W_hh^T, where delta_k (the cotangent of
    h_(k-1) W_hh) and direct_k (every other path to the old carry) are computed from constant
    states and parameters; only the W_hh of that product carries a gradient."""
    cell = layer.cell
    if not cell.fused_recurrence:
        raise ValueError(
            f"the authors' form of the flow regulariser differentiates the product h_(t-1) W_hh, which the "
            f"{cell.name} cell's step does not have; use --flow-regularizer-form trajectory"
        )
    params = param_values(layer.forward)
    w_hh, fixed = params["W_hh"], jax.lax.stop_gradient(params)
    xs = jax.lax.stop_gradient(xs)
    carry = _initial_carry(layer, xs, initial_carry)
    carry = jax.lax.stop_gradient(carry)

    def step(carry, inputs):
        xw_t, v = inputs
        hw_t = matmul(cell.hidden(carry), fixed["W_hh"])
        new_carry, pullback = jax.vjp(lambda c, hw: cell.gates(fixed, c, xw_t, hw)[0], carry, hw_t)
        direct, delta = pullback(v)
        (through_w,) = jax.vjp(cell.hidden, carry)[1](matmul_transposed(delta, w_hh).astype(hw_t.dtype))
        v_sq, u_sq = (jnp.square(_row_norm(tree)) for tree in (v, jax.tree.map(jnp.add, direct, through_w)))
        counted = v_sq >= 1e-20
        term = jnp.where(counted, jnp.square(u_sq / jnp.where(counted, v_sq, 1.0) - 1.0), 0.0)
        return new_carry, (term, counted)

    _, (terms, counted) = jax.lax.scan(step, carry, (time_major(cell.project_inputs(fixed, xs)), time_major(grads)))
    return jnp.sum(terms) / jnp.maximum(jnp.sum(counted), 1)


def _initial_carry(layer, xs, initial_carry):
    """The carry a layer's regulariser starts from: the given one, else zeros in the inputs' dtype."""
    if initial_carry is not None:
        return initial_carry
    return layer.cell.zero_carry((xs.shape[0],), layer.hidden_size, xs.dtype)


def _row_norm(tree):
    """Per-sequence L2 norm over all leaves of a carry: (batch,)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf), axis=-1) for leaf in jax.tree.leaves(tree)))


def top_state(profile_keys, layers: int) -> str:
    """Which profile a run's summary reads: the top layer's hidden state, ``layer{L-1}/h`` (a
    decoder's ``decoder/layer{L-1}/h``; a bidirectional layer's forward one)."""
    name = f"layer{layers - 1}/h"
    if name in profile_keys:
        return name
    top = f"layer{layers - 1}/"
    candidates = sorted((("backward" in k), k) for k in profile_keys if top in k and k.endswith("/h"))
    if not candidates:
        raise ValueError(f"no profile of the top layer's hidden state ({name}) among {sorted(profile_keys)}")
    return candidates[0][1]


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
