"""Exchange queue and message identities (the ``-Identity`` of Get-Queue and Get-Message).

Queues: ``HUB01\\Submission``, ``HUB01\\Unreachable``, ``HUB01\\Poison``, ``HUB01\\Shadow\\3``
(the shadow queue of one primary server) and ``HUB01\\12`` (a delivery queue by its number).
Messages: the queue's identity and the message's InternalId, ``HUB01\\12\\345``,
``HUB01\\Submission\\345``, ``HUB01\\Shadow\\3\\345``. A ``/`` is accepted in place of ``\\``
(handier in URLs and shells).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class IdentityError(ValueError):
    """An identity that names no queue or message; str() is a one-line hint."""


class QueueKind(enum.StrEnum):
    """The kinds of queue a transport server has."""

    SUBMISSION = "Submission"
    UNREACHABLE = "Unreachable"
    POISON = "Poison"
    SHADOW = "Shadow"
    DELIVERY = "Delivery"


_NAMED = {k.value.lower(): k for k in (QueueKind.SUBMISSION, QueueKind.UNREACHABLE,
                                        QueueKind.POISON)}
_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
QUEUE_FORMS = "SERVER\\Submission, SERVER\\Unreachable, SERVER\\Poison, SERVER\\Shadow\\N " \
    "or SERVER\\N"
MESSAGE_FORMS = "SERVER\\QUEUE\\MESSAGEID (e.g. HUB01\\12\\345 or HUB01\\Submission\\345)"


@dataclass(frozen=True)
class QueueIdentity:
    """A queue of one server: a named queue, or a numbered delivery or shadow queue."""

    server: str
    kind: QueueKind
    number: int | None = None

    def __str__(self) -> str:
        if self.kind == QueueKind.DELIVERY:
            return f"{self.server}\\{self.number}"
        if self.kind == QueueKind.SHADOW:
            return f"{self.server}\\Shadow\\{self.number}"
        return f"{self.server}\\{self.kind.value}"

    def with_server(self, server: str) -> QueueIdentity:
        return QueueIdentity(server, self.kind, self.number)


@dataclass(frozen=True)
class MessageIdentity:
    """A message in one queue: ``<queue identity>\\<InternalId>``."""

    queue: QueueIdentity
    internal_id: int

    @property
    def server(self) -> str:
        return self.queue.server

    def __str__(self) -> str:
        return f"{self.queue}\\{self.internal_id}"


def _parts(text: str) -> list[str]:
    return [p.strip() for p in text.strip().replace("/", "\\").split("\\")]


def _number(text: str, what: str, original: str, forms: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise IdentityError(f"{what} '{text}' in identity '{original}' is not a positive "
                            f"number; use {forms}")
    return int(text)


def _queue(parts: list[str], original: str, forms: str) -> QueueIdentity:
    server = parts[0]
    if not _SERVER.match(server):
        raise IdentityError(f"identity '{original}' does not start with a server name; "
                            f"use {forms}")
    server = server.upper()
    rest = parts[1:]
    if len(rest) == 1 and rest[0].lower() in _NAMED:
        return QueueIdentity(server, _NAMED[rest[0].lower()])
    if len(rest) == 2 and rest[0].lower() == "shadow":
        return QueueIdentity(server, QueueKind.SHADOW,
                             _number(rest[1], "shadow queue", original, forms))
    if len(rest) == 1 and rest[0].isdigit():
        return QueueIdentity(server, QueueKind.DELIVERY,
                             _number(rest[0], "queue", original, forms))
    raise IdentityError(f"'{original}' is not a queue identity; use {forms}")


def parse_queue_identity(text: str) -> QueueIdentity:
    """``HUB01\\12`` → a queue identity; raises :class:`IdentityError` with a hint."""
    parts = _parts(text)
    if len(parts) < 2 or not all(parts):
        raise IdentityError(f"'{text}' is not a queue identity; use {QUEUE_FORMS}")
    return _queue(parts, text, QUEUE_FORMS)


def parse_message_identity(text: str) -> MessageIdentity:
    """``HUB01\\12\\345`` → a message identity; raises :class:`IdentityError` with a hint."""
    parts = _parts(text)
    if len(parts) < 3 or not all(parts):
        raise IdentityError(f"'{text}' is not a message identity; use {MESSAGE_FORMS}")
    queue = _queue(parts[:-1], text, MESSAGE_FORMS)
    return MessageIdentity(queue, _number(parts[-1], "message id", text, MESSAGE_FORMS))
