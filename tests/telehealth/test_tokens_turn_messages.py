"""Join tokens, coturn TURN credentials, attachments and reminders."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from telehealth_helpers import book_visit

from carebase.auth import signed_jwt
from carebase.auth.keys import KeyRing
from carebase.errors import BadRequest, TooLarge, Unauthorized
from carebase.store.base import Store
from carebase.telehealth.join_tokens import JOIN_TOKEN_TYPE, JoinTokens
from carebase.telehealth.messages import check_attachment
from carebase.telehealth.notify import LoggingNotifier, Notifier, Reminder, send_due_reminders
from carebase.telehealth.settings import TelehealthSettings
from carebase.telehealth.turn import ice_servers, turn_credentials


@pytest.fixture
def tokens(settings) -> JoinTokens:  # type: ignore[no-untyped-def]
    return JoinTokens(KeyRing.open(settings.keys_dir), "http://testserver", ttl=60)


def test_join_token_round_trip_and_refusals(tokens: JoinTokens, tmp_path: Path) -> None:
    token, expires = tokens.issue(
        room="r1", role="guest", participant="guest-1", display="Ana", subject="u-doc"
    )
    grant = tokens.verify(token, "r1")
    assert (grant.room, grant.role, grant.participant, grant.display) == (
        "r1",
        "guest",
        "guest-1",
        "Ana",
    )
    assert grant.expires_at == expires
    with pytest.raises(Unauthorized, match="another room"):
        tokens.verify(token, "r2")
    other = JoinTokens(KeyRing.open(tmp_path / "other-keys"), "http://testserver")
    with pytest.raises(Unauthorized, match="not signed by this server"):
        other.verify(token, "r1")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthorized):
        tokens.verify(tampered, "r1")
    with pytest.raises(ValueError):
        tokens.issue(room="r1", role="owner", participant="x", display="x", subject="s")


def test_join_token_refusals_say_why(tokens: JoinTokens) -> None:
    expired, _ = tokens.issue(
        room="r1", role="patient", participant="p-1", display="P", subject="u", ttl=-120
    )
    with pytest.raises(Unauthorized, match="has expired"):
        tokens.verify(expired, "r1")
    now = int(datetime.now(UTC).timestamp())
    base = {"aud": tokens.audience("r1"), "sub": "u", "iat": now, "jti": "j", "room": "r1",
            "role": "patient", "pid": "p-1", "exp": now + 600}  # fmt: skip
    cases = [
        ({**base, "iss": tokens.issuer, "nbf": now + 600}, JOIN_TOKEN_TYPE, "not valid yet"),
        ({**base, "iss": "http://elsewhere", "nbf": now}, JOIN_TOKEN_TYPE, "another server"),
        ({**base, "iss": tokens.issuer, "nbf": now}, "at+jwt", "not a room join token"),
    ]
    for claims, token_type, reason in cases:
        with pytest.raises(Unauthorized, match=reason):
            tokens.verify(signed_jwt.sign(tokens.ring, claims, token_type), "r1")
    with pytest.raises(Unauthorized, match="not a JWT"):
        tokens.verify("not-a-token", "r1")
    unsigned = ".".join(
        base64.urlsafe_b64encode(part).rstrip(b"=").decode()
        for part in (b'{"alg":"none","typ":"carebase-room+jwt"}', b'{"sub":"u"}')
    )
    with pytest.raises(Unauthorized, match="not a room join token"):
        tokens.verify(unsigned + ".", "r1")


def test_turn_credentials_follow_the_coturn_rest_scheme() -> None:
    username, credential = turn_credentials("s3cret", "patient-1", 3600, now=1_700_000_000)
    assert username == "1700003600:patient-1"
    expected = base64.b64encode(
        hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    ).decode()
    assert credential == expected
    settings = TelehealthSettings(
        stun_urls=("stun:turn.example.org:3478",),
        turn_urls=("turn:turn.example.org:3478?transport=udp",),
        turn_secret="s3cret",
    )
    servers = ice_servers(settings, "p")
    assert servers[0] == {"urls": ["stun:turn.example.org:3478"]}
    assert servers[1]["username"].endswith(":p") and servers[1]["credential"]


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.mark.parametrize(
    ("attachment", "error", "where"),
    [
        (
            {"contentType": "application/x-msdownload", "data": base64.b64encode(b"MZ").decode()},
            BadRequest,
            "attachment.contentType",
        ),
        (
            {"contentType": "image/png", "data": base64.b64encode(b"MZ\x90\x00").decode()},
            BadRequest,
            "attachment.data",
        ),
        ({"contentType": "image/png", "data": "not base64!"}, BadRequest, "attachment.data"),
        (
            {"contentType": "image/png", "data": base64.b64encode(PNG * 100).decode()},
            TooLarge,
            "attachment.data",
        ),
        (
            {"contentType": "text/plain", "data": base64.b64encode(b"\xff\xfe").decode()},
            BadRequest,
            "attachment.data",
        ),
    ],
)
def test_attachments_are_size_limited_and_type_checked(
    attachment: dict, error: type, where: str
) -> None:
    with pytest.raises(error) as err:
        check_attachment(attachment, max_bytes=1000, types=("image/png", "text/plain"))
    assert err.value.issues[0].expression == [where]  # type: ignore[attr-defined]


def test_a_good_attachment_is_kept() -> None:
    data = base64.b64encode(PNG).decode()
    got = check_attachment(
        {"contentType": "image/png", "data": data, "title": "rash.png"},
        max_bytes=1000,
        types=("image/png",),
    )
    assert got == {"contentType": "image/png", "data": data, "size": len(PNG), "title": "rash.png"}


class _Failing(Notifier):
    def send(self, reminder: Reminder) -> None:
        raise OSError("SMTP down")


def test_reminders_are_sent_once_and_recorded(store: Store) -> None:
    appointment = book_visit(store)
    start = datetime.fromisoformat(appointment["start"].replace("Z", "+00:00"))
    before = start - timedelta(hours=2)
    assert send_due_reminders(store, _Failing(), lead=timedelta(hours=24), now=before) == []
    notifier = LoggingNotifier()
    sent = send_due_reminders(store, notifier, lead=timedelta(hours=24), now=before)
    assert [r.appointment for r in sent] == [f"Appointment/{appointment['id']}"]
    assert sent[0].email == "pat1@example.org" and "video visit" in sent[0].text()
    assert send_due_reminders(store, notifier, lead=timedelta(hours=24), now=before) == []
    assert len(notifier.sent) == 1
    page = store.search("Communication", [("patient", "Patient/pat1")], total="accurate")
    assert page.total == 1
    far = start - timedelta(days=3)
    assert send_due_reminders(store, LoggingNotifier(), lead=timedelta(hours=24), now=far) == []
    assert datetime.now(UTC) < start
