"""Sweeps beyond one process (`experiments.ablate --launcher`, `gradient_flow --seeds N
--launcher`, `experiments.launch`), on submitit's local executor: the merged summary equals the
inline run's number for number, a point killed mid-run is resumed by the rerun, a failed point is
named with its log and the rest summarised, `--summarise` merges finished folders alone; a run's
seeds as jobs merge to the stacked run's results; the SLURM dry run shows its script, and bad
input is refused before anything is written or submitted."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import submitit

from experiments import ablate, cli, gradient_flow, launch
from rnn_jax import run_lock

from .conftest import ROOT, usage_error
from .test_gradient_flow_experiment import TINY

GRID = [*TINY, "--cells", "gru", "--grid", "recurrent_scale=0.5,1.0"]


def _rows(folder):
    with open(folder / "summary.csv") as f:
        return list(csv.DictReader(f))


def _wait_for_checkpoint(last: Path, step: int, running) -> None:
    """Until the checkpoints folder `last` holds a step >= `step` (within 2 minutes, while
    `running()` says the trainer is still there to be stopped)."""
    deadline = time.monotonic() + 120
    while not (last.is_dir() and any(p.name.isdigit() and int(p.name) >= step for p in last.iterdir())):
        assert time.monotonic() < deadline and running(), "the training ended before it could be stopped"
        time.sleep(0.2)


def test_the_slurm_dry_run_shows_the_job_array_and_submits_nothing(tmp_path, capsys):
    args = [*GRID, "--launcher", "slurm", "--slurm-partition", "gpu-long", "--slurm-time", "240", "--jobs", "1"]
    ablate.main([*args, "--slurm-option", "account=lab", "--dry-run", "--out", str(tmp_path / "sweep")])
    shown = capsys.readouterr().out
    for line in ("#SBATCH --partition=gpu-long", "#SBATCH --time=240", "#SBATCH --array=0-1%1", "--account=lab"):
        assert line in shown
    assert "run  recurrent_scale=0.5" in shown and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jobs", "0"], "--jobs 0: at least one run"),
        (["--launcher", "slurm", "--slurm-option", "acount=lab"], "--slurm-option 'acount=lab': expected KEY=VALUE"),
        (["--launcher", "slurm"], "no sbatch on this machine's PATH"),
        (["--launcher", "cloud"], "--launcher cloud: expected one of inline, local, slurm"),
    ],
)
def test_bad_launch_flags_are_refused_before_anything_is_written(flags, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(SystemExit, match=message):
        ablate.main([*GRID, *flags, "--out", str(tmp_path / "sweep")])
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_local_jobs_merge_to_the_inline_numbers_and_a_failed_point_is_named(tmp_path, capsys):
    ablate.main([*GRID, "--out", str(tmp_path / "inline")])
    sweep = tmp_path / "local"
    ablate.main([*GRID, "--launcher", "local", "--jobs", "2", "--out", str(sweep)])
    assert _rows(sweep) == _rows(tmp_path / "inline")
    assert (sweep / "jobs" / "submitted.json").exists()
    ablate.main(["--resume", str(sweep), "--launcher", "slurm", "--dry-run"])  # a sweep may go on elsewhere
    assert "0 run(s) to start with --launcher slurm, 2 finished" in capsys.readouterr().out
    # a point whose job fails (another process writes its folder): named with its log, the rest summarised
    taken = tmp_path / "taken"
    run_lock.hold(taken / "recurrent_scale=1.0")
    try:
        ablate.main([*GRID, "--launcher", "local", "--out", str(taken)])
    finally:
        run_lock.release_all()
    text = (taken / "summary.md").read_text()
    assert "INCOMPLETE: 1 point(s)" in text and "recurrent_scale=1.0: job" in text
    assert "being written by another process" in text and len(_rows(taken)) == 1
    ablate.main([*GRID, "--summarise", str(sweep)])  # merging the finished folders alone gives the same
    assert _rows(sweep) == _rows(tmp_path / "inline")


@pytest.mark.slow
def test_a_point_killed_mid_run_is_resumed_by_the_rerun(tmp_path):
    """The inline sweep killed (SIGKILL) inside its first point after a checkpoint; the rerun
    with local jobs resumes that point and runs the other; the merged numbers equal an
    uninterrupted inline sweep's."""
    grid = [*GRID, "--steps", "3000", "--checkpoint-every", "100", "--eval-every", "500", "--flow-every", "500"]
    ablate.main([*grid, "--out", str(tmp_path / "whole")])
    sweep = tmp_path / "killed"
    command = [sys.executable, "-m", "experiments.ablate", *grid, "--out", str(sweep)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = sweep / "recurrent_scale=0.5" / "checkpoints" / "gru" / "last"
    _wait_for_checkpoint(last, 200, running=lambda: process.poll() is None)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (sweep / "recurrent_scale=0.5" / "results.json").exists()
    ablate.main([*grid, "--launcher", "local", "--out", str(sweep)])
    assert _rows(sweep) == _rows(tmp_path / "whole")


@pytest.mark.slow
def test_a_job_signalled_before_its_time_limit_is_requeued_and_resumes_exactly(tmp_path):
    """SIGUSR2 to a local job's task, as its controller (and SLURM) sends it before the time
    limit: submitit checkpoints and requeues the call, the new task resumes the point's folder,
    and the run ends as an uninterrupted one."""
    flags = [*TINY, "--cells", "gru", "--steps", "3000", "--checkpoint-every", "100", "--eval-every", "500"]
    flags += ["--flow-every", "500", "--grid", "recurrent_scale=0.5"]
    ablate.main([*flags, "--out", str(tmp_path / "whole")])
    cfg = cli.parse(ablate.Config, [*flags, "--out", str(tmp_path / "requeued")])
    ((name, point, run_dir),) = ablate.grid_points(cfg, tmp_path / "requeued")
    job = submitit.LocalExecutor(folder=tmp_path / "jobs").submit(
        launch.RunJob(), {**cfg.base(), **point}, str(run_dir)
    )
    last = run_dir / "checkpoints" / "gru" / "last"
    _wait_for_checkpoint(last, 200, running=lambda: not job.done())
    controller = job._process.pid  # submitit's local controller; its task is the training process
    (task,) = open(f"/proc/{controller}/task/{controller}/children").read().split()
    os.kill(int(task), signal.SIGUSR2)
    job.result()
    log = job.stderr()
    assert "Requeued job" in log and "resuming at step" in log
    read = lambda folder: json.loads((folder / name / "results.json").read_text())["cells"]["gru"]  # noqa: E731
    whole, requeued = read(tmp_path / "whole"), read(tmp_path / "requeued")
    assert requeued["final_eval_loss"]["per_seed"] == whole["final_eval_loss"]["per_seed"]
    assert requeued["grad_norm_by_lag"] == whole["grad_norm_by_lag"]


def test_a_rerun_waits_for_slurm_jobs_still_queued_instead_of_submitting_them_again(tmp_path, monkeypatch):
    """SLURM itself is not here: its job states and the executor are stand-ins; what is tested is
    which points the rerun submits and which it waits for."""

    class Job:
        def __init__(self, folder=None, job_id="new"):
            self.job_id, self.polls = job_id, 0

        state = property(lambda self: {"1": "RUNNING", "2": "COMPLETED"}.get(self.job_id, "UNKNOWN"))
        paths = property(lambda self: type("Paths", (), {"stderr": tmp_path / f"{self.job_id}.err"})())

        def done(self):
            self.polls += 1
            return self.polls > 1

        def exception(self):
            return None

    class Executor:
        submitted = []

        def batch(self):
            return contextlib.nullcontext()

        def submit(self, fn, options, run_dir):
            self.submitted.append(Path(run_dir).name)
            return Job(job_id=f"new-{len(self.submitted)}")

    monkeypatch.setattr(launch.submitit, "SlurmJob", Job)
    monkeypatch.setattr(launch, "executor", lambda cfg, jobs_dir: Executor())
    monkeypatch.setattr(launch, "POLL_SECONDS", 0)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "submitted.json").write_text(
        json.dumps({"a": {"job_id": "1", "stderr": ""}, "b": {"job_id": "2", "stderr": ""}})
    )
    cfg = cli.parse(ablate.Config, [*GRID, "--launcher", "slurm", "--dry-run"]).replace(dry_run=False)
    todo = [(name, {}, tmp_path / name) for name in ("a", "b", "c")]
    assert launch.run_points(cfg, tmp_path, todo) == {}
    assert Executor.submitted == ["b", "c"]  # a is still running: waited for, not submitted again
    assert json.loads((jobs / "submitted.json").read_text())["a"]["job_id"] == "1"


# gradient_flow --seeds N with each seed a job
SEEDS = [*TINY, "--cells", "gru", "rnn", "--seeds", "2"]


def _same_numbers(actual, expected, where=""):
    """results.json sections equal: the same keys, texts and steps, numbers to float32's vmapped-
    versus-single tolerance (`test_seeds_trained_together_equal_each_seed_alone`)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), (where, set(actual) ^ set(expected))
        for key in expected:
            _same_numbers(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _same_numbers(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6, nan_ok=True), where
    else:
        assert actual == expected, where


def test_a_runs_seeds_as_slurm_jobs_dry_run_shows_one_array_task_per_seed(tmp_path, capsys):
    out = tmp_path / "run"
    gradient_flow.main(
        [*SEEDS, "--seeds", "3", "--launcher", "slurm", "--slurm-time", "30", "--dry-run", "--out", str(out)]
    )
    shown = capsys.readouterr().out
    assert "3 run(s) to start with --launcher slurm" in shown and "run  seed=2" in shown
    assert "#SBATCH --array=0-2%2" in shown and "#SBATCH --time=30" in shown and not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gradient", "truncated:auto"], "a seed's own job would choose its own"),
        (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0"], "each job is one process"),
    ],
)
def test_seed_jobs_refuse_what_one_job_per_seed_cannot_do(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit):  # before anything is written, or a process started
        gradient_flow.main([*SEEDS, "--launcher", "local", *flags, "--out", str(tmp_path / "r")])
    assert message in usage_error(capsys) and not (tmp_path / "r").exists()


def test_a_resumed_run_keeps_its_seeds_stacked_or_each_a_job():
    saved = gradient_flow.Config.create(launcher="local", jobs=2)
    typed = frozenset({"launcher", "jobs"})
    resumed, changes = saved.continued_with(saved.replace(launcher="slurm", jobs=8), typed)
    assert (resumed.launcher, resumed.jobs) == ("slurm", 8) and changes == {
        "launcher": ["local", "slurm"],
        "jobs": [2, 8],
    }
    with pytest.raises(ValueError, match="--launcher inline: the run's seeds were started with --launcher local"):
        saved.continued_with(saved.replace(launcher="inline"), typed)


@pytest.mark.slow
def test_seeds_as_local_jobs_merge_to_the_stacked_run_and_a_failed_seed_is_resumed(tmp_path, capsys):
    """Each seed a local job: results.json's cells and task, and grad_norms.csv, equal the run
    whose seeds trained together. A seed whose folder another process holds fails: the run
    names it with its log and writes no results; --resume then trains that seed alone and the
    merged results are the same."""
    gradient_flow.main([*SEEDS, "--out", str(tmp_path / "stacked")])
    read = lambda run: json.loads((run / "results.json").read_text())  # noqa: E731
    stacked = read(tmp_path / "stacked")
    run = tmp_path / "jobs"
    run_lock.hold(run / "seeds" / "seed=1")
    try:
        with pytest.raises(SystemExit) as failed:
            gradient_flow.main([*SEEDS, "--launcher", "local", "--out", str(run)])
    finally:
        run_lock.release_all()
    message = str(failed.value)
    assert "1 of 2 seed(s) did not finish" in message and "- seed=1: job" in message
    assert "being written by another process" in message and f"--resume {run} runs them again" in message
    assert not (run / "results.json").exists() and launch.finished(run / "seeds" / "seed=0")
    finished_first = (run / "seeds" / "seed=0" / "results.json").stat().st_mtime_ns
    gradient_flow.main(["--resume", str(run)])
    merged = read(run)
    assert (run / "seeds" / "seed=0" / "results.json").stat().st_mtime_ns == finished_first  # not trained again
    _same_numbers(merged["cells"], stacked["cells"])
    _same_numbers(merged["task"], stacked["task"])
    with open(run / "grad_norms.csv") as a, open(tmp_path / "stacked" / "grad_norms.csv") as b:
        jobs_rows, stacked_rows = list(csv.DictReader(a)), list(csv.DictReader(b))
    label = lambda rows: [{k: v for k, v in r.items() if k != "grad_norm"} for r in rows]  # noqa: E731
    assert label(jobs_rows) == label(stacked_rows)
    norms = lambda rows: [float(r["grad_norm"]) for r in rows]  # noqa: E731
    np.testing.assert_allclose(norms(jobs_rows), norms(stacked_rows), rtol=1e-4)
    for name in ("flow_vs_lag.png", "loss_curves.png", "summary.md"):
        assert (run / name).exists()


@pytest.mark.slow
def test_a_resume_waits_for_the_local_jobs_of_a_killed_run(tmp_path, capsys):
    """A run's seeds as local jobs, its own process killed (SIGKILL) while they train: the jobs
    train on. --resume finds each seed's folder still written by its job, waits for them instead
    of starting them again (the one-writer lock would refuse that), and merges their results."""
    flags = [*SEEDS, "--cells", "gru", "--steps", "3000", "--checkpoint-every", "100", "--eval-every", "500"]
    run = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.gradient_flow", *flags, "--launcher", "local", "--out", str(run)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "seeds" / "seed=1" / "checkpoints" / "gru" / "last"
    _wait_for_checkpoint(last, 200, running=lambda: process.poll() is None)
    process.send_signal(signal.SIGKILL)
    process.wait()
    submitted = json.loads((run / "jobs" / "submitted.json").read_text())
    assert all(run_lock.live_holder(run / "seeds" / name) for name in ("seed=0", "seed=1"))  # they train on
    gradient_flow.main(["--resume", str(run)])
    assert "seed=1: job " + submitted["seed=1"]["job_id"] + ", submitted by an earlier run" in capsys.readouterr().err
    assert json.loads((run / "jobs" / "submitted.json").read_text()) == submitted  # nothing started again
    record = json.loads((run / "results.json").read_text())["cells"]["gru"]
    assert record["status"] == {"0": "completed", "1": "completed"}
    assert [r["step"] for r in record["seeds"]["1"]["eval"]][-1] == 3000
