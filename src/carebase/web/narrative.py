"""Clinical text for display: attachments decoded, narrative XHTML sanitised with nh3.

Narrative (`Resource.text.div`) and HTML attachments come from whoever wrote the resource:
they are cleaned to a small set of formatting elements (no script, style, event handlers,
forms, or links other than http(s) and mailto) before they reach a page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import nh3
from markupsafe import Markup, escape

#: Elements kept in narrative (the XHTML a FHIR narrative uses for formatting).
ALLOWED_TAGS = {
    "a",
    "b",
    "br",
    "caption",
    "code",
    "div",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
}
#: The most characters of a note shown on the chart (the document has it all).
MAX_TEXT = 20_000


def sanitise(html: str) -> Markup:
    """`html` reduced to harmless formatting, ready to put in a page."""
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(cleaned)


def narrative(resource: dict[str, Any]) -> Markup:
    """The resource's narrative, sanitised (empty when it has none)."""
    div = (resource.get("text") or {}).get("div")
    return sanitise(div) if isinstance(div, str) and div else Markup("")


def attachment_text(attachment: dict[str, Any]) -> Markup:
    """A text attachment's content for a page: plain text escaped (line breaks kept by the
    stylesheet), HTML sanitised; other content types are named, not shown."""
    content_type = str(attachment.get("contentType") or "text/plain").split(";")[0].strip()
    data = attachment.get("data")
    if not isinstance(data, str):
        return Markup("")
    try:
        text = base64.b64decode(data, validate=True).decode("utf-8")[:MAX_TEXT]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return Markup("")
    if content_type == "text/plain":
        return escape(text)
    if content_type in ("text/html", "application/xhtml+xml"):
        return sanitise(text)
    return Markup("")


def document_text(document: dict[str, Any]) -> Markup:
    """The readable text of a DocumentReference: its first text attachment, else narrative."""
    for content in document.get("content") or []:
        shown = attachment_text((content or {}).get("attachment") or {})
        if shown:
            return shown
    return narrative(document)
