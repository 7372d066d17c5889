"""Inference with a trained model: its outputs over a dataset in jitted chunks, and generating
sequences from a token model (sampling with temperature and top-k, or greedy), where the loop
over generated tokens is a jitted `jax.lax.scan`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.data.batches import chunks

Array = jax.Array


@functools.partial(jax.jit, static_argnums=0)
def _outputs(graphdef, params, inputs, mask):
    return nnx.merge(graphdef, params)(inputs, mask=mask)[0]


def batched_outputs(model: nnx.Module, arrays: dict, *, size: int = 512) -> np.ndarray:
    """`model(inputs, mask=mask)` outputs for every row of `arrays` (``inputs``, optional
    ``mask``), computed `size` rows at a time, as one NumPy array."""
    graphdef, params = nnx.split(model)
    return np.concatenate(
        [np.asarray(_outputs(graphdef, params, chunk["inputs"], chunk.get("mask"))) for chunk in chunks(arrays, size)]
    )


def next_token(
    key: Array, logits: Array, *, temperature: float = 1.0, top_k: int | None = None, argmax: bool = False
) -> Array:
    """One token id per row of `logits` (..., vocab)."""
    if argmax:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "length", "top_k", "argmax"))
def sample(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prime: Array,
    key: Array,
    *,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    argmax: bool = False,
) -> Array:
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


# -- conditional decoders (rnn_jax.seq2seq): greedy and beam search ---------------------------


@functools.partial(jax.jit, static_argnames=("graphdef", "bos", "eos", "max_len"))
def greedy(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    inputs: Array,
    source_mask: Array | None = None,
    *,
    bos: int,
    eos: int,
    max_len: int,
) -> Array:
    """The most likely token at every step, fed back: (batch, max_len) ids, 0 (<pad>) after <eos>."""
    model = nnx.merge(graphdef, params)
    carries, memory = model.encode(inputs, mask=source_mask)
    batch = inputs.shape[0]

    def step(state, _):
        carries, token, done = state
        logits, carries = model.decoder(token[:, None], initial_carries=carries, **memory)
        token = jnp.where(done, 0, jnp.argmax(logits[:, -1], axis=-1))
        return (carries, token, done | (token == eos)), token

    start = (carries, jnp.full((batch,), bos, jnp.int32), jnp.zeros((batch,), bool))
    _, tokens = jax.lax.scan(step, start, None, length=max_len)
    return tokens.T


@dataclasses.dataclass(frozen=True)
class Beam:
    """Beam search's options: `width` prefixes kept; the answer ranked by log-probability /
    length**`length_penalty` (0: the plain sum, which favours short outputs; 1: the mean)."""

    width: int = 4
    length_penalty: float = 0.6


@functools.partial(jax.jit, static_argnames=("graphdef", "bos", "eos", "max_len", "beam"))
def beam_search(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    inputs: Array,
    source_mask: Array | None = None,
    *,
    bos: int,
    eos: int,
    max_len: int,
    beam: Beam = Beam(),
) -> Array:
    """Beam search: keeps the `beam.width` most likely prefixes of every sequence; a prefix ends
    at <eos>. The answer is the beam ranked best (`Beam`). (batch, max_len) ids."""
    beam, length_penalty = beam.width, beam.length_penalty
    model = nnx.merge(graphdef, params)
    carries, memory = model.encode(inputs, mask=source_mask)
    batch = inputs.shape[0]
    tile = lambda tree: jax.tree.map(lambda a: jnp.repeat(a, beam, axis=0), tree)  # noqa: E731
    carries, memory = tile(carries), tile(memory)
    # all beams start as the same empty prefix: only the first may expand at step 0
    scores = jnp.tile(jnp.where(jnp.arange(beam) == 0, 0.0, -jnp.inf), (batch, 1))
    rows = (jnp.arange(batch) * beam)[:, None]

    def step(state, t):
        carries, last, scores, tokens, finished, lengths = state
        logits, carries = model.decoder(last[:, None], initial_carries=carries, **memory)
        logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32)).reshape(batch, beam, -1)
        vocab = logp.shape[-1]
        # a finished prefix continues only with <pad>, at no cost
        logp = jnp.where(finished[..., None], jnp.where(jnp.arange(vocab) == 0, 0.0, -jnp.inf), logp)
        scores, flat = jax.lax.top_k((scores[..., None] + logp).reshape(batch, beam * vocab), beam)
        parent, token = flat // vocab, flat % vocab
        pick = lambda a: jnp.take_along_axis(a, parent, axis=1)  # noqa: E731
        was_finished = pick(finished)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
        lengths = pick(lengths) + (~was_finished)
        finished = was_finished | (token == eos)
        carries = jax.tree.map(lambda c: c[(rows + parent).reshape(-1)], carries)
        return (carries, token.reshape(-1), scores, tokens, finished, lengths), None

    start = (
        carries,
        jnp.full((batch * beam,), bos, jnp.int32),
        scores,
        jnp.zeros((batch, beam, max_len), jnp.int32),
        jnp.zeros((batch, beam), bool),
        jnp.zeros((batch, beam), jnp.int32),
    )
    (_, _, scores, tokens, _, lengths), _ = jax.lax.scan(step, start, jnp.arange(max_len))
    best = jnp.argmax(scores / jnp.maximum(lengths, 1) ** length_penalty, axis=1)
    return jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]


def generate(model: nnx.Module, arrays: dict, vocab, *, max_len: int, beam: int | None = None, **beam_options):
    """Decoded token lists of an encoder-decoder `model` for every row of `arrays` (``inputs``,
    optional ``source_mask``), greedy or with a `beam`, 256 rows at a time; `vocab` (a
    `rnn_jax.data.vocab.Vocab`) gives <bos>, <eos> and the tokens."""
    from rnn_jax.data.vocab import BOS, EOS

    graphdef, params = nnx.split(model)
    options = dict(bos=vocab.id(BOS), eos=vocab.id(EOS), max_len=max_len)
    decode = functools.partial(beam_search, beam=Beam(beam, **beam_options)) if beam else greedy
    out = []
    for chunk in chunks(arrays, 256):
        tokens = decode(graphdef, params, chunk["inputs"], chunk.get("source_mask"), **options)
        out += [vocab.decode(row) for row in np.asarray(tokens)]
    return out


def sample_text(graphdef, params, vocab, *, prime: str, length: int, seed: int = 0, **options) -> str:
    """`prime` followed by `length` characters sampled from a character model (`sample`'s
    `options`: temperature, top_k, argmax); `vocab` a `rnn_jax.data.text.CharVocab`."""
    ids = vocab.encode(prime)  # raises, naming the characters, if the prime has unknown ones
    tokens = sample(graphdef, params, jnp.asarray(ids)[None], jax.random.key(seed), length=length, **options)
    return prime + vocab.decode(np.asarray(tokens[0]))
