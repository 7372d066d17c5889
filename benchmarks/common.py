"""What the benchmarks share: the char-LM train step of every implementation compared
(rnn_jax, Flax linen's `nn.RNN` cells, PyTorch's fused modules), interleaved timing with
medians, the measured matmul ceiling, the machine's description, and the JSON output.

The benchmarked step is that of a character-level language model: embedding (size = hidden)
-> one recurrent layer -> linear head to 65 classes -> softmax cross-entropy at every step ->
Adam; tokens are random (the speed does not depend on them).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rnn_jax import (
    SequenceModel,
    StepOptions,
    compilation,
    host,
    init_train_state,
    keep_freed_memory,
    make_cell,
    make_train_step,
)
from rnn_jax.layers import StackOptions
from rnn_jax.losses import sequence_cross_entropy
from rnn_jax.recurrence import ScanOptions

VOCAB = 65
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def flops_per_token(cell: str, hidden: int, embed: int | None = None, vocab: int = VOCAB) -> float:
    """Matmul FLOPs of one train step per token: forward (input projection, recurrent product,
    head) and a backward of twice that."""
    embed = embed or hidden
    forward = 2 * (embed + hidden) * GATES[cell] * hidden + 2 * hidden * vocab
    return 3 * forward


def random_tokens(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq + 1)).astype(np.int32)


# -- the implementations: each returns `call()`, one train step that returns something to wait on --


def char_lm_model(cell: str, hidden: int, *, embed: int | None = None, **scan_options) -> SequenceModel:
    """rnn_jax's char-LM: embedding of size `embed` (default: `hidden`), one layer, head to VOCAB;
    `scan_options` of `rnn_jax.recurrence.ScanOptions` (backprop, remat, scan, ...)."""
    stack = StackOptions(scan=ScanOptions(**scan_options))
    return SequenceModel(
        make_cell(cell),
        vocab_size=VOCAB,
        input_size=embed,
        hidden_size=hidden,
        output_size=VOCAB,
        stack=stack,
        rngs=nnx.Rngs(0),
    )


def char_lm_batch(tokens: np.ndarray) -> dict:
    """Tokens (..., batch, seq + 1) -> inputs and next-token targets, (..., batch, seq) each."""
    return {"inputs": jnp.asarray(tokens[..., :-1]), "targets": jnp.asarray(tokens[..., 1:])}


def train_step_parts(model: nnx.Module, loss_fn, batch: dict, *, measure_flow: bool = False, gradient: str = "bptt"):
    """(jitted step, initial TrainState, batch): `make_train_step` of `model` with Adam (and the
    learning rule `gradient`)."""
    optimizer = optax.adam(1e-3)
    graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
    options = StepOptions(loss_fn, measure_flow=measure_flow, gradient=gradient)
    return make_train_step(graphdef, optimizer, options), state, batch


def rnn_jax_parts(
    cell: str, hidden: int, tokens: np.ndarray, *, measure_flow: bool = False, embed: int | None = None, **scan_options
):
    """(jitted step, initial TrainState, batch) of rnn_jax's char-LM train step (`char_lm_model`)."""
    model = char_lm_model(cell, hidden, embed=embed, **scan_options)
    return train_step_parts(model, sequence_cross_entropy, char_lm_batch(tokens), measure_flow=measure_flow)


def rnn_jax_step(cell: str, hidden: int, tokens: np.ndarray, **options):
    return stepper(*rnn_jax_parts(cell, hidden, tokens, **options))


def stepper(step, state, batch):
    """`call()`: one `step(state, batch) -> (state, StepOutput)`, keeping the state between calls."""
    holder = [state]

    def call():
        holder[0], out = step(holder[0], batch)
        return out.loss

    return call


def flax_linen_step(cell: str, hidden: int, tokens: np.ndarray):
    """Flax linen `nn.RNN` over `OptimizedLSTMCell` / `GRUCell` / `SimpleCell`, jitted with optax."""
    import flax.linen as nn

    cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}

    class LanguageModel(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Embed(VOCAB, hidden)(x)
            return nn.Dense(VOCAB)(nn.RNN(cells[cell](features=hidden))(x))

    model, optimizer = LanguageModel(), optax.adam(1e-3)
    batch = char_lm_batch(tokens)
    inputs, targets = batch["inputs"], batch["targets"]
    params = model.init(jax.random.key(0), inputs)
    state = (params, optimizer.init(params))

    @jax.jit
    def step(state):
        params, opt_state = state

        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, inputs), targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    holder = [state]

    def call():
        holder[0], loss = step(holder[0])
        return loss

    return call


def torch_step(cell: str, hidden: int, tokens: np.ndarray):
    """PyTorch's fused `nn.LSTM` / `nn.GRU` / `nn.RNN` (oneDNN on CPU, cuDNN on GPU), Adam."""
    import torch

    torch.manual_seed(0)
    modules = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
    device = "cuda" if torch.cuda.is_available() else "cpu"

    class LanguageModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, hidden)
            self.rnn = modules[cell](hidden, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, VOCAB)

        def forward(self, x):
            return self.head(self.rnn(self.embed(x))[0])

    model = LanguageModel().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.from_numpy(tokens).long().to(device)
    inputs, targets = data[:, :-1], data[:, 1:]

    def call():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss

    return call


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# -- timing ---------------------------------------------------------------------------------


def wait(result) -> None:
    """Block until a step's result is computed (a JAX array, or a torch tensor)."""
    if hasattr(result, "block_until_ready"):
        result.block_until_ready()
    elif hasattr(result, "item"):
        result.item()
    else:
        jax.block_until_ready(result)


def add_timing_flags(parser, *, repeats: int = 3) -> None:
    """--repeats and --min-seconds of `interleaved`, the same in every benchmark that times steps."""
    parser.add_argument(
        "--repeats", type=int, default=repeats, help="interleaved timing rounds; the median is reported"
    )
    parser.add_argument("--min-seconds", type=float, default=1.0, help="seconds of back-to-back steps per round")


def interleaved(calls: dict[str, Callable], *, repeats: int = 3, min_seconds: float = 1.0) -> dict[str, dict]:
    """Seconds per call of each implementation: the first call (compile + run) apart, then
    `repeats` rounds in which each runs back to back for about `min_seconds` (at least one
    call), interleaved so that drifts in machine load hit all alike. Returns
    {name: {"seconds": median, "first_call_s": ..., "all": [...]}}."""
    first, per_round = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        wait(call())
        first[name] = time.perf_counter() - start
        start = time.perf_counter()  # a second call, to size the rounds
        wait(call())
        per_round[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    timings = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(per_round[name]):
                result = call()
            wait(result)
            timings[name].append((time.perf_counter() - start) / per_round[name])
    return {
        name: {"seconds": statistics.median(t), "first_call_s": first[name], "all": t} for name, t in timings.items()
    }


def matmul_ceiling(size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GFLOP/s of a large square matmul (the machine's practical ceiling)."""
    a = jax.random.normal(jax.random.key(0), (size, size))
    product = jax.jit(lambda a, b: a @ b)
    product(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def prepare_host(default_malloc: bool = False) -> dict:
    """Set the process up as the experiments do (`rnn_jax.keep_freed_memory`), unless
    `default_malloc`, before anything is timed; returns the environment, which records it."""
    if not default_malloc:
        keep_freed_memory()
    compilation.enable_cache()  # as the experiments: compiling is not what the benchmarks time
    return environment()


def environment() -> dict:
    import flax

    info = {
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "freed_memory_kept": host.kept,
        "compilation_cache": dict(compilation.status),
    }
    if torch_available():
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(env: dict) -> str:
    versions = ", ".join(f"{k} {env[k]}" for k in ("jax", "flax", "optax", "torch") if env.get(k))
    return f"{env['cpu']} ({env['cores']} cores), {env['device_kind']}; {versions}"


def write_json(path: str | None, payload: dict) -> None:
    """Write the results to `path` (its folder created if missing: a benchmark's minutes are not
    lost to a typo in --out)."""
    if path:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {path}")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    widths = [max(len(header), *(len(format(r[key], spec)) for r in rows)) for key, header, spec in columns]
    print("  ".join(header.rjust(w) for (_, header, _), w in zip(columns, widths)))
    for r in rows:
        print("  ".join(format(r[key], spec).rjust(w) for (key, _, spec), w in zip(columns, widths)))
