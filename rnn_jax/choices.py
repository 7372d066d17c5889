"""One check for every option chosen by name (a cell, a scan, an optimizer, a flag's value):
a value not among those allowed is a ValueError that names the option and lists the choices."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(kind: str, value, allowed: Iterable) -> str:
    """`value` if it is one of `allowed`, else ``unknown <kind> <value>; choose one of: ...``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(map(str, allowed))}")
    return value
