"""Errors from the auth, store and FHIR layers on web pages, in both languages: the sign-in
messages word for word, everything else by its kind with the layer's English text kept as
the detail; a page's own (already translated) refusals as they are."""

from __future__ import annotations

import httpx
import pytest
from web_helpers import post_login
from web_world import World, sign_in

from carebase.auth import users
from carebase.auth.lockout import too_many
from carebase.auth.users import User
from carebase.errors import (
    BadRequest,
    CarebaseError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    StorageError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from carebase.web.catalogue_zh import ZH
from carebase.web.error_text import PageError, shown_error


def test_the_auth_layers_messages_are_known_in_both_languages() -> None:
    for message in (
        users.BAD_CREDENTIALS,
        users.BAD_SECOND_FACTOR,
        "This account is disabled; ask an administrator",
        "The sign-in has expired; start again",
    ):
        english = shown_error("en", Unauthorized(message))
        assert english == type(english)(message, None)
        chinese = shown_error("zh", Unauthorized(message))
        assert chinese.message == ZH[message] and chinese.detail is None
    locked = shown_error("zh", too_many(locked_until_ms=10_000, now=0.0))
    assert locked.message == ZH["Too many failed attempts; try again in {n} seconds"].format(n=10)


@pytest.mark.parametrize(
    ("error", "english", "chinese"),
    [
        (NotFound("Patient/x is not known"), "Not found", "未找到"),
        (Forbidden("The scope does not allow Observation"), "Your role may not", "无权"),
        (BadRequest("birthDate is not a date", location="birthDate"), "not valid", "无效"),
        (Conflict("Appointment/1 is cancelled"), "conflicts", "冲突"),
        (PreconditionFailed("Version 2 is not current"), "changed this record", "修改"),
        (TooLarge("Request body is larger than 10 bytes"), "too large", "过大"),
        (Unavailable("The audit trail is not running"), "not available", "不可用"),
    ],
)
def test_other_errors_show_their_kind_translated_with_the_detail(
    error: CarebaseError, english: str, chinese: str
) -> None:
    en, zh = shown_error("en", error), shown_error("zh", error)
    assert english in en.message and chinese in zh.message, (en, zh)
    assert en.detail == zh.detail == error.message


def test_server_errors_keep_their_detail_in_the_log() -> None:
    shown = shown_error("zh", StorageError("connection to 10.0.0.5 refused"))
    assert shown.detail is None and "10.0.0.5" not in shown.message
    assert shown.message == ZH["Something went wrong; the server log has details"]


def test_a_pages_own_refusal_shows_as_it_is() -> None:
    assert shown_error("en", PageError("您的角色不能这样做。")).message == "您的角色不能这样做。"


@pytest.mark.asyncio
async def test_sign_in_errors_in_chinese(client: httpx.AsyncClient, alice: User) -> None:
    client.cookies.set("carebase_lang", "zh")
    wrong = await post_login(client, "alice", "not the password")
    assert wrong.status_code == 401 and "用户名或密码不正确" in wrong.text
    assert "not right" not in wrong.text
    empty = await post_login(client, "alice", "")
    assert empty.status_code == 400 and "请输入用户名和密码" in empty.text


@pytest.mark.asyncio
async def test_error_pages_in_both_languages_keep_the_detail(
    web: httpx.AsyncClient, world: World
) -> None:
    await sign_in(web, "doc")
    english = await web.get("/app/patients/no-such-patient")
    assert english.status_code == 404
    assert "Not found: it does not exist" in english.text and "no-such-patient" in english.text
    web.cookies.set("carebase_lang", "zh")
    chinese = await web.get("/app/patients/no-such-patient")
    assert chinese.status_code == 404
    assert "未找到" in chinese.text and "详情" in chinese.text and "no-such-patient" in chinese.text
    assert "Not found: it does not exist" not in chinese.text
