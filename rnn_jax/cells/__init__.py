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

and for the recurrences linear in h_{t-1} (`rnn_jax.cells.linear`, no W_hh):

    minGRU  (G=2): [z, h~]    minLSTM (G=3): [f, i, h~]    LRU (G=2): [Re B x, Im B x]

The output projection `y_t = W_hy h_t` is not part of a cell: it is the model's head
(`rnn_jax.layers`).
"""

from rnn_jax.cells.base import (  # noqa: I001 (the cells below in registration order)
    ACTIVATIONS,
    CELLS,
    INPUT_INITS,
    RECURRENT_INITS,
    Carry,
    Cell,
    Params,
    accumulation_dtype,
    cell_fields,
    make_cell,
    matmul,
    matmul_transposed,
    recurrent_block,
    register_cell,
)

# imported in the note's order, which is the registry's (and the order of "choose one of" lists)
from rnn_jax.cells.rnn import RNN
from rnn_jax.cells.lstm import LSTM, LSTM_VARIANTS, FGRState, LSTMState
from rnn_jax.cells.gru import GRU
from rnn_jax.cells.linear import LRU, LinearCell, MinGRU, MinLSTM

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "FGRState",
    "GRU",
    "INPUT_INITS",
    "LinearCell",
    "LRU",
    "LSTM",
    "LSTMState",
    "LSTM_VARIANTS",
    "RECURRENT_INITS",
    "MinGRU",
    "MinLSTM",
    "RNN",
    "Carry",
    "Cell",
    "Params",
    "accumulation_dtype",
    "cell_fields",
    "make_cell",
    "matmul",
    "matmul_transposed",
    "recurrent_block",
    "register_cell",
]
