"""Measurements inside the jitted training step, on the steps that measure the gradient flow:
the built-in ones (the gradient-flow profiles, `rnn_jax.gradflow`; the Lyapunov spectrum and
gate statistics, `rnn_jax.diagnostics`) and yours, registered and run the same way.

A measurement is a function of one `Context` (the model and its parameters, the batch, the
state gradients, the training loss as a function of the parameters, the optimiser's state)
returning a pytree of arrays:

    @register_measurement
    def curvature_along_gradient(ctx):  # g^T H g / |g|^2 of the loss on this batch
        g = jax.grad(ctx.loss)(ctx.params)
        hvp = jax.jvp(jax.grad(ctx.loss), (ctx.params,), (g,))[1]
        dot = lambda a, b: sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        return dot(g, hvp) / dot(g, g)

A function of three parameters is called as ``fn(model, batch, state_grads)`` (the form of
earlier versions; README: Your own measurement):

    @register_measurement
    def last_step_norm(model, batch, state_grads):  # ||dL/dh_T|| of each layer, averaged over the batch
        return [jnp.linalg.norm(jax.tree.leaves(g)[-1][:, -1], axis=-1).mean() for g in state_grads]

Every experiment then takes it by name: ``--imports my_measure.py --measure last_step_norm``
(``--measure name:argument`` passes ``argument=`` to one that takes it, as ``hessian:3``);
its result is recorded beside the flow profiles (``flow["measurements"][name]`` of each
measured step in the History and in results.json, summarised over seeds with intervals).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.registry import Registry

Measurement = Callable  # (Context) -> pytree of arrays, or (model, batch, state_grads) -> pytree of arrays

MEASUREMENTS = Registry(
    "measurement",
    "decorate a function (ctx) -> arrays with @register_measurement in a file given to --imports (README: Your own "
    "measurement)",
)
# Make `fn` selectable by its name (``--measure NAME``): `@register_measurement` (its __name__)
# or `@register_measurement("name")`.
register_measurement = MEASUREMENTS.register


@dataclasses.dataclass(frozen=True)
class Context:
    """What a measurement sees on a measured step (traced inside the jitted step, before the
    update; stacked seeds: one seed's, the measurement vmapped).

    `state_grads`: for every layer of the model's recurrent stacks (a list, `probes_for`), the
    gradient of the training loss L with respect to that layer's carry at every step, through
    every path: carry-shaped (batch, time, hidden) arrays (the LSTM's ``LSTMState(c, h)``).
    `final_state_grads()`: the same for L_T, the loss at the last step alone (one more backward
    pass from the same forward pass; None where not measured). `loss(params)`: the training
    loss on this batch as the step computes it (its dropout mask included), so
    `jax.grad(ctx.loss)` is the step's gradient and its Hessian-vector products the landscape's
    curvature. `opt_state`: the optimiser's state before the update (None outside training).
    `initial_carries`: where the recurrence started (stateful truncated BPTT; else None).
    `spectrum`: the run's --spectrum (Lyapunov exponents asked for; None: none). `grads`: the
    step's parameter gradient as its learning rule computed it (`rnn_jax.learning_rules`;
    `jax.grad(ctx.loss)` is full BPTT's). `redraw(i)`: for a rule that draws random numbers
    (UORO), its gradient on this batch from its i-th other draw (None for the others)."""

    model: Any
    params: Any
    batch: dict
    state_grads: list
    loss: Callable
    opt_state: Any = None
    initial_carries: Any = None
    final_state_grads: Callable | None = None
    spectrum: int | None = None
    grads: Any = None
    redraw: Callable | None = None


def named(spec: str) -> tuple[str, Measurement]:
    """(spec, fn) of a --measure entry, "name" or "name:argument" (e.g. ``hessian:3``): the
    registered function, given ``argument=`` where it takes one (an error where it does not)."""
    name, colon, argument = spec.partition(":")
    fn = MEASUREMENTS[MEASUREMENTS.check(name)]
    if not colon:
        return spec, fn
    if "argument" not in inspect.signature(fn).parameters:
        raise ValueError(f"--measure {spec}: the measurement {name!r} takes no argument; give --measure {name}")
    return spec, _with_argument(fn, argument)


@functools.lru_cache(maxsize=None)
def _with_argument(fn, argument: str):  # one object per (fn, argument): a jitted step built with it is reused
    return functools.partial(fn, argument=argument)


def builtin(name: str, *, key: str | None):
    """Register a built-in measurement whose result sits in a step's flow record under `key`
    (None: its own keys at the top, as the profiles' ``by_step`` and ``by_lag``), where yours
    sit under ``measurements/<name>``."""

    def register(fn):
        fn.record_key = key
        return register_measurement(fn, name=name)

    return register


def run_measurements(ctx: Context, named) -> dict:
    """A step's flow record: each (name, fn) of `named` on `ctx`, placed where it belongs
    (`builtin`); a built-in that does not apply to the model (returns None) leaves nothing."""
    flow = {}
    for name, fn in named:
        value = fn(ctx) if _takes_context(fn) else fn(ctx.model, ctx.batch, ctx.state_grads)
        key = getattr(fn, "record_key", "measurements")
        if value is None and hasattr(fn, "record_key"):  # a built-in that does not apply here
            continue
        if key == "measurements":
            flow.setdefault("measurements", {})[name] = measured(name, value)
        elif key is None:
            flow.update(value)
        else:
            flow[key] = value
    return flow


def _takes_context(fn) -> bool:
    """Whether `fn` is a measurement of one `Context` (else of model, batch and state gradients)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    required = [
        p for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def measured(name: str, value) -> dict:
    """A measurement's result as {its pytree path ("[0]", "['key']", "" for a bare array): array}:
    containers become dicts, so that a leading seed axis (stacked seeds) is always the first
    axis of a leaf, never confused with a list the measurement returned. Anything but arrays and
    numbers is refused, naming the measurement."""
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    if not leaves:
        raise ValueError(f"measurement {name!r} returned {value!r}: expected an array or a list, tuple or dict of them")
    record = {}
    for path, leaf in leaves:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)) or isinstance(leaf, bool):
            where = jax.tree_util.keystr(path) or "its result"
            raise ValueError(
                f"measurement {name!r}: {where} is a {type(leaf).__name__}, not an array; a measurement returns an "
                "array, a number, or a list, tuple or dict of them"
            )
        record[jax.tree_util.keystr(path)] = jnp.asarray(leaf)
    return record
