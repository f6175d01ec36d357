"""Administration of the emulated organization: what an Exchange admin does in the shell.

``tracking``: ``Get-MessageTrackingLog`` over one server's or every server's logs
(``exchange-emu track``). ``queues``: the queue viewer cmdlets (Get-Queue, Suspend-Message, …)
on a running transport server, with ``identity`` and ``filters``; ``transport_config`` and
``receive_connectors``: Get/Set-TransportConfig and Get/Set-ReceiveConnector;
``server_api``: each server's admin endpoint (HTTP/JSON, ``http_json``); ``cli_queues``
and ``formatting``: the ``exchange-emu`` subcommands and their tables (docs/management.md).
"""

from exchange_emu.admin.tracking import (
    TRACKING_LOG_SUBDIR,
    TrackingQuery,
    TrackingQueryError,
    TrackingSearch,
    merge_by_time,
    search_tracking_logs,
    select_servers,
    tracking_log_directory,
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
