"""An Exchange 2010 mailbox server as a Twisted service: its mailbox databases,
the store-driver endpoint hubs connect to, and the Mail Submission service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from exchange_emu.directory import Organization, Server
from exchange_emu.faults import crash_point
from exchange_emu.listening import DatabaseService, Listener, RoleService
from exchange_emu.logs.tracking_event import TrackingEvent, scenario_step
from exchange_emu.logs.tracking_log import MessageTrackingLog, server_tracking_log
from exchange_emu.mailbox.migrations import MAILBOX_MIGRATIONS
from exchange_emu.mailbox.operations import DELIVERED_TO_RETENTION
from exchange_emu.mailbox.store import MailboxStore, OutboxItem
from exchange_emu.mailbox.store_driver import MailboxStoreDriverFactory
from exchange_emu.mailbox.submission import MailSubmissionService, Submission
from exchange_emu.storage import QueueDatabase
from exchange_emu.storedriver.commands import Redeliver, ReplicationStatus, UnknownMailbox

log = Logger()

DELIVERED_TO_SWEEP = 3600.0
"""How often DeliveredTo entries past their retention are removed (seconds)."""


class MailboxServer(RoleService):
    """A mailbox server: databases, mailboxes, Outbox submission, store-driver delivery."""

    def __init__(self, organization: Organization, server: Server, reactor: Any,
                 clock: IReactorTime | None = None,
                 tracking_log: MessageTrackingLog | None = None) -> None:
        super().__init__()
        self.organization = organization
        self.server = server
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.setName(f"{server.name} mailbox")
        self.databases = [d.name for d in organization.mailbox_databases.values()
                          if d.server == server.name]
        self.database = QueueDatabase(server.mailbox_store_url or server.database_url,
                                      reactor=reactor, migrations=MAILBOX_MIGRATIONS)
        self.store = MailboxStore(self.database)
        self._owns_tracking_log = tracking_log is None
        self.tracking = tracking_log or server_tracking_log(
            server.data_dir, server.fqdn, self.clock)
        self.submission = MailSubmissionService(
            self.clock, on_taken=self._taken,
            local_hub=server.name if server.has_role("hub") else None)
        self._expiry: LoopingCall | None = None
        DatabaseService(self.database, server.name).setServiceParent(self)
        if server.store_driver is not None:
            Listener(server.name, "store driver", server.store_driver,
                     MailboxStoreDriverFactory(self), reactor).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        mailboxes = [(r.address, r.display_name, r.database)
                     for r in self.organization.recipients.values()
                     if r.database in self.databases]
        d = Deferred.fromCoroutine(self._start(mailboxes))
        d.addErrback(lambda f: log.failure("{server}: mailbox start-up failed", f,
                                           server=self.server.name))

    async def _start(self, mailboxes: list[tuple[str, str, str]]) -> None:
        """Mailboxes from the organization file; Outbox items left from before go out."""
        await self.store.ensure_mailboxes(mailboxes)
        for item in await self.store.pending_outbox():
            self.submission.submit(Submission(item.item_id, item.database, item.message_id,
                                              item.mailbox, (), item.subject or ""))
        self._expiry = LoopingCall(self._expire_delivered_to)
        self._expiry.clock = self.clock
        self._expiry.start(DELIVERED_TO_SWEEP, now=True).addErrback(
            lambda f: log.failure("DeliveredTo expiry failed", f))

    def _expire_delivered_to(self) -> Deferred[int]:
        """DeliveredTo entries are kept 7 days, then duplicate detection forgets them."""
        return self.store.expire_delivered_to(self.clock.seconds() - DELIVERED_TO_RETENTION)

    def stopService(self) -> Any:
        self.submission.stop()
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        d = super().stopService()

        def close(result: object) -> object:
            if self._owns_tracking_log:
                self.tracking.close()
            return result

        return d.addBoth(close)

    # -- what the store driver asks ------------------------------------------------

    async def client_submit(self, mailbox: str, recipients: list[str], body: bytes) -> OutboxItem:
        """Scenario A: the client's message goes into the sender's Outbox, and nothing else."""
        crash_point("A")  # the client's message is here, not yet in the Outbox (fault injection)
        item = await self.store.submit_to_outbox(
            mailbox=mailbox, recipients=recipients, mime=body, now=self.clock.seconds(),
            fqdn=self.server.fqdn)
        self._track("NOTIFYMAPI", item.message_id, "A", mailbox, recipients, item.subject or "",
                    size=item.size, shadow="none", item=str(item.item_id),
                    database=item.database)
        self.submission.submit(Submission(item.item_id, item.database, item.message_id,
                                          mailbox, tuple(recipients), item.subject or ""))
        return item

    def _taken(self, item: Submission, hub: str, notified_at: float) -> None:
        """B.1: the Mail Submission service notified a hub of the site, which took the
        item (B.2); the row is stamped when the notification went out."""
        self._track("SUBMIT", item.message_id, "B.1", item.sender, item.recipients,
                    item.subject, when=notified_at, hub=hub, item=str(item.item_id),
                    database=item.database)

    async def owned(self, item_id: int, hub: str) -> bool:
        """B.4: the hub owns the message now; the item leaves the Outbox for Sent Items."""
        item = await self.store.get_item(item_id)
        moved = await self.store.move_to_sent_items(item_id, hub)
        self.submission.owned(item_id)
        if moved and item is not None:
            self._track("SUBMIT", item.message_id, "B.4", item.sender, item.recipients,
                        item.subject or "", hub=hub, item=str(item_id), folder="Sent Items")
        return moved

    async def deliver(self, database: str, recipients: list[str], sender: str, body: bytes,
                      message_id: str, submit_time: float, hub: str) -> dict[str, str]:
        """C.1 on the mailbox side: into each recipient's Inbox, duplicates dropped."""
        return await self.store.deliver(
            database=database, recipients=recipients, sender=sender, mime=body,
            message_id=message_id, submit_time=submit_time, now=self.clock.seconds())

    async def failover(self, database: str, lossy: bool, lost_seconds: float) -> dict[str, Any]:
        """Fail ``database`` over to its passive copy. Lossy: the copy lacks the last
        ``lost_seconds``; those items are gone, and every hub of the site is asked to
        redeliver from its transport dumpster since then."""
        if database not in self.databases:
            raise UnknownMailbox(f"no database {database} on {self.server.name}")
        since = self.clock.seconds() - (lost_seconds if lossy else 0.0)
        lost = await self.store.lossy_rollback(database, since) if lossy else 0
        hubs = list(self.submission.hubs)
        for hub in hubs:
            try:
                await hub.callRemote(Redeliver, database=database, since=since)
            except Exception as e:
                log.warn("{server}: {hub} could not redeliver for {db}: {why}",
                         server=self.server.name, hub=hub.hub, db=database, why=e)
        log.info("{server}: {kind} failover of {db}: {lost} items lost, {n} hubs asked to "
                 "redeliver since {since}", server=self.server.name, db=database, lost=lost,
                 n=len(hubs), since=since, kind="lossy" if lossy else "lossless")
        return {"lost": lost, "hubs": len(hubs), "since": since}

    async def report_replication(self, database: str, up_to: float) -> int:
        """The copies of ``database`` hold its log up to ``up_to``: tell the hubs."""
        if database not in self.databases:
            raise UnknownMailbox(f"no database {database} on {self.server.name}")
        await self.store.report_replicated_up_to(database, up_to)
        hubs = list(self.submission.hubs)
        for hub in hubs:
            await hub.callRemote(ReplicationStatus, database=database, up_to=up_to)
        return len(hubs)

    def _track(self, event_id: str, message_id: str, step: str, sender: str,
               recipients: Sequence[str], subject: str, size: int | None = None,
               when: float | None = None, **extra: str) -> None:
        self.tracking.record(TrackingEvent(
            event_id=event_id, source="STOREDRIVER", server_hostname=self.server.fqdn,
            date_time=datetime.fromtimestamp(when, UTC) if when is not None else None,
            message_id=message_id, sender_address=sender,
            recipient_address=tuple(recipients), message_subject=subject,
            total_bytes=size, custom_data=scenario_step(step, **extra)))
