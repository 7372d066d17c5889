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

multi-query associative recall (Arora et al. 2023, Zoology's MQAR, in a small setting of ours)
    tokens (batch, T): D key-value pairs first (k_1 v_1 ... k_D v_D; keys from 1..32, values from
    33..64, the keys distinct), then blanks (0) with the D keys asked again, in a random order at
    random later positions. Target at each query: its key's value; only queries are scored. A
    model that does not remember the pairs guesses among the 32 values: log(32) nats, the
    baseline. (Zoology fills the gaps with random tokens and draws query positions from a power
    law, with vocabularies in the thousands; this generator keeps its structure at a size a CPU
    trains: T = 64, D = 4.)

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


MQAR_KEYS = 32  # keys 1..32, values 33..64: a vocabulary of 65 with the blank


def mqar_batch(key: jax.Array, batch: int, length: int, pairs: int = 4) -> dict[str, jax.Array]:
    if not 1 <= pairs <= MQAR_KEYS or length < 3 * pairs:
        raise ValueError(f"MQAR needs 1 <= pairs <= {MQAR_KEYS} and length >= 3 x pairs, got {pairs} pairs, {length}")
    k_keys, k_values, k_positions, k_order = jax.random.split(key, 4)
    keys = 1 + jnp.argsort(jax.random.uniform(k_keys, (batch, MQAR_KEYS)), axis=1)[:, :pairs]  # distinct
    values = 1 + MQAR_KEYS + jax.random.randint(k_values, (batch, pairs), 0, MQAR_KEYS)
    context = jnp.stack([keys, values], axis=-1).reshape(batch, 2 * pairs)
    free = length - 2 * pairs  # query positions: D distinct ones after the context
    positions = 2 * pairs + jnp.sort(jnp.argsort(jax.random.uniform(k_positions, (batch, free)), axis=1)[:, :pairs], 1)
    order = jnp.argsort(jax.random.uniform(k_order, (batch, pairs)), axis=1)  # which pair each query asks
    rows = jnp.arange(batch)[:, None]
    tokens = jnp.zeros((batch, length), keys.dtype).at[:, : 2 * pairs].set(context)
    tokens = tokens.at[rows, positions].set(jnp.take_along_axis(keys, order, axis=1))
    targets = jnp.zeros_like(tokens).at[rows, positions].set(jnp.take_along_axis(values, order, axis=1))
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
