"""The words of a resource for full-text search: its narrative (`_text`), its text (`_content`).

Text is folded (lower case, accents removed: `index_values.normalize_string`) and split into
words here in Python, so SQLite (FTS5) and PostgreSQL (tsvector) index exactly the same words
and neither database's own tokenizer or dictionaries decide what matches. A word is a run of
letters and digits (`[^\\W_]+`); everything else separates words.

- narrative: the plain text of `text.div` (tags dropped, entities decoded);
- content: every distinct human-readable string of the resource, in document order (a string
  met again is not repeated): `string` and `markdown` elements (names, addresses,
  `Coding.display`, `CodeableConcept.text`, notes, extension strings, ...) and the
  narrative, also inside contained resources. Not: ids, codes, URIs/URLs, base64 data,
  dates, numbers, `meta`, `Reference.reference`, `Identifier.value` and `Coding.version`
  (identifiers, not prose).

Both lists stop at `MAX_WORDS` words (PostgreSQL keeps word positions up to 16,383; a tsvector
holds at most 1 MB, hence `MAX_CHARS`), and words longer than `MAX_WORD_CHARS` are left out.
One difference remains: PostgreSQL keeps the first 256 positions of a word, so in a text
where a word occurs more often, a phrase using its later occurrences matches on SQLite only.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from carebase.fhir.element_nav import Context, child_context, key_table, root_context
from carebase.store.index_values import normalize_string

#: the most words indexed per column (PostgreSQL's largest tsvector position is 16,383)
MAX_WORDS = 16_383
#: the most characters of words indexed per column (keeps a tsvector well under its 1 MB)
MAX_CHARS = 200_000
#: longer "words" (encoded blobs, hashes) are not indexed; query words this long are refused
MAX_WORD_CHARS = 100

WORD_RE = re.compile(r"[^\W_]+")

_TEXT_TYPES = frozenset({"string", "markdown"})
#: elements typed string that hold identifiers or pointers rather than prose
_NOT_PROSE = frozenset({("Identifier", "value"), ("Reference", "reference"), ("Coding", "version")})
_SKIPPED_KEYS = frozenset({"id", "meta"})
# HTML elements that do not break a word: text on both sides of them runs together.
_INLINE = "a abbr acronym b bdo big cite code dfn em font i kbd q s samp small span strike strong"
_INLINE_TAGS = frozenset(f"{_INLINE} sub sup tt u var ins del".split())
_SIMPLE_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'

# What one JSON key holds, for the walk (see `_plan`): text, a narrative, a contained
# resource, or (a dict) the plan of an element's children.
_TEXT, _XHTML, _RESOURCE = "text", "xhtml", "resource"
#: JSON key -> _TEXT, _XHTML, _RESOURCE or the plan of its children
Plan = dict[str, Any]
_plans: dict[Context, Plan] = {}
_plans_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class TextDocument:
    """The folded words of one resource: its narrative and all its text (narrative included)."""

    narrative: tuple[str, ...]
    content: tuple[str, ...]


def words(pieces: list[str]) -> list[str]:
    """The folded words of some texts (in order), words over `MAX_WORD_CHARS` left out."""
    # normalize_string's slow path (Unicode decomposition) only for the pieces that need it
    text = " ".join(p if p.isascii() else normalize_string(p) for p in pieces).lower()
    found = WORD_RE.findall(text)
    if found and max(map(len, found)) > MAX_WORD_CHARS:
        found = [w for w in found if len(w) <= MAX_WORD_CHARS]
    return found


def _capped(found: list[str]) -> tuple[str, ...]:
    if len(found) > MAX_WORDS:
        found = found[:MAX_WORDS]
    if len(found) * MAX_WORD_CHARS <= MAX_CHARS:
        return tuple(found)
    total = 0
    for i, word in enumerate(found):
        total += len(word)
        if total > MAX_CHARS:
            return tuple(found[:i])
    return tuple(found)


class _PlainText(HTMLParser):
    """Collects the character data of XHTML; block-level tags separate words."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _INLINE_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag not in _INLINE_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


@lru_cache(maxsize=1024)
def xhtml_text(div: str) -> str:
    """The plain text of a narrative div: tags dropped, entities decoded."""
    if div.startswith(_SIMPLE_DIV) and div.endswith("</div>"):
        inner = div[len(_SIMPLE_DIV) : -6]
        if "<" not in inner and "&" not in inner:
            return inner
    parser = _PlainText()
    parser.feed(div)
    parser.close()
    return "".join(parser.parts)


def _plan(context: Context) -> Plan:
    """The keys under `context` that can hold text: what each holds (see `Plan`).

    Plans are built once and linked to each other (types refer to each other in cycles:
    Identifier.assigner is a Reference, whose identifier is an Identifier), so the walk never
    looks a context up. They are built under a lock and published complete, so a thread never
    walks a plan another thread is still filling.
    """
    plan = _plans.get(context)
    if plan is None:
        with _plans_lock:
            built: dict[Context, Plan] = {}
            plan = _build_plan(context, built)
            _plans.update(built)
    return plan


def _build_plan(context: Context, built: dict[Context, Plan]) -> Plan:
    plan = _plans.get(context)
    if plan is None:
        plan = built.get(context)
    if plan is not None:
        return plan
    plan = built[context] = {}
    for key, resolved in key_table(context.type_name, context.path).items():
        type_code = resolved.type_code
        if key in _SKIPPED_KEYS or (context.type_name, key) in _NOT_PROSE:
            continue
        if type_code in _TEXT_TYPES:
            plan[key] = _TEXT
        elif type_code == "xhtml":
            plan[key] = _XHTML
        elif type_code == "Resource":
            plan[key] = _RESOURCE
        else:
            child = child_context(context, resolved)
            if child is not None:
                plan[key] = _build_plan(child, built)
    return plan


def _walk(node: dict[str, Any], plan: Plan, out: list[str]) -> None:
    """Append the text under `node` (a JSON object whose keys `plan` describes) to `out`."""
    for key, value in node.items():
        held = plan.get(key)
        if held is None:
            continue
        if held is _TEXT:
            if value.__class__ is str:
                out.append(value)
            elif value.__class__ is list:
                out.extend(v for v in value if v.__class__ is str)
        elif held.__class__ is dict:
            if value.__class__ is dict:
                _walk(value, held, out)
            elif value.__class__ is list:
                for item in value:
                    if item.__class__ is dict:
                        _walk(item, held, out)
        elif held is _XHTML:
            if value.__class__ is str:
                out.append(xhtml_text(value))
        else:  # contained resources
            for item in value if value.__class__ is list else [value]:
                if item.__class__ is dict and item.get("resourceType").__class__ is str:
                    _walk(item, _plan(root_context(item["resourceType"])), out)


def narrative_text(resource: dict[str, Any]) -> str:
    """The plain text of the resource's own narrative (`text.div`), or ""."""
    narrative = resource.get("text")
    if isinstance(narrative, dict) and isinstance(narrative.get("div"), str):
        return xhtml_text(narrative["div"])
    return ""


def text_document(resource: dict[str, Any]) -> TextDocument | None:
    """The words of `resource` to index, or None when it has no text at all."""
    content: list[str] = []
    _walk(resource, _plan(root_context(resource["resourceType"])), content)
    # each distinct string once: a display repeated as its concept's text, or the same
    # service on every line of a claim, would add nothing but index size
    content_words = _capped(words(list(dict.fromkeys(content))))
    if not content_words:
        return None
    narrative = narrative_text(resource)
    return TextDocument(_capped(words([narrative])) if narrative else (), content_words)


def tsvector_literal(found: tuple[str, ...]) -> str:
    """PostgreSQL's text form of a tsvector holding `found` at positions 1, 2, ...

    Words are letters and digits only, so quoting them needs no escapes.
    """
    positions: dict[str, str] = {}
    for at, word in enumerate(found, 1):
        seen = positions.get(word)
        positions[word] = str(at) if seen is None else f"{seen},{at}"
    return " ".join([f"'{word}':{at}" for word, at in positions.items()])
