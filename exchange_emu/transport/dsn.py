"""Delivery status notifications (DSNs) as Exchange 2010 transport sends them.

The non-delivery report (NDR, ``Undeliverable: <subject>``), the delay DSN (``Delivery Delayed:
<subject>``) and the success DSNs (``Delivered:`` / ``Relayed:``) are RFC 3464
``multipart/report; report-type=delivery-status`` messages of three parts: Exchange's
human-readable text, a ``message/delivery-status`` part, and the original message
(``message/rfc822``) or only its headers (``text/rfc822-headers``). Which recipients get
reported follows the RFC 3461 ``NOTIFY`` rules (:func:`wants_dsn`); a message from the null
sender ``<>`` never gets a DSN. Pure functions: no I/O, the time is passed in. See docs/dsn.md.
"""

from __future__ import annotations

import quopri
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.policy import SMTP
from email.utils import format_datetime
from typing import Literal

from exchange_emu.smtp.envelope import EnvelopeSyntaxError, xtext_decode

__all__ = [
    "DEFAULT_MAX_ORIGINAL_SIZE",
    "POSTMASTER_DISPLAY_NAME",
    "DsnKind",
    "DsnMessage",
    "NoDsnWanted",
    "RecipientStatus",
    "build_delay_dsn",
    "build_ndr",
    "build_success_dsn",
    "dsn_recipients",
    "is_null_sender",
    "original_subject",
    "wants_dsn",
]

DsnKind = Literal["failed", "delayed", "delivered", "relayed"]
"""The RFC 3464 ``Action`` of a DSN: NDR, delay DSN, delivery or relay success DSN."""

DEFAULT_MAX_ORIGINAL_SIZE = 10 * 1024 * 1024
"""An original larger than this (bytes) is returned as headers only."""

POSTMASTER_DISPLAY_NAME = "Microsoft Outlook"
"""The display name Exchange 2010 puts before the postmaster address in a DSN's ``From``."""

_NOTIFY_WORD: dict[str, str] = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
}
_SUBJECT_PREFIX: dict[str, str] = {
    "failed": "Undeliverable",
    "delayed": "Delivery Delayed",
    "delivered": "Delivered",
    "relayed": "Relayed",
}
_STATUS_CLASSES: dict[str, str] = {"failed": "45", "delayed": "4", "delivered": "2", "relayed": "2"}
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

# Exchange 2010's user-information sentences, by enhanced status code (exact, then x.y class).
_USER_TEXT_DEFAULT = (
    "A problem occurred during the delivery of this message to this e-mail address. "
    "Try sending this message again. If the problem continues, please contact your helpdesk."
)
_USER_TEXT_NOT_FOUND = (
    "The e-mail address you entered couldn't be found. Please check the recipient's e-mail "
    "address and try to resend the message. If the problem continues, please contact your "
    "helpdesk."
)
_USER_TEXT_EXPIRED = (
    "Microsoft Exchange has been trying to deliver this message without success and has "
    "stopped trying. Please try sending this message again, or provide the following "
    "diagnostic text to your system administrator."
)
_USER_TEXT: dict[str, str] = {
    "5.1.1": _USER_TEXT_NOT_FOUND,
    "5.1.0": _USER_TEXT_NOT_FOUND,
    "5.1.3": _USER_TEXT_NOT_FOUND,
    "5.1.4": (
        "There's more than one recipient with this e-mail address, so the message couldn't "
        "be delivered. Please contact your helpdesk."
    ),
    "5.2.2": (
        "The recipient's mailbox is full and can't accept messages now. Please try to resend "
        "your message later, or contact the recipient directly."
    ),
    "5.2.3": (
        "Your message is too big to be delivered to this recipient. Try sending a smaller "
        "message, or remove attachments, and try again."
    ),
    "5.3.4": (
        "Your message is too big to be delivered to this recipient. Try sending a smaller "
        "message, or remove attachments, and try again."
    ),
    "5.7.1": (
        "You don't have permission to send to this recipient. For assistance, contact your "
        "system administrator."
    ),
    "4.4.7": _USER_TEXT_EXPIRED,
    "5.4.7": _USER_TEXT_EXPIRED,
    "5.4.6": (
        "A routing loop was detected while delivering this message, so it couldn't be "
        "delivered. Please contact your helpdesk."
    ),
    "5.4.14": (
        "A routing loop was detected while delivering this message, so it couldn't be "
        "delivered. Please contact your helpdesk."
    ),
    "5.4": (
        "The recipient's e-mail system couldn't be reached, so the message couldn't be "
        "delivered. Please try to resend the message later. If the problem continues, please "
        "contact your helpdesk."
    ),
}


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient reported in a DSN: its address, status and the SMTP reply behind it.

    ``status`` is the enhanced status code (``5.1.1``); ``diagnostic`` the whole SMTP reply
    (``550 5.1.1 RESOLVER.ADR.RecipNotFound; not found``); ``remote_mta`` the host that gave
    it when another server did; ``orcpt`` the ``RCPT TO`` ``ORCPT`` value as received
    (``rfc822;erin@fabrikam.test``, xtext allowed); ``notify`` the ``NOTIFY`` value as
    received (``FAILURE,DELAY``), None when the client gave none.
    """

    address: str
    status: str
    diagnostic: str
    remote_mta: str | None = None
    orcpt: str | None = None
    notify: str | None = None

    def __post_init__(self) -> None:
        if not _STATUS.match(self.status):
            raise ValueError(f"not an enhanced status code: {self.status!r}")


@dataclass(frozen=True)
class DsnMessage:
    """A DSN ready to queue: envelope, headers of note and the RFC 5322 bytes (CRLF lines).

    ``sender`` is always ``""``: a DSN goes out from the null reverse-path ``<>``.
    ``body_type`` is ``8BITMIME`` when the returned original carries 8-bit bytes.
    """

    sender: str
    recipient: str
    message_id: str
    subject: str
    body: bytes
    kind: DsnKind = "failed"
    reported: tuple[str, ...] = ()
    body_type: str = "7BIT"


class NoDsnWanted(ValueError):
    """No DSN is due: the sender is ``<>`` or no recipient's ``NOTIFY`` asks for this kind."""


def is_null_sender(sender: str) -> bool:
    """True for the null reverse-path ``<>`` (bounces, DSNs), which never gets a DSN."""
    return sender.strip() in ("", "<>")


def wants_dsn(kind: DsnKind, sender: str, notify: str | None) -> bool:
    """Whether a DSN of ``kind`` is due for one recipient, by RFC 3461 ``NOTIFY``.

    No ``NOTIFY`` (None or empty): NDR and delay DSN yes, success DSNs no, as Exchange.
    ``NEVER``: none. Otherwise ``FAILURE`` / ``DELAY`` / ``SUCCESS`` must be listed.
    A message from the null sender never gets one (no DSN loops).
    """
    if is_null_sender(sender):
        return False
    words = {word.strip().upper() for word in (notify or "").split(",") if word.strip()}
    if not words:
        return kind in ("failed", "delayed")
    if "NEVER" in words:
        return False
    return _NOTIFY_WORD[kind] in words


def dsn_recipients(
    kind: DsnKind, sender: str, recipients: Sequence[RecipientStatus]
) -> tuple[RecipientStatus, ...]:
    """The recipients a DSN of ``kind`` reports: those whose ``NOTIFY`` asks for it."""
    return tuple(r for r in recipients if wants_dsn(kind, sender, r.notify))


# --- the original message ---------------------------------------------------------------------


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _split_original(original: bytes) -> tuple[bytes, bytes]:
    """The header block (ending in CRLF, no blank line) and the body of a CRLF message."""
    if original.startswith(b"\r\n"):
        return b"", original[2:]
    head, sep, body = original.partition(b"\r\n\r\n")
    if not sep:
        head = head.rstrip(b"\r\n")
    return (head + b"\r\n" if head else b""), body


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """Unfolded ``(name, raw value)`` pairs of a header block, 8-bit bytes read as UTF-8."""
    fields: list[tuple[str, str]] = []
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return fields


def _header_value(head: bytes, name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in _header_fields(head) if key.lower() == wanted), None)


def _decode_words(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded; left as it is when malformed."""
    try:
        text = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        text = value
    return " ".join(text.split())


def original_subject(original: bytes) -> str:
    """The ``Subject`` of a message (RFC 2047 decoded, unfolded), ``""`` when it has none."""
    head, _ = _split_original(_crlf(original))
    value = _header_value(head, "Subject")
    return _decode_words(value) if value is not None else ""


# --- formatting helpers ----------------------------------------------------------------------


def _rfc822_date(moment: float) -> str:
    return format_datetime(datetime.fromtimestamp(moment, tz=UTC))


def _bare(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address


def _header(name: str, value: str) -> str:
    """``Name: value`` folded at 78 columns, non-ASCII words RFC 2047 encoded."""
    value = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return SMTP.header_factory(name, value).fold(policy=SMTP).rstrip("\r\n")


def _ascii_field(text: str) -> str:
    """A ``message/delivery-status`` value in 7-bit ASCII (RFC 6533 ``\\x{HH}`` escapes)."""
    text = " ".join(text.split())
    return "".join(c if " " <= c <= "~" else f"\\x{{{ord(c):X}}}" for c in text)


def _typed_address(address: str) -> str:
    if address.isascii():
        return f"rfc822;{_ascii_field(address)}"
    return f"utf-8;{_ascii_field(address)}"


def _original_recipient(orcpt: str) -> str:
    """The ``Original-Recipient`` value from an ``ORCPT`` parameter, xtext decoded."""
    try:
        decoded = xtext_decode(orcpt)
    except EnvelopeSyntaxError:
        decoded = orcpt
    addr_type, sep, address = decoded.partition(";")
    if not sep:
        return _typed_address(decoded)
    return f"{addr_type.strip()};{_ascii_field(address.strip())}"


def _envelope_id(envid: str) -> str:
    try:
        return _ascii_field(xtext_decode(envid))
    except EnvelopeSyntaxError:
        return _ascii_field(envid)


def _remaining(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days} days, {hours} hours and {minutes} minutes"


def _user_text(status: str) -> str:
    exact = _USER_TEXT.get(status)
    if exact is not None:
        return exact
    return _USER_TEXT.get(".".join(status.split(".")[:2]), _USER_TEXT_DEFAULT)


def _diagnostic_line(recipient: RecipientStatus) -> str:
    line = f"#{' '.join(recipient.diagnostic.split())} ##"
    return f"{recipient.remote_mta} {line}" if recipient.remote_mta else line


# --- the three parts --------------------------------------------------------------------------


def _human_text(
    kind: DsnKind,
    *,
    reporting_mta: str,
    recipients: Sequence[RecipientStatus],
    subject: str,
    headers: bytes,
    now: float,
    retry_until: float | None,
) -> str:
    lines: list[str] = []
    if kind == "failed":
        lines += ["Delivery has failed to these recipients or groups:", ""]
        for r in recipients:
            lines.append(r.address)
            lines.append(_user_text(r.status))
            if r.remote_mta:
                lines.append(f"The following organization rejected your message: {r.remote_mta}.")
            lines.append("")
    elif kind == "delayed":
        lines += ["Delivery is delayed to these recipients or groups:", ""]
        lines += [r.address for r in recipients]
        lines += ["", f"Subject: {subject}", ""]
        lines += [
            "This message hasn't been delivered yet. Delivery will continue to be attempted.",
            "",
            "The server will keep trying to deliver this message for the next "
            f"{_remaining((retry_until or now) - now)}. You'll be notified if the message "
            "can't be delivered by that time.",
            "",
        ]
    elif kind == "delivered":
        lines += ["Your message has been delivered to the following recipients:", ""]
        lines += [r.address for r in recipients]
        lines += ["", f"Subject: {subject}", ""]
    else:
        lines += [
            "Delivery to these recipients or groups is complete, but no delivery notification "
            "was sent by the destination server:",
            "",
        ]
        lines += [r.address for r in recipients]
        lines += ["", f"Subject: {subject}", ""]
    if kind in ("failed", "delayed"):
        lines += ["", "Diagnostic information for administrators:", ""]
        lines += [f"Generating server: {reporting_mta}", ""]
        for r in recipients:
            lines += [r.address, _diagnostic_line(r), ""]
    lines += ["", "Original message headers:", ""]
    text = "\r\n".join(lines) + "\r\n"
    return text + headers.decode("utf-8", errors="replace")


def _text_part(text: str) -> bytes:
    data = text.encode("utf-8")
    if text.isascii() and all(len(line) <= 998 for line in data.split(b"\r\n")):
        return (
            b"Content-Type: text/plain; charset=us-ascii\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n\r\n" + data
        )
    encoded = quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded
    )


def _status_part(
    kind: DsnKind,
    *,
    reporting_mta: str,
    received_from_mta: str | None,
    arrival: float,
    envid: str | None,
    recipients: Sequence[RecipientStatus],
    now: float,
    retry_until: float | None,
) -> bytes:
    fields: list[str] = []
    if envid:
        fields.append(f"Original-Envelope-Id: {_envelope_id(envid)}")
    fields.append(f"Reporting-MTA: dns;{reporting_mta}")
    if received_from_mta:
        fields.append(f"Received-From-MTA: dns;{received_from_mta}")
    fields.append(f"Arrival-Date: {_rfc822_date(arrival)}")
    blocks = ["\r\n".join(fields)]
    for r in recipients:
        block: list[str] = []
        if r.orcpt:
            block.append(f"Original-Recipient: {_original_recipient(r.orcpt)}")
        block.append(f"Final-Recipient: {_typed_address(r.address)}")
        block.append(f"Action: {kind}")
        block.append(f"Status: {r.status}")
        if r.remote_mta:
            block.append(f"Remote-MTA: dns;{_ascii_field(r.remote_mta)}")
        if r.diagnostic:
            block.append(f"Diagnostic-Code: smtp;{_ascii_field(r.diagnostic)}")
        if kind == "delayed" or (kind == "failed" and r.remote_mta):
            block.append(f"Last-Attempt-Date: {_rfc822_date(now)}")
        if kind == "delayed" and retry_until is not None:
            block.append(f"Will-Retry-Until: {_rfc822_date(retry_until)}")
        blocks.append("\r\n".join(block))
    body = "\r\n\r\n".join(blocks) + "\r\n"
    return b"Content-Type: message/delivery-status\r\n\r\n" + body.encode("ascii")


def _original_part(data: bytes, *, headers_only: bool) -> bytes:
    content_type = b"text/rfc822-headers" if headers_only else b"message/rfc822"
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    encoding = b"" if data.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
    return b"Content-Type: " + content_type + b"\r\n" + encoding + b"\r\n" + data


# --- building a DSN ---------------------------------------------------------------------------


def _build(
    kind: DsnKind,
    *,
    reporting_mta: str,
    postmaster: str,
    original_sender: str,
    original: bytes,
    recipients: Sequence[RecipientStatus],
    arrival: float,
    now: float,
    ret: str | None,
    envid: str | None,
    max_original_size: int,
    received_from_mta: str | None,
    retry_until: float | None,
    message_id: str | None,
) -> DsnMessage:
    if is_null_sender(original_sender):
        raise NoDsnWanted("a message from the null sender <> never gets a DSN")
    reported = dsn_recipients(kind, original_sender, recipients)
    if not reported:
        raise NoDsnWanted(f"no recipient's NOTIFY asks for a {kind!r} DSN")
    for r in reported:
        if r.status[0] not in _STATUS_CLASSES[kind]:
            raise ValueError(f"status {r.status} does not fit a {kind!r} DSN ({r.address})")
    reporting_mta = reporting_mta.strip().rstrip(".")
    to = _bare(original_sender)

    message = _crlf(original)
    head, _ = _split_original(message)
    subject_text = original_subject(message)
    subject = f"{_SUBJECT_PREFIX[kind]}: {subject_text}".rstrip()
    if ret is not None:
        headers_only = ret.strip().upper() == "HDRS"
    else:
        headers_only = kind != "failed"  # delay and success DSNs return only the headers
    if len(message) > max_original_size:
        headers_only = True
    returned = head if headers_only else message

    if message_id is None:
        message_id = f"<{uuid.uuid4()}@{reporting_mta}>"
    token = uuid.uuid5(uuid.NAMESPACE_OID, message_id).hex.upper()

    parts = [
        _text_part(
            _human_text(
                kind,
                reporting_mta=reporting_mta,
                recipients=reported,
                subject=subject_text,
                headers=head,
                now=now,
                retry_until=retry_until,
            )
        ),
        _status_part(
            kind,
            reporting_mta=reporting_mta,
            received_from_mta=received_from_mta,
            arrival=arrival,
            envid=envid,
            recipients=reported,
            now=now,
            retry_until=retry_until,
        ),
        _original_part(returned, headers_only=headers_only),
    ]
    boundary = f"{token[:8]}DSN=_{token[8:]}{reporting_mta}"
    while any(boundary.encode() in part for part in parts):
        boundary += "_"

    header_lines = [
        f"From: {POSTMASTER_DISPLAY_NAME} <{_bare(postmaster)}>",
        f"To: {to}",
        f"Date: {_rfc822_date(now)}",
        _header("Subject", subject),
        f"Message-ID: {message_id}",
    ]
    original_id = _header_value(head, "Message-ID")
    if original_id and original_id.isascii():
        header_lines += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
    header_lines += [
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Language: en-US",
    ]
    if kind == "failed":
        header_lines.append("X-MS-Exchange-Message-Is-Ndr:")
    header_lines.append("Auto-Submitted: auto-replied")

    delimiter = b"--" + boundary.encode("ascii")
    body = "\r\n".join(header_lines).encode("ascii") + b"\r\n\r\n"
    body += b"This is a MIME-formatted message.\r\n"
    body += b"Portions of this message may be unreadable without a MIME-capable mail program.\r\n"
    body += b"\r\n"
    for part in parts:
        body += delimiter + b"\r\n" + part
        if not part.endswith(b"\r\n"):
            body += b"\r\n"
        body += b"\r\n"
    body += delimiter + b"--\r\n"
    return DsnMessage(
        sender="",
        recipient=to,
        message_id=message_id,
        subject=subject,
        body=body,
        kind=kind,
        reported=tuple(r.address for r in reported),
        body_type="7BIT" if body.isascii() else "8BITMIME",
    )


def build_ndr(
    *,
    reporting_mta: str,
    postmaster: str,
    original_sender: str,
    original: bytes,
    recipients: Sequence[RecipientStatus],
    arrival: float,
    now: float,
    ret: str | None = None,
    envid: str | None = None,
    max_original_size: int = DEFAULT_MAX_ORIGINAL_SIZE,
    received_from_mta: str | None = None,
    message_id: str | None = None,
) -> DsnMessage:
    """The non-delivery report (``Undeliverable: <subject>``) for the failed recipients.

    Reports the recipients whose ``NOTIFY`` allows an NDR (``Action: failed``); returns the
    whole original unless ``ret`` is ``HDRS`` or it is over ``max_original_size``.
    ``arrival`` and ``now`` are POSIX times; ``message_id`` defaults to
    ``<guid@reporting_mta>``. Raises :class:`NoDsnWanted` when no NDR is due.
    """
    return _build(
        "failed",
        reporting_mta=reporting_mta,
        postmaster=postmaster,
        original_sender=original_sender,
        original=original,
        recipients=recipients,
        arrival=arrival,
        now=now,
        ret=ret,
        envid=envid,
        max_original_size=max_original_size,
        received_from_mta=received_from_mta,
        retry_until=None,
        message_id=message_id,
    )


def build_delay_dsn(
    *,
    reporting_mta: str,
    postmaster: str,
    original_sender: str,
    original: bytes,
    recipients: Sequence[RecipientStatus],
    arrival: float,
    now: float,
    retry_until: float,
    ret: str | None = None,
    envid: str | None = None,
    max_original_size: int = DEFAULT_MAX_ORIGINAL_SIZE,
    received_from_mta: str | None = None,
    message_id: str | None = None,
) -> DsnMessage:
    """The delay DSN (``Delivery Delayed: <subject>``) for recipients still being retried.

    ``retry_until`` is when the message expires (``Will-Retry-Until``, and the "next N days,
    H hours and M minutes" sentence). Returns only the original's headers unless
    ``ret`` is ``FULL``. Raises :class:`NoDsnWanted` when no delay DSN is due.
    """
    return _build(
        "delayed",
        reporting_mta=reporting_mta,
        postmaster=postmaster,
        original_sender=original_sender,
        original=original,
        recipients=recipients,
        arrival=arrival,
        now=now,
        ret=ret,
        envid=envid,
        max_original_size=max_original_size,
        received_from_mta=received_from_mta,
        retry_until=retry_until,
        message_id=message_id,
    )


def build_success_dsn(
    *,
    kind: Literal["delivered", "relayed"],
    reporting_mta: str,
    postmaster: str,
    original_sender: str,
    original: bytes,
    recipients: Sequence[RecipientStatus],
    arrival: float,
    now: float,
    ret: str | None = None,
    envid: str | None = None,
    max_original_size: int = DEFAULT_MAX_ORIGINAL_SIZE,
    received_from_mta: str | None = None,
    message_id: str | None = None,
) -> DsnMessage:
    """A success DSN for ``NOTIFY=SUCCESS`` recipients: ``Delivered: <subject>`` (delivered
    to a mailbox) or ``Relayed: <subject>`` (handed to a server that sends no DSNs).

    Returns only the original's headers unless ``ret`` is ``FULL``. Raises
    :class:`NoDsnWanted` when no recipient asked for one.
    """
    return _build(
        kind,
        reporting_mta=reporting_mta,
        postmaster=postmaster,
        original_sender=original_sender,
        original=original,
        recipients=recipients,
        arrival=arrival,
        now=now,
        ret=ret,
        envid=envid,
        max_original_size=max_original_size,
        received_from_mta=received_from_mta,
        retry_until=None,
        message_id=message_id,
    )
