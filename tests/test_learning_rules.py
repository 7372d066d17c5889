"""Learning rules (`rnn_jax.learning_rules`): truncated BPTT against a NumPy reference written
from its definition, exact where it must be, the lags it drops on a linear RNN, the alignment
it reports, and clear errors for bad rules."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ablate, gradient_flow
from rnn_jax import CELLS, make_cell
from rnn_jax.learning_rules import alignment, learning_rule
from rnn_jax.measurements import Context
from rnn_jax.recurrence import run

from .test_gradient_flow_experiment import TINY

TIME, BATCH, INPUT, HIDDEN = 12, 3, 2, 4


def _params(cell, key=0, input_size=INPUT):
    params = cell.init(jax.random.key(key), input_size, HIDDEN)
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def _loss(cell, params, xs, rule):
    with learning_rule(rule):
        return jnp.sum(jnp.sin(run(cell, params, xs)[1]))


def rnn_weights(params) -> tuple:
    """(W_xh, W_hh, b) of the tanh RNN as NumPy arrays: the arguments of the NumPy references."""
    return tuple(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b"))


def assert_rule_is_numpy(rule: str, reference) -> tuple:
    """The tanh RNN's gradient of sum(sin(h_t)) under `rule` equals `reference(W_xh, W_hh, b, xs)`
    (a dict by parameter) to 1e-12; returns (cell, params, xs) for further checks."""
    cell = make_cell("rnn")
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    grads = jax.grad(lambda p: _loss(cell, p, xs, rule))(params)
    for name, value in reference(*rnn_weights(params), np.asarray(xs)).items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-12, atol=1e-13)
    return cell, params, xs


def numpy_truncated_bptt(w_x, w_h, b, xs, every):
    """dL/d(W_xh, W_hh, b) of L = sum_t sum(sin(h_t)), h_t = tanh(x_t W_xh + h_(t-1) W_hh + b),
    h_(-1) = 0, by backpropagation through time by hand, the error stopped at the first state of
    every block of `every` steps (block k covers steps k*every ... (k+1)*every - 1)."""
    batch, time, _ = xs.shape
    hs, h = [], np.zeros((batch, w_h.shape[0]))
    for t in range(time):
        h = np.tanh(xs[:, t] @ w_x + h @ w_h + b)
        hs.append(h)
    g_x, g_h, g_b = np.zeros_like(w_x), np.zeros_like(w_h), np.zeros_like(b)
    carried = np.zeros_like(hs[0])  # dL/dh_t through h_(t+1)
    for t in reversed(range(time)):
        dh = np.cos(hs[t]) + carried
        dz = dh * (1 - hs[t] ** 2)
        previous = hs[t - 1] if t > 0 else np.zeros_like(hs[0])
        g_x += xs[:, t].T @ dz
        g_h += previous.T @ dz
        g_b += dz.sum(0)
        carried = np.zeros_like(dz) if t % every == 0 else dz @ w_h.T  # the block starts here: stop
    return {"W_xh": g_x, "W_hh": g_h, "b": g_b}


@pytest.mark.parametrize("every", [1, 4, 5, TIME])
def test_truncated_bptt_equals_numpy_by_hand(every, x64):
    assert_rule_is_numpy(f"truncated:{every}", lambda *args: numpy_truncated_bptt(*args, every))


@pytest.mark.parametrize("name", list(CELLS))
def test_truncation_at_the_sequence_length_is_bptt(name, x64):
    """truncated:T equals bptt to 1e-12 in float64 for every built-in cell (several carry leaves
    included: the LSTM's), and a shorter K differs."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)  # the LRU's D is diagonal: input size = hidden size
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN), jnp.float64)
    full = jax.grad(lambda p: _loss(cell, p, xs, "bptt"))(params)
    same = jax.grad(lambda p: _loss(cell, p, xs, f"truncated:{TIME}"))(params)
    short = jax.grad(lambda p: _loss(cell, p, xs, "truncated:3"))(params)
    for key in full:
        np.testing.assert_allclose(same[key], full[key], rtol=1e-12, atol=1e-14)
    assert any(not np.allclose(short[k], full[k]) for k in full)


def test_on_a_linear_rnn_truncation_drops_exactly_the_lags_beyond_the_block(x64):
    """h_t = a h_(t-1) + x_t (W_hh = a I, W_xh = I, b = 0), L = c . h_(T-1): dL/dx_(T-1-k) = c a^k.
    Truncated in blocks of K with T a multiple of K, the gradient reaches back k = 0 .. K-1
    steps; what it drops is exactly c a^k at every lag k >= K."""
    a, every, c = 0.9, 4, jnp.arange(1.0, HIDDEN + 1, dtype=jnp.float64)
    cell = make_cell("rnn", activation="linear")
    params = {"W_xh": jnp.eye(HIDDEN), "W_hh": a * jnp.eye(HIDDEN), "b": jnp.zeros(HIDDEN)}
    xs = jax.random.normal(jax.random.key(2), (1, TIME, HIDDEN), jnp.float64)

    def input_gradient(rule):
        def loss(xs):
            with learning_rule(rule):
                return jnp.dot(run(cell, params, xs)[1][0, -1], c)

        return np.asarray(jax.grad(loss)(xs))[0][::-1]  # by lag k

    full, short = input_gradient("bptt"), input_gradient(f"truncated:{every}")
    lags = np.arange(TIME)[:, None]
    np.testing.assert_allclose(full, c * a**lags, rtol=1e-12)
    np.testing.assert_allclose(full - short, np.where(lags >= every, c * a**lags, 0.0), rtol=1e-12, atol=1e-15)


def test_alignment_groups_and_its_exact_case(x64):
    """The alignment of a rule's gradient with BPTT's: 1 and 1 where they are equal, and per
    group; the readout's gradient does not depend on temporal credit."""
    cell = make_cell("gru")
    params = {"rnn": _params(cell), "head": {"kernel": jnp.ones((HIDDEN, 1), jnp.float64)}}
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)

    def loss(p):
        return jnp.sum(jnp.sin(run(cell, p["rnn"], xs)[1] @ p["head"]["kernel"]))

    def context(rule):
        with learning_rule(rule):
            grads = jax.grad(loss)(params)
        return Context(None, params, {}, [], loss, grads=grads)

    exact = alignment(context("bptt"))
    assert set(exact) == {"all", "recurrent", "input", "bias", "readout"}
    for group in exact.values():
        assert float(group["cosine"]) == pytest.approx(1.0, abs=1e-12) and float(group["norm_ratio"]) == pytest.approx(
            1.0
        )
    cut = alignment(context("truncated:2"))
    assert float(cut["readout"]["cosine"]) == pytest.approx(1.0, abs=1e-12)
    assert float(cut["recurrent"]["cosine"]) < 0.999


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown learning rule 'nope'"),
        ("truncated", "needs a block length K >= 1"),
        ("truncated:0", "needs a block length K >= 1"),
        ("truncated:x", "needs a block length K >= 1"),
        ("bptt:3", "takes no argument"),
    ],
)
def test_a_bad_rule_is_a_clear_error_before_training(spec, message, capsys):
    with pytest.raises(SystemExit):
        gradient_flow.main([*TINY, "--gradient", spec])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_gradient_flow_takes_the_rule(tmp_path):
    """`--gradient truncated:K`: the profile the rule propagates ends within a block, and the
    alignment is recorded per seed and summarised."""
    out = tmp_path / "trunc"
    gradient_flow.main([*TINY, "--cells", "gru", "--seeds", "2", "--gradient", "truncated:2", "--out", str(out)])
    cell = json.loads((out / "results.json").read_text())["cells"]["gru"]
    profile = cell["grad_norm_by_lag"]["3"]
    assert all(v > 0 for v in profile[:2]) and all(v == 0 for v in profile[2:])
    summary = cell["measurements"]["alignment"]["['all']['cosine']"]["3"]
    assert len(summary["per_seed"]) == 2 and -1 <= summary["mean"] <= 1
    assert (out / "alignment.png").exists()  # over training, per cell


@pytest.mark.slow
def test_ablate_takes_the_rule_as_a_grid_axis(tmp_path):
    """A grid over K: each rule's cosine with BPTT in the table, and against K in alignment_vs_k.png."""
    grid = tmp_path / "grid"
    ablate.main([*TINY, "--cells", "gru", "--grid", "gradient=bptt,truncated:2,truncated:4", "--out", str(grid)])
    assert {p.name for p in grid.iterdir() if p.is_dir()} >= {"gradient=bptt", "gradient=truncated:2"}
    lines = (grid / "summary.md").read_text().splitlines()
    assert "cosine with BPTT, last measured step" in lines[0]
    assert lines[2].endswith("| - |") and not lines[3].endswith("| - |")  # bptt: none; truncated:2: measured
    assert (grid / "alignment_vs_k.png").stat().st_size > 10_000


def test_truncated_auto_takes_k_from_the_measured_decay(tmp_path):
    """K = ceil(ln 100 / |decay|) of the initial profile's decay (seeds' mean), at most T; a
    gradient that does not decay keeps the sequence whole; the run records K and its decay."""
    from experiments import sentiment
    from rnn_jax.learning_rules import auto_truncation

    assert auto_truncation(-0.5, 100) == 10 and auto_truncation(-0.001, 100) == 100
    assert auto_truncation(0.2, 50) == 50 and auto_truncation(float("nan"), 7) == 7
    out = tmp_path / "auto"
    gradient_flow.main([*TINY, "--cells", "rnn", "--seeds", "2", "--gradient", "truncated:auto", "--out", str(out)])
    chosen = json.loads((out / "results.json").read_text())["cells"]["rnn"]["truncation"]
    assert chosen["K"] == auto_truncation(chosen["decay"], 6) and len(chosen["decay_per_seed"]) == 2
    with pytest.raises(ValueError, match="truncated:auto is measured per cell by gradient_flow"):
        sentiment.Config.create(gradient="truncated:auto")


@pytest.mark.parametrize("name", ["gru", "lru"])
def test_spatial_gives_the_recurrent_weights_nothing_and_the_rest_one_step(name, x64):
    """Zucchet et al.'s online_spatial: no credit through time; the weights that act only on the
    carry (the GRU's W_hh and b_hn, the LRU's nu and theta) get zero, the others the one-step
    gradient of truncated:1."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN), jnp.float64)
    spatial = jax.grad(lambda p: _loss(cell, p, xs, "spatial"))(params)
    one_step = jax.grad(lambda p: _loss(cell, p, xs, "truncated:1"))(params)
    recurrent = {"gru": ("W_hh", "b_hn"), "lru": ("nu_log", "theta_log")}[name]
    for key in params:
        if key in recurrent:
            assert not np.any(spatial[key]) and np.any(one_step[key])
        else:
            np.testing.assert_allclose(spatial[key], one_step[key], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_bit_copy_trains_under_every_online_rule(tmp_path):
    """Zucchet et al.'s copy task with the rules of their Table 1 (quick form)."""
    out = tmp_path / "table1"
    ablate.main(
        ["--task", "bit_copy", "--seq-len", "3", "--hidden", "4", "--batch", "4", "--steps", "4", "--cells", "lru",
         "--flow-every", "2", "--eval-every", "2", "--spectrum", "0", "--grid", "gradient=bptt,rtrl,truncated:1,spatial",
         "--out", str(out)]
    )  # fmt: skip
    for rule in ("bptt", "rtrl", "truncated:1", "spatial"):
        cell = json.loads((out / f"gradient={rule}" / "results.json").read_text())["cells"]["lru"]
        assert 0 <= cell["final_eval_accuracy"]["mean"] <= 1


def test_char_lms_windows_are_truncation_applied_as_the_text_streams(x64):
    """char_lm's stateful training (each window of W characters starts from the previous one's
    final state, the gradient stopped there) assigns credit exactly as truncated:W does over the
    whole stream: the mean of the windows' gradients (one update each in char_lm) equals the
    gradient of the whole stream's loss under truncated:W (one update), to 1e-12. What differs
    is only when the parameters move."""
    from flax import nnx

    from rnn_jax import SequenceModel
    from rnn_jax.losses import apply, sequence_mse

    model = SequenceModel(make_cell("gru"), input_size=INPUT, hidden_size=HIDDEN, output_size=INPUT, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    stream = jax.random.normal(jax.random.key(1), (BATCH, 3 * 5 + 1, INPUT), jnp.float64)
    inputs, targets = stream[:, :-1], stream[:, 1:]  # predict the next value of the stream

    def loss(p, batch, rule="bptt", carries=None):
        with learning_rule(rule):
            out = apply(sequence_mse, nnx.merge(graphdef, p), batch, initial_carries=carries)
        return out.loss, jax.lax.stop_gradient(out.carries)

    whole = jax.grad(lambda p: loss(p, {"inputs": inputs, "targets": targets}, "truncated:5")[0])(params)
    carries, windows = None, []
    for start in range(0, 15, 5):
        window = {"inputs": inputs[:, start : start + 5], "targets": targets[:, start : start + 5]}
        grads, carries = jax.grad(loss, has_aux=True)(params, window, carries=carries)
        windows.append(grads)
    for a, *b in zip(jax.tree.leaves(whole), *map(jax.tree.leaves, windows)):
        np.testing.assert_allclose(a, sum(b) / 3, rtol=1e-12, atol=1e-14)
