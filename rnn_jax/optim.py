"""Optimizers, learning-rate schedules and gradient clipping by name (optax underneath)."""

from __future__ import annotations

import functools

import optax

from rnn_jax.choices import check_choice

OPTIMIZERS = {"adam": optax.adam, "adamw": optax.adamw, "rmsprop": optax.rmsprop, "sgd": optax.sgd}
SCHEDULES = ("constant", "cosine", "linear")


def default_warmup(steps: int) -> int:
    """The warm-up of a run of `steps` steps when none is given: 100 steps, but never more than
    a tenth of the run, so a short run is mostly at its learning rate."""
    return min(100, steps // 10)


def make_schedule(
    learning_rate: float,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_fraction: float = 0.1,
) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then constant, or a cosine / linear decay to
    `final_fraction * learning_rate` at `total_steps`."""
    check_choice("schedule", schedule, SCHEDULES)
    if learning_rate <= 0 or warmup_steps < 0:
        raise ValueError(f"need learning_rate > 0 and warmup_steps >= 0, got {learning_rate}, {warmup_steps}")
    if total_steps is not None and warmup_steps and warmup_steps >= total_steps:
        raise ValueError(
            f"--warmup {warmup_steps} must be below --steps {total_steps} (the warm-up is part of the run)"
        )
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else None
    if schedule == "constant":
        after = optax.constant_schedule(learning_rate)
    else:
        if total_steps is None:
            raise ValueError(f"a {schedule} decay needs total_steps")
        decay_steps = max(1, total_steps - warmup_steps)
        after = (
            optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_fraction)
            if schedule == "cosine"
            else optax.linear_schedule(learning_rate, final_fraction * learning_rate, decay_steps)
        )
    return optax.join_schedules([warmup, after], [warmup_steps]) if warmup else after


def make_optimizer(name: str, learning_rate, *, rmsprop_init: float = 0.0) -> optax.GradientTransformation:
    """An optax optimizer by name; `learning_rate` is a float or an optax schedule.

    `rmsprop_init`: RMSProp's second-moment accumulator at step 0 (optax's ``initial_scale``).
    optax starts it at 0, so the first update moves every weight by about the learning rate
    whatever its gradient; Arjovsky et al. (2016)'s code (amarshah/complex_RNN,
    ``optimizations.rms_prop``: decay 0.9, no epsilon) starts it at 1e-3."""
    check_choice("optimizer", name, OPTIMIZERS)
    if rmsprop_init < 0:
        raise ValueError(f"--rmsprop-init must be >= 0, got {rmsprop_init}")
    if name == "rmsprop":
        return optax.rmsprop(learning_rate, initial_scale=rmsprop_init)
    if rmsprop_init:
        raise ValueError(f"--rmsprop-init is RMSProp's; the optimizer is {name} (use --optimizer rmsprop)")
    return OPTIMIZERS[name](learning_rate)


def make_clipper(clip_norm: float | None = None, clip_value: float | None = None) -> optax.GradientTransformation:
    """Gradient clipping by global norm or element-wise by value (at most one), or none."""
    if clip_norm is not None and clip_value is not None:
        raise ValueError("choose one of clip_norm (global norm) and clip_value (element-wise), not both")
    if clip_norm is not None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        return optax.clip_by_global_norm(clip_norm)
    if clip_value is not None:
        if clip_value <= 0:
            raise ValueError(f"clip_value must be > 0, got {clip_value}")
        return optax.clip(clip_value)
    return optax.identity()


@functools.lru_cache(maxsize=64)
def cached_training(
    optimizer: str,
    rmsprop_init: float,
    lr: float,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    clip_norm,
    clip_value,
):
    """(optimizer with its learning-rate schedule, gradient clipper), the same objects for equal
    arguments, so that jitted steps built from them are reused (`rnn_jax.train.reused`)."""
    learning_rate = make_schedule(lr, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps)
    optimizer = make_optimizer(optimizer, learning_rate, rmsprop_init=rmsprop_init)
    return optimizer, make_clipper(clip_norm or None, clip_value)
