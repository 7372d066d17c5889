"""What a newcomer meets first: every mistake a one-line message that says what to do, a bad
input that leaves no half-made run folder, --help with one default per flag, strict JSON."""

import json
import math

import pytest

from experiments import ablate, char_lm, gradient_flow, sample

from .conftest import usage_error
from .test_gradient_flow_experiment import TINY


def test_a_tool_without_training_has_no_quick_and_says_so(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--quick"])
    assert exit_info.value.code == 2 and "--quick" in usage_error(capsys)


@pytest.mark.parametrize(
    "main, flags",
    [
        (char_lm.main, ["--quick", "--data", "missing.txt"]),
        (gradient_flow.main, ["--quick", "--task", "charlm", "--data", "tinyshakespear"]),
    ],
    ids=["char_lm", "gradient_flow"],
)
def test_bad_data_leaves_no_run_folder(main, flags, tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_JAX_DATA", str(tmp_path / "data"))  # nothing there, and no hub in the tests
    with pytest.raises(SystemExit, match="error:"):
        main([*flags, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_misspelt_grid_field_gets_a_suggestion_and_only_real_fields():
    with pytest.raises(ValueError, match="did you mean forget_bias\\?") as error:
        ablate.parse_grid(["forgetbias=0.5,2.0"])
    listed = str(error.value).split("one of: ")[1]
    assert "QUICK" not in listed and "quick" not in listed.split(", ") and "out" not in listed.split(", ")
    with pytest.raises(ValueError, match="expected FIELD=v1,v2"):
        ablate.parse_grid(["QUICK=1,2"])


def test_a_tied_grid_axis_sets_its_fields_together():
    cfg = ablate.Config.create(task="teacher", cells=("lru",), grid=("teacher_nu+lru_r_min=0.5,0.9", "lr=0.1,0.01"))
    assert cfg.points()[:2] == [
        {"teacher_nu": 0.5, "lru_r_min": 0.5, "lr": 0.1},
        {"teacher_nu": 0.5, "lru_r_min": 0.5, "lr": 0.01},
    ]
    assert len(cfg.points()) == 4
    with pytest.raises(ValueError, match="did you mean teacher_nu"):
        ablate.parse_grid(["teachernu+lru_r_min=0.5"])
    with pytest.raises(ValueError, match="tied fields take one value, so they need one type"):
        ablate.parse_grid(["seq_len+lr=1.5"])


def test_an_unknown_measurement_with_none_registered_says_how_to_add_one(monkeypatch, capsys):
    from rnn_jax import measurements
    from rnn_jax.registry import Registry

    monkeypatch.setattr(measurements, "MEASUREMENTS", Registry("measurement", measurements.MEASUREMENTS.how_to_add))
    with pytest.raises(SystemExit):
        gradient_flow.main(["--measure", "nope"])
    message = usage_error(capsys)
    assert "none is registered" in message and "@register_measurement" in message


def test_help_gives_one_default_per_flag(capsys):
    with pytest.raises(SystemExit):
        gradient_flow.main(["--help"])
    flags = capsys.readouterr().out.split("\n  --")[1:]
    doubled = [flag.split()[0] for flag in flags if flag.count("(default:") > 1]
    assert not doubled, doubled


def test_results_are_strict_json_and_name_their_folder(tmp_path):
    """One seed: intervals are undefined (NaN in Python) and are written null; config.json and
    results.json name the folder chosen and the experiment."""
    out = tmp_path / "run"
    gradient_flow.main([*TINY, "--cells", "gru", "--out", str(out)])
    text = (out / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in results.json"))
    assert results["cells"]["gru"]["final_eval_loss"]["interval"] == [None, None]
    assert results["config"]["out"] == str(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["experiment"] == "gradient_flow" and saved["out"] == str(out)
    assert not math.isnan(results["cells"]["gru"]["final_eval_loss"]["mean"])


def test_resuming_another_experiments_run_names_it_and_its_command(tmp_path):
    run = tmp_path / "lm"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"experiment": "char_lm", "tbptt": "stateful", "cell": "lstm"}))
    with pytest.raises(SystemExit) as exit_info:
        gradient_flow.main(["--resume", str(run)])
    message = str(exit_info.value.code)
    assert f"written by experiments.char_lm: `python -m experiments.char_lm --resume {run}`" in message
    assert "__main__" not in message and "Config" not in message


def test_the_cli_module_lists_every_experiment():
    import subprocess
    import sys

    from experiments import cli

    from .conftest import EXPERIMENTS

    printed = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert set(EXPERIMENTS) <= set(cli.EXPERIMENTS)
    for name in cli.EXPERIMENTS:
        assert f"  {name} " in printed


def test_a_task_whose_batch_lacks_targets_is_named_before_training(tmp_path):
    from rnn_jax import Task, batches, register_task
    from rnn_jax.losses import sequence_cross_entropy
    from rnn_jax.tasks import TASKS

    @register_task("no_targets")
    def no_targets(cfg):
        return Task(
            batch=batches(only_inputs, batch=cfg.batch),
            loss_fn=sequence_cross_entropy,
            model_io=dict(vocab_size=2, output_size=2),
            metric="nats",
            baseline=0.69,
        )

    try:
        with pytest.raises(SystemExit, match="task 'no_targets': its batch is \\['inputs'\\]; a batch is a dict"):
            gradient_flow.main([*TINY, "--task", "no_targets", "--out", str(tmp_path / "run")])
        assert not (tmp_path / "run").exists()
    finally:
        TASKS.pop("no_targets")


def only_inputs(key, batch):
    import jax

    return {"inputs": jax.random.bernoulli(key, 0.5, (batch, 5)).astype("int32")}
