"""Real-time recurrent learning (Williams & Zipser 1989) for any cell: the influence of the
parameters on the state, M_t = d carry_t / d theta, carried forward through the sequence,

    M_t = (d f / d carry_(t-1)) M_(t-1) + d f / d theta,          carry_t = f(carry_(t-1), x_t; theta)

and the gradient summed online, dL/d theta = sum_t g_t . (d y_t / d theta + (d y_t / d carry_(t-1)) M_(t-1))
+ g_carry_T . M_T, with g_t the cotangent of the step's output y_t and g_carry_T that of the final
carry. Forward mode with the cell's own step (`cell.step`): one Jacobian-vector product per
parameter (vmapped), memory O(batch x state x parameters), no storage over time.

Used by `recurrence.run` under the `rtrl` learning rule (`rnn_jax.learning_rules`): the layer's
own parameters get this gradient (exact: equal to BPTT's); its inputs get the immediate, spatial
credit of each step only (g_t through d y_t / d x_t), and the initial carry none, as in online
learning (Zucchet et al. 2023's `online_full`). The rule propagates no state gradient through
time, so the probes of the gradient-flow profile get none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rnn_jax.cells import Cell

MEMORY_LIMIT = 2 * 2**30  # bytes of influence an RTRL layer may hold (the refusal's limit)


def influence_bytes(cell: Cell, params, batch: int, hidden: int) -> int:
    """Bytes of the influence M of one layer: batch x state size x parameters, float32 or the
    parameters' width."""
    flat, _ = ravel_pytree(params)
    return batch * cell.state_size(hidden) * flat.size * flat.dtype.itemsize


def check_memory(cell: Cell, params, batch: int, hidden: int) -> None:
    needed = influence_bytes(cell, params, batch, hidden)
    if needed > MEMORY_LIMIT:
        raise ValueError(
            f"--gradient rtrl: the influence of a {cell.name} layer of {hidden} units on a batch of {batch} takes "
            f"{needed / 2**30:.1f} GiB (batch x state x parameters), over the {MEMORY_LIMIT / 2**30:.0f} GiB limit; "
            "use a smaller --hidden or --batch, or snap1 / truncated:K"
        )


def rtrl_run(cell: Cell, params, xs, initial_carry, keep, snap: bool = False):
    """(final carry, ys) of `cell` over time-major `xs` (time, batch, input) from `initial_carry`,
    `keep` (time, batch) 1.0 at real steps, 0.0 at padding, differentiated by RTRL (see the
    module's docstring); `snap`: SnAp-1 (Menick et al. 2021), the influence kept only where one
    step of the cell's equations lets a parameter touch a state unit (`snap1_pattern`)."""

    @jax.custom_vjp
    def run(params, xs, initial_carry, keep):
        return _forward(cell, params, xs, initial_carry, keep)

    def forward(params, xs, initial_carry, keep):
        return run(params, xs, initial_carry, keep), (params, xs, initial_carry, keep)

    def backward(residuals, cotangents):
        params, xs, initial_carry, keep = residuals
        g_carry, g_ys = cotangents
        grads = _rtrl_gradients(cell, params, xs, initial_carry, keep, (g_ys, g_carry), snap)
        return (*grads, jnp.zeros_like(keep))

    run.defvjp(forward, backward)
    return run(params, xs, initial_carry, keep)


def _step(cell, params, carry, x_t, keep):
    """One step over a batch, a padded one (keep 0) leaving the carry and giving zeros."""
    new, y = cell.step(params, carry, x_t)
    real = keep[:, None] > 0
    held = jax.tree.map(lambda n, o: jnp.where(real, n, o), new, carry)
    return held, jnp.where(real, y, jnp.zeros_like(y))


def _forward(cell, params, xs, carry, keep):
    def step(carry, inputs):
        return _step(cell, params, carry, *inputs)

    return jax.lax.scan(step, carry, (xs, keep))


def snap1_pattern(cell: Cell, params, carry, x_t) -> jax.Array:
    """(state, parameters) True where parameter p reaches state unit i in one step: the
    nonzero pattern of d carry_t / d theta at a random point (random parameters, state and
    input: no accidental zero, as an input that is exactly 0 would make in the data), i.e. the
    pattern the cell's equations fix, taken per unit (`Cell.state_units`: a complex unit's
    real and imaginary parts together). Computed once, at trace time."""
    with jax.ensure_compile_time_eval():
        theta, unravel_params = ravel_pytree(params)
        c, unravel_carry = ravel_pytree(jax.tree.map(lambda a: a[0], carry))
        keys = jax.random.split(jax.random.key(0), 3)
        point = [jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, (theta, c, x_t[0]))]

        def new_carry(theta, c, x):
            one = jax.tree.map(lambda a: a[None], unravel_carry(c))
            new, _ = cell.step(unravel_params(theta), one, x[None])
            return ravel_pytree(jax.tree.map(lambda a: a[0], new))[0]

        reaches = np.asarray(jax.jacfwd(new_carry)(*point) != 0)
    units = cell.state_units(cell.sizes(params)[1])  # a unit's numbers share what reaches any of them
    by_unit = np.zeros((units.max() + 1, reaches.shape[1]), bool)
    np.logical_or.at(by_unit, units, reaches)
    return jnp.asarray(by_unit[units])


def _rtrl_gradients(cell, params, xs, initial_carry, keep, cotangents, snap: bool):
    """(d params, d xs, d initial carry) by RTRL (or SnAp-1), the sequence replayed forward
    with M."""
    g_ys, g_carry = cotangents
    theta, unravel_params = ravel_pytree(params)
    one_carry = jax.tree.map(lambda c: c[0], initial_carry)
    _, unravel_carry = ravel_pytree(one_carry)
    flat_carry = jax.vmap(lambda c: ravel_pytree(c)[0])
    pattern = snap1_pattern(cell, params, initial_carry, xs[0]) if snap else None

    def step_flat(theta, c, x_t, keep):  # one sequence: (state,) -> ((state,), y)
        carry = jax.tree.map(lambda a: a[None], unravel_carry(c))
        new, y = _step(cell, unravel_params(theta), carry, x_t[None], keep[None])
        return ravel_pytree(jax.tree.map(lambda a: a[0], new))[0], y[0]

    def one(c, m, x_t, keep, g_y):  # one sequence's step: the new carry and influence, gradient parts
        def along(dtheta, dc):  # the new carry's tangent along (dtheta, dc)
            return jax.jvp(lambda t, s: step_flat(t, s, x_t, keep)[0], (theta, c), (dtheta, dc))[1]

        new = step_flat(theta, c, x_t, keep)[0]
        dnew = jax.vmap(along, in_axes=(0, 1), out_axes=1)(jnp.eye(theta.size, dtype=theta.dtype), m)
        dnew = dnew if pattern is None else jnp.where(pattern, dnew, 0)  # SnAp-1: the immediate pattern
        _, pull = jax.vjp(lambda t, s, x: step_flat(t, s, x, keep)[1], theta, c, x_t)
        g_theta, g_c, g_x = pull(g_y)
        return new, dnew, g_theta + g_c @ m, g_x

    def scan_step(state, inputs):
        c, m, grad = state
        new, dnew, g_theta, g_x = jax.vmap(one)(c, m, *inputs)
        return (new, dnew, grad + g_theta.sum(0)), g_x

    c0 = flat_carry(initial_carry)
    m0 = jnp.zeros((*c0.shape, theta.size), theta.dtype)
    (_, m_T, grad), g_xs = jax.lax.scan(scan_step, (c0, m0, jnp.zeros_like(theta)), (xs, keep, g_ys))
    grad = grad + jnp.einsum("bs,bsp->p", flat_carry(g_carry), m_T)
    return unravel_params(grad), g_xs, jax.tree.map(jnp.zeros_like, initial_carry)
