"""rnn_jax: vanilla RNN, LSTM and GRU as pure JAX functions, scanned with `jax.lax.scan`,
wrapped in Flax NNX modules, built for measuring gradient flow through time."""

from rnn_jax.cells import CELLS, GRU, LSTM, RNN, Cell, make_cell, recurrent_block
from rnn_jax.layers import Recurrent, RecurrentStack, SequenceModel
from rnn_jax.recurrence import run, run_bidirectional
from rnn_jax.gradflow import decay_rate, grads_and_flow
from rnn_jax.losses import (
    classification_cross_entropy,
    final_step_mse,
    seq2seq_cross_entropy,
    sequence_cross_entropy,
    sequence_mse,
)
from rnn_jax.seq2seq import AdditiveAttention, Captioner, Decoder, Seq2Seq
from rnn_jax.train import (
    Checkpoints,
    LoopConfig,
    TrainState,
    init_train_state,
    make_clipper,
    make_eval_step,
    make_flow_probe,
    make_optimizer,
    make_schedule,
    make_train_step,
    split_seeds,
    stack_seeds,
    train_loop,
)
from rnn_jax.parallel import DataParallel

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
    "CELLS",
    "Captioner",
    "Decoder",
    "Seq2Seq",
    "classification_cross_entropy",
    "seq2seq_cross_entropy",
    "sequence_mse",
    "Cell",
    "Checkpoints",
    "LoopConfig",
    "decay_rate",
    "final_step_mse",
    "grads_and_flow",
    "make_clipper",
    "make_flow_probe",
    "make_optimizer",
    "make_schedule",
    "train_loop",
    "GRU",
    "LSTM",
    "RNN",
    "Recurrent",
    "RecurrentStack",
    "SequenceModel",
    "TrainState",
    "init_train_state",
    "make_cell",
    "make_eval_step",
    "make_train_step",
    "recurrent_block",
    "run",
    "run_bidirectional",
    "sequence_cross_entropy",
    "DataParallel",
    "split_seeds",
    "stack_seeds",
]
