"""AMP commands of the store driver link between a hub and a mailbox server.

Each hub of an AD site keeps one connection to each mailbox server of its
site (to the mailbox server's store-driver endpoint) and introduces itself
with ``Hello``. Over it:

- the mailbox server's Mail Submission service notifies the hub of a new
  Outbox item (``NotifySubmission``, B.1); the hub pulls it (``FetchItem``,
  ``FetchBody``) into its Submission queue (B.2) and, once the next hop has it,
  reports ownership (``ReportOwnership``, B.4) — only then does the item move
  to Sent Items;
- the hub delivers into mailboxes (``Upload`` then ``Deliver``, C.1);
- the mailbox server reports replication of its databases
  (``ReplicationStatus``) and, after a lossy failover, asks for redelivery
  from the transport dumpster (``Redeliver``).

A client (``exchange-emu send``, standing in for MAPI or ActiveSync) submits
into an Outbox with ``Upload`` then ``ClientSubmit`` (scenario A).

AMP values are limited to 64 KiB, so bodies travel in chunks.
"""

from __future__ import annotations

from twisted.protocols import amp

CHUNK_SIZE = 60_000
"""Bytes of a message body per AMP value (AMP's limit is 65,535)."""


class UnknownItem(Exception):
    """No such Outbox item (already sent, or never there)."""


class UnknownMailbox(Exception):
    """No such mailbox on this mailbox server."""


class UnknownUpload(Exception):
    """No such upload on this connection."""


class NotReady(Exception):
    """The hub cannot take submissions now (stopping, or its queue database is not open)."""


class Hello(amp.Command):
    """Hub → mailbox server: this connection belongs to hub ``hub`` of ``site``."""

    arguments = [(b"hub", amp.Unicode()), (b"fqdn", amp.Unicode()), (b"site", amp.Unicode())]
    response = [(b"server", amp.Unicode()), (b"databases", amp.ListOf(amp.Unicode()))]


class NotifySubmission(amp.Command):
    """Mailbox server → hub (B.1): a new item waits in an Outbox. The hub answers
    ``taken`` once it has committed the message to its Submission queue (B.2)."""

    arguments = [(b"database", amp.Unicode()), (b"item_id", amp.Integer())]
    response = [(b"taken", amp.Boolean()), (b"internal_id", amp.Integer())]
    errors = {NotReady: b"NOT_READY", UnknownItem: b"UNKNOWN_ITEM"}


class FetchItem(amp.Command):
    """Hub → mailbox server: the envelope of an Outbox item."""

    arguments = [(b"database", amp.Unicode()), (b"item_id", amp.Integer())]
    response = [
        (b"mailbox", amp.Unicode()),
        (b"sender", amp.Unicode()),
        (b"recipients", amp.ListOf(amp.Unicode())),
        (b"message_id", amp.Unicode()),
        (b"subject", amp.Unicode()),
        (b"submit_time", amp.Float()),
        (b"size", amp.Integer()),
    ]
    errors = {UnknownItem: b"UNKNOWN_ITEM"}


class FetchBody(amp.Command):
    """Hub → mailbox server: ``CHUNK_SIZE`` bytes of an Outbox item's body from ``offset``."""

    arguments = [(b"database", amp.Unicode()), (b"item_id", amp.Integer()),
                 (b"offset", amp.Integer())]
    response = [(b"data", amp.String()), (b"last", amp.Boolean())]
    errors = {UnknownItem: b"UNKNOWN_ITEM"}


class ReportOwnership(amp.Command):
    """Hub → mailbox server (B.4): the next hop has the message; the hub owns it now.
    The item moves from the Outbox to Sent Items."""

    arguments = [(b"database", amp.Unicode()), (b"item_id", amp.Integer()),
                 (b"hub", amp.Unicode())]
    response = [(b"moved", amp.Boolean())]


class Upload(amp.Command):
    """A chunk of a body for a later ``Deliver`` or ``ClientSubmit`` on the same
    connection; ``upload_id`` 0 starts a new upload. Answers the upload's id."""

    arguments = [(b"upload_id", amp.Integer()), (b"data", amp.String())]
    response = [(b"upload_id", amp.Integer())]
    errors = {UnknownUpload: b"UNKNOWN_UPLOAD"}


class Deliver(amp.Command):
    """Hub → mailbox server (C.1): deliver an uploaded message into Inboxes. Each
    recipient's status: ``delivered``, ``duplicate`` (DeliveredTo already has it:
    dropped, DUPLICATEDELIVER) or ``unknown`` (no such mailbox in ``database``)."""

    arguments = [
        (b"database", amp.Unicode()),
        (b"recipients", amp.ListOf(amp.Unicode())),
        (b"sender", amp.Unicode()),
        (b"message_id", amp.Unicode()),
        (b"submit_time", amp.Float()),
        (b"upload_id", amp.Integer()),
        (b"hub", amp.Unicode()),
    ]
    response = [(b"results", amp.AmpList([(b"recipient", amp.Unicode()),
                                          (b"status", amp.Unicode())]))]
    errors = {UnknownUpload: b"UNKNOWN_UPLOAD"}


class ClientSubmit(amp.Command):
    """Client → mailbox server (scenario A): put an uploaded message in ``mailbox``'s
    Outbox, for ``recipients``. Nothing else happens on this leg: no shadow exists."""

    arguments = [(b"mailbox", amp.Unicode()), (b"recipients", amp.ListOf(amp.Unicode())),
                 (b"upload_id", amp.Integer())]
    response = [(b"item_id", amp.Integer()), (b"message_id", amp.Unicode()),
                (b"database", amp.Unicode())]
    errors = {UnknownMailbox: b"UNKNOWN_MAILBOX", UnknownUpload: b"UNKNOWN_UPLOAD"}


class ReplicationStatus(amp.Command):
    """Mailbox server → hub: ``database`` is replicated to all its copies up to
    ``up_to``; transport dumpster items older than that can go."""

    arguments = [(b"database", amp.Unicode()), (b"up_to", amp.Float())]
    response = []


class Redeliver(amp.Command):
    """Mailbox server → hub, after a lossy failover of ``database``: resubmit what the
    transport dumpster holds for it since ``since``. Answers how many messages."""

    arguments = [(b"database", amp.Unicode()), (b"since", amp.Float())]
    response = [(b"count", amp.Integer())]


class Failover(amp.Command):
    """Administrator → mailbox server: fail ``database`` over to its passive copy. A lossy
    failover loses what the copy had not replicated — the last ``lost_seconds`` — and
    the mailbox server then asks every hub of its site to redeliver from the transport
    dumpster since then. Answers how many items were lost and how many hubs were asked."""

    arguments = [(b"database", amp.Unicode()), (b"lossy", amp.Boolean()),
                 (b"lost_seconds", amp.Float())]
    response = [(b"lost", amp.Integer()), (b"hubs", amp.Integer()),
                (b"since", amp.Float())]
    errors = {UnknownMailbox: b"UNKNOWN_DATABASE"}


class ReportReplication(amp.Command):
    """Administrator → mailbox server: ``database``'s copies have replicated its log up
    to ``up_to``. The mailbox server records it and tells every hub of its site
    (``ReplicationStatus``), whose transport dumpsters let go of older items."""

    arguments = [(b"database", amp.Unicode()), (b"up_to", amp.Float())]
    response = [(b"hubs", amp.Integer())]
    errors = {UnknownMailbox: b"UNKNOWN_DATABASE"}
