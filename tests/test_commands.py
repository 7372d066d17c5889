"""Every documented command works for a newcomer: each experiment's --quick run end to end on
the real corpora (found through $RNN_JAX_DATA, as on a user's machine), the prediction and
sampling commands of README.md and docs/ on those runs, and every `python -m` line of the
README, the docs and each experiment's and benchmark's --help names a module whose flags parse."""

import importlib
import os
import re
import shlex
import subprocess
import sys

import jax
import pytest

from experiments import cli

from .conftest import EXPERIMENTS, ROOT, needs_data

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands(*, help_texts: bool = True) -> list[tuple[str, str, list[str]]]:
    """(where, module, arguments) of every `python -m experiments.X ...` or `benchmarks.X` command
    in README.md and docs/ (in code blocks, or inline in backticks), and with `help_texts` in the
    docstrings (the --help) of the experiments and benchmarks."""
    sources = [(str(p.relative_to(ROOT)), p.read_text()) for p in DOCUMENTS]
    if help_texts:
        for folder in ("experiments", "benchmarks"):
            for path in sorted((ROOT / folder).glob("*.py")):
                module = importlib.import_module(f"{folder}.{path.stem}")
                sources.append((f"{folder}.{path.stem} --help", module.__doc__ or ""))
    command = r"python -m ((?:experiments|benchmarks)\.\w+)"
    commands = []
    for where, text in sources:
        inline = re.findall(r"`" + command + r"([^`]*)`", text)  # may wrap onto the next line
        text = re.sub(r"`python -m [^`]*`", "", text)
        lines = re.findall(command + r"(.*)", text)
        for module, args in [*inline, *lines]:
            args = shlex.split(args.replace("\n", " "), comments=True)
            commands.append((where, module, [a for a in args if a != "&"]))
    return commands


def parse(module_name: str, args: list[str]):
    module = importlib.import_module(module_name)
    if module_name.startswith("benchmarks."):
        return module.build_parser().parse_args(args)
    return cli.parse(module.Config, args, description=module.__doc__)


def _readme_block(registers: str) -> str:
    """The README's example of a user's own cell or measurement (the code block that calls
    `registers`)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if registers in b)


def _readme_cell() -> str:
    return _readme_block("register_cell")


def test_the_readme_code_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        if "out" in namespace:
            assert namespace["out"].flow["by_lag"]["layer0/h"].shape == (32,)


@pytest.mark.slow
def test_your_own_cell_from_the_readme_trains_in_the_main_job(tmp_path):
    """The README's cell, written outside the package, registered by --imports, trained by
    gradient_flow with its flow profile measured, and its gradient equal to autodiff's."""
    import json

    import jax
    import numpy as np

    from experiments import gradient_flow
    from rnn_jax import make_cell, run

    block = _readme_cell()
    assert len(block.strip().splitlines()) <= 30
    (tmp_path / "my_cell.py").write_text(block)
    gradient_flow.main(
        [
            "--imports",
            str(tmp_path / "my_cell.py"),
            "--cells",
            "leaky",
            "--cell-option",
            "leak=0.3",
            "--seq-len",
            "6",
            "--hidden",
            "4",
            "--batch",
            "4",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["cell_option"] == ["leak=0.3"]  # the run's own config sets the cell's option
    record = results["cells"]["leaky"]
    assert record["status"] == {"0": "completed"} and np.all(np.asarray(record["grad_norm_by_lag"]["2"]) > 0)
    cell = make_cell("leaky", leak=0.3)
    params = cell.init(jax.random.key(0), 3, 4)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    grads = [jax.grad(lambda p: run(cell, p, xs, backprop=b)[1].sum())(params) for b in ("fused", "autodiff")]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *grads)


@pytest.mark.slow
def test_your_own_measurement_from_the_readme_is_recorded(tmp_path):
    """The README's measurement, registered by --imports and named by --measure: computed in the
    flow steps from the training loss's state gradients (||dL/dh_T|| averaged over the batch is
    the last entry of the by_step profile, a sum over the batch, divided by the batch size)."""
    import json

    import numpy as np

    from experiments import gradient_flow

    (tmp_path / "my_measure.py").write_text(_readme_block("register_measurement"))
    flags = ["--cells", "gru", "lstm", "--seq-len", "6", "--hidden", "4", "--batch", "4", "--steps", "3"]
    flags += ["--flow-every", "2", "--eval-every", "3", "--spectrum", "0", "--out", str(tmp_path / "run")]
    gradient_flow.main(["--imports", str(tmp_path / "my_measure.py"), "--measure", "last_step_norm", *flags])
    cells = json.loads((tmp_path / "run" / "results.json").read_text())["cells"]
    for cell in ("gru", "lstm"):
        flows = cells[cell]["seeds"]["0"]["flow"]
        assert sorted(flows, key=int) == ["0", "2"]
        for flow in flows.values():
            assert list(flow["measurements"]["last_step_norm"]) == ["[0]"]  # by path in its result: one layer
            measured = flow["measurements"]["last_step_norm"]["[0]"]
            np.testing.assert_allclose(measured, flow["by_step"]["layer0/h"][-1] / 4, rtol=1e-5)


@pytest.mark.slow
def test_your_own_task_from_the_readme_runs_in_the_main_job_and_a_grid(tmp_path):
    """The README's task, written outside the package and registered by --imports: its batches
    are running parity (checked against NumPy); gradient_flow trains two cells on it, two seeds
    each, with flow profiles, spectra and gates; ablate runs a grid over it."""
    import json

    import numpy as np

    from experiments import ablate, gradient_flow
    from rnn_jax import make_task

    block = _readme_block("register_task")
    assert len(block.strip().splitlines()) <= 30
    (tmp_path / "my_task.py").write_text(block)
    flags = ["--imports", str(tmp_path / "my_task.py"), "--task", "parity", "--seq-len", "12", "--hidden", "8"]
    flags += ["--batch", "8", "--steps", "4", "--eval-every", "4", "--eval-batches", "1"]
    gradient_flow.main([*flags, "--cells", "lstm", "gru", "--seeds", "2", "--out", str(tmp_path / "run")])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"]["name"] == "parity" and results["task"]["baseline"] == np.log(2)
    for cell, state_size in (("lstm", 16), ("gru", 8)):  # the LSTM's state is (c, h)
        record = results["cells"][cell]
        assert record["status"] == {"0": "completed", "1": "completed"}
        assert len(record["grad_norm_by_lag"]["3"]) == 12 and len(record["lyapunov"]["3"]) == state_size
        assert set(record["gates"]["3"]) and np.isfinite(record["final_eval_loss"]["mean"])
    cfg = gradient_flow.Config.create(imports=(str(tmp_path / "my_task.py"),), task="parity", batch=3, seq_len=5)
    batch = make_task("parity", cfg).batch(jax.random.key(0))
    bits = np.asarray(batch["inputs"])
    assert np.array_equal(batch["targets"], np.bitwise_xor.accumulate(bits, axis=1))
    ablate.main([*flags, "--cells", "lstm", "--grid", "seq_len=6,12", "--out", str(tmp_path / "grid")])
    summary = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert [row["seq_len"] for row in summary["rows"]] == [6, 12] and summary["base_config"]["task"] == "parity"


def test_the_documents_show_commands():
    modules = {module for _, module, _ in documented_commands()}
    assert {f"experiments.{name}" for name in EXPERIMENTS} <= modules
    assert "experiments.sample" in modules and "benchmarks.throughput" in modules


@pytest.mark.parametrize("where, module, args", documented_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_parses(where, module, args, tmp_path, monkeypatch):
    if "--imports" in args:  # the README's own cell, as a reader would save it beside them
        monkeypatch.chdir(tmp_path)
        (tmp_path / "my_cell.py").write_text(_readme_cell())
        (tmp_path / "my_measure.py").write_text(_readme_block("register_measurement"))
        (tmp_path / "my_task.py").write_text(_readme_block("register_task"))
    try:
        parse(module, args)
    except SystemExit as error:
        pytest.fail(f"{where}: `python -m {module} {shlex.join(args)}` does not parse (exit {error.code})")


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_run_completes(quick_runs, name):
    tables = {"ablate": "summary.md", "curse_of_memory": "curse_of_memory.md"}  # grids of runs: their tables
    results = quick_runs[name] / tables.get(name, "results.json")
    assert results.exists()
    if name not in tables:
        text = results.read_text()
        assert '"status": "completed"' in text or '"completed"' in text


def _predictions():
    return [
        (where, module, args) for where, module, args in documented_commands(help_texts=False) if "--checkpoint" in args
    ]


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("where, module, args", _predictions(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_prediction_runs_on_the_quick_run(quick_runs, capsys, where, module, args):
    # sample reads a char_lm run; the documented fixed-point analysis is of an adding run, as the main job's is
    experiment = {"experiments.sample": "char_lm", "experiments.fixed_points": "gradient_flow"}.get(
        module, module.split(".")[1]
    )
    args = list(args)
    args[args.index("--checkpoint") + 1] = str(quick_runs[experiment])
    importlib.import_module(module).main(args)
    assert capsys.readouterr().out.strip(), f"{where}: `python -m {module}` printed nothing"


def test_bad_flag_values_exit_with_a_usage_error(capsys):
    from experiments import sentiment

    with pytest.raises(SystemExit) as error:
        parse("experiments.sentiment", ["--warmup", "50", "--steps", "50"])
    assert error.value.code == 2 and "--warmup 50 must be below --steps 50" in " ".join(capsys.readouterr().err.split())
    assert sentiment.Config.create(steps=30).warmup_steps == 3  # the default warm-up fits a short run


def test_quick_keeps_explicit_flags_even_at_their_defaults():
    from experiments import sentiment

    assert parse("experiments.sentiment", ["--quick"]).steps == sentiment.Config.QUICK["steps"]
    assert parse("experiments.sentiment", ["--quick", "--steps", "2000"]).steps == 2000  # = the plain default
    assert parse("experiments.sentiment", ["--quick", "--hidden", "128"]).hidden == 128
    assert parse("experiments.sentiment", []).steps == sentiment.Config.create().steps


def test_config_defaults_are_immutable():
    """A default shared between config instances must not be mutable (a list or dict would be)."""
    import dataclasses

    for name in [*EXPERIMENTS, "sample"]:
        module = importlib.import_module(f"experiments.{name}")
        for field in dataclasses.fields(module.Config):
            assert not isinstance(field.default, (list, dict, set)), f"{name}: {field.name}"


def test_the_library_raises_and_only_the_command_line_exits(tmp_path):
    """Nothing under rnn_jax/ exits or prints usage; from a notebook a mistake is an exception."""

    from experiments import gradient_flow, sentiment
    from rnn_jax.config import prepare_run_dir
    from rnn_jax.experiment import load_run

    for path in (ROOT / "rnn_jax").rglob("*.py"):
        source = path.read_text()
        assert "sys.exit" not in source and "SystemExit" not in source and ".error(" not in source, path
    with pytest.raises(ValueError, match="--warmup 20 must be below --steps 10"):
        sentiment.Config.create(steps=10, warmup=20)
    with pytest.raises(FileNotFoundError, match="no file matches"):  # fit's data, in process
        sentiment.run(sentiment.Config.create(data=str(tmp_path / "missing.tsv"), out=str(tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(tmp_path, sentiment.Config, sentiment.build_model)
    cfg = gradient_flow.Config.create(
        steps=2, hidden=4, batch=4, seq_len=5, cells=("rnn",), eval_every=1, out=str(tmp_path / "run")
    )
    gradient_flow.run(cfg)
    with pytest.raises(ValueError, match="already holds a run"):
        prepare_run_dir(cfg, "gradient_flow")
    with pytest.raises(ValueError, match="this run sees 1"):  # fit itself, on a config this machine cannot run
        gradient_flow.run(cfg.replace(out=str(tmp_path / "b"), devices=jax.device_count() + 1))


def test_options_come_in_groups_whose_flags_keep_their_names():
    """`TrainingOptions` nests the model, optimisation, measurement and run groups; each checks
    its own fields; flags and config.json keep the flat names; a cell option is set one way."""
    import dataclasses

    from experiments import gradient_flow
    from rnn_jax.option_groups import ModelOptions, OptimOptions
    from rnn_jax.options import TrainingOptions

    cfg = parse("experiments.gradient_flow", ["--hidden", "8", "--lr", "0.1", "--spectrum", "2", "--seed", "3"])
    assert (cfg.model.hidden, cfg.optim.lr, cfg.measurement.spectrum, cfg.run.seed) == (8, 0.1, 2, 3)
    assert cfg.hidden == 8 and cfg.to_flat()["lr"] == 0.1 and "model" not in cfg.to_flat()
    assert cfg.optim.steps == 1500  # gradient_flow's DEFAULTS, kept by the groups
    assert cfg.replace(hidden=16).model == dataclasses.replace(cfg.model, hidden=16)
    with pytest.raises(ValueError, match="--hidden must be >= 1"):
        ModelOptions(hidden=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimOptions(optimizer="lion")
    with pytest.raises(ValueError, match="--cell-option forget_bias=3 and --forget-bias both set forget_bias"):
        gradient_flow.Config.create(forget_bias=2.0, cell_option=("forget_bias=3",))
    with pytest.raises(TypeError, match="hiden is not a shared option"):

        @dataclasses.dataclass
        class Typo(TrainingOptions):
            DEFAULTS = dict(hiden=3)


def test_help_is_kept_and_shown_again_without_importing_jax(tmp_path):
    """`python -m experiments.X --help` keeps its text (`experiments.help_cache`); the next call
    prints the same text before anything heavy is imported (here a `jax` that cannot be
    imported proves it), and a changed --imports file (a source of the text) builds it anew."""
    env = {**os.environ, "RNN_JAX_CACHE": str(tmp_path / "cache"), "COLUMNS": "100"}
    user = tmp_path / "my_cell.py"
    user.write_text("X = 1\n")
    command = [sys.executable, "-m", "experiments.tabular", "--imports", str(user), "--help"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "--hidden" in first.stdout
    broken = tmp_path / "broken"
    (broken / "jax").mkdir(parents=True)
    (broken / "jax" / "__init__.py").write_text("raise ImportError('jax imported')\n")
    offline = {**env, "PYTHONPATH": f"{broken}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    again = subprocess.run(command, cwd=ROOT, env=offline, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == first.stdout
    user.write_text("X = 2  # changed\n")
    changed = subprocess.run(command, cwd=ROOT, env=offline, capture_output=True, text=True)
    assert changed.returncode != 0 and "jax imported" in changed.stderr  # not served: built anew
