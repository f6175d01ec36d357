"""One Exchange 2010 transport server (hub or edge) as a Twisted service.

Children start in order and stop in reverse: the queue database first (it is
opened before any listener accepts a connection), then the logs, then one
listener per receive connector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service, strports
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from exchange_emu.directory import Organization, ReceiveConnector, Server
from exchange_emu.logs.protocol_log import ProtocolLog
from exchange_emu.logs.tracking_log import MessageTrackingLog
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory
from exchange_emu.startup import StartupError
from exchange_emu.storage import QueueDatabase, QueueStore, StorageError
from exchange_emu.transport.engine import TransportEngine
from exchange_emu.transport.receive_policy import TransportReceivePolicy
from exchange_emu.transport.tracking import TransportTracking

log = Logger()


def receive_settings(
    server: Server, connector: ReceiveConnector, tls: Any = None
) -> ServerSettings:
    """The SMTP protocol's view of a receive connector."""
    return ServerSettings(
        connector_name=connector.name,
        fqdn=connector.fqdn,
        max_message_size=connector.max_message_size,
        max_recipients_per_message=connector.max_recipients_per_message,
        max_protocol_errors=connector.max_protocol_errors,
        max_command_line_length=connector.max_command_line_length,
        max_data_line_length=connector.max_data_line_length,
        connection_timeout=connector.connection_timeout,
        connection_inactivity_timeout=connector.connection_inactivity_timeout,
        client_connector=connector.usage == "Client",
        tls=tls,
    )


class _QueueDatabaseService(service.Service):
    """Opens the queue database before the listeners, closes it after them."""

    def __init__(self, db: QueueDatabase, server_name: str) -> None:
        self.db = db
        self.server_name = server_name

    def privilegedStartService(self) -> None:
        try:
            self.db.open()
        except StorageError as e:
            raise StartupError(f"{self.server_name}: {e}") from None
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        return self.db.stopService()


class _Listener(service.Service):
    """A receive connector's listening port; a busy port is a one-line start-up error."""

    def __init__(self, server_name: str, connector: ReceiveConnector, factory: Any, reactor: Any):
        self.server_name = server_name
        self.connector = connector
        self._inner = strports.service(connector.bind.endpoint(), factory, reactor=reactor)

    def privilegedStartService(self) -> None:
        try:
            self._inner.privilegedStartService()
        except CannotListenError as e:
            raise StartupError(
                f"{self.server_name}: receive connector '{self.connector.name}' cannot listen "
                f"on {self.connector.bind}: {e.socketError}"
            ) from None
        super().privilegedStartService()
        log.info(
            "{server}: receive connector '{connector}' listening on {address}",
            server=self.server_name,
            connector=self.connector.name,
            address=str(self.connector.bind),
        )

    def startService(self) -> None:
        super().startService()
        self._inner.startService()

    def stopService(self) -> Any:
        super().stopService()
        return self._inner.stopService()


class TransportServer(service.MultiService):
    """A hub or edge transport server: queue database, logs, receive connectors."""

    def __init__(self, organization: Organization, server: Server, reactor: Any) -> None:
        super().__init__()
        self.organization = organization
        self.server = server
        self.reactor = reactor
        self.setName(server.name)
        self.database = QueueDatabase(server.database_url, reactor=reactor)
        self.store = QueueStore(self.database)
        clock: IReactorTime = reactor
        logs = Path(server.data_dir) / "TransportRoles" / "Logs"
        self.tracking_log = MessageTrackingLog(
            logs / "MessageTracking", server_name=server.fqdn, clock=clock
        )
        self.receive_log = ProtocolLog(logs / "ProtocolLog", kind="SmtpReceive", clock=clock)
        self.send_log = ProtocolLog(logs / "ProtocolLog", kind="SmtpSend", clock=clock)
        _QueueDatabaseService(self.database, server.name).setServiceParent(self)
        self.engine = TransportEngine(
            organization, server, self.database, TransportTracking(server, self.tracking_log),
            reactor, send_log=self.send_log,
        )
        self.engine.setServiceParent(self)
        for connector in server.receive_connectors:
            policy = TransportReceivePolicy(
                organization, server, connector, self.store, clock, self.tracking_log,
                on_submitted=self.engine.submitted,
            )
            factory = ExchangeESMTPFactory(
                receive_settings(server, connector), policy, clock, self.receive_log
            )
            _Listener(server.name, connector, factory, reactor).setServiceParent(self)

    def stopService(self) -> Any:
        d = super().stopService()

        def close_logs(result: object) -> object:
            self.tracking_log.close()
            self.receive_log.close()
            self.send_log.close()
            return result

        return d.addBoth(close_logs)
