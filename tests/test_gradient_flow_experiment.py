"""experiments.gradient_flow end to end on tiny settings, its resume, and its flag errors;
the synthetic tasks and the text loader it uses."""

import csv
import json
import math
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import gradient_flow
from rnn_jax.data import synthetic, text

from .conftest import needs_data, usage_error

TINY = [
    "--seq-len",
    "6",
    "--hidden",
    "4",
    "--batch",
    "4",
    "--steps",
    "4",
    "--flow-every",
    "2",
    "--eval-every",
    "2",
    "--eval-batches",
    "1",
    "--checkpoint-every",
    "2",
]


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gf") / "adding"
    gradient_flow.main([*TINY, "--seeds", "2", "--out", str(out)])
    return out


def test_outputs_of_a_run(adding_run):
    results = json.loads((adding_run / "results.json").read_text())
    assert results["config"]["task"] == "adding" and results["environment"]["jax"] == jax.__version__
    assert results["task"]["baseline"] == pytest.approx(1 / 6)
    for cell in ("rnn", "lstm", "gru"):
        record = results["cells"][cell]
        assert sorted(record["grad_norm_by_lag"], key=int) == ["0", "2", "3"]
        assert all(len(v) == 6 for v in record["grad_norm_by_lag"].values())
        assert all(len(v) == 6 for v in record["grad_norm_by_step"].values())
        assert len(record["decay_rate"]["3"]["per_seed"]) == 2
        assert record["status"] == {"0": "completed", "1": "completed"}
        assert math.isfinite(record["final_eval_loss"]["mean"])
        seed0 = record["seeds"]["0"]["flow"]["0"]["by_lag"]["layer0/h"]
        seed1 = record["seeds"]["1"]["flow"]["0"]["by_lag"]["layer0/h"]
        np.testing.assert_allclose(record["grad_norm_by_lag"]["0"], (np.array(seed0) + seed1) / 2, rtol=1e-6)
        spectrum = record["lyapunov"]["3"]  # --spectrum 16, at most the carry's size (4 or 8 here)
        assert len(spectrum) == (8 if cell == "lstm" else 4) and spectrum == sorted(spectrum, reverse=True)
        assert set(record["lyapunov_summary"]["0"]) == {
            "leading",
            "leading_stderr",
            "converged",
            "memory_directions",
            "log_condition",
            "leading_participation",
        }
        if cell != "rnn":
            gates = {"lstm": {"i", "f", "o"}, "gru": {"r", "z"}}[cell]
            assert set(record["gates"]["3"]) == gates and record["time_constant"]["0"] > 0
            assert set(record["gates"]["3"][next(iter(gates))]) == {"mean", "low", "high"}
    with open(adding_run / "grad_norms.csv") as f:
        rows = list(csv.DictReader(f))
    # 3 cells x 2 seeds x 3 measured steps x 2 profiles x 6 indices, + the LSTM's c component
    assert len(rows) == 3 * 2 * 3 * 2 * 6 + 2 * 3 * 2 * 6
    for name in ("flow_vs_lag.png", "flow_heatmap.png", "loss_curves.png", "lyapunov.png", "gates.png"):
        assert (adding_run / name).stat().st_size > 10_000
    assert (adding_run / "logs" / "lstm" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_seeds_trained_together_equal_each_seed_alone(adding_run, tmp_path):
    gradient_flow.main([*TINY, "--seed", "1", "--cells", "gru", "--out", str(tmp_path / "alone")])
    together = json.loads((adding_run / "results.json").read_text())["cells"]["gru"]["seeds"]["1"]
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())["cells"]["gru"]["seeds"]["1"]
    for split in ("train", "eval"):
        assert [r["step"] for r in together[split]] == [r["step"] for r in alone[split]]
        np.testing.assert_allclose([r["loss"] for r in together[split]], [r["loss"] for r in alone[split]], rtol=1e-5)
    for step, profiles in alone["flow"].items():
        np.testing.assert_allclose(
            together["flow"][step]["by_lag"]["layer0/h"], profiles["by_lag"]["layer0/h"], rtol=1e-4
        )


def test_resume_of_a_finished_run_reproduces_it(adding_run, capsys):
    before = json.loads((adding_run / "results.json").read_text())
    gradient_flow.main(["--resume", str(adding_run)])
    after = json.loads((adding_run / "results.json").read_text())
    assert after["cells"] == before["cells"]
    with pytest.raises(SystemExit, match="already holds a run"):
        gradient_flow.main([*TINY, "--out", str(adding_run)])


@pytest.mark.slow
def test_a_run_folder_of_earlier_code_resumes_exactly(tmp_path, capsys):
    """tests/data/run_bc7a44a: a GRU run written by the code of commit bc7a44a (4 steps,
    evaluation, flow and spectra every 2), its last checkpoint (step 4) removed. Resumed by
    today's code from step 2, it ends where that run ended: the same losses, profiles, spectra."""
    folder = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "run_bc7a44a", folder)
    gradient_flow.main(["--resume", str(folder)])
    assert "T=6, hidden 4, 4 steps" in capsys.readouterr().out  # the summary of the run's own config
    resumed = json.loads((folder / "results.json").read_text())["cells"]["gru"]
    whole = json.loads((folder / "results_of_the_whole_run.json").read_text())["cells"]["gru"]
    assert resumed["seeds"]["0"]["train"] == whole["seeds"]["0"]["train"]
    assert resumed["seeds"]["0"]["eval"] == whole["seeds"]["0"]["eval"]
    for key in ("grad_norm_by_lag", "grad_norm_by_step", "lyapunov"):
        assert resumed[key] == whole[key], key
    final = resumed["final_eval_loss"]  # results.json only gains keys (the intervals over seeds)
    assert {k: final[k] for k in whole["final_eval_loss"]} == whole["final_eval_loss"]


@pytest.mark.parametrize(
    "task, steps",
    [
        ("tabular", 1),
        *(pytest.param(t, s, marks=pytest.mark.slow) for t, s in (("copy", 26), ("charlm", 6), ("caption", 6))),
    ],
)
def test_other_tasks_run(tmp_path, task, steps):
    """Any registered task, the single-model experiments' included (tabular: one step a row;
    caption: its own model, a decoder whose profile is decoder/layer0/h)."""
    gradient_flow.main([*TINY, "--task", task, "--cells", "lstm", "--out", str(tmp_path / task)])
    results = json.loads((tmp_path / task / "results.json").read_text())
    assert len(results["cells"]["lstm"]["grad_norm_by_lag"]["3"]) == steps


@pytest.mark.slow
def test_profile_at_initialisation_only(tmp_path):
    gradient_flow.main([*TINY, "--steps", "0", "--cells", "rnn,gru", "--out", str(tmp_path / "init")])
    results = json.loads((tmp_path / "init" / "results.json").read_text())
    assert list(results["cells"]["gru"]["grad_norm_by_lag"]) == ["0"]
    assert (tmp_path / "init" / "flow_vs_lag.png").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cells", "rnn,lsmt"], "unknown cell"),
        (["--task", "sort"], "unknown task 'sort'"),
        (["--hidden", "0"], "--hidden must be >= 1"),
        (["--clip-norm", "1", "--clip-value", "1"], "not both"),
        (["--activation", "gelu"], "unknown activation 'gelu'"),
        (["--optimizer", "lion"], "unknown optimizer 'lion'"),
        (["--measure", "nope"], "unknown measurement 'nope'"),
    ],
)
def test_bad_flags_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gradient_flow.main(flags)
    assert exit_info.value.code == 2 and message in usage_error(capsys)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cells", "rnn", "--chrono-init", "100"], "--chrono-init: none of the selected cells (rnn) has the option"),
        (["--cells", "lstm", "--cell-option", "activation=relu"], "--cell-option activation: none of the selected"),
        (["--cells", "rnn", "--gru-form", "reset_before"], "--gru-form: none of the selected cells (rnn)"),
        (["--cells", "gru", "--hidden", "8", "--spectrum", "9"], "the gru state has 8 Lyapunov exponents"),
        (["--cells", "lstm", "--hidden", "8", "--spectrum", "17"], "the lstm state has 16 Lyapunov exponents"),
    ],
)
def test_an_option_no_selected_cell_has_is_an_error(flags, message, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        gradient_flow.main([*flags, "--out", str(tmp_path / "run")])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_cell_options_are_typed_by_the_cell(capsys):
    cfg = gradient_flow.Config.create(cells=("rnn", "lstm"), cell_option=("activation=relu", "forget_bias=2"))
    assert cfg.make_cell("rnn").activation == "relu" and cfg.make_cell("lstm").forget_bias == 2.0
    cfg.check_against_cells()  # each option is one of some selected cell
    for bad, message in (("forget_bias=high", "lstm's forget_bias: expected a float"), ("forget_bias", "NAME=VALUE")):
        with pytest.raises(SystemExit):
            gradient_flow.main(["--cells", "lstm", "--cell-option", bad])
        assert message in usage_error(capsys)


def test_out_naming_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        gradient_flow.main([*TINY, "--out", str(tmp_path / "file")])
    assert "is a file; give a folder" in str(exit_info.value.code)


def test_synthetic_tasks():
    adding = synthetic.adding_batch(jax.random.key(0), 2000, 30)
    assert adding["inputs"].shape == (2000, 30, 2)
    np.testing.assert_array_equal(adding["inputs"][..., 1].sum(1), 2.0)
    assert float(np.mean((adding["targets"] - 1.0) ** 2)) == pytest.approx(synthetic.ADDING_BASELINE_MSE, rel=0.1)
    copy = synthetic.copy_batch(jax.random.key(0), 3, 7)
    assert copy["inputs"].shape == copy["targets"].shape == (3, 27)
    np.testing.assert_array_equal(copy["targets"][:, -10:], copy["inputs"][:, :10])
    assert np.all(copy["inputs"][:, 16] == synthetic.COPY_DELIMITER)
    assert synthetic.copy_baseline(100) == pytest.approx(10 * np.log(8) / 120)


def test_text_loading_and_its_errors(tmp_path):
    (tmp_path / "a.txt").write_text("hello\nworld\n")
    (tmp_path / "b.txt").write_text("again\n")
    assert text.load_text(str(tmp_path / "*.txt")) == "hello\nworld\nagain\n"
    with pytest.raises(FileNotFoundError, match="no text file matches"):
        text.load_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        text.load_text(str(tmp_path / "empty.txt"))
    vocab = text.CharVocab.from_text("abca")
    assert vocab.decode(vocab.encode("cab")) == "cab"
    with pytest.raises(ValueError, match="not in the vocabulary: \\['z'\\]"):
        vocab.encode("az")
    with pytest.raises(ValueError, match="fewer than one window"):
        text.random_windows(jax.random.key(0), vocab.encode("abc"), 2, 5)


@pytest.mark.slow
def test_ablation_grid(tmp_path):
    from experiments import ablate

    out = tmp_path / "ablate"
    ablate.main([*TINY, "--grid", "lstm_variant=CIFG,FGR", "--grid", "clip_norm=none,1.0", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["lstm_variant"], r["clip_norm"]) for r in rows] == [
        ("CIFG", ""),
        ("CIFG", "1.0"),
        ("FGR", ""),
        ("FGR", "1.0"),
    ]
    assert all(r["cell"] == "lstm" for r in rows)
    assert "| lstm_variant | clip_norm | cell |" in (out / "summary.md").read_text()
    assert (out / "ablation.png").stat().st_size > 10_000
    run = json.loads((out / "lstm_variant=FGR,clip_norm=1.0" / "results.json").read_text())
    assert run["config"]["lstm_variant"] == "FGR" and run["config"]["clip_norm"] == 1.0
    before = json.loads((out / "results.json").read_text())["rows"]
    ablate.main(["--resume", str(out)])  # the same grid, its finished points reused: nothing new
    assert json.loads((out / "results.json").read_text())["rows"] == before
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        f"lstm_variant={v},clip_norm={c}" for v in ("CIFG", "FGR") for c in ("None", "1.0")
    )


@pytest.mark.parametrize(
    "grid, message", [("hiden=1,2", "a gradient_flow option"), ("lstm_variant=NXG", "unknown --lstm-variant 'NXG'")]
)
def test_ablation_grid_errors(tmp_path, grid, message, capsys):
    from experiments import ablate

    with pytest.raises(SystemExit):
        ablate.main([*TINY, "--grid", grid, "--out", str(tmp_path / "x")])
    assert message in usage_error(capsys)


@pytest.mark.slow
def test_a_resumed_run_applies_or_refuses_each_flag(tmp_path):
    """--resume with more --steps under a constant schedule trains on to them, bit-exact with a run
    that had them from the start, and says so in config.json and config_history.json; how often it
    evaluates is applied; what it trains (--lr), or --steps under a schedule laid out over the old
    total, is refused naming the flag, the saved value and what to do."""
    base = ["--cells", "gru", "--seq-len", "6", "--hidden", "4", "--batch", "4", "--eval-every", "3"]
    base += ["--checkpoint-every", "3", "--spectrum", "0", "--flow-every", "3"]
    gradient_flow.main([*base, "--steps", "6", "--out", str(tmp_path / "short")])
    gradient_flow.main(["--resume", str(tmp_path / "short"), "--steps", "9", "--eval-every", "9"])
    gradient_flow.main([*base, "--steps", "9", "--eval-every", "9", "--out", str(tmp_path / "long")])
    resumed, straight = (
        json.loads((tmp_path / r / "results.json").read_text())["cells"]["gru"]["seeds"]["0"] for r in ("short", "long")
    )
    train = [{r["step"]: r for r in run["train"]} for run in (resumed, straight)]
    assert train[0][8] == train[1][8] and train[0][0] == train[1][0]  # the short run also logged its last step, 5
    assert resumed["eval"][-1] == straight["eval"][-1] and resumed["flow"]["8"] == straight["flow"]["8"]
    assert json.loads((tmp_path / "short" / "config.json").read_text())["steps"] == 9
    (entry,) = json.loads((tmp_path / "short" / "config_history.json").read_text())
    assert entry["changed"] == {"eval_every": [3, 9], "steps": [6, 9]}
    with pytest.raises(SystemExit, match=r"--lr 0.1: the run was started with lr = 0.003.*drop the flag"):
        gradient_flow.main(["--resume", str(tmp_path / "short"), "--lr", "0.1"])
    gradient_flow.main([*base, "--steps", "6", "--schedule", "cosine", "--out", str(tmp_path / "cosine")])
    with pytest.raises(SystemExit, match=r"--steps 12: the run's cosine learning-rate schedule .* its 6 steps"):
        gradient_flow.main(["--resume", str(tmp_path / "cosine"), "--steps", "12"])


def test_a_quick_grid_is_replaced_by_the_grid_given_and_resume_names_the_grid_folder(tmp_path):
    """`ablate --quick --grid X` is the grid X (not X added to the quick grid); `ablate --resume
    DIR` is the grid in DIR run again (finished points reused)."""
    from experiments import ablate
    from experiments.cli import parse

    assert [p["lstm_variant"] for p in parse(ablate.Config, ["--quick"]).points()] == ["standard", "NFG"]
    given = parse(ablate.Config, ["--quick", "--grid", "seq_len=10,20"])
    assert given.points() == [{"seq_len": 10}, {"seq_len": 20}]
    started = parse(
        ablate.Config, ["--task", "copy", "--grid", "seq_len=10,20", "--seeds", "2", "--out", str(tmp_path)]
    )
    assert ablate.grid_to_run(started) == (tmp_path, started)  # a new grid: its config.json written
    out, resumed = ablate.grid_to_run(parse(ablate.Config, ["--resume", str(tmp_path)]))
    assert out == tmp_path and resumed == started and resumed.points() == [{"seq_len": 10}, {"seq_len": 20}]
    assert ablate.grid_to_run(started)[1] == started  # the same command again continues it
    with pytest.raises(ValueError, match=r"other settings \(seeds\); --resume"):
        ablate.grid_to_run(started.replace(seeds=3))
    with pytest.raises(ValueError, match="--steps would change it"):
        ablate.grid_to_run(parse(ablate.Config, ["--resume", str(tmp_path), "--steps", "5"]))
    with pytest.raises(FileNotFoundError, match="is it the output folder of an ablate grid"):
        ablate.grid_to_run(parse(ablate.Config, ["--resume", str(tmp_path / "nothing")]))


def test_a_grid_written_before_its_config_was_kept_resumes_from_its_results(tmp_path):
    """An older grid folder has no config.json: results.json's axes and base config are the grid."""
    from experiments import ablate
    from experiments.cli import parse

    started = parse(ablate.Config, ["--cells", "rnn", "--grid", "clip_norm=none,1.0", "--grid", "cells=rnn,gru"])
    base = {k: v for k, v in started.to_flat().items() if k not in ("out", "resume", "grid")}
    (tmp_path / "results.json").write_text(json.dumps({"grid": started.axes(), "base_config": base, "rows": []}))
    _, resumed = ablate.grid_to_run(parse(ablate.Config, ["--resume", str(tmp_path)]))
    assert resumed.points() == started.points() and resumed.base() == started.base()
    # the same command into that folder continues the grid (its config.json now written) ...
    assert ablate.grid_to_run(started.replace(out=str(tmp_path)))[1].points() == started.points()
    assert (tmp_path / "config.json").exists()
    with pytest.raises(ValueError, match=r"other settings \(grid\)"):  # ... another grid does not
        ablate.grid_to_run(started.replace(out=str(tmp_path), grid=("clip_norm=none,2.0",)))


@pytest.mark.slow
@needs_data
def test_sequential_mnist_runs_with_every_measurement(tmp_path, capsys):
    """Row-by-row MNIST (the real digits under $RNN_JAX_DATA/mnist): the flow over all 28 lags,
    the spectrum, the gates' time constants, and the test accuracy with its interval over seeds."""
    out = tmp_path / "rows"
    flags = [*TINY[2:], "--task", "mnist_rows", "--cells", "lstm", "--seeds", "2", "--spectrum", "2"]
    gradient_flow.main([*flags, "--out", str(out)])
    printed = capsys.readouterr().out
    lstm = json.loads((out / "results.json").read_text())["cells"]["lstm"]
    assert len(lstm["grad_norm_by_lag"]["3"]) == 28 and len(lstm["lyapunov"]["3"]) == 2
    assert {"time_constant_median", "time_constant_p90", "time_constant_max"} <= set(lstm)
    accuracy = lstm["final_eval_accuracy"]
    assert len(accuracy["per_seed"]) == 2 and all(0.0 <= a <= 1.0 for a in accuracy["per_seed"])
    low, high = accuracy["interval"]
    assert low <= accuracy["mean"] <= high and f"accuracy {accuracy['mean']:.4f} [{low:.3f}, {high:.3f}]" in printed
    # chosen on the validation digits, each seed at its own best evaluation; the test digits reported beside
    history = {s: lstm["seeds"][s]["eval"] for s in ("0", "1")}
    chosen = [min(records, key=lambda r: r["loss"]) for records in history.values()]
    test = lstm["test_at_best_validation"]
    assert test["accuracy"]["per_seed"] == [r["test_accuracy"] for r in chosen] and test["step"] == [
        r["step"] for r in chosen
    ]
    assert lstm["final_test"]["loss"]["per_seed"] == [records[-1]["test_loss"] for records in history.values()]
    assert "test " in printed and "test: at each seed's best validation loss" in printed


@pytest.mark.slow
@needs_data
def test_an_ablation_on_mnist_reports_accuracy_with_intervals(tmp_path):
    from experiments import ablate

    out = tmp_path / "grid"
    flags = [*TINY[2:], "--task", "mnist_rows", "--seeds", "2", "--grid", "lstm_variant=standard,CIFG"]
    ablate.main([*flags, "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())["rows"]
    for row in rows:
        run = json.loads((out / f"lstm_variant={row['lstm_variant']}" / "results.json").read_text())
        accuracy = run["cells"]["lstm"]["final_eval_accuracy"]
        assert row["final_eval_accuracy"] == accuracy["mean"]
        assert [row["final_eval_accuracy_low"], row["final_eval_accuracy_high"]] == accuracy["interval"]
        assert row["test_accuracy"] == run["cells"]["lstm"]["test_at_best_validation"]["accuracy"]["mean"]
    table = (out / "summary.md").read_text()
    assert (
        "test accuracy at best validation [95% CI]" in table
        and "solved [95% CI]" in table
        and "decay/step at init [95% CI]" in table
    )
