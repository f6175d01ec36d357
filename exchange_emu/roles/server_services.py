"""Everything one server of the organization runs, whatever its roles.

A server may carry several roles, as Exchange allows (hub and mailbox on one
box): each role is its own service, and they share the server's message
tracking log.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.admin.server_api import ServerAdminEndpoint
from exchange_emu.directory import Organization, Server
from exchange_emu.logs.tracking_log import server_tracking_log
from exchange_emu.mailbox.server import MailboxServer
from exchange_emu.transport.server import TransportServer


class ExchangeServer(service.MultiService):
    """One server: its transport and mailbox roles, one tracking log."""

    def __init__(self, organization: Organization, server: Server, reactor: Any) -> None:
        super().__init__()
        self.setName(server.name)
        self.tracking_log = server_tracking_log(server.data_dir, server.fqdn, reactor)
        self.transport: TransportServer | None = None
        if server.roles & {"hub", "edge", "legacy"}:
            self.transport = TransportServer(organization, server, reactor,
                                             tracking_log=self.tracking_log)
            self.transport.setServiceParent(self)
        if "mailbox" in server.roles:
            MailboxServer(organization, server, reactor,
                          tracking_log=self.tracking_log).setServiceParent(self)
        if self.transport is not None:
            # The management API (Get-Queue, …) in this server's process.
            ServerAdminEndpoint(server, self.transport, reactor).setServiceParent(self)

    def stopService(self) -> Any:
        d = super().stopService()

        def close(result: object) -> object:
            self.tracking_log.close()
            return result

        return d.addBoth(close)
