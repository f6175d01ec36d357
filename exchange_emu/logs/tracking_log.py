"""The message tracking log writer (Exchange's ``MessageTracking`` directory).

Exchange keeps it in ``<install>\\TransportRoles\\Logs\\MessageTracking``; the emulator in
``<data_dir>/TransportRoles/Logs/MessageTracking``, given by the caller. Files are
``MSGTRK<yyyymmdd>-<n>.LOG``; see :mod:`exchange_emu.logs.logfile` for buffering, rollover and
what a crash can lose.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from exchange_emu.logs.interfaces import IMessageTrackingLog
from exchange_emu.logs.logfile import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_FILE_SIZE,
    RollingLogFile,
    format_timestamp,
)
from exchange_emu.logs.tracking_event import TRACKING_FIELDS, TrackingEvent, event_to_row

__all__ = [
    "TRACKING_LOG_PREFIX",
    "TRACKING_LOG_TYPE",
    "MessageTrackingLog",
    "NullMessageTrackingLog",
]

TRACKING_LOG_PREFIX = "MSGTRK"
"""File name prefix of a hub or edge message tracking log."""

TRACKING_LOG_TYPE = "Message Tracking Log"
"""The ``#Log-type`` header value."""

_DATE_TIME = TRACKING_FIELDS.index("date-time")
_SERVER_HOSTNAME = TRACKING_FIELDS.index("server-hostname")
_SERVER_IP = TRACKING_FIELDS.index("server-ip")
_MESSAGE_SUBJECT = TRACKING_FIELDS.index("message-subject")


@implementer(IMessageTrackingLog)
class MessageTrackingLog:
    """A server's message tracking log, written in Exchange 2010's CSV format.

    ``server_name``/``server_ip`` fill an event's empty ``server-hostname``/``server-ip``.
    ``subject_logging`` is Exchange's ``MessageTrackingLogSubjectLoggingEnabled``: when off,
    ``message-subject`` is left empty. ``max_file_size`` is ``MessageTrackingLogMaxFileSize``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        server_name: str,
        server_ip: str = "127.0.0.1",
        clock: IReactorTime,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        subject_logging: bool = True,
    ) -> None:
        self.server_name = server_name
        self.server_ip = server_ip
        self.subject_logging = subject_logging
        self._clock = clock
        self._file = RollingLogFile(
            Path(directory),
            prefix=TRACKING_LOG_PREFIX,
            log_type=TRACKING_LOG_TYPE,
            fields=TRACKING_FIELDS,
            clock=clock,
            max_file_size=max_file_size,
            flush_interval=flush_interval,
        )

    @property
    def directory(self) -> Path:
        """Where the ``MSGTRK*.LOG`` files are."""
        return self._file.directory

    @property
    def current_path(self) -> Path | None:
        """The file events currently go to (created on the first flush)."""
        return self._file.current_path

    def stamp(self, event: TrackingEvent) -> TrackingEvent:
        """The event as it will be written: time, this server and subject policy applied."""
        return dataclasses.replace(
            event,
            date_time=event.date_time or datetime.fromtimestamp(self._clock.seconds(), tz=UTC),
            server_hostname=event.server_hostname or self.server_name,
            server_ip=event.server_ip or self.server_ip,
            message_subject=event.message_subject if self.subject_logging else "",
        )

    def record(self, event: TrackingEvent) -> None:
        """Log one event (buffered; on disk within ``flush_interval`` seconds).

        Writes the row of :meth:`stamp`'s event, filled in on the row itself rather than by
        building a second event (this runs several times per relayed message).
        """
        row = event_to_row(event)
        if event.date_time is None:
            row[_DATE_TIME] = format_timestamp(self._clock.seconds())
        if not event.server_hostname:
            row[_SERVER_HOSTNAME] = self.server_name
        if not event.server_ip:
            row[_SERVER_IP] = self.server_ip
        if not self.subject_logging:
            row[_MESSAGE_SUBJECT] = ""
        self._file.write_row(row)

    def flush(self) -> None:
        """Write buffered events to disk now."""
        self._file.flush()

    def close(self) -> None:
        """Flush; events recorded afterwards are written through immediately."""
        self._file.close()


@implementer(IMessageTrackingLog)
class NullMessageTrackingLog:
    """Message tracking turned off (``MessageTrackingLogEnabled`` false): logs nothing."""

    def record(self, event: TrackingEvent) -> None:
        """Discard the event."""

    def flush(self) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to release."""


def server_tracking_log(data_dir: Path, fqdn: str, clock: IReactorTime) -> MessageTrackingLog:
    """A server's message tracking log, where Exchange keeps it under the server's data
    directory (``TransportRoles/Logs/MessageTracking``); all its roles write to it."""
    return MessageTrackingLog(Path(data_dir) / "TransportRoles" / "Logs" / "MessageTracking",
                              server_name=fqdn, clock=clock)
