"""The Elman RNN."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from rnn_jax.cells.base import ACTIVATIONS, Cell, check_choice, register_cell


@register_cell
@dataclasses.dataclass(frozen=True)
class RNN(Cell):
    """Elman RNN:  h_t = act(W_hh h_{t-1} + W_xh x_t + b),  act in {tanh, relu, linear}.

    Carry: h, (..., hidden).
    """

    activation: str = "tanh"

    name: ClassVar[str] = "rnn"
    sums_projections: ClassVar[bool] = True
    num_gates: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        check_choice("activation", self.activation, ACTIVATIONS)

    def gates(self, params, h, xw_t, hw_t):
        h = ACTIVATIONS[self.activation](xw_t + hw_t)
        return h, h
