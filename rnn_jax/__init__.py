"""rnn_jax: vanilla RNN, LSTM and GRU as pure JAX functions, scanned with `jax.lax.scan`,
wrapped in Flax NNX modules, built for measuring gradient flow through time."""

from rnn_jax import curvature  # noqa: F401  (registers the built-in measurement `hessian`)
from rnn_jax.cells import CELLS, GRU, LSTM, RNN, Cell, LSTMState, make_cell, recurrent_block
from rnn_jax.checkpoints import Checkpoints
from rnn_jax.gradflow import decay_rate, grads_and_flow
from rnn_jax.history import History
from rnn_jax.host import keep_freed_memory
from rnn_jax.layers import Recurrent, RecurrentStack, SequenceModel, StackOptions
from rnn_jax.loop import LoopConfig, LoopHooks, train_loop
from rnn_jax.losses import (
    LossOutput,
    classification_cross_entropy,
    final_step_mse,
    sequence_cross_entropy,
    sequence_mse,
)
from rnn_jax.optim import make_clipper, make_optimizer, make_schedule
from rnn_jax.parallel import DataParallel
from rnn_jax.recurrence import ScanOptions, run, run_bidirectional
from rnn_jax.seeds import split_seeds, stack_seeds
from rnn_jax.seq2seq import AdditiveAttention, Captioner, Decoder, Seq2Seq
from rnn_jax.tasks import TASKS, Task, batches, make_task, register_task
from rnn_jax.train import (
    StepOptions,
    StepOutput,
    TrainState,
    init_train_state,
    make_eval_step,
    make_flow_probe,
    make_train_step,
)

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
    "CELLS",
    "Captioner",
    "Cell",
    "Checkpoints",
    "DataParallel",
    "Decoder",
    "GRU",
    "History",
    "LSTM",
    "LSTMState",
    "LoopConfig",
    "LoopHooks",
    "LossOutput",
    "RNN",
    "Recurrent",
    "RecurrentStack",
    "Seq2Seq",
    "ScanOptions",
    "SequenceModel",
    "StackOptions",
    "StepOptions",
    "StepOutput",
    "TASKS",
    "Task",
    "TrainState",
    "batches",
    "classification_cross_entropy",
    "decay_rate",
    "final_step_mse",
    "grads_and_flow",
    "init_train_state",
    "keep_freed_memory",
    "make_cell",
    "make_clipper",
    "make_eval_step",
    "make_flow_probe",
    "make_optimizer",
    "make_schedule",
    "make_task",
    "make_train_step",
    "recurrent_block",
    "register_task",
    "run",
    "run_bidirectional",
    "sequence_cross_entropy",
    "sequence_mse",
    "split_seeds",
    "stack_seeds",
    "train_loop",
]
