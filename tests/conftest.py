import importlib
import logging
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_jax import compilation, keep_freed_memory, make_cell

from . import reference

keep_freed_memory()  # as every experiment does: each call reuses the pages the last one freed
compilation.enable_cache()  # as every experiment does: a rerun (or another worker) reads what was compiled

# The real corpora, found the way a user's machine finds them: $RNN_JAX_DATA (.ci/run sets it too).
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RNN_JAX_DATA", str(ROOT.parent / "shared" / "data"))
DATA = Path(os.environ["RNN_JAX_DATA"])
# no test reaches the Hugging Face hub: offline, `datasets` fails at once instead of after its timeouts
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no data directory at $RNN_JAX_DATA={DATA}")

# every experiment's --quick run, once per session (the `quick_runs` fixture), written as the
# command line a newcomer types (`--out DIR` added). The char-LM reads Tiny Shakespeare, so the
# README's samples apply to it.
QUICK_COMMAND_LINES = [
    "python -m experiments.gradient_flow --quick",
    "python -m experiments.ablate --quick",
    "python -m experiments.char_lm --quick --data tinyshakespeare",
    "python -m experiments.sentiment --quick",
    "python -m experiments.tagging --quick",
    "python -m experiments.translate --quick",
    "python -m experiments.caption --quick",
    "python -m experiments.tabular --quick",
    "python -m experiments.forecast --quick",
    "python -m experiments.fixed_points --quick",
    "python -m experiments.curse_of_memory --quick",
]
# {experiment: its arguments}
QUICK_COMMANDS = {
    module.removeprefix("experiments."): arguments
    for _, _, module, *arguments in (line.split() for line in QUICK_COMMAND_LINES)
}
EXPERIMENTS = list(QUICK_COMMANDS)


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory):
    """Each experiment's --quick run, once per session: {experiment: its output directory}."""
    root, runs = tmp_path_factory.mktemp("quick"), {}
    for name, arguments in QUICK_COMMANDS.items():
        runs[name] = root / name
        importlib.import_module(f"experiments.{name}").main([*arguments, "--out", str(runs[name])])
    return runs


# Tests run in parallel processes (pytest-xdist, `-n auto` in pyproject.toml), a test file to a
# process, so that each module's fixtures are built once; the files that share the session's
# --quick runs go to one process so that those run once.
SHARES_QUICK_RUNS = {"tests.test_commands", "tests.test_task_experiments", "tests.test_curse_of_memory"}


# Two tiers (README): `pytest -q` is the fast one (numerics, cells, the API, every documented
# command's parsing, small end-to-end runs; a few minutes cold), `pytest -q -m slow` the
# end-to-end one (every --quick run on the real corpora, resume after kill -9, several processes
# and devices, the benchmarks; tests marked `slow` where they are defined). In the fast tier the
# scan's mechanics (tests/test_recurrence.py) run on two cells and the parametrised numerics
# below on the cases named: what differs between their cases is exercised there once, and every
# other case runs in the end-to-end tier. Each cell's own equations (tests/test_cells.py) run in
# full in the fast tier.
FAST_TIER_CELLS = ("lstm", "gru-reset-after")
FAST_TIER_CASES = {
    "test_float64_end_to_end": ("lstm", "gru-False"),
    "test_fused_backward_equals_autodiff_for_lstm_variants": ("CIFG",),
    "test_the_spectrum_matches_the_dense_jacobian_product": ("lstm",),
    "test_flow_regularizer_equals_a_slow_reference": ("rnn",),
    "test_probe_gradients_equal_unrolled_reference": ("gru",),
    "test_measurement_does_not_change_the_training_step": ("clip1",),
    "test_parallel_scan_equals_the_sequential_scan": ("lru-True",),
    "test_residual_blocks": (),
    "test_attention_decoder_matches_a_step_by_step_reference": ("lstm",),
    "test_seq2seq_gradients": ("False",),
    "test_greedy_and_beam_search_against_exhaustive_search": ("True",),
    "test_bfloat16_compute_stays_close_to_float32": ("lstm",),
    "test_uoro_is_unbiased": ("gru", "lru"),
}


@pytest.fixture
def x64():
    """The test traced and run in float64 (jax's x64 mode, for this test only)."""
    with jax.enable_x64(True):
        yield


def in_fast_tier(item) -> bool:
    if item.get_closest_marker("slow"):
        return False
    if item.module.__name__ == "tests.test_recurrence" and "cell_case" in getattr(item, "callspec", {}).params:
        return item.callspec.params["cell_case"][0] in FAST_TIER_CELLS
    if item.originalname in FAST_TIER_CASES:
        return item.callspec.id in FAST_TIER_CASES[item.originalname]
    return True


def pytest_configure(config):
    """The fast tier compiles with LLVM's optimisation off (XLA:CPU's backend level 0): its tests
    compile hundreds of small programs and run each a few times, so compiling is most of their
    time (a cold run of tests/test_diagnostics.py and test_curvature.py: 91 s at the default level,
    75 s at 0). IEEE arithmetic is the same at every level; tolerances are unchanged; the slow
    tier (what users run: whole runs, benchmarks) compiles at the default level. Before JAX
    starts its backend, so in the xdist workers too (each configures itself)."""
    if "not slow" in (config.option.markexpr or ""):
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_backend_optimization_level" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("quick_runs" if module in SHARES_QUICK_RUNS else module))
        if not in_fast_tier(item):
            item.add_marker(pytest.mark.slow)


# Restoring a checkpoint into the wrong shapes (tested on purpose) leaves orbax's asyncio tasks
# with exceptions that asyncio reports at interpreter exit, after pytest's summary line.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

# (id, cell options, NumPy reference step)
CELL_CASES = [
    ("rnn-tanh", dict(name="rnn"), reference.rnn_step),
    ("rnn-relu", dict(name="rnn", activation="relu"), lambda p, h, x: reference.rnn_step(p, h, x, "relu")),
    ("rnn-linear", dict(name="rnn", activation="linear"), lambda p, h, x: reference.rnn_step(p, h, x, "linear")),
    ("lstm", dict(name="lstm"), reference.lstm_step),
    ("gru-reset-after", dict(name="gru"), reference.gru_step),
    ("gru-reset-before", dict(name="gru", reset_after=False), lambda p, h, x: reference.gru_step(p, h, x, False)),
    ("mingru", dict(name="mingru"), reference.mingru_step),
    ("minlstm", dict(name="minlstm"), reference.minlstm_step),
]


def random_params(cell, key, input_size, hidden_size, scale=0.5):
    """Parameters with every entry random (biases included), so that no term hides behind a
    zero initialisation."""
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size, hidden_size))
    keys = jax.random.split(key, len(shapes))
    return {name: scale * jax.random.normal(k, s.shape, s.dtype) for k, (name, s) in zip(keys, sorted(shapes.items()))}


def random_carry(cell, key, batch, hidden):
    zeros = cell.zero_carry((batch,), hidden)
    leaves, treedef = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, z.shape) for k, z in zip(keys, leaves)])


def as_numpy(tree):
    return jax.tree.map(np.asarray, tree)


@pytest.fixture(params=CELL_CASES, ids=[case[0] for case in CELL_CASES])
def cell_case(request):
    _, options, ref_step = request.param
    options = dict(options)
    return make_cell(options.pop("name"), **options), ref_step


def usage_error(capsys) -> str:
    """What a command line printed to stderr, as one line: tyro draws its usage errors in a box
    and wraps them to the terminal's width."""
    return " ".join(capsys.readouterr().err.replace("│", " ").split())


def assert_tree_close(actual, expected, atol=1e-5, rtol=1e-5, *, scaled=False):
    """Leaf by leaf (a NamedTuple carry compares with the plain tuple of a NumPy reference).
    `scaled`: `atol` is relative to each leaf's largest |entry| (gradients: an entry summed from
    terms hundreds of times larger than itself keeps fewer significant digits in float32)."""
    actual, expected = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(actual) == len(expected), (len(actual), len(expected))
    for a, e in zip(actual, expected):
        e = np.asarray(e)
        scale = max(np.abs(e).max(initial=0.0), 1.0) if scaled else 1.0
        np.testing.assert_allclose(np.asarray(a), e, atol=atol * scale, rtol=rtol)
