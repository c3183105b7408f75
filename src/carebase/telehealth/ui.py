"""The browser visit page: a template and small in-project JavaScript (no CDN, no build).

The video panel (`templates/visit_panel.html`, styled by `static/visit-panel.css`, run by
`static/visit.js`) is one piece of markup: the standalone page `/telehealth/visit` wraps it,
and the web app's chart visit page embeds the same panel beside the note and order forms.
Texts to translate are marked `[[...]]` in the templates; the caller passes the translation
(the web app's catalogue), so a guest's page is in the guest's language too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from html import escape
from pathlib import Path

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "visit.html"
PANEL = HERE / "templates" / "visit_panel.html"
#: What a page embedding the panel links: its stylesheet and its script.
PANEL_STYLESHEET = "/telehealth/static/visit-panel.css"
PANEL_SCRIPT = "/telehealth/static/visit.js"


#: The texts the panel's script shows (`t(...)` in `static/visit.js`); the markup's own are
#: marked `[[...]]` in `templates/visit_panel.html`.
SCRIPT_TEXTS: tuple[str, ...] = (
    "This link has no room or join token.",
    "Your link has expired; ask for a new one.",
    "Connection lost; reconnecting in {seconds} s…",
    "The visit has ended.",
    "The clinician could not admit you.",
    "You left the visit.",
    "Waiting: the clinician will let you in shortly.",
    "Waiting for the clinician…",
    "In the visit",
    "Admit",
    "Decline",
    "Unmute",
    "Mute",
    "Camera on",
    "Camera off",
    "Stop sharing",
    "Share screen",
    "good",
    "fair",
    "poor",
    "clinician",
    "patient",
    "guest",
    "interpreter",
)
_MARKED = re.compile(r"\[\[(.+?)\]\]")


@lru_cache(maxsize=2)
def _markup(template: Path) -> str:
    return template.read_text(encoding="utf-8")


def panel_texts() -> set[str]:
    """Every text of the panel and the visit page, markup and script: what a page's
    catalogue translates."""
    marked = _MARKED.findall(_markup(PANEL)) + _MARKED.findall(_markup(TEMPLATE))
    return set(marked) | set(SCRIPT_TEXTS)


def _translated(markup: str, translate: Callable[[str], str]) -> str:
    return _MARKED.sub(lambda m: escape(translate(m.group(1))), markup)


def visit_panel(translate: Callable[[str], str] = str) -> str:
    """The video panel's HTML (static markup: no user data) in the language of `translate`
    (English, the source text, by default); the script's texts travel in its `data-texts`."""
    html = _translated(_markup(PANEL), translate)
    texts = {text: translate(text) for text in SCRIPT_TEXTS if translate(text) != text}
    return html.replace("{texts}", escape(json.dumps(texts, ensure_ascii=False)))


def visit_page(lang: str = "en", translate: Callable[[str], str] = str) -> str:
    """The visit page HTML in the language of `translate`, `lang` its `lang` attribute (the
    room and join token come in the URL fragment, which the browser never sends to a
    server)."""
    page = _translated(_markup(TEMPLATE), translate).replace("{lang}", escape(lang))
    return page.replace("{panel}", visit_panel(translate))
