"""Get-ReceiveConnector / Set-ReceiveConnector on a running server.

Identities are Exchange's ``SERVER\\Connector name`` (``HUB01\\Default HUB01``). Set changes
the running connector: new SMTP sessions see the new limits (MaxMessageSize,
MaxRecipientsPerMessage, …) and the next message's acknowledgement is held at most the new
MaxAcknowledgementDelay. Like Set-TransportConfig it lasts until the server restarts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from exchange_emu.admin.errors import ManagementError, NotFoundError
from exchange_emu.admin.transport_config import PERSISTENCE
from exchange_emu.directory import ReceiveConnector
from exchange_emu.directory.bytesize import format_byte_size, parse_byte_size
from exchange_emu.directory.timespan import format_timespan, parse_timespan
from exchange_emu.transport.server import TransportServer


def _count(text: Any) -> int:
    value = int(str(text).strip()) if not isinstance(text, int) else text
    if value < 0 or isinstance(text, bool):
        raise ValueError(f"{text!r} is not a whole number >= 0")
    return value


def _size(text: Any) -> int:
    return parse_byte_size(text if isinstance(text, int) else str(text))


def _timespan(text: Any) -> float:
    return parse_timespan(str(text))


#: Exchange parameter -> (attribute, parse, format): what Set-ReceiveConnector may change.
SETTABLE: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "MaxAcknowledgementDelay": ("max_acknowledgement_delay", _timespan, format_timespan),
    "MaxMessageSize": ("max_message_size", _size, format_byte_size),
    "MaxRecipientsPerMessage": ("max_recipients_per_message", _count, int),
    "MaxInboundConnection": ("max_inbound_connection", _count, int),
    "MaxInboundConnectionPerSource": ("max_inbound_connection_per_source", _count, int),
    "MaxMessagesPerConnection": ("max_messages_per_connection", _count, int),
    "MaxProtocolErrors": ("max_protocol_errors", _count, int),
    "ConnectionTimeout": ("connection_timeout", _timespan, format_timespan),
    "ConnectionInactivityTimeout": ("connection_inactivity_timeout", _timespan,
                                    format_timespan),
}


class ConnectorManagement:
    """The receive connectors of one running transport server."""

    def __init__(self, transport: TransportServer) -> None:
        self.transport = transport

    def _row(self, connector: ReceiveConnector) -> dict[str, Any]:
        row: dict[str, Any] = {
            "Identity": f"{self.transport.server.name}\\{connector.name}",
            "Bindings": str(connector.bind), "Fqdn": connector.fqdn, "Usage": connector.usage,
            "PermissionGroups": ", ".join(connector.permission_groups),
        }
        for name, (attribute, _, show) in SETTABLE.items():
            row[name] = show(getattr(connector, attribute))
        row["ChangesLast"] = PERSISTENCE.replace("[transport]", "the connector")
        return row

    def _connector(self, identity: str) -> ReceiveConnector:
        server, _, name = identity.replace("/", "\\").partition("\\")
        if not name:
            raise ManagementError(f"{identity!r} is not a receive connector identity; use "
                                  "SERVER\\Connector name (get-receiveconnector lists them)")
        if server.upper() != self.transport.server.name.upper():
            raise ManagementError(f"{identity} names server {server}; this is "
                                  f"{self.transport.server.name}")
        for connector in self.transport.running_connectors():
            if connector.name.lower() == name.lower():
                return connector
        raise NotFoundError(f"there is no receive connector {identity}; "
                            "get-receiveconnector lists them")

    def get(self, identity: str | None = None) -> list[dict[str, Any]]:
        """Get-ReceiveConnector [-Identity]."""
        if identity:
            return [self._row(self._connector(identity))]
        return [self._row(c) for c in self.transport.running_connectors()]

    def set(self, identity: str, changes: Any) -> list[dict[str, Any]]:
        """Set-ReceiveConnector: check every change, then apply them together."""
        connector = self._connector(identity)
        if not isinstance(changes, Mapping) or not changes:
            raise ManagementError("give the settings to change, e.g. "
                                  "--set MaxAcknowledgementDelay=00:00:30")
        known = {name.lower(): name for name in SETTABLE}
        values: dict[str, Any] = {}
        for given, raw in changes.items():
            name = known.get(str(given).lower())
            if name is None:
                raise ManagementError(f"{given!r} cannot be set on a running connector; use "
                                      f"one of {', '.join(SETTABLE)}")
            attribute, parse, _ = SETTABLE[name]
            try:
                values[attribute] = parse(raw)
            except (ValueError, TypeError) as e:
                raise ManagementError(f"{name}: {e}") from None
        new = dataclasses.replace(connector, **values)
        self.transport.apply_receive_connector(new)
        return [self._row(new)]
