"""One step's bookkeeping (`finish_step`: probes, masks) and the scan with the hand-written
backward pass (`fused_scan`, `run(..., backprop="fused")`), for `rnn_jax.recurrence`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells import Carry, Cell, Params, accumulation_dtype, matmul, matmul_transposed

Array = jax.Array

# Measured likewise: from this hidden size on, the loop's matmul h_{t-1} W_hh is faster with W_hh
# transposed once before the loop, (G * hidden, hidden) (the LSTM and GRU train step 1.01-1.18x
# faster at 1024 in three runs, docs/performance.md; 0.95x at 256 and 512).
TRANSPOSE_FROM_HIDDEN = 1024


def finish_step(
    cell: Cell, carry: Carry, new_carry: Carry, h: Array, mask_t, probe_t, output=None
) -> tuple[Carry, Array]:
    """Add the gradient-flow probe to the new carry (and read the output from the probed carry:
    `output(carry)`, by default the hidden state); at padded steps keep the old carry and output
    zeros."""
    if probe_t is not None:
        new_carry = jax.tree.map(jnp.add, new_carry, probe_t)
        h = (output or cell.hidden)(new_carry)
    if mask_t is not None:
        keep = mask_t[:, None]
        new_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
        h = jnp.where(keep, h, jnp.zeros_like(h))
    return new_carry, h


def gate_params_of(params: Params) -> Params:
    """The parameters `cell.gates` reads: all but the two projections' (W_xh, b, W_hh)."""
    return {k: v for k, v in params.items() if k not in ("W_xh", "b", "W_hh")}


# The hand-written backward pass. Autodiff of the scan forms dL/dW_hh as a (hidden x batch) @
# (batch x G*hidden) product inside every backward step; here the backward scan only passes
# the gradient back through time (d hw_t = the gradient of the step's recurrent product, and
# dh_{t-1} = d hw_t W_hh^T), and dL/dW_hh = sum_t h_{t-1}^T d hw_t is one large matmul over
# all (time x batch) rows after it (and so are the input projection's). The forward saves each
# step's carry, xw_t and hw_t, or their sum alone where the gates read only that (RNN, LSTM), so
# the backward step is elementwise work and one matmul.
@dataclasses.dataclass(frozen=True)
class FusedPlan:
    """What the fused scan is traced for (static, hashable): the cell, the direction, the scan's
    unroll and whether the input projection is hoisted out of the loop."""

    cell: Cell
    reverse: bool
    unroll: int
    hoist: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_scan(plan: FusedPlan, projection, w_hh, gate_params, xs, initial_carry, mask, probes):
    """The scan of `plan.cell` over time-major xs with the hand-written backward pass: (final
    carry, hs)."""
    return _fused_forward(plan, projection, w_hh, gate_params, xs, initial_carry, mask, probes)[0]


def _fused_forward(plan: FusedPlan, projection, w_hh, gate_params, xs, initial_carry, mask, probes):
    cell, hoist = plan.cell, plan.hoist
    summed = cell.sums_projections
    recurrent_product = _recurrent_product(w_hh)

    def step(carry, inputs):
        x_t, mask_t, probe_t = inputs
        xw_t = x_t if hoist else cell.project_inputs(projection, x_t)
        hw_t = recurrent_product(cell.hidden(carry))
        if summed:  # the gates read only xw_t + hw_t: keep the sum alone (its gradient is both's)
            xw_t, hw_t = xw_t + hw_t, None
        new_carry, h = finish_step(cell, carry, *_gates(cell, gate_params, carry, xw_t, hw_t), mask_t, probe_t)
        return new_carry, (h, carry, None if hoist and not summed else xw_t, hw_t)

    scanned = cell.project_inputs(projection, xs) if hoist else xs
    carry, (hs, carries, xw, hws) = jax.lax.scan(
        step, initial_carry, (scanned, mask, probes), reverse=plan.reverse, unroll=plan.unroll
    )
    xw = scanned if xw is None else xw
    return (carry, hs), (projection, w_hh, gate_params, xs, xw, mask, probes, carries, hws)


def _recurrent_product(w_hh: Array):
    """h -> h W_hh for the forward loop; from hidden size `TRANSPOSE_FROM_HIDDEN` on, from a copy
    of W_hh transposed once before the loop."""
    if w_hh.shape[0] < TRANSPOSE_FROM_HIDDEN:
        return lambda h: matmul(h, w_hh)
    w_hh_t = w_hh.T
    return lambda h: matmul_transposed(h, w_hh_t)


def _gates(cell, gate_params, carry, xw_t, hw_t):
    """`cell.gates`; `hw_t` None: `xw_t` is already the sum xw_t + hw_t (`cell.sums_projections`)."""
    return cell.gates(gate_params, carry, xw_t, 0.0 if hw_t is None else hw_t)


def _fused_backward(plan: FusedPlan, residuals, cotangents):
    cell = plan.cell
    projection, w_hh, gate_params, xs, xw, mask, probes, carries, hws = residuals
    d_final_carry, d_hs = cotangents

    def step(state, inputs):
        d_carry, d_gate_params = state
        carry, xw_t, hw_t, mask_t, probe_t, d_h = inputs

        def forward(gate_params, carry, xw_t, hw_t, probe_t):
            return finish_step(cell, carry, *_gates(cell, gate_params, carry, xw_t, hw_t), mask_t, probe_t)

        _, pullback = jax.vjp(forward, gate_params, carry, xw_t, hw_t, probe_t)
        d_params_t, d_carry, d_xw_t, d_hw_t, d_probe_t = pullback((d_carry, d_h))
        # not matmul(.., w_hh.T): that transpose would be merged with the forward pass's copy, and
        # this product is slower from the copy (measured, docs/performance.md)
        d_h_prev = matmul_transposed(d_xw_t if hw_t is None else d_hw_t, w_hh).astype(d_h.dtype)
        d_carry = jax.tree.map(jnp.add, d_carry, jax.vjp(cell.hidden, carry)[1](d_h_prev)[0])
        return (d_carry, jax.tree.map(jnp.add, d_gate_params, d_params_t)), (d_xw_t, d_hw_t, d_probe_t)

    zeros = jax.tree.map(jnp.zeros_like, gate_params)
    (d_initial_carry, d_gate_params), (d_xw, d_hw, d_probes) = jax.lax.scan(
        step,
        (d_final_carry, zeros),
        (carries, xw, hws, mask, probes, d_hs),
        reverse=not plan.reverse,
        unroll=plan.unroll,
    )
    d_hw = d_xw if d_hw is None else d_hw  # summed projections: one gradient for both
    # the weight gradients: one matmul each over all (time x batch) rows
    h_prev = cell.hidden(carries)
    accumulate = accumulation_dtype(h_prev.dtype, xs.dtype, w_hh.dtype)
    d_w_hh = jnp.einsum("tbh,tbg->hg", h_prev, d_hw.astype(h_prev.dtype), preferred_element_type=accumulate)
    d_w_xh = jnp.einsum("tbi,tbg->ig", xs, d_xw.astype(xs.dtype), preferred_element_type=accumulate)
    d_projection = {
        "W_xh": d_w_xh.astype(projection["W_xh"].dtype),
        "b": jnp.sum(d_xw, axis=(0, 1)).astype(projection["b"].dtype),
    }
    d_xs = matmul(d_xw, projection["W_xh"].T).astype(xs.dtype)
    return d_projection, d_w_hh.astype(w_hh.dtype), d_gate_params, d_xs, d_initial_carry, None, d_probes


fused_scan.defvjp(_fused_forward, _fused_backward)
