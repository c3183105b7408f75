"""Reading HTML form posts (application/x-www-form-urlencoded, and multipart/form-data for
file uploads) with a size limit."""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from starlette.requests import Request

from carebase.api.request_body import read_body
from carebase.config import Settings
from carebase.errors import BadRequest, UnsupportedMediaType


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a form post (the first value of each name)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("This form takes an application/x-www-form-urlencoded body")
    # Forms are a few fields: the small form limit (CAREBASE_MAX_FORM_BYTES) applies.
    settings: Settings = request.app.state.settings
    raw = await read_body(request, settings.max_form_bytes)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise BadRequest("The form body is not UTF-8") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


@dataclass(frozen=True, slots=True)
class Upload:
    """A file field of a multipart form post."""

    filename: str
    content_type: str
    data: bytes


async def read_upload(request: Request, max_bytes: int) -> tuple[dict[str, str], dict[str, Upload]]:
    """The text fields and the files of a multipart/form-data post of at most `max_bytes`
    (413 beyond it, read no further). Parsed with the standard library's MIME parser."""
    content_type = request.headers.get("content-type") or ""
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType("This form takes a multipart/form-data body")
    raw = await read_body(request, max_bytes)
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(header + raw)
    if not message.is_multipart():
        raise BadRequest("The form body is not multipart/form-data")
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or name in fields or name in files:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = Upload(filename, part.get_content_type(), data)
            continue
        try:
            fields[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"Form field {name!r} is not UTF-8") from exc
    return fields, files
