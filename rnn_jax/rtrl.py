"""Real-time recurrent learning (Williams & Zipser 1989) for any cell: the influence of the
parameters on the state, M_t = d carry_t / d theta, carried forward through the sequence,

    M_t = (d f / d carry_(t-1)) M_(t-1) + d f / d theta,          carry_t = f(carry_(t-1), x_t; theta)

and the gradient summed online, dL/d theta = sum_t g_t . (d y_t / d theta + (d y_t / d carry_(t-1)) M_(t-1))
+ g_carry_T . M_T, with g_t the cotangent of the step's output y_t and g_carry_T that of the final
carry. Both Jacobians of a step come from the cell's own step (`cell.step`), one pullback per
state unit (vmapped), and M is updated by one matrix product: memory O(batch x state x
parameters), no storage over time. (One pushforward per parameter instead, the forward-mode
textbook form, cost 5-20x more here: benchmarks/learning_rules.py.) For an element-wise
recurrence (the minGRU, minLSTM and LRU: d carry_t / d carry_(t-1) within units, each parameter
reaching one unit) M has one entry per parameter and unit number, and RTRL keeps only those
(`snap_layout`, exact): memory O(batch x parameters x 2 at most), a few passes a step.

Two approximations share the replay (`influence`):

    snap1  SnAp-1 (Menick et al. 2021): M kept only where one step of the cell's equations lets a
           parameter reach a state unit (`snap_layout`), stored compressed, (k, parameters) a
           sequence for k numbers a parameter reaches at most; exact for element-wise recurrences
    snap2  SnAp-2: where two steps let it (for a fully connected recurrence, every unit: RTRL;
           the rule is for sparse ones)
    uoro   UORO (Tallec & Ollivier 2017, Algorithm 1): M ~ s theta~^T, one rank-one estimate per
           sequence, updated with random signs nu each step,
               s <- rho0 (d f / d carry) s + rho1 nu,   theta~ <- theta~ / rho0 + nu^T (d f / d theta) / rho1,
               rho0 = sqrt((|theta~| + eps) / (|(d f / d carry) s| + eps)),
               rho1 = sqrt((|nu^T d f / d theta| + eps) / (|nu| + eps)),
           unbiased (E[nu nu^T] = I, and the cross terms are odd in nu) at the cost of two passes
           through the step: memory O(batch x (state + parameters))

Used by `recurrence.run` under the `rtrl` learning rule (`rnn_jax.learning_rules`): the layer's
own parameters get this gradient (exact: equal to BPTT's); its inputs get the immediate, spatial
credit of each step only (g_t through d y_t / d x_t), and the initial carry none, as in online
learning (Zucchet et al. 2023's `online_full`). The rule propagates no state gradient through
time, so the probes of the gradient-flow profile get none.
"""

from __future__ import annotations

import dataclasses

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


def rtrl_run(cell: Cell, params, xs, initial_carry, keep, influence: str = "rtrl", key=None):
    """(final carry, ys) of `cell` over time-major `xs` (time, batch, input) from `initial_carry`,
    `keep` (time, batch) 1.0 at real steps, 0.0 at padding, differentiated by RTRL or one of its
    approximations (`influence`: "rtrl", "snap1", "snap2" or "uoro", which draws its signs from `key`;
    see the module's docstring)."""
    if influence not in INFLUENCES:
        raise ValueError(f"influence {influence!r}: expected one of {', '.join(INFLUENCES)}")
    if influence == "uoro" and key is None:
        raise ValueError("uoro draws random signs: give rtrl_run a key")

    @jax.custom_vjp
    def run(params, xs, initial_carry, keep, key):
        return _forward(cell, params, xs, initial_carry, keep)

    def forward(params, xs, initial_carry, keep, key):
        return run(params, xs, initial_carry, keep, key), (params, xs, initial_carry, keep, key)

    layout = None if influence == "uoro" else snap_layout(cell, params, initial_carry, xs[0], *_snap_steps(influence))
    if layout is None and influence == "rtrl":  # dense: the influence of every parameter on every number
        check_memory(cell, params, xs.shape[1], cell.sizes(params)[1])

    def backward(residuals, cotangents):
        params, xs, initial_carry, keep, key = residuals  # (not the closure's: those are outer tracers)
        replay = _Replay(cell, params, xs, initial_carry, keep)
        if influence == "uoro":
            grads = replay.uoro(cotangents, uoro_signs(key, replay.c0.shape, xs.shape[0], replay.theta.dtype))
        else:
            grads = replay.dense(cotangents) if layout is None else replay.sparse(cotangents, layout)
        return (*grads, jnp.zeros_like(keep), None)

    run.defvjp(forward, backward)
    return run(params, xs, initial_carry, keep, jax.random.key(0) if key is None else key)


INFLUENCES = ("rtrl", "snap1", "snap2", "uoro")


def _snap_steps(influence: str) -> tuple[int, bool]:
    """(steps, exact) of the influence's layout: SnAp-n's n; RTRL's, exact only (else dense)."""
    return (1, True) if influence == "rtrl" else (int(influence.removeprefix("snap")), False)


UORO_EPSILON = 1e-7  # Tallec & Ollivier's epsilon in rho0 and rho1 (keeps them finite at s = 0)


def uoro_signs(key, carry_shape, time: int, dtype) -> jax.Array:
    """UORO's random vectors nu, (time, batch, state): independent signs +-1 (E[nu nu^T] = I)."""
    return jax.random.rademacher(key, (time, *carry_shape), dtype)


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


@dataclasses.dataclass(frozen=True)
class SparseLayout:
    """Where SnAp-1 keeps influence, stored compressed: parameter p's influence sits on the
    state numbers ``rows[:, p]`` (k of them at most; ``valid`` says which are real), M as
    (k, parameters) a sequence instead of (state, parameters). `colours` (or None): a colour
    per state number such that each parameter's rows have distinct colours, so that one
    pullback per colour gives the kept entries of d f / d theta; `element_wise`: d f / d carry
    couples only numbers of one unit, so that one pushforward per colour gives its kept
    entries too (else d f / d carry whole, one pushforward per number, and without colours d f /
    d theta whole too; a coupled cell's output must be its hidden state, whose gradient meets
    the masked influence as in Menick et al.)."""

    rows: np.ndarray
    valid: np.ndarray
    colours: np.ndarray | None
    element_wise: bool


def snap_layout(cell: Cell, params, carry, x_t, steps: int = 1, exact: bool = False) -> SparseLayout | None:
    """SnAp-n's pattern (n = `steps`): parameter p keeps influence on the state numbers it reaches
    within n steps, from the nonzero patterns of d carry_t / d theta and d carry_t / d carry_(t-1)
    at a random point (random parameters, state and input: no accidental zero, as an input that
    is exactly 0 would make in the data), i.e. the pattern the cell's equations fix, taken per
    unit (`Cell.state_units`: a complex unit's real and imaginary parts together). Computed once,
    at trace time. `exact`: only where the pattern loses nothing, the element-wise recurrences
    (d carry_t / d carry_(t-1) within units, each parameter on one unit), else None."""
    theta, unravel_params = ravel_pytree(params)
    c, unravel_carry = ravel_pytree(jax.tree.map(lambda a: a[0], carry))
    units = cell.state_units(cell.sizes(params)[1])

    def new_carry(theta, c, x):
        one = jax.tree.map(lambda a: a[None], unravel_carry(c))
        new, _ = cell.step(unravel_params(theta), one, x[None])
        return ravel_pytree(jax.tree.map(lambda a: a[0], new))[0]

    with jax.ensure_compile_time_eval():
        keys = jax.random.split(jax.random.key(0), 3)
        point = [jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, (theta, c, x_t[0]))]
        couples = np.asarray(jax.jacfwd(new_carry, argnums=1)(*point) != 0)
        element_wise = not np.any(couples & (units[:, None] != units[None, :]))
        if exact and not element_wise:
            return None
        reaches = np.asarray(jax.jacrev(new_carry)(*point) != 0)
        for _ in range(steps - 1):  # one step further through the coupling
            reaches = reaches | (couples.astype(np.int64) @ reaches.astype(np.int64) > 0)
        new, y = cell.step(
            unravel_params(point[0]), jax.tree.map(lambda a: a[None], unravel_carry(point[1])), point[2][None]
        )
    if not element_wise and not np.array_equal(np.asarray(y), np.asarray(cell.hidden(new))):
        raise ValueError(
            f"snap{steps} for the {cell.name} cell, whose units are coupled, needs its step's output to be its "
            "hidden state (SnAp meets the loss's gradient with the masked influence of the state); use rtrl or uoro"
        )
    by_unit = np.zeros((units.max() + 1, reaches.shape[1]), bool)
    np.logical_or.at(by_unit, units, reaches)  # a unit's numbers share what reaches any of them
    pattern = by_unit[units]
    element_wise = element_wise and bool(np.all(by_unit.sum(0) <= 1))
    if exact and not element_wise:
        return None
    k = max(1, int(pattern.sum(0).max()))
    order = np.argsort(~pattern, axis=0, kind="stable")[:k]  # each column's rows first, in order
    valid = np.take_along_axis(pattern, order, axis=0)
    rows = np.where(valid, order, 0)
    colours = np.full(len(units), -1)
    for position in range(k):  # a number's colour: its position among its parameters' rows
        colours[rows[position][valid[position]]] = position
    consistent = all(np.all(colours[rows[a][valid[a]]] == a) for a in range(k))
    return SparseLayout(rows, valid, colours if consistent else None, element_wise and consistent)


class _Replay:
    """The forward pass replayed one sequence at a time on flat vectors (the parameters theta,
    the carry c), yielding (d params, d xs, d initial carry) by the influence carried forward."""

    def __init__(self, cell, params, xs, initial_carry, keep):
        self.theta, self.unravel_params = ravel_pytree(params)
        _, self.unravel_carry = ravel_pytree(jax.tree.map(lambda c: c[0], initial_carry))
        self.flat_carry = jax.vmap(lambda c: ravel_pytree(c)[0])
        self.cell, self.xs, self.keep, self.initial_carry = cell, xs, keep, initial_carry
        self.c0 = self.flat_carry(initial_carry)

    def step(self, theta, c, x_t, keep):  # one sequence: (state,) -> ((state,), y)
        carry = jax.tree.map(lambda a: a[None], self.unravel_carry(c))
        new, y = _step(self.cell, self.unravel_params(theta), carry, x_t[None], keep[None])
        return ravel_pytree(jax.tree.map(lambda a: a[0], new))[0], y[0]

    def hidden(self, c):  # one sequence's flat carry -> its hidden state
        return self.cell.hidden(jax.tree.map(lambda a: a[None], self.unravel_carry(c)))[0]

    def pullback(self, c, x_t, keep):  # (new carry, pull): pull(g_new, g_y) -> (g_theta, g_c, g_x)
        (new, _), pull = jax.vjp(lambda t, s, x: self.step(t, s, x, keep), self.theta, c, x_t)
        return new, lambda g_new, g_y: pull((g_new, g_y))

    def replay(self, one, influence0, cotangents, drawn=None):
        """Scan `one(c, influence, x_t, keep, g_y, drawn_t) -> (new c, new influence, d theta,
        d x_t)` over the sequence (vmapped over the batch), `cotangents` (of the final carry, of
        the outputs), `drawn` (time, batch, ...) a rule's random numbers (None: none): (d theta
        summed, d xs, final influence)."""
        _, g_ys = cotangents

        def scan_step(state, inputs):
            c, influence, grad = state
            new, updated, g_theta, g_x = jax.vmap(one)(c, influence, *inputs)
            return (new, updated, grad + g_theta.sum(0)), g_x

        state0 = (self.c0, influence0, jnp.zeros_like(self.theta))
        (_, final, grad), g_xs = jax.lax.scan(scan_step, state0, (self.xs, self.keep, g_ys, drawn))
        return grad, g_xs, final

    def finish(self, grad, g_xs):
        return self.unravel_params(grad), g_xs, jax.tree.map(jnp.zeros_like, self.initial_carry)

    def dense(self, cotangents):
        """RTRL: M_t = J_t M_(t-1) + I_t, J and I from one pullback per state number."""
        eye = jnp.eye(self.c0.shape[-1], dtype=self.c0.dtype)

        def one(c, m, x_t, keep, g_y, _):
            new, pull = self.pullback(c, x_t, keep)
            g_theta, g_c, g_x = pull(jnp.zeros_like(new), g_y)
            immediate, jacobian, _ = jax.vmap(lambda e: pull(e, jnp.zeros_like(g_y)))(eye)
            return new, jacobian @ m + immediate, g_theta + g_c @ m, g_x

        m0 = jnp.zeros((*self.c0.shape, self.theta.size), self.theta.dtype)
        grad, g_xs, m_T = self.replay(one, m0, cotangents)
        grad = grad + jnp.einsum("bs,bsp->p", self.flat_carry(cotangents[0]), m_T)
        return self.finish(grad, g_xs)

    def sparse(self, cotangents, layout: SparseLayout):
        """SnAp-1 (exact RTRL for element-wise recurrences): M_t = pattern * (J_t M_(t-1) + I_t)
        on the pattern's entries only, (k, parameters) a sequence (`SparseLayout`)."""
        rows, valid = jnp.asarray(layout.rows), jnp.asarray(layout.valid)
        k, dtype = rows.shape[0], self.theta.dtype

        def kept(c, x_t, keep, pull, zero_y):  # J[rows[a], rows[b]] (k, k, P) and I[rows[a], p] (k, P)
            if layout.colours is None:  # all of both, one pullback per number
                eye = jnp.eye(c.shape[-1], dtype=dtype)
                full_immediate, jacobian, _ = jax.vmap(lambda e: pull(e, zero_y))(eye)
                return jacobian[rows[:, None], rows[None]], jnp.take_along_axis(full_immediate, rows, axis=0)
            colour = jnp.asarray(layout.colours[None] == np.arange(k)[:, None], dtype)
            immediate = jax.vmap(lambda u: pull(u, zero_y)[0])(colour)  # one pullback per colour
            push = lambda v: jax.jvp(lambda s: self.step(self.theta, s, x_t, keep)[0], (c,), (v,))[1]  # noqa: E731
            if layout.element_wise:  # J within units: one pushforward per colour
                return jnp.swapaxes(jax.vmap(push)(colour)[:, rows], 0, 1), immediate
            jacobian = jax.vmap(push, out_axes=1)(jnp.eye(c.shape[-1], dtype=dtype))  # (state x state, cheap)
            return jacobian[rows[:, None], rows[None]], immediate

        def one(c, m, x_t, keep, g_y, _):
            new, pull = self.pullback(c, x_t, keep)
            g_theta, g_c, g_x = pull(jnp.zeros_like(new), g_y)
            jacobian, immediate = kept(c, x_t, keep, pull, jnp.zeros_like(g_y))
            m_new = jnp.where(valid, jnp.einsum("abp,bp->ap", jacobian, m) + immediate, 0)
            if layout.element_wise:  # (exact: the same as meeting the new influence)
                return new, m_new, g_theta + jnp.sum(g_c[rows] * m, 0), g_x
            g_new = jax.vjp(self.hidden, new)[1](g_y * keep)[0]  # Menick et al.: dl_t/d carry_t . M~_t
            return new, m_new, jnp.sum(g_new[rows] * m_new, 0), g_x

        m0 = jnp.zeros((self.c0.shape[0], k, self.theta.size), dtype)
        grad, g_xs, m_T = self.replay(one, m0, cotangents)
        grad = grad + jnp.einsum("bap,bap->p", self.flat_carry(cotangents[0])[:, rows], m_T)
        return self.finish(grad, g_xs)

    def uoro(self, cotangents, signs):
        """UORO: M_t ~ s_t theta~_t^T per sequence (module docstring), `signs` nu (time, batch, state)."""

        def one(c, estimate, x_t, keep, g_y, nu):
            s, theta_t = estimate
            new, pull = self.pullback(c, x_t, keep)
            g_theta, g_c, g_x = pull(jnp.zeros_like(new), g_y)
            nu_immediate = pull(nu, jnp.zeros_like(g_y))[0]
            js = jax.jvp(lambda s_: self.step(self.theta, s_, x_t, keep)[0], (c,), (s,))[1]
            rho0 = jnp.sqrt((jnp.linalg.norm(theta_t) + UORO_EPSILON) / (jnp.linalg.norm(js) + UORO_EPSILON))
            rho1 = jnp.sqrt((jnp.linalg.norm(nu_immediate) + UORO_EPSILON) / (jnp.linalg.norm(nu) + UORO_EPSILON))
            updated = (rho0 * js + rho1 * nu, theta_t / rho0 + nu_immediate / rho1)
            updated = jax.tree.map(lambda u, o: jnp.where(keep > 0, u, o), updated, estimate)  # padding: as it was
            return new, updated, g_theta + jnp.vdot(g_c, s) * theta_t, g_x

        estimate0 = (jnp.zeros_like(self.c0), jnp.zeros((self.c0.shape[0], self.theta.size), self.theta.dtype))
        grad, g_xs, (s_T, theta_T) = self.replay(one, estimate0, cotangents, signs)
        grad = grad + jnp.einsum("bs,bs,bp->p", self.flat_carry(cotangents[0]), s_T, theta_T)
        return self.finish(grad, g_xs)
