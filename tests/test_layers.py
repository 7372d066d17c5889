"""Flax NNX modules over the pure core, and the split-once jitted train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rnn_jax import (
    Recurrent,
    RecurrentStack,
    SequenceModel,
    StackOptions,
    init_train_state,
    make_cell,
    make_eval_step,
    make_train_step,
    run,
)
from rnn_jax.losses import sequence_cross_entropy

from .conftest import assert_tree_close

BATCH, TIME, INPUT, HIDDEN, VOCAB = 2, 6, 3, 8, 7


def param_values(d):
    return {k: v[...] for k, v in d.items()}


def test_recurrent_layer_calls_the_pure_run():
    cell = make_cell("gru")
    layer = Recurrent(cell, INPUT, HIDDEN, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    assert_tree_close(layer(xs), run(cell, param_values(layer.forward), xs), atol=0, rtol=0)
    assert set(nnx.state(layer, nnx.Param)["forward"]) == {"W_xh", "W_hh", "b", "b_hn"}


def test_stack_composes_layers_and_bidirectional_doubles_features():
    cell = make_cell("lstm")
    stack = RecurrentStack(
        cell, INPUT, HIDDEN, options=StackOptions(num_layers=2, bidirectional=True), rngs=nnx.Rngs(0)
    )
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    lengths = jnp.array([TIME, 3])
    mask = jnp.arange(TIME)[None] < lengths[:, None]
    carries, ys = stack(xs, mask=mask)
    assert ys.shape == (BATCH, TIME, 2 * HIDDEN) and stack.output_size == 2 * HIDDEN
    hidden = xs
    for layer, carry in zip(stack.layers, carries):
        expected_carry, hidden = layer(hidden, mask=mask)
        assert_tree_close(carry, expected_carry, atol=0, rtol=0)
    np.testing.assert_array_equal(ys, hidden)


def test_dropout_between_layers_only_with_a_key():
    model = SequenceModel(
        make_cell("rnn"),
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        output_size=VOCAB,
        stack=StackOptions(num_layers=3, dropout=0.5),
        rngs=nnx.Rngs(0),
    )
    tokens = jax.random.randint(jax.random.key(1), (BATCH, TIME), 0, VOCAB)
    eval_a, _ = model(tokens)
    eval_b, _ = model(tokens)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = model(tokens, dropout_key=jax.random.key(2))
    train_b, _ = model(tokens, dropout_key=jax.random.key(2))
    train_c, _ = model(tokens, dropout_key=jax.random.key(3))
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_c)
    single = SequenceModel(
        make_cell("rnn"),
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        output_size=VOCAB,
        stack=StackOptions(dropout=0.5),
        rngs=nnx.Rngs(0),
    )
    np.testing.assert_array_equal(single(tokens, dropout_key=jax.random.key(2))[0], single(tokens)[0])


def test_model_with_real_valued_inputs_and_carries():
    model = SequenceModel(
        make_cell("gru", reset_after=False),
        input_size=INPUT,
        hidden_size=HIDDEN,
        output_size=1,
        stack=StackOptions(num_layers=2),
        rngs=nnx.Rngs(0),
    )
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    ys, carries = model(xs)
    assert ys.shape == (BATCH, TIME, 1) and len(carries) == 2
    # continuing from the final carries equals running the concatenated sequence
    ys_first, carries_first = model(xs[:, :4])
    ys_second, _ = model(xs[:, 4:], initial_carries=carries_first)
    np.testing.assert_allclose(jnp.concatenate([ys_first, ys_second], 1), ys, atol=1e-6)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda r: SequenceModel(make_cell("rnn"), hidden_size=4, output_size=2, rngs=r),
            r"give vocab_size \(token inputs\) or input_size",
        ),
        (
            lambda r: RecurrentStack(make_cell("rnn"), 3, 4, options=StackOptions(num_layers=0), rngs=r),
            "num_layers must be >= 1",
        ),
        (
            lambda r: RecurrentStack(make_cell("rnn"), 3, 4, options=StackOptions(dropout=1.0), rngs=r),
            r"dropout must be in \[0, 1\)",
        ),
        (lambda r: Recurrent(make_cell("lstm"), 3, 0, rngs=r), "hidden_size must be a positive integer, got 0"),
    ],
)
def test_bad_model_configuration(build, message):
    with pytest.raises(ValueError, match=message):
        build(nnx.Rngs(0))


def _char_model(name, seed=0, **options):
    return SequenceModel(
        make_cell(name), vocab_size=VOCAB, hidden_size=HIDDEN, output_size=VOCAB, rngs=nnx.Rngs(seed), **options
    )


def _batch():
    tokens = jax.random.randint(jax.random.key(5), (BATCH, TIME + 1), 0, VOCAB)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_train_step_learns_a_fixed_batch(name):
    optimizer = optax.adam(3e-2)
    graphdef, state = init_train_state(
        _char_model(name, stack=StackOptions(num_layers=2, dropout=0.1)), optimizer, jax.random.key(0)
    )
    step, evaluate = make_train_step(graphdef, optimizer), make_eval_step(graphdef)
    batch = _batch()
    initial = float(evaluate(state.params, batch).loss)
    for _ in range(40):
        state, out = step(state, batch)
    assert int(state.step) == 40 and np.isfinite(float(out.grad_norm))
    assert float(evaluate(state.params, batch).loss) < 0.5 * initial


def test_split_once_step_equals_nnx_jit_step():
    """The pure step (graph split once, outside jit) computes exactly what the idiomatic
    `nnx.jit` + `nnx.Optimizer` step computes."""
    optimizer = optax.adam(1e-2)
    batch = _batch()
    graphdef, state = init_train_state(_char_model("lstm"), optimizer, jax.random.key(0))
    step = make_train_step(graphdef, optimizer)
    for _ in range(3):
        state, _ = step(state, batch)

    model = _char_model("lstm")
    nnx_optimizer = nnx.Optimizer(model, optimizer, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, nnx_optimizer, batch):
        grads = nnx.grad(lambda m: sequence_cross_entropy(m(batch["inputs"])[0], batch).loss)(model)
        nnx_optimizer.update(model, grads)

    for _ in range(3):
        nnx_step(model, nnx_optimizer, batch)
    assert_tree_close(nnx.state(model, nnx.Param), state.params, atol=1e-6, rtol=1e-6)


def test_masked_loss_ignores_padding():
    graphdef, state = init_train_state(_char_model("gru"), optax.sgd(0.1), jax.random.key(0))
    evaluate = make_eval_step(graphdef)
    batch = _batch()
    mask = jnp.array([[1] * TIME, [1] * 3 + [0] * (TIME - 3)], bool)
    other_targets = batch["targets"].at[1, 3:].set(0)
    a = evaluate(state.params, {**batch, "mask": mask}).loss
    b = evaluate(state.params, {**batch, "targets": other_targets, "mask": mask}).loss
    assert float(a) == float(b)
