"""ICE servers for browsers, with time-limited TURN credentials in coturn's shared-secret
scheme ("TURN REST API", `use-auth-secret` + `static-auth-secret` in turnserver.conf):
username = `<expiry unix time>:<user id>`, credential = base64(HMAC-SHA1(secret, username)).
coturn recomputes the HMAC and refuses the username once its expiry has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from carebase.telehealth.settings import TelehealthSettings


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for `ttl` seconds from `now`."""
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: TelehealthSettings, user: str) -> list[dict[str, Any]]:
    """The RTCPeerConnection `iceServers` for one participant."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls:
        username, credential = turn_credentials(settings.turn_secret, user, settings.turn_ttl)
        servers.append(
            {"urls": list(settings.turn_urls), "username": username, "credential": credential}
        )
    return servers
