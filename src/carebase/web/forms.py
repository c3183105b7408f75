"""Reading HTML form posts (application/x-www-form-urlencoded) with a size limit."""

from __future__ import annotations

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
