"""Where the runs of a grid's points (`experiments.ablate --launcher`, curse_of_memory) or of a
run's seeds (`experiments.gradient_flow --seeds N --launcher`) go: ``inline``, in this process
(the default: a grid's points one after another, a run's seeds stacked in one vmapped step);
``local``, each point or seed a process on this machine, --jobs at a time; ``slurm``, each a
job of a SLURM job array (--jobs its parallelism). Both job launchers go through submitit (its
local executor has the SLURM one's interface): each job trains its own run folder, the folder
an inline grid writes, checkpointing as always; on timeout or preemption submitit requeues it
(`RunJob.checkpoint`) and it resumes from the newest intact checkpoint. Logs and the submitted
job ids go to the sweep's (or run's) jobs/ folder. A run already finished is not run again; a
job that fails is named, with its log's last lines."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import submitit

from rnn_jax import compilation, run_lock
from rnn_jax.config import import_modules, write_json

LAUNCHERS = ("inline", "local", "slurm")
SLURM_OPTIONS = frozenset(submitit.SlurmExecutor._valid_parameters())  # what --slurm-option may set
POLL_SECONDS = 2.0


@dataclasses.dataclass
class LaunchOptions:
    """Where a grid's points or a run's seeds run: the flags of every experiment that runs them
    (mixed into its Config)."""

    launcher: str = "inline"
    """where a grid's points or a run's seeds run: inline (in this process: points one after another, seeds stacked
    in one vmapped step) | local (each point or seed a process on this machine, --jobs at a time) | slurm (a job
    array through submitit, --jobs its parallelism; requeued on timeout or preemption, each resuming its folder)"""
    jobs: int = 2
    """points or seeds at a time with --launcher local or slurm"""
    slurm_partition: str | None = None
    """--launcher slurm: the partition (None: the cluster's default)"""
    slurm_time: int = 60
    """--launcher slurm or local: minutes a job may run before it is stopped (slurm: requeued, and resumes)"""
    slurm_gpus_per_node: int = 0
    """--launcher slurm: GPUs per job"""
    slurm_cpus_per_task: int = 2
    """--launcher slurm: CPU cores per job"""
    slurm_mem: str | None = None
    """--launcher slurm: memory per job, as sbatch --mem takes it (e.g. 16G; None: the partition's default)"""
    slurm_option: tuple[str, ...] = ()
    """--launcher slurm: other parameters of submitit's SLURM executor, KEY=VALUE ... (e.g. account=lab qos=high)"""
    dry_run: bool = False
    """print the runs (to run, finished: a grid's points or a run's seeds) and, for slurm, the job script, and run
    or submit nothing"""


FIELDS = frozenset(f.name for f in dataclasses.fields(LaunchOptions))  # where runs go, not what they train


def launch_options(cfg) -> dict:
    """`cfg`'s LaunchOptions, by flag name (to hand on to the grids it runs)."""
    return {name: getattr(cfg, name) for name in FIELDS}


def finished(run_dir: Path) -> bool:
    """Whether the point's run ended (results.json written, no seed still to train)."""
    path = run_dir / "results.json"
    if not path.exists():
        return False
    cells = json.loads(path.read_text()).get("cells", {})
    return all(status != "interrupted" for record in cells.values() for status in record["status"].values())


def run_point(options: dict, run_dir: Path) -> dict:
    """Train one run (a grid point, a seed) of gradient_flow: `options` (its flag values), a new
    run in `run_dir`, or its resumption where it began before (its config.json written)."""
    from experiments import gradient_flow  # here, not above: gradient_flow takes the launch flags from this module

    cfg = gradient_flow.Config.create(**{**options, "out": str(run_dir)})
    return gradient_flow.run(cfg.replace(resume=str(run_dir), out=None) if (run_dir / "config.json").exists() else cfg)


class RunJob(submitit.helpers.Checkpointable):
    """One run (a grid point, a seed), as a job. On timeout or preemption submitit calls
    `checkpoint` (Checkpointable's: the same call, resubmitted), and the new job resumes the folder."""

    def __call__(self, options: dict, run_dir: str) -> str:
        import_modules(options.get("imports", ()))  # the user's cells and tasks, registered in this process too
        compilation.enable_cache()  # the shared persistent cache ($RNN_JAX_CACHE)
        try:
            run_point(options, Path(run_dir))
        finally:
            run_lock.release_all()
        return run_dir


def executor(cfg, jobs_dir: Path) -> submitit.Executor:
    """submitit's executor for --launcher local or slurm, with the --slurm-* options."""
    if cfg.launcher == "local":
        made = submitit.LocalExecutor(folder=jobs_dir)
        made.update_parameters(timeout_min=cfg.slurm_time)
        return made
    made = submitit.AutoExecutor(folder=jobs_dir, cluster="slurm")
    made.update_parameters(**slurm_parameters(cfg))
    return made


def slurm_parameters(cfg) -> dict:
    """The SlurmExecutor's parameters (with AutoExecutor's slurm_ prefix) from the flags."""
    given = {
        "partition": cfg.slurm_partition,
        "time": cfg.slurm_time,
        "gpus_per_node": cfg.slurm_gpus_per_node or None,
        "cpus_per_task": cfg.slurm_cpus_per_task,
        "mem": cfg.slurm_mem,
        "array_parallelism": cfg.jobs,
        **parse_slurm_options(cfg.slurm_option),
    }
    return {f"slurm_{k}": v for k, v in given.items() if v is not None}


def parse_slurm_options(options) -> dict:
    """--slurm-option KEY=VALUE ... -> {key: value} (values as text; digits as ints)."""
    parsed = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in SLURM_OPTIONS or not value:
            raise ValueError(
                f"--slurm-option {option!r}: expected KEY=VALUE with KEY one of submitit's SLURM parameters "
                f"({', '.join(sorted(SLURM_OPTIONS))})"
            )
        parsed[key] = int(value) if value.isdigit() else value
    return parsed


def check(cfg) -> None:
    """The launch flags, checked before anything is written or submitted."""
    if cfg.launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {cfg.launcher}: expected one of {', '.join(LAUNCHERS)}")
    if cfg.jobs < 1:
        raise ValueError(f"--jobs {cfg.jobs}: at least one run (a point, a seed) must go at a time")
    parse_slurm_options(cfg.slurm_option)
    if cfg.launcher == "slurm" and not cfg.dry_run and shutil.which("sbatch") is None:
        raise ValueError("--launcher slurm: no sbatch on this machine's PATH; run on a SLURM login node, or --dry-run")


def run_points(cfg, out: Path, runs: list[tuple[str, dict, Path]]) -> dict[str, str]:
    """Run each (name, options, run folder) of `runs` (a grid's points, a run's seeds: each one
    gradient_flow run) not finished yet, as --launcher says; returns {name: why it failed} for
    those whose job failed (inline: an error stops them all, as it always has)."""
    todo = [run for run in runs if not finished(run[2])]
    if cfg.launcher == "inline":
        for name, options, run_dir in todo:
            print(f"== {name}", file=sys.stderr)
            run_point(options, run_dir)
        return {}
    jobs_dir, failed = out / "jobs", {}
    made = executor(cfg, jobs_dir)
    # an earlier run's jobs (its process since stopped) that still hold their runs: wait for them
    running = (still_queued if cfg.launcher == "slurm" else still_training)(jobs_dir, todo)
    for name, job in running.items():
        print(f"== {name}: job {job.job_id}, submitted by an earlier run, not done yet: waiting", file=sys.stderr)
    waiting = [(name, options, run_dir) for name, options, run_dir in todo if name not in running]
    if cfg.launcher == "slurm" and waiting:  # one job array; --jobs is its parallelism
        with made.batch():
            jobs = [made.submit(RunJob(), options, str(run_dir)) for _, options, run_dir in waiting]
        for (name, _, _), job in zip(waiting, jobs):
            running[name] = job
            _record_submission(jobs_dir, name, job)
        waiting = []
    while waiting or running:
        while waiting and len(running) < cfg.jobs:
            name, options, run_dir = waiting.pop(0)
            running[name] = made.submit(RunJob(), options, str(run_dir))
            _record_submission(jobs_dir, name, running[name])
        for name, job in list(running.items()):
            if job.done():
                del running[name]
                if job.exception() is not None:
                    failed[name] = _log_tail(job)
                    print(f"== {name}: failed\n{failed[name]}", file=sys.stderr)
                else:
                    print(f"== {name}: done (job {job.job_id})", file=sys.stderr)
        if running:
            time.sleep(POLL_SECONDS)
    return failed


LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"})


def still_queued(jobs_dir: Path, todo: list[tuple[str, dict, Path]]) -> dict:
    """{name: its SLURM job} of the runs whose job, submitted by an earlier run of the sweep
    (jobs/submitted.json), SLURM still holds (pending, running, requeued): a rerun waits for them
    instead of submitting them again."""
    submitted = _submitted(jobs_dir)
    jobs = {
        name: submitit.SlurmJob(folder=jobs_dir, job_id=submitted[name]["job_id"])
        for name, _, _ in todo
        if name in submitted
    }
    return {name: job for name, job in jobs.items() if job.state.split()[0] in LIVE_STATES}


def still_training(jobs_dir: Path, todo: list[tuple[str, dict, Path]]) -> dict:
    """{name: its job} of the runs whose local job, submitted by an earlier run of the sweep
    (jobs/submitted.json) from a process since stopped, still trains their folder: a rerun waits
    for them instead of starting them again (which the folder's one-writer lock would refuse)."""
    submitted = _submitted(jobs_dir)
    return {
        name: EarlierJob(submitted[name], run_dir)
        for name, _, run_dir in todo
        if name in submitted and run_lock.live_holder(run_dir) is not None
    }


class EarlierJob:
    """A local job of an earlier run of the sweep, watched through its folder's writer (it is no
    child of this process): done when no live process writes the folder, failed if the run did
    not finish."""

    def __init__(self, record: dict, run_dir: Path):
        self.job_id, self.log, self.run_dir = record["job_id"], Path(record["stderr"]), run_dir

    def done(self) -> bool:
        return run_lock.live_holder(self.run_dir) is None

    def exception(self) -> Exception | None:
        return None if finished(self.run_dir) else RuntimeError(f"job {self.job_id} ended before its run did")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _submitted(jobs_dir: Path) -> dict:
    """jobs/submitted.json: {point: {"job_id", "stderr": its log}} of every job the sweep submitted."""
    path = jobs_dir / "submitted.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record_submission(jobs_dir: Path, name: str, job) -> None:
    write_json(
        jobs_dir / "submitted.json",
        {**_submitted(jobs_dir), name: {"job_id": job.job_id, "stderr": str(job.paths.stderr)}},
    )


def _tail(text: str, lines: int = 12) -> list[str]:
    return text.strip().splitlines()[-lines:]


def _log_tail(job) -> str:
    return "\n".join(_tail(job.stderr() or str(job.exception())))


def why_unfinished(out: Path, name: str, run_dir: Path) -> str:
    """Why a run (a point, a seed) has not finished: its job's log's last lines where a job ran it."""
    job = _submitted(out / "jobs").get(name)
    if job is None:
        return (
            "not run yet" if not run_dir.exists() else "its run stopped before the end (rerun the sweep to resume it)"
        )
    log = Path(job["stderr"])
    tail = _tail(log.read_text(errors="replace")) if log.exists() else ["(no log yet)"]
    return f"job {job['job_id']}, its log {log} ends:\n\n" + "\n".join(f"      {line}" for line in tail)


def dry_run(cfg, out: Path, runs: list[tuple[str, dict, Path]]) -> str:
    """Which of `runs` --launcher would run (those not finished, in `out`), and for slurm the job
    script submitit would submit."""
    todo = [run for run in runs if not finished(run[2])]
    done = [name for name, _, run_dir in runs if finished(run_dir)]
    lines = [f"{len(todo)} run(s) to start with --launcher {cfg.launcher}, {len(done)} finished:"]
    lines += [f"  run  {name}" for name, _, _ in todo] + [f"  done {name}" for name in done]
    if cfg.launcher == "slurm" and todo:
        parameters = {k.removeprefix("slurm_"): v for k, v in slurm_parameters(cfg).items()}
        folder = out / "jobs"
        command = f"{sys.executable} -u -m submitit.core._submit {folder}"
        # submitit's own sbatch text (what SlurmExecutor writes for each job; private, so pinned)
        script = submitit.slurm.slurm._make_sbatch_string(
            command=command, folder=folder, map_count=len(todo), **parameters
        )
        lines += ["", "the job script (one per run, in a job array):", script]
    return "\n".join(lines)
