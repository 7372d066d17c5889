"""The synthetic long-lag tasks (`rnn_jax.data.synthetic`): adding, copy, bit_copy,
selective_copy, flipflop, mqar and add."""

from __future__ import annotations

import math

from rnn_jax.data import synthetic
from rnn_jax.losses import final_step_mse, sequence_bits_cross_entropy, sequence_cross_entropy, sequence_mse
from rnn_jax.tasks.base import Task, batches, register_task, task_option


@register_task("adding")
def adding(cfg) -> Task:
    return Task(
        batch=batches(synthetic.adding_batch, batch=cfg.batch, length=cfg.seq_len),
        loss_fn=final_step_mse,
        model_io=dict(input_size=2, output_size=1),
        baseline=synthetic.ADDING_BASELINE_MSE,
        metric="MSE",
    )


@register_task("copy")
def copy(cfg) -> Task:
    return Task(
        batch=batches(synthetic.copy_batch, batch=cfg.batch, delay=cfg.seq_len),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=synthetic.COPY_VOCAB, output_size=synthetic.COPY_VOCAB),
        baseline=synthetic.copy_baseline(cfg.seq_len),
        metric="cross-entropy (nats/step)",
    )


@register_task("bit_copy")
def bit_copy(cfg) -> Task:
    """Zucchet et al. 2023's copy task (`synthetic.bit_copy_batch`): --seq-len is the pattern's
    length P (theirs: 20), sequences 2P + 8 steps; baseline ln 2 nats per bit (knowing nothing),
    solved below a tenth of it."""
    return Task(
        batch=batches(synthetic.bit_copy_batch, batch=cfg.batch, pattern=cfg.seq_len),
        loss_fn=sequence_bits_cross_entropy,
        model_io=dict(input_size=synthetic.BIT_COPY_BITS + 1, output_size=synthetic.BIT_COPY_BITS),
        baseline=math.log(2.0),
        metric="cross-entropy of the recalled bits (nats per bit)",
        info={
            "pattern": cfg.seq_len,
            "pad": synthetic.BIT_COPY_PAD,
            "length": 2 * cfg.seq_len + synthetic.BIT_COPY_PAD + 1,
        },
    )


@register_task("selective_copy")
def selective_copy(cfg) -> Task:
    return Task(
        batch=batches(synthetic.selective_copy_batch, batch=cfg.batch, length=cfg.seq_len, tokens=cfg.tokens),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=synthetic.COPY_VOCAB, output_size=synthetic.COPY_VOCAB),
        baseline=synthetic.selective_copy_baseline(),
        metric="cross-entropy of the copied tokens (nats)",
    )


@register_task("flipflop")
def flipflop(cfg) -> Task:
    """The 3-bit flip-flop of Sussillo & Barak 2013 (fixed points: `rnn_jax.fixed_points`)."""
    return Task(
        batch=batches(synthetic.flipflop_batch, batch=cfg.batch, length=cfg.seq_len),
        loss_fn=sequence_mse,
        model_io=dict(input_size=synthetic.FLIPFLOP_BITS, output_size=synthetic.FLIPFLOP_BITS),
        baseline=1.0 - synthetic.FLIPFLOP_PULSE,
        metric="MSE per step",
    )


@register_task("mqar")
def mqar(cfg) -> Task:
    """Multi-query associative recall (Arora et al. 2023) as Zoology generates it, T = --seq-len;
    --mqar-pairs, --mqar-vocab, --mqar-power-a and --mqar-noise set Zoology's choices."""
    options = dict(pairs=cfg.mqar_pairs, vocab=cfg.mqar_vocab, power_a=cfg.mqar_power_a, noise=cfg.mqar_noise)
    synthetic.check_mqar(cfg.seq_len, options["pairs"], options["vocab"], options["power_a"])
    baselines = synthetic.mqar_baselines(options["vocab"], options["pairs"])
    return Task(
        batch=batches(synthetic.mqar_batch, batch=cfg.batch, length=cfg.seq_len, **options),
        loss_fn=sequence_cross_entropy,
        model_io=dict(vocab_size=cfg.mqar_vocab, output_size=cfg.mqar_vocab),
        baseline=baselines["no_memory"]["nats"],
        metric="cross-entropy of the recalled values (nats)",
        info={**options, "baselines": baselines},
    )


@register_task("add")
def add(cfg) -> Task:
    """Marschall, Cho & Savin (2020)'s Add task: the label at t depends on the input bits
    --add-lags t1 and t2 steps back (`synthetic.add_task_batch`); T = --seq-len. Its floors,
    in nats per scored step: 0.662 knowing nothing, 0.519 knowing x_(t-t1), 0.454 knowing
    both; solved below the midpoint of the last two (both lags learned)."""
    first, second = lags = tuple(task_option(cfg, "add_lags", (6, 10)))
    if not 1 <= first < second < cfg.seq_len:
        raise ValueError(f"--add-lags {first} {second}: need 1 <= t1 < t2 < --seq-len {cfg.seq_len}")
    floors = synthetic.add_task_floors()
    return Task(
        batch=batches(synthetic.add_task_batch, batch=cfg.batch, length=cfg.seq_len, lags=lags),
        loss_fn=sequence_cross_entropy,
        model_io=dict(input_size=2, output_size=2),
        baseline=floors["no_memory"],
        solved_below=(floors["first_lag"] + floors["both_lags"]) / 2,
        metric="cross-entropy of the label (nats per step)",
        info={"lags": list(lags), "floors": floors},
    )
