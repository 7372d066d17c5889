"""Why gradients vanish: the spectrum of the state-to-state Jacobians and the dynamics of the
gates, measured on device along a batch's real trajectory.

The gradient-flow profile (`rnn_jax.gradflow`) is one projection of the product of Jacobians
J_T ... J_{t+1}, J_t = d carry_t / d carry_{t-1} (the full carry: (c, h) for the LSTM). Its
whole spectrum is summarised by the Lyapunov exponents lambda_1 >= ... >= lambda_K (nats per
step): the growth rates of K orthogonal directions under the product. The standard QR method
propagates an orthonormal (carry, K) frame Q: at every step V = J_t Q (K Jacobian-vector
products, `jax.linearize` under `vmap`, never a dense Jacobian of the sequence), Q R = V, and
lambda_i is the time average of ln |R_ii| (the local exponents) after a short transient. Each
sequence of the batch has its own trajectory and frame; the exponents are averaged over the
batch, and their spread over the sequences (independent finite-time estimates) gives the
standard error that says whether T steps were enough to converge (`lyapunov_stderr`). The
frame's columns at the last step are the K leading Lyapunov (Gram-Schmidt) vectors; their
participation ratio (sum v_i^2)^2 / sum v_i^4 counts the state coordinates each direction
spreads over (1: one unit; the carry's size: all alike).

  lambda_1 < 0     every direction is forgotten: the gradient vanishes at rate lambda_1 or faster;
  lambda_i ~ 0     a direction the recurrence carries without loss (memory);
  exp(T (lambda_1 - lambda_K))   the condition number of the T-step Jacobian (restricted to
                   the K leading directions).

Gate statistics over batch and time, per gate (LSTM i, f, o; GRU r, z): the mean and the
saturated fractions (< 0.05, > 0.95), and the time constants of the additive update's keep gate
(LSTM f, GRU 1 - z), in steps: the mean of -1 / ln(keep) (heavy-tailed), -1 / ln(mean keep), and
each unit's -1 / ln(its mean keep) as quantiles over units (median, 90th percentile, max): see
`time_constants`. A table or plot names the one it shows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnn_jax import backend
from rnn_jax.cells import Cell, Params, accumulation_dtype
from rnn_jax.layers import param_values
from rnn_jax.measurements import Context, builtin

Array = jax.Array
SATURATION = 0.05  # a gate below this, or above 1 - this, counts as saturated
KEEP_CLIP = 1e-6  # keep gates clipped to [KEEP_CLIP, 1 - KEEP_CLIP] for the time constant


def default_transient(time: int) -> int:
    """Steps left out of the time average while the frame aligns: a tenth of the sequence, at most 10."""
    return min(10, time // 10)


@backend.traced_as_analysis
def layer_dynamics(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    k: int = 0,
    transient: int | None = None,
    initial_carry=None,
    frame: Array | None = None,
) -> dict:
    """The Lyapunov spectrum (`k` leading exponents, descending; none for k = 0) and the gate
    statistics of one recurrent layer over inputs xs: (batch, time, input).

    `frame`: the initial orthonormal (carry size, k) frame (default: a fixed random one).

    Returns, averaged over the batch: ``lyapunov`` (k,); ``lyapunov_stderr`` (k,), the standard
    error of that mean from the spread of the sequences' own exponents (each sequence is an
    independent finite-time estimate: a large error says T is too short to converge);
    ``local_spread`` (k,), the standard deviation over steps of the local exponents ln|R_ii|;
    ``participation_ratio`` (k,), of each Lyapunov (Gram-Schmidt) vector at the last step,
    (sum v_i^2)^2 / sum v_i^4: how many state coordinates carry that direction; ``gates`` and
    ``time_constant`` for cells with gates.
    """
    transient = default_transient(xs.shape[1]) if transient is None else transient
    if not 0 <= transient < xs.shape[1]:
        raise ValueError(f"the transient must be in [0, time = {xs.shape[1]}), got {transient}")
    local, vectors, stats = lyapunov_vectors(cell, params, xs, k=k, initial_carry=initial_carry, frame=frame)
    counted = local[:, transient:]
    per_sequence = jnp.mean(counted, axis=1)  # (batch, k): each sequence's finite-time exponents
    order = jnp.argsort(-jnp.mean(per_sequence, axis=0))
    batch = xs.shape[0]
    stderr = jnp.std(per_sequence, axis=0) / jnp.sqrt(max(batch - 1, 1)) if batch > 1 else jnp.full((k,), jnp.nan)
    return {
        "lyapunov": jnp.mean(per_sequence, axis=0)[order],
        "lyapunov_stderr": stderr[order],
        "local_spread": jnp.mean(jnp.std(counted, axis=1), axis=0)[order],
        "participation_ratio": jnp.mean(1.0 / jnp.sum(vectors**4, axis=1), axis=0)[order],
        **jax.tree.map(jnp.mean, stats),
    }


def lyapunov_vectors(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    k: int,
    initial_carry=None,
    frame: Array | None = None,
):
    """The QR method along each sequence of xs (batch, time, input): (local exponents ln|R_ii|
    at every step, (batch, time, k); the K leading Lyapunov (Gram-Schmidt) vectors at the last
    step, orthonormal columns of (batch, carry size, k); the gate statistics, (batch, time) per
    step, and the keep gate's time constants over the whole trajectory). The
    exponents are the time averages of the local ones after a transient (`layer_dynamics`)."""
    batch = xs.shape[0]
    hidden = cell.sizes(params)[1]
    if initial_carry is None:
        initial_carry = cell.zero_carry((batch,), hidden, accumulation_dtype(*jax.tree.leaves(params)))
    size = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], initial_carry))[0].size
    if not 0 <= k <= size:
        raise ValueError(f"the spectrum has at most {size} exponents (the carry's size), got k = {k}")
    if frame is None:  # a fixed random orthonormal frame: no direction of the state is favoured
        frame = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (size, k), accumulation_dtype(xs.dtype)))[0]

    def sequence(xs_row, carry):
        _, unravel = ravel_pytree(carry)
        xws = cell.project_inputs(params, xs_row)  # (time, G * hidden)

        def step(state, xw_t):
            flat, q = state
            carry = unravel(flat)
            new_flat, jvp = jax.linearize(lambda f: ravel_pytree(cell.recur(params, unravel(f), xw_t)[0])[0], flat)
            growth = jnp.zeros((0,), q.dtype)
            if k:
                q, r = jnp.linalg.qr(jax.vmap(jvp, in_axes=1, out_axes=1)(q))
                growth = jnp.log(jnp.maximum(jnp.abs(jnp.diagonal(r)), jnp.finfo(r.dtype).tiny))
            gates = cell.gate_values(params, carry, xw_t)
            return (new_flat, q), (growth, gate_statistics(gates), cell.keep_gate(gates))

        (_, q), (local, stats, keep) = jax.lax.scan(step, (ravel_pytree(carry)[0], frame), xws)
        return local, q, stats, keep

    local, vectors, stats, keep = jax.vmap(sequence)(xs, initial_carry)
    if keep is not None:  # (batch, time, hidden): the units' time constants are of the whole trajectory
        stats.update(time_constants(keep))
    return local, vectors, stats


def gate_statistics(gates: dict[str, Array]) -> dict:
    """Means over units of one step's gates: value and fractions below / above the saturation
    thresholds (equal counts at every step: their mean over steps is the mean over the trajectory)."""
    return {
        "gates": {
            name: {"mean": jnp.mean(g), "low": jnp.mean(g < SATURATION), "high": jnp.mean(g > 1 - SATURATION)}
            for name, g in gates.items()
        }
    }


def time_constants(keep: Array) -> dict:
    """The keep gate's time constants over a trajectory, keep (..., hidden) (e.g. (batch, time,
    hidden)): ``time_constant``, the mean over every unit, sequence and step of -1 / ln(keep)
    (heavy-tailed: one saturated float32 gate gives ~1e6); ``time_constant_of_mean_keep``,
    -1 / ln(the mean keep over everything); and the distribution over units of each unit's
    -1 / ln(its keep averaged over all the leading axes): ``time_constant_median``, ``_p90``,
    ``_max`` (the few slow units that carry a long memory). One quantile over units of
    per-unit averages, not an average of per-step quantiles: with input-dependent gates the two
    differ by orders of magnitude."""
    tau = lambda k: -1.0 / jnp.log(jnp.clip(k, KEEP_CLIP, 1 - KEEP_CLIP))  # noqa: E731
    by_unit = tau(jnp.mean(keep.reshape(-1, keep.shape[-1]), axis=0))
    return {
        "time_constant": jnp.mean(tau(keep)),
        "time_constant_of_mean_keep": tau(jnp.mean(keep)),
        "time_constant_median": jnp.median(by_unit),
        "time_constant_p90": jnp.quantile(by_unit, 0.9),
        "time_constant_max": jnp.max(by_unit),
    }


@backend.traced_as_analysis
def model_dynamics(
    model, batch: dict, *, k: int = 0, transient: int | None = None, initial_carries=None
) -> dict[str, dict]:
    """`layer_dynamics` of every recurrent layer of a `SequenceModel` on `batch`, each layer on the
    outputs of the one below (the directions of a bidirectional layer apart: ``layer0/forward``,
    ``layer0/backward``); keyed like the gradient-flow profiles; `k` at most the carry's size. Masks are not read: the
    trajectory is that of the whole window (from `initial_carries`, each layer's, if given)."""
    xs = model.rnn.prepare(model.stack_inputs(batch))
    initial_carries = [None] * len(model.rnn.layers) if initial_carries is None else initial_carries
    results = {}
    for i, (layer, carry) in enumerate(zip(model.rnn.layers, initial_carries)):
        inputs = layer.recurrence_inputs(xs)
        directions = [
            ("forward", layer.forward, inputs, carry if not layer.bidirectional or carry is None else carry[0])
        ]
        if layer.bidirectional:
            directions.append(("backward", layer.backward, inputs[:, ::-1], None if carry is None else carry[1]))
        for direction, params, inputs, start in directions:
            key = f"layer{i}" + (f"/{direction}" if layer.bidirectional else "")
            size = ravel_pytree(layer.cell.zero_carry((), layer.hidden_size))[0].size
            results[key] = layer_dynamics(
                layer.cell, param_values(params), inputs, k=min(k, size), transient=transient, initial_carry=start
            )
        xs = layer(xs, initial_carry=carry)[1]
    return results


@builtin("dynamics", key="dynamics")
def dynamics(ctx: Context) -> dict | None:
    """Each recurrent layer's `ctx.spectrum` leading Lyapunov exponents (none with --spectrum 0)
    and gate statistics on the step's batch, before the update (`model_dynamics`); None for a
    model that does not expose its stack's inputs (an encoder-decoder)."""
    if not hasattr(ctx.model, "stack_inputs"):
        return None
    return model_dynamics(ctx.model, ctx.batch, k=ctx.spectrum or 0, initial_carries=ctx.initial_carries)
