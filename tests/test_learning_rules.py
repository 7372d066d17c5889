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


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _params(cell, key=0, input_size=INPUT):
    params = cell.init(jax.random.key(key), input_size, HIDDEN)
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def _loss(cell, params, xs, rule):
    with learning_rule(rule):
        return jnp.sum(jnp.sin(run(cell, params, xs)[1]))


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
    cell = make_cell("rnn")
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    grads = jax.grad(lambda p: _loss(cell, p, xs, f"truncated:{every}"))(params)
    expected = numpy_truncated_bptt(*(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b")), np.asarray(xs), every)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-12, atol=1e-13)


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


def numpy_rtrl(w_x, w_h, b, xs):
    """dL/d(W_xh, W_hh, b) of L = sum_t sum(sin(h_t)) for h_t = tanh(x_t W_xh + h_(t-1) W_hh + b),
    by real-time recurrent learning written from Williams & Zipser (1989): the influence
    M_t = dh_t/dtheta = D_t (W_hh^T M_(t-1) + dz_t/dtheta), D_t = diag(1 - h_t^2), carried forward,
    and the gradient summed online, sum_t cos(h_t) M_t. One sequence at a time."""
    inputs, hidden = w_x.shape
    grads = {"W_xh": np.zeros_like(w_x), "W_hh": np.zeros_like(w_h), "b": np.zeros_like(b)}
    for x in xs:  # each sequence
        h = np.zeros(hidden)
        influence = {name: np.zeros((hidden, *value.shape)) for name, value in grads.items()}  # dh_i / dtheta
        for x_t in x:
            h_new = np.tanh(x_t @ w_x + h @ w_h + b)
            slope = 1 - h_new**2
            direct = {
                "W_xh": np.einsum("a,ij->iaj", x_t, np.eye(hidden)),
                "W_hh": np.einsum("a,ij->iaj", h, np.eye(hidden)),
                "b": np.eye(hidden),
            }
            for name in influence:  # through h_(t-1): dz_i/dh_(t-1),k = W_hh[k, i]
                through = np.tensordot(w_h.T, influence[name], axes=1)
                influence[name] = slope.reshape(-1, *([1] * (influence[name].ndim - 1))) * (through + direct[name])
            h = h_new
            for name in grads:
                grads[name] += np.tensordot(np.cos(h), influence[name], axes=1)
    return grads


def test_rtrl_equals_numpy_rtrl_from_the_paper(x64):
    cell = make_cell("rnn")
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    grads = jax.grad(lambda p: _loss(cell, p, xs, "rtrl"))(params)
    expected = numpy_rtrl(*(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b")), np.asarray(xs))
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(CELLS))
def test_rtrl_equals_bptt_for_every_cell(name, x64):
    """Forward-mode RTRL gives BPTT's gradient to 1e-12 in float64 for the six cells (a loss on
    the outputs and on the final carry; the LSTM's two-leaf carry), padded and reversed too."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN), jnp.float64)
    mask = jnp.arange(TIME)[None] < jnp.array([TIME, 7, 3])[:, None]
    for options in ({}, {"mask": mask, "reverse": True}):

        def loss(p, rule):
            with learning_rule(rule):
                carry, ys = run(cell, p, xs, **options)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(carry))

        full, online = jax.grad(loss)(params, "bptt"), jax.grad(loss)(params, "rtrl")
        for key in full:
            np.testing.assert_allclose(online[key], full[key], rtol=1e-12, atol=1e-13)


def test_rtrl_states_its_memory_and_refuses_what_would_not_fit(tmp_path):
    from rnn_jax import rtrl

    cell = make_cell("lstm")
    params = cell.init(jax.random.key(0), 64, 512)
    assert rtrl.influence_bytes(cell, params, 32, 512) == 32 * 1024 * (4 * 512 * (64 + 512 + 1)) * 4
    with pytest.raises(ValueError, match=r"GiB \(batch x state x parameters\), over the 2 GiB limit"):
        rtrl.check_memory(cell, params, 32, 512)
    out = tmp_path / "rtrl"
    gradient_flow.main([*TINY, "--cells", "gru", "--gradient", "rtrl", "--out", str(out)])
    alignment = json.loads((out / "results.json").read_text())["cells"]["gru"]["measurements"]["alignment"]
    assert alignment["['all']['cosine']"]["3"]["mean"] == pytest.approx(1.0, abs=1e-5)  # exact: one layer


@pytest.mark.parametrize("name", list(CELLS))
def test_snap1_is_exact_for_element_wise_recurrences_only(name, x64):
    """SnAp-1 keeps the influence where one step of the equations lets a parameter reach a unit
    (a pattern of the equations, found at a random point, not of the data: the binary inputs
    here are exactly 0 half the time). For the element-wise recurrences (minGRU, minLSTM and the
    LRU, its complex units' two parts together) it equals RTRL to 1e-12; for the dense cells it
    drops the influence that spreads across units."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.bernoulli(jax.random.key(1), 0.5, (BATCH, TIME, HIDDEN)).astype(jnp.float64)
    online = jax.grad(lambda p: _loss(cell, p, xs, "rtrl"))(params)
    snap = jax.grad(lambda p: _loss(cell, p, xs, "snap1"))(params)
    if name in ("mingru", "minlstm", "lru"):
        for key in online:
            np.testing.assert_allclose(snap[key], online[key], rtol=1e-12, atol=1e-14)
    else:
        assert not np.allclose(snap["W_hh"], online["W_hh"], rtol=1e-3)


def test_snap1_is_bptt_for_one_element_wise_layer_with_nothing_trainable_upstream(x64):
    """A minGRU layer on real inputs (no block, no embedding) and a readout: every parameter's
    SnAp-1 gradient is BPTT's (Zucchet et al. 2023)."""
    from flax import nnx

    from rnn_jax import SequenceModel
    from rnn_jax.losses import apply, sequence_mse

    model = SequenceModel(make_cell("mingru"), input_size=INPUT, hidden_size=HIDDEN, output_size=1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    batch = {"inputs": xs, "targets": jnp.sin(jnp.cumsum(xs[..., :1], axis=1))}

    def loss(p, rule):
        with learning_rule(rule):
            return apply(sequence_mse, nnx.merge(graphdef, p), batch).loss

    full, snap = jax.grad(loss)(params, "bptt"), jax.grad(loss)(params, "snap1")
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(snap)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_uoro_equals_numpy_uoro_from_the_paper(x64):
    """The same signs nu given to both: rnn_jax's UORO (one pullback and one pushforward per
    step) equals a NumPy UORO written from Tallec & Ollivier's Algorithm 1 with Jacobians by hand."""
    from rnn_jax.rtrl import uoro_signs

    from .uoro_reference import numpy_uoro

    cell, key = make_cell("rnn"), jax.random.key(7)
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    with learning_rule("uoro", key=key):
        grads = jax.grad(lambda p: jnp.sum(jnp.sin(run(cell, p, xs)[1])))(params)
    signs = uoro_signs(jax.random.fold_in(key, 0), (BATCH, HIDDEN), TIME, jnp.float64)  # the first recurrence's
    expected = numpy_uoro(*(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b")), np.asarray(xs), np.asarray(signs))
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(CELLS))
def test_uoro_is_unbiased(name, x64):
    """The mean of 4,000 UORO estimates (independent signs) is BPTT's gradient within its
    standard error: every entry's |mean - bptt| / SE below 4.5 (the largest of ~100 standard
    normals is about 3); truncated:1, biased, is many standard errors away."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, 6, HIDDEN), jnp.float64)

    def grad(rule, key=None):
        with learning_rule(rule, key=key):
            flat = jax.flatten_util.ravel_pytree(jax.grad(lambda p: _loss(cell, p, xs, "bptt"))(params))
        return flat[0]

    def uoro(key):
        with learning_rule("uoro", key=key):
            return jax.flatten_util.ravel_pytree(jax.grad(lambda p: jnp.sum(jnp.sin(run(cell, p, xs)[1])))(params))[0]

    draws = jax.jit(jax.vmap(uoro))(jax.random.split(jax.random.key(3), 4000))
    exact, error = grad("bptt"), draws.std(0, ddof=1) / np.sqrt(len(draws))
    z = np.abs(draws.mean(0) - exact) / np.maximum(error, 1e-12)
    assert z.max() < 4.5, f"UORO's mean is {z.max():.1f} standard errors from BPTT"
    truncated = jax.flatten_util.ravel_pytree(jax.grad(lambda p: _loss(cell, p, xs, "truncated:1"))(params))[0]
    assert np.max(np.abs(truncated - exact) / np.maximum(error, 1e-12)) > 20


def test_uoro_needs_a_key_and_reports_its_variance(tmp_path):
    cell = make_cell("gru")
    params = cell.init(jax.random.key(0), INPUT, HIDDEN)
    xs = jnp.ones((BATCH, TIME, INPUT))
    with pytest.raises(ValueError, match="draws random signs"), learning_rule("uoro"):
        jax.grad(lambda p: jnp.sum(run(cell, p, xs)[1]))(params)
    out = tmp_path / "uoro"
    gradient_flow.main([*TINY, "--cells", "gru", "--gradient", "uoro", "--out", str(out)])
    alignment = json.loads((out / "results.json").read_text())["cells"]["gru"]["measurements"]["alignment"]
    assert alignment["['all']['variance']"]["3"]["mean"] > 0
    assert 0 < alignment["['all']['norm_ratio']"]["3"]["mean"]


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


def numpy_snap1(w_x, w_h, b, xs):
    """SnAp-1 (Menick et al. 2021, their eq. for J~_t) of the tanh RNN, L = sum_t sum(sin(h_t)):
    the influence J~_t = (I_t + D_t J~_(t-1)) * mask, mask: where one step lets a parameter reach a
    unit (W_xh[:, i], W_hh[:, i] and b[i] reach unit i only), so J~ is one number per parameter,
    e_t[., i] = (1 - h_t,i^2) (W_hh[i, i] e_(t-1)[., i] + direct); the gradient sum_t dl_t/dh_t . J~_t."""
    batch, time, _ = xs.shape
    h = np.zeros((batch, w_h.shape[0]))
    e = {"W_xh": np.zeros((batch, *w_x.shape)), "W_hh": np.zeros((batch, *w_h.shape)), "b": np.zeros((batch, *b.shape))}
    grads = {name: np.zeros(value.shape[1:]) for name, value in e.items()}
    for t in range(time):
        h_new = np.tanh(xs[:, t] @ w_x + h @ w_h + b)
        slope, keep = 1 - h_new**2, np.diag(w_h)
        e["W_xh"] = slope[:, None] * (keep * e["W_xh"] + xs[:, t][:, :, None])
        e["W_hh"] = slope[:, None] * (keep * e["W_hh"] + h[:, :, None])
        e["b"] = slope * (keep * e["b"] + 1)
        h = h_new
        for name in grads:
            grads[name] += np.sum((np.cos(h)[:, None] if name != "b" else np.cos(h)) * e[name], axis=0)
    return grads


def test_snap1_of_a_dense_cell_equals_numpy_snap1_from_the_paper(x64):
    """For the tanh RNN, whose units are coupled, SnAp-1 keeps one number per parameter
    (compressed); it equals Menick et al.'s SnAp-1 written by hand, with padding held."""
    cell = make_cell("rnn")
    params = _params(cell)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.float64)
    grads = jax.grad(lambda p: _loss(cell, p, xs, "snap1"))(params)
    expected = numpy_snap1(*(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b")), np.asarray(xs))
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-12, atol=1e-13)
    lengths = (TIME, 7, 3)
    mask = jnp.arange(TIME)[None] < jnp.array(lengths)[:, None]
    with learning_rule("snap1"):
        padded = jax.grad(lambda p: jnp.sum(jnp.sin(run(cell, p, xs, mask=mask)[1])))(params)
    each = [
        numpy_snap1(*(np.asarray(params[k]) for k in ("W_xh", "W_hh", "b")), np.asarray(xs[i : i + 1, :n]))
        for i, n in enumerate(lengths)
    ]
    for name in expected:
        np.testing.assert_allclose(padded[name], sum(g[name] for g in each), rtol=1e-12, atol=1e-13)


def test_snap1_without_colours_takes_both_jacobians_whole(monkeypatch, x64):
    """A cell whose pattern admits no colouring gets the kept entries from the whole Jacobians
    (one pullback per number): the same SnAp-1 as the coloured path."""
    import dataclasses

    from rnn_jax import rtrl

    cell = make_cell("lstm")
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN), jnp.float64)
    coloured = jax.grad(lambda p: _loss(cell, p, xs, "snap1"))(params)
    layout = rtrl.snap_layout
    monkeypatch.setattr(rtrl, "snap_layout", lambda *a, **k: dataclasses.replace(layout(*a, **k), colours=None))
    whole = jax.grad(lambda p: _loss(cell, p, xs, "snap1"))(params)
    for key in coloured:
        np.testing.assert_allclose(whole[key], coloured[key], rtol=1e-12, atol=1e-14)


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


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "lru"])
def test_snap2_is_rtrl_for_a_fully_connected_recurrence(name, x64):
    """Two steps of a dense W_hh reach every unit, so SnAp-2 keeps the whole influence: RTRL
    (1e-12); for an element-wise recurrence two steps reach no further than one (SnAp-1 = RTRL)."""
    cell = make_cell(name)
    params = _params(cell, input_size=HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, HIDDEN), jnp.float64)
    online = jax.grad(lambda p: _loss(cell, p, xs, "rtrl"))(params)
    snap2 = jax.grad(lambda p: _loss(cell, p, xs, "snap2"))(params)
    for key in online:
        np.testing.assert_allclose(snap2[key], online[key], rtol=1e-12, atol=1e-14)
