"""Gradient flow through time: vanilla RNN vs LSTM vs GRU on a long-lag task.

Trains each cell (same hidden size, data, seed and optimizer) and records, from the jitted
training step itself, the long-range profile ||dL_T/dh_{T-k}|| and the full-loss profile
||dL/dh_t|| at initialisation, every --flow-every steps and at the last step.

    python -m experiments.gradient_flow                       # adding problem, T = 100
    python -m experiments.gradient_flow --quick               # under a minute
    python -m experiments.gradient_flow --task copy --seq-len 50 --seeds 3
    python -m experiments.gradient_flow --task charlm --data tinyshakespeare
    python -m experiments.gradient_flow --cells rnn --recurrent-scale 1.5 --clip-norm 1.0
    python -m experiments.gradient_flow --resume runs/gradient_flow/20261127-120000
    python -m experiments.gradient_flow --seeds 8 --launcher slurm --slurm-partition gpu --dry-run

With --launcher local or slurm each seed is a one-seed run of its own, a job (seeds/seed=S, each
resumable), and the run's results are written from theirs, as when the seeds train together.

Writes to --out: results.json (config, environment, per-cell profiles, decay rates, losses),
grad_norms.csv (long form), flow_vs_lag.png, flow_heatmap.png, loss_curves.png, lyapunov.png and lyapunov_vs_flow.png
(with --spectrum), gates.png, hessian.png, adam_lr.png and sensitivity.png (with those --measure), logs/
(metrics.jsonl + TensorBoard per run) and checkpoints/ (orbax, resumable); with a --launcher
other than inline, seeds/seed=S/ (each seed's own run) and jobs/ (the jobs' logs) instead of
checkpoints/.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
import optax

from experiments import cli, launch
from rnn_jax import plots, summaries
from rnn_jax.cells import CELLS
from rnn_jax.choices import check_choice
from rnn_jax.config import SEED_RUNS, create_run_dir, nulls_as_nan, require_at_least_one, resolve_run_dir
from rnn_jax.experiment import fit, task_data, write_results
from rnn_jax.gradflow import decay_rate, top_state
from rnn_jax.history import History
from rnn_jax.learning_rules import auto_truncation
from rnn_jax.options import RUNTIME_FLAGS, TrainingOptions
from rnn_jax.parallel import is_primary
from rnn_jax.plots_curvature import curvature_figures
from rnn_jax.seeds import split_seeds
from rnn_jax.tasks import TASKS, Task, make_task
from rnn_jax.train import init_train_state, make_flow_probe


@dataclasses.dataclass
class Config(TrainingOptions, launch.LaunchOptions):
    QUICK: ClassVar[dict] = dict(seq_len=50, hidden=32, steps=200, flow_every=50, eval_every=50)
    DEFAULTS: ClassVar[dict] = dict(  # this experiment's defaults (measured in docs/gradient-flow.md with them)
        hidden=64,
        batch=64,
        steps=1500,
        lr=3e-3,
        schedule="constant",
        warmup=0,
        clip_norm=None,
        eval_every=100,
        flow_every=100,
        checkpoint_every=500,
        spectrum=16,
    )
    STACKS_SEEDS: ClassVar[bool] = True  # one vmapped step for every seed, also --seeds 1

    task: str = "adding"
    """the task (rnn_jax.tasks): adding | add | copy | bit_copy | selective_copy | flipflop | teacher | mqar | charlm |
    sentiment | tagging | mnist_pixels | mnist_permuted | mnist_rows | forecast | tabular | caption | translate, or
    one registered by --imports"""
    cells: tuple[str, ...] = ("rnn", "lstm", "gru")
    """the cells to compare (space- or comma-separated): rnn | lstm | gru | mingru | minlstm | lru, or ones
    registered by --imports"""
    seq_len: int = 100
    """T: sequence length (adding), delay (copy: sequences are T + 20), pattern length P (bit_copy: sequences are
    2P + 8), noise length (selective_copy: sequences are T + 1 + --tokens), window (charlm), tokens per text, left-padded (sentiment) or words per sentence,
    right-padded (tagging), steps (flipflop, mqar, teacher), window (forecast); MNIST's is fixed (784 pixels, 28 rows)"""
    tokens: int = 16
    """selective_copy: data tokens to find among the T steps and copy"""
    add_lags: tuple[int, int] = (6, 10)
    """add: the lags t1 < t2 of the two input bits the label depends on (Marschall et al.'s test setting)"""
    teacher_nu: float = 0.9
    """teacher: the inner radius nu_0 of the ring [nu_0, 1) of the teacher's eigenvalues (its memory)"""
    teacher_hidden: int = 10
    """teacher: the teacher's state size (Zucchet & Orvieto's: 10)"""
    teacher_seed: int = 42
    """teacher: the seed of the teacher's draw, apart from --seed (the student's); theirs is 42 in every run"""
    mqar_pairs: int = 4
    """mqar: key-value pairs, each asked once (Zoology's default: 8)"""
    mqar_vocab: int = 64
    """mqar: vocabulary size V, keys 1..V/2-1 and values V/2..V-1 as Zoology splits it (Zoology's default: 8192)"""
    mqar_power_a: float = 1.0
    """mqar: query gaps drawn with probability proportional to gap^(a - 1): 1 uniform; Zoology's default 0.01
    favours short gaps"""
    mqar_noise: bool = False
    """mqar: random tokens at the steps that are not queries, as Zoology's random_non_queries (its default),
    instead of blanks"""
    seeds: int = 1
    """independent seeds per cell (seed, seed + 1, ...), trained together by one vmapped step (with --launcher local
    or slurm: each seed a job): mean +- std in the results, each seed's numbers under `seeds`"""
    eval_batches: int = 4
    """held-out batches per evaluation (tasks on rows of a dataset: every held-out row, in --batch chunks)"""
    data: str | None = None
    """the task's data: charlm: a corpus name (tinyshakespeare | stacks_latex | linux_c, from $RNN_JAX_DATA or
    the hub), a text file or a quoted glob (None: a built-in generated corpus); sentiment: labelled texts
    (None: rt_sentence_polarity); tagging: a treebank (None: ud_english_ewt); mnist_*: digits (None:
    mnist: $RNN_JAX_DATA/mnist, else the hub's ylecun/mnist); forecast: a built-in series (airline | co2 |
    sunspots | nile | unemployment; default airline)"""

    def __post_init__(self):
        # "rnn,lstm" and ("rnn", "lstm") alike (idempotent, so a saved config reloads unchanged)
        self.cells = tuple(name.strip() for part in self.cells for name in part.split(",") if name.strip())
        super().__post_init__()
        check_choice("task", self.task, TASKS)  # after --imports: they may register it
        if not self.cells:
            raise ValueError(f"--cells: name at least one of: {', '.join(CELLS)}")
        for cell in self.cells:
            check_choice("cell", cell, CELLS)
        require_at_least_one(self, ("seq_len", "seeds", "eval_batches"))
        if self.launcher != "inline" and self.coordinator:  # checked here: the processes start before the run
            raise ValueError(
                f"--launcher {self.launcher} with --coordinator: each job is one process of its own; run a "
                "multi-process run with --launcher inline"
            )
        if self.launcher != "inline" and self.gradient == "truncated:auto":
            raise ValueError(
                f"--gradient truncated:auto with --launcher {self.launcher}: K is chosen from the mean decay over "
                "the seeds, and a seed's own job would choose its own; run the seeds together (--launcher inline) "
                "or give truncated:K"
            )

    def selected_cells(self) -> tuple[str, ...]:
        return self.cells

    def run_options(self) -> dict:
        """The options of the run itself (what a grid point or a seed's job trains): every flag but
        where it is written (out, resume) and where it runs (the launch flags)."""
        skip = {"out", "resume", *launch.FIELDS}
        return {name: getattr(self, name) for name in Config.flag_names() if name not in skip}

    def continued_with(self, given: Config, flags: frozenset[str]) -> tuple[Config, dict]:
        """As `TrainingOptions.continued_with`, and a resumed run's seeds may go elsewhere (the launch
        flags), but not between stacked and one job each: their checkpoints are not the same."""
        if "launcher" in flags and (self.launcher == "inline") != (given.launcher == "inline"):
            raise ValueError(
                f"--launcher {given.launcher}: the run's seeds were started with --launcher {self.launcher}, "
                + ("stacked in one run" if self.launcher == "inline" else "each a run of its own")
                + "; resume with that (local and slurm may replace each other), or start a new run (--out)"
            )
        moved = {name: [getattr(self, name), getattr(given, name)] for name in flags & launch.FIELDS}
        moved = {name: values for name, values in moved.items() if values[0] != values[1]}
        resumed, changes = super().continued_with(given, flags - launch.FIELDS)
        return resumed.replace(**{name: new for name, (_, new) in moved.items()}), {**changes, **moved}


def train_cell(cfg: Config, task: Task, cell_name: str, out: Path) -> tuple[dict[int, History], dict]:
    """Train one cell for every seed at once (or resume it): the seeds' models are stacked and
    trained by one vmapped step, each on its own data. Returns ({seed: history}, what the run
    chose for this cell: ``truncation`` with truncated:auto)."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    # each seed's (data, evaluation) keys, as a single-seed run of that seed has them: (seeds, 2)
    keys = jax.numpy.stack([jax.random.split(jax.random.fold_in(jax.random.key(seed), 1)) for seed in seeds])
    data_keys, eval_keys = keys[:, 0], keys[:, 1]
    data = task_data(task, data_keys, eval_keys, chunk=cfg.batch, draws=cfg.eval_batches)
    build = lambda seed: task.build_model(cfg, cell_name, seed)  # noqa: E731
    chosen = {}
    if cfg.gradient == "truncated:auto":  # K from the profile at initialisation (the same on resume)
        initial = fit(cfg.replace(steps=0, gradient="bptt"), out, build, data, seeds=seeds, desc=cell_name).history
        decays = [decay_rate(profile) for profile in _top_profiles(cfg, initial.flow[0]["by_lag"])]
        every = auto_truncation(float(np.mean(decays)), task.info.get("sequence_length", cfg.seq_len))
        chosen["truncation"] = {"K": every, "decay": float(np.mean(decays)), "decay_per_seed": decays}
        cfg = cfg.replace(gradient=f"truncated:{every}")
    desc = f"{cell_name} x {len(seeds)} seed(s)" + (f", {cfg.gradient}" if chosen else "")
    fitted = fit(cfg, out, build, data, seeds=seeds, name=cell_name, desc=desc)
    return dict(zip(seeds, split_seeds(fitted.history, len(seeds)))), chosen


def seed_runs(cfg: Config, out: Path) -> list[tuple[str, dict, Path]]:
    """(name, options, folder) of each seed's own one-seed run, in out/seeds/seed=S (--launcher
    local or slurm)."""
    options = cfg.run_options()
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    return [(f"seed={s}", {**options, "seed": s, "seeds": 1}, out / SEED_RUNS / f"seed={s}") for s in seeds]


def train_seed_jobs(cfg: Config, out: Path) -> dict[str, tuple[dict[int, History], dict]]:
    """Each seed a job training its own one-seed run (those not finished yet); then each seed's
    history read back from its run's results.json: what `train_cell` returns for every cell. A
    seed not finished (its job failed, or was interrupted) is named with its log, and nothing is
    merged."""
    runs = seed_runs(cfg, out)
    launch.run_points(cfg, out, runs)
    unfinished = [
        f"- {name}: {launch.why_unfinished(out, name, run_dir)}"
        for name, _, run_dir in runs
        if not launch.finished(run_dir)
    ]
    if unfinished:
        raise ValueError(
            f"{out}: {len(unfinished)} of {len(runs)} seed(s) did not finish:\n"
            + "\n".join(unfinished)
            + f"\n--resume {out} runs them again (the finished seeds are kept)"
        )
    histories = {cell: {} for cell in cfg.cells}
    for _, options, run_dir in runs:
        cells = json.loads((run_dir / "results.json").read_text())["cells"]
        for cell in cfg.cells:
            record = cells[cell]["seeds"][str(options["seed"])]
            # its measurements as the run had them (write_json wrote a NaN, a diverged step's, as null)
            measured = {name: nulls_as_nan(record[name]) for name in ("train", "eval", "flow")}
            histories[cell][options["seed"]] = History.from_json({**record, **measured})
    return {cell: (by_seed, {}) for cell, by_seed in histories.items()}


def _top_profiles(cfg: Config, by_lag: dict) -> list:
    """Each seed's profile ||dL_T/dh_(T-k)|| of the top layer's hidden state (stacked seeds)."""
    return np.asarray(by_lag[top_state(by_lag, cfg.layers)]).tolist()


def check_measurements(cfg: Config, task: Task) -> None:
    """Your own measurements (--measure) traced on one batch of the task for each cell (shapes
    only, nothing computed) before the run folder is made: a measurement that fails says so
    before anything is written or trained."""
    if not cfg.measure:
        return
    batch = task.first_seed_batch(jax.random.key(0))
    for cell in cfg.cells:
        model = task.build_model(cfg, cell, cfg.seed)
        graphdef, state = init_train_state(model, optax.identity(), jax.random.key(cfg.seed))
        jax.eval_shape(make_flow_probe(graphdef, task.loss_fn, measurements=cfg.measurements()), state.params, batch)


def run(cfg: Config) -> dict:
    """Run (or resume) the experiment described by `cfg`; returns results.json's content."""
    launch.check(cfg)
    out, cfg, resuming = resolve_run_dir(cfg, "gradient_flow", from_command_line=RUNTIME_FLAGS)
    task = make_task(cfg.task, cfg)  # its data found and read before the run folder is made
    check_measurements(cfg, task)
    if cfg.dry_run:
        return {"dry_run": dry_run(cfg, out)}
    if not resuming:
        create_run_dir(out, cfg, "gradient_flow")
    started = time.time()
    if cfg.launcher == "inline":
        trained = {cell: train_cell(cfg, task, cell, out) for cell in cfg.cells}
    else:
        (out / SEED_RUNS).mkdir(exist_ok=True)  # what --resume finds to go on from before any seed checkpoints
        trained = train_seed_jobs(cfg, out)
    histories = {cell: by_seed for cell, (by_seed, _) in trained.items()}
    cells = summaries.summarise_cells(cfg, histories, solved_below=task.solved_threshold)
    for cell, (_, chosen) in trained.items():
        cells[cell].update(chosen)
    for line in summaries.unconverged(cells):
        print(f"warning: {line}", file=sys.stderr)
    results = write_results(
        cfg,
        out,
        {
            "task": {
                "name": cfg.task,
                "metric": task.metric,
                "baseline": task.baseline,
                "vocab": task.vocab,
                "solved_below": task.solved_threshold,
                **task.info,
            },
            "wall_time_s": time.time() - started,
            "cells": cells,
        },
    )
    if is_primary():
        summaries.write_flow_csv(out / "grad_norms.csv", histories)
    plots.training_figures(cfg, task, histories, cells, out)
    if is_primary():
        curvature_figures(cells, out, title=f"{cfg.task}, hidden {cfg.hidden}, {cfg.seeds} seed(s)")
    if is_primary():  # the printed table, kept beside the results (as ablate's summary.md)
        (out / "summary.md").write_text(summary(cfg, results) + "\n")
    return results


def dry_run(cfg: Config, out: Path) -> str:
    """What the run would train, and where: its seeds stacked in this process, or each a job."""
    if cfg.launcher == "inline":
        name = f"{', '.join(cfg.cells)} x seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}, stacked in {out}"
        return launch.dry_run(cfg, out, [(name, {}, out)])
    return launch.dry_run(cfg, out, seed_runs(cfg, out))


def summary(cfg: Config, results: dict) -> str:
    if "dry_run" in results:
        return results["dry_run"]
    return summaries.cells_table(cfg, results)


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
