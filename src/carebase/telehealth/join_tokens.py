"""Room join tokens: short-lived JWTs, signed with the server's token keys (`auth.keys`),
that let one participant into one visit room in one role.

A join token's audience is the room (`<issuer>/telehealth/rooms/<appointment id>`), so a
token for another room (or an access token) is refused; its type header is
`carebase-room+jwt`, so it is never taken for an access token either. Claims: `sub` (who
asked: the user's subject, or the inviting clinician's for a guest), `room`, `role`
(clinician, patient, guest), `pid` (the participant id: stable per person and room, so a
reconnect resumes the same participant), `name` (shown to the others), and `fhirUser`.
A guest's token also carries `kind` (guest or interpreter) and `onBehalfOf` (the inviting
clinician's FHIR identity, or subject): the guest is audited under its own identity
(`guest/<pid>`, its name and kind), on behalf of that clinician.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from carebase.auth import signed_jwt
from carebase.auth.keys import KeyRing
from carebase.auth.principal import Principal
from carebase.errors import Unauthorized
from carebase.telehealth.room_state import ROLES

JOIN_TOKEN_TYPE = "carebase-room+jwt"
#: What a 401 says for each way a join token fails (`signed_jwt.Rejected.reason`; for
#: `invalid`, PyJWT's words follow).
_REFUSALS: dict[signed_jwt.Reason, str] = {
    "not-jwt": "The join token is not a JWT",
    "algorithm": "This is not a room join token",
    "type": "This is not a room join token",
    "key": "The join token was not signed by this server",
    "expired": "The join token has expired; ask for a new one",
    "audience": "The join token is for another room",
    "not-yet-valid": "The join token is not valid yet",
    "issuer": "The join token was issued by another server",
    "invalid": "The join token is not valid",
}


@dataclass(frozen=True, slots=True)
class JoinGrant:
    """A verified join token."""

    room: str
    role: str
    participant: str
    display: str
    subject: str
    fhir_user: str | None
    expires_at: int
    token_id: str
    #: a guest's kind: "guest" or "interpreter" ("" for clinicians and patients)
    kind: str = ""
    #: who invited a guest (the clinician's fhirUser, or subject); "" for others
    on_behalf_of: str = ""

    def principal(self) -> Principal:
        """The caller for audit entries: a guest under its own identity (`guest/<pid>`, its
        name, its kind as the role), never the inviting clinician's, on behalf of that
        clinician (`on_behalf_of`, and in words `audit_note`)."""
        if self.role == "guest":
            return Principal(
                subject=f"guest/{self.participant}",
                role=self.kind or "guest",
                username=self.display,
                token_id=self.token_id,
                on_behalf_of=self.on_behalf_of or self.subject,
            )
        return Principal(
            subject=self.subject,
            role=self.role,
            username=self.display,
            fhir_user=self.fhir_user,
            token_id=self.token_id,
        )

    def audit_note(self) -> str:
        """What audit entries add about the caller: the clinician a guest acts on behalf of."""
        if self.role != "guest":
            return ""
        return f"(guest {self.participant}, on behalf of {self.on_behalf_of or self.subject})"


class JoinTokens:
    """Issues and verifies room join tokens with the server's key ring."""

    def __init__(self, ring: KeyRing, issuer: str, ttl: int = 600) -> None:
        self.ring, self.issuer, self.ttl = ring, issuer.rstrip("/"), ttl

    def audience(self, room: str) -> str:
        return f"{self.issuer}/telehealth/rooms/{room}"

    def issue(
        self,
        *,
        room: str,
        role: str,
        participant: str,
        display: str,
        subject: str,
        fhir_user: str | None = None,
        ttl: int | None = None,
        kind: str = "",
        on_behalf_of: str = "",
    ) -> tuple[str, int]:
        """(token, expiry epoch seconds)."""
        if role not in ROLES:
            raise ValueError(f"unknown room role {role!r}")
        now = int(time.time())
        expires = now + (ttl if ttl is not None else self.ttl)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience(room),
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": uuid.uuid4().hex,
            "room": room,
            "role": role,
            "pid": participant,
            "name": display[:100],
        }
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if role == "guest":
            claims["kind"] = kind or "guest"
            claims["onBehalfOf"] = on_behalf_of or subject
        return signed_jwt.sign(self.ring, claims, JOIN_TOKEN_TYPE), expires

    def verify(self, token: str, room: str) -> JoinGrant:
        """The grant of a valid token for `room`; 401 naming why otherwise."""
        try:
            claims = signed_jwt.verify(
                self.ring, token, token_type=JOIN_TOKEN_TYPE, audience=self.audience(room),
                issuer=self.issuer,
            )  # fmt: skip
        except signed_jwt.Rejected as exc:
            refusal = _REFUSALS[exc.reason]
            raise Unauthorized(f"{refusal}: {exc.detail}" if exc.detail else refusal) from exc
        role, pid = claims.get("role"), claims.get("pid")
        if role not in ROLES or not isinstance(pid, str) or claims.get("room") != room:
            raise Unauthorized("The join token's claims are malformed")
        return JoinGrant(
            room=room,
            role=str(role),
            participant=pid,
            display=str(claims.get("name", "")),
            subject=str(claims["sub"]),
            fhir_user=claims.get("fhirUser"),
            expires_at=int(claims["exp"]),
            token_id=str(claims["jti"]),
            kind=str(claims.get("kind", "guest")) if role == "guest" else "",
            on_behalf_of=str(claims.get("onBehalfOf", claims["sub"])) if role == "guest" else "",
        )
