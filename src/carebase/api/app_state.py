"""Reading the app's state (`app.state`) on the request path.

Starlette's `State` keeps its values in a dict and serves them from `__getattr__`, which
Python calls only after the ordinary attribute lookup has failed and raised an
AttributeError: `app.state.tokens` costs about ten times a dict lookup, and the bearer
check and the audit entry of every request read the state. `state_value` reads the dict.
"""

from __future__ import annotations

from typing import Any


def state_value(state: Any, name: str) -> Any:
    """`getattr(state, name, None)`, from a Starlette `State`'s dict when it has one (other
    objects, such as a namespace a test passes, are read as attributes)."""
    values = getattr(state, "_state", None)
    if type(values) is dict:
        return values.get(name)
    return getattr(state, name, None)
