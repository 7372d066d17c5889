"""The train state and the jitted step: a pure function of (TrainState, batch).

The NNX model is split once into a static `graphdef` and its parameter state; the step
merges them inside `jax.jit`, so NNX's Python graph handling runs at trace time only and a
call costs what the XLA computation costs (see benchmarks/train_step.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rnn_jax import backend, diagnostics, gradflow  # noqa: F401  (diagnostics: registers `dynamics`)
from rnn_jax.choices import check_choice
from rnn_jax.learning_rules import learning_rule, stochastic
from rnn_jax.losses import LossFn, LossOutput, apply, sequence_cross_entropy
from rnn_jax.measurements import MEASUREMENTS, run_measurements

Array = jax.Array
Batch = dict[str, Array]
ON_NAN = ("stop", "skip")  # a non-finite step: end the run (or the seed) there, or skip it and go on


@flax.struct.dataclass
class TrainState:
    step: Array
    params: nnx.State
    opt_state: optax.OptState
    key: Array  # raw uint32 key data (checkpointable); dropout at step s uses fold_in(key, s)
    carry: Any = None  # stateful truncated BPTT: each layer's carry at the end of the last window
    active: Any = None  # bool (stacked seeds: (seeds,)): False once stopped by a NaN, its updates off


class StepOutput(NamedTuple):
    """What a training step reports, on device (a leading seed axis when seeds are stacked)."""

    loss: Array
    grad_norm: Array  # global norm of the raw gradient
    clipped_grad_norm: Array  # after the clipper
    metrics: dict[str, Array]  # the loss's own (accuracy, ...)
    flow: dict | None = None  # the gradient-flow profile of this step (`measure_flow`), see `rnn_jax.gradflow`,
    # and with `spectrum`, flow["dynamics"]: per layer, Lyapunov exponents and gate statistics (`rnn_jax.diagnostics`)
    packed: Array | None = None  # `scalars()` in `scalar_names()` order, then `active`: the loop reads one array a step
    active: Array | None = None  # the state's `active` after the step: False once the NaN policy halted it

    def scalars(self) -> dict[str, Array]:
        return {
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "clipped_grad_norm": self.clipped_grad_norm,
            **self.metrics,
        }

    def scalar_names(self) -> list[str]:
        return sorted(self.scalars())

    def with_packed(self) -> StepOutput:
        scalars = self.scalars()
        columns = [scalars[name] for name in self.scalar_names()]
        if self.active is not None:
            columns.append(jnp.asarray(self.active, jnp.result_type(*columns)))
        return self._replace(packed=jnp.stack(columns, axis=-1))


def reused(make):
    """`make` (a builder of a jitted function) returning one function for equal arguments: a
    program is then traced and compiled once per process, however many cells, seeds or grid
    points of equal shapes and options ask for it (JAX's in-memory cache belongs to the jitted
    function; a new one compiles again). Equal models have equal graphdefs; equal training
    options give the same optax objects (`TrainingOptions.make_training`). Arguments that cannot
    be hashed build a new function."""
    cached = functools.lru_cache(maxsize=64)(make)

    @functools.wraps(make)
    def build(*args, **kwargs):
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return make(*args, **kwargs)
        return cached(*args, **kwargs)

    return build


def init_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, key: Array, *, stateful_batch: int | None = None
):
    """Split `model` once. Returns (graphdef, TrainState). `stateful_batch`: the number of
    parallel streams of stateful truncated BPTT (the state then carries their hidden states)."""
    graphdef, params = nnx.split(model, nnx.Param)
    key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    # distinct buffers per leaf (zero carries may share one array), as the step donates the state
    carry = None if stateful_batch is None else jax.tree.map(jnp.array, model.zero_carries(stateful_batch))
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        key=key_data,
        carry=carry,
        active=jnp.asarray(True),
    )
    return graphdef, state


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What a training step computes besides the update (`make_train_step`). Frozen and
    hashable: equal options (and graphdef and optimizer) give the same jitted step.

    `on_nan`: the one NaN policy. A step whose loss or gradient is not finite updates nothing
    but ``state.step``; with "stop" it also clears ``state.active``, after which no step updates
    anything (the loop reads the steps' outputs only every few steps, so a diverged run must not
    train on meanwhile) and the loop ends the run (or that seed) there; with "skip" it leaves it
    set and the loop counts the step as skipped (`rnn_jax.loop.judge_steps` tells which from
    the step's own ``active``, packed with its scalars).

    `measure_flow`: the output also holds the gradient-flow profile (`rnn_jax.gradflow`), from
    the same forward and backward pass that produces the gradient; without it (and without the
    regulariser) the step contains no probes at all. With `spectrum` (not None), also
    ``flow["dynamics"]``: each layer's `spectrum` leading Lyapunov exponents and its gate
    statistics on this batch, before the update (`rnn_jax.diagnostics`). `measurements`:
    ((name, fn), ...), your own measurements on flow-measuring steps, each ``fn(ctx)`` of the
    step's `rnn_jax.measurements.Context` (or ``fn(model, batch, state_grads)``), in
    ``flow["measurements"]``; the built-ins run through the same door (`measured_by`).

    `flow_regularizer`: the weight of Pascanu et al. (2013)'s vanishing-gradient regulariser
    (`rnn_jax.gradflow.flow_regularizer`), added to the loss's gradient (its value in
    ``metrics["flow_regularizer"]``), from the same state gradients as the flow;
    `flow_regularizer_form`: "trajectory" (the paper's equation, differentiated along the
    trajectory into every parameter) or "authors" (their code: squared norms, W_hh only).

    `stateful`: truncated BPTT over parallel streams. The window starts from `state.carry`
    (zeros where ``batch["reset"]`` is True, i.e. when the streams restart) and its final
    carry, with `stop_gradient`, becomes the next `state.carry`.

    `seeds`: independent models trained in one step, `jax.vmap` over a leading seed axis of
    the state (`rnn_jax.seeds.stack_seeds`), the batch and every output.

    `gradient`: the learning rule (`rnn_jax.learning_rules`: "bptt", "truncated:K", ...) by
    which the step assigns credit through time; on measuring steps its gradient is compared
    with full BPTT's (the `alignment` measurement) and the profiles are those it propagates.

    `matmul_precision`: of the float32 matmuls of a step that only trains (None: the backend's
    default); a step that measures is traced as an analysis (`rnn_jax.backend.analysis`:
    `highest`, no cuDNN), its update included, as it comes from the same backward pass.
    """

    loss_fn: LossFn = sequence_cross_entropy
    clipper: optax.GradientTransformation | None = None
    measure_flow: bool = False
    spectrum: int | None = None
    measurements: tuple = ()
    flow_regularizer: float = 0.0
    flow_regularizer_form: str = "trajectory"
    on_nan: str = "stop"
    stateful: bool = False
    seeds: bool = False
    matmul_precision: str | None = None
    gradient: str = "bptt"

    def __post_init__(self):
        learning_rule(self.gradient)  # a registered rule, its argument checked
        check_choice("--on-nan", self.on_nan, ON_NAN)
        check_choice("--flow-regularizer-form", self.flow_regularizer_form, gradflow.REGULARIZER_FORMS)


@reused
def make_train_step(
    graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, options: StepOptions = StepOptions()
):
    """A jitted `step(state, batch) -> (state, StepOutput)` (`state` is donated) that computes
    what `options` asks (`StepOptions`)."""
    clipper = options.clipper or optax.identity()

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, StepOutput]:
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        carries = None
        if options.stateful:
            carries = jax.tree.map(lambda c: jnp.where(batch["reset"], jnp.zeros_like(c), c), state.carry)
        out, grads, flow = _gradients(graphdef, options, state, batch, dropout_key, carries)
        clipped, _ = clipper.update(grads, clipper.init(state.params))
        updates, opt_state = optimizer.update(clipped, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        carry = jax.lax.stop_gradient(out.carries) if options.stateful else state.carry
        updates_on, active = _nan_policy(options.on_nan, jnp.isfinite(out.loss) & jnp.isfinite(grad_norm), state)
        params, opt_state, carry = jax.tree.map(
            lambda new, old: jnp.where(updates_on, new, old),
            (params, opt_state, carry),
            (state.params, state.opt_state, state.carry),
        )
        report = StepOutput(out.loss, grad_norm, optax.tree.norm(clipped), out.metrics, flow, active=active)
        report = report.with_packed()
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, carry=carry, active=active)
        return new_state, report

    step = (
        backend.traced_as_analysis(step) if options.measure_flow else backend.traced_at(options.matmul_precision, step)
    )
    return jax.jit(jax.vmap(step) if options.seeds else step, donate_argnums=0)


def _gradients(graphdef, options: StepOptions, state: TrainState, batch, dropout_key, carries):
    """(loss output, parameter gradient, flow or None) of one step. With the flow measured or the
    regulariser on: one forward and one backward pass serve the gradient, every measurement
    (`measured_by`, from the state gradients) and Pascanu et al.'s Omega (its weighted gradient
    added)."""
    params, rule_key = state.params, jax.random.fold_in(dropout_key, RULE_DRAWS)
    if not (options.measure_flow or options.flow_regularizer):

        def loss(params):
            model = nnx.merge(graphdef, params)
            out = apply(options.loss_fn, model, batch, dropout_key=dropout_key, initial_carries=carries)
            return out.loss, out

        with learning_rule(options.gradient, key=rule_key):
            (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return out, grads, None
    with learning_rule(options.gradient, key=rule_key):  # the rule's gradient, state gradients and regulariser
        out, grads, context = gradflow.measurement_context(
            options.loss_fn,
            graphdef,
            params,
            batch,
            dropout_key,
            initial_carries=carries,
            opt_state=state.opt_state,
            spectrum=options.spectrum,
        )
        if options.flow_regularizer:
            omega, omega_grads = jax.value_and_grad(gradflow.flow_regularizer, argnums=1)(
                graphdef,
                params,
                batch,
                context.state_grads,
                initial_carries=carries,
                form=options.flow_regularizer_form,
            )
            grads = jax.tree.map(lambda g, r: g + options.flow_regularizer * r, grads, omega_grads)
            out = out._replace(metrics={**out.metrics, "flow_regularizer": omega})
    # outside the rule: a measurement that differentiates `ctx.loss` gets full BPTT's gradient
    measured = measured_by(options.spectrum, options.measurements, options.gradient)
    redraw = functools.partial(_redraw, options.gradient, context.loss, params, rule_key)
    context = dataclasses.replace(context, grads=grads, redraw=redraw if stochastic(options.gradient) else None)
    flow = run_measurements(context, measured) if options.measure_flow else None
    return out, grads, flow


# the fold of a step's key whose draws a stochastic learning rule uses: far from the folds that
# give each layer's dropout mask (its depth)
RULE_DRAWS = 2**31 - 1


def _redraw(spec: str, loss, params, key, i: int):
    """The gradient of `loss` by the stochastic rule `spec` from its i-th other draw."""
    with learning_rule(spec, key=jax.random.fold_in(key, i + 1)):
        return jax.grad(loss)(params)


def _nan_policy(on_nan: str, finite, state: TrainState):
    """(whether this step updates, the new ``state.active``): a non-finite loss or gradient
    leaves the state as it was, one NaN never reaches the parameters; "stop" also halts every
    later step (see `StepOptions.on_nan`)."""
    if state.active is None:  # a state made by hand
        return finite, None
    updates_on = finite & state.active
    return updates_on, updates_on if on_nan == "stop" else state.active


def step_number(state: TrainState) -> int:
    """The state's step (stacked seeds all step together)."""
    return int(np.ravel(state.step)[0])


@reused
def make_flow_probe(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn = sequence_cross_entropy,
    *,
    spectrum: int | None = None,
    seeds: bool = False,
    measurements: tuple = (),
):
    """A jitted `probe(params, batch, carries=None) -> (loss, flow)`: the gradient-flow
    measurement alone (with the dynamics as in `make_train_step`), without an update (e.g. of a
    model at initialisation or after training); `seeds`: vmapped over stacked seeds."""

    def probe(params, batch, carries=None):
        out, _, context = gradflow.measurement_context(
            loss_fn, graphdef, params, batch, None, initial_carries=carries, spectrum=spectrum
        )
        return out.loss, run_measurements(context, measured_by(spectrum, measurements))

    probe = backend.traced_as_analysis(probe)
    return jax.jit(jax.vmap(probe) if seeds else probe)


@reused
def make_eval_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn = sequence_cross_entropy,
    *,
    seeds: bool = False,
    matmul_precision: str | None = None,
):
    """A jitted `evaluate(params, batch, carries=None) -> LossOutput` (with the final carries),
    without dropout. Pass the returned carries back in to evaluate a long text window by
    window. `seeds`: vmapped over stacked seeds (params, batch and carries); `matmul_precision`:
    as training's (`StepOptions`)."""

    def evaluate(params, batch, carries=None) -> LossOutput:
        return apply(loss_fn, nnx.merge(graphdef, params), batch, initial_carries=carries)

    evaluate = backend.traced_at(matmul_precision, evaluate)
    return jax.jit(jax.vmap(evaluate) if seeds else evaluate)


def measured_by(spectrum: int | None, measurements: tuple = (), gradient: str = "bptt") -> tuple:
    """The (name, fn) measurements of a measured step: the gradient-flow profiles, the dynamics
    (Lyapunov spectrum and gate statistics) where --spectrum is given, the alignment of the
    learning rule's gradient with full BPTT's where the rule is another (`--gradient`), then
    yours (`rnn_jax.measurements`: the built-ins are registered the same way)."""
    builtins = ("flow_profile", *(("dynamics",) if spectrum is not None else ()))
    builtins += ("alignment",) if gradient != "bptt" else ()
    return (*((name, MEASUREMENTS[name]) for name in builtins), *(m for m in measurements if m[0] not in builtins))
