"""Telehealth configuration, read from CAREBASE_TELEHEALTH_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from carebase.errors import CarebaseError

BUSES = ("auto", "memory", "postgres", "redis")


@dataclass(frozen=True, slots=True)
class TelehealthSettings:
    """What the visit rooms, signalling and reminders are configured with.

    `bus`: how signalling reaches participants on other workers: `memory` (one process; the
    only choice on SQLite), `postgres` (LISTEN/NOTIFY on the database), `redis` (pub/sub at
    `redis_url`); `auto` is postgres on PostgreSQL and memory on SQLite. `stun_urls` and
    `turn_urls` are the ICE servers given to browsers; with `turn_secret` each participant
    gets time-limited TURN credentials (coturn `use-auth-secret`, valid `turn_ttl` seconds).
    """

    bus: str = "auto"
    redis_url: str = "redis://127.0.0.1:6379/0"
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl: int = 3600
    #: lifetime of a room join token, seconds (it only has to reach the WebSocket)
    join_token_ttl: int = 600
    #: largest signalling message accepted, bytes (an SDP with many candidates is ~10 kB)
    max_message_bytes: int = 64 * 1024
    max_participants: int = 4
    #: seconds between server pings; a peer silent for 3 intervals is dropped
    ping_seconds: float = 20.0
    #: seconds a dropped participant may reconnect and resume before it counts as left
    resume_seconds: float = 60.0
    #: chat attachments: the largest accepted, bytes, and the accepted content types
    max_attachment_bytes: int = 5 * 1024 * 1024
    attachment_types: tuple[str, ...] = ("application/pdf", "image/jpeg", "image/png", "text/plain")
    #: appointment reminders: minutes before the start (0: no reminder runner)
    reminder_lead_minutes: int = 24 * 60
    reminder_poll_seconds: float = 300.0
    #: visit rooms (`telehealth_room`: who was in which room, display names) are deleted
    #: this many seconds after their last change; the record keeps the Encounter and audit
    room_retention_seconds: int = 7 * 86400
    #: oversized signalling messages (`telehealth_signal`) are deleted after this many seconds
    signal_retention_seconds: int = 60
    #: seconds between purges of expired rooms and signalling messages
    purge_seconds: float = 300.0

    @classmethod
    def from_env(cls) -> TelehealthSettings:
        env = os.environ
        base = cls()
        settings = replace(
            base,
            bus=env.get("CAREBASE_TELEHEALTH_BUS", base.bus),
            redis_url=env.get("CAREBASE_TELEHEALTH_REDIS_URL", base.redis_url),
            stun_urls=_list(env.get("CAREBASE_TELEHEALTH_STUN_URLS")),
            turn_urls=_list(env.get("CAREBASE_TELEHEALTH_TURN_URLS")),
            turn_secret=env.get("CAREBASE_TELEHEALTH_TURN_SECRET", ""),
            turn_ttl=_int(env, "CAREBASE_TELEHEALTH_TURN_TTL", base.turn_ttl),
            join_token_ttl=_int(env, "CAREBASE_TELEHEALTH_JOIN_TTL", base.join_token_ttl),
            max_message_bytes=_int(
                env, "CAREBASE_TELEHEALTH_MAX_MESSAGE_BYTES", base.max_message_bytes
            ),
            reminder_lead_minutes=_int(
                env, "CAREBASE_TELEHEALTH_REMINDER_MINUTES", base.reminder_lead_minutes
            ),
            reminder_poll_seconds=_int(
                env, "CAREBASE_TELEHEALTH_REMINDER_POLL_SECONDS", int(base.reminder_poll_seconds)
            ),
            room_retention_seconds=_int(
                env, "CAREBASE_TELEHEALTH_ROOM_RETENTION_SECONDS", base.room_retention_seconds
            ),
            signal_retention_seconds=_int(
                env, "CAREBASE_TELEHEALTH_SIGNAL_RETENTION_SECONDS", base.signal_retention_seconds
            ),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise CarebaseError for an impossible combination."""
        if self.bus not in BUSES:
            raise CarebaseError(
                f"CAREBASE_TELEHEALTH_BUS is {self.bus!r}: use one of {', '.join(BUSES)}"
            )
        if self.turn_urls and not self.turn_secret:
            raise CarebaseError(
                "CAREBASE_TELEHEALTH_TURN_URLS needs CAREBASE_TELEHEALTH_TURN_SECRET"
            )
        if not 2 <= self.max_participants <= 4:
            raise CarebaseError("a visit room holds 2 to 4 participants")
        if self.room_retention_seconds < 3600:
            raise CarebaseError(
                "CAREBASE_TELEHEALTH_ROOM_RETENTION_SECONDS must be at least 3600 (a visit "
                "room must outlive its visit)"
            )
        if self.signal_retention_seconds < 10:
            raise CarebaseError("CAREBASE_TELEHEALTH_SIGNAL_RETENTION_SECONDS must be at least 10")
        if self.reminder_poll_seconds <= 0 or self.purge_seconds <= 0:
            raise CarebaseError("the reminder and purge intervals must be positive")


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _int(env: os._Environ[str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise CarebaseError(f"{name} must be a whole number, not {text!r}") from exc
