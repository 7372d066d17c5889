"""The LSTM on cuDNN (`run(..., scan="cudnn")`, `rnn_jax.cudnn`) against the scan: outputs,
final carries and gradients, with masks (padding on either side), reverse and initial carries.
Off a GPU the cuDNN call is replaced by `jax.experimental.rnn`'s plain-JAX reference on the same
flat weight layout, which checks our weight map and masking; on a GPU the kernel itself is
compared (float32 matmuls at full precision: cuDNN would otherwise use TF32)."""

import jax
import jax.numpy as jnp
import pytest

from rnn_jax import backend, cudnn, make_cell, run

from .conftest import assert_tree_close, random_carry, random_params

BATCH, TIME, INPUT, HIDDEN = 3, 6, 4, 5
# one contiguous run of real steps per sequence: full, left padding, both sides
MASK = (jnp.arange(TIME)[None] >= jnp.array([0, 2, 1])[:, None]) & (
    jnp.arange(TIME)[None] < jnp.array([6, 6, 4])[:, None]
)


@pytest.fixture(params=["reference", "kernel"])
def implementation(request, monkeypatch):
    if request.param == "kernel":
        if backend.platform() != "gpu":
            pytest.skip("no CUDA GPU: the cuDNN kernel is compared on a GPU only")
        with jax.default_matmul_precision("highest"):
            yield request.param
    else:
        monkeypatch.setitem(cudnn.IMPLEMENTATION, "kernel", cudnn.reference_lstm)
        yield request.param


@pytest.mark.parametrize("mask", [None, MASK], ids=["no mask", "padded"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_cudnn_lstm_equals_the_scan(implementation, mask, reverse):
    cell = make_cell("lstm")
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    carry0 = random_carry(cell, jax.random.key(2), BATCH, HIDDEN)

    def loss(params, xs, carry0, scan):
        carry, ys = run(cell, params, xs, initial_carry=carry0, mask=mask, reverse=reverse, scan=scan)
        weights = jnp.arange(1, TIME + 1)[None, :, None] / TIME  # every step's output matters differently
        return jnp.sum(jnp.sin(ys) * weights) + jnp.sum(jnp.cos(carry.c)) + jnp.sum(carry.h**2), (carry, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    (got_grads, got), (want_grads, want) = grad(params, xs, carry0, "cudnn"), grad(params, xs, carry0, "sequential")
    assert_tree_close(got, want)
    assert_tree_close(got_grads, want_grads)


def test_cudnn_scan_keeps_the_scan_for_probes(monkeypatch):
    """A step with probes (a gradient-flow measurement) runs the sequential scan."""
    monkeypatch.setitem(cudnn.IMPLEMENTATION, "kernel", lambda *a: pytest.fail("cuDNN called with probes"))
    cell = make_cell("lstm")
    params = random_params(cell, jax.random.key(0), INPUT, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT))
    probes = cell.zero_carry((BATCH, TIME), HIDDEN)
    assert_tree_close(run(cell, params, xs, probes=probes, scan="cudnn"), run(cell, params, xs, probes=probes))


def test_cudnn_scan_errors():
    params = random_params(make_cell("lstm", variant="vanilla"), jax.random.key(0), INPUT, HIDDEN)
    with pytest.raises(ValueError, match="standard LSTM only"):
        run(make_cell("lstm", variant="vanilla"), params, jnp.zeros((BATCH, TIME, INPUT)), scan="cudnn")
    gru = make_cell("gru")
    with pytest.raises(ValueError, match="standard LSTM only"):
        run(gru, random_params(gru, jax.random.key(0), INPUT, HIDDEN), jnp.zeros((BATCH, TIME, INPUT)), scan="cudnn")
