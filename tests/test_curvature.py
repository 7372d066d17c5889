"""The `hessian` measurement (`rnn_jax.curvature`) against the dense Hessian of `jax.hessian`
and NumPy's eigendecomposition, float64: top eigenvalues overall and per group, interlacing,
eigenvector concentration, the view through Adam's preconditioner; and its errors."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from experiments import gradient_flow
from rnn_jax import SequenceModel, make_cell
from rnn_jax.curvature import adam_lr, hessian, lanczos_top, parameter_groups, sensitivity
from rnn_jax.losses import apply, sequence_mse
from rnn_jax.measurements import Context, named

from .test_gradient_flow_experiment import TINY


def _context(opt_state=None):
    model = SequenceModel(make_cell("rnn"), input_size=2, hidden_size=3, output_size=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    xs = jax.random.normal(jax.random.key(1), (4, 7, 2), jnp.float64)
    batch = {"inputs": xs, "targets": jnp.cumsum(xs[..., :1], axis=1)}
    loss = lambda p: apply(sequence_mse, nnx.merge(graphdef, p), batch).loss  # noqa: E731
    return Context(model, params, batch, [], loss, opt_state=opt_state)


def _jitted(measure, ctx, **kwargs):
    """`measure` on `ctx` as a measured step runs it, inside jit (eagerly it runs 2.7x slower)."""
    return jax.jit(lambda params: measure(dataclasses.replace(ctx, params=params), **kwargs))(ctx.params)


def _dense(ctx):
    theta, unravel = ravel_pytree(ctx.params)
    return np.asarray(jax.hessian(lambda t: ctx.loss(unravel(t)))(theta))


def test_top_eigenvalues_equal_the_dense_hessians_overall_and_per_group(x64):
    ctx = _context()
    result = _jitted(hessian, ctx, argument="2")
    dense = _dense(ctx)
    values, vectors = np.linalg.eigh(dense)
    np.testing.assert_allclose(result["all"]["eigenvalues"], values[::-1][:2], rtol=1e-8)
    np.testing.assert_allclose(
        result["all"]["effective_coordinates"], 1 / np.sum(vectors[:, ::-1][:, :2] ** 4, 0), rtol=1e-6
    )
    assert np.max(result["all"]["residuals"]) < 1e-8 * abs(values).max()
    groups = parameter_groups(ctx.params)
    assert set(groups) == {"recurrent", "input", "bias", "readout"}
    for name, mask in groups.items():
        block = np.linalg.eigvalsh(dense[np.ix_(mask, mask)])
        np.testing.assert_allclose(result[name]["eigenvalues"], block[::-1][:2], rtol=1e-8, atol=1e-12)
        assert result["all"]["eigenvalues"][0] >= result[name]["eigenvalues"][0]  # interlacing
    shares = result["all"]["top_vector_share"]
    top = vectors[:, -1]
    for name, mask in groups.items():
        assert float(shares[name]) == pytest.approx(np.sum(top[mask] ** 2), rel=1e-6, abs=1e-12)


def test_lanczos_on_a_large_operator_finds_the_top_of_a_known_spectrum(x64):
    """40 Krylov steps on a 500-dimensional diagonal operator with a gap find its top two."""
    spectrum = jnp.concatenate([jnp.array([10.0, 7.0]), jnp.linspace(-1.0, 3.0, 498)])
    start = jax.random.normal(jax.random.key(0), (500,), jnp.float64)
    values, vectors, residuals = lanczos_top(lambda v: spectrum * v, start, 40, 2)
    np.testing.assert_allclose(values, [10.0, 7.0], rtol=1e-8)
    assert float(jnp.abs(vectors[0, 0])) == pytest.approx(1.0, abs=1e-6) and np.all(residuals < 1e-6)


def test_through_adams_preconditioner(x64):
    """D = 1 / (sqrt(v_hat) + eps) from Adam's second moment after a few steps; the top eigenvalue
    of D^(1/2) H D^(1/2) and D's quantiles per group, against NumPy."""
    ctx = _context()
    optimizer = optax.adam(1e-2)
    params, state = ctx.params, optimizer.init(ctx.params)
    for _ in range(3):
        updates, state = optimizer.update(jax.grad(ctx.loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    ctx = _context(opt_state=state)
    result = _jitted(hessian, ctx)["adam"]
    nu = np.asarray(ravel_pytree(state[0].nu)[0])
    scale = 1 / (np.sqrt(nu / (1 - 0.999**3)) + 1e-8)
    dense = _dense(ctx)
    expected = np.linalg.eigvalsh(np.sqrt(scale)[:, None] * dense * np.sqrt(scale)[None])[-1]
    assert float(result["preconditioned_top"]) == pytest.approx(expected, rel=1e-8)
    alone = adam_lr(ctx)  # the same quantiles without the Hessian
    for name, mask in parameter_groups(ctx.params).items():
        for q, key in ((10, "p10"), (50, "median"), (90, "p90")):
            assert float(result["scale"][name][key]) == pytest.approx(np.percentile(scale[mask], q), rel=1e-10)
            assert float(alone[name][key]) == float(result["scale"][name][key])
    assert adam_lr(_context()) is None  # no optimiser state: nothing to measure


def test_bad_arguments_are_clear_errors(x64):
    ctx = _context()
    for argument in ("0", "x", "1000"):
        with pytest.raises(ValueError, match=r"hessian:.* K must be an integer from 1 to the smallest group"):
            hessian(ctx, argument=argument)
    with pytest.raises(ValueError, match="takes no argument"):
        named("flow_profile:3")


@pytest.mark.slow
def test_a_run_records_the_hessian_of_stacked_seeds(tmp_path):
    """Two seeds in one vmapped step (the batched eigh that hung XLA:CPU runs seed by seed), each
    seed's top eigenvalue that of its own single-seed run."""
    out, alone = tmp_path / "hessian", tmp_path / "alone"
    gradient_flow.main([*TINY, "--cells", "gru", "--seeds", "2", "--measure", "hessian:2", "--out", str(out)])
    record = json.loads((out / "results.json").read_text())["cells"]["gru"]["measurements"]["hessian:2"]
    top = record["['all']['eigenvalues']"]["3"]["mean"]  # the top two, largest first
    assert top[0] >= top[1] and top[0] >= record["['recurrent']['eigenvalues']"]["3"]["mean"][0]
    assert "['adam']['preconditioned_top']" in record
    gradient_flow.main([*TINY, "--cells", "gru", "--seed", "1", "--measure", "hessian:2", "--out", str(alone)])
    single = json.loads((alone / "results.json").read_text())["cells"]["gru"]["measurements"]["hessian:2"]
    second = record["['all']['eigenvalues']"]["3"]["per_seed"][1]
    np.testing.assert_allclose(second, single["['all']['eigenvalues']"]["3"]["per_seed"][0], rtol=1e-4)


def test_eigh_seed_by_seed_under_vmap_is_numpys(x64):
    from rnn_jax.curvature import _eigh

    matrices = np.random.default_rng(0).normal(size=(3, 2, 6, 6))
    matrices = matrices + np.swapaxes(matrices, -1, -2)
    values, vectors = jax.jit(jax.vmap(jax.vmap(_eigh)))(jnp.asarray(matrices))
    np.testing.assert_allclose(values, np.linalg.eigh(matrices)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.abs(vectors), np.abs(np.linalg.eigh(matrices)[1]), atol=1e-10)


def _scalar_linear_model(lam):
    """h_t = lam h_(t-1) + x_t: the linear `rnn`, one unit, W_xh = 1, b = 0, W_hh = lam."""
    model = SequenceModel(
        make_cell("rnn", activation="linear"), input_size=1, hidden_size=1, output_size=1, rngs=nnx.Rngs(0)
    )
    layer = model.rnn.layers[0].forward
    layer["W_xh"].value, layer["W_hh"].value = jnp.ones((1, 1), jnp.float64), jnp.full((1, 1), lam, jnp.float64)
    layer["b"].value = jnp.zeros((1,), jnp.float64)
    return model


@pytest.mark.parametrize(("lam", "rho"), [(0.5, 0.0), (0.9, 0.0), (0.9, 0.9), (0.97, 0.5)])
def test_sensitivity_of_a_scalar_linear_recurrence_is_the_closed_form(lam, rho, x64):
    """E (dh_t/dlam)^2 on 10,000 sequences of stationary AR(1) input (rho = 0: white noise): within
    4 standard errors of the exact finite-t value at the last step, itself the limit
    (1 + lam^2) / (1 - lam^2)^3 (white noise) or the AR(1) closed form to 1e-6 by then."""
    from .sensitivity_reference import ar1_limit, finite_t, white_noise_limit

    time, n = 400, 10_000
    model = _scalar_linear_model(lam)
    eps = np.random.default_rng(0).normal(size=(n, time))
    xs = np.empty_like(eps)
    xs[:, 0] = eps[:, 0]
    for t in range(1, time):
        xs[:, t] = rho * xs[:, t - 1] + np.sqrt(1 - rho**2) * eps[:, t]
    graphdef, params = nnx.split(model)
    ctx = Context(model, params, {"inputs": jnp.asarray(xs[..., None])}, [], lambda p: 0.0)
    measured = float(sensitivity(ctx)["layer0"]["by_step"][-1])
    exact = finite_t(lam, time, rho)  # step index time - 1 has read inputs x_1 ... x_time
    limit = white_noise_limit(lam) if rho == 0 else ar1_limit(lam, rho)
    assert exact == pytest.approx(limit, rel=1e-6)
    assert abs(measured - exact) < 4 * exact * np.sqrt(2 / n), (measured, exact)


@pytest.mark.slow
def test_sensitivity_is_recorded_beside_the_flow(tmp_path):
    out = tmp_path / "sensitivity"
    gradient_flow.main([*TINY, "--cells", "lru", "--measure", "sensitivity", "--out", str(out)])
    record = json.loads((out / "results.json").read_text())["cells"]["lru"]["measurements"]["sensitivity"]
    assert record["['layer0']['mean']"]["3"]["mean"] > 0 and len(record["['layer0']['by_step']"]["3"]["mean"]) == 6


@pytest.mark.slow
def test_a_teacher_run_records_both_stories(tmp_path):
    """The teacher task with the curvature measurements beside the gradient flow; results.json
    states the teacher's eigenvalues and memory."""
    out = tmp_path / "teacher"
    args = [*TINY, "--task", "teacher", "--teacher-nu", "0.95", "--cells", "rnn", "lru"]
    gradient_flow.main([*args, "--measure", "sensitivity", "hessian", "adam_lr", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    info = results["task"]
    assert info["nu"] == 0.95 and min(np.hypot(info["eigenvalues"]["real"], info["eigenvalues"]["imag"])) >= 0.95
    for cell in ("rnn", "lru"):
        measured = results["cells"][cell]["measurements"]
        assert {"sensitivity", "hessian", "adam_lr"} <= set(measured) and cell in results["cells"]
    assert all((out / name).exists() for name in ("hessian.png", "adam_lr.png", "sensitivity.png"))
