"""The browser visit page: a template and small in-project JavaScript (no CDN, no build).

The video panel (`templates/visit_panel.html`, styled by `static/visit-panel.css`, run by
`static/visit.js`) is one piece of markup: the standalone page `/telehealth/visit` wraps it,
and the web app's chart visit page embeds the same panel beside the note and order forms.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "visit.html"
PANEL = HERE / "templates" / "visit_panel.html"
#: What a page embedding the panel links: its stylesheet and its script.
PANEL_STYLESHEET = "/telehealth/static/visit-panel.css"
PANEL_SCRIPT = "/telehealth/static/visit.js"


@lru_cache(maxsize=1)
def visit_panel() -> str:
    """The video panel's HTML (static markup: no user data)."""
    return PANEL.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def visit_page() -> str:
    """The visit page HTML (the room and join token come in the URL fragment, which the
    browser never sends to a server)."""
    return TEMPLATE.read_text(encoding="utf-8").replace("{panel}", visit_panel())
