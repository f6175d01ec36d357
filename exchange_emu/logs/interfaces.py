"""Interfaces of the transport logs: message tracking and SMTP protocol logging."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from exchange_emu.logs.tracking_event import TrackingEvent

__all__ = ["IMessageTrackingLog", "IProtocolLog", "IProtocolLogSession"]


class IMessageTrackingLog(Interface):
    """A server's message tracking log (``MSGTRK*.LOG``)."""

    def record(event: TrackingEvent) -> None:
        """Log one tracking event; a missing date-time is the current time."""

    def flush() -> None:
        """Write buffered events to disk now."""

    def close() -> None:
        """Flush and release the log."""


class IProtocolLogSession(Interface):
    """The protocol log rows of one SMTP session; sequence numbers count from 0."""

    session_id = Attribute("16 upper-case hex digits naming the session in the log")

    def connected(context: str = "") -> None:
        """Log ``+``: the session's connection opened."""

    def sent(data: str) -> None:
        """Log ``>``: a line this server sent."""

    def received(data: str) -> None:
        """Log ``<``: a line this server received."""

    def info(data: str, context: str = "") -> None:
        """Log ``*``: information about the session (TLS, tarpit, permissions...)."""

    def disconnected(context: str = "") -> None:
        """Log ``-``: the connection closed."""


class IProtocolLog(Interface):
    """An SMTP protocol log: Send (``SmtpSend``) or Receive (``SmtpReceive``) connectors."""

    def open_session(connector_id: str, local: str, remote: str) -> IProtocolLogSession:
        """Start logging one SMTP session between two ``ip:port`` endpoints."""

    def flush() -> None:
        """Write buffered rows to disk now."""

    def close() -> None:
        """Flush and release the log."""
