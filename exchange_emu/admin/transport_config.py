"""Get-TransportConfig / Set-TransportConfig on a running server: the ``[transport]``
settings (shadow redundancy, heartbeat, retry and expiry timers, delayed acknowledgement).

Set changes the running server at once — the engine reads its timers from the settings
object on every use — and lasts until the server restarts: the organization file is the
emulator's Active Directory, so a permanent change is an edit of its ``[transport]`` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange_emu.admin.errors import ManagementError
from exchange_emu.directory import OrganizationFileError
from exchange_emu.directory.timespan import format_timespan
from exchange_emu.directory.transport_settings import (
    EXCHANGE_NAMES,
    TransportSettings,
    setting_kinds,
)
from exchange_emu.transport.server import TransportServer

PERSISTENCE = "until restart (edit [transport] in the organization file to keep it)"


def settings_as_file(settings: TransportSettings) -> dict[str, Any]:
    """The settings as the ``[transport]`` table writes them (TimeSpans as text)."""
    kinds = setting_kinds()
    out: dict[str, Any] = {}
    for name, value in settings.to_mapping().items():
        if kinds[name] == "timespan" and isinstance(value, int | float):
            out[name] = format_timespan(float(value))
        else:
            out[name] = value
    return out


def _typed(name: str, value: Any) -> Any:
    """A value given as text on the command line, in the type the table expects."""
    kind = setting_kinds()[name]
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind == "bool":
        lowered = text.lower().lstrip("$")
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ManagementError(f"{name} is $true or $false, not {value!r}")
    if kind == "count":
        if not text.lstrip("-").isdigit():
            raise ManagementError(f"{name} is a whole number, not {value!r}")
        return int(text)
    return text


def updated_settings(current: TransportSettings, changes: Any) -> TransportSettings:
    """``current`` with ``changes`` ({ExchangeName: value}) applied and checked as the
    organization file's loader checks them; ManagementError names the bad one."""
    if not isinstance(changes, Mapping) or not changes:
        raise ManagementError("give the settings to change, e.g. "
                              "--set ShadowHeartbeatTimeoutInterval=00:00:05")
    known = {name.lower(): name for name in EXCHANGE_NAMES}
    merged = settings_as_file(current)
    for given, value in changes.items():
        name = known.get(str(given).lower())
        if name is None:
            raise ManagementError(f"unknown transport setting {given!r}; get-transportconfig "
                                  "lists them")
        merged[name] = _typed(name, value)
    try:
        return TransportSettings.from_mapping(merged, file="Set-TransportConfig")
    except OrganizationFileError as e:
        raise ManagementError(str(e)) from None


class TransportConfigManagement:
    """The transport settings of one running transport server."""

    def __init__(self, transport: TransportServer) -> None:
        self.transport = transport

    def get(self) -> dict[str, Any]:
        """Get-TransportConfig."""
        return {"Identity": self.transport.server.name,
                **settings_as_file(self.transport.engine.settings),
                "ChangesLast": PERSISTENCE}

    def set(self, changes: Any) -> dict[str, Any]:
        """Set-TransportConfig: validate every change, then apply them all at once."""
        new = updated_settings(self.transport.engine.settings, changes)
        self.transport.apply_transport_settings(new)
        return self.get()
