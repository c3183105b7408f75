"""Checks the XHTML of a narrative (`text.div`) against the FHIR R4 narrative rules.

R4 (Narrative, invariants txt-1/txt-2): the div is well-formed XML whose root is a `div` in the
XHTML namespace; it may use only the basic HTML 4 formatting elements (text, lists, tables,
font styles, `a`, `img`) with their ordinary attributes and inline `style`; no scripts,
forms, frames, objects, `head`/`body`, base/link, processing instructions or DTDs; and it has
some non-whitespace content. Bodies are stored byte-for-byte, so a bad narrative is rejected
with a message instead of being cleaned up.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.entities import name2codepoint

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_SIMPLE_PREFIX = f'<div xmlns="{XHTML_NS}">'
#: HTML 4 chapters 7-11 and 15 plus a and img (and map/area for image maps)
_ALLOWED = """div span p br hr h1 h2 h3 h4 h5 h6 address bdo em strong dfn code samp kbd var cite
    abbr acronym blockquote q sub sup pre ins del ul ol li dl dt dd dir menu table caption
    thead tfoot tbody colgroup col tr th td tt i b big small strike s u font basefont center
    a img map area"""
ALLOWED_ELEMENTS = frozenset(_ALLOWED.split())
#: named explicitly so the message can say why (everything else unknown is "not allowed")
_FORBIDDEN = """script noscript style object embed applet iframe frame frameset form input button
    select option optgroup textarea label fieldset legend base link meta head body html
    title param"""
FORBIDDEN_ELEMENTS = frozenset(_FORBIDDEN.split())
_URL_ATTRIBUTES = frozenset(("href", "src", "cite", "longdesc", "usemap", "background"))
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
_ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset(("amp", "lt", "gt", "quot", "apos"))
_cache: dict[str, str | None] = {}
_CACHE_LIMIT = 4096


# Characters XML 1.0 forbids anywhere (expat lets some through from a Python string).
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def check_xhtml(value: object) -> str | None:
    """None if `value` is an acceptable narrative div, else why not (a message tail)."""
    if type(value) is not str:
        return "must be a JSON string holding XHTML"
    # Fast path: the common generated narrative `<div xmlns=...>plain text</div>`.
    if value.startswith(_SIMPLE_PREFIX) and value.endswith("</div>"):
        inner = value[len(_SIMPLE_PREFIX) : -6]
        plain = "<" not in inner and "&" not in inner and ">" not in inner
        if plain and _NOT_XML_CHAR.search(inner) is None:
            if inner.strip():
                return None
            return "has no text content (a narrative needs some non-whitespace content)"
    if value in _cache:
        return _cache[value]
    result = _check(value)
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[value] = result
    return result


def _named_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _XML_ENTITIES or name not in name2codepoint:
        return match.group(0)  # XML knows the five; unknown ones fail parsing with a message
    return f"&#{name2codepoint[name]};"


def _check(value: str) -> str | None:
    head = value[:2048].lower()
    if "<!doctype" in head or "<!entity" in value.lower():
        return "must not contain a DOCTYPE or entity declarations"
    if "<?" in value:
        return "must not contain processing instructions (<?...?>)"
    bad = _NOT_XML_CHAR.search(value)
    if bad:
        return f"contains U+{ord(bad.group()):04X}, a character XML does not allow"
    text = _ENTITY_RE.sub(_named_entity, value) if "&" in value else value
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return f"is not well-formed XHTML ({exc})"
    if root.tag != f"{{{XHTML_NS}}}div":
        return f"must have a root <div> in the XHTML namespace ({XHTML_NS})"
    has_content = False
    for element in root.iter():
        problem = _element_problem(element)
        if problem:
            return problem
        if not has_content and (
            (element.text and element.text.strip())
            or (element.tail and element.tail.strip() and element is not root)
            or element.tag == f"{{{XHTML_NS}}}img"
        ):
            has_content = True
    if not has_content:
        return "has no text content (a narrative needs some non-whitespace content)"
    return None


def _element_problem(element: ET.Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str):  # comments are not kept by fromstring; be safe anyway
        return None
    if not tag.startswith(f"{{{XHTML_NS}}}"):
        return f"contains the element <{tag}> outside the XHTML namespace"
    name = tag[len(XHTML_NS) + 2 :]
    if name in FORBIDDEN_ELEMENTS:
        return (
            f"must not contain <{name}> "
            "(scripts, styles, forms, frames and objects are not allowed)"
        )
    if name not in ALLOWED_ELEMENTS:
        return f"must not contain <{name}> (only basic HTML formatting elements are allowed)"
    for attribute, attr_value in element.attrib.items():
        if attribute.startswith("{"):
            if attribute.startswith(f"{{{_XML_NS}}}"):
                continue  # xml:lang, xml:space
            return f"must not contain the attribute {attribute} on <{name}>"
        lowered = attribute.lower()
        if lowered.startswith("on"):
            return f"must not contain the event attribute {attribute} on <{name}>"
        if lowered in _URL_ATTRIBUTES:
            target = "".join(attr_value.split()).lower()
            if target.startswith(_SCRIPT_SCHEMES):
                return f"must not contain a script URL in {attribute} on <{name}>"
    return None
