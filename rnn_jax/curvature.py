"""The curvature of the loss, measured inside the jitted step: the `hessian` measurement.

Zucchet & Orvieto (2024) show that gradients vanishing or exploding over time are half of the
story: as a recurrence's memory grows, the loss grows sharp along its recurrent parameters, and
whether an optimiser can follow depends on where the sharp directions lie. `hessian` gives, on
a measured step's batch (``--measure hessian`` or ``hessian:K``):

- the K largest eigenvalues of the Hessian of the loss, over all parameters and over each
  parameter group's own block (`rnn_jax.learning_rules.group_of`: recurrent, input, bias,
  readout, other), by Lanczos with full reorthogonalisation on Hessian-vector products
  (forward-over-reverse, `jax.jvp` of `jax.grad`), each with its residual |H v - lambda v|;
- each top eigenvector's effective number of coordinates, 1 / sum v_i^4 (1: one coordinate; n:
  spread evenly over n), and the share of the overall top eigenvector on each group;
- under Adam, the same top eigenvalue seen through its preconditioner, of D^(1/2) H D^(1/2) with
  D = 1 / (sqrt(v_hat) + eps) (times the step's learning rate: the update's own curvature, 2 at
  the edge of stability), and D's median, 10th and 90th percentiles per group: Adam's effective
  learning rate per unit of learning rate (alone, without the Hessian: ``--measure adam_lr``).

The eigenvalues are the largest (algebraic): the sharpness. A group's block interlaces with the
whole: the overall top eigenvalue is never below a group's.

`sensitivity` (``--measure sensitivity``) is the curse of memory itself: E |d h_t / d theta_rec|^2,
the squared sensitivity of each layer's state (its whole carry) to every recurrent parameter of the model
(the `recurrent` group), by step t, averaged over the batch; forward mode through the scan,
Hutchinson's estimate |J v|^2 over `SENSITIVITY_PROBES` random sign vectors v (E[v v^T] = I:
unbiased for |J|_F^2; exact with one recurrent parameter). For h_t = lambda h_(t-1) + x_t and white
noise it tends to (1 + lambda^2) / (1 - lambda^2)^3 while the gradient flow over lags stays
bounded: the two stories side by side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import custom_batching
from jax.flatten_util import ravel_pytree

from rnn_jax.credit import forward_mode
from rnn_jax.layers import param_values
from rnn_jax.learning_rules import group_of
from rnn_jax.measurements import Context, builtin

LANCZOS_STEPS = 40  # Krylov dimension (at most the block's size: then the block's spectrum is exact)
MEMORY_LIMIT = 2**30  # bytes of Lanczos vectors a measurement may hold (the refusal's limit)
SENSITIVITY_PROBES = 8  # random sign vectors of Hutchinson's estimate
ADAM_B2, ADAM_EPS = 0.999, 1e-8  # optax.adam's defaults, which rnn_jax.optim.make_optimizer uses


def lanczos_top(matvec, start: jax.Array, steps: int, top: int):
    """(eigenvalues (top,), eigenvectors (top, n), residuals (top,)) of the symmetric operator
    `matvec` on the Krylov space of `start` (`steps` dimensions, full reorthogonalisation), the
    largest first."""
    n = start.shape[0]
    basis = jnp.zeros((steps + 1, n), start.dtype).at[0].set(start / jnp.linalg.norm(start))

    def step(j, state):
        basis, alphas, betas = state
        w = matvec(basis[j])
        alpha = jnp.vdot(w, basis[j])
        w = w - basis.T @ (basis @ w)  # against every earlier vector (the later rows are zero), twice:
        w = w - basis.T @ (basis @ w)  # Lanczos loses orthogonality in floating point otherwise
        beta = jnp.linalg.norm(w)
        nonzero = beta > 1e-12 * jnp.maximum(jnp.abs(alpha), 1.0)  # an invariant subspace: stop growing it
        basis = basis.at[j + 1].set(jnp.where(nonzero, w / jnp.where(nonzero, beta, 1.0), 0.0))
        return basis, alphas.at[j].set(alpha), betas.at[j].set(jnp.where(nonzero, beta, 0.0))

    zeros = jnp.zeros(steps, start.dtype)
    basis, alphas, betas = jax.lax.fori_loop(0, steps, step, (basis, zeros, zeros))
    tridiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    values, vectors = _eigh(tridiagonal)
    values, vectors = values[::-1][:top], vectors[:, ::-1][:, :top]
    ritz = (basis[:steps].T @ vectors).T
    residuals = jax.vmap(lambda v, lam: jnp.linalg.norm(matvec(v) - lam * v))(ritz, values)
    return values, ritz, residuals


@custom_batching.custom_vmap
def _eigh(matrix):
    """`jnp.linalg.eigh`, one matrix at a time under `vmap` (stacked seeds): measured 2026-12-06,
    jax 0.10.2 on CPU, the batched LAPACK syevd of the (seeds, 40, 40) tridiagonals inside the
    measured step of a GRU or LRU never returned (no CPU used), while one call per seed in a
    `lax.map` runs (so does a QR or JAX's own bisection in its place)."""
    return tuple(jnp.linalg.eigh(matrix))


@_eigh.def_vmap
def _eigh_one_at_a_time(axis_size, in_batched, matrix):
    if not in_batched[0]:
        return _eigh(matrix), (False, False)
    return jax.lax.map(_eigh, matrix), (True, True)


def parameter_groups(params) -> dict[str, np.ndarray]:
    """{group: boolean mask over the flattened parameters} (`group_of`), groups present only."""
    names = [group_of(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    sizes = [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)]
    owner = np.repeat(np.array(names), sizes)
    return {name: owner == name for name in dict.fromkeys(names)}


def _top_k(argument: str | None, groups: dict[str, np.ndarray]) -> int:
    try:
        top = int(argument) if argument is not None else 1
    except ValueError:
        top = 0
    smallest = min(int(mask.sum()) for mask in groups.values())
    if not 1 <= top <= smallest:
        raise ValueError(
            f"--measure hessian:{argument}: K must be an integer from 1 to the smallest group's parameter count "
            f"({smallest}; groups {', '.join(f'{g} {int(m.sum())}' for g, m in groups.items())})"
        )
    return top


@builtin("hessian", key="measurements")
def hessian(ctx: Context, argument: str | None = None) -> dict:
    """The loss's sharpness on this batch, overall and per parameter group (module docstring);
    `argument`: K, the eigenvalues kept (default 1)."""
    theta, unravel = ravel_pytree(ctx.params)
    groups = parameter_groups(ctx.params)
    top = _top_k(argument, groups)
    steps_all = min(theta.size, LANCZOS_STEPS)
    if (steps_all + 1) * theta.size * theta.dtype.itemsize > MEMORY_LIMIT:
        raise ValueError(
            f"--measure hessian: Lanczos on {theta.size} parameters holds {steps_all + 1} vectors of them, over the "
            f"{MEMORY_LIMIT / 2**30:.0f} GiB limit; measure a smaller model"
        )
    gradient = jax.grad(lambda flat: _autodiff_loss(ctx.loss, unravel(flat)))
    hvp = lambda v: jax.jvp(gradient, (theta,), (v,))[1]  # noqa: E731
    start = jax.random.normal(jax.random.key(0), theta.shape, theta.dtype)  # fixed: the same probe every step
    result, vectors = {}, {}
    for name, mask in {"all": np.ones(theta.size, bool), **groups}.items():
        m = jnp.asarray(mask, theta.dtype)
        steps = min(int(mask.sum()), LANCZOS_STEPS)
        values, vectors[name], residuals = lanczos_top(lambda v, m=m: m * hvp(m * v), m * start, steps, top)
        result[name] = {
            "eigenvalues": values,
            "residuals": residuals,
            "effective_coordinates": 1.0 / jnp.sum(vectors[name] ** 4, axis=1),
        }
    result["all"]["top_vector_share"] = {g: jnp.sum(vectors["all"][0][mask] ** 2) for g, mask in groups.items()}
    adam = _adam_state(ctx.opt_state)
    if adam is not None:
        result["adam"] = _through_adam(adam, hvp, start, steps_all, groups)
    return result


def _autodiff_loss(loss, params):
    with forward_mode():  # JAX's own backward pass, which forward mode (the HVP's jvp) differentiates
        return loss(params)


def _adam_state(opt_state):
    """Adam's moment state inside an optax state (None: another optimiser, or none)."""
    is_adam = lambda s: isinstance(s, optax.ScaleByAdamState)  # noqa: E731
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)]
    return found[0] if found else None


def _through_adam(adam, hvp, start, steps: int, groups) -> dict:
    """The top eigenvalue of D^(1/2) H D^(1/2), D = 1 / (sqrt(v_hat) + eps), and D per group."""
    scale = _adam_scale(adam)
    root = jnp.sqrt(scale)
    values, _, residuals = lanczos_top(lambda v: root * hvp(root * v), start, steps, 1)
    return {
        "preconditioned_top": values[0],
        "preconditioned_residual": residuals[0],
        "scale": _quantiles_by_group(scale, groups),
    }


def _adam_scale(adam) -> jax.Array:
    """D = 1 / (sqrt(v_hat) + eps) over the flattened parameters: Adam's step per unit of learning
    rate and of (bias-corrected) first moment."""
    nu, _ = ravel_pytree(adam.nu)
    v_hat = nu / (1.0 - ADAM_B2 ** jnp.maximum(adam.count, 1))
    return 1.0 / (jnp.sqrt(v_hat) + ADAM_EPS)


def _quantiles_by_group(values, groups) -> dict:
    return {
        g: dict(zip(("p10", "median", "p90"), jnp.quantile(values[mask], jnp.array([0.1, 0.5, 0.9]))))
        for g, mask in groups.items()
    }


@builtin("adam_lr", key="measurements")
def adam_lr(ctx: Context) -> dict | None:
    """Adam's effective learning rate per parameter group, per unit of --lr: the 10th, 50th and
    90th percentiles of 1 / (sqrt(v_hat) + eps) over each group's parameters (Zucchet & Orvieto's
    Figure 4: a dense recurrence's are tiny, a diagonal one's large); None without Adam. Cheap
    (no Hessian-vector products): the part of `hessian` that needs only the optimiser's state."""
    adam = _adam_state(ctx.opt_state)
    return None if adam is None else _quantiles_by_group(_adam_scale(adam), parameter_groups(ctx.params))


@builtin("sensitivity", key="measurements")
def sensitivity(ctx: Context) -> dict | None:
    """E |d h_t / d theta_rec|^2 of each layer by step (``by_step``) and over the steps (``mean``)
    (module docstring); None for a model that does not expose its stack's inputs."""
    if not hasattr(ctx.model, "stack_inputs"):
        return None
    graphdef = nnx.graphdef(ctx.model)
    leaves = jax.tree_util.tree_flatten_with_path(ctx.params)[0]
    recurrent = [group_of(path) == "recurrent" for path, _ in leaves]
    if not any(recurrent):
        raise ValueError("--measure sensitivity: the model has no recurrent parameters (W_hh, the LRU's nu, theta)")

    def probe(key):
        signs = [
            jax.random.rademacher(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
            if chosen
            else jnp.zeros_like(leaf)
            for i, ((_, leaf), chosen) in enumerate(zip(leaves, recurrent))
        ]
        tangent = jax.tree.unflatten(jax.tree.structure(ctx.params), signs)
        with forward_mode():
            _, moved = jax.jvp(lambda p: layer_states(nnx.merge(graphdef, p), ctx.batch), (ctx.params,), (tangent,))
        return [jnp.mean(jnp.sum(d**2, axis=-1), axis=0) for d in moved]

    by_layer = jax.vmap(probe)(jax.random.split(jax.random.key(0), SENSITIVITY_PROBES))
    return {f"layer{i}": {"by_step": s.mean(0), "mean": s.mean()} for i, s in enumerate(by_layer)}


def layer_states(model, batch: dict) -> list:
    """Each recurrent layer's state after every step, flattened (the whole carry: the LSTM's c and
    h, the LRU's real and imaginary parts), (batch, time, state), on `batch` (forward directions,
    from zero carries), each layer reading the outputs of the one below."""
    xs, states = model.rnn.prepare(model.stack_inputs(batch)), []
    for layer in model.rnn.layers:
        params, cell = param_values(layer.forward), layer.cell

        def step(carry, x_t, params=params, cell=cell):
            carry = cell.step(params, carry, x_t)[0]
            return carry, jnp.concatenate([leaf for leaf in jax.tree.leaves(carry)], axis=-1)

        inputs = jnp.swapaxes(layer.recurrence_inputs(xs), 0, 1)
        start = cell.zero_carry((inputs.shape[1],), layer.hidden_size, inputs.dtype)
        states.append(jnp.swapaxes(jax.lax.scan(step, start, inputs)[1], 0, 1))
        xs = layer(xs)[1]
    return states
