"""One Exchange 2010 transport server (hub or edge) as a Twisted service.

Children start in order and stop in reverse: the queue database first (it is
opened before any listener accepts a connection), then the logs, then one
listener per receive connector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from exchange_emu.directory import Organization, ReceiveConnector, Server
from exchange_emu.listening import DatabaseService, Listener
from exchange_emu.logs.protocol_log import ProtocolLog
from exchange_emu.logs.tracking_log import MessageTrackingLog, server_tracking_log
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory
from exchange_emu.storage import NewMessage, QueueDatabase, QueueStore
from exchange_emu.transport import jobs
from exchange_emu.transport.delayed_ack import DelayedAcknowledgement
from exchange_emu.transport.engine import TransportEngine
from exchange_emu.transport.receive_policy import TransportReceivePolicy
from exchange_emu.transport.store_driver import HubStoreDriver
from exchange_emu.transport.tracking import TransportTracking

log = Logger()


_SOFTWARE_VERSIONS = {"2007": "8.3.389.2", "2003": "6.0.3790.4675", "non-exchange": "1.0"}


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
        max_inbound_connection=connector.max_inbound_connection,
        max_inbound_connection_per_source=connector.max_inbound_connection_per_source,
        max_messages_per_connection=connector.max_messages_per_connection,
        connection_inactivity_timeout=connector.connection_inactivity_timeout,
        client_connector=connector.usage == "Client",
        tls=tls,
        auth_mechanisms=connector.auth_mechanisms,
        require_authentication=connector.usage == "Client",
        flavor=server.version if server.has_role("legacy") else "2010",
        software_version=_SOFTWARE_VERSIONS.get(server.version, "14.3.123.4"),
    )


class TransportServer(service.MultiService):
    """A hub or edge transport server: queue database, logs, receive connectors."""

    def __init__(self, organization: Organization, server: Server, reactor: Any,
                 tracking_log: MessageTrackingLog | None = None) -> None:
        super().__init__()
        self.organization = organization
        self.server = server
        self.reactor = reactor
        self.setName(f"{server.name} transport")
        self.database = QueueDatabase(server.database_url, reactor=reactor)
        self.store = QueueStore(self.database)
        clock: IReactorTime = reactor
        logs = Path(server.data_dir) / "TransportRoles" / "Logs"
        self._owns_tracking_log = tracking_log is None
        self.tracking_log = tracking_log or server_tracking_log(server.data_dir, server.fqdn, clock)
        self.receive_log = ProtocolLog(logs / "ProtocolLog", kind="SmtpReceive", clock=clock)
        self.send_log = ProtocolLog(logs / "ProtocolLog", kind="SmtpSend", clock=clock)
        DatabaseService(self.database, server.name).setServiceParent(self)
        self.engine = TransportEngine(
            organization, server, self.database, TransportTracking(server, self.tracking_log),
            reactor, send_log=self.send_log,
        )
        self.engine.delayed_ack = self.delayed_ack = DelayedAcknowledgement(clock)
        self.engine.setServiceParent(self)
        if server.has_role("hub") and server.site is not None:
            self.store_driver = HubStoreDriver(
                organization, server, reactor, accept=self.store.accept_message,
                submitted=self._from_store_driver, redeliver=self.engine.redeliver,
                replicated=self._replicated)
            self.engine.store_driver = self.store_driver
            self.store_driver.on_link_up = self.engine.mailbox_server_reachable
            self.store_driver.setServiceParent(self)
        for connector in server.receive_connectors:
            policy = TransportReceivePolicy(
                organization, server, connector, self.store, clock, self.tracking_log,
                on_submitted=self.engine.submitted, delayed_ack=self.delayed_ack,
            )
            factory = ExchangeESMTPFactory(
                receive_settings(server, connector), policy, clock, self.receive_log
            )
            Listener(server.name, f"receive connector '{connector.name}'", connector.bind,
                     factory, reactor).setServiceParent(self)

    async def _replicated(self, database: str, up_to: float) -> int:
        """The mailbox server replicated ``database`` up to ``up_to``: the transport
        dumpster lets go of what is older."""
        settings = self.organization.transport
        return await self.database.write(
            jobs.truncate_dumpster, database, self.reactor.seconds(),
            settings.max_dumpster_size_per_database, settings.max_dumpster_time, up_to)

    def _from_store_driver(self, internal_id: int, new: NewMessage) -> None:
        """B.2 done: the message is in the Submission queue; route it."""
        self.engine.tracking.received_from_store_driver(
            jobs.Envelope(internal_id, new.message_id, new.sender, new.subject or "", 0,
                          new.source, new.received_at, None, None, new.mapi_submission),
            [r if isinstance(r, str) else r.address for r in new.recipients],
            new.client_hostname or "")
        self.engine.submitted(internal_id)

    def stopService(self) -> Any:
        d = super().stopService()

        def close_logs(result: object) -> object:
            if self._owns_tracking_log:
                self.tracking_log.close()
            self.receive_log.close()
            self.send_log.close()
            return result

        return d.addBoth(close_logs)
