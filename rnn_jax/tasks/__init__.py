"""What a model learns: `Task` (its batches, held-out data, model sizes, loss, metric and
baseline) and the registry of tasks by name, open like the cells'.

A task is built from the experiment's options by a function registered under its name:

    @register_task("parity")
    def parity(cfg) -> Task:          # cfg: the experiment's options (.batch, .seq_len, .seed, .data)
        return Task(batch=batches(parity_batch, batch=cfg.batch, length=cfg.seq_len), ...)

`python -m experiments.gradient_flow --imports my_task.py --task parity` then trains every cell
on it, with its flow profiles, spectra, gates, seeds, checkpoints and ablation grids.

Built in:
    adding, copy, selective_copy   synthetic long-lag tasks (`rnn_jax.data.synthetic`)
    flipflop                       the 3-bit flip-flop (Sussillo & Barak 2013): 8 memories to hold
    teacher                        Zucchet & Orvieto (2024)'s teacher-student regression: a random
                                   linear system with eigenvalues on the ring [--teacher-nu, 1)
    charlm                         next character of a corpus (--data; default a generated one)
    sentiment                      many-to-one: the polarity of a sentence (--data; default the
                                   sentence-polarity corpus), left-padded to --seq-len tokens
    tagging                        many-to-many: the UPOS tag of every word (--data; default UD
                                   English-EWT), right-padded to --seq-len words, padding masked
    mqar                           multi-query associative recall (Arora et al. 2023), Zoology's
                                   generator: D key-value pairs, each asked again later
    mnist_pixels, mnist_permuted,  sequential MNIST (Le et al. 2015): a digit pixel by pixel (T = 784;
    mnist_rows                     permuted: each seed its own order) or row by row (T = 28),
                                   classified from the final state; chosen on validation digits
                                   held out of the training ones, scored on a fixed test set
    forecast                       the next change of a time series (`rnn_jax.forecasting`; --data a
                                   built-in series, default airline), windows of --seq-len steps,
                                   evaluated on the one-step forecasts of the validation points

Every batch is a pure function of a PRNG key (and the task's arrays), so a run's data stream
is `batch(fold_in(key, step))`: reproducible and resumable at any step. Real-data tasks draw
their rows at random (with replacement) from the training split, and their held-out batches
from the validation split (the one a best model is chosen on); their test split, where they
have one, is scored beside it and chooses nothing. (translate and caption are encoder-decoder models and tabular has no
time axis: they stay experiments of their own.)
"""

# each module registers its tasks, in the order --help lists them
from rnn_jax.tasks import synthetic, teacher, text, mnist, forecast, tabular, caption, translate  # noqa: F401, I001
from rnn_jax.tasks.base import (
    BATCH_KEYS,
    TASKS,
    Batches,
    Task,
    TaskBuilder,
    batches,
    check_batch,
    epoch_rows,
    held_out_batches,
    in_order_batches,
    label_entropy,
    make_task,
    random_rows,
    register_task,
    rows_task,
    stacked_batch,
    task_option,
    test_batches,
)
from rnn_jax.tasks.mnist import MNIST_TEST, MNIST_VALIDATION, mnist_splits, permuted_inputs
from rnn_jax.tasks.text import labelled_text_arrays, left_padded, tagged_arrays

__all__ = [
    "BATCH_KEYS",
    "MNIST_TEST",
    "MNIST_VALIDATION",
    "TASKS",
    "Batches",
    "Task",
    "TaskBuilder",
    "batches",
    "check_batch",
    "epoch_rows",
    "held_out_batches",
    "in_order_batches",
    "label_entropy",
    "labelled_text_arrays",
    "left_padded",
    "make_task",
    "mnist_splits",
    "permuted_inputs",
    "random_rows",
    "register_task",
    "rows_task",
    "stacked_batch",
    "tagged_arrays",
    "task_option",
    "test_batches",
]
