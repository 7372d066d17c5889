"""The scanned layer: hoisted/fused scan vs a per-step loop and NumPy, masks and lengths,
reverse and bidirectional against per-sequence references, unroll/remat, the hand-written
backward pass against autodiff, bf16, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnn_jax import fused as fused_pass
from rnn_jax import make_cell, run, run_bidirectional
from rnn_jax.cells import LSTM_VARIANTS

from . import reference
from .conftest import CELL_CASES, as_numpy, assert_tree_close, random_carry, random_params

BATCH, TIME, INPUT, HIDDEN = 3, 7, 4, 5
LENGTHS = np.array([7, 4, 1])


@pytest.fixture
def setup(cell_case):
    cell, ref_step = cell_case
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    carry0 = random_carry(cell, jax.random.key(2), BATCH, HIDDEN)
    return cell, ref_step, params, xs, carry0


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_numpy_and_step_loop(setup, reverse):
    cell, ref_step, params, xs, carry0 = setup
    carry, ys = jax.jit(lambda p, x, c: run(cell, p, x, initial_carry=c, reverse=reverse))(params, xs, carry0)
    ref_carry, ref_ys = reference.run(ref_step, as_numpy(params), xs, as_numpy(carry0), reverse=reverse)
    np.testing.assert_allclose(ys, ref_ys, atol=1e-5, rtol=1e-5)
    assert_tree_close(carry, ref_carry)
    # the hoisted projection + scan equals the cell's own step applied in a Python loop
    loop_carry, loop_ys = carry0, [None] * TIME
    for t in reversed(range(TIME)) if reverse else range(TIME):
        loop_carry, loop_ys[t] = cell.step(params, loop_carry, xs[:, t])
    np.testing.assert_allclose(ys, jnp.stack(loop_ys, 1), atol=1e-6, rtol=1e-6)


def test_zero_initial_carry_by_default(setup):
    cell, _, params, xs, _ = setup
    zeros = cell.zero_carry((BATCH,), HIDDEN)
    assert_tree_close(run(cell, params, xs), run(cell, params, xs, initial_carry=zeros), atol=0, rtol=0)


def _loss(cell, **options):
    def loss(params, xs, carry0):
        carry, ys = run(cell, params, xs, initial_carry=carry0, **options)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


@pytest.mark.parametrize(
    "options", [dict(unroll=3), dict(remat=True), dict(unroll=2, remat=True), dict(remat=3), dict(remat=7)], ids=str
)
def test_unroll_and_remat_give_identical_values_and_gradients(setup, options):
    cell, _, params, xs, carry0 = setup
    base = _loss(cell, lengths=LENGTHS)(params, xs, carry0)
    other = _loss(cell, lengths=LENGTHS, **options)(params, xs, carry0)
    assert_tree_close(other, base, atol=1e-6, rtol=1e-6)


def _fused_and_autodiff_gradients(cell, params, xs, carry0, **options):
    """Gradients w.r.t. (params, xs, initial carry, probes) of both backward passes, with a
    mask padding on both sides and gradient-flow probes."""
    mask = jnp.arange(TIME)[None, :] >= jnp.array([0, 2, 5])[:, None]
    mask = mask & (jnp.arange(TIME)[None, :] < jnp.array([7, 6, 7])[:, None])
    probes = cell.zero_carry((BATCH, TIME), HIDDEN, xs.dtype)

    def loss(params, xs, carry0, probes, backprop):
        carry, ys = run(cell, params, xs, initial_carry=carry0, mask=mask, probes=probes, backprop=backprop, **options)
        return jnp.sum(jnp.sin(ys) * jnp.arange(TIME)[None, :, None]) + sum(
            jnp.sum(c**2) for c in jax.tree.leaves(carry)
        )

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)), static_argnums=4)
    return grad(params, xs, carry0, probes, "fused"), grad(params, xs, carry0, probes, "autodiff")


@pytest.mark.parametrize("hoist_inputs", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_backward_equals_autodiff(setup, reverse, hoist_inputs, monkeypatch):
    if setup[0].linear:
        pytest.skip("no hand-written backward pass for a linear recurrence: autodiff either way")
    cell, _, params, xs, carry0 = setup
    if hoist_inputs:  # as from hidden 1024 on: the projection hoisted and W_hh transposed before the loop
        monkeypatch.setattr(fused_pass, "TRANSPOSE_FROM_HIDDEN", 0)
    fused, autodiff = _fused_and_autodiff_gradients(
        cell, params, xs, carry0, reverse=reverse, hoist_inputs=hoist_inputs
    )
    assert_tree_close(fused, autodiff, scaled=True)
    if hoist_inputs:  # and the hoisted projection gives what the per-step one gives
        assert_tree_close(
            fused, _fused_and_autodiff_gradients(cell, params, xs, carry0, reverse=reverse)[0], scaled=True
        )


@pytest.mark.parametrize("variant", ["vanilla", "FGR", "CIFG", "NOG", "NOAF", "1997"])
def test_fused_backward_equals_autodiff_for_lstm_variants(variant):
    cell = make_cell("lstm", variant=variant)
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    fused, autodiff = _fused_and_autodiff_gradients(
        cell, params, xs, random_carry(cell, jax.random.key(2), BATCH, HIDDEN)
    )
    assert_tree_close(fused, autodiff, scaled=True)


@pytest.mark.parametrize(
    "cell",
    [make_cell("rnn"), make_cell("gru")] + [make_cell("lstm", variant=v) for v in LSTM_VARIANTS],
    ids=lambda cell: f"{cell.name}-{getattr(cell, 'variant', '')}",
)
def test_sums_projections_is_true_only_of_cells_that_read_the_sum(cell):
    """The fused backward pass keeps xw_t + hw_t alone for cells that declare it: their gates must
    depend on the sum only (the GRU's reset gate multiplies hw_t's candidate block: it may not)."""
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    carry = random_carry(cell, jax.random.key(1), BATCH, HIDDEN)
    xw, hw = jax.random.normal(jax.random.key(2), (2, BATCH, params["W_hh"].shape[1]))
    zero = 0.0 if cell.sums_projections else jnp.zeros_like(hw)  # 0.0: what the fused pass passes
    separate, summed = cell.gates(params, carry, xw, hw), cell.gates(params, carry, xw + hw, zero)
    if cell.sums_projections:
        assert_tree_close(summed, separate, atol=1e-6, rtol=1e-6)
    else:
        assert not np.allclose(summed[1], separate[1], atol=1e-3)


FLOAT64_CELLS = [options for _, options, _ in CELL_CASES if options["name"] not in ("mingru", "minlstm")] + [
    {"name": "lstm", "variant": variant} for variant in LSTM_VARIANTS if variant != "standard"
]


@pytest.mark.parametrize("options", FLOAT64_CELLS, ids=lambda o: "-".join(map(str, o.values())))
def test_float64_end_to_end(options, monkeypatch):
    """Under jax_enable_x64 with float64 parameters: the default carry is float64, and the
    hand-written backward pass equals autodiff to 1e-12 (it accumulates in float64, not float32),
    in both directions, with masks and probes, hoisted (with W_hh transposed before the loop, as
    from hidden 1024 on) or not."""
    options = dict(options)
    cell = make_cell(options.pop("name"), **options)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float64), random_params(cell, jax.random.key(0), INPUT, HIDDEN))
        xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
        carry, ys = run(cell, params, xs)
        assert ys.dtype == jnp.float64 and all(c.dtype == jnp.float64 for c in jax.tree.leaves(carry))
        carry0 = jax.tree.map(lambda c: c.astype(jnp.float64), random_carry(cell, jax.random.key(2), BATCH, HIDDEN))
        # both directions for the base cells; the LSTM variants differ only in `gates`
        for reverse, hoist in ((False, False), (True, True))[: 1 if "variant" in options else 2]:
            if hoist:
                monkeypatch.setattr(fused_pass, "TRANSPOSE_FROM_HIDDEN", 0)
            fused, autodiff = _fused_and_autodiff_gradients(
                cell, params, xs, carry0, reverse=reverse, hoist_inputs=hoist
            )
            assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(fused))
            assert_tree_close(fused, autodiff, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_segment_remat_gives_the_same_gradients_with_masks_and_probes(setup, reverse):
    cell, _, params, xs, carry0 = setup
    plain = _fused_and_autodiff_gradients(cell, params, xs, carry0, reverse=reverse)
    segments = _fused_and_autodiff_gradients(cell, params, xs, carry0, reverse=reverse, remat=3)  # 7 = 3 + 3 + 1
    assert_tree_close(segments, plain, atol=1e-5, rtol=1e-5)


def test_scan_gradients_match_finite_differences(cell_case):
    cell, _ = cell_case
    params = random_params(cell, jax.random.key(3), 2, 3)
    xs = jax.random.normal(jax.random.key(4), (2, 4, 2))
    carry0 = random_carry(cell, jax.random.key(5), 2, 3)
    if cell.name == "rnn" and cell.activation == "relu":
        params["b"] = params["b"] + 0.3  # keep pre-activations away from relu's kink

    def f(params, xs, carry0):
        carry, ys = run(cell, params, xs, initial_carry=carry0, lengths=jnp.array([4, 3]))
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

    check_grads(f, (params, xs, carry0), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def _per_sequence(cell, params, xs, carry0, reverse):
    """Reference for right-padded batches: each sequence truncated to its length, run alone."""
    carries, ys = [], np.zeros((BATCH, TIME, HIDDEN))
    for b, length in enumerate(LENGTHS):
        carry_b = jax.tree.map(lambda c: c[b : b + 1], carry0)
        carry_b, ys_b = run(cell, params, xs[b : b + 1, :length], initial_carry=carry_b, reverse=reverse)
        carries.append(carry_b)
        ys[b, :length] = ys_b[0]
    return jax.tree.map(lambda *c: jnp.concatenate(c), *carries), ys


@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_match_per_sequence_runs_and_ignore_padding(setup, reverse):
    cell, _, params, xs, carry0 = setup
    mask = np.arange(TIME)[None, :] < LENGTHS[:, None]
    garbage = jnp.where(mask[..., None], xs, 1e3)  # padded positions must not matter
    carry, ys = run(cell, params, garbage, initial_carry=carry0, lengths=LENGTHS, reverse=reverse)
    carry_mask, ys_mask = run(cell, params, xs, initial_carry=carry0, mask=mask, reverse=reverse)
    ref_carry, ref_ys = _per_sequence(cell, params, xs, carry0, reverse)
    np.testing.assert_allclose(ys, ref_ys, atol=1e-6, rtol=1e-6)
    assert_tree_close(carry, ref_carry, atol=1e-6, rtol=1e-6)
    assert np.all(np.asarray(ys)[~mask] == 0.0)
    assert_tree_close((carry_mask, ys_mask), (carry, ys), atol=0, rtol=0)


def test_padding_gets_no_gradient(setup):
    cell, _, params, xs, carry0 = setup

    def loss(xs):
        carry, ys = run(cell, params, xs, initial_carry=carry0, lengths=LENGTHS)
        return jnp.sum(ys**2) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

    grad = np.asarray(jax.grad(loss)(xs))
    mask = np.arange(TIME)[None, :] < LENGTHS[:, None]
    assert np.all(grad[~mask] == 0.0)
    if not (cell.name == "rnn" and cell.activation == "relu"):  # dead relu units may have none
        assert np.all(np.abs(grad[mask]).sum(-1) > 0)


def test_bidirectional_with_lengths_matches_per_sequence(setup):
    cell, _, params_fw, xs, _ = setup
    params_bw = random_params(cell, jax.random.key(9), INPUT, HIDDEN)
    zeros = cell.zero_carry((BATCH,), HIDDEN)
    (carry_fw, carry_bw), ys = run_bidirectional(cell, (params_fw, params_bw), xs, lengths=LENGTHS)
    ref_fw = _per_sequence(cell, params_fw, xs, zeros, reverse=False)
    ref_bw = _per_sequence(cell, params_bw, xs, zeros, reverse=True)
    assert ys.shape == (BATCH, TIME, 2 * HIDDEN)
    np.testing.assert_allclose(ys[..., :HIDDEN], ref_fw[1], atol=1e-6)
    np.testing.assert_allclose(ys[..., HIDDEN:], ref_bw[1], atol=1e-6)
    assert_tree_close((carry_fw, carry_bw), (ref_fw[0], ref_bw[0]), atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bfloat16_compute_stays_close_to_float32(name):
    cell = make_cell(name)
    params = cell.init(jax.random.key(0), INPUT, 32)
    xs = jax.random.normal(jax.random.key(1), (BATCH, 20, INPUT))
    carry32, ys32 = run(cell, params, xs)
    carry16, ys16 = run(cell, params, xs, compute_dtype=jnp.bfloat16)
    assert ys16.dtype == jnp.float32  # bf16 matmuls, float32 state
    np.testing.assert_allclose(ys16, ys32, atol=3e-2)
    assert float(jnp.max(jnp.abs(ys16 - ys32))) > 0  # it really ran in bf16
    exact = jax.grad(lambda p: jnp.sum(run(cell, p, xs)[1]))(params)
    for backprop in ("fused", "autodiff"):
        grads = jax.grad(lambda p: jnp.sum(run(cell, p, xs, compute_dtype=jnp.bfloat16, backprop=backprop)[1]))(params)
        for name, g in grads.items():  # within 2% of the gradient's scale, float32 master gradients
            assert g.dtype == jnp.float32
            scale = float(jnp.max(jnp.abs(exact[name])))
            np.testing.assert_allclose(g, exact[name], atol=2e-2 * scale, err_msg=f"{backprop} {name}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(xs=np.zeros((TIME, INPUT))), r"xs must be \(batch, time, features\), got shape \(7, 4\)"),
        (dict(xs=np.zeros((BATCH, TIME, INPUT + 1))), "xs has 5 features per step but the cell expects input_size=4"),
        (dict(initial_carry=np.zeros((BATCH, HIDDEN + 1))), "initial_carry for cell"),
        (dict(initial_carry=np.zeros((BATCH + 1, HIDDEN))), "initial_carry for cell"),
        (dict(lengths=LENGTHS, mask=np.ones((BATCH, TIME), bool)), "either `mask`.*or `lengths`"),
        (dict(lengths=np.array([1, 2])), r"`lengths` must have shape \(batch,\)"),
        (dict(mask=np.ones((BATCH, TIME + 1), bool)), r"`mask` must have shape \(batch, time\)"),
        (dict(backprop="manual"), "unknown backprop 'manual'; choose one of: fused, autodiff"),
        (dict(remat=-2), "remat must be a bool or a segment length >= 1, got -2"),
    ],
)
@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_bad_input_raises_a_clear_error(name, kwargs, message):
    cell = make_cell(name)
    params = cell.init(jax.random.key(0), INPUT, HIDDEN)
    kwargs = {"xs": np.zeros((BATCH, TIME, INPUT)), **kwargs}
    if name == "lstm" and "initial_carry" in kwargs:  # a single array where (c, h) is expected
        kwargs["initial_carry"] = np.zeros((BATCH, HIDDEN))
    with pytest.raises(ValueError, match=message):
        run(cell, params, **kwargs)
