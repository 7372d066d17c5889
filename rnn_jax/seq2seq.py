"""Conditional generation: a recurrent decoder whose initial state comes from an encoder.

    Decoder   embedding of the previous token -> recurrent stack -> linear head, optionally
              reading an additive-attention context over a memory (Bahdanau et al., 2015)
    Seq2Seq   many-to-many, encoder-decoder (Sutskever et al., 2014; Cho et al., 2014): a
              recurrent encoder over the source; its final carries start the decoder
    Captioner one-to-many: a feature vector (an image) -> the decoder's initial state (Vinyals
              et al., 2015; Karpathy & Fei-Fei, 2015)

Attention, as in Bahdanau et al.: at step t the top decoder layer's previous state s_(t-1)
queries the encoder outputs e_j,
    a_tj = softmax_j(v^T tanh(W_q s_(t-1) + W_k e_j))    (padding masked out),
    c_t  = sum_j a_tj e_j,
the context c_t enters the first decoder layer beside the embedding of y_(t-1), and the head
reads the output layer o_t = tanh(W_o [s_t; c_t]) of hidden size (Bahdanau et al.'s deep
output, tanh for their maxout): the vocabulary projection, the costliest matmul, stays at the
hidden size instead of doubling. Without attention the decoder is the plain scanned stack (input projection
of all steps hoisted out of the scan); with it, every step needs the previous state first, so
all layers step together in one scan and only the embedding half of the first layer's
projection is hoisted.

Both models take ``(inputs, decoder_inputs, ...)`` and return ``(logits, decoder carries)``,
and read a batch (``inputs``, optional ``source_mask``, ``decoder_inputs`` = <bos> y_1 ...
y_(T-1), ``targets`` = y_1 ... <eos>, ``mask`` over the targets) with `forward`, so one loss
(`rnn_jax.losses.sequence_cross_entropy`, teacher forcing) and the decoding of `rnn_jax.decode`
serve both. Gradient-flow probes are ``{"encoder": [...], "decoder": [...]}`` (see
`probes_for` / `probe_groups`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax.cells import Carry, Cell, accumulation_dtype, matmul
from rnn_jax.fused import finish_step
from rnn_jax.layers import RecurrentStack, StackOptions, param_values
from rnn_jax.recurrence import cast_params, time_major

Array = jax.Array


class AdditiveAttention(nnx.Module):
    """Bahdanau attention: scores v^T tanh(W_q query + W_k memory_j)."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int, *, rngs: nnx.Rngs):
        self.query = nnx.Linear(query_size, attention_size, use_bias=False, rngs=rngs)
        self.key = nnx.Linear(memory_size, attention_size, rngs=rngs)
        self.score = nnx.Linear(attention_size, 1, use_bias=False, rngs=rngs)

    def __call__(self, query: Array, keys: Array, memory: Array, memory_mask: Array | None) -> tuple[Array, Array]:
        """query (batch, Q), keys = self.key(memory) (batch, S, A), memory (batch, S, M) ->
        (context (batch, M), weights (batch, S))."""
        scores = self.score(jnp.tanh(keys + self.query(query)[:, None, :]))[..., 0]
        if memory_mask is not None:
            scores = jnp.where(memory_mask, scores, -1e30)
        dtype = accumulation_dtype(scores.dtype, memory.dtype)
        weights = jax.nn.softmax(scores.astype(dtype), axis=-1)
        return jnp.einsum("bs,bsm->bm", weights, memory.astype(dtype)), weights


class Decoder(nnx.Module):
    """Token decoder; `memory_size` > 0 adds attention over a memory of that width."""

    def __init__(
        self,
        cell: Cell,
        *,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        memory_size: int = 0,
        attention_size: int | None = None,
        stack: StackOptions = StackOptions(),
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
        self.embed_size = embed_size
        self.rnn = RecurrentStack(cell, embed_size + memory_size, hidden_size, stack, rngs=rngs)
        self.attention = (
            AdditiveAttention(hidden_size, memory_size, attention_size or hidden_size, rngs=rngs)
            if memory_size
            else None
        )
        self.output = nnx.Linear(hidden_size + memory_size, hidden_size, rngs=rngs) if memory_size else None
        self.head = nnx.Linear(hidden_size, vocab_size, rngs=rngs)

    def __call__(
        self,
        tokens: Array,
        *,
        initial_carries: list[Carry],
        mask: Array | None = None,
        memory: Array | None = None,
        memory_mask: Array | None = None,
        dropout_key: Array | None = None,
        probes: list[Carry] | None = None,
    ) -> tuple[Array, list[Carry]]:
        """tokens (batch, time) -> (logits (batch, time, vocab), final carries)."""
        xs = self.embed(tokens)
        if self.attention is None:
            carries, hs = self.rnn(
                xs, initial_carries=initial_carries, mask=mask, dropout_key=dropout_key, probes=probes
            )
            return self.head(hs), carries
        carries, outputs, _ = self._attend(xs, initial_carries, mask, memory, memory_mask, dropout_key, probes)
        return self.head(jnp.tanh(self.output(outputs))), carries

    def attention_weights(
        self, tokens: Array, *, initial_carries: list[Carry], memory: Array, memory_mask: Array | None = None
    ) -> Array:
        """(batch, time, source) attention weights of teacher-forced decoding (for plots)."""
        return self._attend(self.embed(tokens), initial_carries, None, memory, memory_mask, None, None)[2]

    def _attend(self, xs, initial_carries, mask, memory, memory_mask, dropout_key, probes):
        """All layers stepped together in one scan, each step attending first. Returns (final
        carries, outputs [h_t; c_t] (batch, time, hidden + memory), weights (batch, time, source))."""
        layers = list(self.rnn.layers)
        cell = layers[0].cell
        params = [param_values(layer.forward) for layer in layers]
        compute_dtype = layers[0].scan_options.compute_dtype
        if compute_dtype is not None:  # as in `recurrence.run`: bf16 matmuls, float32 carries
            params = [cast_params(p, compute_dtype) for p in params]
        first = params[0]
        # the embedding half of the first layer's input projection, for all steps at once
        xw = cell.project_inputs({**first, "W_xh": first["W_xh"][: self.embed_size]}, xs)
        w_context = first["W_xh"][self.embed_size :]
        keys = self.attention.key(memory)
        batch, time = xs.shape[:2]
        mask = jnp.ones((batch, time), bool) if mask is None else mask
        probes = [None] * len(layers) if probes is None else probes

        def step(carries, inputs):
            t, xw_t, mask_t, probes_t = inputs
            context, weights = self.attention(cell.hidden(carries[-1]), keys, memory, memory_mask)
            x = xw_t + matmul(context, w_context)
            new_carries, h = [], None
            for depth, (p, carry, probe) in enumerate(zip(params, carries, probes_t)):
                if depth > 0:  # the input of a layer above is the (dropped-out) state of the one below
                    x = cell.project_inputs(p, self._dropout(h, depth, t, dropout_key))
                new, h = finish_step(cell, carry, *cell.recur(p, carry, x), mask_t, probe)
                new_carries.append(new)
            return new_carries, (jnp.concatenate([h, context.astype(h.dtype)], -1), weights)

        carries, (outputs, weights) = jax.lax.scan(
            step, list(initial_carries), (jnp.arange(time), time_major(xw), mask.T, time_major(probes))
        )
        return carries, jnp.swapaxes(outputs, 0, 1), jnp.swapaxes(weights, 0, 1)

    def _dropout(self, h, depth, t, key):
        if key is None:
            return h
        return self.rnn.dropout(h, deterministic=False, rngs=jax.random.fold_in(jax.random.fold_in(key, depth), t))


class Seq2Seq(nnx.Module):
    """Encoder-decoder over token sequences (same cell, hidden size and depth on both sides,
    so the encoder's final carry of layer l starts decoder layer l)."""

    def __init__(
        self,
        cell: Cell,
        *,
        source_vocab: int,
        target_vocab: int,
        embed_size: int,
        hidden_size: int,
        attention: bool = False,
        stack: StackOptions = StackOptions(),
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Embed(source_vocab, embed_size, rngs=rngs)
        self.encoder = RecurrentStack(cell, embed_size, hidden_size, stack, rngs=rngs)
        self.decoder = Decoder(
            cell,
            vocab_size=target_vocab,
            embed_size=embed_size,
            hidden_size=hidden_size,
            memory_size=hidden_size if attention else 0,
            stack=stack,
            rngs=rngs,
        )

    def encode(
        self,
        inputs: Array,
        *,
        mask: Array | None = None,
        dropout_key: Array | None = None,
        probes: list[Carry] | None = None,
    ) -> tuple[list[Carry], dict]:
        """source tokens (batch, source_time) -> (decoder initial carries, memory kwargs)."""
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, 1)
        carries, outputs = self.encoder(self.embed(inputs), mask=mask, dropout_key=key, probes=probes)
        memory = {"memory": outputs, "memory_mask": mask} if self.decoder.attention is not None else {}
        return carries, memory

    def __call__(
        self,
        inputs: Array,
        decoder_inputs: Array,
        *,
        mask: Array | None = None,
        source_mask: Array | None = None,
        dropout_key: Array | None = None,
        probes: dict | None = None,
    ) -> tuple[Array, list[Carry]]:
        """(source (batch, S), decoder inputs (batch, T): <bos> y_1 ... ) -> (logits (batch, T, vocab),
        decoder carries). `mask` is the target mask, `source_mask` the source's."""
        probes = probes or {}
        carries, memory = self.encode(inputs, mask=source_mask, dropout_key=dropout_key, probes=probes.get("encoder"))
        return self.decoder(
            decoder_inputs,
            initial_carries=carries,
            mask=mask,
            dropout_key=dropout_key,
            probes=probes.get("decoder"),
            **memory,
        )

    def forward(self, batch: dict, *, dropout_key=None, probes=None, initial_carries=None):
        """The model on a batch dict (see the module docstring and `rnn_jax.losses.apply`)."""
        return self(
            batch["inputs"],
            batch["decoder_inputs"],
            mask=batch.get("mask"),
            source_mask=batch.get("source_mask"),
            dropout_key=dropout_key,
            probes=probes,
        )

    def probes_for(self, batch: dict) -> dict:
        return {
            "encoder": self.encoder.zero_probes(*jnp.shape(batch["inputs"])[:2]),
            "decoder": self.decoder.rnn.zero_probes(*jnp.shape(batch["decoder_inputs"])[:2]),
        }

    def probe_groups(self, probes) -> list:
        return [("encoder/", self.encoder, probes["encoder"]), ("decoder/", self.decoder.rnn, probes["decoder"])]


class Captioner(nnx.Module):
    """A feature vector sets the decoder's initial state: h_0 = tanh(W_img x + b) in every
    layer (and c_0 likewise for the LSTM); then the decoder generates the caption."""

    def __init__(
        self,
        cell: Cell,
        *,
        feature_size: int,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        stack: StackOptions = StackOptions(),
        rngs: nnx.Rngs,
    ):
        self.decoder = Decoder(
            cell, vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size, stack=stack, rngs=rngs
        )
        leaves = len(cell.carry_names)
        self.image = nnx.Linear(feature_size, stack.num_layers * leaves * hidden_size, rngs=rngs)

    def encode(self, inputs: Array, **_) -> tuple[list[Carry], dict]:
        """features (batch, F) -> (each decoder layer's initial carry, no memory)."""
        states = jnp.tanh(self.image(inputs))
        zero = self.decoder.rnn.zero_carries(inputs.shape[0])
        parts = iter(jnp.split(states, len(zero) * len(jax.tree.leaves(zero[0])), axis=-1))
        return [jax.tree.map(lambda _: next(parts), carry) for carry in zero], {}

    def __call__(
        self,
        inputs: Array,
        decoder_inputs: Array,
        *,
        mask: Array | None = None,
        source_mask=None,
        dropout_key: Array | None = None,
        probes: dict | None = None,
    ):
        carries, _ = self.encode(inputs)
        return self.decoder(
            decoder_inputs,
            initial_carries=carries,
            mask=mask,
            dropout_key=dropout_key,
            probes=(probes or {}).get("decoder"),
        )

    def forward(self, batch: dict, *, dropout_key=None, probes=None, initial_carries=None):
        """The model on a batch dict: ``inputs`` (features), ``decoder_inputs``, ``mask``."""
        return self(
            batch["inputs"], batch["decoder_inputs"], mask=batch.get("mask"), dropout_key=dropout_key, probes=probes
        )

    def probes_for(self, batch: dict) -> dict:
        return {"decoder": self.decoder.rnn.zero_probes(*jnp.shape(batch["decoder_inputs"])[:2])}

    def probe_groups(self, probes) -> list:
        return [("decoder/", self.decoder.rnn, probes["decoder"])]
