"""The cell protocol (`Cell`), the registry of cells by name, initialisers and the matmul
every cell uses. See `rnn_jax.cells` for the protocol and the gate orders."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.choices import check_choice
from rnn_jax.registry import Registry

Array = jax.Array
Params = dict[str, Array]
Carry = Any  # an array h (RNN, GRU) or a NamedTuple of arrays (LSTM: LSTMState(c, h))


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}

INPUT_INITS: dict[str, Callable[..., Array]] = {
    "lecun": jax.nn.initializers.lecun_normal(),
    "glorot": jax.nn.initializers.glorot_uniform(),
}

RECURRENT_INITS = ("orthogonal", "identity", "normal", "ring")


def _spectral_radius(w: Array) -> Array:
    """max |eigenvalue| of a square matrix, computed on the host.

    Non-symmetric eigendecomposition is not available on every backend, and this runs once
    at initialisation, so NumPy does it (also under `jit`).
    """

    def host_radius(m):
        return np.max(np.abs(np.linalg.eigvals(np.asarray(m, np.float64)))).astype(m.dtype)

    return jax.pure_callback(host_radius, jax.ShapeDtypeStruct((), w.dtype), w)


def move_onto_ring(matrix: np.ndarray, inner: float) -> np.ndarray:
    """`matrix` (float64 NumPy) with each eigenvalue l moved to modulus inner + (1 - inner) tanh |l|,
    its phase kept: Zucchet & Orvieto 2024's map of a Gaussian matrix onto the ring [inner, 1)
    (their teachers' and dense students'). Conjugate pairs stay pairs, so the matrix stays real."""
    raw, vectors = np.linalg.eig(matrix)
    moved = (inner + (1.0 - inner) * np.tanh(np.abs(raw))) * np.exp(1j * np.angle(raw))
    return (vectors @ np.diag(moved) @ np.linalg.inv(vectors)).real


def _on_ring(w: Array, inner: float) -> Array:
    """`move_onto_ring` of `w`, on the host, as `_spectral_radius`."""
    host_ring = lambda m: move_onto_ring(np.asarray(m, np.float64), inner).astype(m.dtype)  # noqa: E731
    return jax.pure_callback(host_ring, jax.ShapeDtypeStruct(w.shape, w.dtype), w)


def recurrent_block(key: Array, hidden_size: int, init: str, scale: float, dtype=jnp.float32) -> Array:
    """One (hidden, hidden) recurrent block whose spectral radius is `scale`.

    - ``orthogonal``: a random orthogonal matrix times `scale` (Saxe et al. 2014);
    - ``identity``: `scale * I` (IRNN, Le et al. 2015);
    - ``normal``: i.i.d. Gaussian entries, rescaled so that max |eigenvalue| == `scale`;
    - ``ring``: i.i.d. Gaussian entries N(0, 1/n) whose eigenvalues are moved onto the ring
      [`scale`, 1), |l| -> scale + (1 - scale) tanh |l| with the phase kept (Zucchet & Orvieto
      2024's dense teachers and students: `scale` is their nu_0, the ring's inner radius).
    """
    check_choice("recurrent init", init, RECURRENT_INITS)
    shape = (hidden_size, hidden_size)
    if init == "orthogonal":
        return jax.nn.initializers.orthogonal(scale)(key, shape, dtype)
    if init == "identity":
        return scale * jnp.eye(hidden_size, dtype=dtype)
    w = jax.random.normal(key, shape, dtype) / np.sqrt(hidden_size)
    if init == "ring":
        return _on_ring(w, scale)
    return w * (scale / _spectral_radius(w))


def chrono_bias(key: Array, hidden_size: int, max_length: float, dtype=jnp.float32) -> Array:
    """Chrono initialisation (Tallec & Ollivier 2018): ln U[1, T_max - 1] per unit, the bias of a
    keep gate whose characteristic forgetting times then spread over 1 .. T_max steps."""
    if max_length <= 2:
        raise ValueError(f"chrono initialisation needs T_max > 2 (--chrono-init), got {max_length}")
    return jnp.log(jax.random.uniform(key, (hidden_size,), dtype, 1.0, max_length - 1.0))


def accumulation_dtype(*dtypes) -> jnp.dtype:
    """The dtype that arithmetic on `dtypes` accumulates in: at least float32 (bfloat16 matmul
    inputs give float32 results), float64 under `jax_enable_x64` with float64 operands."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def matmul(a: Array, w: Array) -> Array:
    """`a @ w` computed in `w`'s dtype and accumulated/returned in `accumulation_dtype`.

    With bfloat16 weights this is mixed precision: bf16 matmul inputs, float32 results, so the
    gate arithmetic and the carried state stay in float32.
    """
    return jnp.matmul(a.astype(w.dtype), w, preferred_element_type=accumulation_dtype(a.dtype))


def matmul_transposed(a: Array, w: Array) -> Array:
    """`matmul(a, w.T)`, in the same precision, as one contraction of the last axes of both: no
    transpose of `w` is formed, so a program that also holds a transposed copy of `w` does not
    read that copy here (the compiler merges equal transposes; see `rnn_jax.recurrence`)."""
    contract = (((a.ndim - 1,), (1,)), ((), ()))
    return jax.lax.dot_general(a.astype(w.dtype), w, contract, preferred_element_type=accumulation_dtype(a.dtype))


@dataclasses.dataclass(frozen=True)
class Cell:
    """Options and pure functions shared by all cells. Subclasses define the recurrence.

    Attributes:
      input_init: initialiser of W_xh, ``"lecun"`` (normal, fan-in) or ``"glorot"`` (uniform).
      recurrent_init: initialiser of each gate's (hidden, hidden) block of W_hh:
        ``"orthogonal"``, ``"identity"`` or ``"normal"`` (see `recurrent_block`).
      recurrent_scale: spectral radius of each recurrent block at initialisation (``ring``: the
        inner radius of the ring of its eigenvalues).
    """

    input_init: str = "lecun"
    recurrent_init: str = "orthogonal"
    recurrent_scale: float = 1.0

    name: ClassVar[str]
    num_gates: ClassVar[int]  # G, the gate blocks of the fused weights
    block: ClassVar[bool] = False  # whether models put it inside residual blocks by default (`rnn_jax.layers`)
    carry_names: ClassVar[tuple[str, ...]] = ("h",)  # the carry's leaves, in tree order (NamedTuple fields)
    # whether `gates` reads xw_t and hw_t only through their sum (the RNN, the LSTM): the fused
    # backward pass then keeps one (time, batch, G * hidden) array for both, and one gradient
    sums_projections: ClassVar[bool] = False

    def __post_init__(self):
        check_choice("input init", self.input_init, INPUT_INITS)
        check_choice("recurrent init", self.recurrent_init, RECURRENT_INITS)
        if self.recurrent_init == "ring" and not 0 <= self.recurrent_scale < 1:
            raise ValueError(
                f"recurrent init ring: the recurrent scale is the ring's inner radius nu_0, which must be in [0, 1); "
                f"got {self.recurrent_scale} (e.g. --recurrent-scale 0.9)"
            )

    # -- parameters ---------------------------------------------------------------------

    def init(self, key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        """Fresh parameters for inputs of size `input_size` and a state of size `hidden_size`."""
        self._check_sizes(input_size, hidden_size)
        gates = self.num_gates
        key_x, key_h = jax.random.split(key)
        w_xh = INPUT_INITS[self.input_init](key_x, (input_size, gates * hidden_size), dtype)
        w_hh = jnp.concatenate(
            [
                recurrent_block(k, hidden_size, self.recurrent_init, self.recurrent_scale, dtype)
                for k in jax.random.split(key_h, gates)
            ],
            axis=1,
        )
        return {"W_xh": w_xh, "W_hh": w_hh, "b": self.initial_bias(hidden_size, dtype)}

    def _check_sizes(self, input_size, hidden_size) -> None:
        for what, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"{self.name}: {what} must be a positive integer, got {size!r}")

    def initial_bias(self, hidden_size: int, dtype) -> Array:
        return jnp.zeros((self.num_gates * hidden_size,), dtype)

    def sizes(self, params: Params) -> tuple[int, int]:
        """(input_size, hidden_size) of a parameter dict."""
        return params["W_xh"].shape[0], params["W_hh"].shape[0]

    # -- the recurrence -----------------------------------------------------------------

    def project_inputs(self, params: Params, xs: Array) -> Array:
        """`xs W_xh + b` for any leading dims: (..., input) -> (..., G * hidden)."""
        return matmul(xs, params["W_xh"]) + params["b"]

    def step(self, params: Params, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
        """One time step from the raw input x_t: (..., input) -> (new carry, h_t)."""
        return self.recur(params, carry, self.project_inputs(params, x_t))

    def recur(self, params: Params, carry: Carry, xw_t: Array) -> tuple[Carry, Array]:
        """One time step from the input projection xw_t: (..., G * hidden) -> (new carry, h_t)."""
        return self.gates(params, carry, xw_t, matmul(self.hidden(carry), params["W_hh"]))

    def gates(self, params: Params, carry: Carry, xw_t: Array, hw_t: Array) -> tuple[Carry, Array]:
        """The step's arithmetic after both projections, xw_t and hw_t = h_{t-1} W_hh, each
        (..., G * hidden). Reads the parameters other than W_xh, b and W_hh (peepholes, ...)."""
        raise NotImplementedError

    def output(self, params: Params, carry: Carry, xw_t: Array) -> Array:
        """The step's output h_t from its new carry (and the input projection, for cells whose
        output also reads the input, as the LRU's skip): the hidden state, by default."""
        return self.hidden(carry)

    def gate_values(self, params: Params, carry: Carry, xw_t: Array) -> dict[str, Array]:
        """The step's gates by name, each (..., hidden) in [0, 1] (for `rnn_jax.diagnostics`); a cell
        without gates has none."""
        return {}

    def keep_gate(self, gates: dict[str, Array]) -> Array | None:
        """The weight of the old state in the cell's additive update (LSTM f, GRU 1 - z), from
        `gate_values`; its time constant is -1 / ln(keep) steps. None: no additive update."""
        return None

    @property
    def fused_recurrence(self) -> bool:
        """Whether h_{t-1} enters the step only through hw_t = h_{t-1} W_hh (see `gates`)."""
        return True

    @property
    def linear(self) -> bool:
        """Whether the step is linear in the carry with input-only coefficients (`rnn_jax.cells.linear`):
        such a recurrence can also run as a parallel scan."""
        return False

    def zero_carry(self, batch_shape: tuple[int, ...], hidden_size: int, dtype=jnp.float32) -> Carry:
        return jnp.zeros((*batch_shape, hidden_size), dtype)

    def state_size(self, hidden_size: int) -> int:
        """Numbers in one sequence's carry: the dimension of the state, so the count of its
        Lyapunov exponents (an LSTM's (c, h): 2 * hidden_size)."""
        return sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(lambda: self.zero_carry((), hidden_size))))

    def state_units(self, hidden_size: int) -> np.ndarray:
        """The unit each number of one sequence's flattened carry belongs to: the granularity at
        which SnAp-1 keeps influence (`rnn_jax.rtrl.snap_layout`); each number its own by
        default, a complex unit's real and imaginary parts one (the LRU)."""
        return np.arange(self.state_size(hidden_size))

    @staticmethod
    def hidden(carry: Carry) -> Array:
        """The hidden state h_t inside a carry."""
        return carry


CELLS = Registry("cell", "subclass rnn_jax.cells.Cell and decorate it with @register_cell in a file given to --imports")
# Make a cell class selectable by its `name` everywhere a cell is chosen by name (`make_cell`,
# every experiment's --cell / --cells); a cell defined outside the package registers the same way.
register_cell = CELLS.register


def cell_fields(cls: type[Cell]) -> dict:
    """{option: type} of a cell class: its dataclass fields (not its ClassVars)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def make_cell(name: str, **options) -> Cell:
    """A cell by name (``"rnn"``, ``"lstm"``, ``"gru"``) with its options, e.g.
    ``make_cell("gru", reset_after=False)`` or ``make_cell("rnn", activation="relu",
    recurrent_init="identity")``."""
    cls = CELLS[CELLS.check(name)]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"cell {name!r} has no option(s) {unknown}; its options are {sorted(fields)}")
    return cls(**options)
