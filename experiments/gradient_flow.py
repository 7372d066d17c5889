"""Gradient flow through time: vanilla RNN vs LSTM vs GRU on a long-lag task.

Trains each cell (same hidden size, data, seed and optimizer) and records, from the jitted
training step itself, the long-range profile ||dL_T/dh_{T-k}|| and the full-loss profile
||dL/dh_t|| at initialisation, every --flow-every steps and at the last step.

    python -m experiments.gradient_flow                       # adding problem, T = 100
    python -m experiments.gradient_flow --quick               # < 2 minutes
    python -m experiments.gradient_flow --task copy --seq-len 50 --seeds 3
    python -m experiments.gradient_flow --task charlm --data tinyshakespeare
    python -m experiments.gradient_flow --cells rnn --recurrent-scale 1.5 --clip-norm 1.0
    python -m experiments.gradient_flow --resume runs/gradient_flow/20261127-120000

Writes to --out: results.json (config, environment, per-cell profiles, decay rates, losses),
grad_norms.csv (long form), flow_vs_lag.png, flow_heatmap.png, loss_curves.png, logs/
(metrics.jsonl + TensorBoard per run) and checkpoints/ (orbax, resumable).
"""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from flax import nnx

from experiments import cli
from rnn_jax import plots
from rnn_jax.cells import CELLS
from rnn_jax.choices import check_choice
from rnn_jax.config import prepare_run_dir, require_at_least_one
from rnn_jax.experiment import fit, write_results
from rnn_jax.gradflow import decay_rate
from rnn_jax.history import History
from rnn_jax.layers import SequenceModel
from rnn_jax.options import RUNTIME_FLAGS, TrainingOptions
from rnn_jax.parallel import is_primary
from rnn_jax.seeds import split_seeds
from rnn_jax.tasks import TASKS, Task, make_task, stacked_batch


@dataclasses.dataclass
class Config(TrainingOptions):
    QUICK: ClassVar[dict] = dict(seq_len=50, hidden=32, steps=200, flow_every=50, eval_every=50)

    task: str = "adding"
    """the task (rnn_jax.tasks): adding | copy | selective_copy | charlm | sentiment | tagging, or one registered
    by --imports"""
    cells: tuple[str, ...] = ("rnn", "lstm", "gru")
    """the cells to compare (space- or comma-separated): rnn | lstm | gru | mingru | minlstm | lru, or ones
    registered by --imports"""
    seq_len: int = 100
    """T: sequence length (adding), delay (copy: sequences are T + 20), noise length (selective_copy: sequences
    are T + 1 + --tokens), window (charlm), tokens per text, left-padded (sentiment) or words per sentence,
    right-padded (tagging)"""
    tokens: int = 16
    """selective_copy: data tokens to find among the T steps and copy"""
    seeds: int = 1
    """independent seeds per cell (seed, seed + 1, ...), trained together by one vmapped step: mean +- std in
    the results, each seed's numbers under `seeds`"""
    eval_batches: int = 4
    """held-out batches per evaluation"""
    data: str | None = None
    """the task's data: charlm: a corpus name (tinyshakespeare | stacks_latex | linux_c, from $RNN_JAX_DATA or
    the hub), a text file or a quoted glob (default: a built-in generated corpus); sentiment: labelled texts
    (default rt_sentence_polarity); tagging: a treebank (default ud_english_ewt)"""
    # this experiment's defaults (measured in docs/gradient-flow.md with them)
    hidden: int = 64
    batch: int = 64
    steps: int = 1500
    lr: float = 3e-3
    schedule: str = "constant"
    warmup: int | None = 0
    clip_norm: float | None = None
    eval_every: int = 100
    flow_every: int | None = 100
    checkpoint_every: int = 500
    spectrum: int = 16

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

    def selected_cells(self) -> tuple[str, ...]:
        return self.cells


def train_cell(cfg: Config, task: Task, cell_name: str, out: Path) -> dict[int, History]:
    """Train one cell for every seed at once (or resume it): the seeds' models are stacked and
    trained by one vmapped step, each on its own data. Returns {seed: history}."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    # each seed's (data, evaluation) keys, as a single-seed run of that seed has them: (seeds, 2)
    keys = jax.numpy.stack([jax.random.split(jax.random.fold_in(jax.random.key(seed), 1)) for seed in seeds])
    data_keys, eval_keys = keys[:, 0], keys[:, 1]
    eval_data = task.data if task.eval_data is None else task.eval_data

    def build_model(seed: int) -> SequenceModel:
        cell = cfg.make_cell(cell_name)
        return SequenceModel(
            cell,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            rngs=nnx.Rngs(seed),
            **cfg.layer_options(cell),
            **task.model_io,
        )

    fitted = fit(
        cfg,
        out,
        build_model=build_model,
        loss_fn=task.loss_fn,
        get_batch=lambda step: stacked_batch(task.batch, data_keys, step, task.data),
        eval_batches=[stacked_batch(task.batch, eval_keys, i, eval_data) for i in range(cfg.eval_batches)],
        seeds=seeds,
        name=cell_name,
        desc=f"{cell_name} x {len(seeds)} seed(s)",
    )
    return dict(zip(seeds, split_seeds(fitted.history, len(seeds))))


def summarise(cfg: Config, histories: dict[str, dict[int, History]]) -> dict:
    """results.json's `cells` section: per cell, profiles averaged over seeds (the top layer's
    h), decay rates, final metric; each seed's full record under `seeds`."""
    top = f"layer{cfg.layers - 1}/h"
    cells = {}
    for cell, by_seed in histories.items():
        steps = sorted(set.intersection(*(set(h.flow) for h in by_seed.values())))
        by_lag = {s: np.array([h.flow[s]["by_lag"][top] for h in by_seed.values()]) for s in steps}
        by_step = {s: np.array([h.flow[s]["by_step"][top] for h in by_seed.values()]) for s in steps}
        rates = {s: [decay_rate(p) for p in by_lag[s]] for s in steps}
        finals = [h.eval[-1]["loss"] if h.eval else float("nan") for h in by_seed.values()]
        accuracies = [h.eval[-1].get("accuracy", float("nan")) if h.eval else float("nan") for h in by_seed.values()]
        cells[cell] = {
            "grad_norm_by_lag": {str(s): by_lag[s].mean(0).tolist() for s in steps},
            "grad_norm_by_step": {str(s): by_step[s].mean(0).tolist() for s in steps},
            "decay_rate": {
                str(s): {"mean": float(np.mean(r)), "std": float(np.std(r)), "per_seed": r} for s, r in rates.items()
            },
            "final_eval_loss": seed_stats(finals),
            **(
                {"final_eval_accuracy": seed_stats(accuracies)}
                if any(h.eval and "accuracy" in h.eval[-1] for h in by_seed.values())
                else {}
            ),
            "status": {str(seed): h.status for seed, h in by_seed.items()},
            **summarise_dynamics(cfg, [{s: h.flow[s].get("dynamics", {}) for s in steps} for h in by_seed.values()]),
            "seeds": {str(seed): h.to_json() for seed, h in by_seed.items()},
        }
    return cells


def seed_stats(values: list[float]) -> dict:
    """Mean and standard deviation over seeds (NaN if any seed diverged), and each seed's value."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": values}


def summarise_dynamics(cfg: Config, by_seed: list[dict[int, dict]]) -> dict:
    """Seed means of the Lyapunov spectra (``lyapunov``: layer 0; ``lyapunov_layer1``, ...), what
    they say (leading exponent, directions above -0.01, log condition number of the T-step
    Jacobian), and layer 0's gate statistics and time constant, by measured step."""
    out = {}
    steps = sorted(by_seed[0])
    for layer in by_seed[0][steps[0]] if steps else []:
        suffix = "" if layer == "layer0" else "_" + layer.replace("/", "_")
        spectra = {s: np.mean([seed[s][layer]["lyapunov"] for seed in by_seed], axis=0) for s in steps}
        if cfg.spectrum:
            out["lyapunov" + suffix] = {str(s): spectrum.tolist() for s, spectrum in spectra.items()}
            out["lyapunov_summary" + suffix] = {
                str(s): spectrum_summary(spectrum, cfg.seq_len) for s, spectrum in spectra.items()
            }
        if layer == "layer0":
            out.update(gate_summary([{s: seed[s][layer] for s in steps} for seed in by_seed]))
    return out


def gate_summary(by_seed: list[dict[int, dict]]) -> dict:
    """Seed means of one layer's gate statistics (``gates.<step>.<gate>.{mean,low,high}``) and
    time constant (``time_constant.<step>``)."""
    steps, first = sorted(by_seed[0]), by_seed[0]

    def mean(step, get):
        return float(np.mean([get(seed[step]) for seed in by_seed]))

    if not steps or not first[steps[0]]["gates"]:
        return {}
    out = {
        "gates": {
            str(s): {
                gate: {stat: mean(s, lambda d, g=gate, k=stat: d["gates"][g][k]) for stat in ("mean", "low", "high")}
                for gate in first[s]["gates"]
            }
            for s in steps
        }
    }
    if steps and "time_constant" in first[steps[0]]:
        out["time_constant"] = {str(s): mean(s, lambda d: d["time_constant"]) for s in steps}
    return out


def spectrum_summary(exponents, time: int) -> dict:
    exponents = np.asarray(exponents, np.float64)
    return {
        "leading": float(exponents[0]),
        "memory_directions": int(np.sum(exponents > -0.01)),
        "log_condition": float(time * (exponents[0] - exponents[-1])),
    }


def write_csv(path: Path, histories: dict[str, dict[int, History]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "seed", "training_step", "profile", "component", "index", "grad_norm"])
        for cell, by_seed in histories.items():
            for seed, history in by_seed.items():
                for step, flow in sorted(history.flow.items()):
                    for profile, by_key in ((p, flow[p]) for p in ("by_step", "by_lag")):
                        for component, norms in by_key.items():
                            for index, norm in enumerate(norms):
                                writer.writerow([cell, seed, step, profile, component, index, norm])


def make_plots(cfg: Config, task: Task, histories: dict[str, dict[int, History]], cells: dict, out: Path) -> None:
    title = f"{cfg.task}, T={cfg.seq_len}, hidden {cfg.hidden}, {cfg.seeds} seed(s)"
    top = f"layer{cfg.layers - 1}/h"
    last = max(0, cfg.steps - 1)
    panels = {"at initialisation": 0, f"after training (step {last})": last} if cfg.steps else {"at initialisation": 0}
    curves, slopes = {}, {}
    for panel, step in panels.items():
        curves[panel], slopes[panel] = {}, {}
        for cell, by_seed in histories.items():
            if str(step) in cells[cell]["decay_rate"]:
                curves[panel][cell] = np.array([h.flow[step]["by_lag"][top] for h in by_seed.values()])
                rate = cells[cell]["decay_rate"][str(step)]
                slopes[panel][cell] = f"{rate['mean']:.3f}" + (f"±{rate['std']:.3f}" if cfg.seeds > 1 else "")
    plots.flow_vs_lag(curves, out / "flow_vs_lag.png", title=title, slopes=slopes)
    if cfg.spectrum:
        spectra = {cell: {int(s): v for s, v in record["lyapunov"].items()} for cell, record in cells.items()}
        plots.spectra(spectra, out / "lyapunov.png", title=title + ": Lyapunov spectrum of layer 0 over training")
    plots.gate_dynamics(cells, out / "gates.png", title=title + ": gates of layer 0 over training")
    if not cfg.steps:
        return
    maps = {}
    for cell, record in cells.items():
        steps = sorted(record["grad_norm_by_lag"], key=int)
        maps[cell] = ([int(s) for s in steps], np.array([record["grad_norm_by_lag"][s] for s in steps]))
    plots.flow_heatmaps(maps, out / "flow_heatmap.png", title=title + ": log-norm over training")
    losses = {}
    for cell, by_seed in histories.items():
        for split in ("train", "eval"):
            losses[f"{cell} {split}"] = [
                ([r["step"] for r in getattr(h, split)], [r["loss"] for r in getattr(h, split)])
                for h in by_seed.values()
            ]
    plots.loss_curves(losses, out / "loss_curves.png", title=title, ylabel=task.metric, baseline=task.baseline)


def run(cfg: Config) -> dict:
    """Run (or resume) the experiment described by `cfg`; returns results.json's content."""
    out, cfg, _ = prepare_run_dir(cfg, "gradient_flow", from_command_line=RUNTIME_FLAGS)
    task = make_task(cfg.task, cfg)
    started = time.time()
    histories = {cell: train_cell(cfg, task, cell, out) for cell in cfg.cells}
    cells = summarise(cfg, histories)
    results = write_results(
        cfg,
        out,
        {
            "task": {
                "name": cfg.task,
                "metric": task.metric,
                "baseline": task.baseline,
                "vocab": task.vocab,
                **task.info,
            },
            "wall_time_s": time.time() - started,
            "cells": cells,
        },
    )
    if is_primary():
        write_csv(out / "grad_norms.csv", histories)
    make_plots(cfg, task, histories, cells, out)
    return results


def summary(cfg: Config, results: dict) -> str:
    """The printed table: per cell, decay rate and leading Lyapunov exponent at initialisation
    and after training, the final evaluation (seed mean ± sd, then each seed) and the status."""
    task, last = results["task"], str(max(0, cfg.steps - 1))
    lines = [
        f"\n{cfg.task}: T={cfg.seq_len}, hidden {cfg.hidden}, {cfg.steps} steps, {cfg.seeds} seed(s) -> "
        f"{results['out']}",
        f"{'cell':<8} {'decay/step':>10} {'trained':>8} {'lambda_1':>9} {'trained':>8}  final eval {task['metric']}",
    ]
    for cell, record in results["cells"].items():
        rate = lambda s: f"{record['decay_rate'][s]['mean']:+.4f}" if s in record["decay_rate"] else "-"  # noqa: E731
        spectra = record.get("lyapunov_summary", {})
        lead = lambda s: f"{spectra[s]['leading']:+.4f}" if s in spectra else "-"  # noqa: E731
        final = record["final_eval_loss"]
        per_seed = " ".join(f"{v:.4g}" for v in final["per_seed"])
        line = f"{final['mean']:.4g} ± {final['std']:.2g} ({per_seed})" if cfg.seeds > 1 else f"{final['mean']:.4g}"
        if "final_eval_accuracy" in record:
            line += f", accuracy {record['final_eval_accuracy']['mean']:.4f}"
        status = ",".join(sorted(set(record["status"].values())))
        lines.append(f"{cell:<8} {rate('0'):>10} {rate(last):>8} {lead('0'):>9} {lead(last):>8}  {line}  [{status}]")
    lines.append(f"baseline {task['metric']}: {task['baseline']:.4g}")
    return "\n".join(lines)


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
