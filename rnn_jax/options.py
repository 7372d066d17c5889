"""The options every experiment shares: the model, its cells and the training (`TrainingOptions`),
and one cell with a prediction mode for the task experiments (`TaskOptions`). Each field's
docstring is its command-line flag's help (see experiments/cli.py)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from flax import nnx

from rnn_jax import backend
from rnn_jax.cells import CELLS, LSTM_VARIANTS, Cell, cell_fields, make_cell
from rnn_jax.checkpoints import check_best_by
from rnn_jax.choices import check_choice
from rnn_jax.config import compute_dtype, flag, from_text, import_modules, require_at_least_one
from rnn_jax.gradflow import REGULARIZER_FORMS
from rnn_jax.layers import SequenceModel
from rnn_jax.loop import LoopConfig
from rnn_jax.measurements import MEASUREMENTS
from rnn_jax.optim import cached_training, default_warmup
from rnn_jax.parallel import DEVICE_FLAGS, DeviceOptions
from rnn_jax.recurrence import SCANS
from rnn_jax.train import ON_NAN, StepOptions

GRU_FORMS = ("reset_after", "reset_before")


@dataclasses.dataclass
class TrainingOptions(DeviceOptions):
    """Model, cell and training options shared by every experiment (and where it runs,
    `DeviceOptions`). A subclass changes a default by redeclaring the field (`steps: int = 500`;
    the help text is inherited), sets `QUICK` (the values of `--quick`, a CI-sized run) and adds
    its data options."""

    QUICK: ClassVar[dict] = {}
    # whether the experiment trains its seeds stacked under one vmap (then never cuDNN: no batching rule)
    STACKS_SEEDS: ClassVar[bool] = False

    imports: tuple[str, ...] = ()
    """Python modules to import first, by name or path (my_cell.py): e.g. one that defines and registers
    your own cell, which --cell / --cells can then name"""
    layers: int = 1
    """stacked recurrent layers"""
    hidden: int = 128
    """hidden size"""
    dropout: float = 0.0
    """dropout between layers"""
    dtype: str = "float32"
    """compute dtype of the recurrent matmuls: float32 | bfloat16 (parameters, optimizer state and the carried
    state stay float32)"""
    activation: str = "tanh"
    """vanilla RNN activation: tanh | relu | linear"""
    recurrent_init: str = "orthogonal"
    """recurrent weights: orthogonal | identity | normal"""
    recurrent_scale: float = 1.0
    """spectral radius of each recurrent block at initialisation"""
    forget_bias: float = 1.0
    """LSTM forget-gate bias at initialisation"""
    chrono_init: float | None = None
    """chrono initialisation (Tallec & Ollivier 2018) for sequences up to T_MAX steps: the LSTM's forget bias
    b_f = ln U[1, T_MAX - 1] and b_i = -b_f, the GRU's keep gate (1 - z) likewise (None: off)"""
    lru_r_min: float = 0.9
    """LRU: the smallest |lambda| at initialisation (the ring r_min <= |lambda| <= r_max)"""
    lru_r_max: float = 0.999
    """LRU: the largest |lambda| at initialisation"""
    lru_max_phase: float = 6.283
    """LRU: arg lambda uniform in [0, max_phase] at initialisation"""
    cell_option: tuple[str, ...] = ()
    """options of the cells' own dataclasses, NAME=VALUE ... (e.g. --cell-option leak=0.3 for the README's
    LeakyRNN, --cell-option forget_bias=2 variant=CIFG): typed and checked by each cell, which takes those it
    has; one that none of the selected cells has is an error"""
    lstm_variant: str = "standard"
    """LSTM structure (Greff et al. 2017): standard | vanilla | NIG | NFG | NOG | NIAF | NOAF | NP | CIFG | FGR | 1997"""
    gru_form: str = "reset_after"
    """GRU form: reset_after (cuDNN/PyTorch/Flax) | reset_before (Cho et al. 2014)"""
    scan: str = "auto"
    """how a layer runs over time: sequential (lax.scan) | parallel (associative scan, for cells linear in
    h_{t-1}: mingru, minlstm, lru) | cudnn (the standard float32 LSTM as one cuDNN call, on an NVIDIA GPU, in
    experiments that train one model (not vmapped seeds); measurements keep the scan) | auto (parallel for the
    linear cells off CPU, cudnn where it works, else sequential)"""
    remat: int = 0
    """recompute activations in the backward pass instead of storing them (jax.checkpoint): 0 off | 1 each
    step's gates | K >= 2 keep every K-th carry and recompute K-step segments (memory ~ T/K + K steps; K ~
    sqrt(T) least); for long sequences on a memory-bound accelerator"""
    matmul_precision: str | None = None
    """float32 matmul precision of training and evaluation: default | high | highest (None: the backend's:
    full float32 on CPUs, TF32 on recent NVIDIA GPUs, bfloat16 passes on TPUs); measurements (gradient flow,
    spectra, fixed points) always run at highest"""
    block: bool | None = None
    """each layer a pre-norm residual block with an MLP (None: for mingru, minlstm and lru, as in their
    papers)"""
    batch: int = 32
    """examples per training step"""
    steps: int = 2000
    """training steps (also the horizon of the learning-rate decay); 0 measures the gradient flow at
    initialisation only"""
    minutes: float | None = None
    """wall-clock budget of this invocation (also with --resume): stop, evaluated and saved, after this many
    minutes"""
    optimizer: str = "adam"
    """optimizer: adam | adamw | rmsprop | sgd"""
    rmsprop_init: float = 0.0
    """RMSProp's second-moment accumulator at step 0 (optax's initial_scale: 0; Arjovsky et al. 2016's code:
    1e-3); only with --optimizer rmsprop"""
    lr: float = 2e-3
    """peak learning rate"""
    schedule: str = "cosine"
    """learning-rate schedule after warm-up: constant | cosine | linear"""
    warmup: int | None = None
    """linear warm-up steps (None: min(100, steps // 10)); must be below --steps"""
    clip_norm: float | None = 1.0
    """clip gradients to this global norm; None or 0 disables"""
    clip_value: float | None = None
    """clip gradients element-wise to [-v, v] instead"""
    log_every: int = 10
    """read the steps' metrics on the host (log them, check for NaN) every N steps; the loop never waits on
    the device in between"""
    eval_every: int = 200
    """evaluate on the validation data every N steps (and at the end)"""
    best_by: str = "loss"
    """the validation metric that picks the best checkpoint, the one tested: loss (lowest) | accuracy (highest)"""
    flow_every: int | None = None
    """measure the gradient flow ||dL/dh_t|| every N steps (None: at the first and the last step)"""
    flow_regularizer: float = 0.0
    """weight of Pascanu et al. (2013)'s vanishing-gradient regulariser Omega, differentiated in the same step
    (0: off; its value is logged as flow_regularizer)"""
    flow_regularizer_form: str = "trajectory"
    """which Omega: trajectory (the paper's eq. 9: sum over steps of (||v J|| / ||v|| - 1)^2, differentiated along
    the trajectory into every parameter) | authors (pascanur/trainingRNNs: mean of (||v J||^2 / ||v||^2 - 1)^2,
    the first pair included, gradient into W_hh only with dE/dh and the states held constant)"""
    spectrum: int = 0
    """with each gradient-flow measurement, the K leading Lyapunov exponents of every layer's state-to-state
    Jacobians (0: none; each layer's gate statistics are recorded either way); at most the state's size (an
    experiment's default takes all of a smaller state's)"""
    measure: tuple[str, ...] = ()
    """your own measurements (registered with rnn_jax.measurements.register_measurement, e.g. in a file given
    to --imports), computed inside the training step with every gradient-flow measurement and recorded beside
    it (flow.measurements in the history and results.json)"""
    on_nan: str = "stop"
    """a step whose loss or gradient is NaN/Inf: stop (the run ends there, with that step's gradient-flow
    profile saved) | skip (no update; counted and logged)"""
    checkpoint_every: int = 200
    """save a checkpoint every N steps (and at the end)"""
    keep: int = 2
    """checkpoints to keep (besides the best, --best-by)"""
    seed: int = 0
    """seed of initialisation, data split and order, and dropout"""
    out: str | None = None
    """output directory (None: runs/<experiment>/<timestamp>)"""
    resume: str | None = None
    """continue the run in this directory from its newest intact checkpoint, with its saved config; a flag typed
    beside it is applied where sound (--minutes, device flags, --log/eval/flow/checkpoint-every, --keep, more
    --steps under a constant schedule) and otherwise refused; changes go to config_history.json"""
    quick: bool = False
    """a small, fast configuration for a smoke test (QUICK in the source); flags given explicitly win"""

    def __post_init__(self):
        import_modules(self.imports)  # first: they may register the cells named below
        super().__post_init__()
        require_at_least_one(self, ("layers", "hidden", "batch", "log_every", "eval_every", "checkpoint_every", "keep"))
        if self.flow_regularizer < 0:
            raise ValueError(f"--flow-regularizer must be >= 0, got {self.flow_regularizer}")
        if self.spectrum < 0:
            raise ValueError(f"--spectrum must be >= 0, got {self.spectrum}")
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.flow_every is not None:
            require_at_least_one(self, ("flow_every",))
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if self.scan not in ("auto", *SCANS):
            raise ValueError(f"--scan must be auto, {', '.join(SCANS)}, got {self.scan!r}")
        if self.remat < 0:
            raise ValueError(f"--remat must be 0 (off), 1 (every step) or a segment length K >= 2, got {self.remat}")
        backend.check_precision(self.matmul_precision)
        if self.out is not None and "://" in self.out:
            raise ValueError(
                f"--out {self.out}: runs are written with POSIX file operations (orbax checkpoints included); "
                "give a folder every process can reach, e.g. a shared file system or a bucket mounted with gcsfuse"
            )
        if self.gru_form not in GRU_FORMS:
            raise ValueError(f"--gru-form must be one of {', '.join(GRU_FORMS)}, got {self.gru_form!r}")
        check_best_by(self.best_by)
        for name in self.measure:
            MEASUREMENTS.check(name)
        check_choice("--on-nan", self.on_nan, ON_NAN)
        check_choice("--flow-regularizer-form", self.flow_regularizer_form, REGULARIZER_FORMS)
        compute_dtype(self.dtype)
        self.make_training()  # validates optimizer, schedule, warm-up and clipping
        for name in CELLS:
            self.make_cell(name)  # validates the cell options

    @property
    def warmup_steps(self) -> int:
        return default_warmup(self.steps) if self.warmup is None else self.warmup

    def make_training(self):
        """(optimizer with its learning-rate schedule, gradient clipper): the same objects for equal
        options, so that the jitted steps built from them are reused (`rnn_jax.train.reused`)."""
        return cached_training(
            self.optimizer,
            self.rmsprop_init,
            self.lr,
            self.schedule,
            self.warmup_steps,
            max(self.steps, 1),
            self.clip_norm,
            self.clip_value,
        )

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

    def make_cell(self, name: str) -> Cell:
        """The cell `name` with the options the flags and --cell-option set (each cell takes those it has)."""
        check_choice("cell", name, CELLS)
        check_choice("--lstm-variant", self.lstm_variant, LSTM_VARIANTS)
        hints = cell_fields(CELLS[name])
        options = {k: v for k, v in self.flag_cell_options().items() if k in hints}
        for option, text in self.cell_options().items():
            if option in hints:
                try:
                    options[option] = from_text(hints[option], text)
                except ValueError as error:
                    raise ValueError(f"--cell-option {option}={text}: {name}'s {option}: {error}") from error
        return make_cell(name, **options)

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
        return (dataclasses.replace(self, **{k: v for k, (_, v) in changes.items()}) if changes else self), changes

    def measurements(self) -> tuple:
        """((name, fn), ...) of --measure, for `make_train_step`."""
        return tuple((name, MEASUREMENTS[name]) for name in self.measure)

    def flag_cell_options(self) -> dict:
        """{cell option: value} of the flags that set cell options (see `CELL_OPTION_FLAGS`)."""
        values = {option: getattr(self, flag) for option, flag in CELL_OPTION_FLAGS.items()}
        return {**values, "reset_after": self.gru_form == "reset_after"}

    def cell_options(self) -> dict[str, str]:
        """--cell-option NAME=VALUE ... as {NAME: VALUE text}."""
        options = {}
        for item in self.cell_option:
            name, equals, value = item.partition("=")
            if not equals or not name.strip().isidentifier():
                raise ValueError(f"--cell-option {item!r}: expected NAME=VALUE, e.g. leak=0.3")
            options[name.strip()] = value
        return options

    def selected_cells(self) -> tuple[str, ...]:
        """The cells this configuration trains (a subclass says which)."""
        return ()

    def check_against_cells(self) -> None:
        """What the command line asked of the cells, checked against the selected ones: each cell
        option given (a flag away from its default, or --cell-option) is one of at least one of
        them, and --spectrum asks no more exponents than each one's state has."""
        cells = self.selected_cells()
        if not cells:
            return
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = {
            option: flag(name) for option, name in CELL_OPTION_FLAGS.items() if getattr(self, name) != defaults[name]
        }
        if self.gru_form != defaults["gru_form"]:
            given["reset_after"] = "--gru-form"
        given.update({option: f"--cell-option {option}" for option in self.cell_options()})
        for option, shown in given.items():
            if not any(option in cell_fields(CELLS[c]) for c in cells):
                having = [c for c, cls in CELLS.items() if option in cell_fields(cls)]
                raise ValueError(
                    f"{shown}: none of the selected cells ({', '.join(cells)}) has the option {option!r}"
                    + (f"; {', '.join(having)} {'has' if len(having) == 1 else 'have'} it" if having else "")
                )
        for name in cells:  # an experiment's default spectrum takes all of a smaller state's exponents
            exponents = self.make_cell(name).state_size(self.hidden)
            if self.spectrum > exponents and self.spectrum != defaults["spectrum"]:
                raise ValueError(
                    f"--spectrum {self.spectrum}: the {name} state has {exponents} Lyapunov exponents at --hidden "
                    f"{self.hidden}; ask for at most {exponents}"
                )

    def sequence_model(self, cell: str, seed: int, **sizes) -> SequenceModel:
        """A `SequenceModel` of the cell `cell` as the flags set it (hidden, layers, dropout, dtype,
        scan, block, the cell's options), initialised from `seed`, with the task's `sizes`
        (vocab_size or input_size, output_size, embed_size, readout, bidirectional)."""
        made = self.make_cell(cell)
        return SequenceModel(
            made,
            hidden_size=self.hidden,
            num_layers=self.layers,
            dropout=self.dropout,
            rngs=nnx.Rngs(seed),
            **self.layer_options(made),
            **sizes,
        )

    def layer_options(self, cell: Cell) -> dict:
        """Options of the recurrent stack of `cell` (`rnn_jax.layers.RecurrentStack`) set by the flags,
        the scan resolved for this platform (`rnn_jax.backend.choose_scan`)."""
        scan = backend.choose_scan(cell, self.scan, self.dtype, vmapped=self.STACKS_SEEDS)
        block = cell.block if self.block is None else self.block
        return {"compute_dtype": compute_dtype(self.dtype), "scan": scan, "block": block, "remat": self.remat}

    def check_backend(self) -> None:
        """What the platform decides, checked before training (once JAX runs: after
        `start_processes`): an explicit --scan cudnn where it cannot work, with the reason."""
        for name in self.selected_cells():
            backend.choose_scan(self.make_cell(name), self.scan, self.dtype, vmapped=self.STACKS_SEEDS)


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
        if (self.checkpoint is None) != (self.input is None):
            raise ValueError("prediction needs both --checkpoint RUN_DIR and --input ...")

    def selected_cells(self) -> tuple[str, ...]:
        return (self.cell,)


# {cell option: the flag that sets it} (--gru-form sets reset_after); other options: --cell-option
CELL_OPTION_FLAGS = {
    "recurrent_init": "recurrent_init",
    "recurrent_scale": "recurrent_scale",
    "activation": "activation",
    "forget_bias": "forget_bias",
    "variant": "lstm_variant",
    "chrono_init": "chrono_init",
    "r_min": "lru_r_min",
    "r_max": "lru_r_max",
    "max_phase": "lru_max_phase",
}

# what a resumed run takes from its command line rather than from its saved config: how long
# and where it runs, not what it trains
RUNTIME_FLAGS = ("minutes", *DEVICE_FLAGS)
# what a resumed run may change (`TrainingOptions.continued_with`): how often it does what, not what it trains
ON_RESUME = ("log_every", "eval_every", "checkpoint_every", "flow_every", "keep")
