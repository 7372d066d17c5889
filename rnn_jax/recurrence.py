"""Running a cell over a whole sequence with `jax.lax.scan`.

cuDNN-style: the input projection `x_t W_xh + b` of every time step is one large matmul
computed before the scan, so the scanned body holds only the (fused) recurrent matmul
`h_{t-1} W_hh` and the gate arithmetic (from hidden size `HOIST_FROM_HIDDEN`; below it the
projection runs inside each step, measured faster on CPU). The backward pass is written by
hand (`backprop="fused"`, see `rnn_jax.fused`). Shapes are batch-major at this boundary,
`(batch, time, features)`; the scan itself runs time-major.

Variable lengths: `mask` (batch, time) or, for right-padded sequences, `lengths` (batch,)
marks the real steps. A padded step leaves the carry unchanged and outputs zeros, so the
final carry is the one at each sequence's last real step, and a `reverse` scan starts each
sequence at its own last real step (the carry passes unchanged through the padding). Left
padding works the same way: the initial carry passes unchanged to the first real step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax import backend, credit, cudnn
from rnn_jax.cells import Carry, Cell, Params, accumulation_dtype
from rnn_jax.choices import check_choice
from rnn_jax.fused import FusedPlan, finish_step, fused_scan, gate_params_of

Array = jax.Array

BACKPROPS = ("fused", "autodiff")
SCANS = ("sequential", "parallel", "cudnn")
# Measured on a 2-core CPU (benchmarks/throughput.py): hoisting the input projection out of
# the scan pays from this hidden size on; below it, the scan over a hoisted (time, batch,
# G * hidden) array is slower than a per-step projection.
HOIST_FROM_HIDDEN = 512


def _as_mask(mask: Array | None, lengths: Array | None, batch: int, time: int) -> Array | None:
    if mask is not None and lengths is not None:
        raise ValueError("pass either `mask` (batch, time) or `lengths` (batch,), not both")
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != (batch,):
            raise ValueError(f"`lengths` must have shape (batch,) = ({batch},), got {lengths.shape}")
        return jnp.arange(time)[None, :] < lengths[:, None]
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (batch, time):
            raise ValueError(f"`mask` must have shape (batch, time) = {(batch, time)}, got {mask.shape}")
        return mask.astype(bool)
    return None


def _check_carry(cell: Cell, carry: Carry, batch: int, hidden: int) -> None:
    expected = jax.eval_shape(lambda: cell.zero_carry((batch,), hidden))
    same_structure = jax.tree.structure(carry) == jax.tree.structure(expected)
    if not same_structure or any(
        jnp.shape(a) != b.shape for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(expected))
    ):
        want = jax.tree.map(lambda s: s.shape, expected)
        got = jax.tree.map(jnp.shape, carry)
        raise ValueError(
            f"initial_carry for cell {cell.name!r} must have shapes {want} (batch={batch}, hidden={hidden}), got {got}"
        )


def cast_params(params: Params, dtype) -> Params:
    """Parameters in the compute dtype (e.g. bfloat16): the matmuls run in it, while
    `cells.matmul` accumulates in float32, so carries and gate arithmetic stay float32."""
    return jax.tree.map(lambda p: p.astype(dtype), params)


def time_major(tree):
    """(batch, time, ...) <-> (time, batch, ...) for every leaf: the layout `lax.scan` runs over."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How a cell runs over time: the same for every call of a layer (hashable, static).

    reverse: run from the last step to the first (outputs stay in input order).
    unroll: time steps per scan iteration (`jax.lax.scan(unroll=...)`).
    remat: rematerialisation for long sequences (less memory, more compute). True: each step's
      gate activations are recomputed in the backward pass instead of stored (`jax.checkpoint`
      on the step; the hoisted input projection is kept). An int K >= 2: only every K-th carry
      is kept, and the backward pass recomputes one K-step segment at a time, input projection
      included (activation memory ~ T/K + K steps instead of T; K ~ sqrt(T) needs the least).
    compute_dtype: dtype of the matmuls (e.g. jnp.bfloat16); None keeps the params' dtype.
    backprop: ``"fused"`` (a hand-written backward pass, with dL/dW_hh one matmul over all
      steps; cells with `fused_recurrence`, not with ``remat=True``) or ``"autodiff"`` (JAX
      differentiates the scan: the reference the tests compare with).
    hoist_inputs: the input projection of all steps as one matmul before the scan (True) or
      one per step inside it (False); None: hoisted from hidden size `HOIST_FROM_HIDDEN` on
      (measured on CPU: below it, the per-step form is faster).
    scan: ``"sequential"`` (`jax.lax.scan`, step by step; for cells linear in the carry,
      `cell.linear`, every step's gates are computed before the scan, which runs only the
      multiply-add carry_t = a_t * carry_(t-1) + b_t, unless `remat`), ``"parallel"`` (for
      cells linear in the carry: a `jax.lax.associative_scan` over time, the same results in
      O(log T) sequential depth) or ``"cudnn"`` (the standard LSTM as one cuDNN call on a GPU,
      `rnn_jax.cudnn`; a call with `probes` runs the sequential scan, as cuDNN has no entry
      between steps).
    """

    reverse: bool = False
    unroll: int = 1
    remat: bool | int = False
    compute_dtype: Any = None
    backprop: str = "fused"
    hoist_inputs: bool | None = None
    scan: str = "sequential"

    def __post_init__(self):
        check_choice("backprop", self.backprop, BACKPROPS)
        check_choice("scan", self.scan, SCANS)
        if not isinstance(self.remat, (bool, int)) or self.remat < 0:
            raise ValueError(f"remat must be a bool or a segment length >= 1, got {self.remat!r}")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How one call runs, resolved once from its options, cell and size (`resolve_scan`):
    `kind` "cudnn" | "parallel" (associative scan) | "linear" (a scan of the multiply-add) |
    "steps" (a scan of the cell's step) | "segments" (steps, rematerialised `segment` at a time)."""

    kind: str
    hoist: bool = False
    segment: int | None = None
    remat_steps: bool = False


def resolve_scan(cell: Cell, options: ScanOptions, hidden: int, *, probed: bool) -> Strategy:
    """The strategy of a call of `run` (cf. recurrentgemma's `resolve_scan_type`): checked once,
    here, so that `run` only dispatches."""
    if options.scan == "parallel" and not cell.linear:
        raise ValueError(
            f"a parallel scan needs a recurrence linear in the carry; {cell.name} is not (use scan='sequential')"
        )
    if options.scan == "cudnn" and not cudnn.supports(cell):
        raise ValueError(f"scan='cudnn' runs the standard LSTM only, not {cell.name!r} {getattr(cell, 'variant', '')}")
    # with probes, or inside a measurement (`backend.analysis`): the sequential scan (cuDNN has no
    # entry between steps, no batching rule and runs TF32 inside)
    if options.scan == "cudnn" and not probed and not backend.in_analysis():
        return Strategy("cudnn")
    remat, segment = bool(options.remat), options.remat if options.remat > 1 else None
    if options.scan == "parallel" or (cell.linear and not remat):  # nothing to recompute: remat does not apply
        return Strategy("parallel" if options.scan == "parallel" else "linear")
    hoist = hidden >= HOIST_FROM_HIDDEN if options.hoist_inputs is None else options.hoist_inputs
    if segment is None:
        return Strategy("steps", hoist=hoist, remat_steps=remat)
    return Strategy("segments", hoist=hoist, segment=segment)


def run(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    initial_carry: Carry | None = None,
    mask: Array | None = None,
    lengths: Array | None = None,
    probes: Carry | None = None,
    options: ScanOptions | None = None,
    **fields,
) -> tuple[Carry, Array]:
    """Run `cell` over `xs`, (batch, time, input), as `options` say (`ScanOptions`; its fields
    may be given as keywords instead: ``run(cell, params, xs, reverse=True)``).

    `params`: the cell's (`cell.init(...)`). `initial_carry`: the carry at t = 0 (zeros if
    None), e.g. (batch, hidden), for the LSTM a pair of them. `mask` (batch, time): True at real
    steps (padding on either side); or `lengths` (batch,): real steps of right-padded sequences.
    `probes`: gradient-flow probes shaped like the carry with a time axis (each leaf (batch,
    time, hidden); `cell.zero_carry((batch, time), hidden)`), added to the carry right after
    each step. Pass zeros: the values do not change, and the gradient of a loss with respect to
    `probes[:, t]` is dL/d(carry_t) (dL/dh_t, and dL/dc_t for the LSTM) through every path,
    recurrent and output. See `rnn_jax.gradflow`.

    Returns (final_carry, ys): the carry after the last real step of each sequence, and the
    hidden states h_t, (batch, time, hidden), zero at padded steps.
    """
    options = dataclasses.replace(options or ScanOptions(), **fields)
    if credit.forward_mode_on():
        options = dataclasses.replace(options, backprop="autodiff")
    xs, mask, initial_carry, hidden = _checked_inputs(cell, params, xs, initial_carry, mask, lengths)
    strategy = resolve_scan(cell, options, hidden, probed=probes is not None)
    if options.compute_dtype is not None:
        params = cast_params(params, options.compute_dtype)
    if strategy.kind == "cudnn":
        return cudnn.run_lstm(params, xs, initial_carry, mask, reverse=options.reverse)
    inputs = (time_major(xs), None if mask is None else mask.T, time_major(probes))

    def over_time(carry, xs, mask, probes):  # the strategy, on time-major inputs
        if strategy.kind in ("parallel", "linear"):
            return _linear_scan(cell, params, carry, xs, mask, probes, options, strategy.kind == "parallel")
        scan_steps = functools.partial(_scan_steps, cell, params, options=options, strategy=strategy)
        if strategy.kind == "steps":
            return scan_steps(carry, xs, mask, probes)
        checkpointed = lambda c, block: jax.checkpoint(scan_steps)(c, *block)  # noqa: E731
        return _in_blocks(checkpointed, carry, xs, mask, probes, length=strategy.segment, reverse=options.reverse)

    params = credit.frozen_where_asked(params)
    if credit.influence():  # the parameters' gradient forward in time (`rnn_jax.rtrl`)
        return credit.forward_in_time(cell, params, initial_carry, *inputs[:2], options.reverse)
    truncate = credit.truncation()
    if truncate and truncate < xs.shape[1]:  # truncated BPTT: no gradient into a block's first carry
        cut = lambda c, block: over_time(jax.lax.stop_gradient(c), *block)  # noqa: E731
        carry, hs = _in_blocks(cut, initial_carry, *inputs, length=truncate, reverse=options.reverse)
    else:
        carry, hs = over_time(initial_carry, *inputs)
    return carry, jnp.swapaxes(hs, 0, 1)


def _checked_inputs(cell, params, xs, initial_carry, mask, lengths):
    """(xs, mask, initial carry, hidden size) of a call of `run`, each checked against the cell."""
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(
            f"xs must be (batch, time, features), got shape {xs.shape} (ndim {xs.ndim}); "
            "add a batch axis with xs[None] for a single sequence"
        )
    input_size, hidden = cell.sizes(params)
    batch, time, features = xs.shape
    if features != input_size:
        raise ValueError(f"xs has {features} features per step but the cell expects input_size={input_size}")
    mask = _as_mask(mask, lengths, batch, time)
    if initial_carry is None:  # in the parameters' precision: float64 parameters carry float64 states
        initial_carry = cell.zero_carry((batch,), hidden, accumulation_dtype(*jax.tree.leaves(params)))
    else:
        _check_carry(cell, initial_carry, batch, hidden)
    return xs, mask, initial_carry, hidden


def _scan_steps(cell, params, carry, xs, mask, probes, options: ScanOptions, strategy: Strategy):
    """The recurrence over time-major inputs xs (time, batch, input): the input projection of
    all steps as one matmul before the scan (`hoist`) or one per step inside it, then the scan
    (with the hand-written backward pass where it applies)."""
    hoist = strategy.hoist
    if options.backprop == "fused" and cell.fused_recurrence and not strategy.remat_steps:
        plan = FusedPlan(cell, options.reverse, options.unroll, hoist)
        projection = {"W_xh": params["W_xh"], "b": params["b"]}
        return fused_scan(plan, projection, params["W_hh"], gate_params_of(params), xs, carry, mask, probes)

    def step(carry, inputs):
        x_t, mask_t, probe_t = inputs
        xw_t = x_t if hoist else cell.project_inputs(params, x_t)
        output = functools.partial(cell.output, params, xw_t=xw_t)
        return finish_step(cell, carry, *cell.recur(params, carry, xw_t), mask_t, probe_t, output)

    if strategy.remat_steps:
        step = jax.checkpoint(step)
    xs = cell.project_inputs(params, xs) if hoist else xs  # (time, batch, G * hidden)
    return jax.lax.scan(step, carry, (xs, mask, probes), reverse=options.reverse, unroll=options.unroll)


def _in_blocks(scan, carry, xs, mask, probes, *, length, reverse):
    """`scan(carry, (xs, mask, probes))` over consecutive blocks of `length` steps, the carry
    passed from block to block: with `jax.checkpoint`, the backward pass keeps only the carry
    between blocks and recomputes one block at a time (remat segments); with a stop-gradient on
    the carry, truncated BPTT. Time is padded to a multiple of `length` with masked steps,
    which leave the carry unchanged."""
    time, batch = xs.shape[:2]
    padding = -time % length
    if padding or mask is None:
        mask = jnp.ones((time, batch), bool) if mask is None else mask
        pad = lambda a: jnp.pad(a, [(0, padding)] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
        xs, mask, probes = pad(xs), pad(mask), jax.tree.map(pad, probes)
    split = lambda a: a.reshape(-1, length, *a.shape[1:])  # noqa: E731
    carry, hs = jax.lax.scan(scan, carry, jax.tree.map(split, (xs, mask, probes)), reverse=reverse)
    return carry, hs.reshape(-1, *hs.shape[2:])[:time]


def _linear_scan(cell, params, carry, xs, mask, probes, options: ScanOptions, parallel: bool):
    """A recurrence linear in the carry over time-major inputs, carry_t = a_t * carry_(t-1) + b_t:
    the coefficients (a_t, b_t) of all steps at once (nothing but a multiply-add is left inside
    the loop), then the recurrence, `parallel`: as one `jax.lax.associative_scan` over the pairs,
    (a, b) then (a', b') is (a' a, a' b + b'), O(log T) sequential depth; else as a `lax.scan` of
    the multiply-add. Probes add to b_t; a padded step is (identity, 0); the initial carry is
    folded into the first step's b. Same results as the step-by-step scan of `cell.recur`."""
    if options.reverse:  # the scan runs over time reversed; outputs are returned in input order
        flip = lambda tree: jax.tree.map(lambda v: v[::-1], tree)  # noqa: E731
        carry, hs = _linear_scan(
            cell, params, carry, *flip((xs, mask, probes)), dataclasses.replace(options, reverse=False), parallel
        )
        return carry, hs[::-1]
    xw = cell.project_inputs(params, xs)  # (time, batch, G * hidden)
    a, b = cell.coefficients(params, xw)
    if probes is not None:
        b = jax.tree.map(jnp.add, b, probes)
    if mask is not None:
        keep = mask[..., None]
        a = jax.tree.map(lambda v, one: jnp.where(keep, v, one), a, cell.identity(a))
        b = jax.tree.map(lambda v: jnp.where(keep, v, jnp.zeros_like(v)), b)
    first = lambda tree: jax.tree.map(lambda v: v[0], tree)  # noqa: E731
    b0 = jax.tree.map(jnp.add, cell.multiply(first(a), carry), first(b))
    b = jax.tree.map(lambda v, v0: v.at[0].set(v0), b, b0)
    multiply_add = lambda a, x, b: jax.tree.map(jnp.add, cell.multiply(a, x), b)  # noqa: E731

    if parallel:

        def compose(earlier, later):
            (a1, b1), (a2, b2) = earlier, later
            return cell.multiply(a2, a1), multiply_add(a2, b1, b2)

        _, carries = jax.lax.associative_scan(compose, (a, b))
    else:

        def step(carry, coefficients):
            a_t, b_t = coefficients
            carry = multiply_add(a_t, carry, b_t)
            return carry, carry

        zero = jax.tree.map(jnp.zeros_like, carry)
        _, carries = jax.lax.scan(step, zero, (a, b), unroll=options.unroll)
    hs = cell.output(params, carries, xw)
    if mask is not None:
        hs = jnp.where(mask[..., None], hs, jnp.zeros_like(hs))
    return jax.tree.map(lambda v: v[-1], carries), hs


def run_bidirectional(
    cell: Cell,
    params: tuple[Params, Params],
    xs: Array,
    *,
    initial_carry: tuple[Carry, Carry] | None = None,
    probes: tuple[Carry, Carry] | None = None,
    mask: Array | None = None,
    lengths: Array | None = None,
    options: ScanOptions = ScanOptions(),
) -> tuple[tuple[Carry, Carry], Array]:
    """A forward and a reverse pass over `xs` with the (forward, backward) `params`, outputs
    concatenated on the feature axis.

    Returns ((final carry forward, final carry backward), ys: (batch, time, 2 * hidden)).
    With `mask`/`lengths`, the backward pass of each sequence starts at its last real step.
    `initial_carry` and `probes` are (forward, backward) pairs; the rest as in `run`.
    """
    params_forward, params_backward = params
    carry_fw, carry_bw = (None, None) if initial_carry is None else initial_carry
    probes_fw, probes_bw = (None, None) if probes is None else probes
    given = dict(mask=mask, lengths=lengths)
    carry_fw, ys_fw = run(cell, params_forward, xs, initial_carry=carry_fw, probes=probes_fw, options=options, **given)
    backward = dataclasses.replace(options, reverse=True)
    carry_bw, ys_bw = run(
        cell, params_backward, xs, initial_carry=carry_bw, probes=probes_bw, options=backward, **given
    )
    return (carry_fw, carry_bw), jnp.concatenate([ys_fw, ys_bw], axis=-1)
