"""The command line of every experiment: flags generated from its config dataclass by tyro (the
help of a flag is its field's docstring), `--quick`, and user errors as one-line messages.

The library raises (ValueError / FileNotFoundError, with a message that says what to fix); only
this module prints usage or an error and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Sequence

import tyro
from flax import nnx

from experiments import help_cache
from rnn_jax import backend, compilation, keep_freed_memory, run_lock
from rnn_jax.config import config_from_json, create_run_dir, import_modules, resolve_run_dir
from rnn_jax.experiment import finish, fit
from rnn_jax.options import RUNTIME_FLAGS

TRACEBACK_ENV = "RNN_JAX_TRACEBACK"


def parse(config_cls, argv: Sequence[str] | None = None, *, description: str | None = None):
    """An instance of `config_cls` from command-line arguments. With ``--quick`` the class's
    QUICK values become the defaults, so a flag given explicitly wins even when its value equals
    the normal default. A ValueError of the config's validation is a usage error naming the flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with user_errors():  # the files of --imports first: what they register is listed in --help and accepted
        import_modules(imports_in(argv))
    description = f"{description or ''}\n\nRegistered (built in, and by --imports): {registered()}"
    quick = "--quick" in argv and hasattr(config_cls, "QUICK")  # a tool without training (sample) has none
    default = config_cls.create(**config_cls.QUICK, quick=True) if quick else None
    cfg = _parsed(config_cls, argv, default, description)
    # the flags typed (not their defaults): what --resume must apply or refuse (`prepare_run_dir`)
    cfg.command_line_flags = frozenset(a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--"))
    return cfg


def _parsed(config_cls, argv: list[str], default, description: str):
    """tyro's parse; a help text it prints is also kept for the next call (`help_cache`)."""
    if not any(flag in argv for flag in help_cache.HELP_FLAGS):
        return tyro.cli(config_cls, args=argv, default=default, description=description)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return tyro.cli(config_cls, args=argv, default=default, description=description)
    except SystemExit as done:
        if done.code in (0, None):
            help_cache.keep(printed.getvalue())
        raise
    finally:
        sys.stdout.write(printed.getvalue())


def imports_in(argv: Sequence[str]) -> list[str]:
    """The values of --imports on a command line (``--imports a.py b`` or ``--imports=a.py``)."""
    found, taking = [], False
    for arg in argv:
        if arg.startswith("--"):
            taking = arg == "--imports"
            if arg.startswith("--imports="):
                found.append(arg.partition("=")[2])
        elif taking:
            found.append(arg)
    return found


def registered() -> str:
    """What can be chosen by name now: cells, tasks, measurements."""
    from rnn_jax.cells import CELLS
    from rnn_jax.measurements import MEASUREMENTS
    from rnn_jax.tasks import TASKS

    return "; ".join(registry.listing() for registry in (CELLS, TASKS, MEASUREMENTS))


@contextlib.contextmanager
def user_errors():
    """Around a command-line program: a ValueError or FileNotFoundError (bad flags, data or
    checkpoints: what the user can fix, and the message says how) ends it with that message and
    exit status 1 instead of a traceback. RNN_JAX_TRACEBACK=1 shows the traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        sys.exit(f"error: {error}")


def main(
    config_cls, run: Callable, summary: Callable, argv=None, *, description: str, predict: Callable | None = None
) -> None:
    """The command line of an experiment: parse, then a run whose `summary(cfg, results)` is
    printed, or with --checkpoint/--input a prediction."""
    cfg = parse(config_cls, argv, description=description)
    compilation.enable_cache()  # programs compiled by an earlier run are read from disk ($RNN_JAX_CACHE)
    with user_errors():
        cfg.check_against_cells()  # an option no selected cell has, a spectrum larger than a state
        cfg.start_processes(cfg.out or cfg.resume)  # before anything asks JAX for its devices
        cfg.check_backend()  # e.g. --scan cudnn where it cannot run, with the reason
        if backend.platform() == "cpu":
            keep_freed_memory()  # XLA:CPU's steps reuse the pages the previous one freed (rnn_jax.host)
        if predict is not None and cfg.checkpoint:
            print(predict(cfg.checkpoint, cfg.input))
            return
        try:
            results = run(cfg)
        finally:
            run_lock.release_all()  # the run's folders are free for the next command
        if cfg.resume and "config" in results:  # the run's own config (--resume takes it from its folder)
            cfg = config_from_json(type(cfg), results["config"])
        print(summary(cfg, results))


@dataclasses.dataclass(frozen=True)
class TaskExperiment:
    """An experiment that trains one model on one task, as only what is its own: its `config`
    class, `data(cfg) -> (TrainingData, held)` (`held`: the held-out data `report` reads),
    `build_model(cfg, extra)`, `report(cfg, model, held, out, fitted) -> (metrics, info)`,
    `summary(cfg, results)` and optionally `predict(run_dir, input)`. `run` is the one driver:
    the run folder (new, or --resume's with its saved config), the data, `fit`, the report on
    the best parameters, `finish` (results.json and the plots)."""

    name: str
    config: type
    data: Callable
    build_model: Callable
    report: Callable
    summary: Callable
    predict: Callable | None = None
    title: Callable | None = None  # cfg -> the plots' title (default "<name>: <--data>")
    ylabel: str = "loss"

    def run(self, cfg) -> dict:
        out, cfg, resuming = resolve_run_dir(cfg, self.name, from_command_line=RUNTIME_FLAGS)
        data, held = self.data(cfg)  # found and read before the run folder is made: bad input leaves none
        if not resuming:
            create_run_dir(out, cfg, self.name)
        fitted = fit(cfg, out, lambda seed: self.build_model(cfg, data.extra), data, desc=f"{self.name} {cfg.cell}")
        metrics, info = self.report(cfg, nnx.merge(fitted.graphdef, fitted.params), held, out, fitted)
        title = self.title(cfg) if self.title else f"{self.name}: {cfg.data}"
        return finish(cfg, out, fitted, metrics, title=title, extra=info, ylabel=self.ylabel)

    def main(self, argv=None) -> None:
        description = sys.modules[self.config.__module__].__doc__
        main(self.config, self.run, self.summary, argv, description=description, predict=self.predict)


EXPERIMENTS = (
    "gradient_flow",
    "ablate",
    "fixed_points",
    "char_lm",
    "sample",
    "sentiment",
    "tagging",
    "translate",
    "caption",
    "tabular",
    "forecast",
    "curse_of_memory",
)


def overview() -> str:
    """Every experiment with the first line of its docstring (read from the source, nothing imported)."""
    import ast
    import importlib.util

    lines = ["The experiments (python -m experiments.NAME --help for each one's flags and examples):", ""]
    for name in EXPERIMENTS:
        source = importlib.util.find_spec(f"experiments.{name}").origin
        with open(source) as f:
            first = (ast.get_docstring(ast.parse(f.read())) or "").splitlines()[0]
        lines.append(f"  {name:<14} {first}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(overview())
