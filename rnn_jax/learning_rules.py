"""Learning rules: how a training step assigns credit through time, chosen by name
(``--gradient NAME``), registered the same way as cells, tasks and measurements.

A rule is a function of its argument (the text after ``:``, e.g. ``truncated:10`` -> "10";
None without one) returning a context manager under which the step's loss is traced and
differentiated; every recurrence (`rnn_jax.recurrence.run`) traced inside follows it:

    bptt           full backpropagation through time (the default)
    truncated:K    the gradient stopped at every K-th state of each sequence, in blocks of K
                   steps from the first (char-rnn's truncated BPTT); the forward pass is the
                   same, and the gradient-flow profile the rule propagates ends at each block
    truncated:auto K from the measurement (`auto_truncation`): the lag at which the gradient
                   from the last step, ||dL_T/dh_(T-k)||, falls to 1% at the decay rate measured
                   at initialisation, K = ceil(ln 100 / |decay|)
    spatial        no credit through time (Zucchet et al. 2023's online_spatial): truncated:1, and
                   the weights that act only on the carry (W_hh, the LRU's nu and theta) get none
    rtrl           real-time recurrent learning (`rnn_jax.rtrl`): each recurrence's parameters
                   get their gradient forward in time (exact), what is upstream of it spatial
                   credit only; memory batch x state x parameters a layer, refused over 2 GiB
    snap1          SnAp-1 (Menick et al. 2021): RTRL with the influence kept where one step of
                   the cell's equations lets a parameter reach a state unit; exact for the
                   element-wise recurrences (minGRU, minLSTM, LRU; Zucchet et al. 2023)
    snap2          SnAp-2: kept where two steps reach (every unit of a fully connected cell: RTRL)
    uoro           UORO (Tallec & Ollivier 2017): the influence as an unbiased rank-one estimate
                   from random signs, memory batch x (state + parameters); stochastic: the
                   step's key draws the signs, and measured steps report its variance

On the steps that measure the gradient flow, the rule's gradient is compared with full BPTT's
on the same batch (the `alignment` measurement: cosine and norm ratio, overall and per
parameter group), and the profiles are those the rule propagates.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp

from rnn_jax.credit import drawing_from, frozen, real_time_recurrent_learning, truncated
from rnn_jax.measurements import Context, builtin
from rnn_jax.registry import Registry

LEARNING_RULES = Registry(
    "learning rule",
    "decorate a function (argument) -> context manager with @register_learning_rule in a file given to --imports",
)
# `@register_learning_rule` (its __name__) or `@register_learning_rule("name")`
register_learning_rule = LEARNING_RULES.register


@register_learning_rule("bptt")
def bptt(argument: str | None):
    """Full backpropagation through time."""
    _no_argument("bptt", argument)
    return contextlib.nullcontext()


@register_learning_rule("truncated")
def truncated_bptt(argument: str | None):
    """Truncated BPTT in blocks of K steps (`rnn_jax.credit.truncated`)."""
    try:
        every = int(argument)
    except (TypeError, ValueError):
        every = 0
    if every < 1:
        raise ValueError(
            f"--gradient truncated:K needs a block length K >= 1 steps, e.g. truncated:10; got {argument!r}"
        )
    return truncated(every)


@register_learning_rule("spatial")
def spatial(argument: str | None):
    """No credit through time (Zucchet et al. 2023's `online_spatial`): the gradient through each
    step's output only (truncated:1), and none for the weights that act only on the carry (the
    `recurrent` group: W_hh, the GRU's b_hn, the LRU's nu and theta)."""
    _no_argument("spatial", argument)
    return _both(truncated(1), frozen(lambda path: group_of(path) == "recurrent"))


@register_learning_rule("rtrl")
def rtrl(argument: str | None):
    """Exact forward-mode real-time recurrent learning (`rnn_jax.rtrl`)."""
    _no_argument("rtrl", argument)
    return real_time_recurrent_learning()


@register_learning_rule("snap1")
def snap1(argument: str | None):
    """SnAp-1 (Menick et al. 2021): RTRL with the influence kept on the pattern of one step
    (`rnn_jax.rtrl.snap_layout`); exact for element-wise recurrences."""
    _no_argument("snap1", argument)
    return real_time_recurrent_learning("snap1")


@register_learning_rule("snap2")
def snap2(argument: str | None):
    """SnAp-2 (Menick et al. 2021): the influence kept where two steps of the cell's equations
    let a parameter reach a state unit; RTRL itself for a fully connected recurrence."""
    _no_argument("snap2", argument)
    return real_time_recurrent_learning("snap2")


@register_learning_rule("uoro")
def uoro(argument: str | None):
    """UORO (Tallec & Ollivier 2017): RTRL's influence as a rank-one unbiased estimate, random
    signs drawn each step (`rnn_jax.rtrl`); its variance is measured beside the alignment."""
    _no_argument("uoro", argument)
    return real_time_recurrent_learning("uoro")


uoro.stochastic = True  # the alignment also measures its spread over draws (`alignment`)


def _no_argument(name: str, argument: str | None) -> None:
    if argument is not None:
        raise ValueError(f"--gradient {name} takes no argument, got {name}:{argument}")


def learning_rule(spec: str, key=None):
    """The context of the rule `spec` ("name" or "name:argument"), checked now: an unknown name
    or a bad argument is a ValueError naming it. `key`: where a rule that draws random numbers
    (`stochastic`, as UORO) draws them (`credit.drawing_from`)."""
    name, colon, argument = spec.partition(":")
    LEARNING_RULES.check(name)
    rule = LEARNING_RULES[name](argument if colon else None)
    return rule if key is None else _both(rule, drawing_from(key))


@contextlib.contextmanager
def _both(first, second):
    with first, second:
        yield


def stochastic(spec: str) -> bool:
    """Whether the rule `spec` draws random numbers (its function's ``stochastic`` attribute)."""
    return getattr(LEARNING_RULES.get(spec.partition(":")[0]), "stochastic", False)


def check_rule(spec: str) -> None:
    """`spec` names a registered rule with a good argument (``truncated:auto`` included, which
    a run resolves once it has measured, `auto_truncation`)."""
    learning_rule(spec.replace("truncated:auto", "truncated:1"))


def auto_truncation(decay: float, length: int) -> int:
    """K of ``truncated:auto``: the lag at which a gradient decaying at `decay` nats per step (a
    measured `rnn_jax.gradflow.decay_rate`, negative when it vanishes) falls below 1% of its
    value at lag 0, K = ceil(ln 100 / |decay|), at most the sequence `length` (a gradient that
    does not decay, or a decay not measured, keeps the whole sequence: full BPTT)."""
    if not math.isfinite(decay) or decay >= 0:
        return length
    return max(1, min(length, math.ceil(math.log(100.0) / -decay)))


# parameter groups of the alignment: a parameter's leaf name (or its module) says which
GROUPS = {
    "recurrent": ("W_hh", "b_hn", "nu_log", "theta_log", "lam_re", "lam_im"),
    "input": ("W_xh", "gamma_log"),
    "bias": ("b",),
    "readout": ("head", "C_re", "C_im", "D"),
}


def group_of(path) -> str:
    """The alignment group of a parameter by its pytree path: recurrent, input, bias, readout or
    other (embeddings, projections, norms, attention)."""
    names = [str(getattr(key, "key", getattr(key, "name", key))) for key in path]
    for group, members in GROUPS.items():
        if any(name in members for name in names):
            return group
    return "other"


@builtin("alignment", key="measurements")
def alignment(ctx: Context) -> dict:
    """How the step's gradient (by its learning rule, `ctx.grads`) lines up with full BPTT's on
    the same batch (`jax.grad(ctx.loss)`, traced outside the rule): cosine and norm ratio
    |rule| / |bptt|, overall and per parameter group (`group_of`). For a stochastic rule
    (`ctx.redraw`) also its relative variance over `VARIANCE_DRAWS` draws on the batch,
    E|g_i - mean g|^2 / |bptt|^2 (the sample variance, summed over the group's entries)."""
    exact = jax.grad(ctx.loss)(ctx.params)
    draws = None if ctx.redraw is None else [ctx.redraw(i) for i in range(VARIANCE_DRAWS)]
    columns = [ctx.grads, exact, *(draws or [])]
    members = {}
    for (path, *_), leaves in zip(
        jax.tree_util.tree_flatten_with_path(ctx.grads)[0], zip(*map(jax.tree.leaves, columns))
    ):
        members.setdefault(group_of(path), []).append(leaves)
    members["all"] = [leaves for group in list(members.values()) for leaves in group]
    return {group: _compare(leaves, draws is not None) for group, leaves in members.items()}


VARIANCE_DRAWS = 8  # draws of a stochastic rule's gradient for its variance (each one more pass)


def _compare(leaves, with_variance: bool) -> dict:
    """Cosine and norm ratio of (rule, bptt, *draws) leaf tuples; the draws' relative variance."""
    dot = sum(jnp.vdot(rule, full) for rule, full, *_ in leaves)
    rule = jnp.sqrt(sum(jnp.vdot(g, g) for g, *_ in leaves))
    full = jnp.sqrt(sum(jnp.vdot(b, b) for _, b, *_ in leaves))
    result = {"cosine": dot / jnp.maximum(rule * full, 1e-30), "norm_ratio": rule / jnp.maximum(full, 1e-30)}
    if with_variance:
        spread = sum(jnp.sum(jnp.var(jnp.stack(draws), axis=0, ddof=1)) for _, _, *draws in leaves)
        result["variance"] = spread / jnp.maximum(full**2, 1e-30)
    return result
