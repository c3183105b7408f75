"""The languages of the web pages: English (the source text) and Simplified Chinese.

Gettext style: every translatable text is written in English in the templates and code as
`_("...")` and looked up in the Chinese catalogue (`catalogue_zh.ZH`); `{name}` placeholders
are filled after translation, so a translation may reorder them. A test checks that every
text the templates and web modules use has its Chinese translation and that the catalogue
holds nothing unused.

The language of a request: the `carebase_lang` cookie (set by the language switch), else
the browser's Accept-Language, else English.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from carebase.web.catalogue_zh import ZH

#: Language code -> (name in that language, the `lang` attribute of the page).
LANGUAGES: dict[str, tuple[str, str]] = {"en": ("English", "en"), "zh": ("简体中文", "zh-Hans")}
DEFAULT = "en"
LANG_COOKIE = "carebase_lang"
_CATALOGUES: dict[str, dict[str, str]] = {"en": {}, "zh": ZH}


class Text(str):
    """A translatable text with the values of its placeholders: its string value is the
    English source (the catalogue key); pages show `_(text, **text.values)`."""

    values: dict[str, Any]

    def __new__(cls, text: str, **values: Any) -> Text:
        made = super().__new__(cls, text)
        made.values = values
        return made


def N_(text: str, **values: Any) -> Text:
    """Mark `text` for translation (translated where it is shown, with `values`)."""
    return Text(text, **values)


def language_of(request: Request) -> str:
    """The language to answer `request` in (a code of LANGUAGES)."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    header = (request.headers.get("accept-language") or "").lower()
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT


def translate(language: str, text: str, **values: Any) -> str:
    """`text` in `language` (English when the catalogue lacks it), placeholders filled."""
    translated = _CATALOGUES.get(language, {}).get(str(text), str(text))
    if not values and isinstance(text, Text):
        values = text.values
    return translated.format(**values) if values else translated


def page_language(request: Request) -> tuple[str, Callable[..., str]]:
    """The `lang` attribute and the `_` function of a page for `request` (for pages other
    layers render: the standalone telehealth visit page)."""
    language = language_of(request)
    return LANGUAGES[language][1], translator(language)


def translator(language: str) -> Callable[..., str]:
    """The `_` function of one language."""

    def _(text: str, **values: Any) -> str:
        return translate(language, text, **values)

    return _
