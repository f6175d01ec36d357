"""Why a foreign or legacy recipient got a message more than once, read from the message
tracking logs of every server it passed.

Shadow redundancy promises at-least-once delivery to recipients outside the organization's
mailboxes, and its documentation names where the extra copies come from (protocol.md §5).
The crash matrix meets two causes:

- **takeover**: a shadow holder took the message over (``RESUBMIT``) from a primary that had
  already passed it on, or that came back with its database after the takeover;
- **sent again**: a hop took the message more often than the servers before it recorded
  sending it there: an acknowledgement was lost between the hop's commit and its sender's.
  Either the sender was killed after the hop's ``250`` and before its own commit of the
  delivery, or the hop was killed after its commit and before its ``250`` left. Either way
  the sender, restarted or retrying, sent the message again — SMTP's own duplicate
  (RFC 1047), which no relay can rule out.

Anything else is **unexplained**, and the crash matrix reports its Message-ID.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

from exchange_emu.logs.tracking_event import TrackingEvent

TAKEOVER = "takeover"
SENT_AGAIN = "sent again"
UNEXPLAINED = "unexplained"


def duplicate_cause(events: Iterable[TrackingEvent], servers: Collection[str]) -> str:
    """The cause of a duplicate, from the tracking rows about that message of ``servers``
    (their FQDNs: every server whose tracking log was read).

    A hop counts its receipts per sending server of ``servers`` (the ``RECEIVE`` row's
    client host name; a sender without a tracking log cannot be checked), leaving out F.7:
    that row releases a delayed acknowledgement and is not a receipt. The sender counts its
    ``SEND`` rows to that hop (the ``destination`` in custom-data).

    A hop killed right after its commit may lose its ``RECEIVE`` row (rows are buffered),
    but it delivers what it committed once restarted: its ``DELIVER`` rows count its copies
    too, one per internal message id (each receipt gets its own; the same id delivered
    twice is no lost acknowledgement and stays unexplained), against every ``SEND`` to it.
    """
    events = list(events)
    if any(e.event_id == "RESUBMIT" for e in events):
        return TAKEOVER
    received = Counter((e.server_hostname, e.client_hostname) for e in events
                       if e.event_id == "RECEIVE" and e.client_hostname in servers
                       and e.custom_data.get("step") != "F.7")
    sent = Counter((e.custom_data.get("destination", ""), e.server_hostname) for e in events
                   if e.event_id == "SEND")
    if any(count > sent[hop] for hop, count in received.items()):
        return SENT_AGAIN
    delivered = Counter(hop for hop, _ in {(e.server_hostname, e.internal_message_id)
                                           for e in events if e.event_id == "DELIVER"})
    sent_to = Counter(e.custom_data.get("destination", "") for e in events
                      if e.event_id == "SEND")
    if any(copies > sent_to[hop] for hop, copies in delivered.items()):
        return SENT_AGAIN
    return UNEXPLAINED


def duplicate_causes(events: Iterable[TrackingEvent], message_ids: Iterable[str],
                     servers: Collection[str]) -> dict[str, str]:
    """:func:`duplicate_cause` of each of ``message_ids``, from ``events`` (the tracking rows
    of ``servers``, about any messages)."""
    about: dict[str, list[TrackingEvent]] = {m: [] for m in message_ids}
    for event in events:
        if event.message_id in about:
            about[event.message_id].append(event)
    return {m: duplicate_cause(rows, servers) for m, rows in about.items()}
