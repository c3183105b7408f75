"""The transport-neutral result of one FHIR interaction, and header value helpers.

Interactions return a `Result`; the HTTP routes turn it into a Response and the
transaction/batch processor turns it into a `Bundle.entry.response`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from http import HTTPStatus

from carebase.api.access import Guard
from carebase.config import Settings
from carebase.errors import BadRequest
from carebase.store.base import Store, StoredResource

_ETAG_RE = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*')


@dataclass(slots=True)
class Context:
    """What every interaction needs: the store, the settings, this request's FHIR base, and
    the guard enforcing the caller's access (and noting what it touched for the audit)."""

    store: Store
    settings: Settings
    base: str
    guard: Guard

    def url_of(self, stored: StoredResource, *, versioned: bool = False) -> str:
        """Absolute URL of a resource (with `/_history/n` when `versioned`)."""
        url = f"{self.base}/{stored.type}/{stored.id}"
        return f"{url}/_history/{stored.version}" if versioned else url


@dataclass(slots=True)
class Result:
    """Outcome of one interaction.

    `stored` is the resource version the interaction produced or read (its bytes are the
    representation); `body` is any other JSON payload (Bundle, OperationOutcome, Parameters);
    `outcome` is an OperationOutcome for `Prefer: return=OperationOutcome` and batch entries.
    """

    status: int
    stored: StoredResource | None = None
    body: dict[str, object] | None = None
    location: str | None = None
    outcome: dict[str, object] | None = None
    #: True for create/update/patch, whose payload the `Prefer` header chooses.
    preferable: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        """`201 Created` style status for Bundle.entry.response.status."""
        try:
            return f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return str(self.status)


def parse_etag(value: str, header: str = "If-Match") -> int:
    """The version number in an ETag such as `W/"3"`; 400 when malformed."""
    match = _ETAG_RE.fullmatch(value)
    if match is None:
        raise BadRequest(
            f'{header} value {value!r} is not a valid ETag; expected W/"<versionId>"',
            location=header,
        )
    return int(match.group(1))


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date (If-Modified-Since); None when absent or invalid (RFC 9110 says ignore)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def http_date(moment: datetime) -> str:
    """RFC 1123 date for Last-Modified."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def instant(moment: datetime) -> str:
    """FHIR instant with milliseconds, e.g. `2024-05-01T10:20:00.123Z`."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_instant(value: str, name: str) -> datetime:
    """A FHIR instant/dateTime query value such as `_since`; 400 when malformed."""
    text = value.strip().replace(" ", "+")
    if len(text) == 10:
        text += "T00:00:00Z"
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(
            f"{name}={value!r} is not a valid instant; use e.g. 2024-05-01T10:20:00Z",
            location=name,
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def version_headers(stored: StoredResource) -> dict[str, str]:
    """ETag and Last-Modified headers for a resource version."""
    return {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}


def not_modified(
    stored: StoredResource, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """Whether a conditional read may answer 304 (If-None-Match wins over If-Modified-Since)."""
    if if_none_match:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or any(
            _ETAG_RE.fullmatch(t) and parse_etag(t) == stored.version for t in tags
        )
    since = parse_http_date(if_modified_since)
    # HTTP dates have whole seconds; compare at that precision.
    return since is not None and stored.last_updated.replace(microsecond=0) <= since
