"""Time to result: the wall time of each command as a user runs it, in a fresh process, cold
(an empty compilation cache) and warm (run again, reading the cache the cold run filled; see
rnn_jax.compilation). Rows: the main job, every experiment's --quick (on its built-in data), a 4-point ablation grid
and a 4-seed gradient_flow run, each inline and as local jobs 2 at a time (--launcher local --jobs 2) and, with
--tests, the two test tiers. The commands run one after another, alone on the machine.

    python -m benchmarks.time_to_result                      # main job, --quick runs, grid (~10 min)
    python -m benchmarks.time_to_result --tests --out runs/ttr.json   # and both test tiers (~30 min more)
    python -m benchmarks.time_to_result --only gradient_flow --quick  # one --quick run (a smoke test)
    python -m benchmarks.time_to_result --only forget_bias            # the grid, inline and local --jobs 2
    python -m benchmarks.time_to_result --only seeds                  # 4 seeds stacked, and each a local job
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from rnn_jax import compilation

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = "python -m experiments.gradient_flow"
GRID = "python -m experiments.ablate --quick --grid forget_bias=0.5,2.0"  # x the quick LSTM variants: 4 points
GRID_LOCAL = f"{GRID} --launcher local --jobs 2"  # the same sweep, its points as 2 processes at a time
SEEDS = "python -m experiments.gradient_flow --quick --seeds 4"  # stacked in one vmapped step
SEEDS_LOCAL = f"{SEEDS} --launcher local --jobs 2"  # each seed a process, 2 at a time
TEST_TIERS = ["pytest -q", "pytest -q -m slow"]


def quick_commands() -> list[str]:
    """Every experiment's --quick run (each module of experiments/ whose Config has QUICK), on
    its built-in data."""
    names = sorted(info.name for info in pkgutil.iter_modules([str(ROOT / "experiments")]))
    modules = [importlib.import_module(f"experiments.{name}") for name in names]
    return [f"python -m {m.__name__} --quick" for m in modules if getattr(getattr(m, "Config", None), "QUICK", None)]


def commands(args) -> list[str]:
    rows = [] if args.quick else [MAIN_JOB]
    rows += quick_commands()
    rows += [] if args.quick else [GRID, GRID_LOCAL, SEEDS, SEEDS_LOCAL]
    rows += TEST_TIERS if args.tests else []
    return [c for c in rows if not args.only or any(name in c for name in args.only.split(","))]


def timed(command: str, cache: Path, out: Path) -> float:
    """Seconds of `command` in a fresh process with the compilation cache in `cache`; an
    experiment writes into `out`."""
    argv = shlex.split(command)
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:], "--out", str(out)]
    env = {**os.environ, compilation.CACHE_ENV: str(cache)}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{command}` failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", action="store_true", help="also the two test tiers (pytest -q; -m slow)")
    parser.add_argument("--only", help="only the commands containing one of these comma-separated words")
    parser.add_argument("--quick", action="store_true", help="only the experiments' --quick runs (with --only: fewer)")
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    env = common.prepare_host()
    print(common.describe(env))
    rows = []
    with tempfile.TemporaryDirectory(prefix="time_to_result-") as scratch:
        for index, command in enumerate(commands(args)):
            cache = Path(scratch) / f"cache{index}"  # empty: cold
            cold = timed(command, cache, Path(scratch) / f"run{index}-cold")
            warm = timed(command, cache, Path(scratch) / f"run{index}-warm")
            rows.append({"command": command, "cold_s": cold, "warm_s": warm, "warm_over_cold": warm / cold})
            print(f"{command}: cold {cold:.1f} s, warm {warm:.1f} s", file=sys.stderr)
    common.print_table(
        rows,
        [
            ("command", "command", ""),
            ("cold_s", "cold s", ".1f"),
            ("warm_s", "warm s", ".1f"),
            ("warm_over_cold", "warm/cold", ".2f"),
        ],
    )
    common.write_json(args.out, {"environment": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
