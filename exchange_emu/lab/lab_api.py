"""The management calls the lab endpoint answers itself, over the whole organization:
Get-MessageTrackingLog (``GET /api/tracking``: every server's log, read from its data
folder, running or not) and a client submission (``POST /api/send``: a message put in the
sender's Outbox, as ``exchange-emu send`` does)."""

from __future__ import annotations

from typing import Any

from twisted.internet import threads

from exchange_emu.admin.errors import ManagementError, NotFoundError
from exchange_emu.admin.http_json import JsonResource, arg, body
from exchange_emu.admin.tracking import TrackingQuery, TrackingQueryError, search_tracking_logs
from exchange_emu.directory import UnknownServerError
from exchange_emu.lab.supervisor import LabSupervisor
from exchange_emu.logs.tracking_search import event_to_dict


def _list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()] or None


class TrackingResource(JsonResource):
    """``GET /api/tracking?server=&message_id=&sender=&recipients=&event_id=&start=&end=
    &result_size=`` (lists comma-separated): Get-MessageTrackingLog, events in time order."""

    def __init__(self, supervisor: LabSupervisor) -> None:
        super().__init__(get=self.search)
        self.supervisor = supervisor

    async def search(self, request: Any) -> Any:
        try:
            query = TrackingQuery.from_text(
                start=arg(request, "start"), end=arg(request, "end"),
                event_id=arg(request, "event_id"), message_id=arg(request, "message_id"),
                internal_message_id=arg(request, "internal_message_id"),
                sender=arg(request, "sender"), recipients=_list(arg(request, "recipients")),
                subject=arg(request, "subject"), reference=arg(request, "reference"),
                result_size=arg(request, "result_size"))
        except TrackingQueryError as e:
            raise ManagementError(str(e).replace("--", "").replace("-", "_")) from None
        organization = self.supervisor.organization
        try:
            found = await threads.deferToThread(search_tracking_logs, organization, query,
                                                _list(arg(request, "server")))
        except UnknownServerError as e:
            raise NotFoundError(str(e).strip("'\"")) from None
        return [event_to_dict(event) for event in found.events]


class SendResource(JsonResource):
    """``POST /api/send {"from", "to", "subject", "body"}``: a client submission into the
    sender's Outbox; its mailbox server hands it to a hub of its site (scenarios A, B)."""

    def __init__(self, supervisor: LabSupervisor, reactor: Any) -> None:
        super().__init__(post=self.send)
        self.supervisor = supervisor
        self.reactor = reactor

    async def send(self, request: Any) -> Any:
        from exchange_emu.mailbox.client import SubmitError, compose, submit

        given = body(request)
        sender = given.get("from")
        to = given.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(sender, str) or not sender or not isinstance(to, list) or not to \
                or not all(isinstance(t, str) and "@" in t for t in to):
            raise ManagementError('give "from" (an address) and "to" (a list of addresses)')
        organization = self.supervisor.organization
        recipient = organization.recipient(sender)
        if recipient is None or recipient.database is None:
            raise ManagementError(f"{sender} has no mailbox on an Exchange 2010 mailbox "
                                  "database; send from one of the organization's mailboxes")
        mime = compose(sender, to, str(given.get("subject", "Test message")),
                       str(given.get("body", "This is a test message from exchange-emu.")))
        try:
            done = await submit(self.reactor, organization, sender, to, mime)
        except SubmitError as e:
            raise ManagementError(str(e), status=502) from None
        return {"message_id": done.message_id, "item_id": done.item_id,
                "mailbox_server": done.mailbox_server, "database": done.database}
