"""What an error from the auth, store or FHIR layers says on a web page, in the page's
language.

The layers below the web raise `CarebaseError`s with English, technical messages (the API
sends them in OperationOutcomes as they are). A page shows a translated message instead:
the known sign-in messages word for word, every other error by its kind (HTTP status), with
the layer's own message kept beside it as the technical detail where it helps (what was not
found, which field was invalid); server errors keep their detail in the server log only.
Errors the web layer raises with an already translated message (`PageError`) show as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from carebase.errors import CarebaseError, Forbidden, TooManyRequests
from carebase.web.i18n import N_, Text, translate

#: The auth layer's sign-in messages (`auth.users`), each with its translatable text.
_KNOWN: dict[str, Text] = {
    "The username or password is not right": N_("The username or password is not right"),
    "The code is not right or was already used; enter the current code from the "
    "authenticator app, or one of the recovery codes": N_(
        "The code is not right or was already used; enter the current code from the "
        "authenticator app, or one of the recovery codes"
    ),
    "This account is disabled; ask an administrator": N_(
        "This account is disabled; ask an administrator"
    ),
    "The sign-in has expired; start again": N_("The sign-in has expired; start again"),
}

#: The message of each kind of error, by HTTP status.
_BY_STATUS: dict[int, Text] = {
    400: N_("The request is not valid."),
    401: N_("Please sign in again."),
    403: N_("Your role may not do this."),
    404: N_("Not found: it does not exist, or your access does not include it."),
    405: N_("This page does not take that kind of request."),
    406: N_("This page cannot answer in the format asked for."),
    409: N_("This conflicts with the record as it is now."),
    410: N_("This has been deleted."),
    412: N_("Someone changed this record meanwhile; reload the page and try again."),
    413: N_("The upload or form is too large."),
    415: N_("This page does not take that kind of content."),
    422: N_("The request could not be carried out as it is."),
    429: N_("Too many attempts; try again shortly."),
    501: N_("This is not supported."),
    503: N_("The service is not available for a moment; try again shortly."),
}
_SERVER_ERROR = N_("Something went wrong; the server log has details")


class PageError(Forbidden):
    """A refusal raised by a page with a message already in the page's language."""


@dataclass(frozen=True, slots=True)
class ShownError:
    """What a page shows of an error: the message in the page's language, and the
    technical detail (English, as the API reports it) or None."""

    message: str
    detail: str | None


def shown_error(language: str, exc: CarebaseError) -> ShownError:
    """The error as a page in `language` shows it."""
    if isinstance(exc, PageError):
        return ShownError(exc.message, None)
    known = _KNOWN.get(exc.message)
    if known is not None:
        return ShownError(translate(language, known), None)
    if isinstance(exc, TooManyRequests) and exc.headers.get("Retry-After", "").isdigit():
        text = N_(
            "Too many failed attempts; try again in {n} seconds", n=exc.headers["Retry-After"]
        )
        return ShownError(translate(language, text), None)
    general = _BY_STATUS.get(exc.status)
    if general is None:
        return ShownError(translate(language, _SERVER_ERROR), None)
    return ShownError(translate(language, general), exc.message or None)
