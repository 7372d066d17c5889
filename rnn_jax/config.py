"""Experiment configuration: one dataclass per experiment, saved as JSON (config.json, results.json
and every checkpoint), so a run reproduces from its own output folder; the command line is
generated from the same dataclass (`experiments.cli`, with tyro: each field's docstring is its
flag's help). Also what every run writes beside its results: the environment, atomically
written JSON, and its output directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import platform
import sys
import types
import typing
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from rnn_jax import compilation, host, run_lock
from rnn_jax.choices import check_choice

# --dtype: the dtype of the recurrent matmuls. Parameters, optimizer state, carried states and
# gate arithmetic stay float32 (`rnn_jax.cells.matmul` accumulates in float32): a long
# recurrence would otherwise round its state to 8 bits of mantissa at every step.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The `compute_dtype` of `rnn_jax.layers.Recurrent` for a --dtype name (None: float32)."""
    return COMPUTE_DTYPES[check_choice("--dtype", name, COMPUTE_DTYPES)]


def flag(name: str) -> str:
    """The command-line flag of a config field: ``clip_norm`` -> ``--clip-norm``."""
    return "--" + name.replace("_", "-")


def require_at_least_one(cfg, names) -> None:
    """Raise a ValueError naming the flag if any of the integer options `names` is below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{flag(name)} must be >= 1, got {getattr(cfg, name)}")


def from_text(hint, text: str):
    """`text` (a command-line value) as the type `hint` of a dataclass field: "none" is None for
    an optional field, a tuple field takes one value, bool takes true/false/1/0/yes/no."""
    if text.strip().lower() == "none" and type(None) in typing.get_args(hint):
        return None
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if typing.get_origin(kind) is tuple:
        return (text,)
    if kind is bool:
        if text.strip().lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.strip().lower() in ("1", "true", "yes")
    try:
        return kind(text.strip())
    except (TypeError, ValueError) as error:
        raise ValueError(f"expected a {getattr(kind, '__name__', kind)}, got {text!r}") from error


def import_modules(names) -> None:
    """Import Python modules by name (``my_package.cells``) or path (``my_cell.py``), each once:
    e.g. the file that defines and registers your own cell, before the config that names it is
    checked."""
    for name in names:
        if not name.endswith(".py"):
            try:
                importlib.import_module(name)
            except ImportError as error:
                raise ValueError(f"--imports {name}: {error}") from error
            continue
        path = Path(name).resolve()
        module_name = f"rnn_jax_imports.{path.stem}"
        if module_name in sys.modules:
            continue
        if not path.is_file():
            raise ValueError(f"--imports {name}: no such file")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file: say which, where and what, not a traceback
            del sys.modules[module_name]
            where = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
            raise ValueError(f"--imports {name}{where}: {type(error).__name__}: {error}") from error


def config_from_json(cls, data: dict, *, where: str | Path = "the run", **overrides):
    """An instance of the config dataclass `cls` from its JSON form (lists back to tuples; the
    ``experiment`` that wrote it, and the ``task`` of one that has no --task, set aside), with
    `overrides`; a field `cls` does not have is an error that names the experiment that wrote
    the run in `where` and the command resuming it. Options in groups (`TrainingOptions`) are
    read flat, by their flags' names, as config.json holds them."""
    names = cls.flag_names() if hasattr(cls, "flag_names") else list(typing.get_type_hints(cls))
    data = {k: v for k, v in data.items() if k != "experiment" and (k != "task" or "task" in names)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{written_by(where, data_experiment(where))}; this experiment has no {', '.join(unknown)}")
    if hasattr(cls, "create"):
        return cls.create(**{**data, **overrides})
    hints = typing.get_type_hints(cls)
    values = {
        k: tuple(v) if isinstance(v, list) and typing.get_origin(hints[k]) is tuple else v for k, v in data.items()
    }
    return cls(**{**values, **overrides})


def config_record(cfg) -> dict:
    """A config as config.json and results.json hold it: flat, by flag name."""
    return cfg.to_flat() if hasattr(cfg, "to_flat") else dataclasses.asdict(cfg)


def data_experiment(where) -> str | None:
    """The experiment named in the config.json of the run folder `where`, if it names one."""
    path = Path(where) / "config.json"
    try:
        return json.loads(path.read_text()).get("experiment") if path.is_file() else None
    except (OSError, ValueError):
        return None


def written_by(where, experiment: str | None) -> str:
    """Which experiment wrote the run in `where` and how to resume it (as far as it says)."""
    if experiment is None:
        return f"{where} was written by another experiment (or an older version) than this one"
    return f"{where} was written by experiments.{experiment}: `python -m experiments.{experiment} --resume {where}`"


def saved_config(cfg, experiment: str, out) -> dict:
    """config.json: the options, the folder chosen (`out`), the experiment that runs them and
    the registered task it trains on (its ``--task``, or a single-model experiment's `TASK`)."""
    task = getattr(cfg, "task", None) or getattr(cfg, "TASK", None)
    return {**config_record(cfg), "out": str(out), "experiment": experiment, **({"task": task} if task else {})}


def prepare_run_dir(cfg, experiment: str, *, from_command_line: tuple[str, ...] = ()):
    """The output directory of a run and its effective config, the directory made and its
    config.json written; returns (out, cfg, resuming). See `resolve_run_dir`."""
    out, cfg, resuming = resolve_run_dir(cfg, experiment, from_command_line=from_command_line)
    if not resuming:
        create_run_dir(out, cfg, experiment)
    return out, cfg, resuming


def create_run_dir(out: Path, cfg, experiment: str) -> None:
    """Make the new run folder `out` and write its config.json (process 0 of a multi-process run)."""
    if jax.process_index() > 0:
        return
    run_lock.hold(out)  # one writer: a second process creating the same folder is refused here
    write_json(out / "config.json", saved_config(cfg, experiment, out))


SEED_RUNS = "seeds"  # the folder of a run's seeds where each is a run of its own (gradient_flow --launcher)


def resolve_run_dir(cfg, experiment: str, *, from_command_line: tuple[str, ...] = ()):
    """The output directory of a run and its effective config, checked but not yet made (so that
    bad input found before `create_run_dir` leaves nothing behind); returns (out, cfg, resuming).

    With `cfg.resume`, the run's own config.json is the config (a run continues as it began),
    except the fields named in `from_command_line`. Otherwise a fresh directory (`cfg.out`, or
    runs/<experiment>/<timestamp>); one that already holds a run is refused.
    """
    if cfg.resume:
        path = Path(cfg.resume) / "config.json"
        if not path.exists():
            raise FileNotFoundError(
                f"--resume {cfg.resume}: no config.json there; is it the output directory of a {experiment} run?"
            )
        writes = jax.process_index() == 0 and not getattr(cfg, "dry_run", False)  # a dry run only reads
        if writes:
            run_lock.hold(path.parent)  # before anything is read or rewritten: one writer per run folder
        if not any((path.parent / kept).is_dir() for kept in ("checkpoints", SEED_RUNS)):
            raise FileNotFoundError(
                f"no checkpoint in {path.parent / 'checkpoints'}: nothing to restore or resume from"
            )
        kept = {name: getattr(cfg, name) for name in from_command_line}
        saved = config_from_json(type(cfg), json.loads(path.read_text()), where=path.parent, resume=None, **kept)
        if not hasattr(saved, "continued_with"):
            return path.parent, saved, True
        resumed, changes = saved.continued_with(cfg, getattr(cfg, "command_line_flags", frozenset()))
        if changes and writes:  # the run's config says what it now runs with, and since when
            write_json(path, saved_config(resumed, experiment, path.parent))
            history_path = path.parent / "config_history.json"
            history = json.loads(history_path.read_text()) if history_path.exists() else []
            entry = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "changed": changes}
            write_json(history_path, [*history, entry])
        return path.parent, resumed, True
    if cfg.out is None and jax.process_count() > 1:  # each host's clock would name its own folder
        raise ValueError("a multi-process run needs --out: the same folder in every process")
    out = Path(cfg.out or f"runs/{experiment}/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (new, or empty) for the run's outputs")
    if jax.process_index() == 0 and (out / "config.json").exists():
        raise ValueError(f"{out} already holds a run; use --resume {out} to continue it, or another --out")
    return out, cfg, False


def environment() -> dict:
    """Versions and devices, written beside every result."""
    device = jax.devices()[0]
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "platform": device.platform,
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "freed_memory_kept": host.kept,
        "compilation_cache": dict(compilation.status),
        "compilations": compilation.totals(),  # so far in this process: how warm the run was
        "argv": sys.argv,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write_json(path: str | Path, data) -> None:
    """Write strict JSON atomically (a temporary file, then a rename), so a killed run never
    leaves a half-written file: a NaN or an infinity (a diverged seed, an interval of one seed)
    is written as null, which every JSON reader accepts. In a multi-process run only process 0
    writes."""
    if jax.process_index() > 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_strict(data), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def read_measured(path: str | Path):
    """A results.json as `write_json` wrote it, its nulls read back as NaN (what they were: a
    diverged seed, the interval of one seed), for summaries that compute with its numbers."""
    return nulls_as_nan(json.loads(Path(path).read_text()))


def nulls_as_nan(value):
    """Measurements as `write_json` wrote them, each null read back as the NaN it was."""
    if isinstance(value, dict):
        return {k: nulls_as_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nulls_as_nan(v) for v in value]
    return math.nan if value is None else value


def _strict(value):
    """`value` with every non-finite float as None, containers and arrays as JSON's own types."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return _strict(_json_default(value))


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return value.to_json() if hasattr(value, "to_json") else config_record(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
