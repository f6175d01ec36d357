"""Reading message tracking logs back, as ``Get-MessageTrackingLog`` does.

The reader maps columns by the file's ``#Fields`` line, so it also reads files Exchange made
(extra columns are ignored, missing ones are empty). Rows it cannot turn into a
:class:`~exchange_emu.logs.tracking_event.TrackingEvent` (wrong column count, bad date-time,
an event-id or source the emulator does not know) are skipped with a warning, or raise
ValueError when ``strict``; a torn last line (crash mid-write) is always skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from twisted.logger import Logger

from exchange_emu.logs.logfile import iter_csv_records, parse_log_file_name
from exchange_emu.logs.tracking_event import TRACKING_FIELDS, TrackingEvent, event_from_row

__all__ = ["find_tracking_logs", "read_tracking_log", "read_tracking_logs"]

_log = Logger()


def read_tracking_log(path: Path, *, strict: bool = False) -> Iterator[TrackingEvent]:
    """The events of one ``MSGTRK*.LOG`` file, in file order."""
    path = Path(path)

    def reject(line: int, reason: str) -> None:
        if strict:
            raise ValueError(f"{path}:{line}: {reason}")
        _log.warn("Skipping {path}:{line}: {reason}", path=str(path), line=line, reason=reason)

    for line, columns, row in iter_csv_records(path, TRACKING_FIELDS, on_error=reject):
        try:
            event = event_from_row(dict(zip(columns, row, strict=True)))
        except ValueError as error:
            reject(line, str(error))
            continue
        yield event


def _order(path: Path) -> tuple[str, int, str]:
    parsed = parse_log_file_name(path.name)
    if parsed is None:
        return ("", 0, path.name)
    return (parsed[0], parsed[1], path.name)


def find_tracking_logs(directory: Path) -> list[Path]:
    """The ``MSGTRK*.LOG`` files in ``directory``, oldest first (by date, then ``-<n>``).

    Case-insensitive names; Exchange's mailbox-role ``MSGTRKM…`` files are included.
    A missing directory has no logs.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        entry
        for entry in directory.iterdir()
        if entry.is_file()
        and entry.name.upper().startswith("MSGTRK")
        and entry.name.upper().endswith(".LOG")
    ]
    return sorted(found, key=_order)


def read_tracking_logs(directory: Path, *, strict: bool = False) -> Iterator[TrackingEvent]:
    """The events of every tracking log in ``directory``, oldest file first."""
    return itertools.chain.from_iterable(
        read_tracking_log(path, strict=strict) for path in find_tracking_logs(directory)
    )
