"""Talking to a mailbox server from outside, over its store-driver endpoint:

- a mail client's submission (scenario A): ``exchange-emu send`` writes a message
  into the sender's Outbox, as MAPI or Exchange ActiveSync would; nothing else
  happens on this leg;
- an administrator's database failover (``exchange-emu failover``) and
  replication report (``exchange-emu replicated``)."""

from __future__ import annotations

import email.message
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp

from exchange_emu.directory import Organization
from exchange_emu.storedriver.commands import ClientSubmit, Failover, ReportReplication
from exchange_emu.storedriver.transfer import upload


class SubmitError(Exception):
    """The message could not be put in the Outbox; str() says why, in one line."""


@dataclass(frozen=True)
class Submitted:
    item_id: int
    message_id: str
    database: str
    mailbox_server: str


def compose(sender: str, recipients: list[str], subject: str, body: str) -> bytes:
    """A plain text message as a mail client would write it."""
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def database_server(organization: Organization, database_name: str) -> tuple[str, Any]:
    """The mailbox server holding ``database_name`` and its store-driver address."""
    database = organization.database(database_name)
    if database is None:
        known = ", ".join(organization.mailbox_databases) or "none"
        raise SubmitError(f"no mailbox database {database_name} (known: {known})")
    server = organization.server(database.server)
    if server.store_driver is None:
        raise SubmitError(f"mailbox server {server.name} has no store-driver endpoint")
    return server.name, server.store_driver


def mailbox_server_of(organization: Organization, sender: str) -> tuple[str, Any]:
    recipient = organization.recipient(sender)
    if recipient is None or recipient.database is None:
        raise SubmitError(f"{sender} has no mailbox on an Exchange 2010 mailbox database")
    return database_server(organization, recipient.database)


async def _call(reactor: Any, name: str, address: Any, *calls: Any) -> dict[str, Any]:
    """Connect to a mailbox server and run ``calls`` (command, kwargs, or a coroutine
    function taking the protocol) in order; the last call's answer."""
    endpoint = TCP4ClientEndpoint(reactor, address.host, address.port, timeout=10)
    try:
        proto = await connectProtocol(endpoint, amp.AMP())
    except Exception as e:
        raise SubmitError(f"cannot reach mailbox server {name} at {address} "
                          f"({type(e).__name__}); is it running?") from None
    answer: dict[str, Any] = {}
    try:
        for call in calls:
            answer = await call(proto)
    except amp.RemoteAmpError as e:
        raise SubmitError(f"mailbox server {name} refused: {e.description}") from None
    finally:
        proto.transport.loseConnection()
    return answer


async def submit(reactor: Any, organization: Organization, sender: str,
                 recipients: list[str], mime: bytes) -> Submitted:
    """Put ``mime`` in ``sender``'s Outbox; the mailbox server takes it from there."""
    name, address = mailbox_server_of(organization, sender)
    upload_id = 0

    async def send_body(proto: amp.AMP) -> dict[str, Any]:
        nonlocal upload_id
        upload_id = await upload(proto, mime)
        return {}

    async def put_in_outbox(proto: amp.AMP) -> dict[str, Any]:
        answer: dict[str, Any] = await proto.callRemote(
            ClientSubmit, mailbox=sender, recipients=recipients, upload_id=upload_id)
        return answer

    answer = await _call(reactor, name, address, send_body, put_in_outbox)
    return Submitted(answer["item_id"], answer["message_id"], answer["database"], name)


async def failover(reactor: Any, organization: Organization, database: str, *, lossy: bool,
                   lost_seconds: float) -> dict[str, Any]:
    """Fail ``database`` over; lossy, its copy lacked the last ``lost_seconds``."""
    name, address = database_server(organization, database)

    async def call(proto: amp.AMP) -> dict[str, Any]:
        answer: dict[str, Any] = await proto.callRemote(
            Failover, database=database, lossy=lossy, lost_seconds=lost_seconds)
        return answer

    return await _call(reactor, name, address, call)


async def report_replication(reactor: Any, organization: Organization, database: str,
                             up_to: float) -> int:
    """``database``'s copies are replicated up to ``up_to``: the dumpsters may let go."""
    name, address = database_server(organization, database)

    async def call(proto: amp.AMP) -> dict[str, Any]:
        answer: dict[str, Any] = await proto.callRemote(
            ReportReplication, database=database, up_to=up_to)
        return answer

    return int((await _call(reactor, name, address, call))["hubs"])


__all__ = ["SubmitError", "Submitted", "compose", "failover", "report_replication", "submit"]
