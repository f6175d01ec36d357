"""The header fields the mailbox store reads from, and adds to, an RFC 5322 message.

When a client saves a message in the Outbox, Exchange's store stamps what the client left out:
an Internet Message-ID (``<…@server FQDN>``) and the ``Date:`` of the client submit time. The
store never rewrites the client's bytes otherwise: missing fields are prepended to the header
block, in the line ending the message already uses.

Parsing is tolerant (the ``email`` package, header block only): a malformed header never
rejects a message, it only leaves a field unknown.
"""

from __future__ import annotations

import email.policy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import format_datetime


@dataclass(frozen=True)
class HeaderFields:
    """The fields of a message's header block the store keeps (None when absent or blank)."""

    message_id: str | None
    subject: str | None
    date: str | None


def header_block(mime: bytes) -> bytes:
    """The header block of ``mime``: everything before the first empty line (all of it if none)."""
    if mime.startswith((b"\r\n", b"\n")):
        return b""
    ends = [at for at in (mime.find(b"\r\n\r\n"), mime.find(b"\n\n")) if at >= 0]
    return mime[: min(ends)] if ends else mime


def _line_ending(mime: bytes) -> bytes:
    """CRLF unless the message's first line ends in a bare LF."""
    first = mime.find(b"\n")
    if first > 0 and mime[first - 1 : first] != b"\r":
        return b"\n"
    return b"\r\n"


def _field(message: Message, fallback: Message, name: str) -> str | None:
    """``name``'s value, unfolded and decoded (RFC 2047); the raw text if decoding fails."""
    try:
        value = message.get(name)
        text = None if value is None else " ".join(str(value).split())
    except Exception:
        raw = fallback.get(name)
        text = None if raw is None else " ".join(str(raw).split())
    return text or None


def read_headers(mime: bytes) -> HeaderFields:
    """Message-ID, Subject and Date of ``mime`` (tolerant: never raises for bad headers)."""
    block = header_block(mime) + b"\r\n\r\n"
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(block)
    raw = BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)
    return HeaderFields(
        message_id=_field(parsed, raw, "Message-ID"),
        subject=_field(parsed, raw, "Subject"),
        date=_field(parsed, raw, "Date"),
    )


def new_message_id(fqdn: str) -> str:
    """A new Internet Message-ID as the store stamps it: ``<uuid@fqdn>``."""
    return f"<{uuid.uuid4()}@{fqdn}>"


def rfc2822_date(now: float) -> str:
    """``now`` (epoch seconds) as an RFC 2822 ``Date:`` value in UTC, e.g.
    ``Sat, 28 Nov 2026 13:00:00 +0000``."""
    return format_datetime(datetime.fromtimestamp(int(now), tz=UTC))


def stamp_submission(mime: bytes, *, now: float, fqdn: str) -> tuple[bytes, HeaderFields]:
    """Add ``Message-ID:`` and ``Date:`` to ``mime`` when missing; keep them when present.

    Returns the (possibly) extended message and its header fields as stored.
    """
    fields = read_headers(mime)
    eol = _line_ending(mime)
    added: list[bytes] = []
    message_id = fields.message_id
    if message_id is None:
        message_id = new_message_id(fqdn)
        added.append(b"Message-ID: " + message_id.encode("ascii") + eol)
    date = fields.date
    if date is None:
        date = rfc2822_date(now)
        added.append(b"Date: " + date.encode("ascii") + eol)
    if not added:
        return mime, fields
    if not mime:
        added.append(eol)  # an empty message becomes a header block and an empty body
    stamped = b"".join(added) + mime
    return stamped, HeaderFields(message_id=message_id, subject=fields.subject, date=date)
