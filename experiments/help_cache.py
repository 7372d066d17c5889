"""`--help` in a fraction of a second when nothing changed: an experiment's help text is built
by tyro from its config classes, which import JAX (several seconds on a small CPU), so the text
is kept once printed and shown again, before anything heavy is imported, for as long as the
sources it comes from are unchanged.

The key is every .py file of rnn_jax/ and experiments/ and of the --imports given (path, size,
modification time), the terminal width (tyro wraps to it), and the command line; the folder is
``$RNN_JAX_CACHE/help`` (default ``~/.cache/rnn_jax/help``; ``RNN_JAX_CACHE=off``: none).
Standard library only: this module runs before the experiment is imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP_FLAGS = ("-h", "--help")


def folder() -> Path | None:
    setting = os.environ.get("RNN_JAX_CACHE", "")
    if setting.strip().lower() == "off":
        return None
    base = (
        Path(setting).expanduser()
        if setting.strip()
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnn_jax"
    )
    return base / "help"


def key(module: str, argv: list[str]) -> str:
    """What the help text of `module` under `argv` depends on, hashed."""
    files = sorted([*(ROOT / "rnn_jax").rglob("*.py"), *(ROOT / "experiments").rglob("*.py"), *_imports(argv)])
    stamps = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files if path.is_file()]
    width = shutil.get_terminal_size().columns
    return hashlib.sha256(repr((module, argv, width, sys.version, stamps)).encode()).hexdigest()[:24]


def _imports(argv: list[str]) -> list[Path]:
    """The files named by --imports (module names are found in the sources already hashed)."""
    paths, taking = [], False
    for arg in argv:
        if arg.startswith("--"):
            taking = arg == "--imports"
            value = arg.partition("=")[2] if arg.startswith("--imports=") else None
        else:
            value = arg if taking else None
        if value and value.endswith(".py"):
            paths.append(Path(value).resolve())
    return paths


def path_for(module: str, argv: list[str]) -> Path | None:
    where = folder()
    return None if where is None else where / f"{module}-{key(module, argv)}.txt"


def asked() -> tuple[str, list[str]] | None:
    """(experiment module, its arguments) of this process if it is ``python -m experiments.X``
    with a help flag; else None (an experiment called from Python is never served from here)."""
    argv = sys.orig_argv
    if "-m" not in argv[:-1] or not any(flag in argv for flag in HELP_FLAGS):
        return None
    module = argv[argv.index("-m") + 1]
    return (module, argv[argv.index("-m") + 2 :]) if module.startswith("experiments.") else None


def show_if_kept() -> None:
    """`python -m experiments.X --help` with a kept text: print it and exit (nothing imported)."""
    command = asked()
    path = None if command is None else path_for(*command)
    if path is not None and path.is_file():
        sys.stdout.write(path.read_text())
        sys.exit(0)


def keep(text: str) -> None:
    """Keep the help `text` of this process's command (a folder that cannot be written: none kept)."""
    command = asked()
    path = None if command is None else path_for(*command)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    except OSError:
        pass
