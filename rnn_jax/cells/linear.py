"""Recurrences linear in h_{t-1}, their gates computed from x_t alone: minGRU and minLSTM (Feng et
al. 2024, "Were RNNs All We Needed?") and the LRU (Orvieto et al. 2023, "Resurrecting Recurrent
Neural Networks for Long Sequences").

Each step is carry_t = a_t * carry_{t-1} + b_t with (a_t, b_t) functions of x_t only
(`coefficients`), so a sequence runs either step by step (`jax.lax.scan`) or as a parallel prefix
scan over the pairs (a_t, b_t) (`jax.lax.associative_scan`, `rnn_jax.recurrence.run(...,
scan="parallel")`): the composition (a, b) then (a', b') is (a' a, a' b + b'). The state-to-state
Jacobian is diagonal (a_t), so its Lyapunov exponents are time averages of ln |a_t|.

The parallel form multiplies the a_t directly (no division by cumulative products), so it needs
none of the log-space rewriting of the minGRU paper's cumulative-sum form to stay finite in
float32: a product that underflows is an exact zero, a state that is forgotten.

Parameters: W_xh (input, G * hidden) and b, the input projection of the G blocks, as for every
cell (`rnn_jax.cells`), and no W_hh.

    minGRU  (G=2): [z, h~]      z = sigmoid(.), h~ linear
    minLSTM (G=3): [f, i, h~]   f, i = sigmoid(.), h~ linear
    LRU     (G=2): [Re B x, Im B x] (no bias), and nu_log, theta_log, gamma_log, C_re, C_im, D
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells.base import INPUT_INITS, Array, Carry, Cell, Params, matmul, register_cell


@dataclasses.dataclass(frozen=True)
class LinearCell(Cell):
    """A cell whose step is carry_t = a_t * carry_{t-1} + b_t, with (a_t, b_t) = `coefficients`
    of the input projection xw_t alone; `multiply` is the product of the multipliers a (and of a
    multiplier with a carry): elementwise, unless a subclass says otherwise (the LRU: complex)."""

    block: ClassVar[bool] = True  # used inside residual blocks by default (see `rnn_jax.layers`)

    def init(self, key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        self._check_sizes(input_size, hidden_size)
        w_xh = INPUT_INITS[self.input_init](key, (input_size, self.num_gates * hidden_size), dtype)
        return {"W_xh": w_xh, "b": self.initial_bias(hidden_size, dtype)}

    def sizes(self, params: Params) -> tuple[int, int]:
        return params["W_xh"].shape[0], params["W_xh"].shape[1] // self.num_gates

    @property
    def fused_recurrence(self) -> bool:
        return False

    @property
    def linear(self) -> bool:
        return True

    def coefficients(self, params: Params, xw_t: Array) -> tuple[Carry, Carry]:
        """(a_t, b_t) of carry_t = a_t * carry_{t-1} + b_t, from xw_t: (..., G * hidden)."""
        raise NotImplementedError

    def multiply(self, a, x):
        return jax.tree.map(jnp.multiply, a, x)

    def identity(self, a):
        """The multiplier that leaves a carry unchanged, shaped like `a` (for padded steps)."""
        return jax.tree.map(jnp.ones_like, a)

    def recur(self, params: Params, carry: Carry, xw_t: Array) -> tuple[Carry, Array]:
        a, b = self.coefficients(params, xw_t)
        carry = jax.tree.map(jnp.add, self.multiply(a, carry), b)
        return carry, self.output(params, carry, xw_t)

    def gates(self, params, carry, xw_t, hw_t):
        raise ValueError(f"{self.name} has no recurrent matmul; use recur()")


@register_cell
@dataclasses.dataclass(frozen=True)
class MinGRU(LinearCell):
    """minGRU (Feng et al. 2024), in this codebase's GRU convention (z weighs the new value):

        z_t  = sigmoid(W_xz x_t + b_z)
        h~_t = W_xh~ x_t + b_h~
        h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

    Carry: h, (..., hidden).
    """

    name: ClassVar[str] = "mingru"
    num_gates: ClassVar[int] = 2

    def coefficients(self, params, xw_t):
        x_z, candidate = jnp.split(xw_t, 2, axis=-1)
        z = jax.nn.sigmoid(x_z)
        return 1.0 - z, z * candidate

    def gate_values(self, params, carry, xw_t):
        return {"z": jax.nn.sigmoid(jnp.split(xw_t, 2, axis=-1)[0])}

    def keep_gate(self, gates):
        return 1.0 - gates["z"]


@register_cell
@dataclasses.dataclass(frozen=True)
class MinLSTM(LinearCell):
    """minLSTM (Feng et al. 2024): forget and input gates normalised to sum to one,

        f_t, i_t = sigmoid(W_xf x_t + b_f), sigmoid(W_xi x_t + b_i)
        h~_t     = W_xh~ x_t + b_h~
        h_t      = f_t / (f_t + i_t) * h_{t-1} + i_t / (f_t + i_t) * h~_t

    Carry: h, (..., hidden). `forget_bias` initialises b_f (as the LSTM's).
    """

    forget_bias: float = 1.0

    name: ClassVar[str] = "minlstm"
    num_gates: ClassVar[int] = 3

    def initial_bias(self, hidden_size, dtype):
        return jnp.zeros((3, hidden_size), dtype).at[0].set(self.forget_bias).reshape(-1)

    def _normalised(self, xw_t):
        x_f, x_i, candidate = jnp.split(xw_t, 3, axis=-1)
        f, i = jax.nn.sigmoid(x_f), jax.nn.sigmoid(x_i)
        return f / (f + i), i / (f + i), candidate

    def coefficients(self, params, xw_t):
        f, i, candidate = self._normalised(xw_t)
        return f, i * candidate

    def gate_values(self, params, carry, xw_t):
        f, i, _ = self._normalised(xw_t)
        return {"f": f, "i": i}

    def keep_gate(self, gates):
        return gates["f"]


@register_cell
@dataclasses.dataclass(frozen=True)
class LRU(LinearCell):
    """The Linear Recurrent Unit (Orvieto et al. 2023): a complex diagonal recurrence,

        lambda = exp(-exp(nu_log) + i exp(theta_log))            (|lambda| < 1 by construction)
        h_t    = lambda * h_{t-1} + gamma * (B x_t),  gamma = exp(gamma_log), at init sqrt(1 - |lambda|^2)
        y_t    = Re(C h_t) + D * x_t

    initialised with |lambda| uniform on the ring [r_min, r_max] and arg lambda uniform in
    [0, max_phase] (the paper's defaults for long-range tasks: 0.9, 0.999, 2 pi). The students of
    Zucchet & Orvieto (2024)'s ablation are options: `parametrisation` "direct" learns
    (Re lambda, Im lambda) themselves (`lam_re`, `lam_im`; nothing keeps |lambda| < 1), and
    `normalise=False` drops gamma (gamma = 1). The state has
    `hidden` complex units and the output `hidden` real ones. D is diagonal, as the paper's, when
    the input size is the hidden size (inside the residual block of `rnn_jax.layers`, which
    projects the inputs first); otherwise a dense (input, hidden) matrix, y_t = Re(C h_t) + x_t D,
    so that a plain LRU reads a narrow input through B and D (Zucchet & Orvieto's students).
    Carry: [Re h; Im h], (..., 2 hidden): one real array, so that ||dL/dh_t|| is the complex
    state's gradient norm.
    """

    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi
    parametrisation: str = "exp"  # "exp": lambda = exp(-exp(nu_log) + i exp(theta_log)); "direct": lam_re + i lam_im
    normalise: bool = True  # gamma = exp(gamma_log) on the input, sqrt(1 - |lambda|^2) at init; False: gamma = 1

    name: ClassVar[str] = "lru"
    num_gates: ClassVar[int] = 2  # [Re B x, Im B x]

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.r_min < self.r_max <= 1:
            raise ValueError(f"LRU: need 0 <= r_min < r_max <= 1, got {self.r_min}, {self.r_max}")
        if self.parametrisation not in ("exp", "direct"):
            raise ValueError(f"LRU: parametrisation {self.parametrisation!r}: expected exp or direct")

    def init(self, key, input_size, hidden_size, dtype=jnp.float32):
        self._check_sizes(input_size, hidden_size)
        keys = jax.random.split(key, 7)
        u1, u2 = (jax.random.uniform(k, (hidden_size,), dtype) for k in keys[:2])
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2))
        theta_log = jnp.log(self.max_phase * u2)
        magnitude = jnp.exp(-jnp.exp(nu_log))
        normal = lambda k, shape, fan: jax.random.normal(k, shape, dtype) / jnp.sqrt(fan)  # noqa: E731
        diagonal = input_size == hidden_size
        if self.parametrisation == "exp":
            recurrence = {"nu_log": nu_log, "theta_log": theta_log}
        else:
            phase = jnp.exp(theta_log)
            recurrence = {"lam_re": magnitude * jnp.cos(phase), "lam_im": magnitude * jnp.sin(phase)}
        gamma = {"gamma_log": jnp.log(jnp.sqrt(1 - magnitude**2))} if self.normalise else {}
        return {
            "W_xh": normal(keys[2], (input_size, 2 * hidden_size), 2 * input_size),  # [B_re^T, B_im^T]
            **recurrence,
            **gamma,
            "C_re": normal(keys[3], (hidden_size, hidden_size), hidden_size),
            "C_im": normal(keys[4], (hidden_size, hidden_size), hidden_size),
            "D": normal(keys[5], (hidden_size,), 1)
            if diagonal
            else normal(keys[5], (input_size, hidden_size), input_size),
        }

    def sizes(self, params):
        return params["W_xh"].shape[0], params["C_re"].shape[0]

    def project_inputs(self, params, xs):
        """[Re B x, Im B x, x]: the input itself rides along for the skip D * x of the readout."""
        projection = matmul(xs, params["W_xh"])
        return jnp.concatenate([projection, xs.astype(projection.dtype)], axis=-1)

    def lam(self, params) -> tuple[Array, Array]:
        """(Re lambda, Im lambda)."""
        if self.parametrisation == "direct":
            return params["lam_re"], params["lam_im"]
        magnitude, phase = jnp.exp(-jnp.exp(params["nu_log"])), jnp.exp(params["theta_log"])
        return magnitude * jnp.cos(phase), magnitude * jnp.sin(phase)

    def coefficients(self, params, xw_t):
        hidden = params["C_re"].shape[0]
        lam = jnp.concatenate(self.lam(params))
        inputs = xw_t[..., : 2 * hidden]
        if self.normalise:
            inputs = jnp.tile(jnp.exp(params["gamma_log"]), 2) * inputs
        return jnp.broadcast_to(lam, xw_t.shape[:-1] + (2 * hidden,)), inputs

    def multiply(self, a, x):
        """The complex product a * x, each [re; im] on the last axis."""
        a_re, a_im = jnp.split(a, 2, axis=-1)
        x_re, x_im = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([a_re * x_re - a_im * x_im, a_re * x_im + a_im * x_re], axis=-1)

    def identity(self, a):
        ones, zeros = jnp.ones_like(a[..., : a.shape[-1] // 2]), jnp.zeros_like(a[..., : a.shape[-1] // 2])
        return jnp.concatenate([ones, zeros], axis=-1)

    def output(self, params, carry, xw_t):
        hidden = params["C_re"].shape[0]
        h_re, h_im = jnp.split(carry, 2, axis=-1)
        xs, d = xw_t[..., 2 * hidden :], params["D"]
        skip = d * xs if d.ndim == 1 else matmul(xs, d)
        return matmul(h_re, params["C_re"].T) - matmul(h_im, params["C_im"].T) + skip

    def gate_values(self, params, carry, xw_t):
        magnitude = jnp.hypot(*self.lam(params))
        return {"|lambda|": jnp.broadcast_to(magnitude, carry.shape[:-1] + magnitude.shape)}

    def keep_gate(self, gates):
        return gates["|lambda|"]

    def zero_carry(self, batch_shape, hidden_size, dtype=jnp.float32):
        return jnp.zeros((*batch_shape, 2 * hidden_size), dtype)

    def state_units(self, hidden_size):
        return np.tile(np.arange(hidden_size), 2)  # [re, im]: unit i is numbers i and hidden + i
