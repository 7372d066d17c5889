"""The teacher-student task of Zucchet & Orvieto (2024), "Recurrent neural networks: vanishing and
exploding gradients are not the end of the story" (their `source/dataloaders/regression.py`,
dense teacher, as their Figure 3 scans set it): a random real linear time-invariant system

    h_t = A h_(t-1) + B x_t,   y_t = C h_t + D x_t,   h_(-1) = 0,   x_t ~ N(0, 1) i.i.d.,

one input and one output, whose output at every step is the target. A = V diag(lambda) V^-1 from
a Gaussian matrix N(0, 1/n)'s eigenvalues l and vectors V, each eigenvalue moved onto the ring
[nu_0, 1) with its phase kept: |lambda| = nu_0 + (1 - nu_0) tanh |l| (so the moduli fill only part
of the ring: tanh |l| is below 0.76 for most draws); B ~ N(0, 1), C ~ N(0, 1/n), D ~ N(0, 1).
Options: --teacher-nu (nu_0), --teacher-hidden (n, theirs 10), --teacher-seed (the teacher's
draw, apart from --seed, the student's: theirs is 42 in every run). T = --seq-len (theirs 300).

Where we differ: their phase is angle(l) 3.14 / pi, ours angle(l) (pi). The loss is the mean
squared error over every step (theirs half of it), from h = 0 (the transient included, as
theirs). The teacher's output grows with nu_0, so the baseline is the loss of predicting zero,
the mean over the steps of E[y_t^2] = D^2 + sum_(k=1..t) (C A^(k-1) B)^2, and losses are
compared after dividing by it. results.json's task info holds the teacher's eigenvalues and
the lag after which its impulse response stays below 1% of its peak.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells.base import move_onto_ring
from rnn_jax.losses import sequence_mse
from rnn_jax.tasks.base import Task, batches, register_task, task_option


def make_teacher(seed: int, hidden: int, nu: float) -> tuple[np.ndarray, ...]:
    """(A, B, C, D) of the teacher (module docstring), float64."""
    rng = np.random.default_rng(seed)
    a = move_onto_ring(rng.normal(size=(hidden, hidden)) / np.sqrt(hidden), nu)
    b = rng.normal(size=(hidden, 1))
    c = rng.normal(size=(1, hidden)) / np.sqrt(hidden)
    d = rng.normal(size=(1, 1))
    return a, b, c, d


def impulse_response(a, b, c, d, length: int) -> np.ndarray:
    """g_0 = D, g_k = C A^(k-1) B: the output k steps after a unit input, k < `length`."""
    response, state = [d.item()], b
    for _ in range(1, length):
        response.append((c @ state).item())
        state = a @ state
    return np.asarray(response)


def memory_lag(response: np.ndarray, fraction: float = 0.01) -> int:
    """The lag after which |g_k| stays below `fraction` of its peak."""
    above = np.nonzero(np.abs(response) >= fraction * np.abs(response).max())[0]
    return int(above[-1]) + 1


def teacher_batch(key, a, b, c, d, *, batch: int, length: int) -> dict:
    """`batch` sequences of `length` N(0, 1) inputs and the teacher's outputs, (batch, length, 1) each."""
    xs = jax.random.normal(key, (batch, length, 1), a.dtype)

    def step(h, x_t):
        h = h @ a.T + x_t @ b.T
        return h, h @ c.T + x_t @ d.T

    _, ys = jax.lax.scan(step, jnp.zeros((batch, a.shape[0]), a.dtype), jnp.swapaxes(xs, 0, 1))
    return {"inputs": xs, "targets": jnp.swapaxes(ys, 0, 1)}


@register_task("teacher")
def teacher(cfg) -> Task:
    nu = float(task_option(cfg, "teacher_nu", 0.9))
    hidden = int(task_option(cfg, "teacher_hidden", 10))
    seed = int(task_option(cfg, "teacher_seed", 42))
    if not 0.0 <= nu < 1.0:
        raise ValueError(f"--teacher-nu {nu}: the ring's inner radius nu_0 must be in [0, 1)")
    if hidden < 1:
        raise ValueError(f"--teacher-hidden {hidden}: the teacher needs at least one unit")
    a, b, c, d = make_teacher(seed, hidden, nu)
    radius = float(np.abs(np.linalg.eigvals(a)).max())
    horizon = max(cfg.seq_len, int(np.ceil(np.log(1e-4) / np.log(radius))) + 1)
    response = impulse_response(a, b, c, d, horizon)
    zero_prediction = float(np.mean(np.cumsum(response[: cfg.seq_len] ** 2)))  # mean over t of E[y_t^2]
    eigenvalues = np.linalg.eigvals(a)
    return Task(
        batch=batches(teacher_batch, batch=cfg.batch, length=cfg.seq_len),
        data=tuple(jnp.asarray(m, jnp.float32) for m in (a, b, c, d)),
        loss_fn=sequence_mse,
        model_io=dict(input_size=1, output_size=1),
        baseline=zero_prediction,
        metric="MSE (divide by the baseline, predicting zero, to compare nu_0)",
        info={
            "nu": nu,
            "hidden": hidden,
            "seed": seed,
            "eigenvalues": {"real": eigenvalues.real.tolist(), "imag": eigenvalues.imag.tolist()},
            "memory_lag": memory_lag(response),
            "zero_prediction_mse": zero_prediction,
        },
    )
