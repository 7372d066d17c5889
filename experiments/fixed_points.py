"""What a trained network computes: its fixed points and slow points (Sussillo & Barak 2013).

Trains each cell on a task as `experiments.gradient_flow` does (every flag of it applies, and
its outputs are written too: profiles, spectra, gates), or reads a finished run (--checkpoint: of
gradient_flow or fixed_points, or of sentiment, tagging, tabular, forecast or char_lm), then finds where each network, under a constant input (--constant; default
zero), stays put (`rnn_jax.fixed_points`), from candidates sampled on its trajectories over
held-out batches, and the stability of each point.

    python -m experiments.fixed_points                                    # 3-bit flip-flop, GRU
    python -m experiments.fixed_points --cells rnn lstm gru mingru --steps 3000
    python -m experiments.fixed_points --quick
    python -m experiments.fixed_points --checkpoint runs/gradient_flow/<run> --candidates 2048
    python -m experiments.fixed_points --checkpoint runs/sentiment/<run>      # under token 0 (padding)

Writes to --out: fixed_points.json ({"input", "cells": {cell: {"points": [{"state", "q",
"kind", "stable", "unstable_modes", "slowest_mode", "eigenvalues"}, ...], counts}}}),
fixed_points.png (trajectories in their top three principal components, the points marked
stable / unstable), eigenvalues.png (each point's Jacobian eigenvalues and the unit circle),
and with training, all that gradient_flow writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import cli, gradient_flow
from rnn_jax import fixed_points, plots_fixed_points
from rnn_jax.config import config_from_json, prepare_run_dir, write_json
from rnn_jax.experiment import load_run, stacked_seed_model
from rnn_jax.tasks import make_task

TASK_EXPERIMENTS = ("sentiment", "tagging", "tabular", "forecast", "char_lm")  # one SequenceModel each


@dataclasses.dataclass
class Config(gradient_flow.Config):
    QUICK: ClassVar[dict] = dict(hidden=16, seq_len=32, steps=300, eval_every=100, candidates=128, finder_steps=500)
    DEFAULTS: ClassVar[dict] = dict(hidden=16, batch=128, steps=2000, lr=1e-2, spectrum=0)

    checkpoint: str | None = None
    """analyse this run instead of training: of gradient_flow or fixed_points (every cell, its first seed) or of
    sentiment, tagging, tabular, forecast or char_lm (its model, on its validation inputs)"""
    constant: tuple[float, ...] = ()
    """the constant input x* under which points are found (empty: zeros; a token id for token inputs)"""
    candidates: int = 1024
    """initial states, sampled from the trajectories of held-out batches"""
    noise: float = 0.05
    """standard deviation of the Gaussian noise added to each candidate"""
    finder_steps: int = 3000
    """Adam steps on q = 1/2 ||F(h) - h||^2, all candidates at once (then 10 Newton steps)"""
    fixed_tolerance: float = 1e-10
    """q below this: a fixed point (above, up to --slow-tolerance: a slow point)"""
    slow_tolerance: float = 1e-6
    """q below this and not fixed: a slow point; above: dropped"""
    # this experiment's defaults: the flip-flop of Sussillo & Barak 2013 with a small GRU
    task: str = "flipflop"
    cells: tuple[str, ...] = ("gru",)
    seq_len: int = 64

    def finder(self) -> fixed_points.FinderOptions:
        return fixed_points.FinderOptions(
            candidates=self.candidates,
            noise=self.noise,
            steps=self.finder_steps,
            fixed_tolerance=self.fixed_tolerance,
            slow_tolerance=self.slow_tolerance,
            seed=self.seed,
        )


def held_out_inputs(cfg: Config, task) -> jax.Array:
    """A batch of the task's inputs from neither the training nor the evaluation stream."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 2)
    return task.first_seed_batch(key)["inputs"]


def task_experiment_network(run_dir: Path) -> tuple[str, str, nnx.Module, jax.Array]:
    """(experiment, cell, model, held-out inputs) of a run of a task experiment with one
    SequenceModel (its best checkpoint; inputs: its first validation batch), recognised by its
    config.json's ``experiment`` (a folder written before it was kept: by its config's fields)."""
    saved = json.loads((run_dir / "config.json").read_text())
    named = saved.pop("experiment", None)
    for name in [named] if named in TASK_EXPERIMENTS else [] if named else TASK_EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        if named or set(saved) == {f.name for f in dataclasses.fields(module.Config)}:
            run_cfg, _, model = load_run(run_dir, module.Config, module.build_model)
            if getattr(run_cfg, "bidirectional", False):
                raise ValueError(f"--checkpoint {run_dir}: a bidirectional model has no one-step map to find points of")
            data, _ = module.EXPERIMENT.data(run_cfg)
            return name, run_cfg.cell, model, jnp.asarray(next(iter(data.eval_batches))["inputs"])
    raise ValueError(
        f"--checkpoint {run_dir}: "
        + (f"a run of {named}, " if named else "")
        + f"not a run of gradient_flow, fixed_points or {', '.join(TASK_EXPERIMENTS)} "
        "(translate and caption are encoder-decoders: no single recurrence to find points of)"
    )


def analyse(cfg: Config, model, inputs) -> tuple[dict, np.ndarray]:
    """(the fixed_points.json record of one network, the sampled trajectories)."""
    paths = fixed_points.trajectories(model, inputs)
    if cfg.constant and np.shape(cfg.constant) != jnp.shape(inputs)[2:] and jnp.ndim(inputs) == 3:
        raise ValueError(
            f"--constant has {len(cfg.constant)} value(s); the model reads {jnp.shape(inputs)[2]} per step"
        )
    constant = jnp.asarray(cfg.constant or np.zeros(jnp.shape(inputs)[2:]), jnp.asarray(inputs).dtype)
    options = cfg.finder()
    found = fixed_points.find_fixed_points(
        fixed_points.model_step(model, constant), fixed_points.sample_candidates(paths, options), options
    )
    record = found.summary()
    return record, np.asarray(paths)


def run(cfg: Config) -> dict:
    networks, eval_losses, what = {}, {}, cfg.task
    if cfg.checkpoint is None:  # train first, as gradient_flow does, into this run's folder
        out = cfg.out or f"runs/fixed_points/{datetime.datetime.now():%Y%m%d-%H%M%S}"
        trained = gradient_flow.run(cfg if cfg.resume else cfg.replace(out=out))
        run_dir = out = Path(trained["out"])
        cfg = config_from_json(Config, trained["config"])
    else:
        run_dir = Path(cfg.checkpoint)
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"--checkpoint {run_dir}: not a run folder (no config.json)")
        out, cfg, _ = prepare_run_dir(cfg, "fixed_points")
        if not (run_dir / "checkpoints" / "last").is_dir():  # gradient_flow's layout: checkpoints/<cell>/
            saved = json.loads((run_dir / "config.json").read_text())
            finder = {f: getattr(cfg, f) for f in ("constant", "candidates", "noise", "finder_steps")}
            finder.update(fixed_tolerance=cfg.fixed_tolerance, slow_tolerance=cfg.slow_tolerance, checkpoint=None)
            cfg = config_from_json(Config, {k: v for k, v in saved.items() if k not in finder}, **finder)
        else:  # a task experiment's: one model
            what, cell, model, inputs = task_experiment_network(run_dir)
            networks[cell] = (model, inputs)
    if not networks:
        what, task = cfg.task, make_task(cfg.task, cfg)
        inputs = held_out_inputs(cfg, task)
        networks = {
            cell: (
                stacked_seed_model(cfg, lambda seed: task.build_model(cfg, cell, seed), run_dir / "checkpoints" / cell),
                inputs,
            )
            for cell in cfg.cells
        }
    if (run_dir / "results.json").exists():  # how well each learned what its points compute
        trained = json.loads((run_dir / "results.json").read_text())
        eval_losses = {c: r["final_eval_loss"]["mean"] for c, r in trained.get("cells", {}).items()}
    records, paths = {}, {}
    for cell, (model, inputs) in networks.items():
        records[cell], paths[cell] = analyse(cfg, model, inputs)
        if cell in eval_losses:
            records[cell]["final_eval_loss"] = eval_losses[cell]
    return write_outputs(cfg, what, out, run_dir, records, paths, inputs)


def write_outputs(cfg: Config, what: str, out: Path, run_dir: Path, records: dict, paths: dict, inputs) -> dict:
    """fixed_points.json and the two figures of the networks trained on `what` (a task or an
    experiment); returns the results."""
    constant = list(cfg.constant) or np.zeros(jnp.shape(inputs)[2:]).tolist()  # a token model: token 0
    results = {"input": constant, "task": what, "run": str(run_dir), "options": dataclasses.asdict(cfg.finder())}
    write_json(out / "fixed_points.json", {**results, "cells": records})
    title = f"{what}: input {constant}"
    plots_fixed_points.fixed_points(
        {c: (paths[c], r["points"]) for c, r in records.items()}, out / "fixed_points.png", title=title
    )
    plots_fixed_points.eigenvalues({c: r["points"] for c, r in records.items()}, out / "eigenvalues.png", title=title)
    return {**results, "cells": records, "out": str(out)}


def summary(cfg: Config, results: dict) -> str:
    lines = [f"\nfixed points of {results['task']} under input {results['input']} -> {results['out']}"]
    lines.append(
        f"{'cell':<8} {'eval loss':>9} {'stable':>6} {'saddles (unstable modes: count)':>32} {'slow':>5}  "
        "slowest stable mode"
    )
    for cell, record in results["cells"].items():
        saddles = ", ".join(f"{m}: {n}" for m, n in sorted(record["unstable_by_modes"].items())) or "-"
        mode = record["slowest_stable_mode"]
        memory = f"|eig| {mode:.4f} (~{-1 / np.log(mode):.0f} steps)" if mode and 0 < mode < 1 else "-"
        loss = f"{record['final_eval_loss']:.3g}" if "final_eval_loss" in record else "-"
        lines.append(f"{cell:<8} {loss:>9} {record['stable']:>6} {saddles:>32} {record['slow']:>5}  {memory}")
    return "\n".join(lines)


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
