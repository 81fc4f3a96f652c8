"""Kubernetes quantities and Go durations, as they appear in Linkerd CRDs and annotations."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(1000),
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "Ki": Decimal(1024),
    "Mi": Decimal(1024) ** 2,
    "Gi": Decimal(1024) ** 3,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(n|u|m|k|M|G|Ki|Mi|Gi)?$")
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class InvalidValueError(ValueError):
    """A quantity or duration that does not parse."""


def parse_quantity(value: object) -> Decimal:
    """``"500m"`` -> 0.5, ``1`` -> 1, ``"2k"`` -> 2000."""
    if isinstance(value, bool):
        raise InvalidValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise InvalidValueError(f"invalid quantity {value!r}")
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]
    except InvalidOperation as exc:
        raise InvalidValueError(f"invalid quantity {value!r}") from exc


def parse_duration(value: object) -> float:
    """A Go duration (``"1m30s"``, ``"250ms"``) in seconds."""
    text = str(value).strip()
    if text in ("0", ""):
        if text == "":
            raise InvalidValueError("empty duration")
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise InvalidValueError(f"invalid duration {value!r}")
    return total
