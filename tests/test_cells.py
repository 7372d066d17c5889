"""Cells against independent references: NumPy (all cells and forms), Flax's cells with
copied weights (pins the gate order and the GRU form), gradients by finite differences."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rnn_jax import LSTM, make_cell, recurrent_block, run

from . import reference
from .conftest import as_numpy, assert_tree_close, random_carry, random_params

BATCH, INPUT, HIDDEN, STEPS = 3, 4, 5, 6


def test_cell_steps_match_numpy(cell_case):
    cell, ref_step = cell_case
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    carry = random_carry(cell, jax.random.key(1), BATCH, HIDDEN)
    xs = jax.random.normal(jax.random.key(2), (BATCH, STEPS, INPUT))
    ref_carry, ref_ys = reference.run(ref_step, as_numpy(params), xs, as_numpy(carry))
    step = jax.jit(cell.step)
    for t in range(STEPS):
        carry, h = step(params, carry, xs[:, t])
        np.testing.assert_allclose(h, ref_ys[:, t], atol=1e-5, rtol=1e-5)
    assert_tree_close(carry, ref_carry)


def test_cell_gradients_match_finite_differences(cell_case):
    cell, _ = cell_case
    params = random_params(cell, jax.random.key(3), 2, 3)
    carry = random_carry(cell, jax.random.key(4), 2, 3)
    x = jax.random.normal(jax.random.key(5), (2, 2))
    if cell.name == "rnn" and cell.activation == "relu":
        carry = jax.tree.map(lambda c: c + 0.05, carry)  # stay away from relu's kink

    def f(params, carry, x):
        new_carry, h = cell.step(params, carry, x)
        return jnp.sum(jnp.sin(h)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(new_carry))

    check_grads(f, (params, carry, x), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("variant", list(reference.LSTM_VARIANTS))
def test_lstm_variants_match_numpy(variant):
    cell = make_cell("lstm", variant=variant)
    params = random_params(cell, jax.random.key(20), INPUT, HIDDEN)
    carry = random_carry(cell, jax.random.key(21), BATCH, HIDDEN)
    xs = jax.random.normal(jax.random.key(22), (BATCH, STEPS, INPUT))
    step = functools.partial(reference.lstm_variant_step, variant=variant)
    ref_carry, ref_ys = reference.run(step, as_numpy(params), xs, as_numpy(carry))
    carry, ys = run(cell, params, xs, initial_carry=carry)
    np.testing.assert_allclose(ys, ref_ys, atol=1e-5, rtol=1e-5)
    assert_tree_close(carry, ref_carry)
    check_grads(
        lambda p: jnp.sum(jnp.sin(run(cell, p, xs[:, :3], initial_carry=carry)[1])),
        (params,),
        order=1,
        modes=["rev"],
        eps=1e-2,
        atol=2e-2,
        rtol=2e-2,
    )


def test_lstm_variant_structure():
    def params(variant):
        return make_cell("lstm", variant=variant).init(jax.random.key(0), INPUT, HIDDEN)

    assert params("CIFG")["W_hh"].shape == (HIDDEN, 3 * HIDDEN) and "p_f" not in params("CIFG")
    assert set(params("vanilla")) == {"W_xh", "W_hh", "b", "p_i", "p_f", "p_o"}
    assert params("FGR")["W_gg"].shape == (3 * HIDDEN, 3 * HIDDEN)
    assert set(params("NP")) == set(params("standard")) == {"W_xh", "W_hh", "b"}
    # the forget bias lands on the f block wherever it sits, and nowhere without a forget gate
    np.testing.assert_array_equal(np.split(np.asarray(params("NIG")["b"]), 3)[0], 1.0)
    np.testing.assert_array_equal(params("1997")["b"], 0.0)
    with pytest.raises(ValueError, match="unknown LSTM variant 'NXG'"):
        make_cell("lstm", variant="NXG")


@pytest.mark.parametrize("flax_cls", [nnx.OptimizedLSTMCell, nnx.LSTMCell])
def test_lstm_matches_flax_nnx(flax_cls):
    cell = make_cell("lstm")
    params = random_params(cell, jax.random.key(6), INPUT, HIDDEN)
    flax_cell = flax_cls(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    if flax_cls is nnx.OptimizedLSTMCell:
        flax_cell.dense_i.kernel[...] = params["W_xh"]
        flax_cell.dense_h.kernel[...] = params["W_hh"]
        flax_cell.dense_h.bias[...] = params["b"]
    else:  # one Linear per gate: ii, if_, ig, io (no bias) and hi, hf, hg, ho (with bias)
        for k, g in enumerate("ifgo"):
            cols = slice(k * HIDDEN, (k + 1) * HIDDEN)
            getattr(flax_cell, "if_" if g == "f" else "i" + g).kernel[...] = params["W_xh"][:, cols]
            getattr(flax_cell, "h" + g).kernel[...] = params["W_hh"][:, cols]
            getattr(flax_cell, "h" + g).bias[...] = params["b"][cols]
    carry = random_carry(cell, jax.random.key(7), BATCH, HIDDEN)
    xs = jax.random.normal(jax.random.key(8), (BATCH, STEPS, INPUT))
    flax_carry = carry
    for t in range(STEPS):
        carry, h = cell.step(params, carry, xs[:, t])
        flax_carry, flax_h = flax_cell(flax_carry, xs[:, t])
        np.testing.assert_allclose(h, flax_h, atol=1e-5, rtol=1e-5)
    assert_tree_close(carry, flax_carry)


def _negate_z(w, hidden):
    """Flax/PyTorch's z is our 1 - z: negate the z block (index 1 of [r, z, n])."""
    return w.at[..., hidden : 2 * hidden].multiply(-1.0)


def test_gru_reset_after_matches_flax_linen():
    cell = make_cell("gru", reset_after=True)
    params = random_params(cell, jax.random.key(9), INPUT, HIDDEN)
    w_xh, w_hh, b = (_negate_z(params[k], HIDDEN) for k in ("W_xh", "W_hh", "b"))

    def split(a):
        return dict(zip("rzn", jnp.split(a, 3, axis=-1)))

    wx, wh, bx = split(w_xh), split(w_hh), split(b)
    flax_params = {
        "ir": {"kernel": wx["r"], "bias": bx["r"]},
        "iz": {"kernel": wx["z"], "bias": bx["z"]},
        "in": {"kernel": wx["n"], "bias": bx["n"]},
        "hr": {"kernel": wh["r"]},
        "hz": {"kernel": wh["z"]},
        "hn": {"kernel": wh["n"], "bias": params["b_hn"]},
    }
    flax_cell = nn.GRUCell(HIDDEN)
    h = flax_h = jax.random.normal(jax.random.key(10), (BATCH, HIDDEN))
    xs = jax.random.normal(jax.random.key(11), (BATCH, STEPS, INPUT))
    for t in range(STEPS):
        h, y = cell.step(params, h, xs[:, t])
        flax_h, flax_y = flax_cell.apply({"params": flax_params}, flax_h, xs[:, t])
        np.testing.assert_allclose(y, flax_y, atol=1e-5, rtol=1e-5)


def test_gru_reset_after_matches_flax_nnx_without_recurrent_bias():
    cell = make_cell("gru", reset_after=True)
    params = random_params(cell, jax.random.key(12), INPUT, HIDDEN)
    params["b_hn"] = jnp.zeros(HIDDEN)  # nnx.GRUCell has no recurrent bias
    flax_cell = nnx.GRUCell(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    flax_cell.dense_i.kernel[...] = _negate_z(params["W_xh"], HIDDEN)
    flax_cell.dense_i.bias[...] = _negate_z(params["b"], HIDDEN)
    flax_cell.dense_h.kernel[...] = _negate_z(params["W_hh"], HIDDEN)
    h = flax_h = jax.random.normal(jax.random.key(13), (BATCH, HIDDEN))
    xs = jax.random.normal(jax.random.key(14), (BATCH, STEPS, INPUT))
    for t in range(STEPS):
        h, _ = cell.step(params, h, xs[:, t])
        flax_h, _ = flax_cell(flax_h, xs[:, t])
        np.testing.assert_allclose(h, flax_h, atol=1e-5, rtol=1e-5)


def test_gru_forms_differ():
    """The two GRU forms are different functions (guards against one silently aliasing the other)."""
    after, before = make_cell("gru", reset_after=True), make_cell("gru", reset_after=False)
    params = random_params(after, jax.random.key(15), INPUT, HIDDEN)
    h = jax.random.normal(jax.random.key(16), (BATCH, HIDDEN))
    x = jax.random.normal(jax.random.key(17), (BATCH, INPUT))
    params["b_hn"] = jnp.zeros(HIDDEN)
    assert not np.allclose(after.step(params, h, x)[1], before.step(params, h, x)[1], atol=1e-3)


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
def test_lstm_forget_bias_initialisation(forget_bias):
    params = LSTM(forget_bias=forget_bias).init(jax.random.key(0), INPUT, HIDDEN)
    i, f, g, o = np.split(np.asarray(params["b"]), 4)
    np.testing.assert_array_equal(f, forget_bias)
    for other in (i, g, o):
        np.testing.assert_array_equal(other, 0.0)


def test_parameter_shapes():
    for name, gates in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        params = make_cell(name).init(jax.random.key(0), INPUT, HIDDEN)
        assert params["W_xh"].shape == (INPUT, gates * HIDDEN)
        assert params["W_hh"].shape == (HIDDEN, gates * HIDDEN)
        assert params["b"].shape == (gates * HIDDEN,)
    assert make_cell("gru").init(jax.random.key(0), INPUT, HIDDEN)["b_hn"].shape == (HIDDEN,)
    assert "b_hn" not in make_cell("gru", reset_after=False).init(jax.random.key(0), INPUT, HIDDEN)


@pytest.mark.parametrize("init", ["orthogonal", "identity", "normal"])
@pytest.mark.parametrize("scale", [0.5, 1.3])
def test_recurrent_inits_have_the_requested_spectral_radius(init, scale):
    w = np.asarray(recurrent_block(jax.random.key(1), 16, init, scale), np.float64)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w)).max(), scale, rtol=1e-4)
    if init == "orthogonal":
        np.testing.assert_allclose(w.T @ w, scale**2 * np.eye(16), atol=1e-5)
    if init == "identity":
        np.testing.assert_array_equal(w, np.float32(scale) * np.eye(16))


def test_recurrent_init_applies_per_gate_block():
    params = make_cell("lstm", recurrent_init="orthogonal").init(jax.random.key(2), INPUT, 8)
    blocks = np.split(np.asarray(params["W_hh"]), 4, axis=1)
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)
    assert not np.allclose(blocks[0], blocks[1])


@pytest.mark.parametrize("inner", [0.0, 0.9, 0.99])
def test_ring_init_moves_a_gaussians_eigenvalues_onto_the_ring(inner):
    # Zucchet & Orvieto's map, written from their equation: |l| -> nu_0 + (1 - nu_0) tanh|l|, phase kept
    w = np.asarray(jax.jit(lambda k: recurrent_block(k, 12, "ring", inner))(jax.random.key(3)), np.float64)
    gaussian = np.asarray(jax.random.normal(jax.random.key(3), (12, 12)), np.float64) / np.sqrt(12)
    raw = np.linalg.eigvals(gaussian)
    expected = (inner + (1 - inner) * np.tanh(np.abs(raw))) * np.exp(1j * np.angle(raw))
    found = np.linalg.eigvals(w)
    np.testing.assert_allclose(np.sort_complex(found), np.sort_complex(expected), atol=1e-5)
    assert np.all((np.abs(found) >= inner - 1e-6) & (np.abs(found) < 1))
    with pytest.raises(ValueError, match="ring's inner radius nu_0, which must be in \\[0, 1\\); got 1.0"):
        make_cell("rnn", recurrent_init="ring")


def test_normal_init_under_jit():
    init = jax.jit(lambda k: recurrent_block(k, 8, "normal", 0.9))
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(np.asarray(init(jax.random.key(0))))).max(), 0.9, rtol=1e-4)


@pytest.mark.parametrize("input_init", ["lecun", "glorot"])
def test_input_init_scale(input_init):
    w = np.asarray(make_cell("rnn", input_init=input_init).init(jax.random.key(0), 400, 300)["W_xh"])
    expected_var = 1.0 / 400 if input_init == "lecun" else 2.0 / (400 + 300)
    np.testing.assert_allclose(w.var(), expected_var, rtol=0.05)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: make_cell("lstmm"), "unknown cell 'lstmm'; choose one of: rnn, lstm, gru"),
        (lambda: make_cell("rnn", activation="sigmoid"), "unknown activation 'sigmoid'"),
        (lambda: make_cell("rnn", recurrent_init="eye"), "unknown recurrent init 'eye'"),
        (lambda: make_cell("gru", input_init="he"), "unknown input init 'he'"),
        (lambda: make_cell("lstm", reset_after=True), r"cell 'lstm' has no option\(s\) \['reset_after'\]"),
        (lambda: make_cell("lstm").init(jax.random.key(0), 3, 0), "hidden_size must be a positive integer, got 0"),
        (lambda: make_cell("gru").init(jax.random.key(0), -1, 4), "input_size must be a positive integer, got -1"),
    ],
)
def test_bad_cell_configuration_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
