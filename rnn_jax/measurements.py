"""Your own measurement of the gradient flow, computed inside the jitted training step on the
steps that measure it: a function of (model, batch, state gradients) -> a pytree of arrays.

`state_grads` holds, for every layer of the model's recurrent stack (a list; see
`SequenceModel.probes_for`), the gradient of the training loss L with respect to that layer's
carry at every step: a carry-shaped pytree of (batch, time, hidden) arrays (the LSTM's
``LSTMState(c, h)``), through every path, from the same forward and backward pass that gives
the parameter gradient. The result is recorded beside the flow profiles (``flow["measurements"]
[name]`` of each measured step in the History and in results.json).

    @register_measurement
    def last_step_norm(model, batch, state_grads):  # ||dL/dh_T|| of each layer, averaged over the batch
        return [jnp.linalg.norm(jax.tree.leaves(g)[-1][:, -1], axis=-1).mean() for g in state_grads]

Every experiment then takes it by name: ``--imports my_measure.py --measure last_step_norm``.
"""

from __future__ import annotations

from collections.abc import Callable

from rnn_jax.registry import Registry

Measurement = Callable  # (model, batch, state_grads) -> pytree of arrays

MEASUREMENTS = Registry(
    "measurement",
    "decorate a function (model, batch, state_grads) -> arrays with @register_measurement in a file given to "
    "--imports (README: Your own measurement)",
)
# Make `fn` selectable by its name (``--measure NAME``): `@register_measurement` (its __name__)
# or `@register_measurement("name")`.
register_measurement = MEASUREMENTS.register
