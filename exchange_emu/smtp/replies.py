"""SMTP replies, and the fixed reply texts Exchange 2010 transport sends.

The texts are those of protocol.md §1–§4 and §7; the ones the spec does not
fix are the emulator's choice and are collected here so every module uses
the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a three-digit code and one or more text lines."""

    code: int
    lines: tuple[str, ...]

    @classmethod
    def of(cls, code: int, *lines: str) -> Reply:
        return cls(code, tuple(lines) if lines else ("",))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def to_bytes(self) -> bytes:
        """The reply on the wire: ``250-a`` … ``250 z``, each line ended by CRLF."""
        wire: bytes | None = self.__dict__.get("_wire")
        if wire is None:  # worked out once per reply: the fixed ones go out for every message
            out = []
            last = len(self.lines) - 1
            for i, line in enumerate(self.lines):
                sep = " " if i == last else "-"
                out.append(f"{self.code}{sep}{line}".rstrip(" ") + "\r\n")
            wire = "".join(out).encode("utf-8", "surrogateescape")
            object.__setattr__(self, "_wire", wire)
        return wire

    def __str__(self) -> str:
        display: str | None = self.__dict__.get("_display")
        if display is None:
            display = " / ".join(f"{self.code} {line}" for line in self.lines)
            object.__setattr__(self, "_display", display)
        return display


def r(code: int, text: str) -> Reply:
    """Shorthand for a single-line reply."""
    return Reply(code, (text,))


CLOSING = r(221, "2.0.0 Service closing transmission channel")
UNRECOGNIZED = r(500, "5.3.3 Unrecognized command")
NOT_IMPLEMENTED = r(502, "5.3.3 Command not implemented")
BAD_SEQUENCE = r(503, "5.5.1 Bad sequence of commands")
INVALID_ARGUMENTS = r(501, "5.5.4 Invalid arguments")
NOT_AUTHORIZED = r(550, "5.7.1 Not authorized")
UNABLE_TO_RELAY = r(550, "5.7.1 Unable to relay")
HOP_COUNT_EXCEEDED = r(554, "5.4.6 Hop count exceeded - possible mail loop")
SENDER_OK = r(250, "2.1.0 Sender OK")
RECIPIENT_OK = r(250, "2.1.5 Recipient OK")
START_MAIL_INPUT = r(354, "Start mail input; end with <CRLF>.<CRLF>")
OK = r(250, "2.0.0 OK")
RESETTING = r(250, "2.0.0 Resetting")
CANNOT_VRFY = r(252, "2.1.5 Cannot VRFY user")
TLS_READY = r(220, "2.0.0 SMTP server ready")
SEND_HELLO_FIRST = r(503, "5.5.2 Send hello first")
SENDER_ALREADY_SPECIFIED = r(503, "5.5.2 Sender already specified")
NEED_MAIL = r(503, "5.5.2 Need mail command")
NEED_RCPT = r(503, "5.5.2 Need rcpt command")
INVALID_DOMAIN = r(501, "5.5.4 Invalid domain name")
INVALID_SENDER = r(501, "5.1.7 Invalid address")
INVALID_RECIPIENT = r(501, "5.1.3 Invalid address")
TOO_MANY_RECIPIENTS = r(452, "4.5.3 Too many recipients")
SIZE_EXCEEDED = r(552, "5.3.4 Message size exceeds fixed maximum message size")
HEADER_SIZE_EXCEEDED = r(552, "5.3.4 Header size exceeds fixed maximum size")
LINE_TOO_LONG = r(500, "5.5.2 Line too long")
BODY_LINE_TOO_LONG = r(554, "5.6.0 Invalid message content: line too long")
SHADOW_CONTEXT_REQUIRED = r(501, "5.0.0 XSHADOW requires Shadow server's context")
DISCARD_COUNT_REQUIRED = r(501, "5.0.0 XQDISCARD requires maximum discard events count")
NO_DISCARD_EVENTS = r(251, "OK, no discard events")
REDUNDANCY_FAILED = r(451, "4.4.0 Message failed to be made redundant")
SEND_BINARY_DATA = r(354, "Send binary data")
XEXCH50_OK = r(250, "2.0.0 XEXCH50 OK")
TIMED_OUT = r(421, "4.4.1 Connection timed out")
TOO_MANY_ERRORS = r(421, "4.7.0 Too many errors on this connection, closing transmission channel")
BINARYMIME_NEEDS_BDAT = r(503, "5.5.1 Bad sequence of commands: BODY=BINARYMIME requires BDAT")
AUTH_OK = r(235, "2.7.0 Authentication successful")
AUTH_FAILED = r(535, "5.7.3 Authentication unsuccessful")
AUTH_UNKNOWN_MECHANISM = r(504, "5.7.4 Unrecognized authentication type")
AUTH_ALREADY = r(503, "5.5.1 Already authenticated")
AUTH_CANCELLED = r(501, "5.0.0 Authentication cancelled")
AUTH_REQUIRED = r(530, "5.7.1 Client was not authenticated")
STARTTLS_FIRST = r(530, "5.7.0 Must issue a STARTTLS command first")
SEND_AS_DENIED = r(550, "5.7.1 Client does not have permissions to send as this sender")
TOO_MANY_CONNECTIONS = r(421, "4.3.2 The maximum number of concurrent server connections has "
                         "exceeded a limit, closing transmission channel")
TOO_MANY_FROM_SOURCE = r(421, "4.3.2 The maximum number of concurrent connections has exceeded "
                         "a limit, closing transmission channel")
TOO_MANY_MESSAGES = r(421, "4.4.2 The maximum number of messages per connection has been "
                      "reached, closing transmission channel")
LOCAL_ERROR = r(451, "4.7.0 Temporary server error. Please try again later")
HELP = Reply(
    214,
    (
        "This server supports the following commands:",
        "HELO EHLO STARTTLS RCPT DATA RSET MAIL QUIT HELP AUTH BDAT",
    ),
)


def unsupported_parameter(name: str) -> Reply:
    return r(555, f"5.5.4 Unsupported option: {name}")


def queued(message_id: str, internal_id: int, hostname: str) -> Reply:
    """Exchange's acceptance of a message, sent only after its commit."""
    return r(
        250,
        f"2.6.0 {message_id} [InternalId={internal_id}, Hostname={hostname}] "
        "Queued mail for delivery",
    )


def chunk_received(octets: int) -> Reply:
    return r(250, f"2.0.0 CHUNK received OK, {octets} octets")


def hello(fqdn: str, client_ip: str) -> str:
    return f"{fqdn} Hello [{client_ip}]"
