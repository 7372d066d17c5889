"""How a recurrence assigns credit, set at trace time: every `rnn_jax.recurrence.run` traced
inside one of these contexts follows it (the learning rules of `rnn_jax.learning_rules` are
made of them; `rnn_jax.curvature` uses `forward_mode`).

    truncated(K)                     the gradient stopped at every K-th state (blocks of K steps)
    real_time_recurrent_learning(i)  the parameters' gradient forward in time (`rnn_jax.rtrl`;
                                     i: rtrl, snap1, snap2 or uoro)
    drawing_from(key)                where a rule that draws random numbers (UORO) draws them
    frozen(which)                    the cell parameters `which(path)` picks get no gradient
    forward_mode()                   every recurrence differentiable by `jax.jvp`
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp

from rnn_jax import rtrl

_TRUNCATE = contextvars.ContextVar("rnn_jax_truncate", default=None)
_RTRL = contextvars.ContextVar("rnn_jax_rtrl", default=None)
_DRAWS = contextvars.ContextVar("rnn_jax_draws", default=None)
_FROZEN = contextvars.ContextVar("rnn_jax_frozen", default=None)
_FORWARD_MODE = contextvars.ContextVar("rnn_jax_forward_mode", default=False)


@contextlib.contextmanager
def forward_mode():
    """Inside, every `run` traced can be differentiated in forward mode (`jax.jvp`): JAX's own
    backward pass instead of the hand-written one, a custom VJP that forward mode cannot enter
    (`rnn_jax.curvature.sensitivity`). A trace-time setting."""
    token = _FORWARD_MODE.set(True)
    try:
        yield
    finally:
        _FORWARD_MODE.reset(token)


@contextlib.contextmanager
def frozen(which):
    """Inside, every `run` traced passes each of the cell's parameters for which `which(path)`
    (its pytree path in the cell's parameters) is true through a stop-gradient: they get no
    gradient (the `spatial` learning rule's recurrent weights). A trace-time setting."""
    token = _FROZEN.set(which)
    try:
        yield
    finally:
        _FROZEN.reset(token)


@contextlib.contextmanager
def real_time_recurrent_learning(influence: str = "rtrl"):
    """Inside, every `run` traced is differentiated forward in time (`rnn_jax.rtrl`; `influence`:
    "rtrl" exact, "snap1" / "snap2" SnAp-1 / -2, "uoro" UORO, which draws from `drawing_from`'s key): its
    parameters' gradient forward in time, its inputs' spatially (no credit through time to what
    is upstream). A trace-time setting, as `truncated`."""
    token = _RTRL.set(influence)
    try:
        yield
    finally:
        _RTRL.reset(token)


@contextlib.contextmanager
def drawing_from(key):
    """Inside, a learning rule that draws random numbers (UORO's signs) draws them from `key`,
    each recurrence traced its own `fold_in(key, i)` (i = 0, 1, ... in tracing order)."""
    token = _DRAWS.set([key, 0])
    try:
        yield
    finally:
        _DRAWS.reset(token)


def _next_draw():
    draws = _DRAWS.get()
    if draws is None:
        raise ValueError(
            "--gradient uoro draws random signs, and none were given: trace it inside "
            "recurrence.drawing_from(key) (learning_rule(spec, key=...); training steps do)"
        )
    draws[1] += 1
    return jax.random.fold_in(draws[0], draws[1] - 1)


def forward_in_time(cell, params, carry, xs, mask, reverse: bool):
    """`recurrence.run`'s (final carry, ys) under an influence rule: `rnn_jax.rtrl` on time-major
    `xs` and `mask`, its signs drawn where UORO draws them."""
    influence = _RTRL.get()
    keep = jnp.ones(xs.shape[:2], xs.dtype) if mask is None else mask.astype(xs.dtype)
    flip = (lambda a: a[::-1]) if reverse else (lambda a: a)  # noqa: E731
    key = _next_draw() if influence == "uoro" else None
    carry, hs = rtrl.rtrl_run(cell, params, flip(xs), carry, flip(keep), influence, key)
    return carry, jnp.swapaxes(flip(hs), 0, 1)


@contextlib.contextmanager
def truncated(every: int | None):
    """Inside, every `run` traced stops the gradient at every `every`-th state of its sequence
    (truncated BPTT in blocks of `every` steps, from the first step; the forward pass is
    unchanged; None: not truncated). A trace-time setting, as `backend.analysis`: the same
    graphdef and parameters give the truncated and the full gradient (`rnn_jax.learning_rules`)."""
    if every is not None and every < 1:
        raise ValueError(f"truncation needs K >= 1 steps, got {every}")
    token = _TRUNCATE.set(every)
    try:
        yield
    finally:
        _TRUNCATE.reset(token)


def truncation() -> int | None:
    """The block length of `truncated` in force (None: none)."""
    return _TRUNCATE.get()


def influence() -> str | None:
    """The influence rule of `real_time_recurrent_learning` in force (None: none)."""
    return _RTRL.get()


def forward_mode_on() -> bool:
    return _FORWARD_MODE.get()


def frozen_where_asked(params):
    """`params` with those `frozen` names passed through a stop-gradient (as they are without it)."""
    which = _FROZEN.get()
    if which is None:
        return params
    return jax.tree_util.tree_map_with_path(lambda path, p: jax.lax.stop_gradient(p) if which(path) else p, params)
