"""The browser visit page: a template and small in-project JavaScript (no CDN, no build)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "visit.html"


@lru_cache(maxsize=1)
def visit_page() -> str:
    """The visit page HTML (the room and join token come in the URL fragment, which the
    browser never sends to a server)."""
    return TEMPLATE.read_text(encoding="utf-8")
