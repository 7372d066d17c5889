"""Experiment configuration: one dataclass per experiment, the CLI generated from it, and the
same dataclass saved (as JSON) into results.json and every checkpoint, so a run can be
reproduced from its own output folder.

Declare fields with `option(default, "help text")`; `parse(cls, argv)` builds an argparse
parser with one `--flag-name` per field (booleans become `--flag` / `--no-flag`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import typing
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import jaxlib
import optax


def option(default, help: str, **kwargs):
    """A dataclass field with the help text of its CLI flag."""
    kwargs.setdefault("metadata", {})["help"] = help
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: default, **kwargs)
    return dataclasses.field(default=default, **kwargs)


def _parser_type(annotation):
    """The argparse type of a field annotation such as `int`, `float | None`, `str`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def build_parser(cls, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        if "default" not in help_text:
            help_text += f" (default: {default})"
        kind = _parser_type(hints[field.name])
        if kind is bool:
            parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text, metavar=field.name.upper())
    return parser


def parse(cls, argv=None, description: str | None = None):
    """An instance of the dataclass `cls` from command-line arguments. `cls.__post_init__`
    may validate; its ValueError becomes a usage error that names the flag."""
    parser = build_parser(cls, description)
    args = parser.parse_args(argv)
    try:
        return cls(**vars(args))
    except ValueError as error:
        parser.error(str(error))


# --dtype: the dtype of the recurrent matmuls. Parameters, optimizer state, carried states and
# gate arithmetic stay float32 (`rnn_jax.cells._dot` accumulates in float32): a long
# recurrence would otherwise round its state to 8 bits of mantissa at every step.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def dtype_option():
    return option("float32", f"compute dtype of the recurrent matmuls: {' | '.join(COMPUTE_DTYPES)} (parameters, "
                             "optimizer state and the carried state stay float32)")


def compute_dtype(name: str):
    """The `compute_dtype` of `rnn_jax.layers.Recurrent` for a --dtype name (None: float32)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown --dtype {name!r}; choose one of: {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


@contextlib.contextmanager
def user_errors():
    """Around a command-line program: a ValueError or FileNotFoundError (bad flags, data or
    checkpoints — what the user can fix, and the message says how) ends it with that message
    and exit status 1 instead of a traceback. RNN_JAX_TRACEBACK=1 shows the traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("RNN_JAX_TRACEBACK"):
            raise
        sys.exit(f"error: {error}")


def apply_quick(cfg, quick: dict) -> None:
    """`--quick`: set the options in `quick` that were left at their defaults (explicit flags win)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name, value in quick.items():
        if getattr(cfg, name) == defaults[name]:
            setattr(cfg, name, value)


def require_at_least_one(cfg, names) -> None:
    """Raise a ValueError naming the flag if any of the integer options `names` is below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")


def prepare_run_dir(cfg, experiment: str, *, from_command_line: tuple[str, ...] = ()):
    """The output directory of a run and its effective config; returns (out, cfg, resuming).

    With `cfg.resume`, the run's own config.json is the config (a run continues as it began),
    except the fields named in `from_command_line`. Otherwise a fresh directory (`cfg.out`, or
    runs/<experiment>/<timestamp>) gets config.json; one that already holds a run is refused.
    """
    if cfg.resume:
        path = Path(cfg.resume) / "config.json"
        if not path.exists():
            sys.exit(f"--resume {cfg.resume}: no config.json there; is it the output directory of a {experiment} run?")
        kept = {name: getattr(cfg, name) for name in from_command_line}
        return path.parent, type(cfg)(**{**json.loads(path.read_text()), "resume": None, **kept}), True
    out = Path(cfg.out or f"runs/{experiment}/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if jax.process_index() > 0:  # a multi-process run: process 0 writes the directory
        return out, cfg, False
    if (out / "config.json").exists():
        sys.exit(f"{out} already holds a run; use --resume {out} to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", dataclasses.asdict(cfg))
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
        "argv": sys.argv,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically (a temporary file, then a rename), so a killed run never leaves a
    half-written file. In a multi-process run only process 0 writes."""
    if jax.process_index() > 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
