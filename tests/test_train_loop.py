"""The shared loop: exact resume, divergence handling, checkpoints and their errors, logs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rnn_jax import (
    Checkpoints,
    History,
    LoopConfig,
    LoopHooks,
    SequenceModel,
    StackOptions,
    StepOptions,
    init_train_state,
    make_cell,
    make_train_step,
    split_seeds,
    stack_seeds,
    train_loop,
)
from rnn_jax.data.text import random_windows

from .conftest import assert_tree_close

VOCAB, HIDDEN = 6, 8
DATA = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, 500), jnp.int32)


def _setup(hidden=HIDDEN, lr=1e-2, dropout=0.1, on_nan="stop"):
    model = SequenceModel(
        make_cell("lstm"),
        vocab_size=VOCAB,
        hidden_size=hidden,
        output_size=VOCAB,
        stack=StackOptions(num_layers=2, dropout=dropout),
        rngs=nnx.Rngs(0),
    )
    optimizer = optax.adam(lr)
    graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
    return (
        state,
        make_train_step(graphdef, optimizer, StepOptions(on_nan=on_nan)),
        make_train_step(graphdef, optimizer, StepOptions(measure_flow=True, on_nan=on_nan)),
    )


def get_batch(step):
    return random_windows(jax.random.fold_in(jax.random.key(1), step), DATA, 4, 10)


def _run(state, step, flow, steps, checkpoints=None, history=None, log_dir=None):
    return train_loop(
        state,
        train_step=step,
        get_batch=get_batch,
        loop=LoopConfig(steps=steps, log_every=1, flow_every=2, checkpoint_every=3),
        hooks=LoopHooks(flow_step=flow, checkpoints=checkpoints, history=history, log_dir=log_dir),
    )


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    state, step, flow = _setup()
    full_state, full_history = _run(state, step, flow, steps=7)

    state, step, flow = _setup()
    checkpoints = Checkpoints(tmp_path / "ckpt")
    _run(state, step, flow, steps=4, checkpoints=checkpoints)  # "killed" after step 4; last checkpoint at 3
    checkpoints.close()
    fresh, step, flow = _setup()
    checkpoints = Checkpoints(tmp_path / "ckpt")
    assert checkpoints.latest_step() == 4  # the final step of a loop is always saved
    restored, extra = checkpoints.restore(fresh, step=3)
    history = History.from_json(extra["history"])
    assert [r["step"] for r in history.train] == [0, 1, 2] and sorted(history.flow) == [0, 2]
    resumed_state, resumed_history = _run(
        restored, step, flow, steps=7, checkpoints=checkpoints, history=history, log_dir=tmp_path / "logs"
    )
    checkpoints.close()
    assert_tree_close(resumed_state, full_state, atol=0, rtol=0)
    assert resumed_history.train == full_history.train
    assert resumed_history.flow == full_history.flow
    assert sorted(resumed_history.flow) == [0, 2, 4, 6]
    assert resumed_history.status == "completed"
    assert History.from_json(json.loads(json.dumps(full_history.to_json()))) == full_history
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(7))
    assert list((tmp_path / "logs" / "tensorboard").iterdir())


def _poisoned(bad_steps):
    """get_batch with out-of-range token ids at `bad_steps`: the embedding lookup fills NaN, so
    the real step's loss and gradient are NaN."""

    def batches(step_number):
        batch = get_batch(step_number)
        return {**batch, "inputs": batch["inputs"] * 0 + 10**6} if step_number in bad_steps else batch

    return batches


def test_divergence_stops_with_the_profile_of_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    state, step, flow = _setup(lr=1e-2)
    checkpoints = Checkpoints(tmp_path / "ckpt")
    good, _ = train_loop(state, train_step=step, get_batch=get_batch, loop=LoopConfig(steps=5))  # steps 0-4
    state, step, flow = _setup(lr=1e-2)
    final, history = train_loop(
        state,
        train_step=step,
        get_batch=_poisoned({5}),
        loop=LoopConfig(steps=10, checkpoint_every=3, flow_every=100),
        hooks=LoopHooks(flow_step=flow, checkpoints=checkpoints),
    )
    checkpoints.close()
    assert history.status == "diverged" and history.diverged_at == 5
    assert np.isfinite(history.last_finite_grad_norm)
    assert Checkpoints(tmp_path / "ckpt").latest_step() == 3
    assert_tree_close(final.params, good.params, atol=0, rtol=0)  # the NaN step changed nothing
    profile = history.flow[5]["by_step"]["layer0/h"]  # measured on the diverging step itself
    assert len(profile) == 10 and not np.all(np.isfinite(profile))


def test_skipped_steps_update_nothing():
    state, step, _ = _setup(dropout=0.0, on_nan="skip")  # the one policy: the step's; the loop reads it
    skipped, history = train_loop(state, train_step=step, get_batch=_poisoned({5, 6}), loop=LoopConfig(steps=10))
    assert history.status == "completed" and history.skipped_steps == [5, 6]
    assert all(np.isfinite(r["loss"]) for r in history.train) and 5 not in [r["step"] for r in history.train]
    state, step, _ = _setup(dropout=0.0, on_nan="skip")  # the same batches without the two poisoned ones
    reference, _ = train_loop(
        state, train_step=step, get_batch=lambda s: get_batch(s if s < 5 else s + 2), loop=LoopConfig(steps=8)
    )
    assert_tree_close(skipped.params, reference.params, atol=0, rtol=0)
    assert_tree_close(skipped.opt_state, reference.opt_state, atol=0, rtol=0)
    with pytest.raises(ValueError, match="unknown --on-nan 'ignore'"):
        StepOptions(on_nan="ignore")


def test_restore_errors_are_explicit(tmp_path):
    state, step, _ = _setup()
    checkpoints = Checkpoints(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoints.restore(state)
    checkpoints.save(state, {"note": "x"})
    checkpoints.wait()
    other, _, _ = _setup(hidden=HIDDEN + 2)
    with pytest.raises(ValueError, match="different model configuration"):
        checkpoints.restore(other)
    restored, extra = checkpoints.restore(state)
    assert extra == {"note": "x"}
    checkpoints.close()


def test_best_checkpoint_tracks_validation_loss(tmp_path):
    state, _, _ = _setup()
    checkpoints = Checkpoints(tmp_path / "ckpt", keep=1)
    for step, val in ((1, 3.0), (2, 1.0), (3, 2.0)):
        checkpoints.save(state.replace(step=jnp.asarray(step)), {"val": val}, eval_metrics={"loss": val})
    checkpoints.wait()
    assert checkpoints.last.all_steps() == [3]
    assert checkpoints.best.best_step() == 2
    checkpoints.close()


def test_best_checkpoint_by_accuracy(tmp_path):
    state, _, _ = _setup()
    checkpoints = Checkpoints(tmp_path / "ckpt", best_by="accuracy")
    for step, (loss, accuracy) in enumerate(((1.0, 0.6), (2.0, 0.8), (0.5, 0.7)), 1):
        checkpoints.save(state.replace(step=jnp.asarray(step)), {}, eval_metrics={"loss": loss, "accuracy": accuracy})
    checkpoints.wait()
    assert checkpoints.best.best_step() == 2  # the highest accuracy, not the lowest loss
    with pytest.raises(ValueError, match="no 'accuracy' to pick the best checkpoint by"):
        checkpoints.save(state.replace(step=jnp.asarray(4)), {}, eval_metrics={"loss": 0.1})
    checkpoints.close()
    with pytest.raises(ValueError, match="unknown --best-by"):
        Checkpoints(tmp_path / "other", best_by="f1")


def test_stateful_windows_continue_the_sequence():
    """Stateful truncated BPTT: window 2 starts from window 1's final carry, so its loss equals
    the loss on those positions of one long forward pass; `reset` starts from zeros."""

    def make_model():
        return SequenceModel(
            make_cell("gru"),
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            output_size=VOCAB,
            stack=StackOptions(num_layers=2),
            rngs=nnx.Rngs(0),
        )

    model = make_model()  # a twin of the one whose (donated) parameters the step consumes
    optimizer = optax.sgd(0.0)  # parameters stay put, so both windows see the same model
    graphdef, state = init_train_state(make_model(), optimizer, jax.random.key(0), stateful_batch=2)
    step = make_train_step(graphdef, optimizer, StepOptions(stateful=True))
    tokens = DATA[:42].reshape(2, 21)
    windows = [
        {"inputs": tokens[:, k : k + 10], "targets": tokens[:, k + 1 : k + 11], "reset": jnp.asarray(k == 0)}
        for k in (0, 10)
    ]
    state, first = step(state, windows[0])
    state, second = step(state, windows[1])
    logits, _ = model(tokens[:, :20])
    whole = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:21])
    assert float(first.loss) == pytest.approx(float(whole[:, :10].mean()), rel=1e-5)
    assert float(second.loss) == pytest.approx(float(whole[:, 10:].mean()), rel=1e-5)
    _, again = step(state, {**windows[1], "reset": jnp.asarray(True)})
    fresh, _ = model(tokens[:, 10:20])
    restart = optax.softmax_cross_entropy_with_integer_labels(fresh, tokens[:, 11:21]).mean()
    assert float(again.loss) == pytest.approx(float(restart), rel=1e-5)


def test_stacked_seeds_stop_one_at_a_time():
    """Two seeds in one vmapped step: a NaN in seed 1 at step 3 stops seed 1 there (its state
    stays that of step 2) while seed 0 trains on, as it would alone."""

    def setup():
        model = SequenceModel(
            make_cell("gru"), vocab_size=VOCAB, hidden_size=HIDDEN, output_size=VOCAB, rngs=nnx.Rngs(0)
        )
        optimizer = optax.adam(1e-2)
        graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
        return graphdef, optimizer, state

    graphdef, optimizer, state = setup()
    poisoned = _poisoned({3})

    def stacked_batch(step):  # seed 0 reads get_batch, seed 1 the poisoned stream
        return jax.tree.map(lambda a, b: jnp.stack([a, b]), get_batch(step), poisoned(step))

    stacked, history = train_loop(
        stack_seeds([state, state]),
        train_step=make_train_step(graphdef, optimizer, StepOptions(seeds=True)),
        get_batch=stacked_batch,
        loop=LoopConfig(steps=6, log_every=1, flow_every=100),
        hooks=LoopHooks(flow_step=make_train_step(graphdef, optimizer, StepOptions(measure_flow=True, seeds=True))),
    )
    assert history.status == "completed" and history.diverged_at == [None, 3]
    seed0, seed1 = split_seeds(history, 2)
    assert seed0.status == "completed" and [r["step"] for r in seed0.train] == list(range(6))
    assert seed1.status == "diverged" and [r["step"] for r in seed1.train] == [0, 1, 2]
    assert not np.all(np.isfinite(seed1.flow[3]["by_step"]["layer0/h"]))  # the profile of the NaN step
    for seed, steps in ((0, 6), (1, 3)):
        graphdef, optimizer, state = setup()
        alone, _ = train_loop(
            state, train_step=make_train_step(graphdef, optimizer), get_batch=get_batch, loop=LoopConfig(steps=steps)
        )
        assert_tree_close(jax.tree.map(lambda a: a[seed], stacked.params), alone.params)


@pytest.mark.parametrize("seeds", [False, True])
def test_evaluation_in_chunks_weights_each_chunk_by_its_rows(seeds):
    """Seven rows in chunks of three (3, 3, 1): the result is the mean over the seven rows, not
    the mean of three chunk means (which would count the last row three times)."""
    from rnn_jax.data.batches import chunks
    from rnn_jax.loop import evaluate_batches
    from rnn_jax.losses import LossOutput

    values = np.arange(7.0)
    batches = chunks({"x": values}, 3)
    if seeds:  # a leading seed axis, as gradient_flow stacks them: seed 1 sees twice the values
        batches = [{"x": np.stack([b["x"], 2 * b["x"]])} for b in batches]

    def step(params, batch, carries):
        mean = jnp.mean(batch["x"], axis=-1)
        return LossOutput(mean, mean, {"accuracy": mean})

    result = evaluate_batches(step, batches, rows_axis=1 if seeds else 0)(None)
    expected = [values.mean(), 2 * values.mean()] if seeds else values.mean()
    np.testing.assert_allclose(result["loss"], expected)
    np.testing.assert_allclose(result["accuracy"], expected)


def test_rmsprop_with_its_accumulator_started_as_in_arjovsky_et_al():
    """`--rmsprop-init 1e-3` against amarshah/complex_RNN's ``rms_prop`` written out in NumPy
    (accumulator 1e-3, decay 0.9, update lr g / sqrt(acc), no epsilon), over three steps of
    element-wise clipped gradients; and the option refused for another optimizer."""
    from rnn_jax import make_clipper, make_optimizer

    lr, grads = 1e-3, [np.array([0.5, -3.0, 1e-4]), np.array([2.0, 0.1, -0.7]), np.array([-1.5, 0.2, 0.0])]
    optimizer = optax.chain(make_clipper(clip_value=1.0), make_optimizer("rmsprop", lr, rmsprop_init=1e-3))
    params = jnp.zeros(3)
    state = optimizer.init(params)
    expected, accumulator = np.zeros(3), np.full(3, 1e-3)
    for g in grads:
        updates, state = optimizer.update(jnp.asarray(g, jnp.float32), state)
        params = optax.apply_updates(params, updates)
        g = np.clip(g, -1.0, 1.0)
        accumulator = 0.9 * accumulator + 0.1 * g**2
        expected = expected - lr * g / np.sqrt(accumulator)
    np.testing.assert_allclose(params, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="--rmsprop-init is RMSProp's"):
        make_optimizer("adam", lr, rmsprop_init=1e-3)


def _packed_steps(losses, actives):
    """(steps, [seeds,] columns) as `StepOutput.packed` lays them out: clipped_grad_norm,
    grad_norm, loss (sorted names), then ``active`` after the step; grad norm 2 x the loss."""
    losses, actives = np.asarray(losses, np.float64), np.asarray(actives, np.float64)
    return np.stack([losses, 2 * losses, losses, actives], axis=-1)


NAMES = ["clipped_grad_norm", "grad_norm", "loss"]


def test_judge_steps_single_run_stop_and_skip():
    """The bookkeeping alone, from packed scalars: a halted NaN step fails the run there; one not
    halted is skipped; neither is a record; the last finite gradient norm is the step before."""
    from rnn_jax.loop import Seeds, diverged_at, judge_steps

    start = Seeds(np.asarray(True), np.asarray(np.nan))
    every_step = lambda step: True  # noqa: E731
    stop = judge_steps([10, 11, 12], _packed_steps([1.0, np.nan, np.nan], [1, 0, 0]), NAMES, start, every_step)
    assert stop.failed == {11: True} and stop.skipped == [] and not stop.seeds.active
    assert [s for s, _ in stop.records] == [10]  # 12: after it stopped
    assert stop.seeds.last_finite_grad_norm == 2.0
    assert diverged_at(None, stop.failed, None) == 11
    skip = judge_steps([10, 11, 12], _packed_steps([1.0, np.inf, 3.0], [1, 1, 1]), NAMES, start, every_step)
    assert skip.failed == {} and skip.skipped == [11] and skip.seeds.active
    assert [s for s, _ in skip.records] == [10, 12] and skip.records[1][1] == {k: v for k, v in zip(NAMES, [3, 6, 3])}
    assert skip.seeds.last_finite_grad_norm == 6.0
    due = judge_steps([10, 11, 12], _packed_steps([1.0, 2.0, 3.0], [1, 1, 1]), NAMES, start, lambda s: s == 12)
    assert [s for s, _ in due.records] == [12]


def test_judge_steps_stacked_seeds_stop_one_at_a_time():
    """Three seeds: seed 1 fails at step 1 (halted), seed 2 is skipped at step 2, seed 0 trains
    on; a seed stopped before (seed 1 at step 2) is not judged again; diverged_at per seed."""
    from rnn_jax.loop import Seeds, diverged_at, judge_steps

    losses = [[1.0, np.nan, 1.0], [1.0, np.nan, 1.0], [1.0, np.nan, np.nan]]
    actives = [[1, 0, 1], [1, 0, 1], [1, 0, 1]]
    start = Seeds(np.ones(3, bool), np.full(3, np.nan))
    out = judge_steps([0, 1, 2], _packed_steps(losses, actives), NAMES, start, lambda s: True)
    assert list(out.failed) == [0] and out.failed[0].tolist() == [False, True, False]
    assert out.skipped == [[2, [2]]]
    assert out.seeds.active.tolist() == [True, False, True]
    assert out.seeds.last_finite_grad_norm.tolist()[0] == 2.0 and np.isnan(out.seeds.last_finite_grad_norm[1])
    assert [s for s, _ in out.records] == [0, 1, 2]
    np.testing.assert_equal(out.records[2][1]["loss"], [1.0, np.nan, np.nan])
    assert diverged_at(None, out.failed, 3) == [None, 0, None]
    assert diverged_at([None, 0, None], {5: np.array([True, True, False])}, 3) == [5, 0, None]
