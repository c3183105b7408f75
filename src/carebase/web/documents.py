"""The chart's documents: every DocumentReference of the patient (notes, letters, scans, any
type) as rows with their attachments, and uploaded files as new DocumentReferences.

An upload is checked by `telehealth.messages.check_attachment`, the same check as visit chat
attachments: an accepted declared type (PDF, PNG, JPEG, plain text), at most
`MAX_DOCUMENT_BYTES`, and content whose leading bytes match the type (a PDF starts with
`%PDF-`...; plain text is UTF-8 without NUL), so an executable cannot pass as a scan.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from carebase.errors import BadRequest, CarebaseError, TooLarge
from carebase.telehealth.messages import check_attachment
from carebase.web import fhir_view as fv
from carebase.web.documenting import Author, FormErrors, now_instant
from carebase.web.forms import Upload
from carebase.web.i18n import N_, Text
from carebase.web.records import Resource

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
DOCUMENT_TYPES = ("application/pdf", "image/png", "image/jpeg", "text/plain")
#: What an uploaded document is (DocumentReference.type.text), as offered by the form.
DOCUMENT_KINDS = (
    N_("Outside record"),
    N_("Letter"),
    N_("Scan or image"),
    N_("Signed form"),
    N_("Other document"),
)
_MEGABYTES = MAX_DOCUMENT_BYTES // (1024 * 1024)


def document_row(document: Resource) -> dict[str, Any]:
    """A DocumentReference as a row: title, type, date, author, and its attachments (index,
    content type, size, whether it holds data to download)."""
    attachments = []
    for index, content in enumerate(document.get("content") or []):
        attachment = (content or {}).get("attachment") or {}
        attachments.append(
            {
                "index": index,
                "title": str(attachment.get("title") or ""),
                "content_type": str(attachment.get("contentType") or ""),
                "size": _size_text(attachment),
                "stored": bool(attachment.get("data")),
            }
        )
    title = str(document.get("description") or "") or next(
        (a["title"] for a in attachments if a["title"]), ""
    )
    return {
        "id": str(document.get("id") or ""),
        "title": title or fv.concept_text(document.get("type")),
        "kind": fv.concept_text(document.get("type")),
        "when": fv.short_date(fv.when(document)),
        "author": ", ".join(str(a.get("display") or "") for a in document.get("author") or []),
        "attachments": attachments,
    }


def _size_text(attachment: dict[str, Any]) -> str:
    size = attachment.get("size")
    if not isinstance(size, int):
        data = attachment.get("data")
        size = len(data) * 3 // 4 if isinstance(data, str) else None
    if size is None:
        return ""
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} B"


def uploaded_document(
    patient_id: str, form: dict[str, str], upload: Upload | None, author: Author
) -> Resource:
    """A DocumentReference holding the uploaded file; FormErrors (nothing written) when the
    title or kind is missing or the file is not an accepted, matching type within the limit."""
    errors: dict[str, Text] = {}
    title = form.get("title", "").strip()
    if not title:
        errors["title"] = N_("This field is required")
    elif len(title) > 200:
        errors["title"] = N_("At most {limit} characters", limit=200)
    kind = form.get("kind", "")
    if kind not in DOCUMENT_KINDS:
        errors["kind"] = N_("Choose what the document is")
    attachment: dict[str, Any] | None = None
    if upload is None or not upload.filename:
        errors["file"] = N_("Choose a file")
    else:
        try:
            attachment = _checked(upload, title)
        except CarebaseError as exc:
            errors["file"] = _file_error(exc, upload)
    if errors:
        raise FormErrors(errors)
    assert attachment is not None
    when = now_instant()
    attachment["creation"] = when
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"text": kind},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": when,
        "author": [author.ref()],
        "description": title,
        "content": [{"attachment": attachment}],
    }


def _checked(upload: Upload, title: str) -> dict[str, Any]:
    data = base64.b64encode(upload.data).decode("ascii")
    value = {"contentType": upload.content_type, "data": data, "title": title}
    return check_attachment(value, max_bytes=MAX_DOCUMENT_BYTES, types=DOCUMENT_TYPES)


def _file_error(exc: CarebaseError, upload: Upload) -> Text:
    """The checker's refusal as a translatable form error."""
    if isinstance(exc, TooLarge):
        return N_("The file is larger than {n} MB", n=_MEGABYTES)
    where = [place for issue in exc.issues for place in issue.expression]
    if any(place.endswith("contentType") for place in where):
        return N_(
            "Upload a PDF, PNG, JPEG or plain text file (this one is {type})",
            type=upload.content_type,
        )
    if not upload.data:
        return N_("The file is empty")
    return N_("The file's content is not a {type} file", type=upload.content_type)


def attachment_bytes(document: Resource, index: int) -> tuple[bytes, str, str]:
    """(content, content type, file name) of the document's attachment `index`; 400 when it
    holds no data (only a link) or its data is not base64."""
    contents = document.get("content") or []
    if not 0 <= index < len(contents):
        raise BadRequest(f"DocumentReference/{document.get('id')} has no content {index}")
    attachment = (contents[index] or {}).get("attachment") or {}
    data = attachment.get("data")
    if not isinstance(data, str) or not data:
        raise BadRequest("This attachment holds no stored content (only a link)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("This attachment's data is not base64") from exc
    content_type = str(attachment.get("contentType") or "application/octet-stream")
    return raw, content_type, str(attachment.get("title") or f"document-{document.get('id')}")
