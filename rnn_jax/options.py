"""The options every experiment shares (`TrainingOptions`: the groups of
`rnn_jax.option_groups` nested, and where it runs), and one cell with a prediction mode for the
task experiments (`TaskOptions`). Each field's docstring is its command-line flag's help (see
experiments/cli.py)."""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar

from rnn_jax import backend
from rnn_jax.cells import CELLS, Cell, cell_fields
from rnn_jax.config import import_modules
from rnn_jax.layers import SequenceModel, StackOptions
from rnn_jax.learning_rules import check_rule
from rnn_jax.loop import LoopConfig
from rnn_jax.option_groups import (
    GROUP_OF,
    GROUPS,
    Measurement,
    MeasureOptions,
    Model,
    ModelOptions,
    Optim,
    OptimOptions,
    Run,
    RunOptions,
)
from rnn_jax.parallel import DEVICE_FLAGS, DeviceOptions
from rnn_jax.train import StepOptions


@dataclasses.dataclass
class TrainingOptions(DeviceOptions):
    """The options every experiment shares, in groups (`rnn_jax.option_groups`): `model`,
    `optim`, `measurement`, `run`, and where it runs (`DeviceOptions`). A group's field reads
    as the config's own (``cfg.hidden`` is ``cfg.model.hidden``) and its flag keeps its name.
    A subclass changes defaults in `DEFAULTS` (flag names, e.g. ``dict(steps=500)``), sets
    `QUICK` (the values of `--quick`, a CI-sized run) and adds its own flags as fields. Build one
    from flag values with `create`; a saved config.json holds them flat (`to_flat`)."""

    QUICK: ClassVar[dict] = {}
    DEFAULTS: ClassVar[dict] = {}
    # whether the experiment trains its seeds stacked under one vmap (then never cuDNN: no batching rule)
    STACKS_SEEDS: ClassVar[bool] = False

    imports: tuple[str, ...] = ()
    """Python modules to import first, by name or path (my_cell.py): e.g. one that defines and registers
    your own cell, which --cell / --cells can then name"""
    model: Model = ModelOptions()
    optim: Optim = OptimOptions()
    measurement: Measurement = MeasureOptions()
    run: Run = RunOptions()
    out: str | None = None
    """output directory (None: runs/<experiment>/<timestamp>)"""
    resume: str | None = None
    """continue the run in this directory from its newest intact checkpoint, with its saved config; a flag typed
    beside it is applied where sound (--minutes, device flags, --log/eval/flow/checkpoint-every, --keep, more
    --steps under a constant schedule) and otherwise refused; changes go to config_history.json"""
    quick: bool = False
    """a small, fast configuration for a smoke test (QUICK in the source); flags given explicitly win"""

    def __init_subclass__(cls, **kwargs):
        """A subclass's `DEFAULTS` become its groups' defaults (what --help shows)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("DEFAULTS", {})
        unknown = sorted(set(own) - set(GROUP_OF))
        if unknown:
            raise TypeError(f"{cls.__name__}.DEFAULTS: {', '.join(unknown)} is not a shared option")
        annotations = cls.__dict__.get("__annotations__", {})
        for group, hint in zip(GROUPS, (Model, Optim, Measurement, Run)):
            changed = {name: value for name, value in own.items() if GROUP_OF[name] == group}
            if changed:
                setattr(cls, group, dataclasses.replace(getattr(cls, group), **changed))
                annotations[group] = hint
        cls.__annotations__ = annotations

    def __getattr__(self, name: str):
        # a group's field as the config's own; only what normal lookup did not find comes here
        group = GROUP_OF.get(name)
        if group is None or group not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        return getattr(self.__dict__[group], name)

    @classmethod
    def create(cls, **values):
        """A config from flag values (``hidden=8``, as a saved config.json holds them; a whole
        group is also accepted), each routed to its group."""
        grouped = {group: {} for group in GROUPS}
        own = {}
        for name, value in values.items():
            if name in GROUP_OF:
                grouped[GROUP_OF[name]][name] = value
            else:
                own[name] = value
        for group, changed in grouped.items():
            base = own.get(group, getattr(cls, group))
            own[group] = dataclasses.replace(base, **_typed(type(base), changed)) if changed else base
        return cls(**_typed(cls, own))

    @classmethod
    def flag_hints(cls) -> dict:
        """{option: its type} of every option, groups flattened: the names its flags, config.json
        and `--grid` use."""
        hints = typing.get_type_hints(cls)
        flat = {}
        for field in dataclasses.fields(cls):
            group = GROUPS.get(field.name)
            if group is None:
                flat[field.name] = hints[field.name]
            else:
                group_hints = typing.get_type_hints(group)
                flat.update({f.name: group_hints[f.name] for f in dataclasses.fields(group)})
        return flat

    @classmethod
    def flag_names(cls) -> list[str]:
        """Every option's name, as its flag and config.json have it (groups flattened)."""
        return list(cls.flag_hints())

    def to_flat(self) -> dict:
        """{option: value} with the groups flattened: what config.json and results.json hold."""
        return {name: getattr(self, name) for name in self.flag_names()}

    def replace(self, **values):
        """This config with some options (by flag name) changed, validated again."""
        return type(self).create(**{**self.to_flat(), **values})

    def __post_init__(self):
        import_modules(self.imports)  # first: they may register the cells and measurements named below
        super().__post_init__()
        if self.out is not None and "://" in self.out:
            raise ValueError(
                f"--out {self.out}: runs are written with POSIX file operations (orbax checkpoints included); "
                "give a folder every process can reach, e.g. a shared file system or a bucket mounted with gcsfuse"
            )
        self.measurements()  # registered by --imports, if not built in
        check_rule(self.gradient)  # likewise
        for name in CELLS:
            self.make_cell(name)  # validates the cell options

    @property
    def warmup_steps(self) -> int:
        return self.optim.warmup_steps

    def make_training(self):
        """(optimizer with its schedule, clipper): `OptimOptions.make_training`."""
        return self.optim.make_training()

    def measurements(self) -> tuple:
        """((name, fn), ...) of --measure, for `make_train_step`."""
        return self.measurement.measurements()

    def make_cell(self, name: str) -> Cell:
        """The cell `name` as the flags set it: `ModelOptions.make_cell`."""
        return self.model.make_cell(name)

    def step_options(self, loss_fn, *, stateful: bool = False, seeds: bool = False) -> StepOptions:
        """What each training step computes besides the update (`rnn_jax.train.make_train_step`)."""
        return StepOptions(
            loss_fn,
            clipper=self.make_training()[1],
            spectrum=self.spectrum,
            measurements=self.measurements(),
            flow_regularizer=self.flow_regularizer,
            flow_regularizer_form=self.flow_regularizer_form,
            on_nan=self.on_nan,
            stateful=stateful,
            seeds=seeds,
            matmul_precision=self.matmul_precision,
            gradient=self.gradient,
        )

    def loop_config(self, tokens_per_step: int | None = None) -> LoopConfig:
        """How long the loop trains and how often it logs, evaluates, measures and saves."""
        return LoopConfig(
            steps=self.steps,
            log_every=self.log_every,
            eval_every=self.eval_every,
            flow_every=self.flow_every or self.steps,
            checkpoint_every=self.checkpoint_every,
            max_seconds=self.minutes * 60 if self.minutes else None,
            tokens_per_step=tokens_per_step,
        )

    def continued_with(self, given: TrainingOptions, flags: frozenset[str]) -> tuple[TrainingOptions, dict]:
        """This saved config, resumed by a command line `given` whose typed `flags` are listed:
        (the config the run continues with, {flag: [saved, new]} of what changed). A flag that
        can change mid-run is applied (how often it logs, evaluates, measures, saves, keeps;
        --steps when the learning-rate schedule does not depend on the total); any other flag
        that differs from the saved value is refused with what to do instead."""
        changes = {}
        for name in sorted(flags - {"resume", "quick", "out", "help"}):
            saved, new = getattr(self, name, None), getattr(given, name, None)
            if name in RUNTIME_FLAGS or saved == new:
                continue
            if name not in ON_RESUME and name != "steps":
                raise ValueError(
                    f"--{name.replace('_', '-')} {new}: the run was started with {name} = {saved!r}, and a resumed "
                    "run continues as it began; drop the flag, or start a new run (--out)"
                )
            if name == "steps" and (self.schedule != "constant" or self.warmup_steps != given.warmup_steps):
                raise ValueError(
                    f"--steps {new}: the run's {self.schedule} learning-rate schedule (warm-up {self.warmup_steps}) "
                    f"was laid out over its {self.steps} steps and cannot stretch to {new} without changing the "
                    "steps already taken; resume with the saved --steps, or start a new run (--out) with "
                    "--steps " + str(new) + (" and --warmup " + str(self.warmup_steps) if self.warmup is None else "")
                )
            changes[name] = [saved, new]
        return (self.replace(**{k: v for k, (_, v) in changes.items()}) if changes else self), changes

    def selected_cells(self) -> tuple[str, ...]:
        """The cells this configuration trains (a subclass says which)."""
        return ()

    def check_against_cells(self) -> None:
        """What the command line asked of the cells, checked against the selected ones: each cell
        option given (a shorthand flag away from its default, or --cell-option) is one of at
        least one of them, and --spectrum asks no more exponents than each one's state has."""
        cells = self.selected_cells()
        if not cells:
            return
        for option, shown in self.model.given_cell_options().items():
            if not any(option in cell_fields(CELLS[c]) for c in cells):
                having = [c for c, cls in CELLS.items() if option in cell_fields(cls)]
                raise ValueError(
                    f"{shown}: none of the selected cells ({', '.join(cells)}) has the option {option!r}"
                    + (f"; {', '.join(having)} {'has' if len(having) == 1 else 'have'} it" if having else "")
                )
        for name in cells:  # an experiment's default spectrum takes all of a smaller state's exponents
            exponents = self.make_cell(name).state_size(self.hidden)
            if self.spectrum > exponents and self.spectrum != type(self).measurement.spectrum:
                raise ValueError(
                    f"--spectrum {self.spectrum}: the {name} state has {exponents} Lyapunov exponents at --hidden "
                    f"{self.hidden}; ask for at most {exponents}"
                )

    def sequence_model(self, cell: str, seed: int, **sizes) -> SequenceModel:
        """A `SequenceModel` of the cell `cell` as the flags set it (`ModelOptions.sequence_model`)."""
        return self.model.sequence_model(cell, seed, vmapped=self.STACKS_SEEDS, **sizes)

    def stack_options(self, cell: Cell) -> StackOptions:
        """How the recurrent stack of `cell` is built (`ModelOptions.stack_options`)."""
        return self.model.stack_options(cell, vmapped=self.STACKS_SEEDS)

    def check_backend(self) -> None:
        """What the platform decides, checked before training (once JAX runs: after
        `start_processes`): an explicit --scan cudnn where it cannot work, with the reason."""
        for name in self.selected_cells():
            backend.resolve_scan(self.make_cell(name), self.scan, self.dtype, vmapped=self.STACKS_SEEDS)


def _typed(cls, values: dict) -> dict:
    """`values` for the dataclass `cls`, JSON's lists back to tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls, include_extras=False)
    return {
        k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple else v
        for k, v in values.items()
    }


@dataclasses.dataclass
class TaskOptions(TrainingOptions):
    """`TrainingOptions` for one cell, and the prediction mode of a task experiment
    (--checkpoint, --input)."""

    cell: str = "lstm"
    """recurrent cell: rnn | lstm | gru | mingru | minlstm | lru, or one registered by --imports"""
    checkpoint: str | None = None
    """prediction mode: the output directory of a trained run (with --input)"""
    input: str | None = None
    """prediction mode: the input to predict for (see the examples above)"""

    def __post_init__(self):
        super().__post_init__()
        self.make_cell(self.cell)
        if self.gradient == "truncated:auto":
            raise ValueError(
                "--gradient truncated:auto is measured per cell by gradient_flow and ablate; give truncated:K"
            )
        if (self.checkpoint is None) != (self.input is None):
            raise ValueError("prediction needs both --checkpoint RUN_DIR and --input ...")

    def selected_cells(self) -> tuple[str, ...]:
        return (self.cell,)


# what a resumed run takes from its command line rather than from its saved config: how long
# and where it runs, not what it trains
RUNTIME_FLAGS = ("minutes", *DEVICE_FLAGS)
# what a resumed run may change (`TrainingOptions.continued_with`): how often it does what, not what it trains
ON_RESUME = ("log_every", "eval_every", "checkpoint_every", "flow_every", "keep")
