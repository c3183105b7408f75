"""Visit chat and messages between visits, stored as FHIR Communication resources.

Chat lines sent during a visit are Communications with category `visit-chat`, about the
Appointment and in the visit's Encounter; messages between visits have category `message`
(a patient writes to their clinician, a clinician to their patient). Attachments are
checked before anything is written: at most `max_attachment_bytes` after base64 decoding,
a declared content type from the accepted list, and content whose leading bytes match that
type (a PDF starts with %PDF-, a PNG with its signature...), so an executable cannot be
passed off as an image.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from carebase.errors import BadRequest, TooLarge
from carebase.fhir.validation import check_resource
from carebase.store.base import Store
from carebase.telehealth.availability import instant
from carebase.telehealth.codes import CATEGORY_SYSTEM
from carebase.telehealth.scheduling import body_of

MAX_TEXT = 4000
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def check_text(text: object, where: str) -> str:
    """A message text: a non-empty string of at most MAX_TEXT characters."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("The message text is missing", location=where)
    if len(text) > MAX_TEXT:
        raise TooLarge(f"A message holds at most {MAX_TEXT} characters", location=where)
    return text


def check_attachment(value: object, *, max_bytes: int, types: tuple[str, ...]) -> dict[str, Any]:
    """A FHIR Attachment from `{"contentType", "data" (base64), "title"}`, checked."""
    if not isinstance(value, dict):
        raise BadRequest("attachment must be an object", location="attachment")
    content_type = value.get("contentType")
    if content_type not in types:
        raise BadRequest(
            f"attachment contentType {content_type!r} is not accepted; use one of "
            f"{', '.join(types)}",
            location="attachment.contentType",
        )
    data = value.get("data")
    if not isinstance(data, str) or len(data) > (max_bytes * 4) // 3 + 8:
        raise TooLarge(f"An attachment holds at most {max_bytes} bytes", location="attachment.data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("attachment data is not base64", location="attachment.data") from exc
    if not raw:
        raise BadRequest("attachment data is empty", location="attachment.data")
    if len(raw) > max_bytes:
        raise TooLarge(f"An attachment holds at most {max_bytes} bytes", location="attachment.data")
    if not _matches(content_type, raw):
        raise BadRequest(f"attachment content is not {content_type}", location="attachment.data")
    title = value.get("title")
    attachment: dict[str, Any] = {"contentType": content_type, "data": data, "size": len(raw)}
    if isinstance(title, str) and title.strip():
        attachment["title"] = title[:200]
    return attachment


def _matches(content_type: str, raw: bytes) -> bool:
    if content_type == "text/plain":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return "\x00" not in text
    return raw.startswith(_SIGNATURES.get(content_type, (b"\x00\x00impossible",)))


def communication(
    *,
    category: str,
    patient: str,
    sender: dict[str, Any],
    recipients: list[str],
    text: str | None,
    attachment: dict[str, Any] | None = None,
    appointment: str | None = None,
    encounter: str | None = None,
    in_response_to: str | None = None,
) -> dict[str, Any]:
    """A Communication resource (not yet stored)."""
    payload: list[dict[str, Any]] = []
    if text:
        payload.append({"contentString": text})
    if attachment:
        payload.append({"contentAttachment": attachment})
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "sender": sender,
        "recipient": [{"reference": r} for r in recipients],
        "sent": instant(datetime.now(UTC)),
        "payload": payload,
    }
    if appointment:
        resource["about"] = [{"reference": f"Appointment/{appointment}"}]
    if encounter:
        resource["encounter"] = {"reference": f"Encounter/{encounter}"}
    if in_response_to:
        resource["inResponseTo"] = [{"reference": in_response_to}]
    check_resource(resource, expected_type="Communication")
    return resource


def store_communication(store: Store, resource: dict[str, Any]) -> dict[str, Any]:
    """Write a Communication; the stored representation."""
    with store.transaction() as tx:
        return body_of(tx.create("Communication", resource))
