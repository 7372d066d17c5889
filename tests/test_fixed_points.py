"""Fixed points (`rnn_jax.fixed_points`): a linear map with a known point and eigenvalues, a
two-dimensional system with two attractors and a saddle between them (a registered RNN cell
with set weights), an LSTM against a NumPy Newton iteration on the same weights
(tests/fixed_point_reference.py, written from the papers without this code), and carries of
several layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_jax import SequenceModel, StackOptions, make_cell
from rnn_jax import fixed_points as fp
from rnn_jax.layers import param_values

from . import fixed_point_reference as reference
from .conftest import needs_data


def set_weights(model, layer=0, **weights):
    for name, value in weights.items():
        model.rnn.layers[layer].forward[name][...] = jnp.asarray(value, jnp.float32)


def test_a_linear_map_has_its_one_fixed_point_and_eigenvalues():
    a = np.array([[0.5, 0.2, 0.0], [0.0, -0.3, 0.1], [0.1, 0.0, 0.8]], np.float32)
    b = np.array([1.0, 2.0, -1.0], np.float32)
    candidates = jax.random.normal(jax.random.key(0), (64, 3))
    found = fp.find_fixed_points(lambda h: h @ a.T + b, candidates, fp.FinderOptions(steps=300))
    assert len(found.q) == 1 and found.kind == ["fixed"] and found.q[0] < 1e-10
    np.testing.assert_allclose(found.states[0], np.linalg.solve(np.eye(3) - a, b), rtol=1e-5)
    np.testing.assert_allclose(np.sort(np.abs(found.eigenvalues[0])), np.sort(np.abs(np.linalg.eigvals(a))), 1e-5)
    assert bool(found.stable[0]) and found.unstable_modes[0] == 0


def test_two_attractors_and_the_saddle_between_them():
    """h -> tanh(h W_hh) with W_hh = diag(2, 0.5): stable points (+-a, 0), a = tanh(2a), and a
    saddle at 0 with one unstable mode (eigenvalue 2) and one stable (0.5)."""
    model = SequenceModel(make_cell("rnn"), input_size=1, hidden_size=2, output_size=1, rngs=nnx.Rngs(0))
    set_weights(model, W_xh=np.zeros((1, 2)), W_hh=np.diag([2.0, 0.5]), b=np.zeros(2))
    step = fp.model_step(model, jnp.zeros(1))
    candidates = jax.random.uniform(jax.random.key(1), (256, 2), minval=-1.5, maxval=1.5)
    found = fp.find_fixed_points(step, candidates, fp.FinderOptions(steps=1000))
    order = np.argsort(found.states[:, 0])
    states, modes = found.states[order], found.unstable_modes[order]
    a, _ = reference.newton_fixed_point(lambda v: np.tanh(np.diag([2.0, 0.5]) @ v), np.array([0.8, 0.1]))
    np.testing.assert_allclose(states, [[-a[0], 0.0], [0.0, 0.0], [a[0], 0.0]], atol=1e-6)
    assert modes.tolist() == [0, 1, 0] and found.kind == ["fixed"] * 3
    np.testing.assert_allclose(np.abs(found.eigenvalues[order][1]), [2.0, 0.5], rtol=1e-6)
    assert [p["stable"] for p in np.array(found.to_json())[order]] == [True, False, True]


def lstm_model(input_size=3, hidden=4, seed=0, scale=3.0):
    model = SequenceModel(
        make_cell("lstm"), input_size=input_size, hidden_size=hidden, output_size=1, rngs=nnx.Rngs(seed)
    )
    rng = np.random.default_rng(seed)
    set_weights(model, W_hh=scale * rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden))
    return model


def test_an_lstm_agrees_with_numpy_newton_on_the_same_weights():
    """Every point found is a fixed point of the NumPy LSTM (float64 Newton from it moves it
    by < 1e-5), with the same Jacobian and eigenvalues; the carry (c, h) is one state."""
    model, x = lstm_model(), np.array([0.5, -0.2, 0.1], np.float32)
    params = {k: np.asarray(v, np.float64) for k, v in param_values(model.rnn.layers[0].forward).items()}
    hidden = 4

    def numpy_step(v):  # the state as rnn_jax flattens an LSTM carry: [c, h]
        c, h = reference.lstm_step(params, v[:hidden], v[hidden:], x.astype(np.float64))
        return np.concatenate([c, h])

    step = fp.model_step(model, x)
    inputs = jax.random.normal(jax.random.key(2), (16, 40, 3))
    candidates = fp.sample_candidates(fp.trajectories(model, inputs), fp.FinderOptions(candidates=256, noise=0.5))
    found = fp.find_fixed_points(step, candidates)
    assert len(found.q) >= 1 and found.states.shape[1] == 2 * hidden
    for state, eigenvalues, jacobian in zip(found.states, found.eigenvalues, found.jacobians):
        polished, q = reference.newton_fixed_point(numpy_step, state)
        np.testing.assert_allclose(state, polished, atol=1e-5)
        np.testing.assert_allclose(jacobian, reference.numerical_jacobian(numpy_step, polished), atol=1e-5)
        expected, stable, modes = reference.fixed_point_stability(numpy_step, polished)
        np.testing.assert_allclose(np.sort(np.abs(eigenvalues)), np.sort(np.abs(expected)), atol=1e-5)
        assert int(np.sum(np.abs(eigenvalues) > 1)) == modes


def test_the_trajectories_are_the_model_s_own_states():
    """The sampled states are the carries the model passes through: the last one equals the
    model's final carries (both layers, (c, h) each)."""
    model = SequenceModel(
        make_cell("lstm"),
        input_size=3,
        hidden_size=5,
        output_size=1,
        stack=StackOptions(num_layers=2),
        rngs=nnx.Rngs(0),
    )
    inputs = jax.random.normal(jax.random.key(3), (4, 7, 3))
    states = fp.trajectories(model, inputs)
    _, carries = model(inputs)
    assert states.shape == (4, 7, 2 * 2 * 5)
    np.testing.assert_allclose(states[:, -1], fp.flatten_carries(carries), rtol=1e-5, atol=1e-6)


def test_a_two_layer_gru_s_points_are_joint_fixed_points():
    model = SequenceModel(
        make_cell("gru"), input_size=2, hidden_size=6, output_size=1, stack=StackOptions(num_layers=2), rngs=nnx.Rngs(1)
    )
    step = fp.model_step(model, jnp.array([0.3, -0.3]))
    candidates = fp.sample_candidates(
        fp.trajectories(model, jax.random.normal(jax.random.key(4), (8, 30, 2))), fp.FinderOptions(candidates=64)
    )
    found = fp.find_fixed_points(step, candidates, fp.FinderOptions(candidates=64))
    assert found.states.shape[1] == 12 and len(found.q) >= 1
    residual = np.asarray(step(jnp.asarray(found.states, jnp.float32))) - found.states
    assert np.max(np.abs(residual[np.array(found.kind) == "fixed"])) < 1e-5


def test_duplicates_merge_and_outliers_go():
    states = np.array([[0.0, 0.0], [0.0005, 0.0], [1.0, 1.0], [100.0, 0.0]])
    q = np.array([2e-12, 1e-12, 1e-12, 1e-12])
    merged, merged_q = fp._unique(states, q, 1e-3)
    assert merged.tolist() == [[0.0005, 0.0], [1.0, 1.0], [100.0, 0.0]] and merged_q.tolist() == [1e-12] * 3
    candidates = np.random.default_rng(0).standard_normal((100, 2))
    assert fp._not_outliers(merged, candidates, 10.0).tolist() == [True, True, False]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="fixed_tolerance <= slow_tolerance"):
        fp.FinderOptions(fixed_tolerance=1e-3, slow_tolerance=1e-6)


@pytest.mark.slow
def test_the_quick_flipflop_run_writes_its_points(quick_runs):
    """`python -m experiments.fixed_points --quick`: a GRU trained on the flip-flop, its points
    in fixed_points.json as the issue's format has them, each consistent with its eigenvalues,
    and the two figures."""
    import json

    out = quick_runs["fixed_points"]
    record = json.loads((out / "fixed_points.json").read_text())
    assert record["input"] == [0.0, 0.0, 0.0] and record["task"] == "flipflop"
    gru = record["cells"]["gru"]
    assert gru["stable"] >= 2 and gru["points"]  # memories: at least two attractors
    for point in gru["points"]:
        assert len(point["state"]) == 16 and len(point["eigenvalues"]) == 16
        moduli = np.hypot(*np.array(point["eigenvalues"]).T)
        assert point["unstable_modes"] == int(np.sum(moduli > 1)) and point["stable"] == (point["unstable_modes"] == 0)
        assert point["q"] < (1e-10 if point["kind"] == "fixed" else 1e-6)
    assert (out / "fixed_points.png").exists() and (out / "eigenvalues.png").exists()
    assert (out / "results.json").exists()  # what gradient_flow writes: profiles, spectra, gates


@pytest.mark.slow
def test_a_gradient_flow_run_is_analysed_from_its_checkpoints(quick_runs, tmp_path, capsys):
    """--checkpoint reads a finished gradient_flow run (three cells, adding problem: real inputs)
    and analyses every cell; a folder that is not a run is a clear error."""
    import json

    from experiments import fixed_points as experiment

    run = quick_runs["gradient_flow"]
    flags = ["--candidates", "64", "--finder-steps", "200", "--out", str(tmp_path / "fp")]
    experiment.main(["--checkpoint", str(run), *flags])
    record = json.loads((tmp_path / "fp" / "fixed_points.json").read_text())
    assert list(record["cells"]) == ["rnn", "lstm", "gru"] and record["input"] == [0.0, 0.0]
    assert "fixed points of adding" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--constant has 3 value.*the model reads 2 per step"):
        experiment.main(["--checkpoint", str(run), "--constant", "1", "0", "0", "--out", str(tmp_path / "fp3")])
    with pytest.raises(SystemExit, match="not a run folder"):
        experiment.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "fp2")])


@pytest.mark.slow
@needs_data
def test_fixed_points_train_any_registered_task_first(tmp_path):
    """`fixed_points --task sentiment`: trained as gradient_flow would (a token model, analysed
    under token 0 on held-out sentences), then its points found."""
    import json

    from experiments import fixed_points as experiment

    tiny = ["--cells", "gru", "--steps", "4", "--hidden", "6", "--seq-len", "8", "--batch", "8", "--eval-every", "2"]
    experiment.main(["--task", "sentiment", *tiny, "--candidates", "16", "--out", str(tmp_path / "fp")])
    record = json.loads((tmp_path / "fp" / "fixed_points.json").read_text())
    assert record["task"] == "sentiment" and record["input"] == 0
    assert all(len(p["eigenvalues"]) == 6 for p in record["cells"]["gru"]["points"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["sentiment", "forecast", "char_lm"])
def test_a_task_experiment_s_run_is_analysed(quick_runs, tmp_path, experiment):
    """--checkpoint of a run of a task experiment: its one model, on its validation inputs (token
    models under token 0); an encoder-decoder run is a clear error."""
    import json

    from experiments import fixed_points as fp_experiment

    flags = ["--candidates", "64", "--finder-steps", "200", "--out", str(tmp_path / "fp")]
    fp_experiment.main(["--checkpoint", str(quick_runs[experiment]), *flags])
    record = json.loads((tmp_path / "fp" / "fixed_points.json").read_text())
    assert record["task"] == experiment and list(record["cells"]) == ["lstm"]
    assert all(len(p["eigenvalues"]) == len(p["state"]) for p in record["cells"]["lstm"]["points"])
    if experiment == "sentiment":
        with pytest.raises(SystemExit, match="encoder-decoders"):
            fp_experiment.main(["--checkpoint", str(quick_runs["translate"]), "--out", str(tmp_path / "x")])
