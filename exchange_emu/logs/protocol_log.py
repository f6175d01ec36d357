"""SMTP protocol logs: Exchange's ``SmtpReceive`` and ``SmtpSend`` connector logs.

Files are ``<dir>/SmtpReceive/RECV<yyyymmdd>-<n>.LOG`` and ``<dir>/SmtpSend/SEND<yyyymmdd>-<n>.LOG``
(Exchange: ``TransportRoles\\Logs\\ProtocolLog``), one row per protocol event with the columns
``date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,
context``. Events: ``+`` connect, ``-`` disconnect, ``>`` sent, ``<`` received, ``*`` information.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from exchange_emu.logs.interfaces import IProtocolLog, IProtocolLogSession
from exchange_emu.logs.logfile import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_FILE_SIZE,
    RollingLogFile,
    csv_field,
    format_timestamp,
    iter_csv_records,
    parse_timestamp,
)

__all__ = [
    "PROTOCOL_EVENTS",
    "PROTOCOL_FIELDS",
    "NullProtocolLog",
    "NullProtocolLogSession",
    "ProtocolLog",
    "ProtocolLogKind",
    "ProtocolLogRow",
    "ProtocolLogSession",
    "read_protocol_log",
]

ProtocolLogKind = Literal["SmtpReceive", "SmtpSend"]

PROTOCOL_FIELDS: tuple[str, ...] = (
    "date-time",
    "connector-id",
    "session-id",
    "sequence-number",
    "local-endpoint",
    "remote-endpoint",
    "event",
    "data",
    "context",
)
"""The columns of an Exchange 2010 SMTP protocol log, in file order."""

PROTOCOL_EVENTS: frozenset[str] = frozenset({"+", "-", ">", "<", "*"})
"""Protocol log event symbols: connect, disconnect, sent, received, information."""

_KINDS: dict[str, tuple[str, str]] = {
    "SmtpReceive": ("RECV", "SMTP Receive Protocol Log"),
    "SmtpSend": ("SEND", "SMTP Send Protocol Log"),
}

# .NET ticks (100 ns units since 0001-01-01) at the POSIX epoch; Exchange's session ids look
# like a tick count, so the emulator seeds its counter the same way.
_TICKS_AT_EPOCH = 621_355_968_000_000_000


@implementer(IProtocolLogSession)
class ProtocolLogSession:
    """The rows of one SMTP session in a protocol log, numbered from 0."""

    def __init__(
        self,
        log: ProtocolLog,
        *,
        session_id: str,
        connector_id: str,
        local: str,
        remote: str,
    ) -> None:
        self.session_id = session_id
        self.connector_id = connector_id
        self.local = local
        self.remote = remote
        self._log = log
        self._sequence = itertools.count()
        # The columns that stay the same for the whole session, quoted once: a session
        # writes a row per SMTP line, and this is the busiest log of a server.
        self._connector_session = f"{csv_field(connector_id)},{csv_field(session_id)},"
        self._endpoints = f",{csv_field(local)},{csv_field(remote)},"

    def _write(self, event: str, data: str, context: str) -> None:
        self._log._write_line(
            f"{self._connector_session}{next(self._sequence)}{self._endpoints}{event},"
            f"{csv_field(data)},{csv_field(context)}\r\n"
        )

    def connected(self, context: str = "") -> None:
        """Log ``+``: the session's connection opened."""
        self._write("+", "", context)

    def sent(self, data: str) -> None:
        """Log ``>``: a line this server sent."""
        self._write(">", data, "")

    def received(self, data: str) -> None:
        """Log ``<``: a line this server received."""
        self._write("<", data, "")

    def info(self, data: str, context: str = "") -> None:
        """Log ``*``: information, e.g. ``Tarpit for '0.00:00:25.639' due to 'DelayedAck'``."""
        self._write("*", data, context)

    def disconnected(self, context: str = "") -> None:
        """Log ``-``: the connection closed (context e.g. ``Local`` or ``Remote``)."""
        self._write("-", "", context)


@implementer(IProtocolLog)
class ProtocolLog:
    """The protocol log shared by all Receive (or all Send) connectors of a server.

    ``directory`` is the ``ProtocolLog`` directory; rows go to its ``SmtpReceive`` or
    ``SmtpSend`` subdirectory. Session ids are 16 upper-case hex digits from a counter seeded
    with the clock's time in .NET ticks, so they are unique within the log and across restarts.
    """

    def __init__(
        self,
        directory: Path,
        *,
        kind: ProtocolLogKind,
        clock: IReactorTime,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'SmtpReceive' or 'SmtpSend', not {kind!r}")
        prefix, log_type = _KINDS[kind]
        self.kind = kind
        self._clock = clock
        self._file = RollingLogFile(
            Path(directory) / kind,
            prefix=prefix,
            log_type=log_type,
            fields=PROTOCOL_FIELDS,
            clock=clock,
            max_file_size=max_file_size,
            flush_interval=flush_interval,
        )
        self._next_session = _TICKS_AT_EPOCH + int(clock.seconds() * 10_000_000)

    @property
    def directory(self) -> Path:
        """Where this log's ``RECV``/``SEND`` files are."""
        return self._file.directory

    @property
    def current_path(self) -> Path | None:
        """The file rows currently go to (created on the first flush)."""
        return self._file.current_path

    def open_session(self, connector_id: str, local: str, remote: str) -> ProtocolLogSession:
        """Start a session between ``local`` and ``remote`` (``ip:port``); nothing is logged yet."""
        session_id = f"{self._next_session & 0xFFFF_FFFF_FFFF_FFFF:016X}"
        self._next_session += 1
        return ProtocolLogSession(
            self, session_id=session_id, connector_id=connector_id, local=local, remote=remote
        )

    def _write_line(self, columns_after_date: str) -> None:
        """One row: the date-time, then the other columns already in CSV form."""
        now = self._clock.seconds()
        self._file.write_line(f"{format_timestamp(now)},{columns_after_date}", now)

    def flush(self) -> None:
        """Write buffered rows to disk now."""
        self._file.flush()

    def close(self) -> None:
        """Flush; rows written afterwards go straight to disk."""
        self._file.close()


@implementer(IProtocolLogSession)
class NullProtocolLogSession:
    """A session of a protocol log that is turned off."""

    session_id = "0000000000000000"

    def connected(self, context: str = "") -> None:
        """Log nothing."""

    def sent(self, data: str) -> None:
        """Log nothing."""

    def received(self, data: str) -> None:
        """Log nothing."""

    def info(self, data: str, context: str = "") -> None:
        """Log nothing."""

    def disconnected(self, context: str = "") -> None:
        """Log nothing."""


@implementer(IProtocolLog)
class NullProtocolLog:
    """Protocol logging off (a connector's ``ProtocolLoggingLevel`` ``None``): logs nothing."""

    def open_session(self, connector_id: str, local: str, remote: str) -> NullProtocolLogSession:
        """A session that logs nothing."""
        return NullProtocolLogSession()

    def flush(self) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True, kw_only=True)
class ProtocolLogRow:
    """One row of an SMTP protocol log."""

    date_time: datetime
    connector_id: str
    session_id: str
    sequence_number: int
    local_endpoint: str
    remote_endpoint: str
    event: str
    data: str
    context: str


def read_protocol_log(path: Path) -> Iterator[ProtocolLogRow]:
    """The rows of one ``RECV``/``SEND`` file; header lines, torn and malformed rows skipped."""
    for _line, columns, row in iter_csv_records(Path(path), PROTOCOL_FIELDS):
        values = dict(zip(columns, row, strict=True))
        try:
            yield ProtocolLogRow(
                date_time=parse_timestamp(values.get("date-time", "")),
                connector_id=values.get("connector-id", ""),
                session_id=values.get("session-id", ""),
                sequence_number=int(values.get("sequence-number", "")),
                local_endpoint=values.get("local-endpoint", ""),
                remote_endpoint=values.get("remote-endpoint", ""),
                event=values.get("event", ""),
                data=values.get("data", ""),
                context=values.get("context", ""),
            )
        except ValueError:
            continue
