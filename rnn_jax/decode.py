"""Generating sequences from a trained token model: sampling with temperature and top-k, or
greedy (argmax). The loop over generated tokens is a jitted `jax.lax.scan`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def next_token(key: Array, logits: Array, *, temperature: float = 1.0, top_k: int | None = None,
               argmax: bool = False) -> Array:
    """One token id per row of `logits` (..., vocab)."""
    if argmax:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "length", "top_k", "argmax"))
def sample(graphdef: nnx.GraphDef, params: nnx.State, prime: Array, key: Array, *, length: int,
           temperature: float = 1.0, top_k: int | None = None, argmax: bool = False) -> Array:
    """Continue `prime` (batch, prime_len) token ids by `length` tokens: (batch, length).

    The prime is read in one scanned pass; then each step feeds the sampled token back in,
    carrying every layer's state.
    """
    if prime.shape[1] < 1:
        raise ValueError("sampling needs a prime of at least one token")
    model = nnx.merge(graphdef, params)
    logits, carries = model(prime)

    def step(state, key):
        logits, carries = state
        token = next_token(key, logits, temperature=temperature, top_k=top_k, argmax=argmax)
        logits, carries = model(token[:, None], initial_carries=carries)
        return (logits[:, -1], carries), token

    _, tokens = jax.lax.scan(step, (logits[:, -1], carries), jax.random.split(key, length))
    return tokens.T
