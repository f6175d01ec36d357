"""Searching and showing tracking events with ``Get-MessageTrackingLog`` semantics.

:func:`filter_events` takes the cmdlet's filters; :func:`format_table` and :func:`to_json` show
the result with the cmdlet's property names (``Timestamp``, ``EventId``, ``Recipients``...).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from exchange_emu.logs.logfile import format_timestamp
from exchange_emu.logs.tracking_event import TrackingEvent

__all__ = [
    "DEFAULT_RESULT_SIZE",
    "event_to_dict",
    "filter_events",
    "format_table",
    "to_json",
]

DEFAULT_RESULT_SIZE = 1000
"""``Get-MessageTrackingLog``'s default ``-ResultSize``."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _message_id(value: str) -> str:
    return value.strip().strip("<>").lower()


def _names_server(hostname: str, server: str) -> bool:
    host, wanted = hostname.strip().lower(), server.strip().lower()
    return bool(host) and (host == wanted or host.split(".")[0] == wanted.split(".")[0])


def filter_events(
    events: Iterable[TrackingEvent],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    event_id: str | None = None,
    message_id: str | None = None,
    internal_message_id: str | None = None,
    sender: str | None = None,
    recipients: Sequence[str] | str | None = None,
    subject: str | None = None,
    reference: str | None = None,
    server: str | None = None,
    result_size: int | None = DEFAULT_RESULT_SIZE,
) -> list[TrackingEvent]:
    """The events matching every filter given, in input order, at most ``result_size``.

    As ``Get-MessageTrackingLog``: ``start`` inclusive, ``end`` exclusive (naive datetimes are
    UTC); ``subject`` matches a case-insensitive substring; ``recipients`` matches an event
    with any of them; ``event_id``, ``sender``, ``message_id`` (angle brackets optional),
    ``internal_message_id`` and ``reference`` match whole values, case-insensitively.
    ``server`` matches ``server-hostname`` by name or FQDN. ``result_size`` None is Unlimited.
    """
    if result_size is not None and result_size < 1:
        raise ValueError("result_size must be a positive number or None (Unlimited)")
    begin = _utc(start) if start is not None else None
    stop = _utc(end) if end is not None else None
    wanted_event = event_id.strip().upper() if event_id is not None else None
    wanted_message = _message_id(message_id) if message_id is not None else None
    wanted_sender = sender.strip().lower() if sender is not None else None
    if isinstance(recipients, str):
        recipients = [recipients]
    wanted_recipients = (
        {address.strip().lower() for address in recipients} if recipients is not None else None
    )
    wanted_subject = subject.lower() if subject is not None else None

    def matches(event: TrackingEvent) -> bool:
        if begin is not None or stop is not None:
            when = event.date_time
            if when is None:
                return False
            if begin is not None and when < begin:
                return False
            if stop is not None and when >= stop:
                return False
        if wanted_event is not None and event.event_id != wanted_event:
            return False
        if wanted_message is not None and _message_id(event.message_id) != wanted_message:
            return False
        if (
            internal_message_id is not None
            and event.internal_message_id.strip().lower() != internal_message_id.strip().lower()
        ):
            return False
        if wanted_sender is not None and event.sender_address.strip().lower() != wanted_sender:
            return False
        if wanted_recipients is not None and not any(
            address.strip().lower() in wanted_recipients for address in event.recipient_address
        ):
            return False
        if wanted_subject is not None and wanted_subject not in event.message_subject.lower():
            return False
        if reference is not None and event.reference.strip().lower() != reference.strip().lower():
            return False
        return server is None or _names_server(event.server_hostname, server)

    selected = (event for event in events if matches(event))
    return list(itertools.islice(selected, result_size))


def event_to_dict(event: TrackingEvent) -> dict[str, Any]:
    """The event with ``Get-MessageTrackingLog`` property names (dashes dropped, CamelCase)."""
    return {
        "Timestamp": format_timestamp(event.date_time) if event.date_time else None,
        "ClientIp": event.client_ip,
        "ClientHostname": event.client_hostname,
        "ServerIp": event.server_ip,
        "ServerHostname": event.server_hostname,
        "SourceContext": event.source_context,
        "ConnectorId": event.connector_id,
        "Source": event.source,
        "EventId": event.event_id,
        "InternalMessageId": event.internal_message_id,
        "MessageId": event.message_id,
        "Recipients": list(event.recipient_address),
        "RecipientStatus": list(event.recipient_status),
        "TotalBytes": event.total_bytes,
        "RecipientCount": event.recipient_count,
        "RelatedRecipientAddress": event.related_recipient_address,
        "Reference": event.reference,
        "MessageSubject": event.message_subject,
        "Sender": event.sender_address,
        "ReturnPath": event.return_path,
        "MessageInfo": event.message_info,
        "Directionality": event.directionality,
        "TenantId": event.tenant_id,
        "OriginalClientIp": event.original_client_ip,
        "OriginalServerIp": event.original_server_ip,
        "CustomData": dict(event.custom_data),
    }


def to_json(events: Iterable[TrackingEvent]) -> str:
    """A JSON array of :func:`event_to_dict` objects."""
    return json.dumps([event_to_dict(event) for event in events], indent=2, ensure_ascii=False)


_TABLE: tuple[tuple[str, int], ...] = (
    ("Timestamp", 24),
    ("ServerHostname", 24),
    ("EventId", 16),
    ("Source", 12),
    ("Sender", 32),
    ("Recipients", 40),
    ("MessageSubject", 40),
    ("Steps", 24),
)


def _cell(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_table(events: Iterable[TrackingEvent]) -> str:
    """A fixed-width text table, one line per event, like ``Get-MessageTrackingLog | ft``.

    Columns: Timestamp, ServerHostname, EventId, Source, Sender, Recipients (comma-separated),
    MessageSubject and the scenario Step; long values are cut with ``...``.
    """
    rows = [
        [
            format_timestamp(event.date_time) if event.date_time else "",
            event.server_hostname,
            event.event_id,
            event.source,
            event.sender_address,
            ", ".join(event.recipient_address),
            event.message_subject,
            ",".join(event.steps),
        ]
        for event in events
    ]
    cells = [
        [_cell(text, limit) for text, (_, limit) in zip(row, _TABLE, strict=True)] for row in rows
    ]
    widths = [
        max([len(name), *(len(row[index]) for row in cells)])
        for index, (name, _) in enumerate(_TABLE)
    ]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line([name for name, _ in _TABLE]), line(["-" * len(name) for name, _ in _TABLE])]
    out.extend(line(row) for row in cells)
    return "\n".join(out) + "\n"
