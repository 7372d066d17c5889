"""The LSTM with a forget gate, and the variants of Greff et al. 2017."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import INPUT_INITS, Array, Cell, check_choice, chrono_bias, matmul, register_cell


class LSTMState(NamedTuple):
    """The LSTM's carry: cell state c (the memory) and hidden state h, each (..., hidden)."""

    c: Array
    h: Array


class FGRState(NamedTuple):
    """The carry of the full-gate-recurrence LSTM (FGR): also the gates [i, f, o]_t, (..., 3 hidden)."""

    c: Array
    h: Array
    gates: Array


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


@register_cell
@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    """LSTM with a forget gate (Gers et al. 2000), gate order [i, f, g, o]:

        i_t = sigmoid(W_xi x_t + W_hi h_{t-1} + b_i)
        f_t = sigmoid(W_xf x_t + W_hf h_{t-1} + b_f)
        g_t = tanh   (W_xg x_t + W_hg h_{t-1} + b_g)
        o_t = sigmoid(W_xo x_t + W_ho h_{t-1} + b_o)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    Carry: `LSTMState(c, h)`, each (..., hidden). `forget_bias` initialises b_f (1.0 by default, as
    Gers et al. and Jozefowicz et al. 2015 recommend, so that the cell remembers at first).

    `variant` selects a structure of Greff et al. 2017 (`LSTM_VARIANTS`): ``standard``
    (above; the default), ``vanilla`` (with peepholes p_i, p_f on c_{t-1} and p_o on c_t,
    initialised to 0), and vanilla minus one feature: ``NIG`` / ``NFG`` / ``NOG`` (no input /
    forget / output gate: it is 1), ``NIAF`` / ``NOAF`` (no tanh on g / on c in h), ``NP``
    (no peepholes), ``CIFG`` (f = 1 - i), ``FGR`` (full gate recurrence: i, f, o also receive
    the previous step's i, f, o through W_gg (3 hidden, 3 hidden); the carry is then
    `FGRState(c, h, [i, f, o]_t)`); and ``1997``, the original LSTM without forget gate or peepholes.
    Removed gates have no parameters: the fused axis holds only the present gates, in
    [i, f, g, o] order.
    """

    forget_bias: float = 1.0
    chrono_init: float | None = None
    variant: str = "standard"

    name: ClassVar[str] = "lstm"
    sums_projections: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        check_choice("LSTM variant", self.variant, LSTM_VARIANTS)

    @property
    def spec(self) -> _LSTMVariant:
        return LSTM_VARIANTS[self.variant]

    @property
    def num_gates(self) -> int:
        return len(self.spec.gates)

    @property
    def carry_type(self) -> type[LSTMState] | type[FGRState]:
        return FGRState if self.spec.full_gate_recurrence else LSTMState

    @property
    def carry_names(self) -> tuple[str, ...]:
        return self.carry_type._fields

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
        if self.chrono_init is not None:  # b_f = ln U[1, T_max - 1], b_i = -b_f
            blocks = params["b"].reshape(self.num_gates, hidden_size)
            b_f = chrono_bias(jax.random.fold_in(key_gates, 1), hidden_size, self.chrono_init, dtype)
            for gate, value in (("f", b_f), ("i", -b_f)):
                if gate in self.spec.gates:
                    blocks = blocks.at[self.spec.gates.index(gate)].set(value)
            params["b"] = blocks.reshape(-1)
        return params

    def initial_bias(self, hidden_size, dtype):
        bias = jnp.zeros((self.num_gates, hidden_size), dtype)
        if "f" in self.spec.gates:
            bias = bias.at[self.spec.gates.index("f")].set(self.forget_bias)
        return bias.reshape(-1)

    def gates(self, params, carry, xw_t, hw_t):
        i, f, c, o = self._gate_activations(params, carry, xw_t, hw_t)
        h = o * (jnp.tanh(c) if self.spec.output_activation else c)
        if self.spec.full_gate_recurrence:
            return FGRState(c, h, jnp.concatenate([i, f, o], axis=-1)), h
        return LSTMState(c, h), h

    def gate_values(self, params, carry, xw_t):
        i, f, _, o = self._gate_activations(params, carry, xw_t, matmul(carry.h, params["W_hh"]))
        shape = carry.h.shape
        return {
            name: jnp.broadcast_to(value, shape)
            for name, value in (("i", i), ("f", f), ("o", o))
            if name in self.spec.gates or name == "f" and self.spec.coupled
        }

    def keep_gate(self, gates):
        return gates.get("f")

    def _gate_activations(self, params, carry, xw_t, hw_t):
        """(i, f, c_t, o): the gates (1.0 where the variant has none) and the new cell state."""
        spec = self.spec
        c = carry.c
        blocks = dict(zip(spec.gates, jnp.split(xw_t + hw_t, len(spec.gates), axis=-1)))
        if spec.full_gate_recurrence:  # FGR has all four gates
            for gate, extra in zip("ifo", jnp.split(matmul(carry.gates, params["W_gg"]), 3, axis=-1)):
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
        o = jax.nn.sigmoid(blocks["o"] + (params["p_o"] * c if spec.peepholes else 0.0)) if "o" in blocks else 1.0
        return i, f, c, o

    def zero_carry(self, batch_shape, hidden_size, dtype=jnp.float32):
        zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
        if self.spec.full_gate_recurrence:
            return FGRState(zeros, zeros, jnp.zeros((*batch_shape, 3 * hidden_size), dtype))
        return LSTMState(zeros, zeros)

    @staticmethod
    def hidden(carry):
        return carry.h
