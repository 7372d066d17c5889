"""What the accelerator decides, in one place: which scan a layer runs on and at which float32
matmul precision a program is traced, resolved once per model or program, never checked ad hoc.

  platform()       "cpu" | "gpu" | "tpu": where the run's arrays live (asked only once JAX runs,
                   after `jax.distributed.initialize`, never while the flags are parsed)
  resolve_scan     `--scan auto` resolved for a cell: the associative scan for the linear cells
                   off CPU; the cuDNN LSTM on a GPU only for a float32 model that is not vmapped
                   (JAX's cuDNN RNN primitive has no batching rule: stacked seeds, fixed points
                   and Jacobians vmap) and never inside a measurement; else the sequential scan.
                   An explicit `--scan cudnn` where it cannot work is refused with the reason.
  analysis()       trace a measurement: matmuls at `highest` precision, recurrences on the scan.

Precision: on GPUs float32 matmuls default to TF32 (10-bit mantissa) and on TPUs to one
bfloat16 pass; the measurements and analyses (gradient-flow profiles, Lyapunov spectra, fixed
points: a fixed point is q < 1e-10, out of TF32's reach) are traced at `highest` on every
backend, training at the backend's default unless `--matmul-precision` says otherwise. On a
CPU every setting is full float32: the docs' numbers do not depend on it there.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax

from rnn_jax import cudnn
from rnn_jax.cells import Cell

PRECISIONS = ("default", "high", "highest")  # jax.default_matmul_precision's names
ANALYSIS_PRECISION = "highest"
_ANALYSIS = contextvars.ContextVar("rnn_jax_analysis", default=False)


def platform() -> str:
    """The default backend's platform: "cpu", "gpu" (CUDA or ROCm) or "tpu"."""
    return jax.default_backend()


def in_analysis() -> bool:
    """Whether a measurement is being traced (`analysis`): no cuDNN, `highest` precision."""
    return _ANALYSIS.get()


@contextlib.contextmanager
def analysis():
    """Trace what runs inside as a measurement: float32 matmuls at `highest` precision (exact to
    float32 on every backend) and every recurrence on the scan, not cuDNN (no entry between its
    steps, no batching rule, TF32 inside)."""
    token = _ANALYSIS.set(True)
    try:
        with jax.default_matmul_precision(ANALYSIS_PRECISION):
            yield
    finally:
        _ANALYSIS.reset(token)


def traced_as_analysis(fn):
    """`fn` traced inside `analysis()` (for a function that jit traces)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with analysis():
            return fn(*args, **kwargs)

    return wrapped


def traced_at(precision: str | None, fn):
    """`fn` traced at the matmul precision `precision` (None: the process's default)."""
    if precision is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return wrapped


def check_precision(precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"--matmul-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def cudnn_refusal(cell: Cell, dtype: str, *, vmapped: bool) -> str | None:
    """Why the cuDNN LSTM cannot run this layer here (None: it can)."""
    if platform() != "gpu":
        return f"it needs an NVIDIA GPU visible to JAX (the CUDA build of jax); this run is on {platform()}"
    if not cudnn.supports(cell):
        return f"it runs the standard LSTM only, not {cell.name!r} {getattr(cell, 'variant', '')}".rstrip()
    if dtype != "float32":
        return f"JAX's cuDNN LSTM computes in float32 only, not --dtype {dtype}"
    if vmapped:
        return (
            "this experiment trains its seeds as one vmapped step (also with --seeds 1), and JAX's cuDNN LSTM "
            "primitive has no batching rule"
        )
    return None


def resolve_scan(cell: Cell, scan: str, dtype: str, *, vmapped: bool) -> str:
    """The scan of a layer of `cell` (`rnn_jax.recurrence.SCANS`) for `--scan scan` on this platform:
    "auto" resolved (see the module's docstring); "cudnn" where it cannot work raises why."""
    if scan == "auto":
        # on a CPU the sequential form of a linear cell (its gates hoisted out of the loop) measured
        # faster than the associative scan at every length (docs/modern-cells.md)
        if cell.linear and platform() != "cpu":
            return "parallel"
        return "cudnn" if cudnn_refusal(cell, dtype, vmapped=vmapped) is None else "sequential"
    if scan == "cudnn":
        reason = cudnn_refusal(cell, dtype, vmapped=vmapped)
        if reason is not None:
            raise ValueError(f"--scan cudnn: {reason}; use --scan auto (it picks cuDNN where it works) or sequential")
    return scan


def precision_record(training: str | None) -> dict:
    """What results.json says about precision: the platform, training's setting, the measurements'."""
    return {
        "platform": platform(),
        "training": training or "the backend's default (CPU: float32; GPU: TF32; TPU: bfloat16 passes)",
        "measurements": ANALYSIS_PRECISION,
    }
