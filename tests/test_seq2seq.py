"""Encoder-decoder models: the attention decoder against a step-by-step NumPy reference, masks,
gradients, the captioner's initial state, gradient-flow keys, greedy decoding, and beam search
against exhaustive search."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rnn_jax import ScanOptions, StackOptions, make_cell
from rnn_jax.data.batches import pad
from rnn_jax.decode import Beam, beam_search, greedy
from rnn_jax.gradflow import grads_and_flow
from rnn_jax.losses import apply, sequence_cross_entropy
from rnn_jax.seq2seq import Captioner, Seq2Seq

from . import reference

VOCAB, EMBED, HIDDEN = 6, 4, 5
STEPS = {"lstm": reference.lstm_step, "gru": reference.gru_step, "rnn": reference.rnn_step}


def _model(cell="lstm", attention=True, layers=2, seed=0):
    return Seq2Seq(
        make_cell(cell),
        source_vocab=VOCAB,
        target_vocab=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        attention=attention,
        stack=StackOptions(num_layers=layers),
        rngs=nnx.Rngs(seed),
    )


def _batch():
    source, source_mask = pad([np.array([2, 3, 4, 5]), np.array([3, 2])], 4, side="left")
    targets, mask = pad([np.array([4, 2, 3]), np.array([5, 3])], 3)
    decoder_inputs, _ = pad([np.array([1, 4, 2]), np.array([1, 5])], 3)
    return {
        "inputs": jnp.asarray(source),
        "source_mask": jnp.asarray(source_mask),
        "decoder_inputs": jnp.asarray(decoder_inputs),
        "targets": jnp.asarray(targets),
        "mask": jnp.asarray(mask),
    }


def _np(params):
    return {k: np.asarray(v[...], np.float64) for k, v in params.items()}


def _reference_decoder(model, batch, cell):
    """The attention decoder, one sequence and one step at a time, in float64 NumPy."""
    step = STEPS[cell]
    encoder = [_np(layer.forward) for layer in model.encoder.layers]
    decoder = [_np(layer.forward) for layer in model.decoder.rnn.layers]
    attention = model.decoder.attention
    w_q, w_k, b_k = (
        np.asarray(a, np.float64)
        for a in (attention.query.kernel[...], attention.key.kernel[...], attention.key.bias[...])
    )
    v = np.asarray(attention.score.kernel[...], np.float64)[:, 0]
    out_w, out_b = (
        np.asarray(a, np.float64) for a in (model.decoder.output.kernel[...], model.decoder.output.bias[...])
    )
    head_w, head_b = (np.asarray(a, np.float64) for a in (model.decoder.head.kernel[...], model.decoder.head.bias[...]))
    source_embed = np.asarray(model.embed.embedding[...], np.float64)
    target_embed = np.asarray(model.decoder.embed.embedding[...], np.float64)
    zero = (lambda: (np.zeros(HIDDEN), np.zeros(HIDDEN))) if cell == "lstm" else (lambda: np.zeros(HIDDEN))
    hidden = (lambda c: c[1]) if cell == "lstm" else (lambda c: c)  # the LSTM's carry is (c, h)
    logits = np.zeros(batch["targets"].shape + (VOCAB,))
    for b in range(batch["inputs"].shape[0]):
        source = np.asarray(batch["inputs"][b])[np.asarray(batch["source_mask"][b])]
        carries, memory = [zero() for _ in encoder], []
        for token in source:
            x = source_embed[token]
            for depth, p in enumerate(encoder):
                carries[depth], x = step(p, carries[depth], x)
            memory.append(x)
        memory = np.array(memory)
        for t in range(int(batch["mask"][b].sum())):
            scores = np.tanh(memory @ w_k + b_k + hidden(carries[-1]) @ w_q) @ v
            weights = np.exp(scores - scores.max())
            context = (weights / weights.sum()) @ memory
            x = np.concatenate([target_embed[int(batch["decoder_inputs"][b, t])], context])
            for depth, p in enumerate(decoder):
                carries[depth], x = step(p, carries[depth], x)
            logits[b, t] = np.tanh(np.concatenate([x, context]) @ out_w + out_b) @ head_w + head_b
    return logits


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_attention_decoder_matches_a_step_by_step_reference(cell):
    model, batch = _model(cell), _batch()
    logits, _ = model(batch["inputs"], batch["decoder_inputs"], mask=batch["mask"], source_mask=batch["source_mask"])
    expected = _reference_decoder(model, batch, cell)
    mask = np.asarray(batch["mask"])
    np.testing.assert_allclose(np.asarray(logits)[mask], expected[mask], atol=2e-5, rtol=2e-5)


def test_bfloat16_matmuls_in_the_attention_decoder():
    """`compute_dtype` reaches every recurrent layer, the attention decoder's hand-stepped
    scan included: bf16 products, float32 parameters, carries and outputs, close to float32."""
    batch = _batch()
    run = lambda m: m(batch["inputs"], batch["decoder_inputs"], mask=batch["mask"], source_mask=batch["source_mask"])  # noqa: E731
    full, carries = run(_model())
    bf16 = Seq2Seq(
        make_cell("lstm"),
        source_vocab=VOCAB,
        target_vocab=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        attention=True,
        stack=StackOptions(num_layers=2, scan=ScanOptions(compute_dtype=jnp.bfloat16)),
        rngs=nnx.Rngs(0),
    )
    low, low_carries = run(bf16)
    assert low.dtype == jnp.float32 and all(c.dtype == jnp.float32 for c in jax.tree.leaves(low_carries))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    mask = np.asarray(batch["mask"])
    error = np.abs(np.asarray(low) - np.asarray(full))[mask].max()
    assert 0 < error < 3e-2  # rounded (so bf16 was used), and only by bf16's precision


def test_source_padding_is_ignored():
    model, batch = _model(), _batch()
    changed = {**batch, "inputs": batch["inputs"].at[1, :2].set(5)}  # the second source's padding
    run = lambda b: model(b["inputs"], b["decoder_inputs"], mask=b["mask"], source_mask=b["source_mask"])[0]  # noqa: E731
    np.testing.assert_allclose(run(batch), run(changed), atol=1e-6)


@pytest.mark.parametrize("attention", [False, True])
def test_seq2seq_gradients(attention):
    model, batch = _model(attention=attention, layers=1), _batch()
    graphdef, params = nnx.split(model)
    loss = lambda p: apply(sequence_cross_entropy, nnx.merge(graphdef, p), batch).loss  # noqa: E731
    check_grads(loss, (params,), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_flow_reaches_the_encoder_and_leaves_the_gradient_unchanged():
    model, batch = _model(), _batch()
    graphdef, params = nnx.split(model)
    _, grads, flow = grads_and_flow(sequence_cross_entropy, graphdef, params, batch, None)
    assert {"encoder/layer0/h", "encoder/layer1/c", "decoder/layer1/h"} <= set(flow["by_lag"])
    assert np.all(np.asarray(flow["by_lag"]["encoder/layer0/h"]) > 0)
    expected = jax.grad(lambda p: apply(sequence_cross_entropy, nnx.merge(graphdef, p), batch).loss)(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, expected)


def test_captioner_initial_state_comes_from_the_image():
    model = Captioner(
        make_cell("lstm"),
        feature_size=3,
        vocab_size=VOCAB,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        stack=StackOptions(num_layers=2),
        rngs=nnx.Rngs(0),
    )
    features = jax.random.normal(jax.random.key(0), (2, 3))
    carries, memory = model.encode(features)
    states = np.asarray(jnp.tanh(model.image(features)))
    assert memory == {}
    np.testing.assert_allclose(carries[1][0], states[:, 2 * HIDDEN : 3 * HIDDEN])  # layer 1, first leaf
    logits, _ = model(features, jnp.ones((2, 3), jnp.int32))
    assert logits.shape == (2, 3, VOCAB)


def _all_sequence_log_probs(model, row, eos, length):
    """Every token sequence of `length` and its log-probability by teacher forcing, counted up
    to its first <eos> (what follows it is never generated), in one batched call."""
    candidates = np.array(list(itertools.product(range(VOCAB), repeat=length)))
    n = len(candidates)
    is_eos = candidates == eos
    last = np.where(is_eos.any(1), is_eos.argmax(1), length - 1)
    counted = np.arange(length)[None] <= last[:, None]
    decoder_inputs = np.concatenate([np.ones((n, 1), int), candidates[:, :-1]], 1)
    logits, _ = model(
        jnp.repeat(row["inputs"], n, 0), jnp.asarray(decoder_inputs), source_mask=jnp.repeat(row["source_mask"], n, 0)
    )
    logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), candidates[..., None], -1)[..., 0]
    return candidates, (logp * counted).sum(1)


@pytest.mark.parametrize("attention", [False, True])
def test_greedy_and_beam_search_against_exhaustive_search(attention):
    model, batch = _model(attention=attention, layers=1, seed=3), _batch()
    graphdef, params = nnx.split(model)
    options = dict(bos=1, eos=2, max_len=3)
    tokens = np.asarray(greedy(graphdef, params, batch["inputs"], batch["source_mask"], **options))
    for b in range(2):  # greedy: each token is the argmax given the tokens before it
        row = {k: batch[k][b : b + 1] for k in ("inputs", "source_mask")}
        generated = list(tokens[b][: (list(tokens[b]).index(2) + 1) if 2 in tokens[b] else 3])
        logits, _ = model(row["inputs"], jnp.asarray([[1, *generated[:-1]]]), source_mask=row["source_mask"])
        np.testing.assert_array_equal(np.argmax(logits[0], -1), generated)
    np.testing.assert_array_equal(
        beam_search(graphdef, params, batch["inputs"], batch["source_mask"], beam=Beam(1, 0.0), **options),
        tokens,
    )
    # a beam as wide as all prefixes of length 2 searches exhaustively
    best = np.asarray(
        beam_search(graphdef, params, batch["inputs"], batch["source_mask"], beam=Beam(VOCAB**2, 0.0), **options)
    )
    for b in range(2):
        row = {k: batch[k][b : b + 1] for k in ("inputs", "source_mask")}
        candidates, scores = _all_sequence_log_probs(model, row, eos=2, length=3)
        found = np.flatnonzero((candidates == best[b]).all(1))[0]  # <pad> after <eos>: one of the candidates
        assert scores[found] == pytest.approx(scores.max(), abs=1e-4)
