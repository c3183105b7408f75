"""Checks for FHIR R4 primitive values as they appear in JSON (type and lexical format).

Each checker takes the JSON value and returns None when it is valid, else the tail of a
message ("is not a valid date (expected ...)") that the validator prefixes with the location
and the offending value. The formats are the regexes of the R4 primitive StructureDefinitions;
cheap string tests come first because most values are short and valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from carebase.fhir.json_io import FhirDecimal

#: returns None if the value is fine, else why it is not
PrimitiveCheck = Callable[[object], str | None]

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE_RE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?")
_DATETIME_RE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?")
_INSTANT_RE = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}")
_TIME_RE = re.compile(_TIME)
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID_RE = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/=\s]*")
#: the regexes of the spec are Java regexes, where \s is ASCII whitespace only
_WS = " \t\n\x0b\f\r"
_CODE_RE = re.compile(f"[^{_WS}]+([{_WS}][^{_WS}]+)*")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_INT32 = (-2147483648, 2147483647)


def _calendar_error(value: str) -> str | None:
    """The regexes allow 2019-02-31; a full date must also exist in the calendar."""
    if len(value) >= 10 and value[8:10] > "28":  # only days 29-31 can be impossible
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        if day > _DAYS_IN_MONTH[month] or (month == 2 and day == 29 and not leap):
            return "is not a day of the calendar"
    return None


def _text_error(value: str) -> str | None:
    if not value:
        return "is empty (omit the element instead of sending an empty string)"
    if not value.isprintable():  # slow path only for strings with newlines, tabs, NBSP...
        for ch in value:
            if ch < " " and ch not in "\t\r\n":
                return f"contains the control character U+{ord(ch):04X}"
    return None


def check_string(value: object) -> str | None:
    """string and markdown: non-empty, no control characters other than tab/CR/LF."""
    if type(value) is not str:
        return "must be a JSON string"
    if value and value.isprintable():
        return None
    return _text_error(value)


def check_code(value: object) -> str | None:
    """code: no leading/trailing whitespace, single whitespace characters between words."""
    if type(value) is not str:
        return "must be a JSON string"
    if not value:
        return _text_error(value)
    if value.isprintable() and value[0] != " " and value[-1] != " " and "  " not in value:
        return None
    if _CODE_RE.fullmatch(value) is None:
        return "is not a valid code (no leading, trailing or repeated whitespace)"
    return _text_error(value)


def check_id(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _ID_RE.fullmatch(value) is None:
        return "is not a valid id (expected 1-64 characters from A-Z, a-z, 0-9, '-', '.')"
    return None


def check_uri(value: object) -> str | None:
    """uri, url, canonical: any non-empty text without whitespace."""
    if type(value) is not str:
        return "must be a JSON string"
    if not value:
        return _text_error(value)
    if " " in value or (not value.isprintable() and any(ch < " " for ch in value)):
        return "is not a valid URI (whitespace and control characters are not allowed)"
    return None


def check_oid(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _OID_RE.fullmatch(value) is None:
        return "is not a valid oid (expected urn:oid:1.2.3...)"
    return None


def check_uuid(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _UUID_RE.fullmatch(value) is None:
        return "is not a valid uuid (expected urn:uuid: and a lower-case UUID)"
    return None


def check_date(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _DATE_RE.fullmatch(value) is None:
        return "is not a valid date (expected YYYY, YYYY-MM or YYYY-MM-DD)"
    return _calendar_error(value)


def check_datetime(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _DATETIME_RE.fullmatch(value) is None:
        return (
            "is not a valid dateTime (expected YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm:ss[.fff] with a time zone (Z or +hh:mm))"
        )
    return _calendar_error(value)


def check_instant(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _INSTANT_RE.fullmatch(value) is None:
        return "is not a valid instant (expected YYYY-MM-DDThh:mm:ss[.fff] and Z or +hh:mm)"
    return _calendar_error(value)


def check_time(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if _TIME_RE.fullmatch(value) is None:
        return "is not a valid time (expected hh:mm:ss[.fff])"
    return None


def check_base64(value: object) -> str | None:
    if type(value) is not str:
        return "must be a JSON string"
    if not value:
        return _text_error(value)
    if _BASE64_RE.fullmatch(value) is None:
        return "is not valid base64 (allowed: A-Z a-z 0-9 + / = and whitespace)"
    length = len(value) if value.isalnum() else len("".join(value.split()))
    if length % 4:
        return "is not valid base64 (the length without whitespace must be a multiple of 4)"
    return None


def check_boolean(value: object) -> str | None:
    if type(value) is not bool:
        return "must be a JSON boolean (true or false)"
    return None


def check_decimal(value: object) -> str | None:
    kind = type(value)
    if kind is not int and kind is not float and kind is not FhirDecimal:
        return "must be a JSON number"
    return None


def check_integer(value: object) -> str | None:
    if type(value) is not int:
        return "must be a JSON number without a fraction (an integer)"
    if not _INT32[0] <= value <= _INT32[1]:
        return "is out of range for integer (32-bit signed)"
    return None


def check_positive_int(value: object) -> str | None:
    if type(value) is not int:
        return "must be a JSON number without a fraction (a positiveInt)"
    if not 1 <= value <= _INT32[1]:
        return "is not a positiveInt (expected 1 or more)"
    return None


def check_unsigned_int(value: object) -> str | None:
    if type(value) is not int:
        return "must be a JSON number without a fraction (an unsignedInt)"
    if not 0 <= value <= _INT32[1]:
        return "is not an unsignedInt (expected 0 or more)"
    return None


#: FHIR primitive type code -> checker ("xhtml" is handled by the narrative module)
PRIMITIVE_CHECKS: dict[str, PrimitiveCheck] = {
    "string": check_string,
    "markdown": check_string,
    "code": check_code,
    "id": check_id,
    "uri": check_uri,
    "url": check_uri,
    "canonical": check_uri,
    "oid": check_oid,
    "uuid": check_uuid,
    "date": check_date,
    "dateTime": check_datetime,
    "instant": check_instant,
    "time": check_time,
    "base64Binary": check_base64,
    "boolean": check_boolean,
    "decimal": check_decimal,
    "integer": check_integer,
    "positiveInt": check_positive_int,
    "unsignedInt": check_unsigned_int,
}
