"""One check for every option chosen by name (a cell, a scan, an optimizer, a flag's value):
a value not among those allowed is a ValueError that names the option and lists the choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def check_choice(kind: str, value, allowed: Iterable, *, how_to_add: str = "") -> str:
    """`value` if it is one of `allowed`, else ``unknown <kind> <value>; choose one of: ... (did
    you mean ...?)`` (none allowed: that none is registered, and `how_to_add` one)."""
    allowed = list(allowed)
    if value in allowed:
        return value
    if not allowed:
        raise ValueError(f"unknown {kind} {value!r}: none is registered" + (f"; {how_to_add}" if how_to_add else ""))
    close = difflib.get_close_matches(str(value), list(map(str, allowed)), n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(map(str, allowed))}{guess}")
