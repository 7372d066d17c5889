"""Independent seeds trained together: their train states stacked along a leading axis and
updated by one `jax.vmap`-ed step (`StepOptions(seeds=True)`), each on its own data."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.history import History
from rnn_jax.train import TrainState


def stack_seeds(states: list[TrainState]) -> TrainState:
    """Train states of independent seeds (same model shapes) as one, with a leading seed axis
    (and every seed active)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states).replace(active=jnp.ones(len(states), bool))


def split_seeds(history: History, seeds: int) -> list[History]:
    """The history of a loop over stacked seeds as one history per seed."""
    return [history.seed(i) for i in range(seeds)]
