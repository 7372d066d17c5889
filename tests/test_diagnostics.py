"""The Lyapunov spectrum (QR method) against cases with known exponents and against dense
Jacobian products computed the slow way; the gate statistics against known gate values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from rnn_jax import SequenceModel, StackOptions, make_cell
from rnn_jax.diagnostics import layer_dynamics, model_dynamics

HIDDEN, INPUT = 6, 3
XS = jax.random.normal(jax.random.key(1), (3, 40, INPUT))


def spectrum(cell, params, xs=XS, k=HIDDEN, transient=None):
    return np.asarray(
        jax.jit(lambda p, x: layer_dynamics(cell, p, x, k=k, transient=transient))(params, xs)["lyapunov"]
    )


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.2])
@pytest.mark.parametrize("init", ["identity", "orthogonal"])
def test_a_linear_rnn_has_every_exponent_at_the_log_of_its_scale(init, scale):
    """W_hh = a I or s Q (Q orthogonal): every direction grows by exactly that factor per step."""
    cell = make_cell("rnn", activation="linear", recurrent_init=init, recurrent_scale=scale)
    np.testing.assert_allclose(spectrum(cell, cell.init(jax.random.key(0), INPUT, HIDDEN)), np.log(scale), atol=2e-5)


def test_a_diagonal_recurrence_has_the_sorted_log_magnitudes():
    cell = make_cell("rnn", activation="linear")
    diagonal = np.array([0.5, -1.3, 0.9, 1.0, -0.2, 0.7])
    params = {**cell.init(jax.random.key(0), INPUT, HIDDEN), "W_hh": jnp.diag(jnp.asarray(diagonal, jnp.float32))}
    expected = np.sort(np.log(np.abs(diagonal)))[::-1]
    # a random frame aligns with the eigenvectors at the rate of the gaps: long enough to forget it
    xs = jax.random.normal(jax.random.key(1), (2, 400, INPUT))
    np.testing.assert_allclose(spectrum(cell, params, xs, transient=100), expected, atol=1e-4)
    np.testing.assert_allclose(spectrum(cell, params, xs, k=3, transient=100), expected[:3], atol=1e-4)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_the_spectrum_matches_the_dense_jacobian_product(name):
    """Against the dense Jacobians J_t = d carry_t / d carry_(t-1) of one sequence, multiplied the
    slow way (float64): exactly, sum_i lambda_i = (1/T) sum_t ln |det J_t| (the QR factors'
    diagonals multiply to the determinant) and lambda_1 = (1/T) ln ||J_T ... J_1 q_1|| (q_1 the
    frame's first column, no transient); over a longer sequence, after a transient, lambda_1
    approaches (1/T') ln sigma_1 of the product of the last T' Jacobians."""
    cell = make_cell(name, recurrent_scale=1.2)
    with jax.enable_x64(True):  # float64: the smallest directions shrink by e^-10 per step and more
        params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(2), INPUT, HIDDEN))
        xs = jax.random.normal(jax.random.key(3), (1, 150, INPUT), jnp.float64)
        size = ravel_pytree(cell.zero_carry((), HIDDEN))[0].size
        frame = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(0), (size, size))))[0]
        jacobians = step_jacobians(cell, params, xs[0])
        short = spectrum(cell, params, xs[:, :40], k=size, transient=0)
        long = spectrum(cell, params, xs, k=size, transient=30)
    log_det = sum(np.linalg.slogdet(j)[1] for j in jacobians[:40])
    np.testing.assert_allclose(short.sum(), log_det / 40, rtol=1e-9)
    product = np.linalg.multi_dot(jacobians[:40][::-1])
    np.testing.assert_allclose(short[0], np.log(np.linalg.norm(product @ frame[:, 0])) / 40, rtol=1e-6)
    tail = np.eye(size)
    for j in jacobians[30:]:
        tail = j @ tail
        tail /= np.linalg.norm(tail)  # only the direction matters; the scale is tracked below
    log_sigma = sum(np.log(np.linalg.norm(j @ v)) for j, v in _power_directions(jacobians[30:], tail))
    assert long[0] == pytest.approx(log_sigma / 120, abs=0.02)
    assert np.all(np.diff(long) <= 0)


def step_jacobians(cell, params, xs_row) -> list[np.ndarray]:
    """The dense Jacobian d carry_t / d carry_(t-1) of every step of one sequence, from a zero carry."""
    flat, unravel = ravel_pytree(cell.zero_carry((), HIDDEN, xs_row.dtype))
    jacobians = []
    for x_t in xs_row:
        step = lambda f: ravel_pytree(cell.step(params, unravel(f), x_t)[0])[0]  # noqa: E731
        jacobians.append(np.asarray(jax.jacobian(step)(flat), np.float64))
        flat = step(flat)
    return jacobians


def _power_directions(jacobians, normalised_product):
    """(J_t, v_t): the top right-singular vector of the whole product, pushed through each
    factor in turn, so that sum_t ln ||J_t v_t|| = ln sigma_1 of the product (no overflow)."""
    v = np.linalg.svd(normalised_product)[2][0]
    for j in jacobians:
        yield j, v
        v = j @ v / np.linalg.norm(j @ v)


def test_gate_statistics_of_known_gates():
    """Zero weights: the LSTM's gates are sigmoid(bias) (f = sigmoid(1) with the forget bias),
    the GRU's are 1/2; the keep gate's time constant is -1 / ln(keep)."""
    lstm = make_cell("lstm", forget_bias=1.0)
    params = jax.tree.map(jnp.zeros_like, lstm.init(jax.random.key(0), INPUT, HIDDEN))
    params["b"] = lstm.initial_bias(HIDDEN, jnp.float32)
    stats = layer_dynamics(lstm, params, XS)
    f = 1 / (1 + np.exp(-1.0))
    assert float(stats["gates"]["f"]["mean"]) == pytest.approx(f, rel=1e-5)
    assert float(stats["gates"]["i"]["mean"]) == pytest.approx(0.5, rel=1e-5)
    assert float(stats["time_constant"]) == pytest.approx(-1 / np.log(f), rel=1e-4)
    gru = make_cell("gru")
    stats = layer_dynamics(gru, jax.tree.map(jnp.zeros_like, gru.init(jax.random.key(0), INPUT, HIDDEN)), XS)
    assert float(stats["gates"]["z"]["mean"]) == pytest.approx(0.5) and float(stats["gates"]["z"]["high"]) == 0.0
    assert float(stats["time_constant"]) == pytest.approx(1 / np.log(2), rel=1e-4)
    assert layer_dynamics(make_cell("rnn"), make_cell("rnn").init(jax.random.key(0), INPUT, HIDDEN), XS)["gates"] == {}


def test_model_dynamics_by_layer_and_direction():
    model = SequenceModel(
        make_cell("lstm"),
        vocab_size=5,
        hidden_size=4,
        output_size=5,
        stack=StackOptions(num_layers=2, bidirectional=True),
        rngs=nnx.Rngs(0),
    )
    batch = {"inputs": jax.random.randint(jax.random.key(0), (2, 12), 0, 5)}
    dynamics = model_dynamics(model, batch, k=3)
    assert sorted(dynamics) == ["layer0/backward", "layer0/forward", "layer1/backward", "layer1/forward"]
    assert all(d["lyapunov"].shape == (3,) and set(d["gates"]) == {"i", "f", "o"} for d in dynamics.values())
    assert model_dynamics(model, batch, k=20)["layer1/forward"]["lyapunov"].shape == (8,)  # the carry (c, h): 8
    with pytest.raises(ValueError, match="at most 8 exponents"):
        layer_dynamics(
            model.rnn.layers[0].cell,
            {n: p[...] for n, p in model.rnn.layers[0].forward.items()},
            jnp.ones((1, 5, 4)),
            k=9,
        )


# -- the remedies -------------------------------------------------------------------------------


def test_chrono_initialisation():
    """LSTM: b_f = ln U[1, T_max - 1] and b_i = -b_f; GRU: the keep gate 1 - z gets that bias
    (z's bias is its negative); the other parameters are those of the plain initialisation."""
    hidden, t_max = 64, 100
    lstm = make_cell("lstm", chrono_init=t_max)
    params = lstm.init(jax.random.key(0), INPUT, hidden)
    b_i, b_f = np.asarray(params["b"]).reshape(4, hidden)[:2]
    assert np.all((b_f >= 0) & (b_f <= np.log(t_max - 1))) and b_f.std() > 0.5
    np.testing.assert_array_equal(b_i, -b_f)
    plain = make_cell("lstm").init(jax.random.key(0), INPUT, hidden)
    np.testing.assert_array_equal(params["W_hh"], plain["W_hh"])
    cifg = make_cell("lstm", variant="CIFG", chrono_init=t_max).init(jax.random.key(0), INPUT, hidden)
    assert np.all(np.asarray(cifg["b"]).reshape(3, hidden)[0] <= 0)  # i = 1 - f: b_i = -ln U
    gru = make_cell("gru", chrono_init=t_max).init(jax.random.key(0), INPUT, hidden)
    b_z = np.asarray(gru["b"]).reshape(3, hidden)[1]
    assert np.all((-b_z >= 0) & (-b_z <= np.log(t_max - 1)))
    with pytest.raises(ValueError, match="T_max > 2"):
        make_cell("gru", chrono_init=2).init(jax.random.key(0), INPUT, hidden)


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_flow_regularizer_equals_a_slow_reference(name):
    """Pascanu et al.'s Omega and its parameter gradient against a Python loop over steps with
    dense Jacobians and dE/dh from perturbing each state of an unrolled model."""
    from rnn_jax import final_step_mse
    from rnn_jax.gradflow import flow_regularizer, loss_and_pullback
    from rnn_jax.layers import param_values

    model = SequenceModel(make_cell(name), input_size=2, hidden_size=3, output_size=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    batch = {"inputs": jax.random.normal(jax.random.key(0), (2, 5, 2)), "targets": jnp.array([0.5, -1.0])}
    _, pullback, _ = loss_and_pullback(final_step_mse, graphdef, params, batch, None)
    state_grads = pullback(1.0, 0.0)[1]
    omega, grads = jax.value_and_grad(flow_regularizer, argnums=1)(graphdef, params, batch, state_grads)

    def unrolled(params, perturbations):
        """The model step by step; returns (loss, carries); perturbations are added to the carries."""
        m = nnx.merge(graphdef, params)
        cell, cell_params = m.rnn.layers[0].cell, param_values(m.rnn.layers[0].forward)
        carry, carries = cell.zero_carry((2,), 3), []
        for t in range(5):
            carry = jax.tree.map(jnp.add, cell.step(cell_params, carry, batch["inputs"][:, t])[0], perturbations[t])
            carries.append(carry)
        prediction = m.head(cell.hidden(carry))[:, 0]
        return jnp.mean(jnp.square(prediction - batch["targets"])), carries

    zeros = [make_cell(name).zero_carry((2,), 3) for _ in range(5)]
    dE_dh = jax.grad(lambda z: unrolled(params, z)[0])(zeros)  # dE/d carry_t, every path

    def reference(params):
        m = nnx.merge(graphdef, params)
        cell, cell_params = m.rnn.layers[0].cell, param_values(m.rnn.layers[0].forward)
        _, carries = unrolled(params, zeros)
        total = 0.0
        for b in range(2):
            for t in range(1, 5):
                row = lambda tree: jax.tree.map(lambda a: a[b], tree)  # noqa: E731, B023
                v, unravel = ravel_pytree(row(dE_dh[t]))
                x_t = batch["inputs"][b, t]
                step = lambda f: ravel_pytree(cell.step(cell_params, unravel(f), x_t)[0])[0]  # noqa: E731, B023
                jacobian = jax.jacobian(step)(ravel_pytree(row(carries[t - 1]))[0])  # d carry_t / d carry_(t-1)
                total = total + jnp.square(jnp.linalg.norm(v @ jacobian) / jnp.linalg.norm(v) - 1.0)
        return total / 2

    expected, expected_grads = jax.value_and_grad(reference)(params)
    assert float(omega) == pytest.approx(float(expected), rel=1e-5)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6), grads, expected_grads)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_the_leading_exponent_matches_two_nearby_trajectories(name):
    """lambda_1 of the QR method against brute force (Benettin et al. 1980: a trajectory and a
    neighbour 1e-8 away, renormalised every step; tests/fixed_point_reference.py, written
    without this code) on one long sequence of a cell with a strong recurrence, in float64."""
    from . import fixed_point_reference as reference

    with jax.enable_x64(True):
        cell = make_cell(name)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(0), 2, 6))
        params["W_hh"] = params["W_hh"] * 3.0
        xs = jax.random.normal(jax.random.key(1), (1, 3000, 2), jnp.float64)
        found = layer_dynamics(cell, params, xs, k=3, transient=100)
        numpy_params = {k: np.asarray(v) for k, v in params.items()}

        def step(v, x):
            if name == "lstm":
                return np.concatenate(reference.lstm_step(numpy_params, v[:6], v[6:], x))
            return reference.gru_step(numpy_params, v, x)

        size = 12 if name == "lstm" else 6
        brute = reference.lyapunov_two_trajectories(step, np.zeros(size), np.asarray(xs[0]), transient=100)
    np.testing.assert_allclose(float(found["lyapunov"][0]), brute, atol=2e-3)
    assert found["lyapunov"][0] >= found["lyapunov"][1] >= found["lyapunov"][2]


def test_convergence_vectors_and_participation():
    """A diagonal linear recurrence: each Lyapunov vector is one unit (participation 1), every
    sequence has exactly the same exponents (standard error 0, no spread of local exponents);
    a rotation-invariant orthogonal one spreads its directions over many units. Random
    recurrences: the standard error shrinks as the sequences lengthen."""
    cell = make_cell("rnn", activation="linear")
    params = cell.init(jax.random.key(0), 3, 4)
    params["W_hh"] = jnp.diag(jnp.array([0.9, 0.5, 0.3, 0.1]))
    xs = jax.random.normal(jax.random.key(1), (8, 200, 3))
    found = layer_dynamics(cell, params, xs, k=2, transient=50)  # the frame aligned with the top two units
    np.testing.assert_allclose(found["lyapunov"], np.log([0.9, 0.5]), rtol=1e-4)
    np.testing.assert_allclose(found["participation_ratio"], [1.0, 1.0], rtol=1e-3)
    np.testing.assert_allclose(found["lyapunov_stderr"], 0.0, atol=1e-5)
    np.testing.assert_allclose(found["local_spread"], 0.0, atol=1e-4)
    rnn = make_cell("rnn", recurrent_scale=1.5)
    params = rnn.init(jax.random.key(2), 3, 16)
    errors = [
        float(layer_dynamics(rnn, params, jax.random.normal(jax.random.key(3), (16, t, 3)), k=1)["lyapunov_stderr"][0])
        for t in (20, 500)
    ]
    assert errors[1] < errors[0] / 3
    assert 1.0 < float(layer_dynamics(rnn, params, xs, k=1)["participation_ratio"][0]) <= 16.0


def test_time_constants_by_definition():
    """One saturated unit among slow and fast ones: the mean of -1/ln(keep) is dominated by it,
    -1/ln(mean keep) and the quantiles over units are not (each checked against its formula)."""
    from rnn_jax.diagnostics import KEEP_CLIP, time_constants

    keep = jnp.array([[0.5, 0.9, 0.99, 0.9995]] * 3)  # (batch 3, hidden 4), the last unit nearly saturated
    found = {k: float(v) for k, v in time_constants(keep).items()}
    tau = -1.0 / np.log(np.clip(np.array([0.5, 0.9, 0.99, 0.9995]), KEEP_CLIP, 1 - KEEP_CLIP))
    np.testing.assert_allclose(found["time_constant"], tau.mean(), rtol=1e-3)
    np.testing.assert_allclose(found["time_constant_of_mean_keep"], -1 / np.log(np.mean(keep)), rtol=1e-3)
    np.testing.assert_allclose(found["time_constant_median"], np.median(tau), rtol=1e-3)
    np.testing.assert_allclose(found["time_constant_p90"], np.quantile(tau, 0.9), rtol=1e-3)
    np.testing.assert_allclose(found["time_constant_max"], tau.max(), rtol=1e-3)
    assert found["time_constant_median"] < 100 < found["time_constant"]  # the mean is the saturated unit's


def reference_time_constants(keep):
    """The definition in NumPy, float64: each unit's keep gate averaged over the batch and the
    steps, -1 / ln of it, quantiles over units; the mean of -1/ln(keep) over everything."""
    from rnn_jax.diagnostics import KEEP_CLIP

    tau = lambda k: -1.0 / np.log(np.clip(k, KEEP_CLIP, 1 - KEEP_CLIP))  # noqa: E731
    by_unit = tau(keep.reshape(-1, keep.shape[-1]).mean(axis=0))
    return {
        "time_constant": tau(keep).mean(),
        "time_constant_of_mean_keep": tau(keep.mean()),
        "time_constant_median": np.median(by_unit),
        "time_constant_p90": np.quantile(by_unit, 0.9),
        "time_constant_max": by_unit.max(),
    }


@pytest.mark.parametrize("name", ["lstm", "mingru"])
def test_time_constants_are_of_the_whole_trajectory(name):
    """Gates that move with the input (large input weights, inputs of changing scale): the
    LSTM's forget gate and the minGRU's 1 - z run step by step in NumPy (`tests/reference.py`),
    the time constants computed from the whole (batch, time, hidden) trajectory of keep gates
    by the definition; `layer_dynamics` agrees in float64, and an average of per-step quantiles would not."""
    from tests import reference

    hidden, length = 8, 60
    cell = make_cell(name)
    params = cell.init(jax.random.key(3), INPUT, hidden)
    params["W_xh"] = 3.0 * params["W_xh"]
    scale = jnp.where(jnp.arange(length) % 20 < 10, 0.2, 2.0)[None, :, None]  # calm, then loud
    xs = scale * jax.random.normal(jax.random.key(4), (4, length, INPUT))
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(xs, np.float64)
    h = np.zeros((4, hidden))
    carry = (h, h) if name == "lstm" else h
    keeps = []
    for t in range(length):
        if name == "lstm":
            w_x, w_h, b = reference.gate(p, "f", 1, hidden)
            keeps.append(reference.sigmoid(x[:, t] @ w_x + carry[1] @ w_h + b))
            carry, _ = reference.lstm_step(p, carry, x[:, t])
        else:
            keeps.append(1.0 - reference.sigmoid(x[:, t] @ p["W_xh"][:, :hidden] + p["b"][:hidden]))
            carry, _ = reference.mingru_step(p, carry, x[:, t])
    keep = np.stack(keeps, axis=1)  # (batch, time, hidden)
    assert keep.std(axis=1).mean() > 0.05  # the gates do move with the input
    expected = reference_time_constants(keep)
    with jax.enable_x64(True):  # float64: near-saturated gates make -1/ln(keep) ill-conditioned in float32
        p64, x64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, xs))
        found = jax.jit(lambda p, x: layer_dynamics(cell, p, x))(p64, x64)
        for key, value in expected.items():
            np.testing.assert_allclose(float(found[key]), value, rtol=1e-10, err_msg=key)
    per_step = [reference_time_constants(keep[:, t : t + 1]) for t in range(length)]  # the old, wrong way
    assert abs(np.mean([r["time_constant_max"] for r in per_step]) / expected["time_constant_max"] - 1) > 0.05


def test_flow_regularizer_in_the_authors_form_equals_their_code_in_numpy():
    """The authors' form (pascanur/trainingRNNs): Omega and its W_hh gradient for a tanh RNN in
    float64 against `reference.pascanu_omega_authors`, their computation written out; no other
    parameter gets a gradient."""
    from rnn_jax import final_step_mse
    from rnn_jax.gradflow import flow_regularizer, loss_and_pullback

    from . import reference

    with jax.enable_x64(True):
        model = SequenceModel(make_cell("rnn"), input_size=2, hidden_size=4, output_size=1, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        xs = np.random.default_rng(0).normal(size=(3, 6, 2))
        batch = {"inputs": jnp.asarray(xs), "targets": jnp.array([0.5, -1.0, 2.0])}
        _, pullback, _ = loss_and_pullback(final_step_mse, graphdef, params, batch, None)
        state_grads = pullback(1.0, 0.0)[1]
        omega, grads = jax.value_and_grad(flow_regularizer, argnums=1)(
            graphdef, params, batch, state_grads, form="authors"
        )
        cell = {k: np.asarray(v) for k, v in nnx.to_pure_dict(params)["rnn"]["layers"][0]["forward"].items()}
        head = nnx.to_pure_dict(params)["head"]
        expected, expected_w_hh = reference.pascanu_omega_authors(
            cell["W_xh"],
            cell["W_hh"],
            cell["b"],
            np.asarray(head["kernel"]),
            np.asarray(head["bias"]),
            xs,
            np.asarray(batch["targets"]),
        )
        assert float(omega) == pytest.approx(expected, rel=1e-12)
        pure = nnx.to_pure_dict(grads)
        np.testing.assert_allclose(pure["rnn"]["layers"][0]["forward"]["W_hh"], expected_w_hh, rtol=1e-10, atol=1e-14)
        others = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(pure) if "W_hh" not in str(path)]
        assert others and all(not np.any(np.asarray(leaf)) for leaf in others)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_flow_regularizer_in_the_authors_form_for_gated_cells(name):
    """For gated cells the value is the mean over (step, sequence) of (||v J||^2 / ||v||^2 - 1)^2
    with the full dense Jacobian J, the first pair included; the gradient lands on W_hh only. A
    cell without the product h W_hh is refused with the other form named."""
    from rnn_jax import final_step_mse
    from rnn_jax.gradflow import flow_regularizer, loss_and_pullback
    from rnn_jax.layers import param_values

    with jax.enable_x64(True):
        model = SequenceModel(make_cell(name), input_size=2, hidden_size=3, output_size=1, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        batch = {
            "inputs": jax.random.normal(jax.random.key(0), (2, 5, 2), jnp.float64),
            "targets": jnp.array([0.5, -1.0]),
        }
        _, pullback, _ = loss_and_pullback(final_step_mse, graphdef, params, batch, None)
        state_grads = pullback(1.0, 0.0)[1]
        omega, grads = jax.value_and_grad(flow_regularizer, argnums=1)(
            graphdef, params, batch, state_grads, form="authors"
        )
        cell, cell_params = (
            model.rnn.layers[0].cell,
            jax.tree.map(lambda p: p.astype(jnp.float64), param_values(model.rnn.layers[0].forward)),
        )
        carry, terms = cell.zero_carry((2,), 3, jnp.float64), []
        for t in range(5):
            x_t = batch["inputs"][:, t]
            for b in range(2):
                row = lambda tree: jax.tree.map(lambda a: a[b], tree)  # noqa: E731, B023
                v, unravel = ravel_pytree(row(jax.tree.map(lambda g: g[:, t], state_grads[0])))  # noqa: B023
                step = lambda f: ravel_pytree(cell.step(cell_params, unravel(f), x_t[b])[0])[0]  # noqa: E731, B023
                u = v @ jax.jacobian(step)(ravel_pytree(row(carry))[0])
                terms.append((jnp.sum(u**2) / jnp.sum(v**2) - 1.0) ** 2)
            carry = cell.step(cell_params, carry, x_t)[0]
        assert float(omega) == pytest.approx(float(np.mean(terms)), rel=1e-10)
        pure = nnx.to_pure_dict(grads)
        assert np.any(pure["rnn"]["layers"][0]["forward"]["W_hh"])
        others = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(pure) if "W_hh" not in str(path)]
        assert all(not np.any(np.asarray(leaf)) for leaf in others)
    linear = SequenceModel(make_cell("mingru"), input_size=2, hidden_size=3, output_size=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(linear, nnx.Param)
    with pytest.raises(ValueError, match="use --flow-regularizer-form trajectory"):
        flow_regularizer(graphdef, params, batch, linear.probes_for(batch), form="authors")
