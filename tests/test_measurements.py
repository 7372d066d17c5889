"""Your own measurement (`rnn_jax.measurements`) with one seed or several stacked: whatever
pytree of arrays it returns (an array, a list, a tuple, a dict) is recorded by its path for
every seed and summarised over the seeds; anything else is one clear error."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gradient_flow
from rnn_jax.measurements import MEASUREMENTS, register_measurement

from .test_gradient_flow_experiment import TINY


def last_norms(state_grads):
    return [jnp.linalg.norm(jax.tree.leaves(g)[-1][:, -1], axis=-1).mean() for g in state_grads]


SHAPES = {  # name -> (the measurement, the paths it is recorded under)
    "shape_array": (lambda model, batch, g: last_norms(g)[0], [""]),
    "shape_list": (lambda model, batch, g: last_norms(g), ["[0]", "[1]"]),
    "shape_tuple": (lambda model, batch, g: (last_norms(g)[0], jnp.ones(3)), ["[0]", "[1]"]),
    "shape_dict": (
        lambda model, batch, g: {"top": last_norms(g)[-1], "all": jnp.stack(last_norms(g))},
        ["['all']", "['top']"],
    ),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    for name, (fn, _) in SHAPES.items():
        fn.__name__ = name
        register_measurement(fn)
    yield
    for name in SHAPES:
        MEASUREMENTS.pop(name, None)


def run(tmp_path, seeds: int) -> dict:
    out = tmp_path / f"seeds{seeds}"
    flags = [*TINY, "--cells", "gru", "--layers", "2", "--spectrum", "0", "--seeds", str(seeds)]
    gradient_flow.main([*flags, "--measure", *SHAPES, "--out", str(out)])
    return json.loads((out / "results.json").read_text())["cells"]["gru"]


@pytest.mark.slow
def test_every_shape_of_measurement_is_recorded_per_seed_and_summarised(tmp_path):
    one, three = run(tmp_path, 1), run(tmp_path, 3)
    for name, (_, paths) in SHAPES.items():
        for record in (one, three):
            assert sorted(record["measurements"][name]) == sorted(paths)
        for seed in ("0", "1", "2"):
            flows = three["seeds"][seed]["flow"]
            assert sorted(flows, key=int) == ["0", "2", "3"]
            assert sorted(flows["2"]["measurements"][name]) == sorted(paths)
    # seed 0 of three equals the one-seed run (same data, same initialisation)
    for name in SHAPES:
        for path in SHAPES[name][1]:
            np.testing.assert_allclose(
                three["seeds"]["0"]["flow"]["2"]["measurements"][name][path],
                one["seeds"]["0"]["flow"]["2"]["measurements"][name][path],
                rtol=1e-5,
            )
    summary = three["measurements"]["shape_list"]["[1]"]["3"]  # a number per seed: mean, interval, each seed
    per_seed = [three["seeds"][s]["flow"]["3"]["measurements"]["shape_list"]["[1]"] for s in ("0", "1", "2")]
    assert summary["per_seed"] == per_seed and summary["mean"] == pytest.approx(np.mean(per_seed))
    assert summary["interval"][0] <= summary["mean"] <= summary["interval"][1]
    ones = three["measurements"]["shape_tuple"]["[1]"]["0"]  # an array per seed: the elementwise mean
    assert ones["mean"] == [1.0, 1.0, 1.0] and len(ones["per_seed"]) == 3


def test_a_measurement_that_returns_no_array_is_one_clear_error(tmp_path):
    @register_measurement
    def shape_text(model, batch, state_grads):
        return {"note": "not an array"}

    try:
        with pytest.raises(SystemExit, match=r"measurement 'shape_text': \['note'\] is a str, not an array"):
            gradient_flow.main([*TINY, "--cells", "gru", "--measure", "shape_text", "--out", str(tmp_path / "run")])
        assert not (tmp_path / "run").exists()  # found before the run folder was made
    finally:
        MEASUREMENTS.pop("shape_text")


def test_a_measurement_of_the_step_context_sees_the_loss_landscape_and_the_optimiser():
    """A measurement of one `Context`: `jax.grad(ctx.loss)` is the step's own gradient (so a
    Hessian-vector product is the curvature of the loss that trains), checked against a
    finite difference of that gradient; `ctx.opt_state` is Adam's state before the update
    (its step count); the built-in profiles come through the same door."""
    import optax
    from flax import nnx

    from rnn_jax import SequenceModel, StepOptions, init_train_state, make_cell, make_train_step
    from rnn_jax.losses import apply, final_step_mse

    def curvature(ctx):
        g = jax.grad(ctx.loss)(ctx.params)
        hvp = jax.jvp(jax.grad(ctx.loss), (ctx.params,), (g,))[1]
        dot = lambda a, b: sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
        eps = 1e-3
        moved = jax.tree.map(lambda p, d: p + eps * d, ctx.params, g)
        difference = jax.tree.map(lambda a, b: (a - b) / eps, jax.grad(ctx.loss)(moved), g)
        return {
            "gHg": dot(g, hvp),
            "finite_difference": dot(g, difference),
            "gg": dot(g, g),
            "adam_count": ctx.opt_state[0].count,
        }

    model = SequenceModel(make_cell("gru"), input_size=2, hidden_size=5, output_size=1, rngs=nnx.Rngs(0))
    optimizer = optax.adam(1e-2)
    graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
    options = StepOptions(loss_fn=final_step_mse, measure_flow=True, measurements=(("curvature", curvature),))
    step = make_train_step(graphdef, optimizer, options)
    batch = {"inputs": jax.random.normal(jax.random.key(1), (4, 7, 2)), "targets": jnp.ones((4,))}
    state, _ = make_train_step(graphdef, optimizer, StepOptions(loss_fn=final_step_mse))(state, batch)
    plain_gradient = jax.grad(lambda p: apply(final_step_mse, nnx.merge(graphdef, p), batch).loss)(state.params)
    _, out = step(state, batch)  # (donates the state)
    record = out.flow["measurements"]["curvature"]
    assert float(record["['adam_count']"]) == 1  # the state the update is about to use: one step taken
    np.testing.assert_allclose(record["['gHg']"], record["['finite_difference']"], rtol=2e-2)
    assert float(record["['gg']"]) == pytest.approx(float(optax.tree.norm(plain_gradient)) ** 2, rel=1e-5)
    assert set(out.flow) == {"by_step", "by_lag", "measurements"}
