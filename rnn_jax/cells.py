"""Recurrent cells as pure functions: the equations of the note, one small class each.

A cell is a frozen (hashable, static) dataclass that holds only *options*; all arrays live
in an explicit parameter dict. Every cell exposes the same pure functions:

    params = cell.init(key, input_size, hidden_size)       # -> dict of arrays
    carry, h_t = cell.step(params, carry, x_t)             # one time step, x_t: (..., input)
    carry, h_t = cell.recur(params, carry, xw_t)           # same, from a precomputed
                                                           # input projection xw_t = x_t W_xh + b
    carry, h_t = cell.gates(params, carry, xw_t, hw_t)     # same, also given the recurrent
                                                           # product hw_t = h_{t-1} W_hh
    carry = cell.zero_carry(batch_shape, hidden_size)

`step` is `recur` after `project_inputs`, and `recur` is `gates` after the recurrent matmul;
`rnn_jax.recurrence.run` calls `project_inputs` once for all time steps (one large matmul)
and scans `recur`, cuDNN-style. `gates` is the elementwise rest of a step: the hand-written
backward pass of `rnn_jax.recurrence` differentiates it alone, and forms the gradient of W_hh
as one matmul over all steps (cells whose recurrence is not a single h_{t-1} W_hh product,
`fused_recurrence = False`, use autodiff).

Parameters (notation of the note; row-vector convention, so `x W_xh` is `W_xh x` of the note):

    W_xh : (input, G * hidden)    input weights of all G gates, fused
    W_hh : (hidden, G * hidden)   recurrent weights of all G gates, fused
    b    : (G * hidden,)          bias (added to the input projection)
    b_hn : (hidden,)              GRU(reset_after) only: recurrent bias of the candidate

Gate order inside the fused G * hidden axis (the same as PyTorch / cuDNN):

    RNN  (G=1): [h~]
    LSTM (G=4): [i, f, g, o]     input gate, forget gate, cell candidate, output gate
    GRU  (G=3): [r, z, h~]       reset gate, update gate, candidate

The output projection `y_t = W_hy h_t` is not part of a cell: it is the model's head
(`rnn_jax.layers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Array]
Carry = Any  # an array (RNN, GRU) or a tuple of arrays (LSTM: (c, h))

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}

INPUT_INITS: dict[str, Callable[..., Array]] = {
    "lecun": jax.nn.initializers.lecun_normal(),
    "glorot": jax.nn.initializers.glorot_uniform(),
}

RECURRENT_INITS = ("orthogonal", "identity", "normal")


def _choice(kind: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(allowed)}")
    return value


def _spectral_radius(w: Array) -> Array:
    """max |eigenvalue| of a square matrix, computed on the host.

    Non-symmetric eigendecomposition is not available on every backend, and this runs once
    at initialisation, so NumPy does it (also under `jit`).
    """

    def host_radius(m):
        return np.max(np.abs(np.linalg.eigvals(np.asarray(m, np.float64)))).astype(m.dtype)

    return jax.pure_callback(host_radius, jax.ShapeDtypeStruct((), w.dtype), w)


def recurrent_block(key: Array, hidden_size: int, init: str, scale: float, dtype=jnp.float32) -> Array:
    """One (hidden, hidden) recurrent block whose spectral radius is `scale`.

    - ``orthogonal``: a random orthogonal matrix times `scale` (Saxe et al. 2014);
    - ``identity``: `scale * I` (IRNN, Le et al. 2015);
    - ``normal``: i.i.d. Gaussian entries, rescaled so that max |eigenvalue| == `scale`.
    """
    _choice("recurrent init", init, RECURRENT_INITS)
    shape = (hidden_size, hidden_size)
    if init == "orthogonal":
        return jax.nn.initializers.orthogonal(scale)(key, shape, dtype)
    if init == "identity":
        return scale * jnp.eye(hidden_size, dtype=dtype)
    w = jax.random.normal(key, shape, dtype) / np.sqrt(hidden_size)
    return w * (scale / _spectral_radius(w))


def _dot(a: Array, w: Array) -> Array:
    """`a @ w` computed in `w`'s dtype and accumulated/returned in at least float32.

    With bfloat16 weights this is mixed precision: bf16 matmul inputs, float32 results, so the
    gate arithmetic and the carried state stay in float32.
    """
    out_dtype = jnp.promote_types(a.dtype, jnp.float32)
    return jnp.matmul(a.astype(w.dtype), w, preferred_element_type=out_dtype)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Options and pure functions shared by all cells. Subclasses define the recurrence.

    Attributes:
      input_init: initialiser of W_xh, ``"lecun"`` (normal, fan-in) or ``"glorot"`` (uniform).
      recurrent_init: initialiser of each gate's (hidden, hidden) block of W_hh:
        ``"orthogonal"``, ``"identity"`` or ``"normal"`` (see `recurrent_block`).
      recurrent_scale: spectral radius of each recurrent block at initialisation.
    """

    input_init: str = "lecun"
    recurrent_init: str = "orthogonal"
    recurrent_scale: float = 1.0

    name: ClassVar[str]
    num_gates: ClassVar[int]  # G, the gate blocks of the fused weights
    carry_names: ClassVar[tuple[str, ...]] = ("h",)  # the carry's leaves, in tree order

    def __post_init__(self):
        _choice("input init", self.input_init, INPUT_INITS)
        _choice("recurrent init", self.recurrent_init, RECURRENT_INITS)

    # -- parameters ---------------------------------------------------------------------

    def init(self, key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        """Fresh parameters for inputs of size `input_size` and a state of size `hidden_size`."""
        for what, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"{self.name}: {what} must be a positive integer, got {size!r}")
        gates = self.num_gates
        key_x, key_h = jax.random.split(key)
        w_xh = INPUT_INITS[self.input_init](key_x, (input_size, gates * hidden_size), dtype)
        w_hh = jnp.concatenate(
            [
                recurrent_block(k, hidden_size, self.recurrent_init, self.recurrent_scale, dtype)
                for k in jax.random.split(key_h, gates)
            ],
            axis=1,
        )
        return {"W_xh": w_xh, "W_hh": w_hh, "b": self.initial_bias(hidden_size, dtype)}

    def initial_bias(self, hidden_size: int, dtype) -> Array:
        return jnp.zeros((self.num_gates * hidden_size,), dtype)

    @staticmethod
    def sizes(params: Params) -> tuple[int, int]:
        """(input_size, hidden_size) of a parameter dict."""
        return params["W_xh"].shape[0], params["W_hh"].shape[0]

    # -- the recurrence -----------------------------------------------------------------

    def project_inputs(self, params: Params, xs: Array) -> Array:
        """`xs W_xh + b` for any leading dims: (..., input) -> (..., G * hidden)."""
        return _dot(xs, params["W_xh"]) + params["b"]

    def step(self, params: Params, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
        """One time step from the raw input x_t: (..., input) -> (new carry, h_t)."""
        return self.recur(params, carry, self.project_inputs(params, x_t))

    def recur(self, params: Params, carry: Carry, xw_t: Array) -> tuple[Carry, Array]:
        """One time step from the input projection xw_t: (..., G * hidden) -> (new carry, h_t)."""
        return self.gates(params, carry, xw_t, _dot(self.hidden(carry), params["W_hh"]))

    def gates(self, params: Params, carry: Carry, xw_t: Array, hw_t: Array) -> tuple[Carry, Array]:
        """The step's arithmetic after both projections, xw_t and hw_t = h_{t-1} W_hh, each
        (..., G * hidden). Reads the parameters other than W_xh, b and W_hh (peepholes, ...)."""
        raise NotImplementedError

    @property
    def fused_recurrence(self) -> bool:
        """Whether h_{t-1} enters the step only through hw_t = h_{t-1} W_hh (see `gates`)."""
        return True

    def zero_carry(self, batch_shape: tuple[int, ...], hidden_size: int, dtype=jnp.float32) -> Carry:
        return jnp.zeros((*batch_shape, hidden_size), dtype)

    @staticmethod
    def hidden(carry: Carry) -> Array:
        """The hidden state h_t inside a carry."""
        return carry


@dataclasses.dataclass(frozen=True)
class RNN(Cell):
    """Elman RNN:  h_t = act(W_hh h_{t-1} + W_xh x_t + b),  act in {tanh, relu, linear}.

    Carry: h, (..., hidden).
    """

    activation: str = "tanh"

    name: ClassVar[str] = "rnn"
    num_gates: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        _choice("activation", self.activation, ACTIVATIONS)

    def gates(self, params, h, xw_t, hw_t):
        h = ACTIVATIONS[self.activation](xw_t + hw_t)
        return h, h


@dataclasses.dataclass(frozen=True)
class _LSTMVariant:
    """The structure of one LSTM variant (Greff et al. 2017, "LSTM: A Search Space Odyssey")."""

    gates: str = "ifgo"  # which gate blocks have parameters, in fused order
    peepholes: bool = False  # p_i * c_{t-1} into i, p_f * c_{t-1} into f, p_o * c_t into o
    input_activation: bool = True  # g = tanh(.) (False: g is linear, NIAF)
    output_activation: bool = True  # h = o * tanh(c) (False: h = o * c, NOAF)
    coupled: bool = False  # f = 1 - i (CIFG)
    full_gate_recurrence: bool = False  # i, f, o also see [i, f, o]_{t-1} (FGR)


_VANILLA = _LSTMVariant(peepholes=True)
LSTM_VARIANTS: dict[str, _LSTMVariant] = {
    "standard": _LSTMVariant(),  # the common modern LSTM: forget gate, no peepholes (= Greff's NP)
    "vanilla": _VANILLA,  # Greff et al.'s vanilla LSTM: with peepholes
    "NIG": dataclasses.replace(_VANILLA, gates="fgo"),  # no input gate: i = 1
    "NFG": dataclasses.replace(_VANILLA, gates="igo"),  # no forget gate: f = 1
    "NOG": dataclasses.replace(_VANILLA, gates="ifg"),  # no output gate: o = 1
    "NIAF": dataclasses.replace(_VANILLA, input_activation=False),
    "NOAF": dataclasses.replace(_VANILLA, output_activation=False),
    "NP": _LSTMVariant(),  # no peepholes
    "CIFG": dataclasses.replace(_VANILLA, gates="igo", coupled=True),
    "FGR": dataclasses.replace(_VANILLA, full_gate_recurrence=True),
    "1997": _LSTMVariant(gates="igo"),  # Hochreiter & Schmidhuber 1997: no forget gate, no peepholes
}


@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    """LSTM with a forget gate (Gers et al. 2000), gate order [i, f, g, o]:

        i_t = sigmoid(W_xi x_t + W_hi h_{t-1} + b_i)
        f_t = sigmoid(W_xf x_t + W_hf h_{t-1} + b_f)
        g_t = tanh   (W_xg x_t + W_hg h_{t-1} + b_g)
        o_t = sigmoid(W_xo x_t + W_ho h_{t-1} + b_o)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    Carry: (c, h), each (..., hidden). `forget_bias` initialises b_f (1.0 by default, as
    Gers et al. and Jozefowicz et al. 2015 recommend, so that the cell remembers at first).

    `variant` selects a structure of Greff et al. 2017 (`LSTM_VARIANTS`): ``standard``
    (above; the default), ``vanilla`` (with peepholes p_i, p_f on c_{t-1} and p_o on c_t,
    initialised to 0), and vanilla minus one feature: ``NIG`` / ``NFG`` / ``NOG`` (no input /
    forget / output gate: it is 1), ``NIAF`` / ``NOAF`` (no tanh on g / on c in h), ``NP``
    (no peepholes), ``CIFG`` (f = 1 - i), ``FGR`` (full gate recurrence: i, f, o also receive
    the previous step's i, f, o through W_gg (3 hidden, 3 hidden); the carry is then
    (c, h, [i, f, o]_t)); and ``1997``, the original LSTM without forget gate or peepholes.
    Removed gates have no parameters: the fused axis holds only the present gates, in
    [i, f, g, o] order.
    """

    forget_bias: float = 1.0
    variant: str = "standard"

    name: ClassVar[str] = "lstm"

    def __post_init__(self):
        super().__post_init__()
        _choice("LSTM variant", self.variant, LSTM_VARIANTS)

    @property
    def spec(self) -> _LSTMVariant:
        return LSTM_VARIANTS[self.variant]

    @property
    def num_gates(self) -> int:
        return len(self.spec.gates)

    @property
    def carry_names(self) -> tuple[str, ...]:
        return ("c", "h", "gates") if self.spec.full_gate_recurrence else ("c", "h")

    def init(self, key, input_size, hidden_size, dtype=jnp.float32):
        key, key_gates = jax.random.split(key)
        params = super().init(key, input_size, hidden_size, dtype)
        if self.spec.peepholes:
            for gate in "ifo":
                if gate in self.spec.gates:
                    params[f"p_{gate}"] = jnp.zeros((hidden_size,), dtype)
        if self.spec.full_gate_recurrence:
            blocks = jax.random.split(key_gates, 3)
            params["W_gg"] = jnp.concatenate(
                [INPUT_INITS[self.input_init](k, (3 * hidden_size, hidden_size), dtype) for k in blocks], axis=1
            )
        return params

    def initial_bias(self, hidden_size, dtype):
        bias = jnp.zeros((self.num_gates, hidden_size), dtype)
        if "f" in self.spec.gates:
            bias = bias.at[self.spec.gates.index("f")].set(self.forget_bias)
        return bias.reshape(-1)

    def gates(self, params, carry, xw_t, hw_t):
        spec = self.spec
        c = carry[0]
        pre = xw_t + hw_t
        blocks = dict(zip(spec.gates, jnp.split(pre, len(spec.gates), axis=-1)))
        if spec.full_gate_recurrence:  # FGR has all four gates
            for gate, extra in zip("ifo", jnp.split(_dot(carry[2], params["W_gg"]), 3, axis=-1)):
                blocks[gate] = blocks[gate] + extra
        if spec.peepholes:
            for gate in "if":
                if gate in blocks:
                    blocks[gate] = blocks[gate] + params[f"p_{gate}"] * c
        i = jax.nn.sigmoid(blocks["i"]) if "i" in blocks else 1.0
        if spec.coupled:
            f = 1.0 - i
        else:
            f = jax.nn.sigmoid(blocks["f"]) if "f" in blocks else 1.0
        g = jnp.tanh(blocks["g"]) if spec.input_activation else blocks["g"]
        c = f * c + i * g
        if "o" in blocks:
            o = jax.nn.sigmoid(blocks["o"] + (params["p_o"] * c if spec.peepholes else 0.0))
        else:
            o = 1.0
        h = o * (jnp.tanh(c) if spec.output_activation else c)
        if spec.full_gate_recurrence:
            return (c, h, jnp.concatenate([i, f, o], axis=-1)), h
        return (c, h), h

    def zero_carry(self, batch_shape, hidden_size, dtype=jnp.float32):
        zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
        if self.spec.full_gate_recurrence:
            return zeros, zeros, jnp.zeros((*batch_shape, 3 * hidden_size), dtype)
        return zeros, zeros

    @staticmethod
    def hidden(carry):
        return carry[1]


@dataclasses.dataclass(frozen=True)
class GRU(Cell):
    """GRU, gate order [r, z, h~], with the note's update convention (Chung et al. 2014):

        r_t  = sigmoid(W_xr x_t + W_hr h_{t-1} + b_r)
        z_t  = sigmoid(W_xz x_t + W_hz h_{t-1} + b_z)
        h~_t = tanh(W_xh~ x_t + b_h~ + W_hh~ (r_t * h_{t-1}))              reset_after=False
        h~_t = tanh(W_xh~ x_t + b_h~ + r_t * (W_hh~ h_{t-1} + b_hn))       reset_after=True
        h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

    `reset_after=False` is the original form (Cho et al. 2014): the reset gate acts *before*
    the recurrent matmul, so the candidate's matmul cannot be fused with the gates' (two
    matmuls per step). `reset_after=True` (default) is the cuDNN / PyTorch / Flax form, with
    its separate recurrent bias b_hn and one fused (hidden, 3 * hidden) matmul per step.

    z convention: z_t is the weight of the *new* candidate. PyTorch and Flax write
    h_t = (1 - z) h~ + z h_{t-1}, i.e. their z is our 1 - z: negate the z rows of their
    weights and biases to convert (done in tests/test_cells.py against Flax).

    Carry: h, (..., hidden).
    """

    reset_after: bool = True

    name: ClassVar[str] = "gru"
    num_gates: ClassVar[int] = 3

    def init(self, key, input_size, hidden_size, dtype=jnp.float32):
        params = super().init(key, input_size, hidden_size, dtype)
        if self.reset_after:
            params["b_hn"] = jnp.zeros((hidden_size,), dtype)
        return params

    @property
    def fused_recurrence(self) -> bool:
        return self.reset_after

    def gates(self, params, h, xw_t, hw_t):
        if not self.reset_after:
            raise ValueError("GRU(reset_after=False) has two recurrent matmuls per step; use recur()")
        x_r, x_z, x_n = jnp.split(xw_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(hw_t, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        candidate = jnp.tanh(x_n + r * (h_n + params["b_hn"]))
        return self._update(h, z, candidate)

    def recur(self, params, h, xw_t):
        if self.reset_after:
            return super().recur(params, h, xw_t)
        hidden = h.shape[-1]
        x_r, x_z, x_n = jnp.split(xw_t, 3, axis=-1)
        w_gates, w_candidate = params["W_hh"][:, : 2 * hidden], params["W_hh"][:, 2 * hidden :]
        h_r, h_z = jnp.split(_dot(h, w_gates), 2, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        return self._update(h, z, jnp.tanh(x_n + _dot(r * h, w_candidate)))

    @staticmethod
    def _update(h, z, candidate):
        h = (1.0 - z) * h + z * candidate
        return h, h


CELLS: dict[str, type[Cell]] = {cls.name: cls for cls in (RNN, LSTM, GRU)}


def make_cell(name: str, **options) -> Cell:
    """A cell by name (``"rnn"``, ``"lstm"``, ``"gru"``) with its options, e.g.
    ``make_cell("gru", reset_after=False)`` or ``make_cell("rnn", activation="relu",
    recurrent_init="identity")``."""
    cls = CELLS.get(name)
    if cls is None:
        raise ValueError(f"unknown cell {name!r}; choose one of: {', '.join(CELLS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"cell {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    return cls(**options)
