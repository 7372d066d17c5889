"""The online learning rules (`rnn_jax.rtrl` under `rnn_jax.learning_rules`): RTRL, SnAp-1,
SnAp-2 and UORO against NumPy references written from their papers, exact where theory says
so (RTRL = BPTT for every cell; SnAp-1 = RTRL for the element-wise recurrences; SnAp-2 = RTRL
for a fully connected one), UORO unbiased, and their memory refusal."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gradient_flow
from rnn_jax import CELLS, make_cell
from rnn_jax.learning_rules import learning_rule
from rnn_jax.recurrence import run

from .test_gradient_flow_experiment import TINY
from .test_learning_rules import BATCH, HIDDEN, INPUT, TIME, _loss, _params, assert_rule_is_numpy, rnn_weights


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
    assert_rule_is_numpy("rtrl", numpy_rtrl)


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


def test_rtrl_states_its_memory_and_refuses_what_would_not_fit():
    from rnn_jax import rtrl

    cell = make_cell("lstm")
    params = cell.init(jax.random.key(0), 64, 512)
    assert rtrl.influence_bytes(cell, params, 32, 512) == 32 * 1024 * (4 * 512 * (64 + 512 + 1)) * 4
    with pytest.raises(ValueError, match=r"GiB \(batch x state x parameters\), over the 2 GiB limit"):
        rtrl.check_memory(cell, params, 32, 512)


@pytest.mark.slow
def test_an_rtrl_run_is_exact_for_one_layer(tmp_path):
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
    expected = numpy_uoro(*rnn_weights(params), np.asarray(xs), np.asarray(signs))
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


def test_uoro_needs_a_key():
    cell = make_cell("gru")
    params = cell.init(jax.random.key(0), INPUT, HIDDEN)
    xs = jnp.ones((BATCH, TIME, INPUT))
    with pytest.raises(ValueError, match="draws random signs"), learning_rule("uoro"):
        jax.grad(lambda p: jnp.sum(run(cell, p, xs)[1]))(params)


@pytest.mark.slow
def test_a_uoro_run_reports_its_variance(tmp_path):
    out = tmp_path / "uoro"
    gradient_flow.main([*TINY, "--cells", "gru", "--gradient", "uoro", "--out", str(out)])
    alignment = json.loads((out / "results.json").read_text())["cells"]["gru"]["measurements"]["alignment"]
    assert alignment["['all']['variance']"]["3"]["mean"] > 0
    assert 0 < alignment["['all']['norm_ratio']"]["3"]["mean"]


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
    cell, params, xs = assert_rule_is_numpy("snap1", numpy_snap1)
    lengths = (TIME, 7, 3)
    mask = jnp.arange(TIME)[None] < jnp.array(lengths)[:, None]
    with learning_rule("snap1"):
        padded = jax.grad(lambda p: jnp.sum(jnp.sin(run(cell, p, xs, mask=mask)[1])))(params)
    each = [numpy_snap1(*rnn_weights(params), np.asarray(xs[i : i + 1, :n])) for i, n in enumerate(lengths)]
    for name in ("W_xh", "W_hh", "b"):
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
