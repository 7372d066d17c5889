"""What a researcher brings, chosen by name: one registry shape for cells, tasks, measurements
(and the learning rules to come).

Every registry registers the same way, as a decorator with or without a name:

    @register_cell                      # a class: its `name`; a function: its __name__
    @register_task("parity")            # an explicit name
    @register_measurement               # a function: its __name__

and is checked the same way: an unknown name is one error that lists what is registered (and
says how to add one when nothing is), with a suggestion for a near miss. Registering a name
again with the same definition (a file imported twice) replaces it; another definition under a
taken name is an error.
"""

from __future__ import annotations

from collections.abc import Callable

from rnn_jax.choices import check_choice


class Registry(dict):
    """{name: what is registered} of one kind (a dict, so `name in R`, `R[name]`, `list(R)`)."""

    def __init__(self, kind: str, how_to_add: str):
        super().__init__()
        self.kind, self.how_to_add = kind, how_to_add

    def register(self, target=None, /, *, name: str | None = None):
        """`@register`, `@register("name")` or `register(obj, name=...)`: `obj` under `name`, else
        its `name` attribute (a cell class's), else its __name__. Returns `obj` (a decorator)."""
        if isinstance(target, str):  # @register("name")
            return lambda obj: self.register(obj, name=target)
        if target is None:
            return lambda obj: self.register(obj, name=name)
        name = name or getattr(target, "name", None) or getattr(target, "__name__", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a name: give one, @register_{self.kind}('name')")
        taken = self.get(name)
        if taken is not None and _definition(taken) != _definition(target):
            raise ValueError(f"{self.kind} name {name!r} is taken by {_definition(taken)}; choose another")
        self[name] = target
        return target

    def check(self, name: str) -> str:
        """`name` if registered, else a ValueError listing what is (or how to add one)."""
        return check_choice(self.kind, name, self, how_to_add=self.how_to_add)

    def listing(self) -> str:
        return f"{self.kind}s: {', '.join(self) or 'none'}"


def _definition(obj: Callable) -> str:
    """What `obj` is called where it is defined (a file imported again gives the same)."""
    return getattr(obj, "__qualname__", repr(obj))
