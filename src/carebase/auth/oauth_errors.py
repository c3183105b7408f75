"""OAuth 2.0 errors (RFC 6749 section 5.2): an error code, a description, the HTTP status.

They are carebase errors (so anything that escapes still ends as a clear response), but the
OAuth endpoints answer them as `{"error": ..., "error_description": ...}` JSON, and the
authorization endpoint either redirects them back to the client (`redirectable`) or, when the
client or its redirect URI cannot be trusted, shows an error page instead.
"""

from __future__ import annotations

from carebase.errors import CarebaseError

_STATUS = {"invalid_client": 401, "server_error": 500, "temporarily_unavailable": 503}


class OAuthError(CarebaseError):
    """An OAuth protocol error such as `invalid_grant` or `invalid_client`."""

    code = "security"

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int | None = None,
        redirectable: bool = True,
    ) -> None:
        headers = {}
        if error == "invalid_client":
            # RFC 6749 5.2: a 401 names the authentication scheme the client should use
            headers["WWW-Authenticate"] = 'Basic realm="carebase", charset="UTF-8"'
        super().__init__(description, headers=headers)
        self.error = error
        self.description = description
        self.status = status or _STATUS.get(error, 400)
        #: the authorization endpoint may send this error back to the client's redirect URI
        self.redirectable = redirectable

    def body(self) -> dict[str, str]:
        """The JSON error response body."""
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str, *, redirectable: bool = True) -> OAuthError:
    """A missing, repeated or malformed parameter."""
    return OAuthError("invalid_request", description, redirectable=redirectable)


def invalid_client(description: str) -> OAuthError:
    """Client authentication failed (unknown client, bad secret or assertion, disabled)."""
    return OAuthError("invalid_client", description, redirectable=False)


def invalid_grant(description: str) -> OAuthError:
    """The code or refresh token is invalid, expired, revoked or not this client's."""
    return OAuthError("invalid_grant", description)


def invalid_scope(description: str) -> OAuthError:
    """The requested scope is malformed or exceeds what may be granted."""
    return OAuthError("invalid_scope", description)
