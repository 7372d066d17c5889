"""The figures' colours: one per line, whichever cells and variants a figure holds."""

import matplotlib.colors

from rnn_jax import plots
from rnn_jax.cells.base import CELLS


def test_every_built_in_cell_has_its_own_colour():
    # the package's own cells only: a test may have registered the README's cell in this process
    built_in = {name for name, cls in CELLS.items() if cls.__module__.startswith("rnn_jax.")}
    assert built_in and built_in <= set(plots.COLORS)  # a new built-in cell gets a fixed colour too
    hexes = [matplotlib.colors.to_hex(c) for c in plots.COLORS.values()]
    assert len(set(hexes)) == len(hexes)


def test_other_names_never_take_a_cell_colour_or_repeat():
    # a figure of the six cells and an ablation's eleven variants, indexed as the plots index lines
    names = list(plots.COLORS) + [f"variant{i}" for i in range(11)]
    hexes = [matplotlib.colors.to_hex(plots._color(name, i)) for i, name in enumerate(names)]
    assert len(set(hexes)) == len(hexes)
