"""Gradient-flow measurement: exact on a linear RNN, equal to an unrolled reference, and
free of side effects on the training gradient."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rnn_jax import (
    SequenceModel,
    StackOptions,
    StepOptions,
    decay_rate,
    init_train_state,
    make_cell,
    make_flow_probe,
    make_train_step,
)
from rnn_jax.gradflow import flow_regularizer
from rnn_jax.losses import final_step_mse, sequence_cross_entropy

from .conftest import assert_tree_close

BATCH, TIME, HIDDEN, VOCAB = 3, 12, 6, 5


def _tokens():
    tokens = jax.random.randint(jax.random.key(1), (BATCH, TIME + 1), 0, VOCAB)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


@pytest.mark.parametrize("a", [0.9, 1.1])
def test_linear_rnn_profile_is_exactly_geometric(a):
    """W_hh = a I and a linear activation: dL_T/dh_{T-k} = a**k dL_T/dh_T, exactly."""
    cell = make_cell("rnn", activation="linear", recurrent_init="identity", recurrent_scale=a)
    model = SequenceModel(cell, input_size=2, hidden_size=HIDDEN, output_size=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    batch = {"inputs": jax.random.normal(jax.random.key(2), (BATCH, TIME, 2)), "targets": jnp.ones(BATCH)}
    _, flow = make_flow_probe(graphdef, final_step_mse)(params, batch)
    by_lag = np.asarray(flow["by_lag"]["layer0/h"], np.float64)
    np.testing.assert_allclose(by_lag, a ** np.arange(TIME) * by_lag[0], rtol=1e-5)
    # many-to-one: the training loss is the final-step loss, so the two profiles agree
    np.testing.assert_allclose(flow["by_step"]["layer0/h"][::-1], by_lag, rtol=1e-6)
    assert decay_rate(by_lag, skip=0) == pytest.approx(np.log(a), abs=1e-5)


def test_a_many_to_one_loss_is_its_own_final_step_loss():
    """final_step_mse returns one value as L and L_T: the profile of L_T is read from the training
    loss's backward pass (one backward scan a layer), equal to a second pass's."""
    model = SequenceModel(
        make_cell("lstm"),
        input_size=2,
        hidden_size=HIDDEN,
        output_size=1,
        stack=StackOptions(num_layers=2),
        rngs=nnx.Rngs(0),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    batch = {"inputs": jax.random.normal(jax.random.key(2), (BATCH, TIME, 2)), "targets": jnp.ones(BATCH)}

    def two_values(outputs, batch):  # the same loss, L_T as a value of its own: the second pass runs
        out = final_step_mse(outputs, batch)
        return out._replace(final_step_loss=out.final_step_loss + 0.0)

    flows, scans = [], []
    for loss_fn in (final_step_mse, two_values):
        probe = make_flow_probe(graphdef, loss_fn)
        scans.append(len(re.findall(r"\bscan\[", str(jax.make_jaxpr(probe)(params, batch)))))
        flows.append(probe(params, batch)[1])
    assert scans == [4, 6]  # two layers: a forward and one or two backward scans each
    assert_tree_close(flows[0], flows[1], atol=1e-7, rtol=1e-6)


def _unrolled_state_grads(model, batch, loss_fn_from_logits):
    """Reference: a Python loop over time (no scan, no probes in rnn_jax) with an explicit
    perturbation added to every layer's carry; jax.grad with respect to the perturbations."""
    layers = model.rnn.layers

    def loss(perturbations):
        xs = model.embed(batch["inputs"])
        for layer, eps in zip(layers, perturbations):
            cell, params = layer.cell, {k: v[...] for k, v in layer.forward.items()}
            carry, hs = cell.zero_carry((BATCH,), layer.hidden_size), []
            for t in range(TIME):
                carry, _ = cell.step(params, carry, xs[:, t])
                carry = jax.tree.map(lambda c, e: c + e[:, t], carry, eps)
                hs.append(cell.hidden(carry))
            xs = jnp.stack(hs, 1)
        return loss_fn_from_logits(model.head(xs))

    zeros = [layer.cell.zero_carry((BATCH, TIME), layer.hidden_size) for layer in layers]
    return jax.grad(loss)(zeros)


@pytest.mark.parametrize(
    "name, options", [("lstm", {}), ("gru", {}), ("lstm", {"variant": "FGR"})], ids=["lstm", "gru", "lstm-FGR"]
)
def test_probe_gradients_equal_unrolled_reference(name, options):
    model = SequenceModel(
        make_cell(name, **options),
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        output_size=VOCAB,
        stack=StackOptions(num_layers=2),
        rngs=nnx.Rngs(0),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _tokens()
    _, flow = make_flow_probe(graphdef, sequence_cross_entropy)(params, batch)

    def full_loss(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    def final_loss(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], batch["targets"][:, -1]).mean()

    for profile, loss_of_logits, flip in (("by_step", full_loss, False), ("by_lag", final_loss, True)):
        grads = _unrolled_state_grads(model, batch, loss_of_logits)
        for i, layer_grads in enumerate(grads):
            for component, g in zip(model.rnn.layers[i].cell.carry_names, jax.tree.leaves(layer_grads)):
                expected = np.linalg.norm(np.asarray(g), axis=-1).sum(0)
                measured = np.asarray(flow[profile][f"layer{i}/{component}"])
                np.testing.assert_allclose(measured[::-1] if flip else measured, expected, rtol=1e-5, atol=1e-9)


def test_bidirectional_keys():
    model = SequenceModel(
        make_cell("lstm"),
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        output_size=VOCAB,
        stack=StackOptions(bidirectional=True),
        rngs=nnx.Rngs(0),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    _, flow = make_flow_probe(graphdef)(params, _tokens())
    assert sorted(flow["by_step"]) == ["layer0/backward/c", "layer0/backward/h", "layer0/forward/c", "layer0/forward/h"]
    assert all(v.shape == (TIME,) for v in flow["by_step"].values())


@pytest.mark.parametrize("clip", [None, optax.clip_by_global_norm(1e-3)])
def test_measurement_does_not_change_the_training_step(clip):
    optimizer = optax.adam(1e-2)
    model = SequenceModel(
        make_cell("gru"),
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        output_size=VOCAB,
        stack=StackOptions(num_layers=2, dropout=0.2),
        rngs=nnx.Rngs(0),
    )
    graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
    plain = make_train_step(graphdef, optimizer, StepOptions(clipper=clip))
    measured = make_train_step(graphdef, optimizer, StepOptions(clipper=clip, measure_flow=True))
    batch = _tokens()
    state_a, out_a = plain(jax.tree.map(jnp.copy, state), batch)
    state_b, out_b = measured(state, batch)
    assert_tree_close(state_a, state_b, atol=1e-7, rtol=1e-6)
    assert out_a.flow is None and set(out_b.flow) == {"by_step", "by_lag"}
    assert_tree_close(out_a.scalars(), out_b.scalars(), atol=1e-7, rtol=1e-6)
    if clip is not None:
        assert float(out_a.clipped_grad_norm) == pytest.approx(1e-3, rel=1e-4)
        assert float(out_a.grad_norm) > 1e-3


def test_flow_and_regulariser_share_one_forward_and_backward_pass():
    """With the flow measured and Pascanu's regulariser on, the step runs the loss's forward and
    backward scans once (the flow's and the regulariser's state gradients are the same), plus the
    regulariser's own scans; and measuring changes nothing in the regularised step."""
    optimizer = optax.adam(1e-2)
    model = SequenceModel(make_cell("lstm"), vocab_size=VOCAB, hidden_size=HIDDEN, output_size=VOCAB, rngs=nnx.Rngs(0))
    graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
    batch = _tokens()

    def scans(function, *args):
        return len(re.findall(r"\bscan\[", str(jax.make_jaxpr(function)(*args))))

    steps = {
        (flow, weight): make_train_step(graphdef, optimizer, StepOptions(measure_flow=flow, flow_regularizer=weight))
        for flow, weight in ((True, 0.0), (False, 0.1), (True, 0.1))
    }
    counts = {key: scans(step, state, batch) for key, step in steps.items()}
    regulariser = jax.grad(flow_regularizer, argnums=1)
    state_grads = model.probes_for(batch)  # any values of the right shapes
    own = scans(lambda p, g: regulariser(graphdef, p, batch, g), state.params, state_grads)
    # the flow step: a forward and two backward scans (L and L_T); the regulariser adds only its own
    assert counts[True, 0.1] == counts[True, 0.0] + own
    assert counts[False, 0.1] == counts[True, 0.0] - 1 + own  # without the flow: no L_T pass
    state_a, out_a = steps[False, 0.1](jax.tree.map(jnp.copy, state), batch)
    state_b, out_b = steps[True, 0.1](state, batch)
    assert_tree_close(state_a, state_b, atol=1e-7, rtol=1e-6)
    assert_tree_close(out_a.scalars(), out_b.scalars(), atol=1e-7, rtol=1e-6)
    assert float(out_b.metrics["flow_regularizer"]) > 0


def test_decay_rate_ignores_underflow_and_needs_two_points():
    norms = np.exp(-0.5 * np.arange(10))
    norms[7:] = 0.0
    assert decay_rate(norms) == pytest.approx(-0.5)
    assert np.isnan(decay_rate([1.0, 0.0, 0.0]))


def test_the_summary_reads_the_top_layer_s_hidden_state():
    from rnn_jax.gradflow import top_state

    assert top_state({"layer0/h": 0, "layer1/h": 0, "layer1/c": 0}, 2) == "layer1/h"
    assert top_state({"encoder/layer0/h": 0, "decoder/layer0/c": 0, "decoder/layer0/h": 0}, 1) == "decoder/layer0/h"
    assert top_state({"layer0/backward/h": 0, "layer0/forward/h": 0}, 1) == "layer0/forward/h"
    with pytest.raises(ValueError, match="no profile of the top layer's hidden state"):
        top_state({"layer0/c": 0}, 1)
