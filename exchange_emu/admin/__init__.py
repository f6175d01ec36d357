"""Administration of the emulated organization: what an Exchange admin does in the shell.

``tracking``: ``Get-MessageTrackingLog`` over one server's or every server's logs
(``exchange-emu track``).
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
