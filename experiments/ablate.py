"""Ablations of gradient flow: a grid of gradient_flow runs, one summary table and plot.

Every flag of `experiments.gradient_flow` sets the base configuration; each `--grid
FIELD=v1,v2,...` adds an axis (several axes: their cartesian product). Without --grid, the
grid is the LSTM variants of Greff et al. 2017 ("LSTM: A Search Space Odyssey").

    python -m experiments.ablate --seeds 3                                  # Greff variants, adding T=100
    python -m experiments.ablate --cells rnn --grid recurrent_scale=0.5,1.0,1.5 --grid clip_norm=none,1.0
    python -m experiments.ablate --cells lstm gru --grid seq_len=50,100,200 --quick

Writes to --out: one gradient_flow run per grid point (in its own folder, resumable: rerun
the same command, or --resume the folder, to continue: its config.json records the grid),
summary.csv, summary.md, ablation.png (and with a grid over truncated:K, alignment_vs_k.png) and
results.json.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Callable, ClassVar

import tyro

from experiments import cli, gradient_flow, launch
from rnn_jax import plots, plots_learning_rules, summaries
from rnn_jax.cells import LSTM_VARIANTS
from rnn_jax.config import config_from_json, config_record, environment, from_text, read_measured, write_json

DEFAULT_GRID = [("lstm_variant", list(LSTM_VARIANTS))]


@dataclasses.dataclass
class Config(gradient_flow.Config):
    QUICK: ClassVar[dict] = {**gradient_flow.Config.QUICK, "steps": 100}
    QUICK_GRID: ClassVar[tuple[str, ...]] = ("lstm_variant=standard,NFG",)  # --quick without --grid

    summarise: str | None = None
    """write the summary of the sweep in this folder from its points' folders alone (e.g. after its jobs finished
    elsewhere), training nothing; points not finished are named and left out"""
    grid: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """axes of the grid, each FIELD=V1,V2 with FIELD a gradient_flow option, e.g. lstm_variant=NIG,NFG
    recurrent_scale=0.5,1.5, or FIELD1+FIELD2=V1,V2 tied, e.g. teacher_nu+lru_r_min=0.5,0.9 (none given: lstm_variant over all Greff et al. variants, with --quick standard,NFG;
    "none" is None)"""

    def __post_init__(self):
        if self.resume is not None and self.out not in (None, self.resume):
            raise ValueError(f"--resume {self.resume} and --out {self.out}: give one folder (the grid's)")
        super().__post_init__()
        for point in self.points():  # every grid point is a valid gradient_flow configuration
            try:
                gradient_flow.Config.create(**{**self.base(), **point})
            except ValueError as error:
                raise ValueError(f"grid point {point_name(point)}: {error}") from error

    def selected_cells(self) -> tuple[str, ...]:
        """Every cell of the grid (a cell option given must be one of at least one of them)."""
        return tuple(dict.fromkeys(c for point in self.points() for c in point.get("cells", self.cells)))

    def axes(self) -> list[tuple[str, list]]:
        return parse_grid(self.grid or (self.QUICK_GRID if self.quick else ())) or DEFAULT_GRID

    def points(self) -> list[dict]:
        axes = self.axes()
        return [
            {field: value for (name, _), value in zip(axes, values) for field in name.split("+")}
            for values in itertools.product(*(v for _, v in axes))
        ]

    def base(self) -> dict:
        """The gradient_flow options every grid point starts from (its own out and resume aside);
        the LSTM-variant grid compares LSTMs."""
        base = self.run_options()
        if "lstm_variant" in dict(self.axes()) and base["cells"] == gradient_flow.Config.cells:
            base["cells"] = ("lstm",)
        return base


# gradient_flow's fields that say where and how a run goes, not what it trains: no grid axis
NOT_AXES = frozenset(
    {"out", "resume", "quick", "imports", "devices", "coordinator", "num_processes", "process_id", *launch.FIELDS}
)
# ablate's own fields that say where its points run: a sweep may continue with others
LAUNCH_FIELDS = launch.FIELDS | {"summarise"}


def grid_fields() -> dict:
    """{field: type} of the gradient_flow options a grid can vary (its dataclass fields, not its
    class constants, and not `NOT_AXES`)."""
    return {name: hint for name, hint in gradient_flow.Config.flag_hints().items() if name not in NOT_AXES}


def parse_grid(specs) -> list[tuple[str, list]]:
    """["field=a,b", ...] -> [(field, [typed a, typed b]), ...]; "none" is None. A tied axis
    "field1+field2=a,b" sets both fields to each value together (a teacher's ring and the
    student's: teacher_nu+lru_r_min=0.5,0.9)."""
    hints = grid_fields()
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        fields = [f.strip().replace("-", "_") for f in name.split("+")]
        for field in fields:
            if field not in hints or not values:
                close = difflib.get_close_matches(field, list(hints), n=1)
                raise ValueError(
                    f"--grid {spec!r}: expected FIELD=v1,v2 (or FIELD1+FIELD2=v1,v2) with FIELD a gradient_flow option"
                    + (f"; did you mean {close[0]}?" if close and field not in hints else "")
                    + f" (one of: {', '.join(sorted(hints))})"
                )
        if len({hints[field] for field in fields}) > 1:
            raise ValueError(f"--grid {spec!r}: tied fields take one value, so they need one type")
        try:  # a tuple field (cells=rnn,lstm) gets one grid point per value
            typed = [from_text(hints[fields[0]], v) for v in values.split(",")]
        except ValueError as error:
            raise ValueError(f"--grid {spec!r}: {error}") from error
        axes.append(("+".join(fields), typed))
    return axes


def point_name(point: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def _with_interval(name: str, digits: str) -> Callable[[dict], str]:
    """A row's `name` as "mean [low, high]" (its 95% t-interval over seeds; one seed: the mean)."""

    def text(r: dict) -> str:
        if name not in r:  # a run recorded before the measurement was kept
            return "-"
        low, high = r[f"{name}_low"], r[f"{name}_high"]
        interval = "" if math.isnan(low) else f" [{low:{digits}}, {high:{digits}}]"
        return f"{r[name]:{digits}}{interval}"

    return text


# summary.md's columns after the grid's own: (header, cell text of a row)
COLUMNS = (
    ("cell", lambda r: r["cell"]),
    ("final eval {metric} [95% CI]", _with_interval("final_eval_loss", ".4g")),
    ("p vs first (Welch / permutation)", lambda r: f"{r['p_welch_vs_first']:.3g} / {r['p_permutation_vs_first']:.3g}"),
    ("solved [95% CI]", lambda r: f"{r['solved']}/{r['seeds']} [{r['solved_low']:.2f}, {r['solved_high']:.2f}]"),
    ("decay/step at init [95% CI]", _with_interval("decay_rate_init", "+.4f")),
    ("decay/step trained [95% CI]", _with_interval("decay_rate_trained", "+.4f")),
    ("diverged", lambda r: f"{r['diverged']}/{r['seeds']}"),
)
ACCURACY = ("final eval accuracy [95% CI]", _with_interval("final_eval_accuracy", ".3f"))  # classification tasks
TEST = ("test accuracy at best validation [95% CI]", _with_interval("test_accuracy", ".3f"))  # tasks with test rows
ALIGNMENT = ("cosine with BPTT, last measured step [95% CI]", _with_interval("alignment_cosine", ".3f"))  # --gradient


def write_tables(rows: list[dict], grid_keys: list[str], out: Path, metric: str, incomplete: dict) -> None:
    """summary.csv (every column of the rows) and summary.md (the grid's keys, then `COLUMNS`;
    then the points `incomplete` names, each with why)."""
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    columns = COLUMNS + tuple(
        column
        for column, key in ((ACCURACY, "final_eval_accuracy"), (TEST, "test_accuracy"), (ALIGNMENT, "alignment_cosine"))
        if any(key in r for r in rows)
    )
    headers = [*grid_keys, *(header.format(metric=metric) for header, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join([*(str(r[k]) for k in grid_keys), *(cell(r) for _, cell in columns)]) + " |")
    lines.append(f"\nbaseline {metric}: {rows[0]['baseline']:.4g}. Intervals: 95% t over seeds; solved: exact")
    lines.append("binomial 95% interval; p: the final loss against the first grid point's for the same cell")
    lines.append("(nan with fewer than 2 seeds).")
    if incomplete:
        lines.append(f"\nINCOMPLETE: {len(incomplete)} point(s) not finished, left out of the table:")
        lines += [f"\n- {name}: {why}" for name, why in incomplete.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def grid_to_run(cfg: Config) -> tuple[Path, Config]:
    """The folder and config of the grid `cfg` asks for: with --resume DIR the grid DIR holds, as
    its config.json records it (no other flag may be typed: a grid continues as it began);
    otherwise --out, new (its config.json written) or holding this same grid."""
    if cfg.resume:
        typed = set(getattr(cfg, "command_line_flags", ())) - {"resume"}
        if typed - LAUNCH_FIELDS:
            raise ValueError(
                f"--resume {cfg.resume} continues the grid as it was started (its config.json); "
                f"--{', --'.join(sorted(f.replace('_', '-') for f in typed - LAUNCH_FIELDS))} would change it: "
                "start a new grid with --out"
            )
        launch_flags = {name: getattr(cfg, name) for name in typed}  # where the rest runs may change
        return Path(cfg.resume), saved_grid(Path(cfg.resume)).replace(**launch_flags)
    out = Path(cfg.out or f"runs/ablate/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (new, or a grid's) for the grid's outputs")
    cfg = cfg.replace(out=str(out))
    if (out / "config.json").exists() or (out / "results.json").exists():
        saved = saved_grid(out)
        differ = [
            name
            for name in cfg.flag_names()
            if name != "grid" and name not in LAUNCH_FIELDS and getattr(saved, name) != getattr(cfg, name)
        ]
        if saved.axes() != cfg.axes():  # the axes, not their spelling ("none" or "None")
            differ.append("grid")
        if differ:
            raise ValueError(
                f"{out} holds a grid with other settings ({', '.join(differ)}); "
                f"--resume {out} continues it, or give another --out"
            )
    if not (out / "config.json").exists() and not cfg.dry_run:
        write_json(out / "config.json", config_record(cfg))
    return out, cfg


def saved_grid(folder: Path) -> Config:
    """The config of the grid in `folder`: its config.json, or for a grid written before that was
    kept, results.json's axes and base configuration."""
    if (folder / "config.json").exists():
        return config_from_json(Config, json.loads((folder / "config.json").read_text()), out=str(folder))
    if (folder / "results.json").exists():
        results = json.loads((folder / "results.json").read_text())
        as_text = lambda v: "none" if v is None else str(v[0] if isinstance(v, list) else v)  # noqa: E731
        grid = tuple(f"{name}={','.join(map(as_text, values))}" for name, values in results["grid"])
        return config_from_json(Config, results["base_config"], grid=grid, out=str(folder))
    raise FileNotFoundError(f"--resume {folder}: no config.json there; is it the output folder of an ablate grid?")


def run(cfg: Config) -> dict:
    if cfg.summarise:
        return summarise(Path(cfg.summarise), saved_grid(Path(cfg.summarise)))
    launch.check(cfg)
    out, cfg = grid_to_run(cfg)
    base = cfg.base()
    runs = [(name, {**base, **point}, run_dir) for name, point, run_dir in grid_points(cfg, out)]
    if cfg.dry_run:
        return {"out": str(out), "rows": [], "dry_run": launch.dry_run(cfg, out, runs)}
    launch.run_points(cfg, out, runs)
    return summarise(out, cfg)


def grid_points(cfg: Config, out: Path) -> list[tuple[str, dict, Path]]:
    """(name, point, run folder) of every grid point, in grid order."""
    return [(point_name(p), p, out / point_name(p).replace("/", "_")) for p in cfg.points()]


def summarise(out: Path, cfg: Config) -> dict:
    """summary.csv, summary.md, ablation.png (alignment_vs_k.png) and results.json of the sweep
    in `out`, from its points' own results.json (the same wherever they ran); a point not
    finished is named in summary.md and results.json (``incomplete``) and left out."""
    points, incomplete = [], {}
    for name, point, run_dir in grid_points(cfg, out):
        if launch.finished(run_dir):
            points.append((point, read_measured(run_dir / "results.json")))
        else:
            incomplete[name] = launch.why_unfinished(out, name, run_dir)
    if not points:
        raise ValueError(f"{out}: no grid point has finished yet ({len(incomplete)} to run); nothing to summarise")
    axes = cfg.axes()
    rows = summaries.grid_rows(points)
    metric = points[0][1]["task"]["metric"]
    write_tables(rows, [field for name, _ in axes for field in name.split("+")], out, metric, incomplete)
    labels = [
        f"{point_name(p)} {c}" if len(points[0][1]["cells"]) > 1 else point_name(p)
        for p, r in points
        for c in r["cells"]
    ]
    plots.ablation_bars(labels, rows, out / "ablation.png", metric=metric, baseline=rows[0]["baseline"])
    truncations = [
        r for r in rows if str(r.get("gradient", "")).partition(":")[2].isdigit() and "alignment_cosine" in r
    ]
    if truncations:
        plots_learning_rules.alignment_against_truncation(truncations, out / "alignment_vs_k.png", title=out.name)
    record = {"grid": axes, "base_config": cfg.base(), "environment": environment(), "rows": rows}
    write_json(out / "results.json", {**record, "incomplete": incomplete})
    return {"out": str(out), "rows": rows, "incomplete": incomplete}


def summary(cfg: Config, results: dict) -> str:
    if "dry_run" in results:
        return results["dry_run"]
    return (Path(results["out"]) / "summary.md").read_text() + f"-> {results['out']}"


def main(argv=None):
    cli.main(Config, run, summary, argv, description=__doc__)


if __name__ == "__main__":
    main()
