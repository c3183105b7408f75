"""Both languages are complete: every text the pages use has its Simplified Chinese
translation with the same placeholders, and the catalogue holds nothing unused."""

from __future__ import annotations

import re

from starlette.requests import Request

from carebase.web.catalogue import all_texts, module_texts, template_texts
from carebase.web.catalogue_zh import ZH
from carebase.web.i18n import N_, language_of, translate

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def test_every_text_has_a_translation_and_none_is_unused() -> None:
    texts = all_texts()
    assert len(texts) > 250  # the finder sees the templates and the modules
    assert "Find a patient" in template_texts() and "Your role may not do this." in module_texts()
    assert sorted(t for t in texts if t not in ZH) == []
    assert sorted(t for t in ZH if t not in texts) == []


def test_translations_keep_their_placeholders_and_are_chinese() -> None:
    for english, chinese in ZH.items():
        assert set(_PLACEHOLDER.findall(english)) == set(_PLACEHOLDER.findall(chinese)), english
        assert chinese.strip() and chinese != english, english


def test_translate_fills_placeholders_in_either_language() -> None:
    assert translate("zh", "{n} years", n=7) == "7 岁"
    assert translate("en", "{n} years", n=7) == "7 years"
    text = N_("{code} is not an ICD-10-CM code", code="A00.5")
    assert translate("zh", text) == "A00.5 不是 ICD-10-CM 代码"
    assert translate("zh", "not in the catalogue") == "not in the catalogue"


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def test_language_of_a_request() -> None:
    assert language_of(_request({})) == "en"
    assert language_of(_request({"Accept-Language": "zh-CN,zh;q=0.9"})) == "zh"
    assert language_of(_request({"Accept-Language": "fr, en;q=0.8, zh;q=0.9"})) == "zh"
    assert language_of(_request({"Accept-Language": "zh;q=0, en"})) == "en"
    assert language_of(_request({"Cookie": "carebase_lang=zh", "Accept-Language": "en"})) == "zh"
    assert language_of(_request({"Cookie": "carebase_lang=xx"})) == "en"
