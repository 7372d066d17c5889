"""Compiled programs kept across processes (JAX's persistent compilation cache), and a count of
what a process compiles.

Researchers rerun the same configuration all day (more seeds, a resumed run, the points of a
grid, the tests in several processes); most of a short run's time is compiling programs that an
earlier run already compiled. `enable_cache` points JAX's cache at a folder, so that the second
run reads them from disk: `$RNN_JAX_CACHE`, by default ``~/.cache/rnn_jax/xla``
(``$XDG_CACHE_HOME/rnn_jax/xla``), ``RNN_JAX_CACHE=off`` for none; inside it, one subfolder per
jaxlib and kind of processor (`machine_tag`). Every experiment, benchmark
and the test session call it first. A folder that cannot be used (not creatable, not writable,
the disk nearly full) gives one warning and a run without it; an entry that cannot be read (a
damaged file) gives one warning and that program compiled afresh: the cache never fails a run.
It never changes a number either: an executable read from it is the one XLA compiled
(tests/test_compilation.py compares a step cold and warm bit for bit).

`count` and `totals` count compilations through JAX's monitoring events (every program JAX
compiles or reads from the cache passes through one, named after its function).
"""

from __future__ import annotations

import collections
import contextlib
import glob
import hashlib
import os
import platform
import re
import shutil
import threading
import uuid
import warnings
from pathlib import Path

import jax
import jaxlib
from jax import monitoring

CACHE_ENV = "RNN_JAX_CACHE"
OFF = ("off", "none", "0", "false", "no")
MIN_FREE_BYTES = 256 << 20  # less free space than this on the cache's disk: "full"
# what JAX warns (once per program) when an entry cannot be read or written
_ENTRY_ERROR = re.compile(r"Error (reading|writing) persistent compilation cache entry for '(?P<module>[^']+)'")
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # every compile, from disk or not
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
# what a warm run still pays: tracing to a jaxpr and lowering it to StableHLO (the cache's key)
_STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
}

status: dict = {"folder": None, "state": "not enabled"}  # recorded in every run's environment
_counts: collections.Counter = collections.Counter()  # fun_name -> compilations in this process
_totals = {"programs": 0, "from_cache": 0, "compile_s": 0.0, "trace_s": 0.0, "lower_s": 0.0}
_lock = threading.Lock()
_listening = False


def default_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnn_jax" / "xla"


def machine_tag() -> str:
    """The subfolder of the cache for this jaxlib and processor: XLA compiles for the host's
    instruction set, and its loader rejects (with an error line) an executable compiled where
    the CPU had features this one lacks, so a home folder shared by different machines (a
    cluster's nodes) keeps one cache per kind of machine, as does an upgraded jaxlib."""
    features = platform.processor()
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        features = next((line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), features)
    digest = hashlib.sha256(features.encode()).hexdigest()[:10]
    return f"jaxlib{jaxlib.__version__}-{platform.machine()}-{digest}"


def enable_cache(folder: str | Path | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in `folder` (default: `$RNN_JAX_CACHE`, else
    `default_folder()`); ``off`` turns it off. Call before the first compilation. Returns the
    folder in use, or None; never raises for a folder that cannot be used (one warning instead)."""
    _listen()
    folder = os.environ.get(CACHE_ENV, "") if folder is None else str(folder)
    if folder.strip().lower() in OFF:
        status.update(folder=None, state=f"off ({CACHE_ENV}={folder})")
        return None
    path = (Path(folder).expanduser() if folder.strip() else default_folder()) / machine_tag()
    if status["folder"] == str(path) and status["state"] == "on":  # already on here (the tests call every command line)
        return path
    problem = unusable(path)
    if problem:
        status.update(folder=str(path), state=f"unusable: {problem}")
        warnings.warn(
            f"rnn_jax: the compilation cache {path} {problem}; running without it "
            f"(set {CACHE_ENV} to another folder, or {CACHE_ENV}=off)",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # every program: small ones add up
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # no size limit: JAX's eviction lists the whole folder at every write (the fast test tier, cold:
    # 9.2 min with a limit, 5.0 without); `rm -r` the folder to empty it
    jax.config.update("jax_compilation_cache_max_size", -1)
    _warn_entry_errors_once(path)
    status.update(folder=str(path), state="on")
    return path


def unusable(path: Path) -> str | None:
    """Why `path` cannot hold the cache (None: it can): not creatable, not writable, disk full."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"rnn_jax")
        probe.unlink()
    except OSError as error:
        return f"cannot be written ({error.strerror or error})"
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return f"is on a full disk ({free >> 20} MiB free)"
    return None


def _warn_entry_errors_once(path: Path) -> None:
    """JAX warns once per program whose entry it cannot read or write (and compiles it): say it
    once, with what to do."""
    shown, said = warnings.showwarning, False

    def showwarning(message, category, filename, lineno, file=None, line=None):
        nonlocal said
        error = _ENTRY_ERROR.search(str(message))
        if not error:
            return shown(message, category, filename, lineno, file, line)
        _remove_entries(path, error.group("module"))  # JAX never overwrites an entry: the next run writes it anew
        if not said:
            said = True
            status["entry_errors"] = str(message)
            shown(
                f"rnn_jax: the compilation cache {path} has an entry that cannot be used ({message}); such "
                "programs are compiled afresh and their entries written anew, this run is unaffected (said once)",
                category,
                filename,
                lineno,
                file,
                line,
            )

    warnings.showwarning = showwarning
    # JAX's `warnings.warn` names a new module each time: without this only the first would reach us
    warnings.filterwarnings(
        "always", message="Error (reading|writing) persistent compilation cache", category=UserWarning
    )


def _remove_entries(path: Path, module: str) -> None:
    """Delete the cache entries of the program `module` (files ``<module>-<hash>-cache`` and
    ``-atime``), e.g. a damaged one, so that the next compilation of it is written again."""
    for entry in path.glob(f"{glob.escape(module)}-*"):
        with contextlib.suppress(OSError):
            entry.unlink()


def _listen() -> None:
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True

    def on_duration(event: str, duration: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            with _lock:
                _counts[kwargs.get("fun_name", "?")] += 1
                _totals["programs"] += 1
                _totals["compile_s"] += duration
        elif event in _STAGES:
            with _lock:
                _totals[_STAGES[event]] += duration

    def on_event(event: str, **kwargs) -> None:
        if event == _CACHE_HIT_EVENT:
            with _lock:
                _totals["from_cache"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)


def totals() -> dict:
    """What this process has compiled so far: programs, how many of them came from the cache,
    and seconds spent compiling them (or reading them from the cache), tracing and lowering."""
    _listen()
    with _lock:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in _totals.items()}


@contextlib.contextmanager
def count():
    """``with count() as compiled:`` -- a Counter {function name: compilations} of the block,
    from disk or not; a program compiled twice in one process for the same shapes and options
    is a defect (JAX's in-memory cache should have served it)."""
    _listen()
    with _lock:
        before = _counts.copy()
    compiled = collections.Counter()
    try:
        yield compiled
    finally:
        with _lock:
            compiled.update(_counts - before)
