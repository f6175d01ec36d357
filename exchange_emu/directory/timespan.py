"""Exchange's TimeSpan text (``[d.]hh:mm:ss[.fffffff]``) as float seconds.

Exchange cmdlets take and show durations as .NET TimeSpan values: ``00:15:00`` is fifteen
minutes, ``2.00:00:00`` two days, ``00:00:25.639`` 25.639 seconds.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_TIMESPAN = re.compile(
    r"(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2})"
    r"(?:\.(?P<fraction>\d{1,7}))?"
)
_TICKS_PER_SECOND = 10_000_000  # a .NET tick is 100 ns


def parse_timespan(text: str) -> float:
    """Parse a TimeSpan such as ``"00:15:00"`` or ``"2.00:00:00"`` into seconds.

    Raises ValueError (with a message fit for an error line) on anything else, including
    negative values, out-of-range hours/minutes/seconds and bare numbers.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a TimeSpan string like '00:15:00'")
    match = _TIMESPAN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan [d.]hh:mm:ss[.fff] (e.g. '00:15:00')")
    hours, minutes, seconds = (int(match[name]) for name in ("hours", "minutes", "seconds"))
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(
            f"{text!r} is not a TimeSpan: hours must be 0-23, minutes and seconds 0-59"
        )
    days = int(match["days"] or 0)
    fraction = Decimal("0." + match["fraction"]) if match["fraction"] else Decimal(0)
    total = Decimal(((days * 24 + hours) * 60 + minutes) * 60 + seconds) + fraction
    return float(total)


def format_timespan(seconds: float) -> str:
    """Format seconds as Exchange shows a TimeSpan: ``900.0`` gives ``"00:15:00"``.

    Days appear only when non-zero (``"2.00:00:00"``); a fraction appears only when non-zero,
    without trailing zeros (``"00:00:25.639"``). The result parses back with parse_timespan.
    """
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{seconds!r} is not a non-negative number of seconds")
    ticks = round(Decimal(str(seconds)) * _TICKS_PER_SECOND)
    whole, fraction = divmod(ticks, _TICKS_PER_SECOND)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if days:
        text = f"{days}.{text}"
    if fraction:
        text += "." + f"{fraction:07d}".rstrip("0")
    return text
