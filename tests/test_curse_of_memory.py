"""experiments.curse_of_memory: the learning rate it chooses per student and nu_0, its
normalised losses read back from the runs themselves, the Hessian at the optimum beside them,
and its bad input."""

import json
import math

import pytest

from experiments import ablate, curse_of_memory

from .conftest import needs_data


def _row(nu, lr, loss, diverged=0, baseline=10.0):
    return dict(
        teacher_nu=nu, lr=lr, final_eval_loss=loss, final_eval_loss_low=loss - 1, final_eval_loss_high=loss + 1,
        diverged=diverged, seeds=5, baseline=baseline, decay_rate_trained=-0.1,
    )  # fmt: skip


def test_the_chosen_rate_is_the_best_where_no_seed_diverged():
    rows = [_row(0.9, 1e-2, 1.0, diverged=1), _row(0.9, 1e-3, 3.0), _row(0.9, 1e-4, 2.0), _row(0.5, 1e-2, 0.1)]
    best = curse_of_memory.chosen(rows, 0.9, ["teacher_nu", "lr"])
    assert best["lr"] == 1e-4 and best["normalised_loss"] == pytest.approx(0.2)
    assert best["normalised_loss_low"] == pytest.approx(0.1) and best["point"] == {"teacher_nu": 0.9, "lr": 1e-4}
    everywhere = [_row(0.99, 1e-2, math.nan, diverged=3), _row(0.99, 1e-3, math.nan, diverged=1)]
    assert (
        curse_of_memory.chosen(everywhere, 0.99, ["teacher_nu", "lr"])["lr"] == 1e-3
    )  # all diverged somewhere: the fewest


def test_bad_input_is_refused_before_training(tmp_path):
    for flags, message in (
        (dict(task="adding"), "measured on the teacher task"),
        (dict(students=("rnn", "transformer")), "--students transformer: expected some of rnn, diagonal"),
        (dict(nus=(0.5, 1.0)), "each nu_0 must be in \\[0, 1\\)"),
    ):
        with pytest.raises(ValueError, match=message):
            curse_of_memory.Config.create(**flags)
    cfg = curse_of_memory.Config.create(quick=True, out=str(tmp_path / "x"))
    cfg.command_line_flags = frozenset({"lr", "quick"})
    with pytest.raises(ValueError, match="--lr: set per student here"):
        curse_of_memory.run(cfg)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@needs_data
def test_the_quick_run_reports_each_student_from_its_runs(quick_runs):
    out = quick_runs["curse_of_memory"]
    results = json.loads((out / "results.json").read_text())
    assert list(results["students"]) == list(curse_of_memory.STUDENTS)
    for name, rows in results["students"].items():
        assert [r["nu"] for r in rows] == [0.5, 0.99]
        for row in rows:  # the normalised loss is the run's own final loss over its own baseline
            run = json.loads((out / name / ablate.point_name(row["point"]) / "results.json").read_text())
            loss = run["cells"][curse_of_memory.STUDENTS[name].cell]["final_eval_loss"]["mean"]
            assert row["normalised_loss"] == pytest.approx(loss / run["task"]["baseline"])
            assert run["task"]["nu"] == row["nu"] and set(row["adam_lr_median"]) >= {"recurrent", "readout"}
    ring = results["students"]["lru"][0]["point"]
    assert ring["lru_r_min"] == ring["teacher_nu"]  # the student's ring tied to the teacher's
    optimum = results["hessian_at_optimum"]
    assert {"rnn", "diagonal", "lru"} <= set(optimum) and optimum["rnn"]["parameters"] == 25
    assert (out / "curse_of_memory.png").exists() and (out / "hessian_at_optimum.png").exists()
    assert "The Hessian at the optimum" in (out / "curse_of_memory.md").read_text()


def test_its_grids_take_the_launcher(tmp_path, capsys):
    curse_of_memory.main(["--quick", "--launcher", "slurm", "--slurm-partition", "gpu", "--dry-run", "--out",
                          str(tmp_path / "curse")])  # fmt: skip
    shown = capsys.readouterr().out
    for name in curse_of_memory.STUDENTS:
        assert f"== {name}: 2 run(s) to start with --launcher slurm" in shown
    assert shown.count("#SBATCH --partition=gpu") == len(curse_of_memory.STUDENTS)
    assert not (tmp_path / "curse").exists()
