"""The hub's store driver: an AMP link to each mailbox server of its AD site.

Over it the hub takes messages out of Outboxes (B.1–B.2: the mailbox server's
Mail Submission service notifies, the hub pulls the item into its Submission
queue), reports ownership once the next hop has them (B.4), and delivers into
mailboxes (C.1).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_emu.directory import Organization, Server
from exchange_emu.faults import crash_point
from exchange_emu.storage import NewMessage
from exchange_emu.storedriver.commands import (
    Deliver,
    FetchItem,
    Hello,
    NotifySubmission,
    NotReady,
    Redeliver,
    ReplicationStatus,
    ReportOwnership,
)
from exchange_emu.storedriver.transfer import StoreDriverAMP, fetch_body, upload

log = Logger()


class StoreDriverUnavailable(Exception):
    """No connection to that mailbox server right now."""


def submit_time_of(body: bytes) -> float:
    """The client submit time a message carries (its ``Date:`` header), for DeliveredTo."""
    head = body.split(b"\r\n\r\n", 1)[0][:65536]
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        date = headers.get("Date")
        parsed = email.utils.parsedate_to_datetime(str(date)) if date else None
    except (TypeError, ValueError, IndexError):
        return 0.0
    return parsed.timestamp() if parsed is not None else 0.0


class HubStoreDriverLink(StoreDriverAMP):
    """The hub's end of one connection to a mailbox server."""

    def __init__(self, driver: HubStoreDriver, mailbox_server: str) -> None:
        super().__init__()
        self.driver = driver
        self.mailbox_server = mailbox_server

    def connectionMade(self) -> None:
        super().connectionMade()
        hub = self.driver.server
        d = self.callRemote(Hello, hub=hub.name, fqdn=hub.fqdn, site=hub.site or "")
        d.addCallbacks(lambda _: self.driver.link_up(self),
                       lambda f: log.failure("store driver Hello failed", f))

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.driver.link_down(self)

    @Redeliver.responder
    async def redeliver(self, database: str, since: float) -> dict[str, Any]:
        """After a lossy failover: redeliver from the transport dumpster."""
        return {"count": await self.driver.redeliver(database, since)}

    @ReplicationStatus.responder
    async def replication_status(self, database: str, up_to: float) -> dict[str, Any]:
        await self.driver.replicated(database, up_to)
        return {}

    @NotifySubmission.responder
    async def notify_submission(self, database: str, item_id: int) -> dict[str, Any]:
        """B.1–B.2: pull the Outbox item into the Submission queue, then say so."""
        internal_id = await self.driver.take(self, database, item_id)
        return {"taken": True, "internal_id": internal_id}


class _LinkFactory(Factory):
    noisy = False

    def __init__(self, driver: HubStoreDriver, mailbox_server: str) -> None:
        self.driver = driver
        self.mailbox_server = mailbox_server

    def buildProtocol(self, addr: Any) -> HubStoreDriverLink:
        return HubStoreDriverLink(self.driver, self.mailbox_server)


class HubStoreDriver(service.MultiService):
    """Connections to the mailbox servers of this hub's site."""

    def __init__(self, organization: Organization, server: Server, reactor: Any,
                 accept: Callable[[NewMessage], Deferred[int]],
                 submitted: Callable[[int, NewMessage], None],
                 redeliver: Callable[[str, float], Awaitable[int]],
                 replicated: Callable[[str, float], Awaitable[object]]) -> None:
        super().__init__()
        self.organization = organization
        self.server = server
        self.reactor = reactor
        self.accept = accept
        self.submitted = submitted
        self.redeliver = redeliver
        self.replicated = replicated
        self.links: dict[str, HubStoreDriverLink] = {}
        self.accepting = False
        self.on_link_up: Callable[[str], None] | None = None
        """Told the name of a mailbox server whose link is (back) up."""
        for mailbox_server in organization.servers.values():
            if (mailbox_server.has_role("mailbox") and mailbox_server.site == server.site
                    and mailbox_server.store_driver is not None):
                address = mailbox_server.store_driver
                endpoint = TCP4ClientEndpoint(reactor, address.host, address.port, timeout=10)
                factory = _LinkFactory(self, mailbox_server.name)
                client = ClientService(endpoint, factory, retryPolicy=backoffPolicy(
                    initialDelay=0.5, maxDelay=5.0), clock=reactor)
                client.setServiceParent(self)

    def startService(self) -> None:
        self.accepting = True
        super().startService()

    def stopService(self) -> Any:
        self.accepting = False
        return super().stopService()

    def link_up(self, link: HubStoreDriverLink) -> None:
        self.links[link.mailbox_server] = link
        log.info("{hub}: store driver connected to {mbx}", hub=self.server.name,
                 mbx=link.mailbox_server)
        if self.on_link_up is not None:
            self.on_link_up(link.mailbox_server)

    def link_down(self, link: HubStoreDriverLink) -> None:
        if self.links.get(link.mailbox_server) is link:
            del self.links[link.mailbox_server]

    def _link(self, mailbox_server: str) -> HubStoreDriverLink:
        link = self.links.get(mailbox_server)
        if link is None:
            raise StoreDriverUnavailable(f"no store driver connection to {mailbox_server}")
        return link

    async def take(self, link: HubStoreDriverLink, database: str, item_id: int) -> int:
        """B.2: the hub takes the message out of the Outbox into its own database."""
        if not self.accepting:
            raise NotReady(f"{self.server.name} is not taking submissions")
        item = await link.callRemote(FetchItem, database=database, item_id=item_id)
        body = await fetch_body(link, database, item_id)
        new = NewMessage(
            sender=item["sender"], recipients=tuple(item["recipients"]), body=body,
            received_at=self.reactor.seconds(), message_id=item["message_id"],
            subject=item["subject"], source="STOREDRIVER",
            client_hostname=link.mailbox_server,
            mapi_submission=f"{link.mailbox_server}:{database}:{item_id}",
        )
        internal_id = await self.accept(new)
        crash_point("B.2")  # in the Submission queue, the mailbox not told (fault injection)
        self.submitted(internal_id, new)
        return internal_id

    async def report_ownership(self, mapi_submission: str) -> bool:
        """B.4: tell the mailbox server the hub owns the message; it moves to Sent Items."""
        mailbox_server, database, item_id = mapi_submission.rsplit(":", 2)
        link = self._link(mailbox_server)
        answer = await link.callRemote(ReportOwnership, database=database, item_id=int(item_id),
                                       hub=self.server.name)
        return bool(answer["moved"])

    async def deliver(self, mailbox_server: str, database: str, recipients: list[str],
                      sender: str, message_id: str, body: bytes) -> dict[str, str]:
        """C.1: deliver into the mailboxes of ``database``; a status per recipient."""
        link = self._link(mailbox_server)
        upload_id = await upload(link, body)
        answer = await link.callRemote(
            Deliver, database=database, recipients=recipients, sender=sender,
            message_id=message_id, submit_time=submit_time_of(body), upload_id=upload_id,
            hub=self.server.name)
        return {r["recipient"]: r["status"] for r in answer["results"]}
