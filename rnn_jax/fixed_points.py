"""What a trained network computes: its fixed points and slow points under a constant input
(Sussillo & Barak 2013, "Opening the black box"; Golub & Sussillo 2018, FixedPointFinder).

With the input held at x*, the recurrence is a map F(h) = carry_{t+1}(carry_t = h, x_t = x*)
of the whole state (every layer's carry, the LSTM's (c, h) included, flattened to one vector).
A fixed point is h* = F(h*); a slow point one where F barely moves h. Both are found by
minimising the speed

    q(h) = 1/2 ||F(h) - h||^2

from many candidate states sampled on the network's own trajectories (plus Gaussian noise),
all candidates at once, with Adam (optax), then polished by Newton steps on F(h) - h = 0
(each kept only where it lowers q). Then, as FixedPointFinder does: candidates whose q is not
below `slow_tolerance` are dropped; duplicates (every coordinate within `unique_tolerance`)
are merged, keeping the lowest q; points further from the candidates' centroid than
`outlier_scale` times the candidates' mean distance to it are dropped as outliers. Each point
is "fixed" (q < `fixed_tolerance`) or "slow", and carries the Jacobian dF/dh there and its
eigenvalues: stable when every |eigenvalue| < 1, otherwise a saddle (or a repeller) with as
many unstable modes as eigenvalues outside the unit circle. An eigenvalue near 1 is a slow
direction: a memory the network keeps for about -1 / ln|eigenvalue| steps.

Conventions follow FixedPointFinder (its q, Adam on all candidates jointly, its uniqueness and
outlier rules); its defaults tol_q = 1e-12 and tol_unique = 1e-3 are `fixed_tolerance` (for
float64; in float32 the smallest q reachable is ~1e-14 * size, hence 1e-10 by default) and
`unique_tolerance`. The Newton polish is ours: it takes a float32 point to q ~ 1e-14.

Everything here is traced as an analysis (`rnn_jax.backend.analysis`): float32 matmuls at
`highest` precision on every backend (with TF32 the smallest q reachable is ~1e-7..1e-6, with
bfloat16 passes ~1e-5..1e-4: the fixed/slow thresholds would mean nothing) and the recurrence on
its scan, never cuDNN (the Jacobians vmap).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from rnn_jax import backend

Array = jax.Array
StepMap = Callable[[Array], Array]  # states (n, d) -> next states (n, d)


@dataclasses.dataclass(frozen=True)
class FinderOptions:
    """How fixed points are searched for (see the module docstring)."""

    candidates: int = 512  # initial states, sampled from the trajectories
    noise: float = 0.05  # standard deviation of the Gaussian noise added to each candidate
    steps: int = 3000  # Adam steps on q, all candidates together
    lr: float = 0.05  # Adam's learning rate, decayed tenfold over the steps
    newton_steps: int = 10  # Newton polish after Adam (each accepted only where it lowers q)
    fixed_tolerance: float = 1e-10  # q below this: a fixed point
    slow_tolerance: float = 1e-6  # q below this (and not fixed): a slow point; above: dropped
    unique_tolerance: float = 1e-3  # points with every coordinate this close are one point
    outlier_scale: float = 10.0  # dropped beyond this many mean candidate distances from their centroid
    seed: int = 0

    def __post_init__(self):
        if self.candidates < 1 or self.steps < 0 or self.newton_steps < 0:
            raise ValueError("candidates must be >= 1, steps and newton_steps >= 0")
        if not 0 < self.fixed_tolerance <= self.slow_tolerance:
            raise ValueError(
                f"need 0 < fixed_tolerance <= slow_tolerance, got {self.fixed_tolerance}, {self.slow_tolerance}"
            )


@dataclasses.dataclass
class FixedPoints:
    """The points found, sorted by q: `states` (n, d), `q` (n,), `kind` ("fixed" | "slow"),
    `jacobians` (n, d, d) of the step map there, `eigenvalues` (n, d), largest modulus first."""

    states: np.ndarray
    q: np.ndarray
    kind: list[str]
    jacobians: np.ndarray
    eigenvalues: np.ndarray

    @property
    def unstable_modes(self) -> np.ndarray:
        return np.sum(np.abs(self.eigenvalues) > 1.0, axis=1)

    @property
    def stable(self) -> np.ndarray:
        return self.unstable_modes == 0

    def summary(self) -> dict:
        """The counts a table reports, and every point (`to_json`): stable points, saddles by
        their number of unstable modes, slow points, the slowest stable mode."""
        points = self.to_json()
        fixed = [p for p in points if p["kind"] == "fixed"]
        return {
            "stable": sum(p["stable"] for p in fixed),
            "unstable_by_modes": dict(collections.Counter(str(p["unstable_modes"]) for p in fixed if not p["stable"])),
            "slow": len(points) - len(fixed),
            "slowest_stable_mode": max((p["slowest_mode"] for p in fixed if p["stable"]), default=None),
            "points": points,
        }

    def to_json(self) -> list[dict]:
        return [
            {
                "state": state.tolist(),
                "q": float(q),
                "kind": kind,
                "stable": bool(stable),
                "unstable_modes": int(modes),
                "slowest_mode": float(np.abs(eigenvalues[0])),
                "eigenvalues": [[float(e.real), float(e.imag)] for e in eigenvalues],
            }
            for state, q, kind, stable, modes, eigenvalues in zip(
                self.states, self.q, self.kind, self.stable, self.unstable_modes, self.eigenvalues
            )
        ]


def model_step(model, x: Array) -> StepMap:
    """F of a `SequenceModel` under the constant input `x` (features (input,), or a token id):
    flattened states (n, d), every layer's carry, to the states one step later."""
    x = jnp.asarray(x)
    return lambda states: _advance(model, states, jnp.broadcast_to(x, (states.shape[0], *x.shape)))


def _advance(model, states: Array, x_t: Array) -> Array:
    """One step of the model's recurrent stack from flattened states (n, d) on inputs x_t (n, ...)."""
    _, unflatten = ravel_pytree(model.zero_carries(1))
    carries = jax.tree.map(lambda leaf: leaf[:, 0], jax.vmap(unflatten)(states))  # a batch of n
    new, _ = model.rnn(model.stack_inputs({"inputs": x_t[:, None]}), initial_carries=carries)
    return flatten_carries(new)


def flatten_carries(carries) -> Array:
    """Every layer's carry (leaves (n, ...)) as one flat state per row, (n, d)."""
    return jax.vmap(lambda c: ravel_pytree(c)[0])(jax.tree.map(lambda leaf: leaf[:, None], carries))


@backend.traced_as_analysis
def trajectories(model, inputs: Array) -> Array:
    """The model's flattened state (every layer's carry) after each step of `inputs`, (batch,
    time, d), from zero carries: where the candidates are sampled."""
    inputs = jnp.asarray(inputs)

    def advance(states, x_t):
        states = _advance(model, states, x_t)
        return states, states

    start = flatten_carries(model.zero_carries(inputs.shape[0]))
    _, states = jax.lax.scan(advance, start, jnp.swapaxes(inputs, 0, 1))
    return jnp.swapaxes(states, 0, 1)


def sample_candidates(states: Array, options: FinderOptions) -> Array:
    """`options.candidates` states drawn from `states` (..., d) with replacement, plus noise."""
    flat = jnp.reshape(states, (-1, states.shape[-1]))
    key_rows, key_noise = jax.random.split(jax.random.key(options.seed))
    rows = jax.random.randint(key_rows, (options.candidates,), 0, flat.shape[0])
    return flat[rows] + options.noise * jax.random.normal(key_noise, (options.candidates, flat.shape[1]), flat.dtype)


def speed(step: StepMap, states: Array) -> Array:
    """q(h) = 1/2 ||F(h) - h||^2 of each state, (n,)."""
    return 0.5 * jnp.sum(jnp.square(step(states) - states), axis=-1)


def minimise(step: StepMap, candidates: Array, options: FinderOptions) -> tuple[Array, Array]:
    """Adam on the mean q of all candidates (jointly, as FixedPointFinder's 'joint' method: each
    candidate's gradient is its own q's), then the Newton polish. Returns (states, q)."""
    schedule = optax.exponential_decay(options.lr, max(options.steps, 1), 0.1)
    optimizer = optax.adam(schedule)

    def adam_step(carry, _):
        states, opt_state = carry
        grads = jax.grad(lambda s: jnp.mean(speed(step, s)) * s.shape[0])(states)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(states, updates), opt_state), None

    def newton_step(states, _):
        residual = step(states) - states
        jacobians = jacobian(step, states)
        eye = jnp.eye(states.shape[-1], dtype=states.dtype)
        delta = jnp.linalg.solve(jacobians - eye, -residual[..., None])[..., 0]
        proposed = states + jnp.where(jnp.isfinite(delta), delta, 0.0)
        better = speed(step, proposed) < speed(step, states)
        return jnp.where(better[:, None], proposed, states), None

    @jax.jit
    def run(candidates):
        (states, _), _ = jax.lax.scan(adam_step, (candidates, optimizer.init(candidates)), None, options.steps)
        states, _ = jax.lax.scan(newton_step, states, None, options.newton_steps)
        return states, speed(step, states)

    return run(candidates)


def jacobian(step: StepMap, states: Array) -> Array:
    """dF/dh at each state, (n, d, d), one state at a time through the batched map (reverse mode:
    the recurrence's hand-written backward pass is a custom VJP, which forward mode cannot enter)."""
    return jax.vmap(jax.jacrev(lambda s: step(s[None])[0]))(states)


@backend.traced_as_analysis
def find_fixed_points(step: StepMap, candidates: Array, options: FinderOptions = FinderOptions()) -> FixedPoints:
    """The fixed and slow points of `step` (states (n, d) -> (n, d)) reached from `candidates`
    (n, d), with their Jacobians and eigenvalues; see the module docstring."""
    states, q = minimise(step, jnp.asarray(candidates), options)
    states, q = np.asarray(states, np.float64), np.asarray(q, np.float64)
    keep = np.isfinite(q) & (q < options.slow_tolerance)
    keep &= _not_outliers(states, np.asarray(candidates, np.float64), options.outlier_scale)
    states, q = states[keep], q[keep]
    states, q = _unique(states, q, options.unique_tolerance)
    dtype = jnp.asarray(candidates).dtype
    jacobians = np.asarray(jacobian(step, jnp.asarray(states, dtype)), np.float64).reshape(
        len(q), *states.shape[1:] * 2
    )
    eigenvalues = np.linalg.eigvals(jacobians) if len(q) else np.zeros((0, states.shape[1]), complex)
    eigenvalues = np.take_along_axis(eigenvalues, np.argsort(-np.abs(eigenvalues), axis=1), axis=1)
    kind = ["fixed" if value < options.fixed_tolerance else "slow" for value in q]
    return FixedPoints(states, q, kind, jacobians, eigenvalues)


def _not_outliers(states: np.ndarray, candidates: np.ndarray, scale: float) -> np.ndarray:
    """FixedPointFinder's distance rule: within `scale` mean candidate distances of their centroid."""
    centroid = candidates.mean(0)
    typical = np.mean(np.linalg.norm(candidates - centroid, axis=1)) or 1.0
    return np.linalg.norm(states - centroid, axis=1) / typical < scale


def _unique(states: np.ndarray, q: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per group of points whose every coordinate lies within `tolerance`: the lowest q."""
    order = np.argsort(q)
    kept: list[int] = []
    for i in order:
        if all(np.max(np.abs(states[i] - states[j])) >= tolerance for j in kept):
            kept.append(i)
    return states[kept], q[kept]
