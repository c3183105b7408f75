"""The index rows one resource produces (the indexer fills them, the repository writes them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class IndexRows:
    """Search index entries for one resource, one list per parameter type.

    Dates and date-times are stored as an inclusive range of epoch milliseconds (UTC): the
    implicit range of a partial date (`2015` -> 2015-01-01T00:00:00.000 .. 2015-12-31T23:59:59.999),
    of a Period (start .. end, open ends as None) or of a Timing's events. Numbers and quantities
    keep the value and the implicit range of its precision (`1.5` -> 1.45 .. 1.55).
    """

    #: (param, system or None, code or None, display/text or None)
    token: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    #: (param, normalised: lower-case, accents and punctuation folded, exact)
    string: list[tuple[str, str, str]] = field(default_factory=list)
    #: (param, low epoch ms or None, high epoch ms or None)
    date: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    #: (param, value, low, high)
    number: list[tuple[str, float, float, float]] = field(default_factory=list)
    #: (param, system or None, code or None, unit or None, value, low, high)
    quantity: list[tuple[str, str | None, str | None, str | None, float, float, float]] = field(
        default_factory=list
    )
    #: (param, uri)
    uri: list[tuple[str, str]] = field(default_factory=list)
    #: (param, target type or None, target id or None, target version or None, url or None)
    #: local references ("Patient/1", "http://our-base/Patient/1") fill type and id;
    #: canonical and external absolute URLs fill url only.
    reference: list[tuple[str, str | None, str | None, str | None, str | None]] = field(
        default_factory=list
    )
    #: (param, component values joined as a canonical string, see indexer.composite_key)
    composite: list[tuple[str, str]] = field(default_factory=list)
