"""Flax NNX modules: they own the parameters and call the pure functions of
`rnn_jax.cells` and `rnn_jax.recurrence`.

    Recurrent       one layer, optionally bidirectional          (batch, time, in) -> (batch, time, H or 2H)
    RecurrentStack  num_layers of them, dropout between layers (`StackOptions`: how it is built)
    SequenceModel   embedding or dense input -> stack -> linear head W_hy: one output per step
                    (many-to-many) or one per sequence from the final state (many-to-one)

Dropout takes an explicit PRNG key (`dropout_key=`); without one the model is deterministic
(evaluation). No module stores RNG state, so `nnx.split(model)` yields parameters only and a
jitted step is a pure function of (params, batch, key).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import recurrence
from rnn_jax.cells import Carry, Cell
from rnn_jax.choices import check_choice

Array = jax.Array


def _param_dict(params: dict[str, Array]) -> nnx.Dict:
    return nnx.Dict({name: nnx.Param(value) for name, value in params.items()})


def param_values(params: nnx.Dict) -> dict[str, Array]:
    return {name: p[...] for name, p in params.items()}


@dataclasses.dataclass(frozen=True)
class StackOptions:
    """How a recurrent stack is built: `num_layers` layers, `dropout` on the outputs of every
    layer but the last, `bidirectional` layers, each a `ResidualBlock` with `block`, each run
    over time as `scan` says (`rnn_jax.recurrence.ScanOptions`)."""

    num_layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False
    block: bool = False
    scan: recurrence.ScanOptions = recurrence.ScanOptions()

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class Recurrent(nnx.Module):
    """One recurrent layer: `cell` scanned over time as `options` say, forward or bidirectional.

    Parameters are `forward` (and `backward`), dicts laid out as in `rnn_jax.cells`.
    The carry is the cell's carry, or a (forward, backward) pair when bidirectional.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        *,
        bidirectional: bool = False,
        options: recurrence.ScanOptions = recurrence.ScanOptions(),
        rngs: nnx.Rngs,
    ):
        self.cell = cell
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.scan_options = options  # static and hashable: equal layers have equal graphdefs
        self.forward = _param_dict(cell.init(rngs.params(), input_size, hidden_size))
        self.backward = _param_dict(cell.init(rngs.params(), input_size, hidden_size)) if bidirectional else None

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def __call__(
        self,
        xs: Array,
        *,
        initial_carry: Carry | None = None,
        mask: Array | None = None,
        probes: Carry | None = None,
    ) -> tuple[Carry, Array]:
        """xs: (batch, time, input) -> (final carry, ys: (batch, time, output_size)).

        `probes`: gradient-flow probes (see `zero_probes` and `rnn_jax.recurrence.run`).
        """
        if self.bidirectional:
            return recurrence.run_bidirectional(
                self.cell,
                (param_values(self.forward), param_values(self.backward)),
                xs,
                initial_carry=initial_carry,
                mask=mask,
                probes=probes,
                options=self.scan_options,
            )
        return recurrence.run(
            self.cell,
            param_values(self.forward),
            xs,
            initial_carry=initial_carry,
            mask=mask,
            probes=probes,
            options=self.scan_options,
        )

    def recurrence_inputs(self, xs: Array) -> Array:
        """What the recurrence reads of the layer's inputs (for `rnn_jax.diagnostics`): all of them."""
        return xs

    def zero_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        """Zero carry (a (forward, backward) pair when bidirectional), leaves (*batch_shape, hidden),
        in the dtype of the recurrent weights (float32; float64 where a test casts them)."""
        dtype = next(iter(param_values(self.forward).values())).dtype
        carry = self.cell.zero_carry(batch_shape, self.hidden_size, dtype)
        return (carry, carry) if self.bidirectional else carry

    def zero_probes(self, batch: int, time: int) -> Carry:
        """Zero probes for a (batch, time) input: the carry's structure, leaves (batch, time, hidden)."""
        return self.zero_carry((batch, time))


class ResidualBlock(nnx.Module):
    """A recurrence inside a pre-norm residual block, the layer of the linear recurrences'
    papers (the LRU's, Orvieto et al. 2023; minGRU / minLSTM, Feng et al. 2024):

        x <- x + R(LayerNorm(x))                 R: the recurrence, hidden -> hidden
        x <- x + W_2 gelu(W_1 LayerNorm(x))      an MLP of width 2 hidden

    Without the MLP between them, stacked linear recurrences would compose into one linear
    recurrence; the residual path passes the gradient around each layer. It presents the
    interface of `Recurrent` (cell, parameters, carries, probes) for the gradient-flow
    measurements."""

    def __init__(self, recurrent: Recurrent, *, rngs: nnx.Rngs):
        if recurrent.bidirectional:
            raise ValueError("a residual block holds a forward recurrence (no bidirectional blocks)")
        size = recurrent.hidden_size
        self.recurrent = recurrent
        self.norm = nnx.LayerNorm(size, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(size, rngs=rngs)
        self.up = nnx.Linear(size, 2 * size, rngs=rngs)
        self.down = nnx.Linear(2 * size, size, rngs=rngs)

    cell = property(lambda self: self.recurrent.cell)
    forward = property(lambda self: self.recurrent.forward)
    hidden_size = property(lambda self: self.recurrent.hidden_size)
    output_size = property(lambda self: self.recurrent.hidden_size)
    bidirectional = False

    def recurrence_inputs(self, xs: Array) -> Array:
        return self.norm(xs)

    def __call__(self, xs: Array, *, initial_carry=None, mask=None, probes=None) -> tuple[Carry, Array]:
        carry, ys = self.recurrent(self.norm(xs), initial_carry=initial_carry, mask=mask, probes=probes)
        xs = xs + ys
        return carry, xs + self.down(jax.nn.gelu(self.up(self.mlp_norm(xs))))

    def zero_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return self.recurrent.zero_carry(batch_shape)

    def zero_probes(self, batch: int, time: int) -> Carry:
        return self.recurrent.zero_probes(batch, time)


class RecurrentStack(nnx.Module):
    """Recurrent layers as `options` say (`StackOptions`); with `block`, each layer is a
    `ResidualBlock` (the inputs first projected to the hidden size)."""

    def __init__(
        self, cell: Cell, input_size: int, hidden_size: int, options: StackOptions = StackOptions(), *, rngs: nnx.Rngs
    ):
        block = options.block
        self.project = nnx.Linear(input_size, hidden_size, rngs=rngs) if block and input_size != hidden_size else None
        input_size = hidden_size if block else input_size
        layers = []
        for _ in range(options.num_layers):
            layer = Recurrent(
                cell, input_size, hidden_size, bidirectional=options.bidirectional, options=options.scan, rngs=rngs
            )
            layer = ResidualBlock(layer, rngs=rngs) if block else layer
            layers.append(layer)
            input_size = layer.output_size
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(options.dropout)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def __call__(
        self,
        xs: Array,
        *,
        initial_carries: list[Carry] | None = None,
        mask: Array | None = None,
        dropout_key: Array | None = None,
        probes: list[Carry] | None = None,
    ) -> tuple[list[Carry], Array]:
        """xs: (batch, time, input) -> (final carry of each layer, ys of the top layer)."""
        num_layers = len(self.layers)
        initial_carries = [None] * num_layers if initial_carries is None else initial_carries
        probes = [None] * num_layers if probes is None else probes
        if len(initial_carries) != num_layers or len(probes) != num_layers:
            raise ValueError(
                f"got {len(initial_carries)} initial carries and {len(probes)} probes for {num_layers} layers"
            )
        carries = []
        xs = self.prepare(xs)
        for depth, (layer, carry, layer_probes) in enumerate(zip(self.layers, initial_carries, probes)):
            if depth > 0:
                xs = self._dropout(xs, depth, dropout_key)
            carry, xs = layer(xs, initial_carry=carry, mask=mask, probes=layer_probes)
            carries.append(carry)
        return carries, xs

    def zero_probes(self, batch: int, time: int) -> list[Carry]:
        return [layer.zero_probes(batch, time) for layer in self.layers]

    def zero_carries(self, batch: int) -> list[Carry]:
        return [layer.zero_carry((batch,)) for layer in self.layers]

    def prepare(self, xs: Array) -> Array:
        """The stack's inputs as the first layer reads them (projected to the hidden size for blocks)."""
        return xs if self.project is None else self.project(xs)

    def final_output(self, ys: Array, mask: Array | None) -> Array:
        """The top layer's output at each sequence's last real step, (batch, output_size); for a
        bidirectional layer, the backward half at the first real step (where it ends)."""
        time = ys.shape[1]
        last = jnp.full(ys.shape[:1], time - 1) if mask is None else time - 1 - jnp.argmax(mask[:, ::-1], axis=1)
        at = lambda index: jnp.take_along_axis(ys, index[:, None, None], axis=1)[:, 0]  # noqa: E731
        if not self.layers[-1].bidirectional:
            return at(last)
        first = jnp.zeros_like(last) if mask is None else jnp.argmax(mask, axis=1)
        half = self.layers[-1].hidden_size
        return jnp.concatenate([at(last)[:, :half], at(first)[:, half:]], axis=-1)

    def _dropout(self, xs, depth, key):
        if key is None:
            return xs
        return self.dropout(xs, deterministic=False, rngs=jax.random.fold_in(key, depth))


READOUTS = ("steps", "final")


class SequenceModel(nnx.Module):
    """Input layer -> recurrent stack -> linear head.

    The input layer is an embedding of `input_size` (default `hidden_size`) when `vocab_size`
    is given (inputs are integer tokens, (batch, time)), otherwise a plain pass-through of real
    features (batch, time, input_size). `stack`: how the recurrent layers are built.
    The head is `y = W_hy h + b_y` (the note's W_hy), read out
      "steps"  from the top layer's state at every step: (batch, time, output_size);
      "final"  from its final state (many-to-one): (batch, output_size). With a mask, that is
               the state after each sequence's last real step; bidirectional layers give the
               forward pass's final state beside the backward pass's (which has read the
               whole sequence back to its first step).
    """

    def __init__(
        self,
        cell: Cell,
        *,
        hidden_size: int,
        output_size: int,
        vocab_size: int | None = None,
        input_size: int | None = None,
        readout: str = "steps",
        stack: StackOptions = StackOptions(),
        rngs: nnx.Rngs,
    ):
        check_choice("readout", readout, READOUTS)
        self.readout = readout
        if vocab_size is None and input_size is None:
            raise ValueError("give vocab_size (token inputs) or input_size (real-valued inputs)")
        if vocab_size is not None:  # input_size: the embedding's (default the hidden size)
            input_size = input_size or hidden_size
            self.embed = nnx.Embed(vocab_size, input_size, rngs=rngs)
        else:
            self.embed = None
        self.rnn = RecurrentStack(cell, input_size, hidden_size, stack, rngs=rngs)
        self.head = nnx.Linear(self.rnn.output_size, output_size, rngs=rngs)

    def __call__(
        self,
        inputs: Array,
        *,
        mask: Array | None = None,
        initial_carries: list[Carry] | None = None,
        dropout_key: Array | None = None,
        probes: list[Carry] | None = None,
    ) -> tuple[Array, list[Carry]]:
        """inputs: tokens (batch, time) or features (batch, time, input) ->
        (outputs (batch, time, output_size), or (batch, output_size) with the "final" readout;
        final carry of each layer)."""
        xs = self.stack_inputs({"inputs": inputs})
        carries, hs = self.rnn(xs, initial_carries=initial_carries, mask=mask, dropout_key=dropout_key, probes=probes)
        if self.readout == "final":
            hs = self.rnn.final_output(hs, mask)
        return self.head(hs), carries

    def stack_inputs(self, batch: dict) -> Array:
        """What the recurrent stack reads: the embedded tokens or the features, (batch, time, input)."""
        return self.embed(batch["inputs"]) if self.embed is not None else jnp.asarray(batch["inputs"])

    def forward(
        self,
        batch: dict,
        *,
        dropout_key: Array | None = None,
        probes: list[Carry] | None = None,
        initial_carries: list[Carry] | None = None,
    ) -> tuple[Array, list[Carry]]:
        """The model on a batch dict (``inputs``, optional ``mask``): see `rnn_jax.losses.apply`."""
        return self(
            batch["inputs"],
            mask=batch.get("mask"),
            initial_carries=initial_carries,
            dropout_key=dropout_key,
            probes=probes,
        )

    def probes_for(self, batch: dict) -> list[Carry]:
        """Zero gradient-flow probes of every layer for `batch` (``inputs`` (batch, time, ...))."""
        return self.rnn.zero_probes(*jnp.shape(batch["inputs"])[:2])

    def probe_groups(self, probes) -> list[tuple[str, "RecurrentStack", list[Carry]]]:
        """(name prefix, stack, that stack's probes): how `rnn_jax.gradflow` names the layers."""
        return [("", self.rnn, probes)]

    def zero_carries(self, batch: int) -> list[Carry]:
        """Zero initial carries of every layer for `batch` sequences."""
        return self.rnn.zero_carries(batch)
