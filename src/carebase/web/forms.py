"""Reading HTML form posts (application/x-www-form-urlencoded) with a size limit."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from carebase.api.request_body import read_body
from carebase.errors import BadRequest, UnsupportedMediaType

#: Forms are a few fields; anything larger is not one of ours.
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a form post (the first value of each name)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("This form takes an application/x-www-form-urlencoded body")
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise BadRequest("The form body is not UTF-8") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form
