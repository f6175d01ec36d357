"""Exchange's rolling CSV log file: header block, naming, rollover, buffered writes.

Exchange 2010 writes every transport log (message tracking, SMTP protocol logs) the same way:
a directory of files named ``<PREFIX><yyyymmdd>-<n>.LOG``, each opening with ``#Software``,
``#Version``, ``#Log-type``, ``#Date`` and ``#Fields`` lines, one CSV row per line after that,
and a new file when the date changes or the file reaches its maximum size (10 MB by default).

:class:`RollingLogFile` is that file set. Rows are buffered in memory and appended to disk by a
timer from the injected clock (every ``flush_interval`` seconds), when the buffer grows past
``max_buffer`` bytes, on :meth:`RollingLogFile.flush` and on :meth:`RollingLogFile.close`.
Each append is one ``write`` of whole rows to a file opened in append mode, so a process that
dies loses only the rows still in its buffer; at worst the last row of the last file is torn,
and the readers skip such a row. A restarted writer never appends to an existing file: it
starts the next ``-<n>`` of the day.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_FILE_SIZE",
    "SOFTWARE",
    "VERSION",
    "RollingLogFile",
    "csv_field",
    "format_timestamp",
    "iter_csv_records",
    "log_file_name",
    "parse_log_file_name",
    "parse_timestamp",
]

SOFTWARE = "Microsoft Exchange Server"
"""The ``#Software`` header value."""

VERSION = "14.0.0.0"
"""The ``#Version`` header value: Exchange 2010."""

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
"""Exchange's default maximum size of one log file (10 MB)."""

DEFAULT_FLUSH_INTERVAL = 0.5
"""Seconds between timed appends of the buffer to disk."""

DEFAULT_MAX_BUFFER = 64 * 1024
"""Buffered bytes that trigger an immediate append."""

_log = Logger()

_NAME = re.compile(r"^(?P<prefix>[A-Za-z]+)(?P<date>\d{8})-(?P<n>\d+)\.log$", re.IGNORECASE)


def format_timestamp(when: datetime | float) -> str:
    """Exchange's log ``date-time``: ISO 8601 UTC with milliseconds and ``Z``.

    Accepts an aware (or naive, taken as UTC) datetime or POSIX seconds; the fraction is
    truncated to whole milliseconds, e.g. ``2026-11-28T13:00:00.000Z``.
    """
    global _last_second, _last_moment, _last_millisecond
    if when.__class__ is float and _last_millisecond[0] <= when < _last_millisecond[1]:
        return _last_millisecond[2]
    if isinstance(when, datetime):
        # A naive datetime is UTC already; strftime once a second here too (tracking rows).
        moment = when if when.tzinfo is None or when.tzinfo is UTC else when.astimezone(UTC)
        key = moment.toordinal() * 86400 + moment.hour * 3600 + moment.minute * 60 + moment.second
        if _last_moment[0] != key:
            _last_moment = (key, moment.strftime("%Y-%m-%dT%H:%M:%S."))
        return f"{_last_moment[1]}{moment.microsecond // 1000:03d}Z"
    frac, whole = math.modf(when)  # as datetime.fromtimestamp rounds to microseconds
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second, ms = int(whole), micros // 1000
    if _last_second[0] != second:  # strftime once a second, not once a row
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (second, prefix)
    text = f"{_last_second[1]}{ms:03d}Z"
    # Rows come many to a millisecond: remember this one's text for the times well inside
    # it (_MARGIN each side, where rounding to microseconds, as above, could still carry
    # into the next millisecond; floats near now are 0.24 µs apart).
    start = second + ms / 1000
    _last_millisecond = (start + _MARGIN, start + 0.001 - _MARGIN, text)
    return text


_last_second: tuple[int | None, str] = (None, "")  # POSIX second, its strftime prefix
_last_millisecond: tuple[float, float, str] = (0.0, 0.0, "")  # [from, to) POSIX seconds, text
_MARGIN = 2e-6
_last_moment: tuple[int | None, str] = (None, "")  # seconds since 0001-01-01, its prefix


def parse_timestamp(text: str) -> datetime:
    """Parse a log ``date-time`` (ISO 8601, ``Z`` or offset, any fraction) to aware UTC.

    Raises ValueError for anything else.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty date-time")
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)\.(\d+)(Z|[+-]\d\d:?\d\d)?", value)
    if match:
        # Exchange may write 7 fractional digits; keep at most microseconds.
        value = f"{match[1]}.{match[2][:6].ljust(6, '0')}{match[3] or ''}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def log_file_name(prefix: str, day: str, n: int) -> str:
    """The file name Exchange gives the ``n``-th log file of ``day`` (``yyyymmdd``)."""
    return f"{prefix}{day}-{n}.LOG"


def parse_log_file_name(name: str, prefix: str | None = None) -> tuple[str, int] | None:
    """``(yyyymmdd, n)`` of a log file named ``<prefix><yyyymmdd>-<n>.LOG``, else None.

    Case-insensitive, as on Windows; ``prefix`` None accepts any letters.
    """
    match = _NAME.match(name)
    if match is None or (prefix is not None and match["prefix"].upper() != prefix.upper()):
        return None
    return match["date"], int(match["n"])


def csv_field(value: str) -> str:
    """One value as ``csv.QUOTE_MINIMAL`` writes it: quoted when it holds a comma, a quote
    or a line break, quotes doubled."""
    if '"' in value:
        return '"' + value.replace('"', '""') + '"'
    if "," in value or "\r" in value or "\n" in value:
        return '"' + value + '"'
    return value


def _csv_line(values: Sequence[str]) -> str:
    """One CSV row as Exchange writes it: minimal quoting, quotes doubled, CRLF."""
    line = ",".join(values)
    if (
        len(values) > 1
        and line.count(",") == len(values) - 1  # no value holds a comma
        and '"' not in line
        and "\r" not in line
        and "\n" not in line
    ):
        return line + "\r\n"  # the usual row, without the csv module's cost
    if len(values) > 1 and '"' not in line and "\r" not in line and "\n" not in line:
        # Only commas to quote (a tracking row's list of scenario steps): quote those values.
        return ",".join([f'"{v}"' if "," in v else v for v in values]) + "\r\n"
    if len(values) > 1:  # the csv module's minimal quoting, at a fraction of its cost
        return ",".join(map(csv_field, values)) + "\r\n"
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _complete_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines, without a last one that has no line end (torn by a crash mid-write)."""
    previous: str | None = None
    for line in lines:
        if previous is not None:
            yield previous
        previous = line
    if previous is not None and previous.endswith(("\n", "\r")):
        yield previous


def iter_csv_records(
    path: Path,
    default_fields: Sequence[str],
    *,
    on_error: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[int, tuple[str, ...], list[str]]]:
    """The data rows of an Exchange log file as ``(line, columns, values)``.

    ``#`` lines are directives; each ``#Fields:`` line sets the column names for the rows that
    follow (``default_fields`` before any). Rows whose length does not match are reported to
    ``on_error(line, reason)`` and skipped; a malformed last record, or a last line without
    a line end, is a row torn by a crash and skipped quietly. Reads UTF-8, BOM or not.
    """
    columns = tuple(default_fields)
    pending: tuple[int, tuple[str, ...], list[str]] | None = None
    with Path(path).open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(_complete_lines(handle))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:  # e.g. a field over csv.field_size_limit()
                if on_error is not None:
                    on_error(reader.line_num, str(error))
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if row[0].startswith("#"):
                directive = ",".join(row)
                name, _, value = directive.partition(":")
                if name.strip().lower() == "#fields":
                    columns = tuple(part.strip() for part in value.split(","))
                continue
            if pending is not None:
                yield from _checked(pending, on_error)
            pending = (reader.line_num, columns, row)
    if pending is not None and len(pending[2]) == len(pending[1]):
        yield pending  # a malformed last record is a row torn by a crash: skipped quietly


def _checked(
    record: tuple[int, tuple[str, ...], list[str]],
    on_error: Callable[[int, str], None] | None,
) -> Iterator[tuple[int, tuple[str, ...], list[str]]]:
    line, columns, row = record
    if len(row) == len(columns):
        yield record
    elif on_error is not None:
        on_error(line, f"{len(row)} values for {len(columns)} fields")


class RollingLogFile:
    """The file set behind one Exchange transport log (``MSGTRK``, ``RECV``, ``SEND``).

    Nothing touches the disk until the first flush; the file (with its header) is created
    then. Time, for row stamps, file dates and the flush timer, comes only from ``clock``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        prefix: str,
        log_type: str,
        fields: Sequence[str],
        clock: IReactorTime,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if max_file_size <= 0:
            raise ValueError("max_file_size must be positive")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        self.directory = Path(directory)
        self.prefix = prefix
        self.log_type = log_type
        self.fields = tuple(fields)
        self.max_file_size = max_file_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._clock = clock
        self._day: str | None = None
        self._day_number: int | None = None  # days since the epoch of ``_day_text``
        self._day_text = ""
        self._path: Path | None = None
        self._size = 0  # bytes of the current file: on disk plus buffered
        self._rows_in_file = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._timer: IDelayedCall | None = None
        self._closed = False

    @property
    def current_path(self) -> Path | None:
        """The file rows currently go to (it may not exist until the next flush)."""
        return self._path

    def now(self) -> float:
        """The clock's time, POSIX seconds."""
        return self._clock.seconds()

    def write_row(self, values: Sequence[str]) -> None:
        """Buffer one row; roll to a new file first on a date change or when full."""
        if len(values) != len(self.fields):
            raise ValueError(f"expected {len(self.fields)} values, got {len(values)}")
        self.write_line(_csv_line(values))

    def write_line(self, text: str, now: float | None = None) -> None:
        """Buffer one row already in CSV form (every field quoted as :func:`csv_field` does,
        ``\r\n`` at the end): the protocol logs' per-line path. ``now``: the clock's time,
        when the caller has just read it (for the row's date-time)."""
        # A peer's bytes that are not UTF-8 (kept as surrogates) are logged escaped
        # (``\udcff``): a log line must never fail because of what a client sent.
        line = text.encode("utf-8", "backslashreplace")
        if now is None:
            now = self._clock.seconds()
        if int(now // 86400) != self._day_number:
            self._day_number = int(now // 86400)
            self._day_text = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d")
        day = self._day_text
        full = self._rows_in_file > 0 and self._size + len(line) > self.max_file_size
        if self._path is None or day != self._day or full:
            self._start_file(day, now)
        self._append(line)
        self._rows_in_file += 1
        if self._closed or self._buffered >= self.max_buffer:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self.flush_interval, self._timed_flush)

    def flush(self) -> None:
        """Append everything buffered to the current file now."""
        self._cancel_timer()
        if not self._buffer:
            return
        assert self._path is not None
        data = b"".join(self._buffer)
        count = len(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("ab") as handle:
                handle.write(data)
        except OSError:
            _log.failure(
                "Could not append {count} line(s) to {path}; they are lost",
                count=count,
                path=str(self._path),
            )

    def close(self) -> None:
        """Flush and stop the timer. Rows written after this go straight to disk."""
        self._closed = True
        self.flush()

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _append(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self._size += len(data)

    def _start_file(self, day: str, now: float) -> None:
        self.flush()
        self._day = day
        self._path = self.directory / log_file_name(self.prefix, day, self._next_number(day))
        self._size = 0
        self._rows_in_file = 0
        header = (
            f"#Software: {SOFTWARE}\r\n"
            f"#Version: {VERSION}\r\n"
            f"#Log-type: {self.log_type}\r\n"
            f"#Date: {format_timestamp(now)}\r\n"
            f"#Fields: {','.join(self.fields)}\r\n"
        )
        self._append(header.encode("utf-8"))

    def _next_number(self, day: str) -> int:
        """One past the highest ``-<n>`` of ``day`` on disk or used by this writer."""
        highest = 0
        if self._path is not None:
            current = parse_log_file_name(self._path.name, self.prefix)
            if current is not None and current[0] == day:
                highest = current[1]
        try:
            names = [entry.name for entry in self.directory.iterdir()]
        except OSError:
            names = []
        for name in names:
            parsed = parse_log_file_name(name, self.prefix)
            if parsed is not None and parsed[0] == day:
                highest = max(highest, parsed[1])
        return highest + 1
