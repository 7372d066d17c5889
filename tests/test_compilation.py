"""The persistent compilation cache (`rnn_jax.compilation`): on by default, never a failed run
(a folder that cannot be used, a damaged entry), never a changed number; and no program compiled
twice in one process (grid points of equal shapes share their steps).

The runs are subprocesses with a cache folder of their own: the cache is process-wide, and a
fresh folder makes a duplicate compilation visible (it is read back from the entry the same
process wrote: ``from_cache`` > 0 in a process that started cold)."""

import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import jaxlib
import pytest

from rnn_jax import compilation

ROOT = Path(__file__).resolve().parents[1]
# a short main-job run: two cells, spectra, evaluation, checkpoints
RUN = ["--cells", "rnn", "lstm", "--steps", "12", "--hidden", "8", "--seq-len", "12", "--batch", "8"]
RUN += ["--flow-every", "6", "--eval-every", "6", "--spectrum", "4"]


def experiment(module, arguments, cache, out):
    """Run `python -m experiments.<module>` in a fresh process; returns (results.json, stderr)."""
    env = {**os.environ, compilation.CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *arguments, "--out", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), done.stderr


def cache_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "compilation cache" in line]


# three flow-measuring steps of an LSTM, in a fresh process: the losses, the profiles and the
# parameters' bytes, and what was compiled
STEPS = """
import hashlib, json
import jax, numpy as np, optax
from flax import nnx
from rnn_jax import SequenceModel, StepOptions, compilation, init_train_state, make_cell, make_train_step
from rnn_jax.data import synthetic
from rnn_jax.losses import final_step_mse

compilation.enable_cache()
model = SequenceModel(make_cell("lstm"), hidden_size=16, input_size=2, output_size=1, rngs=nnx.Rngs(0))
graphdef, state = init_train_state(model, optax.adam(1e-2), jax.random.key(0))
step = make_train_step(graphdef, optax.adam(1e-2), StepOptions(final_step_mse, measure_flow=True, spectrum=4))
losses, flows = [], []
for i in range(3):
    state, out = step(state, synthetic.adding_batch(jax.random.key(i), batch=8, length=20))
    losses.append(float(out.loss))
    flows.append(jax.tree.map(lambda x: np.asarray(x).tolist(), out.flow))
params = b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(state.params))
print(json.dumps({"losses": losses, "flows": flows, "params": hashlib.sha256(params).hexdigest(),
                  "compiled": compilation.totals()}))
"""


def fresh_process(script: str, cache) -> dict:
    env = {**os.environ, compilation.CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_step_gives_the_same_bits_cold_and_warm(tmp_path):
    cold = fresh_process(STEPS, tmp_path / "cache")
    warm = fresh_process(STEPS, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [compilation.machine_tag()]  # one kind of machine
    assert cold["compiled"]["from_cache"] == 0 and cold["compiled"]["programs"] > 0
    assert warm["compiled"]["from_cache"] == warm["compiled"]["programs"] == cold["compiled"]["programs"]
    for key in ("losses", "flows", "params"):
        assert warm[key] == cold[key], key


@pytest.mark.slow
def test_warm_run_reads_every_program_from_the_cache_and_gives_the_same_numbers(tmp_path):
    cache = tmp_path / "cache"
    cold, _ = experiment("gradient_flow", RUN, cache, tmp_path / "cold")
    warm, stderr = experiment("gradient_flow", RUN, cache, tmp_path / "warm")
    assert cold["environment"]["compilation_cache"] == {"folder": str(cache / compilation.machine_tag()), "state": "on"}
    compiled_cold, compiled_warm = cold["environment"]["compilations"], warm["environment"]["compilations"]
    assert compiled_cold["programs"] > 20 and compiled_cold["from_cache"] == 0  # and none compiled twice
    assert compiled_warm["from_cache"] == compiled_warm["programs"] == compiled_cold["programs"]
    assert warm["cells"] == cold["cells"]  # bit for bit: losses, profiles, spectra, gates of every step
    assert not cache_warnings(stderr)

    # every entry damaged: one warning, the same numbers, and the entries written anew
    for entry in cache.glob("*/*-cache"):
        entry.write_bytes(b"not an executable")
    damaged, stderr = experiment("gradient_flow", RUN, cache, tmp_path / "damaged")
    assert damaged["cells"] == cold["cells"]
    assert damaged["environment"]["compilations"]["from_cache"] == 0
    (line,) = cache_warnings(stderr)
    assert "cannot be used" in line and "said once" in line and "Traceback" not in stderr
    healed, stderr = experiment("gradient_flow", RUN, cache, tmp_path / "healed")
    assert healed["environment"]["compilations"]["from_cache"] == healed["environment"]["compilations"]["programs"]
    assert healed["cells"] == cold["cells"] and not cache_warnings(stderr)


@pytest.mark.slow
def test_a_two_point_grid_compiles_each_program_once(tmp_path):
    """Grid points of equal shapes (here two seeds) share the jitted step, evaluation and batch:
    the second point compiles nothing (`rnn_jax.train.reused`)."""
    script = f"""
import json, sys
from rnn_jax import compilation
compilation.enable_cache()
from experiments import ablate
with compilation.count() as compiled:
    ablate.main({["--cells", "lstm", *RUN[3:]] + ["--grid", "seed=0,1", "--out", str(tmp_path / "grid")]!r})
print(json.dumps({{"compiled": compiled, "totals": compilation.totals()}}))
"""
    record = fresh_process(script, tmp_path / "cache")
    compiled = record["compiled"]
    assert compiled["jit(step)"] == 2  # the plain and the flow-measuring step, for both points
    assert compiled["jit(evaluate)"] == 1 and compiled["jit(stacked_batch)"] == 1
    assert record["totals"]["from_cache"] == 0  # no program of any name compiled twice in the process


def test_a_folder_that_cannot_hold_the_cache_gives_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "status", dict(compilation.status))  # the session's record stays
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compilation.enable_cache(blocker / "xla") is None
    (warning,) = caught
    assert "cannot be written" in str(warning.message) and "running without it" in str(warning.message)
    assert compilation.status["state"].startswith("unusable")

    monkeypatch.setattr(
        compilation.shutil, "disk_usage", lambda path: types.SimpleNamespace(total=1 << 40, used=1 << 40, free=1 << 20)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compilation.enable_cache(tmp_path / "full") is None
    (warning,) = caught
    assert "full disk" in str(warning.message)


def test_off_turns_it_off_and_the_default_is_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "status", dict(compilation.status))
    monkeypatch.setenv(compilation.CACHE_ENV, "off")
    assert compilation.enable_cache() is None
    assert compilation.status == {"folder": None, "state": "off (RNN_JAX_CACHE=off)"}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.default_folder() == tmp_path / "rnn_jax" / "xla"
    # one subfolder per jaxlib and kind of processor (a home folder shared by different machines)
    assert compilation.machine_tag().startswith(f"jaxlib{jaxlib.__version__}-")


def test_count_counts_the_compilations_of_a_block():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def twice(x):
        return 2 * x

    with compilation.count() as compiled:
        twice(jnp.ones(3))
        twice(jnp.zeros(3))  # same shapes: no new program
        twice(jnp.ones(4))
    assert compiled["jit(twice)"] == 2
