"""The GRU, in the original and the cuDNN form."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from rnn_jax.cells.base import Cell, chrono_bias, matmul, register_cell


@register_cell
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
    chrono_init: float | None = None

    name: ClassVar[str] = "gru"
    num_gates: ClassVar[int] = 3

    def init(self, key, input_size, hidden_size, dtype=jnp.float32):
        params = super().init(key, input_size, hidden_size, dtype)
        if self.reset_after:
            params["b_hn"] = jnp.zeros((hidden_size,), dtype)
        if self.chrono_init is not None:  # the keep gate 1 - z = sigmoid(-a_z) gets bias ln U[1, T_max - 1]
            b_keep = chrono_bias(jax.random.fold_in(key, 1), hidden_size, self.chrono_init, dtype)
            params["b"] = params["b"].at[hidden_size : 2 * hidden_size].set(-b_keep)
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
        h_r, h_z = jnp.split(matmul(h, w_gates), 2, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        return self._update(h, z, jnp.tanh(x_n + matmul(r * h, w_candidate)))

    def gate_values(self, params, h, xw_t):
        hidden = h.shape[-1]
        x_r, x_z, _ = jnp.split(xw_t, 3, axis=-1)
        h_r, h_z = jnp.split(matmul(h, params["W_hh"][:, : 2 * hidden]), 2, axis=-1)
        return {"r": jax.nn.sigmoid(x_r + h_r), "z": jax.nn.sigmoid(x_z + h_z)}

    def keep_gate(self, gates):
        return 1.0 - gates["z"]  # z weighs the new candidate (see the class docstring)

    @staticmethod
    def _update(h, z, candidate):
        h = (1.0 - z) * h + z * candidate
        return h, h
