"""The groups of options every experiment shares, each validating its own fields once and
building its own object: the network (`ModelOptions`), the optimisation (`OptimOptions`), what
is measured (`MeasureOptions`) and how the run proceeds (`RunOptions`). `TrainingOptions`
nests them; their flags keep their names (``--hidden``, not ``--model.hidden``). Each field's
docstring is its flag's help. Checks that need what ``--imports`` registers (a cell's options,
a measurement's name) are `TrainingOptions`', made after the imports."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import tyro
from flax import nnx

from rnn_jax import backend
from rnn_jax.cells import CELLS, LSTM_VARIANTS, Cell, cell_fields, make_cell
from rnn_jax.checkpoints import check_best_by
from rnn_jax.choices import check_choice
from rnn_jax.config import compute_dtype, flag, from_text, require_at_least_one
from rnn_jax.gradflow import REGULARIZER_FORMS
from rnn_jax.layers import SequenceModel, StackOptions
from rnn_jax.measurements import named
from rnn_jax.optim import cached_training, default_warmup
from rnn_jax.recurrence import SCANS, ScanOptions
from rnn_jax.train import ON_NAN

GRU_FORMS = ("reset_after", "reset_before")
# the documented shorthands of --cell-option: {cell option: its flag} (--gru-form sets reset_after)
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


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The network: its size, its cells' options and how its layers run over time."""

    layers: int = 1
    """stacked recurrent layers"""
    hidden: int = 128
    """hidden size"""
    dropout: float = 0.0
    """dropout between layers"""
    dtype: str = "float32"
    """compute dtype of the recurrent matmuls: float32 | bfloat16 (parameters, optimizer state and the carried
    state stay float32)"""
    cell_option: tuple[str, ...] = ()
    """options of the cells' own dataclasses, NAME=VALUE ... (e.g. --cell-option leak=0.3 for the README's
    LeakyRNN, --cell-option forget_bias=2 variant=CIFG): typed and checked by each cell, which takes those it
    has; one that none of the selected cells has is an error. The flags below are documented shorthands for
    the common ones (--forget-bias 2 is --cell-option forget_bias=2); an option set both ways is an error"""
    activation: str = "tanh"
    """vanilla RNN activation: tanh | relu | linear (shorthand of --cell-option activation=...)"""
    recurrent_init: str = "orthogonal"
    """recurrent weights: orthogonal | identity | normal | ring (a Gaussian's eigenvalues moved onto the ring
    [--recurrent-scale, 1), Zucchet & Orvieto's) (shorthand of --cell-option recurrent_init=...)"""
    recurrent_scale: float = 1.0
    """spectral radius of each recurrent block at initialisation; with --recurrent-init ring, the ring's inner
    radius nu_0 (shorthand of --cell-option recurrent_scale=...)"""
    forget_bias: float = 1.0
    """LSTM forget-gate bias at initialisation (shorthand of --cell-option forget_bias=...)"""
    chrono_init: float | None = None
    """chrono initialisation (Tallec & Ollivier 2018) for sequences up to T_MAX steps: the LSTM's forget bias
    b_f = ln U[1, T_MAX - 1] and b_i = -b_f, the GRU's keep gate (1 - z) likewise (None: off; shorthand of
    --cell-option chrono_init=...)"""
    lru_r_min: float = 0.9
    """LRU: the smallest |lambda| at initialisation, the ring r_min <= |lambda| <= r_max (--cell-option r_min=...)"""
    lru_r_max: float = 0.999
    """LRU: the largest |lambda| at initialisation (--cell-option r_max=...)"""
    lru_max_phase: float = 6.283
    """LRU: arg lambda uniform in [0, max_phase] at initialisation (--cell-option max_phase=...)"""
    lstm_variant: str = "standard"
    """LSTM structure (Greff et al. 2017): standard | vanilla | NIG | NFG | NOG | NIAF | NOAF | NP | CIFG | FGR | 1997
    (--cell-option variant=...)"""
    gru_form: str = "reset_after"
    """GRU form: reset_after (cuDNN/PyTorch/Flax) | reset_before (Cho et al. 2014)"""
    scan: str = "auto"
    """how a layer runs over time: sequential (lax.scan) | parallel (associative scan, for cells linear in
    h_{t-1}: mingru, minlstm, lru) | cudnn (the standard float32 LSTM as one cuDNN call, on an NVIDIA GPU, in
    experiments that train one model (not vmapped seeds); measurements keep the scan) | auto (parallel for the
    linear cells off CPU, cudnn where it works, else sequential: `rnn_jax.backend.resolve_scan`)"""
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

    def __post_init__(self):
        require_at_least_one(self, ("layers", "hidden"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.scan not in ("auto", *SCANS):
            raise ValueError(f"--scan must be auto, {', '.join(SCANS)}, got {self.scan!r}")
        if self.remat < 0:
            raise ValueError(f"--remat must be 0 (off), 1 (every step) or a segment length K >= 2, got {self.remat}")
        backend.check_precision(self.matmul_precision)
        check_choice("--gru-form", self.gru_form, GRU_FORMS)
        check_choice("--lstm-variant", self.lstm_variant, LSTM_VARIANTS)
        compute_dtype(self.dtype)
        self.cell_options()  # NAME=VALUE each

    def make_cell(self, name: str) -> Cell:
        """The cell `name` with the options --cell-option and its shorthands set (each cell takes
        those it has)."""
        check_choice("cell", name, CELLS)
        hints = cell_fields(CELLS[name])
        options = {}
        for option, value in {**self.shorthand_cell_options(), **self.cell_options()}.items():
            if option not in hints:
                continue
            try:
                options[option] = from_text(hints[option], value) if isinstance(value, str) else value
            except ValueError as error:
                raise ValueError(f"--cell-option {option}={value}: {name}'s {option}: {error}") from error
        return make_cell(name, **options)

    def shorthand_cell_options(self) -> dict:
        """{cell option: value} of the shorthand flags (`CELL_OPTION_FLAGS`) and --gru-form."""
        values = {option: getattr(self, name) for option, name in CELL_OPTION_FLAGS.items()}
        return {**values, "reset_after": self.gru_form == "reset_after"}

    def cell_options(self) -> dict[str, str]:
        """--cell-option NAME=VALUE ... as {NAME: VALUE text}; an option that a shorthand flag
        also sets (to another value than its default) is refused: one way each."""
        options, defaults = {}, ModelOptions.__dataclass_fields__
        for item in self.cell_option:
            name, equals, value = item.partition("=")
            name = name.strip()
            if not equals or not name.isidentifier():
                raise ValueError(f"--cell-option {item!r}: expected NAME=VALUE, e.g. leak=0.3")
            shorthand = CELL_OPTION_FLAGS.get(name)
            if shorthand and getattr(self, shorthand) != defaults[shorthand].default:
                raise ValueError(f"--cell-option {item} and {flag(shorthand)} both set {name}: give it once")
            options[name] = value
        return options

    def given_cell_options(self) -> dict[str, str]:
        """{cell option: how the command line set it} of the options away from their defaults."""
        defaults = ModelOptions.__dataclass_fields__
        given = {o: flag(n) for o, n in CELL_OPTION_FLAGS.items() if getattr(self, n) != defaults[n].default}
        if self.gru_form != defaults["gru_form"].default:
            given["reset_after"] = "--gru-form"
        return {**given, **{option: f"--cell-option {option}" for option in self.cell_options()}}

    def stack_options(self, cell: Cell, *, vmapped: bool, bidirectional: bool = False) -> StackOptions:
        """How the recurrent stack of `cell` is built (`rnn_jax.layers.StackOptions`), the scan
        resolved for this platform (`rnn_jax.backend.resolve_scan`; `vmapped`: seeds stacked)."""
        scan = backend.resolve_scan(cell, self.scan, self.dtype, vmapped=vmapped)
        return StackOptions(
            num_layers=self.layers,
            dropout=self.dropout,
            bidirectional=bidirectional,
            block=cell.block if self.block is None else self.block,
            scan=ScanOptions(compute_dtype=compute_dtype(self.dtype), scan=scan, remat=self.remat),
        )

    def sequence_model(self, cell: str, seed: int, *, vmapped: bool, **sizes) -> SequenceModel:
        """A `SequenceModel` of the cell `cell`, initialised from `seed`, with the task's `sizes`
        (vocab_size, input_size: the features' or the embedding's size, output_size, readout,
        and bidirectional)."""
        made = self.make_cell(cell)
        stack = self.stack_options(made, vmapped=vmapped, bidirectional=sizes.pop("bidirectional", False))
        return SequenceModel(made, hidden_size=self.hidden, stack=stack, rngs=nnx.Rngs(seed), **sizes)


@dataclasses.dataclass(frozen=True)
class OptimOptions:
    """The optimisation: batch, length, optimiser, schedule, clipping and what a NaN does."""

    batch: int = 32
    """examples per training step"""
    steps: int = 2000
    """training steps (also the horizon of the learning-rate decay); 0 measures the gradient flow at
    initialisation only"""
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
    """linear warm-up steps (None: 100, at most a tenth of --steps); must be below --steps"""
    clip_norm: float | None = 1.0
    """clip gradients to this global norm; None or 0 disables"""
    clip_value: float | None = None
    """clip gradients element-wise to [-v, v] instead"""
    on_nan: str = "stop"
    """a step whose loss or gradient is NaN/Inf: stop (the run ends there, with that step's gradient-flow
    profile saved) | skip (no update; counted and logged)"""
    gradient: str = "bptt"
    """the learning rule, how credit is assigned through time: bptt | truncated:K (the gradient stopped at every
    K-th state, blocks of K steps) | truncated:auto (K where the initial gradient flow falls to 1%; gradient_flow
    and ablate) | rtrl (real-time recurrent learning, forward in time) | snap1 | snap2 (SnAp-1, SnAp-2) | uoro
    (unbiased rank-one RTRL, random; its variance measured) | spatial (no credit through time), or one
    registered by --imports (rnn_jax.learning_rules); on every gradient-flow step its gradient is compared
    with full BPTT's (measurements.alignment)"""

    def __post_init__(self):
        require_at_least_one(self, ("batch",))
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        check_choice("--on-nan", self.on_nan, ON_NAN)
        self.make_training()  # validates optimizer, schedule, warm-up and clipping

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


@dataclasses.dataclass(frozen=True)
class MeasureOptions:
    """What the measuring steps compute beside the update."""

    flow_every: int | None = None
    """measure the gradient flow ||dL/dh_t|| every N steps (None: at the first and the last step)"""
    spectrum: int = 0
    """with each gradient-flow measurement, the K leading Lyapunov exponents of every layer's state-to-state
    Jacobians (0: none; each layer's gate statistics are recorded either way); at most the state's size (an
    experiment's default takes all of a smaller state's)"""
    measure: tuple[str, ...] = ()
    """measurements computed inside the training step with every gradient-flow measurement and recorded beside
    it (flow.measurements in the history and results.json): built in, hessian[:K] (the loss's K top Hessian
    eigenvalues, overall and per parameter group, and through Adam: rnn_jax.curvature), or your own (registered
    with rnn_jax.measurements.register_measurement, e.g. in a file given to --imports); NAME:ARG gives one its
    argument"""
    flow_regularizer: float = 0.0
    """weight of Pascanu et al. (2013)'s vanishing-gradient regulariser Omega, differentiated in the same step
    (0: off; its value is logged as flow_regularizer)"""
    flow_regularizer_form: str = "trajectory"
    """which Omega: trajectory (the paper's eq. 9: sum over steps of (||v J|| / ||v|| - 1)^2, differentiated along
    the trajectory into every parameter) | authors (pascanur/trainingRNNs: mean of (||v J||^2 / ||v||^2 - 1)^2,
    the first pair included, gradient into W_hh only with dE/dh and the states held constant)"""

    def __post_init__(self):
        if self.flow_every is not None:
            require_at_least_one(self, ("flow_every",))
        if self.spectrum < 0:
            raise ValueError(f"--spectrum must be >= 0, got {self.spectrum}")
        if self.flow_regularizer < 0:
            raise ValueError(f"--flow-regularizer must be >= 0, got {self.flow_regularizer}")
        check_choice("--flow-regularizer-form", self.flow_regularizer_form, REGULARIZER_FORMS)

    def measurements(self) -> tuple:
        """((name, fn), ...) of --measure (registered by then: checked after --imports)."""
        return tuple(named(spec) for spec in self.measure)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the run proceeds: its seed, budget, and how often it logs, evaluates and saves."""

    seed: int = 0
    """seed of initialisation, data split and order, and dropout"""
    minutes: float | None = None
    """wall-clock budget of this invocation (also with --resume): stop, evaluated and saved, after this many
    minutes"""
    log_every: int = 10
    """read the steps' metrics on the host (log them, check for NaN) every N steps; the loop never waits on
    the device in between"""
    eval_every: int = 200
    """evaluate on the validation data every N steps (and at the end)"""
    best_by: str = "loss"
    """the validation metric that picks the best checkpoint, the one tested: loss (lowest) | accuracy (highest)"""
    checkpoint_every: int = 200
    """save a checkpoint every N steps (and at the end)"""
    keep: int = 2
    """checkpoints to keep (besides the best, --best-by)"""

    def __post_init__(self):
        require_at_least_one(self, ("log_every", "eval_every", "checkpoint_every", "keep"))
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        check_best_by(self.best_by)


# the groups as TrainingOptions nests them: {field: class}; their flags without a prefix
GROUPS = {"model": ModelOptions, "optim": OptimOptions, "measurement": MeasureOptions, "run": RunOptions}
Model = Annotated[ModelOptions, tyro.conf.OmitArgPrefixes]
Optim = Annotated[OptimOptions, tyro.conf.OmitArgPrefixes]
Measurement = Annotated[MeasureOptions, tyro.conf.OmitArgPrefixes]
Run = Annotated[RunOptions, tyro.conf.OmitArgPrefixes]
GROUP_OF = {field.name: group for group, cls in GROUPS.items() for field in dataclasses.fields(cls)}
