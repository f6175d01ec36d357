"""``Get-MessageTrackingLog`` for the lab: search the message tracking logs of some servers.

Each server keeps its logs in ``<data_dir>/TransportRoles/Logs/MessageTracking``. Exchange's
``-Server`` picks whose logs are searched (here: one or more servers, by default every server
of the organization); the other filters are :func:`exchange_emu.logs.filter_events`. Events
of several servers are merged in time order, stably (ties keep the servers' order in the
organization file, then file order); ``-ResultSize`` applies to the merged stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exchange_emu.directory import Organization, Server
from exchange_emu.logs import (
    DEFAULT_RESULT_SIZE,
    EVENT_IDS,
    TrackingEvent,
    filter_events,
    find_tracking_logs,
    parse_timestamp,
    read_tracking_log,
)

__all__ = [
    "TRACKING_LOG_SUBDIR",
    "TrackingQuery",
    "TrackingQueryError",
    "TrackingSearch",
    "merge_by_time",
    "search_tracking_logs",
    "select_servers",
    "tracking_log_directory",
]

TRACKING_LOG_SUBDIR = Path("TransportRoles", "Logs", "MessageTracking")
"""Where a server's ``MSGTRK*.LOG`` files live, relative to its data directory (as Exchange)."""


class TrackingQueryError(ValueError):
    """A ``Get-MessageTrackingLog`` parameter that does not parse; the message is one line."""


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise TrackingQueryError(
            f"{option} {text!r} is not an ISO 8601 date or time (e.g. 2026-11-28T13:00:00Z)"
        ) from None


def _result_size(text: str | None) -> int | None:
    if text is None:
        return DEFAULT_RESULT_SIZE
    if text.strip().lower() == "unlimited":
        return None
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise TrackingQueryError(f"--result-size {text!r} is not a positive number or 'unlimited'")
    return int(value)


@dataclass(frozen=True)
class TrackingQuery:
    """The filters of ``Get-MessageTrackingLog`` (``-Start``, ``-End``, ``-EventId``...).

    Matching is :func:`exchange_emu.logs.filter_events`'s; ``result_size`` None is Unlimited.
    """

    start: datetime | None = None
    end: datetime | None = None
    event_id: str | None = None
    message_id: str | None = None
    internal_message_id: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] | None = None
    subject: str | None = None
    reference: str | None = None
    result_size: int | None = DEFAULT_RESULT_SIZE

    @classmethod
    def from_text(
        cls,
        *,
        start: str | None = None,
        end: str | None = None,
        event_id: str | None = None,
        message_id: str | None = None,
        internal_message_id: str | None = None,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        subject: str | None = None,
        reference: str | None = None,
        result_size: str | None = None,
    ) -> TrackingQuery:
        """A query from command-line text; raises :class:`TrackingQueryError` on bad input.

        Dates are ISO 8601 (naive means UTC); ``event_id`` must be a known event id;
        ``internal_message_id`` a number; ``result_size`` a positive number or ``unlimited``.
        """
        begin, stop = _when(start, "--start"), _when(end, "--end")
        if begin is not None and stop is not None and begin > stop:
            raise TrackingQueryError(f"--start {start} is after --end {end}")
        wanted_event = None
        if event_id is not None:
            wanted_event = event_id.strip().upper()
            if wanted_event not in EVENT_IDS:
                raise TrackingQueryError(
                    f"unknown event id {event_id!r} (event ids: {', '.join(sorted(EVENT_IDS))})"
                )
        if internal_message_id is not None and not internal_message_id.strip().isdigit():
            raise TrackingQueryError(
                f"--internal-message-id {internal_message_id!r} is not a number"
            )
        return cls(
            start=begin,
            end=stop,
            event_id=wanted_event,
            message_id=message_id,
            internal_message_id=internal_message_id.strip() if internal_message_id else None,
            sender=sender,
            recipients=tuple(recipients) if recipients else None,
            subject=subject,
            reference=reference,
            result_size=_result_size(result_size),
        )

    def apply(self, events: Iterable[TrackingEvent]) -> list[TrackingEvent]:
        """The matching events in input order, without the result size limit."""
        return filter_events(
            events,
            start=self.start,
            end=self.end,
            event_id=self.event_id,
            message_id=self.message_id,
            internal_message_id=self.internal_message_id,
            sender=self.sender,
            recipients=self.recipients,
            subject=self.subject,
            reference=self.reference,
            result_size=None,
        )


@dataclass(frozen=True)
class TrackingSearch:
    """What a search found: the events, the servers searched and the log files read."""

    events: tuple[TrackingEvent, ...]
    servers: tuple[Server, ...]
    log_files: tuple[Path, ...]
    truncated: bool = False
    """More events matched than ``result_size`` allowed."""


def tracking_log_directory(server: Server) -> Path:
    """The server's message tracking log directory (``<data_dir>/TransportRoles/...``)."""
    return server.data_dir / TRACKING_LOG_SUBDIR


def select_servers(organization: Organization, names: Sequence[str] | None) -> tuple[Server, ...]:
    """The servers named (``-Server``; case-insensitive), or every server; in file order.

    Raises :class:`~exchange_emu.directory.UnknownServerError` for a name not in the file.
    """
    if not names:
        return tuple(organization.servers.values())
    wanted = {organization.server(name).name for name in names}
    return tuple(s for s in organization.servers.values() if s.name in wanted)


_NO_TIME = datetime.max.replace(tzinfo=UTC)


def merge_by_time(streams: Iterable[Iterable[TrackingEvent]]) -> list[TrackingEvent]:
    """The events of several servers in time order, stably: equal times keep the streams'
    order, then each stream's own order. Events without a time go last."""
    return sorted(
        itertools.chain.from_iterable(streams),
        key=lambda event: event.date_time or _NO_TIME,
    )


def search_tracking_logs(
    organization: Organization,
    query: TrackingQuery,
    servers: Sequence[str] | None = None,
) -> TrackingSearch:
    """``Get-MessageTrackingLog`` over the named servers' logs (default: every server).

    Unreadable rows are skipped (the reader logs a warning). Raises UnknownServerError.
    """
    chosen = select_servers(organization, servers)
    files: list[Path] = []
    streams: list[list[TrackingEvent]] = []
    for server in chosen:
        paths = find_tracking_logs(tracking_log_directory(server))
        files.extend(paths)
        events = itertools.chain.from_iterable(read_tracking_log(path) for path in paths)
        streams.append(query.apply(events))
    merged = merge_by_time(streams)
    limit = query.result_size
    truncated = limit is not None and len(merged) > limit
    return TrackingSearch(
        events=tuple(merged[:limit] if limit is not None else merged),
        servers=chosen,
        log_files=tuple(files),
        truncated=truncated,
    )
