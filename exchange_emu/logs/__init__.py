"""Exchange 2010 transport logs: message tracking and SMTP protocol logs, and their readers.

Writers emit Exchange's CSV formats (``MSGTRK*.LOG``, ``RECV*.LOG``, ``SEND*.LOG``) with time
from an injected clock and buffered, timer-flushed appends; readers parse them back for
``exchange-emu track`` with ``Get-MessageTrackingLog`` semantics. See docs/logs.md.
This package imports nothing else of exchange_emu.
"""

from exchange_emu.logs.interfaces import IMessageTrackingLog, IProtocolLog, IProtocolLogSession
from exchange_emu.logs.logfile import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_FILE_SIZE,
    format_timestamp,
    parse_timestamp,
)
from exchange_emu.logs.protocol_log import (
    PROTOCOL_EVENTS,
    PROTOCOL_FIELDS,
    NullProtocolLog,
    NullProtocolLogSession,
    ProtocolLog,
    ProtocolLogKind,
    ProtocolLogRow,
    ProtocolLogSession,
    read_protocol_log,
)
from exchange_emu.logs.tracking_event import (
    EVENT_IDS,
    SOURCES,
    TRACKING_FIELDS,
    CustomData,
    TrackingEvent,
    format_custom_data,
    parse_custom_data,
    scenario_step,
    scenario_steps,
)
from exchange_emu.logs.tracking_log import MessageTrackingLog, NullMessageTrackingLog
from exchange_emu.logs.tracking_reader import (
    find_tracking_logs,
    read_tracking_log,
    read_tracking_logs,
)
from exchange_emu.logs.tracking_search import (
    DEFAULT_RESULT_SIZE,
    event_to_dict,
    filter_events,
    format_table,
    to_json,
)

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_RESULT_SIZE",
    "EVENT_IDS",
    "PROTOCOL_EVENTS",
    "PROTOCOL_FIELDS",
    "SOURCES",
    "TRACKING_FIELDS",
    "CustomData",
    "IMessageTrackingLog",
    "IProtocolLog",
    "IProtocolLogSession",
    "MessageTrackingLog",
    "NullMessageTrackingLog",
    "NullProtocolLog",
    "NullProtocolLogSession",
    "ProtocolLog",
    "ProtocolLogKind",
    "ProtocolLogRow",
    "ProtocolLogSession",
    "TrackingEvent",
    "event_to_dict",
    "filter_events",
    "find_tracking_logs",
    "format_custom_data",
    "format_table",
    "format_timestamp",
    "parse_custom_data",
    "parse_timestamp",
    "read_protocol_log",
    "read_tracking_log",
    "read_tracking_logs",
    "scenario_step",
    "scenario_steps",
    "to_json",
]
