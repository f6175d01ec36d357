"""The mailbox server's end of the store-driver link (AMP), and the client
submission entry point (scenario A)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from exchange_emu.storedriver.commands import (
    ClientSubmit,
    Deliver,
    Failover,
    FetchBody,
    FetchItem,
    Hello,
    ReportOwnership,
    ReportReplication,
    UnknownItem,
    UnknownMailbox,
    Upload,
)
from exchange_emu.storedriver.transfer import StoreDriverAMP, Uploads, body_chunk

if TYPE_CHECKING:
    from exchange_emu.mailbox.server import MailboxServer


class MailboxStoreDriver(StoreDriverAMP):
    """One connection: a hub of the site, or a client submitting into an Outbox."""

    def __init__(self, server: MailboxServer) -> None:
        super().__init__()
        self.server = server
        self.hub = ""
        self.uploads = Uploads()
        self._body: tuple[int, bytes] | None = None

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if self.hub:
            self.server.submission.hub_disconnected(self)

    @Hello.responder
    def hello(self, hub: str, fqdn: str, site: str) -> dict[str, Any]:
        self.hub = hub
        self.server.submission.hub_connected(self)
        return {"server": self.server.server.name, "databases": self.server.databases}

    @FetchItem.responder
    async def fetch_item(self, database: str, item_id: int) -> dict[str, Any]:
        item = await self.server.store.get_item(item_id)
        if item is None or item.folder != "Outbox":
            raise UnknownItem(f"no item {item_id} in an Outbox of {database}")
        self._body = (item_id, item.mime)
        return {"mailbox": item.mailbox, "sender": item.sender,
                "recipients": list(item.recipients), "message_id": item.message_id,
                "subject": item.subject or "", "submit_time": item.submit_time,
                "size": len(item.mime)}

    @FetchBody.responder
    async def fetch_body(self, database: str, item_id: int, offset: int) -> dict[str, Any]:
        if self._body is None or self._body[0] != item_id:
            item = await self.server.store.get_item(item_id)
            if item is None:
                raise UnknownItem(f"no item {item_id}")
            self._body = (item_id, item.mime)
        return body_chunk(self._body[1], offset)

    @ReportOwnership.responder
    async def report_ownership(self, database: str, item_id: int, hub: str) -> dict[str, Any]:
        moved = await self.server.owned(item_id, hub)
        return {"moved": moved}

    @Upload.responder
    def upload(self, upload_id: int, data: bytes) -> dict[str, Any]:
        return {"upload_id": self.uploads.append(upload_id, data)}

    @Deliver.responder
    async def deliver(self, database: str, recipients: list[str], sender: str, message_id: str,
                      submit_time: float, upload_id: int, hub: str) -> dict[str, Any]:
        body = self.uploads.take(upload_id)
        statuses = await self.server.deliver(database, recipients, sender, body, message_id,
                                             submit_time, hub)
        return {"results": [{"recipient": r, "status": s} for r, s in statuses.items()]}

    @Failover.responder
    async def failover(self, database: str, lossy: bool, lost_seconds: float) -> dict[str, Any]:
        return await self.server.failover(database, lossy, lost_seconds)

    @ReportReplication.responder
    async def report_replication(self, database: str, up_to: float) -> dict[str, Any]:
        return {"hubs": await self.server.report_replication(database, up_to)}

    @ClientSubmit.responder
    async def client_submit(self, mailbox: str, recipients: list[str],
                            upload_id: int) -> dict[str, Any]:
        body = self.uploads.take(upload_id)
        try:
            item = await self.server.client_submit(mailbox, recipients, body)
        except LookupError as e:
            raise UnknownMailbox(str(e)) from None
        return {"item_id": item.item_id, "message_id": item.message_id,
                "database": item.database}


class MailboxStoreDriverFactory(ServerFactory):
    noisy = False

    def __init__(self, server: MailboxServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> MailboxStoreDriver:
        return MailboxStoreDriver(self.server)
