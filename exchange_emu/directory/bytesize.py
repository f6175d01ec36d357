"""Exchange's ByteQuantifiedSize text (``"18MB"``, ``"36 MB"``, ``"512KB"``) as int bytes.

Units are binary (1 KB = 1024 bytes) as in Exchange. The form Exchange itself displays,
``"18 MB (18,874,368 bytes)"``, is accepted too; ``"unlimited"`` is accepted where the
setting allows it and becomes :data:`UNLIMITED`.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal, InvalidOperation
from typing import Final

UNLIMITED: Final[int] = sys.maxsize
"""Byte count standing for Exchange's ``Unlimited`` (larger than any real size)."""

_UNITS: Final[dict[str, int]] = {
    "": 1,
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
}
_SIZE = re.compile(
    r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)"
    r"(?:\s*\((?P<bytes>[\d,]+)\s*bytes\))?"
)


def parse_byte_size(value: str | int, *, allow_unlimited: bool = True) -> int:
    """Parse a ByteQuantifiedSize (``"18MB"``) or an integer of bytes into bytes.

    Raises ValueError with a message fit for an error line on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size like '10MB' or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a size is a number of bytes >= 0")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size like '10MB' or a number of bytes")
    text = value.strip()
    if text.lower() == "unlimited":
        if not allow_unlimited:
            raise ValueError("'unlimited' is not allowed for this setting")
        return UNLIMITED
    match = _SIZE.fullmatch(text)
    unit = match["unit"].upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a size like '10MB', '512KB', '36 MB' or bytes")
    try:
        size = int(Decimal(match["number"]) * _UNITS[unit])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{value!r} is not a size") from exc
    if match["bytes"] is not None and int(match["bytes"].replace(",", "")) != size:
        raise ValueError(f"{value!r}: the byte count in parentheses does not match the size")
    return size


def format_byte_size(size: int) -> str:
    """Format bytes as Exchange shows them: ``18874368`` is ``"18 MB (18,874,368 bytes)"``."""
    if size >= UNLIMITED:
        return "Unlimited"
    for unit in ("TB", "GB", "MB", "KB"):
        if size >= _UNITS[unit]:
            amount = Decimal(size) / _UNITS[unit]
            shown = f"{amount:.2f}".rstrip("0").rstrip(".")
            return f"{shown} {unit} ({size:,} bytes)"
    return f"{size} B ({size:,} bytes)"
