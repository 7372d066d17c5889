"""The curse of memory in miniature: Zucchet & Orvieto (2024)'s students against a teacher's memory.

Their Figure 3: a dense linear teacher (`--task teacher`) whose eigenvalues lie on the ring
[nu_0, 1); each student trained on it at every nu_0 with the learning rate chosen per student
and nu_0 from a small grid (the lowest mean final loss over the seeds; a grid point where a seed
diverged is not chosen), its final loss divided by the loss of predicting zero. Each student's
ring is tied to the teacher's (its initial eigenvalues on [nu_0, 1), as theirs), except the
GRU's and LSTM's, which have none. The same runs measure Adam's effective learning rate per
parameter group (`adam_lr`), the curse-of-memory sensitivity E|dh_t/dtheta_rec|^2
(`sensitivity`) and the gradient flow's decay over lags: the two stories side by side.

    python -m experiments.curse_of_memory                     # 6 students x 4 nu_0 x 3 lr, 5 seeds
    python -m experiments.curse_of_memory --quick             # about two minutes
    python -m experiments.curse_of_memory --students lru rnn --nus 0.9 0.99
    python -m experiments.curse_of_memory --launcher slurm --slurm-partition gpu --jobs 16 --dry-run

--cells and --lr are each student's (STUDENTS); every other gradient_flow flag applies to every
run; --launcher (ablate's: inline, local processes, SLURM jobs) says where the grids' points run. Then their Figure 4: the Hessian at the optimum of a 4-unit teacher for the dense, the
diagonal and the LRU student (`rnn_jax.optimum`, seeded by --seed). Writes to --out: one
ablate grid per student (resumable: rerun the same command), curse_of_memory.md (the tables),
curse_of_memory.png, hessian_at_optimum.png and results.json.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import ClassVar

from experiments import ablate, cli, gradient_flow, launch
from rnn_jax.config import environment, read_measured, write_json
from rnn_jax.optimum import hessians_at_optimum
from rnn_jax.plots_curvature import hessian_at_optimum, loss_against_memory


@dataclasses.dataclass(frozen=True)
class Student:
    """A student of the teacher: its cell and options (gradient_flow fields), the field that
    ties its initial ring to the teacher's nu_0 (None: it has none), its learning-rate grid."""

    cell: str
    options: dict
    ring: str | None
    lrs: tuple[float, ...]


PLAIN_LRU = dict(block=False, lru_r_max=1.0, lru_max_phase=3.14)  # theirs: ring [nu_0, 1), phases in [0, 3.14]
STUDENTS = {
    "rnn": Student(
        "rnn", dict(activation="linear", recurrent_init="ring"), "recurrent_scale", (1e-3, 3.2e-4, 1e-4, 3.2e-5)
    ),
    "diagonal": Student(
        "lru",
        {**PLAIN_LRU, "cell_option": ("parametrisation=direct", "normalise=False")},
        "lru_r_min",
        (0.032, 0.01, 0.0032),
    ),
    "diagonal_gamma": Student(
        "lru", {**PLAIN_LRU, "cell_option": ("parametrisation=direct",)}, "lru_r_min", (0.032, 0.01, 0.0032)
    ),
    "lru": Student("lru", PLAIN_LRU, "lru_r_min", (0.1, 0.032, 0.01)),
    "gru": Student("gru", {}, None, (0.01, 0.0032, 0.001)),
    "lstm": Student("lstm", {}, None, (0.01, 0.0032, 0.001)),
}
LABELS = {
    "rnn": "dense linear RNN",
    "diagonal": "complex diagonal",
    "diagonal_gamma": "complex diagonal + gamma",
    "lru": "LRU (exp + gamma)",
    "gru": "GRU",
    "lstm": "LSTM",
}


@dataclasses.dataclass
class Config(gradient_flow.Config):
    QUICK: ClassVar[dict] = dict(
        nus=(0.5, 0.99), seq_len=30, hidden=8, batch=8, seeds=2, steps=20, flow_every=10, eval_every=10
    )
    DEFAULTS: ClassVar[dict] = dict(
        hidden=32,
        batch=32,
        steps=500,
        schedule="cosine",
        flow_every=250,
        eval_every=250,
        checkpoint_every=500,
        spectrum=0,
        measure=("adam_lr", "sensitivity"),
    )

    task: str = "teacher"
    """the task: teacher (Zucchet & Orvieto's linear teacher; the only one this experiment takes)"""
    seq_len: int = 300
    """T: steps of each teacher sequence (theirs: 300)"""
    seeds: int = 5
    """independent seeds per grid point, trained together by one vmapped step (95% intervals over them)"""
    nus: tuple[float, ...] = (0.5, 0.9, 0.97, 0.99)
    """the teacher's nu_0 (the inner radius of its ring of eigenvalues), each student trained at each"""
    students: tuple[str, ...] = tuple(STUDENTS)
    """the students: rnn (dense linear, its eigenvalues on the ring) | diagonal (complex diagonal, (Re, Im) learned
    directly) | diagonal_gamma (the same with the input normalisation gamma) | lru (exp parametrisation + gamma) |
    gru | lstm"""

    def __post_init__(self):
        super().__post_init__()
        if self.task != "teacher":
            raise ValueError(
                f"--task {self.task}: the curse of memory is measured on the teacher task (--task teacher)"
            )
        for name in self.students:
            if name not in STUDENTS:
                raise ValueError(f"--students {name}: expected some of {', '.join(STUDENTS)}")
        if not self.nus or any(not 0 <= nu < 1 for nu in self.nus):
            raise ValueError(f"--nus {self.nus}: each nu_0 must be in [0, 1)")

    def grid(self, name: str) -> ablate.Config:
        """The ablate grid of student `name`: nu_0 (tied to its ring) x its learning rates."""
        student = STUDENTS[name]
        lrs = student.lrs[1:2] if self.quick else student.lrs
        axis = "teacher_nu" + (f"+{student.ring}" if student.ring else "")
        base = self.run_options()
        ring = {student.ring: self.nus[0]} if student.ring else {}  # the base is valid as the first point is
        return ablate.Config.create(
            **{**base, **student.options, **ring, "cells": (student.cell,), "out": str(Path(self.out) / name)},
            **launch.launch_options(self),
            grid=(f"{axis}={','.join(map(str, self.nus))}", f"lr={','.join(map(str, lrs))}"),
        )


def chosen(rows: list[dict], nu: float, fields: list[str]) -> dict:
    """The grid row at `nu` with the lowest mean final loss among those where no seed diverged
    (none: the row with the fewest diverged seeds), normalised by the loss of predicting zero;
    its grid point (`fields`) names its run."""
    mine = [r for r in rows if math.isclose(r["teacher_nu"], nu)]
    lrs = sorted(r["lr"] for r in mine)
    finite = [r for r in mine if r["diverged"] == 0 and math.isfinite(r["final_eval_loss"])]
    best = min(finite, key=lambda r: r["final_eval_loss"]) if finite else min(mine, key=lambda r: r["diverged"])
    scale = 1.0 / best["baseline"]
    return {
        "nu": nu,
        "lr": best["lr"],
        "lr_at_grid_edge": len(lrs) > 1 and best["lr"] in (lrs[0], lrs[-1]),
        "diverged": best["diverged"],
        "seeds": best["seeds"],
        **{f"normalised_loss{end}": best[f"final_eval_loss{end}"] * scale for end in ("", "_low", "_high")},
        "decay_rate_trained": best["decay_rate_trained"],
        "point": {k: best[k] for k in fields},
    }


def measured_at_end(folder: Path, cell: str) -> dict:
    """The run's normalised final loss of each seed, and its `adam_lr` medians per group and
    `sensitivity` mean at its last measured step, mean over seeds."""
    results = read_measured(folder / "results.json")
    record = results["cells"][cell]
    last = lambda series: series[max(series, key=int)]["mean"]  # noqa: E731
    measured = record["measurements"]
    adam = {key.split("'")[1]: last(v) for key, v in measured.get("adam_lr", {}).items() if key.endswith("['median']")}
    per_seed = [v / results["task"]["baseline"] for v in record["final_eval_loss"]["per_seed"]]
    return {
        "normalised_loss_per_seed": per_seed,
        "adam_lr_median": adam,
        "sensitivity": last(measured["sensitivity"]["['layer0']['mean']"]),
    }


def run(cfg: Config) -> dict:
    typed = sorted({"cells", "lr"} & set(getattr(cfg, "command_line_flags", ())))
    if typed:
        raise ValueError(f"--{' --'.join(typed)}: set per student here (STUDENTS in {__name__}); choose --students")
    cfg = cfg.replace(out=cfg.out or f"runs/curse_of_memory/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    out = Path(cfg.out)
    configs = {name: cfg.grid(name) for name in cfg.students}
    grids = {name: ablate.run(grid) for name, grid in configs.items()}  # each as --launcher says
    if cfg.dry_run:
        return {"out": str(out), "dry_run": "\n\n".join(f"== {n}: {g['dry_run']}" for n, g in grids.items())}
    unfinished = [f"{n}/{point}" for n, g in grids.items() for point in g["incomplete"]]
    if unfinished:
        raise ValueError(
            f"{len(unfinished)} grid point(s) not finished ({', '.join(unfinished)}): each student's summary.md "
            "says why; rerun the same command to run them"
        )
    table = {name: student_rows(out / name, configs[name], grids[name]["rows"], cfg.nus) for name in cfg.students}
    optimum = hessians_at_optimum(cfg.seed)
    results = {"students": table, "hessian_at_optimum": optimum}
    write_json(out / "results.json", {"config": dataclasses.asdict(cfg), "environment": environment(), **results})
    (out / "curse_of_memory.md").write_text(markdown(table, cfg) + optimum_markdown(optimum))
    loss_against_memory({LABELS[n]: rows for n, rows in table.items()}, out / "curse_of_memory.png")
    hessian_at_optimum({LABELS[n]: optimum[n] for n in ("rnn", "diagonal", "lru")}, out / "hessian_at_optimum.png")
    return {"out": str(out), **results}


def student_rows(folder: Path, grid: ablate.Config, rows: list[dict], nus) -> list[dict]:
    """A student's chosen row at each nu_0 (its grid `grid` in `folder`), with what its run
    measured at its end."""
    fields = [field for axis, _ in grid.axes() for field in axis.split("+")]
    chosen_rows = [chosen(rows, nu, fields) for nu in nus]
    for row in chosen_rows:
        row.update(measured_at_end(folder / ablate.point_name(row["point"]), grid.cells[0]))
    return chosen_rows


def markdown(table: dict, cfg: Config) -> str:
    """Normalised final loss [95% CI] (learning rate chosen) per student and nu_0, then at the
    largest nu_0 the two stories: flow decay, sensitivity, Adam's effective learning rates."""
    lines = ["| student | " + " | ".join(f"nu_0 = {nu}" for nu in cfg.nus) + " |", "|---" * (len(cfg.nus) + 1) + "|"]
    for name, rows in table.items():
        cells = [
            f"{r['normalised_loss']:.3g} [{r['normalised_loss_low']:.3g}, {r['normalised_loss_high']:.3g}] "
            f"(lr {r['lr']:g}{'*' if r['lr_at_grid_edge'] else ''})"
            + (f", {r['diverged']}/{r['seeds']} diverged" if r["diverged"] else "")
            for r in rows
        ]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    lines += ["", "Final eval loss / loss of predicting zero [95% t-interval over seeds] at the chosen learning rate;"]
    lines += ["* the chosen rate is at an end of the student's grid (the best may lie beyond it). The figure"]
    lines += ["shows geometric means (the 95% t-interval of the mean of log10), which never reach below zero."]
    lines += ["", f"At nu_0 = {cfg.nus[-1]} (the chosen runs, last measured step, mean over seeds):", ""]
    lines += [
        "| student | flow decay/step | sensitivity | Adam lr / --lr: recurrent | input | readout |",
        "|---" * 6 + "|",
    ]
    for name, rows in table.items():
        r, adam = rows[-1], rows[-1]["adam_lr_median"]
        groups = [f"{adam[g]:.3g}" if g in adam else "-" for g in ("recurrent", "input", "readout")]
        lines.append(
            f"| {LABELS[name]} | {r['decay_rate_trained']:+.4f} | {r['sensitivity']:.3g} | " + " | ".join(groups) + " |"
        )
    return "\n".join(lines) + "\n"


def optimum_markdown(optimum: dict) -> str:
    """The Hessian at the optimum: top eigenvalues, their eigenvectors' spread and place."""
    lines = [
        "",
        f"The Hessian at the optimum (student = teacher: 4 units, |lambda| "
        f"{min(optimum['teacher']['eigenvalues_abs']):.4f}..{max(optimum['teacher']['eigenvalues_abs']):.4f}, "
        f"E[y^2] {optimum['teacher']['mean_square_output']:.3g}; float64):",
        "",
        "| student | parameters | top 4 eigenvalues | their effective coordinates | their share on the recurrent group |",
        "|---|---|---|---|---|",
    ]
    for name in ("rnn", "diagonal", "lru"):
        found = optimum[name]
        lines.append(
            f"| {LABELS[name]} | {found['parameters']} | {', '.join(f'{v:.3g}' for v in found['eigenvalues'][:4])} | "
            f"{', '.join(f'{v:.2f}' for v in found['effective_coordinates'][:4])} | "
            f"{', '.join(f'{v:.3f}' for v in found['group_share']['recurrent'][:4])} |"
        )
    return "\n".join(lines) + "\n"


def summary(cfg: Config, results: dict) -> str:
    if "dry_run" in results:
        return results["dry_run"]
    return (Path(results["out"]) / "curse_of_memory.md").read_text() + f"-> {results['out']}"


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
