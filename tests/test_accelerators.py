"""What a GPU or TPU run builds, checked on this CPU (no accelerator here; users have them).

With the backend made to report "gpu" (`rnn_jax.backend.platform`) and JAX's real cuDNN LSTM
primitive in place (only its workspace-size query, a call into the CUDA plugin that a CPU build
of jaxlib lacks, is stood in for), each experiment's --quick run is built up to its first step
and its programs (train step, flow step, evaluation) are traced as the GPU run would trace them:
a vmapped step (stacked seeds) never holds the cuDNN call (it has no batching rule), a step
that measures never holds it, a one-model LSTM train step does. Every program without the
cuDNN call is also lowered for CUDA (`jax.export`; the cuDNN call's own lowering needs the
plugin). With the backend reporting "tpu" and a TPU's default precision (bfloat16 passes), the
programs are lowered for TPU: training's matmuls at the default precision, the measurements'
at HIGHEST.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

from rnn_jax import ScanOptions, SequenceModel, StackOptions, backend, experiment, fixed_points, make_cell

from .conftest import QUICK_COMMANDS, needs_data


class Built(Exception):
    """Raised instead of training: the run's programs are built."""


def report_platform(monkeypatch, name: str) -> None:
    """Make the backend report `name`, with cuDNN's workspace-size query stood in for."""
    from jaxlib import gpu_rnn

    monkeypatch.setattr(
        gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", lambda *a: (1 << 16, 1 << 16), raising=False
    )
    monkeypatch.setattr(backend, "platform", lambda: name)


def capture_programs(monkeypatch) -> dict:
    """The programs of the next run, captured at its first step (`Built` stops it there)."""
    built = {}
    make_eval_step, evaluate_batches = experiment.make_eval_step, experiment.evaluate_batches

    def eval_step(*args, **kwargs):
        built["eval"] = make_eval_step(*args, **kwargs)
        return built["eval"]

    def evaluation(step, batches, **kwargs):
        batches = list(batches)
        built.setdefault("eval_batch", batches[0])
        return evaluate_batches(step, batches, **kwargs)

    def loop(state, train_step, get_batch, loop, hooks):
        batch = hooks.parallel.place_batch(get_batch(0))
        built.update(train=train_step, flow=hooks.flow_step, state=state, batch=batch)
        raise Built

    monkeypatch.setattr(experiment, "make_eval_step", eval_step)
    monkeypatch.setattr(experiment, "evaluate_batches", evaluation)
    monkeypatch.setattr(experiment, "train_loop", loop)
    return built


@pytest.fixture
def platform(monkeypatch):
    """`platform(name)`: make the backend report `name` (`report_platform`); the CPU hosts' malloc
    setting must then not apply."""
    from experiments import cli

    monkeypatch.setattr(cli, "keep_freed_memory", lambda: pytest.fail("the CPU malloc setting on an accelerator"))
    return lambda name: report_platform(monkeypatch, name)


@pytest.fixture
def programs(monkeypatch):
    return capture_programs(monkeypatch)


def build(name: str, tmp_path, extra=()) -> None:
    with pytest.raises(Built):
        importlib.import_module(f"experiments.{name}").main([*QUICK_COMMANDS[name], *extra, "--out", str(tmp_path)])


def traced(built: dict) -> dict:
    """{program: its trace} of the train, flow and eval steps on their first batches."""
    eval_carries = None
    return {
        "train": built["train"].trace(built["state"], built["batch"]),
        "flow": built["flow"].trace(built["state"], built["batch"]),
        "eval": built["eval"].trace(built["state"].params, built["eval_batch"], eval_carries),
    }


def uses_cudnn(trace) -> bool:
    return "rnn_fwd" in str(trace.jaxpr)


def lowered_for(program: str, built: dict, platform: str) -> str:
    """The StableHLO text of `program` exported for `platform` on its first batch."""
    args = (built["state"].params, built["eval_batch"], None) if program == "eval" else (built["state"], built["batch"])
    return export.export(built[program], platforms=[platform])(*args).mlir_module()


# experiment -> (flags that pick the LSTM, whether its train step holds the cuDNN call on a GPU)
GPU_CASES = {
    "gradient_flow": (["--cells", "lstm"], False),  # stacked seeds: vmapped, never cuDNN
    "ablate": ([], False),
    "fixed_points": (["--cells", "lstm"], False),
    "char_lm": (["--cell", "lstm"], True),
    "sentiment": (["--cell", "lstm"], True),
    "tagging": (["--cell", "lstm"], True),
    "forecast": (["--cell", "lstm"], True),
    "tabular": (["--cell", "lstm"], True),
    "translate": (["--cell", "lstm"], True),
    "caption": (["--cell", "lstm"], True),
}
FAST = ("gradient_flow", "sentiment")  # the rest in the end-to-end tier


def tiered(names):
    return [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in names]


@needs_data
@pytest.mark.parametrize("name", tiered(GPU_CASES))
def test_a_gpu_run_traces_and_lowers_what_it_would_run(name, tmp_path, platform, programs):
    flags, cudnn_in_training = GPU_CASES[name]
    platform("gpu")
    build(name, tmp_path, flags)
    traces = traced(programs)
    assert not uses_cudnn(traces["flow"])  # a step that measures runs the scan
    if name in ("translate", "caption"):  # an encoder-decoder: the encoder may take cuDNN, the decoder steps
        cudnn_in_training = uses_cudnn(traces["train"])
    assert uses_cudnn(traces["train"]) == cudnn_in_training
    for program, trace in traces.items():
        if not uses_cudnn(trace):
            assert "stablehlo" in lowered_for(program, programs, "cuda")


@needs_data
@pytest.mark.parametrize("name", tiered(["gradient_flow", "sentiment", "char_lm", "fixed_points", "translate"]))
def test_a_tpu_run_lowers_with_measurements_at_highest_precision(name, tmp_path, platform, programs):
    """A TPU's default precision (one bfloat16 pass) for training; the flow step's matmuls, its
    update included, at HIGHEST."""
    platform("tpu")
    with jax.default_matmul_precision("bfloat16"):
        build(name, tmp_path, ["--cells" if name in ("gradient_flow", "fixed_points") else "--cell", "lstm"])
        train, flow = (lowered_for(p, programs, "tpu") for p in ("train", "flow"))
    assert dot_precisions(train) == {"default"}
    assert dot_precisions(flow) == {"HIGHEST"}


def dot_precisions(stablehlo: str) -> set[str]:
    """The precisions of a module's matmuls ("default": none given)."""
    lines = [line for line in stablehlo.splitlines() if "stablehlo.dot_general" in line]
    return {line.split("precision = [")[1].split(",")[0] if "precision = [" in line else "default" for line in lines}


def test_gradient_flow_with_seeds_never_picks_cudnn_and_refuses_it_with_the_reason(platform):
    from experiments import gradient_flow, sentiment

    platform("gpu")
    lstm = make_cell("lstm")
    assert gradient_flow.Config.create(cells=("lstm",)).stack_options(lstm).scan.scan == "sequential"
    assert sentiment.Config.create(cell="lstm").stack_options(lstm).scan.scan == "cudnn"
    with pytest.raises(ValueError, match="vmapped step.*no batching rule"):
        gradient_flow.Config.create(cells=("lstm",), scan="cudnn").check_backend()
    with pytest.raises(ValueError, match="float32 only, not --dtype bfloat16"):
        sentiment.Config.create(cell="lstm", scan="cudnn", dtype="bfloat16").check_backend()
    assert sentiment.Config.create(cell="lstm", dtype="bfloat16").stack_options(lstm).scan.scan == "sequential"
    with pytest.raises(ValueError, match="standard LSTM only"):
        sentiment.Config.create(cell="gru", scan="cudnn").check_backend()
    assert sentiment.Config.create(cell="mingru").stack_options(make_cell("mingru")).scan.scan == "parallel"
    platform("cpu")
    with pytest.raises(ValueError, match="needs an NVIDIA GPU.*this run is on cpu"):
        sentiment.Config.create(cell="lstm", scan="cudnn").check_backend()
    assert sentiment.Config.create(cell="lstm").stack_options(lstm).scan.scan == "sequential"


def test_flags_are_parsed_without_asking_jax_for_its_devices(monkeypatch):
    """--scan cudnn is checked after `jax.distributed.initialize` (cli: `check_backend`), not
    while the flags are parsed: asking for the backend first fails on a multi-host run."""
    from experiments import sentiment

    monkeypatch.setattr(backend, "platform", lambda: pytest.fail("the backend was asked while parsing"))
    sentiment.Config.create(cell="lstm", scan="cudnn", matmul_precision="highest")
    with pytest.raises(ValueError, match="--matmul-precision must be one of"):
        sentiment.Config.create(matmul_precision="tf32")
    with pytest.raises(ValueError, match="POSIX file operations.*gcsfuse"):
        sentiment.Config.create(out="gs://bucket/run")


def test_a_multi_process_run_needs_one_out_folder(monkeypatch, tmp_path):
    from experiments import sentiment
    from rnn_jax.config import prepare_run_dir

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="multi-process run needs --out"):
        prepare_run_dir(sentiment.Config.create(), "sentiment")


def test_fixed_points_of_a_cudnn_model_run_on_the_scan_at_highest_precision(platform, monkeypatch):
    """A task experiment's LSTM built for cuDNN on a GPU: the fixed-point finder (its Jacobians
    vmap) runs the scan, every matmul at HIGHEST, and gives what the sequential model gives."""
    from rnn_jax import cudnn

    platform("gpu")
    monkeypatch.setitem(cudnn.IMPLEMENTATION, "kernel", lambda *a: pytest.fail("cuDNN inside an analysis"))
    models = [
        SequenceModel(
            make_cell("lstm"),
            input_size=2,
            hidden_size=6,
            output_size=1,
            stack=StackOptions(scan=ScanOptions(scan=scan)),
            rngs=nnx.Rngs(0),
        )
        for scan in ("cudnn", "sequential")
    ]
    inputs = jax.random.normal(jax.random.key(1), (4, 10, 2))
    states = [fixed_points.trajectories(model, inputs) for model in models]
    np.testing.assert_array_equal(states[0], states[1])
    model_step, seen = fixed_points.model_step(models[0], jnp.zeros(2)), set()

    def step(states):  # the finder's map, noting how it is traced
        seen.add((jax.config.jax_default_matmul_precision, backend.in_analysis()))
        return model_step(states)

    with jax.default_matmul_precision("bfloat16"):  # a TPU's default: the finder must not inherit it
        found = fixed_points.find_fixed_points(step, states[0].reshape(-1, states[0].shape[-1])[:8])
    assert seen == {("highest", True)}
    assert len(found.q) and np.all(found.q < 1e-6)


def test_the_gpu_check_says_first_when_jax_has_no_cuda(tmp_path):
    """On a host whose jax cannot reach a GPU, benchmarks/gpu_check.sh stops at once with one
    clear line, installs nothing and runs nothing (no silent CPU fallback passing as a check)."""
    import subprocess
    import sys
    from pathlib import Path

    if backend.platform() == "gpu":
        pytest.skip("a GPU is here: the check itself runs")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and done.stdout.startswith("NO CUDA: jax here cannot use a GPU")
    assert not (tmp_path / "out" / "summary.tsv").exists()


def test_remat_is_a_flag_that_reaches_every_layer():
    """--remat K: every layer's scan keeps every K-th carry (`ScanOptions.remat`); its gradient
    equals the stored one's (the recomputation is exact)."""
    from experiments import gradient_flow

    with pytest.raises(ValueError, match="--remat must be 0"):
        gradient_flow.Config.create(remat=-1)
    grads = {}
    for remat in (0, 4):
        cfg = gradient_flow.Config.create(cells=("lstm",), remat=remat, hidden=8, layers=2)
        model = cfg.sequence_model("lstm", 0, input_size=2, output_size=1)
        assert all(layer.scan_options.remat == remat for layer in model.rnn.layers)
        graphdef, params = nnx.split(model)
        xs = jax.random.normal(jax.random.key(0), (3, 12, 2))
        grads[remat] = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(xs)[0] ** 2))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads[0], grads[4])


@pytest.mark.slow
def test_eight_devices_with_stacked_seeds_lower_for_gpu_and_tpu():
    """gradient_flow data-parallel over 8 devices with 2 seeds stacked, as an 8-GPU or a TPU
    host builds it, lowered on 8 forced CPU devices (`tests/accelerator_mesh.py`, a subprocess)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.accelerator_mesh"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for platform in ("cuda", "tpu"):
        assert f"{platform}: train and flow steps lowered for 8 devices" in done.stdout
