"""Rendering HTML pages from `web/templates/` with Jinja2 (autoescaped, no inline script)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from carebase.web.i18n import LANGUAGES, language_of, translator
from carebase.web.sessions_http import apply_cookies, csrf_token

# Autoescape every template whatever its name: all of them are HTML. StrictUndefined turns a
# misspelt variable into an error in tests instead of an empty string on a page.
_environment = Environment(
    loader=PackageLoader("carebase.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page `name` filled with `context`.

    Every template also sees `request`, `csrf_token` (for the hidden form field; pages for a
    signed-in user must have awaited `current_user` first), `user` (None unless given), the
    translation function `_`, `lang` (the page's language code), `lang_tag` (its `lang`
    attribute) and `languages` (for the language switch).
    Pages are never cached: they may show personal data or carry a CSRF token.
    """
    language = language_of(request)
    values: dict[str, Any] = {
        "request": request,
        "user": None,
        "_": translator(language),
        "lang": language,
        "lang_tag": LANGUAGES[language][1],
        "languages": [(code, name) for code, (name, _) in LANGUAGES.items()],
        "nav": [],
    }
    values.update(context or {})
    if "csrf_token" not in values:
        values["csrf_token"] = csrf_token(request)
    html = _environment.get_template(name).render(values)
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = values["lang_tag"]
    apply_cookies(request, response)
    return response
