"""One Exchange 2010 transport server (hub or edge) as a Twisted service.

Children start in order and stop in reverse: the queue database first (it is
opened before any listener accepts a connection), then the logs, then one
listener per receive connector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from exchange_emu.directory import Organization, ReceiveConnector, Server, TransportSettings
from exchange_emu.fault_plan import FaultPlan, FaultPlanWatcher
from exchange_emu.listening import DatabaseService, Listener, RoleService
from exchange_emu.logs.protocol_log import ProtocolLog
from exchange_emu.logs.tracking_log import MessageTrackingLog, server_tracking_log
from exchange_emu.security.credentials import CertificateError, load_credentials
from exchange_emu.security.tls import ClientContexts, server_options
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
        max_header_size=connector.max_header_size,
        tarpit_interval=connector.tarpit_interval,
        connection_timeout=connector.connection_timeout,
        max_inbound_connection=connector.max_inbound_connection,
        max_inbound_connection_per_source=connector.max_inbound_connection_per_source,
        max_messages_per_connection=connector.max_messages_per_connection,
        connection_inactivity_timeout=connector.connection_inactivity_timeout,
        client_connector=connector.usage == "Client",
        tls=tls,
        auth_mechanisms=connector.auth_mechanisms,
        auth_requires_tls=connector.basic_auth_require_tls,
        require_tls=connector.require_tls,
        require_authentication=connector.usage == "Client",
        flavor=server.version if server.has_role("legacy") else "2010",
        software_version=_SOFTWARE_VERSIONS.get(server.version, "14.3.123.4"),
    )


class TransportServer(RoleService):
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
        # Raises CertificateError (one line) for certificates present but unusable.
        self.credentials = load_credentials(organization, server)
        tls = None
        if self.credentials is not None:
            tls = server_options(self.credentials)
            self.engine.client_tls = ClientContexts(self.credentials)
        self.engine.setServiceParent(self)
        self.faults = FaultPlan.for_data_dir(server.data_dir)
        FaultPlanWatcher(self.faults, server.name, clock).setServiceParent(self)
        self.engine.connect = self.faults.guard(self.engine.connect, clock)
        if server.has_role("hub") and server.site is not None:
            self.store_driver = HubStoreDriver(
                organization, server, reactor, accept=self.store.accept_message,
                submitted=self._from_store_driver, redeliver=self.engine.redeliver,
                replicated=self._replicated)
            self.engine.store_driver = self.store_driver
            self.store_driver.on_link_up = self.engine.mailbox_server_reachable
            self.store_driver.setServiceParent(self)
        discards = self.engine.discards
        self.connectors: dict[str, tuple[TransportReceivePolicy, ExchangeESMTPFactory]] = {}
        """Each receive connector's policy and SMTP factory, by name (Set-ReceiveConnector)."""
        for connector in server.receive_connectors:
            connector_tls = self._connector_tls(connector, tls)
            policy = TransportReceivePolicy(
                organization, server, connector, self.store, clock, self.tracking_log,
                on_submitted=self.engine.submitted, delayed_ack=self.delayed_ack,
                credentials=self.credentials, categorizer=self.engine.categorizer,
                discards=discards,
            )
            factory = ExchangeESMTPFactory(
                receive_settings(server, connector, connector_tls), policy, clock,
                self.receive_log
            )
            self.connectors[connector.name] = (policy, factory)
            factory.faults = self.faults
            Listener(server.name, f"receive connector '{connector.name}'", connector.bind,
                     factory, reactor).setServiceParent(self)

    def _connector_tls(self, connector: ReceiveConnector, tls: Any) -> Any:
        """The connector's own certificate (``tls_certificate``) or the server's; a
        connector that requires TLS must have one (CertificateError otherwise)."""
        if connector.tls_certificate is not None:
            own = load_credentials(self.organization, self.server, connector.tls_certificate,
                                   connector.tls_private_key, connector.fqdn)
            assert own is not None
            return server_options(own)
        if tls is None and connector.require_tls:
            raise CertificateError(
                f"{self.server.name}: receive connector '{connector.name}' has require_tls "
                "but the server has no certificate (run: exchange-emu certs init)")
        return tls

    def running_connectors(self) -> list[ReceiveConnector]:
        """The receive connectors as they run now (Set-ReceiveConnector may have changed
        them since start)."""
        return [policy.connector for policy, _ in self.connectors.values()]

    def apply_receive_connector(self, connector: ReceiveConnector) -> None:
        """Set-ReceiveConnector: new sessions get the connector's new limits, and the next
        acknowledgement is held at most its new MaxAcknowledgementDelay."""
        policy, factory = self.connectors[connector.name]
        policy.connector = connector
        factory.settings = receive_settings(self.server, connector, factory.settings.tls)

    def apply_transport_settings(self, settings: TransportSettings) -> None:
        """Set-TransportConfig: the engine's timers and shadow redundancy use ``settings``
        from now on (until the server restarts)."""
        self.engine.settings = settings
        for policy, _ in self.connectors.values():
            policy.shadow_redundancy_enabled = (
                settings.shadow_redundancy_enabled and self.server.supports_shadow_redundancy)

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
