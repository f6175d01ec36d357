"""Organization-wide transport settings (``Set-TransportConfig`` / ``Set-TransportServer``).

The ``[transport]`` table uses Exchange's own PascalCase parameter names; the dataclass
exposes them in snake_case, durations as float seconds and sizes as int bytes. Defaults are
Exchange 2010's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from exchange_emu.directory._table import Table

_Kind = Literal["bool", "timespan", "count", "size"]


@dataclass(frozen=True)
class _Spec:
    exchange_name: str
    kind: _Kind
    minimum: float = 0
    maximum: float | None = None


# attribute name -> how it is written and checked in the [transport] table
_SPECS: Final[dict[str, _Spec]] = {
    "shadow_redundancy_enabled": _Spec("ShadowRedundancyEnabled", "bool"),
    "shadow_heartbeat_timeout_interval": _Spec("ShadowHeartbeatTimeoutInterval", "timespan", 1),
    "shadow_heartbeat_retry_count": _Spec("ShadowHeartbeatRetryCount", "count", 1),
    "shadow_message_auto_discard_interval": _Spec(
        "ShadowMessageAutoDiscardInterval", "timespan", 1
    ),
    "shadow_redundancy_promotion_enabled": _Spec("ShadowRedundancyPromotionEnabled", "bool"),
    "max_dumpster_size_per_database": _Spec("MaxDumpsterSizePerDatabase", "size"),
    "max_dumpster_time": _Spec("MaxDumpsterTime", "timespan"),
    "queue_glitch_retry_count": _Spec("QueueGlitchRetryCount", "count"),
    "queue_glitch_retry_interval": _Spec("QueueGlitchRetryInterval", "timespan", 0.001),
    "transient_failure_retry_attempts": _Spec("TransientFailureRetryAttempts", "count", 0, 15),
    "transient_failure_retry_interval": _Spec("TransientFailureRetryInterval", "timespan", 0.001),
    "outbound_connection_failure_retry_interval": _Spec(
        "OutboundConnectionFailureRetryInterval", "timespan", 0.001
    ),
    "message_retry_interval": _Spec("MessageRetryInterval", "timespan", 0.001),
    "delay_notification_timeout": _Spec("DelayNotificationTimeout", "timespan", 0.001),
    "message_expiration_timeout": _Spec("MessageExpirationTimeout", "timespan", 0.001),
    "xqdiscard_max_events": _Spec("XQDiscardMaxEvents", "count", 50, 1000),
    "delayed_ack_skip_queue_length": _Spec("DelayedAckSkipQueueLength", "count", 1),
}

EXCHANGE_NAMES: Final[Mapping[str, str]] = {
    spec.exchange_name: attribute for attribute, spec in _SPECS.items()
}
"""Exchange parameter name (``ShadowHeartbeatRetryCount``) -> TransportSettings attribute."""


def setting_kinds() -> dict[str, str]:
    """Exchange parameter name -> how its value is written: bool, timespan, count or size."""
    return {spec.exchange_name: spec.kind for spec in _SPECS.values()}


@dataclass(frozen=True)
class TransportSettings:
    """Shadow redundancy, transport dumpster, retry and expiry settings of the organization.

    In Exchange the retry and expiry values are per server (``Set-TransportServer``) and the
    glitch retry lives in EdgeTransport.exe.config; the emulator holds them org-wide.
    """

    shadow_redundancy_enabled: bool = True
    shadow_heartbeat_timeout_interval: float = 15 * 60.0
    shadow_heartbeat_retry_count: int = 12
    shadow_message_auto_discard_interval: float = 2 * 86400.0
    shadow_redundancy_promotion_enabled: bool = False
    max_dumpster_size_per_database: int = 18 * 1024 * 1024
    max_dumpster_time: float = 7 * 86400.0
    queue_glitch_retry_count: int = 4
    queue_glitch_retry_interval: float = 60.0
    transient_failure_retry_attempts: int = 6
    transient_failure_retry_interval: float = 5 * 60.0
    outbound_connection_failure_retry_interval: float = 10 * 60.0
    message_retry_interval: float = 15 * 60.0
    delay_notification_timeout: float = 4 * 3600.0
    message_expiration_timeout: float = 2 * 86400.0
    xqdiscard_max_events: int = 50
    """Emulator setting: the maximum a shadow holder asks for in ``XQDISCARD <max>`` (50-1000)."""
    delayed_ack_skip_queue_length: int = 100
    """Emulator setting: delayed acknowledgement is skipped once the target queue is this long."""

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, file: str = "<transport>", path: str = "transport"
    ) -> TransportSettings:
        """Read a ``[transport]`` table written with Exchange's parameter names.

        Raises OrganizationFileError naming ``file`` and the key on any mistake.
        """
        table = Table(data, file, path, EXCHANGE_NAMES.keys())
        defaults = cls()
        values: dict[str, Any] = {}
        for field in fields(cls):
            spec = _SPECS[field.name]
            key = spec.exchange_name
            default = getattr(defaults, field.name)
            if spec.kind == "bool":
                values[field.name] = table.boolean(key, default)
            elif spec.kind == "count":
                values[field.name] = table.integer(
                    key,
                    default,
                    minimum=int(spec.minimum),
                    maximum=None if spec.maximum is None else int(spec.maximum),
                )
            elif spec.kind == "size":
                values[field.name] = table.byte_size(key, default)
            else:
                values[field.name] = table.timespan(key, default, minimum=spec.minimum)
        return cls(**values)

    def to_mapping(self) -> dict[str, object]:
        """The settings under Exchange's names, as ``Get-TransportConfig`` would list them."""
        return {spec.exchange_name: getattr(self, name) for name, spec in _SPECS.items()}
