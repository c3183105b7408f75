"""Ready-made ViewDefinitions shipped with carebase (patients, observations, conditions...)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson

from carebase.errors import NotFound


@functools.cache
def view_names() -> tuple[str, ...]:
    """Names of the library views (file names without `.json`), sorted."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[:-5] for f in files if f.name.endswith(".json")))


def load_view(name: str) -> dict[str, Any]:
    """The library view `name` as ViewDefinition JSON (a fresh copy the caller may change);
    NotFound naming the known views otherwise."""
    if name not in view_names():
        raise NotFound(
            f"No library view named {name!r}; known views: {', '.join(view_names())}",
            location="view",
        )
    data = resources.files(__name__).joinpath(f"{name}.json").read_bytes()
    view: dict[str, Any] = orjson.loads(data)
    return view
