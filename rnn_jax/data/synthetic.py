"""Synthetic long-lag tasks. Each batch is a pure function of a PRNG key, so a run's data
stream is `batch(fold_in(data_key, step))`: reproducible and resumable at any step.

adding (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016)
    inputs (batch, T, 2): a value ~ U(0, 1) and a marker; exactly two markers are 1, one in
    each half of the sequence. Target: the sum of the two marked values. Predicting the mean
    (1.0) gives MSE Var(U1 + U2) = 1/6 ~ 0.167: the baseline.

copy (Arjovsky et al. 2016)
    tokens (batch, T + 20) over 10 symbols: 10 data symbols from {1..8}, then T - 1 blanks
    (0), the delimiter (9), and 10 blanks. Targets: T + 10 blanks, then the 10 data symbols.
    A memoryless model that outputs blanks and then guesses uniformly scores cross-entropy
    10 log(8) / (T + 20) per step: the baseline.

3-bit flip-flop (Sussillo & Barak 2013; the generator of Golub & Sussillo's FixedPointFinder)
    inputs (batch, T, 3): each channel a +1 or -1 pulse with probability p per step (and one at
    t = 0, so every output is defined from the start), else 0. Targets (batch, T, 3): each channel
    holds the sign of its last pulse. A memoryless model copies a pulse when there is one and
    otherwise can only say 0: MSE 1 - p, the baseline. The network must store 3 bits: 8 memories.

multi-query associative recall (Arora et al. 2023; the generator of Zoology, `mqar_batch`)
    tokens (batch, T): D key-value pairs first (k_1 v_1 ... k_D v_D), keys and values each drawn
    without replacement (a vocabulary V split as Zoology does: keys 1..V/2-1, values V/2..V-1),
    then each key asked once more at an even offset after the context, at gaps drawn from a power
    law (uniform by default), the other steps blanks (0) or random tokens. Target at each query:
    its key's value; only queries are scored. Exact baselines (`mqar_baselines`): remembering
    nothing, ln |values| nats; knowing which D values appeared but not the binding, ln D
    (accuracy 1/D). Ours by default: V = 64, D = 4, uniform gaps, blanks (a size a CPU trains);
    Zoology's own defaults are V = 8192, D = 8, power_a = 0.01 and random non-query tokens.

bit copy (Zucchet et al. 2023's copy task, their dataloaders/copy.py as their setup runs it)
    inputs (batch, 2P + 8, 8): P steps of 7 random bits (the eighth channel 0), 7 silent steps,
    a marker on the eighth channel, then P silent steps in which the targets, (batch, 2P + 8, 7),
    are the pattern again (same order); only those P steps are scored. Their builder passes
    padding_length=5, which setup() never reads: the padding it uses is its default, 7 (T = 48
    at their P = 20). Knowing nothing: ln 2 nats per bit, accuracy 1/2. Unlike theirs, each batch
    is drawn fresh (theirs: one fixed set of 20,000 sequences).

selective copy (in the spirit of Gu & Dao 2023, the Mamba paper, and Feng et al. 2024; not their
    generator, which has marker tokens, a vocabulary of 16 and T = 4096: here one delimiter, then
    K blanks, 8 data symbols, T = 200 by default)
    tokens (batch, T + 1 + K): K data symbols from {1..8} at random positions among T blanks,
    the delimiter, then K blanks. Targets: the K data symbols in the order they appeared, at the
    last K steps; only those are scored (``weights``), so a model that guesses uniformly scores
    cross-entropy log(8) per scored step: the baseline. Unlike the copy task, where the data
    sits, and so what to keep, changes from sequence to sequence: a time-invariant recurrence
    cannot solve it, an input-dependent gate can.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ADDING_BASELINE_MSE = 1.0 / 6.0
COPY_SYMBOLS, COPY_LENGTH, COPY_VOCAB, COPY_BLANK, COPY_DELIMITER = 8, 10, 10, 0, 9


def copy_baseline(delay: int) -> float:
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (delay + 2 * COPY_LENGTH)


def adding_batch(key: jax.Array, batch: int, length: int) -> dict[str, jax.Array]:
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {length}")
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch, length))
    half = length // 2
    first = jax.random.randint(k_first, (batch,), 0, half)
    second = jax.random.randint(k_second, (batch,), half, length)
    steps = jnp.arange(length)
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
    return {"inputs": jnp.stack([values, markers], -1), "targets": jnp.sum(values * markers, axis=1)}


def copy_batch(key: jax.Array, batch: int, delay: int) -> dict[str, jax.Array]:
    if delay < 1:
        raise ValueError(f"the copy task needs a delay >= 1, got {delay}")
    data = jax.random.randint(key, (batch, COPY_LENGTH), 1, COPY_SYMBOLS + 1)

    def blanks(n):
        return jnp.full((batch, n), COPY_BLANK, data.dtype)

    delimiter = jnp.full((batch, 1), COPY_DELIMITER, data.dtype)
    inputs = jnp.concatenate([data, blanks(delay - 1), delimiter, blanks(COPY_LENGTH)], axis=1)
    targets = jnp.concatenate([blanks(delay + COPY_LENGTH), data], axis=1)
    return {"inputs": inputs, "targets": targets}


FLIPFLOP_BITS, FLIPFLOP_PULSE = 3, 0.1  # FixedPointFinder's example has p = 0.5; sparser pulses need memory


def flipflop_batch(key: jax.Array, batch: int, length: int, pulse: float = FLIPFLOP_PULSE) -> dict[str, jax.Array]:
    k_pulses, k_signs = jax.random.split(key)
    pulses = jax.random.bernoulli(k_pulses, pulse, (batch, length, FLIPFLOP_BITS)).at[:, 0].set(True)
    signs = jnp.where(jax.random.bernoulli(k_signs, 0.5, pulses.shape), 1.0, -1.0)
    inputs = jnp.where(pulses, signs, 0.0)
    # each channel's last pulse at or before t: a running maximum of the pulse times
    steps = jnp.arange(length)[None, :, None]
    last = jax.lax.cummax(jnp.where(pulses, steps, 0), axis=1)
    return {"inputs": inputs, "targets": jnp.take_along_axis(inputs, last, axis=1)}


MQAR_VOCAB, MQAR_PAIRS = 64, 4  # ours; Zoology's defaults: a vocabulary of 8,192, 8 pairs (basic example: 256, 4)


def mqar_token_ranges(vocab: int) -> tuple[range, range]:
    """Zoology's split of a vocabulary V: keys 1 .. V/2 - 1, values V/2 .. V - 1 (0: the blank)."""
    return range(1, vocab // 2), range(vocab // 2, vocab)


def mqar_baselines(vocab: int, pairs: int) -> dict[str, dict[str, float]]:
    """Exact cross-entropy (nats per answer) and accuracy of two models without the binding: one
    that remembers nothing (each answer uniform over the values: ln |values|) and one that knows
    which D values appeared but not which key each belongs to (D distinct values, each query's
    answer equally likely any of them: ln D, accuracy 1/D)."""
    values = len(mqar_token_ranges(vocab)[1])
    return {
        "no_memory": {"nats": math.log(values), "accuracy": 1.0 / values},
        "values_without_binding": {"nats": math.log(pairs), "accuracy": 1.0 / pairs},
    }


def check_mqar(length: int, pairs: int, vocab: int, power_a: float) -> None:
    keys, values = mqar_token_ranges(vocab)
    if not 1 <= pairs <= min(len(keys), len(values)) or length < 4 * pairs or not power_a > 0:
        raise ValueError(
            f"MQAR needs 1 <= pairs <= {min(len(keys), len(values))} (a vocabulary of {vocab}: keys 1..{vocab // 2 - 1}),"
            f" length >= 4 x pairs and power_a > 0; got {pairs} pairs, length {length}, power_a {power_a}"
        )


def mqar_batch(
    key: jax.Array,
    batch: int,
    length: int,
    pairs: int = MQAR_PAIRS,
    vocab: int = MQAR_VOCAB,
    power_a: float = 1.0,
    noise: bool = False,
) -> dict[str, jax.Array]:
    """Zoology's `multiquery_ar` (HazyResearch/zoology, zoology/data/multiquery_ar.py) as a pure
    function of a key: D keys and D values each drawn without replacement, the context k_1 v_1 ..
    k_D v_D, then key j asked at step 2D + 2 g_j, the gaps g_j drawn without replacement from
    0 .. (T - 2D) / 2 - 1 with probability proportional to (i + 1)^(power_a - 1) (1: uniform;
    Zoology's 0.01 favours short gaps); the target at a query is its key's value, and only
    queries are scored. `noise`: every other step holds a random token of the vocabulary (as
    Zoology's random_non_queries) instead of the blank 0."""
    check_mqar(length, pairs, vocab, power_a)
    keys_range, values_range = mqar_token_ranges(vocab)
    k_keys, k_values, k_gaps, k_noise = jax.random.split(key, 4)

    def distinct(k, options):  # `pairs` of `options` without replacement, per row: the smallest of random keys
        order = jnp.argsort(jax.random.uniform(k, (batch, len(options))), axis=1)[:, :pairs]
        return options.start + order

    keys, values = distinct(k_keys, keys_range), distinct(k_values, values_range)
    space = (length - 2 * pairs) // 2
    weights = jnp.arange(1, space + 1, dtype=jnp.float32) ** (power_a - 1.0)
    gaps = jax.vmap(lambda k: jax.random.choice(k, space, (pairs,), replace=False, p=weights / weights.sum()))(
        jax.random.split(k_gaps, batch)
    )
    positions = 2 * pairs + 2 * gaps
    rows = jnp.arange(batch)[:, None]
    context = jnp.stack([keys, values], axis=-1).reshape(batch, 2 * pairs)
    tokens = jnp.zeros((batch, length), keys.dtype).at[:, : 2 * pairs].set(context).at[rows, positions].set(keys)
    if noise:
        tokens = jnp.where(tokens == 0, jax.random.randint(k_noise, tokens.shape, 0, vocab, tokens.dtype), tokens)
    targets = jnp.zeros_like(tokens).at[rows, positions].set(values)
    return {"inputs": tokens, "targets": targets, "weights": (targets > 0).astype(jnp.float32)}


def selective_copy_baseline() -> float:
    return math.log(COPY_SYMBOLS)


def selective_copy_batch(key: jax.Array, batch: int, length: int, tokens: int = 16) -> dict[str, jax.Array]:
    if not 1 <= tokens <= length:
        raise ValueError(f"selective copying needs 1 <= tokens <= length, got {tokens} tokens in {length} steps")
    k_data, k_positions = jax.random.split(key)
    data = jax.random.randint(k_data, (batch, tokens), 1, COPY_SYMBOLS + 1)
    # K distinct positions per sequence, in increasing order: the K smallest of random keys
    positions = jnp.sort(jnp.argsort(jax.random.uniform(k_positions, (batch, length)), axis=1)[:, :tokens], axis=1)
    rows = jnp.arange(batch)[:, None]
    noise = jnp.full((batch, length), COPY_BLANK, data.dtype).at[rows, positions].set(data)
    blanks = jnp.full((batch, tokens), COPY_BLANK, data.dtype)
    delimiter = jnp.full((batch, 1), COPY_DELIMITER, data.dtype)
    scored = jnp.arange(length + 1 + tokens) >= length + 1
    return {
        "inputs": jnp.concatenate([noise, delimiter, blanks], axis=1),
        "targets": jnp.concatenate([jnp.zeros((batch, length + 1), data.dtype), data], axis=1),
        "weights": jnp.broadcast_to(scored, (batch, length + 1 + tokens)).astype(jnp.float32),
    }


BIT_COPY_BITS, BIT_COPY_PAD = 7, 7


def bit_copy_batch(key: jax.Array, batch: int, pattern: int) -> dict[str, jax.Array]:
    """Zucchet et al. 2023's copy task (module docstring): a `pattern` of P steps of 7 bits,
    recalled after 7 silent steps and a marker; targets (batch, T, 7) bits, ``weights`` 1 at
    the P recall steps."""
    length = 2 * pattern + BIT_COPY_PAD + 1
    bits = jax.random.bernoulli(key, 0.5, (batch, pattern, BIT_COPY_BITS)).astype(jnp.float32)
    inputs = jnp.zeros((batch, length, BIT_COPY_BITS + 1), jnp.float32).at[:, :pattern, :-1].set(bits)
    inputs = inputs.at[:, pattern + BIT_COPY_PAD, -1].set(1.0)
    targets = jnp.zeros((batch, length, BIT_COPY_BITS), jnp.float32).at[:, length - pattern :].set(bits)
    weights = jnp.broadcast_to(jnp.arange(length) >= length - pattern, (batch, length)).astype(jnp.float32)
    return {"inputs": inputs, "targets": targets, "weights": weights}


def add_task_batch(key: jax.Array, batch: int, length: int, lags: tuple[int, int] = (6, 10)) -> dict[str, jax.Array]:
    """Marschall, Cho & Savin (2020)'s "Add" task (their gen_data/Add_Task.py, after Pitis
    2016): bits x_t ~ Bernoulli(1/2), fed as (x_t, 1 - x_t); the label at t is a coin with
    P(1) = 1/2 + x_(t - t1) / 2 - x_(t - t2) / 4, (t1, t2) = `lags`. Their generator rolls one
    long stream; here each sequence stands alone, so the steps before t2, whose dependencies
    precede it, are not scored (``weights``)."""
    first, second = lags
    k_bits, k_labels = jax.random.split(key)
    bits = jax.random.bernoulli(k_bits, 0.5, (batch, length)).astype(jnp.float32)
    shifted = lambda lag: jnp.pad(bits, ((0, 0), (lag, 0)))[:, :length]  # noqa: E731  x_(t - lag), 0 before the start
    labels = jax.random.bernoulli(k_labels, 0.5 + 0.5 * shifted(first) - 0.25 * shifted(second))
    weights = jnp.broadcast_to(jnp.arange(length) >= second, (batch, length)).astype(jnp.float32)
    return {"inputs": jnp.stack([bits, 1 - bits], -1), "targets": labels.astype(jnp.int32), "weights": weights}


def add_task_floors() -> dict[str, float]:
    """The expected cross-entropy (nats per scored step) of the best predictor that knows
    nothing (P(1) = 5/8), only x_(t - t1) (3/8 or 7/8), or both lags (1/2, 1/4, 1, 3/4): the
    entropy of the label given what it knows."""

    def entropy(p):
        return float(-sum(q * math.log(q) for q in (p, 1 - p) if q > 0))

    return {
        "no_memory": entropy(5 / 8),
        "first_lag": (entropy(3 / 8) + entropy(7 / 8)) / 2,
        "both_lags": (entropy(1 / 2) + entropy(1 / 4) + entropy(1.0) + entropy(3 / 4)) / 4,
    }
