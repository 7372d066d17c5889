"""The loss Hessian at the optimum, where the student is the teacher (Zucchet & Orvieto 2024,
Figure 4 and their `figures/hessian_analysis.ipynb`): the dense linear RNN, the complex diagonal
recurrence and the LRU, each set exactly to one 4-unit teacher with |lambda| near 0.99, the
full Hessian by `jax.hessian` in float64. At the optimum the residuals vanish, so the Hessian is
the Gauss-Newton matrix J^T J (times 2 / N for our mean squared error). Their argument: the
dense and diagonal Hessians are alike in size, but the diagonal one's top directions sit on few
coordinates (one eigenvalue's (Re, Im), a conjugate pair), which Adam's per-coordinate scaling
absorbs, while the dense one's spread over the whole recurrent matrix.

The teacher, as their notebook builds it by hand: two conjugate pairs lambda = r e^(i phi), r
uniform on [0.99, 0.993), phi uniform on [0, 2 pi); A = Re(U^-1 diag(lambda) U) with U complex
Gaussian (std 1/2 per part), conjugate rows paired; B ~ N(0, 1), C ~ N(0, 1/4), D ~ N(0, 1); one
batch of 64 sequences of T = 300 N(0, 1) inputs. The students, with the teacher's
eigendecomposition A = V diag(lambda) V^-1 (state z = V^-1 h):

    rnn       h_t = A h_(t-1) + B x_t,            y_t = C h_t + D x_t               25 parameters
    diagonal  z_t = lambda z_(t-1) + B' x_t,      y_t = Re(C' z_t) + D x_t           25 (lambda as Re, Im)
    lru       z_t = lambda z_(t-1) + gamma B'' x_t, lambda = exp(-e^nu + i e^theta)  29 (and gamma)

with B' = V^-1 B, C' = C V, gamma = sqrt(1 - |lambda|^2), B'' = B' / gamma. Where we differ:
our loss is the mean squared error (theirs half of it: eigenvalues twice theirs); we draw with
NumPy's generator, so our teacher is not theirs draw for draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

GROUPS = {  # parameter name -> the group of `rnn_jax.learning_rules.group_of`'s naming
    "A": "recurrent", "lam_re": "recurrent", "lam_im": "recurrent", "nu_log": "recurrent", "theta_log": "recurrent",
    "B": "input", "B_re": "input", "B_im": "input", "gamma_log": "input",
    "C": "readout", "C_re": "readout", "C_im": "readout", "D": "readout",
}  # fmt: skip


def hand_teacher(seed: int = 0, radius: tuple[float, float] = (0.99, 0.993)) -> tuple[np.ndarray, ...]:
    """(A, B, C, D) of the 4-unit teacher (module docstring), float64."""
    rng = np.random.default_rng(seed)
    pair = rng.uniform(*radius, 2) * np.exp(2j * np.pi * rng.uniform(size=2))
    u = (rng.normal(size=(2, 4)) + 1j * rng.normal(size=(2, 4))) / 2 / np.sqrt(2)
    u = np.concatenate([u, u.conj()])
    a = (np.linalg.inv(u) @ np.diag(np.concatenate([pair, pair.conj()])) @ u).real
    return a, rng.normal(size=(4, 1)), rng.normal(size=(1, 4)) / 2, rng.normal(size=(1, 1))


def students_at_optimum(a, b, c, d) -> dict[str, dict[str, np.ndarray]]:
    """{student: its parameters equal to the teacher (A, B, C, D)}."""
    lam, vectors = np.linalg.eig(a)
    b_diag, c_diag = np.linalg.inv(vectors) @ b[:, 0], c[0] @ vectors
    gamma = np.sqrt(1 - np.abs(lam) ** 2)
    return {
        "rnn": {"A": a, "B": b[:, 0], "C": c[0], "D": d[0]},
        "diagonal": {
            "lam_re": lam.real, "lam_im": lam.imag, "B_re": b_diag.real, "B_im": b_diag.imag,
            "C_re": c_diag.real, "C_im": c_diag.imag, "D": d[0],
        },
        "lru": {
            "nu_log": np.log(-np.log(np.abs(lam))), "theta_log": np.log(np.mod(np.angle(lam), 2 * np.pi)),
            "gamma_log": np.log(gamma), "B_re": (b_diag / gamma).real, "B_im": (b_diag / gamma).imag,
            "C_re": c_diag.real, "C_im": c_diag.imag, "D": d[0],
        },
    }  # fmt: skip


def outputs(student: str, p: dict, xs: jax.Array) -> jax.Array:
    """y of `student` with parameters `p` on inputs xs (batch, time), (batch, time)."""
    if student == "rnn":
        step = lambda h, x: (h @ p["A"].T + x[:, None] * p["B"],) * 2  # noqa: E731
        _, hs = jax.lax.scan(step, jnp.zeros((xs.shape[0], p["A"].shape[0]), xs.dtype), xs.T)
        return (hs @ p["C"]).T + p["D"] * xs
    if student == "diagonal":
        lam, b = p["lam_re"] + 1j * p["lam_im"], p["B_re"] + 1j * p["B_im"]
    else:
        lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))
        b = jnp.exp(p["gamma_log"]) * (p["B_re"] + 1j * p["B_im"])
    step = lambda z, x: (lam * z + x[:, None] * b,) * 2  # noqa: E731
    _, zs = jax.lax.scan(step, jnp.zeros((xs.shape[0], lam.shape[0]), lam.dtype), xs.T)
    return (zs @ (p["C_re"] + 1j * p["C_im"])).real.T + p["D"] * xs


def analyse(student: str, params: dict, xs: jax.Array, targets: jax.Array, top: int = 10) -> dict:
    """The full Hessian of the mean squared error at `params` (float64): its eigenvalues (largest
    first), the top `top` eigenvectors' effective numbers of coordinates (1 / sum v_i^4) and
    shares on each group, each group's own top eigenvalue, and the loss there."""
    theta, unravel = ravel_pytree({k: jnp.asarray(v, jnp.float64) for k, v in params.items()})
    loss = lambda t: jnp.mean((outputs(student, unravel(t), xs) - targets) ** 2)  # noqa: E731
    hessian = np.asarray(jax.jit(jax.hessian(loss))(theta))
    values, vectors = np.linalg.eigh(hessian)
    values, vectors = values[::-1], vectors[:, ::-1]
    owner = np.concatenate([np.full(np.size(params[k]), GROUPS[k]) for k in sorted(params)])  # ravel_pytree's order
    groups = list(dict.fromkeys(GROUPS[k] for k in sorted(params)))
    return {
        "loss": float(loss(theta)),
        "parameters": int(theta.size),
        "eigenvalues": values.tolist(),
        "effective_coordinates": (1.0 / np.sum(vectors[:, :top] ** 4, axis=0)).tolist(),
        "group_share": {g: np.sum(vectors[owner == g, :top] ** 2, axis=0).tolist() for g in groups},
        "group_top": {g: float(np.linalg.eigvalsh(hessian[np.ix_(owner == g, owner == g)])[-1]) for g in groups},
        "group_sizes": {g: int(np.sum(owner == g)) for g in groups},
    }


def hessians_at_optimum(seed: int = 0, batch: int = 64, length: int = 300) -> dict:
    """`analyse` of each student set to the teacher `hand_teacher(seed)` on one batch."""
    with jax.enable_x64(True):
        a, b, c, d = hand_teacher(seed)
        students = students_at_optimum(a, b, c, d)
        xs = jnp.asarray(np.random.default_rng(seed + 1).normal(size=(batch, length)))
        targets = outputs("rnn", students["rnn"], xs)  # the dense student is the teacher itself
        found = {name: analyse(name, p, xs, targets) for name, p in students.items()}
        power = float(jnp.mean(targets**2))
    teacher = {"eigenvalues_abs": np.abs(np.linalg.eigvals(a)).tolist(), "mean_square_output": power}
    return {"teacher": teacher, **found}
