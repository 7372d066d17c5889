"""The recurrences linear in h_{t-1} (minGRU, minLSTM, LRU): NumPy references, the parallel scan
against the step-by-step one (outputs, final carries, gradients, masks, reverse, initial carries,
probes), their Lyapunov spectra (diagonal Jacobians: time averages of ln |a_t|), the residual
block, and the selective copying task. (minGRU and minLSTM also run every test of
test_cells.py and test_recurrence.py, as cell cases of conftest.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rnn_jax import ScanOptions, SequenceModel, StackOptions, make_cell, run
from rnn_jax.data import synthetic
from rnn_jax.diagnostics import layer_dynamics

from . import reference
from .conftest import as_numpy, assert_tree_close, random_params

BATCH, TIME, HIDDEN = 3, 7, 5
MASK = (jnp.arange(TIME)[None] >= jnp.array([0, 2, 5])[:, None]) & (
    jnp.arange(TIME)[None] < jnp.array([7, 6, 7])[:, None]
)


def _lru_params(key=0, scale=0.3):
    """LRU parameters, perturbed from their initialisation so every entry matters."""
    cell = make_cell("lru", r_min=0.5, r_max=0.95)
    params = cell.init(jax.random.key(key), HIDDEN, HIDDEN)
    keys = jax.random.split(jax.random.key(key + 1), len(params))
    return cell, {n: p + scale * jax.random.normal(k, p.shape) for k, (n, p) in zip(keys, sorted(params.items()))}


def test_lru_matches_numpy():
    cell, params = _lru_params()
    xs = jax.random.normal(jax.random.key(2), (BATCH, TIME, HIDDEN))
    carry0 = 0.5 * jax.random.normal(jax.random.key(3), (BATCH, 2 * HIDDEN))
    carry, ys = run(cell, params, xs, initial_carry=carry0)
    ref_carry, ref_ys = reference.run(reference.lru_step, as_numpy(params), xs, np.asarray(carry0))
    np.testing.assert_allclose(ys, ref_ys, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(carry, ref_carry, atol=1e-5, rtol=1e-5)
    check_grads(
        lambda p: jnp.sum(jnp.sin(run(cell, p, xs[:, :3])[1])),
        (params,),
        order=1,
        modes=["rev"],
        eps=1e-2,
        atol=2e-2,
        rtol=2e-2,
    )


@pytest.mark.parametrize(("parametrisation", "normalise"), [("direct", False), ("direct", True), ("exp", False)])
def test_lru_students_of_zucchet_and_orvieto_match_numpy(parametrisation, normalise):
    """The LRU's ablation options: lambda learned as (Re, Im) directly, gamma dropped; the same
    recurrence (NumPy, complex numbers) on the parallel and the sequential scan; the initial
    lambdas on the same ring, gamma sqrt(1 - |lambda|^2) where kept."""
    cell = make_cell("lru", r_min=0.5, r_max=0.95, parametrisation=parametrisation, normalise=normalise)
    params = cell.init(jax.random.key(0), HIDDEN, HIDDEN)
    assert ("lam_re" in params) == (parametrisation == "direct") and ("gamma_log" in params) == normalise
    magnitude = np.hypot(*map(np.asarray, cell.lam(params)))
    assert magnitude.min() >= 0.5 - 1e-6 and magnitude.max() <= 0.95 + 1e-6
    if normalise:
        np.testing.assert_allclose(np.exp(np.asarray(params["gamma_log"])), np.sqrt(1 - magnitude**2), rtol=1e-4)
    keys = jax.random.split(jax.random.key(1), len(params))
    params = {n: p + 0.2 * jax.random.normal(k, p.shape) for k, (n, p) in zip(keys, sorted(params.items()))}
    xs = jax.random.normal(jax.random.key(2), (BATCH, TIME, HIDDEN))
    ref_carry, ref_ys = reference.run(reference.lru_step, as_numpy(params), xs, np.zeros((BATCH, 2 * HIDDEN)))
    for scan in ("parallel", "sequential"):
        carry, ys = run(cell, params, xs, scan=scan)
        np.testing.assert_allclose(ys, ref_ys, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(carry, ref_carry, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="parametrisation 'polar': expected exp or direct"):
        make_cell("lru", parametrisation="polar")


def test_lru_initialisation_on_the_ring():
    cell = make_cell("lru", r_min=0.9, r_max=0.999)
    params = cell.init(jax.random.key(0), 64, 64)
    magnitude = np.exp(-np.exp(np.asarray(params["nu_log"])))
    assert magnitude.min() >= 0.9 - 1e-6 and magnitude.max() <= 0.999 + 1e-6
    np.testing.assert_allclose(np.exp(np.asarray(params["gamma_log"])), np.sqrt(1 - magnitude**2), rtol=1e-4)


@pytest.mark.parametrize("parametrisation", ["exp", "direct"])
def test_plain_lru_reads_a_narrow_input_through_a_dense_skip(parametrisation, x64):
    # Zucchet & Orvieto's students: one input read through B and a dense D, no residual block
    cell = make_cell("lru", parametrisation=parametrisation, normalise=parametrisation == "exp")
    params = cell.init(jax.random.key(0), 1, 8, jnp.float64)
    assert params["D"].shape == (1, 8) and cell.sizes(params) == (1, 8)
    xs = jax.random.normal(jax.random.key(1), (3, 20, 1), jnp.float64)
    carry, ys = run(cell, params, xs)
    ref_carry, ref_ys = reference.run(reference.lru_step, as_numpy(params), np.asarray(xs), np.zeros((3, 16)))
    np.testing.assert_allclose(ys, ref_ys, atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(carry, ref_carry, atol=1e-12, rtol=1e-12)


def _cell(name):
    if name == "lru":
        return _lru_params()
    cell = make_cell(name)
    return cell, random_params(cell, jax.random.key(0), HIDDEN, HIDDEN)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["mingru", "minlstm", "lru"])
def test_parallel_scan_equals_the_sequential_scan(name, reverse):
    cell, params = _cell(name)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN))
    carry0 = jax.tree.map(lambda z: z + 0.3, cell.zero_carry((BATCH,), HIDDEN))
    probes = cell.zero_carry((BATCH, TIME), HIDDEN)

    def loss(params, xs, carry0, probes, options):
        carry, ys = run(cell, params, xs, **{**options, "initial_carry": carry0}, probes=probes)
        return jnp.sum(jnp.sin(ys) * jnp.arange(TIME)[None, :, None]) + sum(
            jnp.sum(c**2) for c in jax.tree.leaves(carry)
        )

    def outputs(scan, remat=False):
        options = dict(initial_carry=carry0, mask=MASK, reverse=reverse, scan=scan, remat=remat)
        carry, ys = run(cell, params, xs, **options)
        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(params, xs, carry0, probes, options)
        return carry, ys, grads

    # remat: the step-by-step scan of cell.recur (the sequential form otherwise hoists the gates)
    step_by_step = outputs("sequential", remat=True)
    assert_tree_close(outputs("parallel"), step_by_step, atol=2e-5, rtol=2e-5)
    assert_tree_close(outputs("sequential"), step_by_step, atol=2e-5, rtol=2e-5)


def test_parallel_scan_needs_a_linear_recurrence():
    cell = make_cell("gru")
    with pytest.raises(ValueError, match="linear in the carry; gru is not"):
        run(cell, cell.init(jax.random.key(0), 2, 3), jnp.ones((1, 4, 2)), scan="parallel")


def test_lyapunov_spectrum_of_a_diagonal_recurrence():
    """The Jacobian is diag(a_t): from the coordinate frame, each unit's exponent is its time
    average of ln |a_t| exactly (averaged over the batch here)."""
    cell = make_cell("mingru")
    params = random_params(cell, jax.random.key(0), HIDDEN, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, 30, HIDDEN))
    exponents = layer_dynamics(cell, params, xs, k=HIDDEN, transient=0, frame=jnp.eye(HIDDEN))["lyapunov"]
    keep = 1 - jax.nn.sigmoid(cell.project_inputs(params, xs)[..., :HIDDEN])  # (batch, time, hidden)
    np.testing.assert_allclose(exponents, np.sort(np.mean(np.log(np.asarray(keep)), axis=(0, 1)))[::-1], atol=1e-5)
    lru, params = _lru_params()  # a rotation-scaling per unit: ln |lambda_j|, twice
    exponents = layer_dynamics(lru, params, xs, k=2 * HIDDEN, transient=0, frame=jnp.eye(2 * HIDDEN))["lyapunov"]
    magnitude = np.exp(-np.exp(np.asarray(params["nu_log"])))
    np.testing.assert_allclose(exponents, np.sort(np.repeat(np.log(magnitude), 2))[::-1], atol=1e-5)


@pytest.mark.parametrize("name", ["mingru", "lru"])
def test_residual_blocks(name):
    """The paper's layer: pre-norm residual blocks with an MLP, inputs projected to the hidden
    size; the gradient-flow probes sit on each block's recurrence."""
    from rnn_jax.gradflow import grads_and_flow
    from rnn_jax.losses import final_step_mse

    model = SequenceModel(
        make_cell(name),
        input_size=2,
        hidden_size=8,
        output_size=1,
        stack=StackOptions(num_layers=2, block=True, scan=ScanOptions(scan="parallel")),
        rngs=nnx.Rngs(0),
    )
    batch = synthetic.adding_batch(jax.random.key(0), 4, 12)
    graphdef, params = nnx.split(model, nnx.Param)
    out, grads, flow = grads_and_flow(final_step_mse, graphdef, params, batch, None)
    assert np.isfinite(float(out.loss)) and sorted(flow["by_lag"]) == ["layer0/h", "layer1/h"]
    assert np.all(np.asarray(flow["by_lag"]["layer0/h"]) > 0)
    sequential = SequenceModel(
        make_cell(name),
        input_size=2,
        hidden_size=8,
        output_size=1,
        stack=StackOptions(num_layers=2, block=True),
        rngs=nnx.Rngs(0),
    )
    np.testing.assert_allclose(sequential(batch["inputs"])[0], model(batch["inputs"])[0], atol=2e-5)


def test_selective_copy_task():
    batch = synthetic.selective_copy_batch(jax.random.key(0), 64, length=40, tokens=6)
    inputs, targets, weights = (np.asarray(batch[k]) for k in ("inputs", "targets", "weights"))
    assert inputs.shape == targets.shape == weights.shape == (64, 40 + 1 + 6)
    for row in range(64):
        data = inputs[row, :40][inputs[row, :40] != synthetic.COPY_BLANK]
        assert len(data) == 6 and np.all(data >= 1) and np.all(data <= synthetic.COPY_SYMBOLS)
        assert inputs[row, 40] == synthetic.COPY_DELIMITER
        np.testing.assert_array_equal(targets[row, -6:], data)  # in the order they appeared
    assert weights[:, -6:].all() and not weights[:, :-6].any()
    assert len({tuple(np.flatnonzero(r[:40] != synthetic.COPY_BLANK)) for r in inputs}) > 50  # positions vary
    assert synthetic.selective_copy_baseline() == pytest.approx(np.log(synthetic.COPY_SYMBOLS))
