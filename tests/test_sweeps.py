"""Sweeps beyond one process (`experiments.ablate --launcher`, `experiments.launch`), on
submitit's local executor: the merged summary equals the inline run's number for number, a
point killed mid-run is resumed by the rerun, a failed point is named with its log and the rest
summarised, `--summarise` merges finished folders alone, the SLURM dry run shows its script, and
bad input is refused before anything is written or submitted."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from experiments import ablate, cli, launch
from rnn_jax import run_lock

from .conftest import ROOT
from .test_gradient_flow_experiment import TINY

GRID = [*TINY, "--cells", "gru", "--grid", "recurrent_scale=0.5,1.0"]


def _rows(folder):
    with open(folder / "summary.csv") as f:
        return list(csv.DictReader(f))


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
        (["--jobs", "0"], "--jobs 0: at least one point"),
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
    assert "0 point(s) to run with --launcher slurm, 2 finished" in capsys.readouterr().out
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
    deadline = time.monotonic() + 120
    while not (last.is_dir() and any(p.name.isdigit() and int(p.name) >= 200 for p in last.iterdir())):
        assert time.monotonic() < deadline and process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
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
    job = submitit.LocalExecutor(folder=tmp_path / "jobs").submit(launch.PointJob(), cfg.base(), point, str(run_dir))
    last = run_dir / "checkpoints" / "gru" / "last"
    deadline = time.monotonic() + 120
    while not (last.is_dir() and any(p.name.isdigit() and int(p.name) >= 200 for p in last.iterdir())):
        assert time.monotonic() < deadline and not job.done(), "the job ended before it could be signalled"
        time.sleep(0.2)
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

        def submit(self, fn, base, point, run_dir):
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
