"""Parsing of the SMTP envelope: ``MAIL FROM``/``RCPT TO`` paths, ESMTP
parameters, xtext (RFC 3461) and the shadow-redundancy identifiers that ride
on them (``XSHADOW`` context, ``XSHADOW=`` message id, database id)."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field

MAX_SHADOW_CONTEXT = 255
"""Longest ``XSHADOW`` argument Exchange accepts (protocol.md §2)."""

_ADDRESS = re.compile(
    r"^(?:@[^:,<>\s]+(?:,@[^:,<>\s]+)*:)?"  # obsolete source route, ignored
    r"(?P<addr>[^\s<>()\[\]\\,;:\"@]+(?:\.[^\s<>()\[\]\\,;:\"@]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[^\]\s]+\]))$"
)
_QUOTED_LOCAL = re.compile(r'^(?P<addr>"(?:[^"\\\r\n]|\\.)*"@[A-Za-z0-9.\-\[\]:]+)$')


class EnvelopeSyntaxError(ValueError):
    """A path or parameter that does not parse."""


@dataclass(frozen=True)
class PathCommand:
    """A parsed ``MAIL FROM:<…> params`` or ``RCPT TO:<…> params``."""

    address: str  # "" for the null reverse-path <>
    params: dict[str, str | None] = field(default_factory=dict)


def parse_path_command(argument: str, keyword: str) -> PathCommand:
    """Parse the text after ``MAIL`` or ``RCPT`` (``keyword`` is FROM or TO)."""
    head, sep, rest = argument.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise EnvelopeSyntaxError(f"expected {keyword}:<address>")
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        # Bare address without brackets: accepted by Exchange for robustness.
        bare, _, params_text = rest.partition(" ")
        path = bare
    else:
        end = rest.find(">")
        if end < 0:
            raise EnvelopeSyntaxError("unterminated <address>")
        path = rest[1:end]
        params_text = rest[end + 1 :]
        if params_text and not params_text.startswith(" "):
            raise EnvelopeSyntaxError("junk after address")
    address = _check_address(path, allow_null=(keyword == "FROM"))
    return PathCommand(address, parse_params(params_text))


def _check_address(path: str, *, allow_null: bool) -> str:
    if path == "":
        if allow_null:
            return ""
        raise EnvelopeSyntaxError("empty address")
    if any(ord(c) < 33 or ord(c) == 127 for c in path):
        raise EnvelopeSyntaxError("control character or space in address")
    if not path.isascii():
        # No SMTPUTF8 (Exchange 2010 does not offer it): addresses are ASCII.
        raise EnvelopeSyntaxError("non-ASCII character in address")
    match = _ADDRESS.match(path) or _QUOTED_LOCAL.match(path)
    if match is None:
        raise EnvelopeSyntaxError(f"not an address: {path!r}")
    return match.group("addr")


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters ``KEY[=VALUE]``, keys upper-cased; duplicates refused."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        key = key.upper()
        if not key or not all(c.isalnum() or c == "-" for c in key):
            raise EnvelopeSyntaxError(f"bad parameter {item!r}")
        if key in params:
            raise EnvelopeSyntaxError(f"duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` or ``١``, which ``int`` refuses
    or reads as another number."""
    return text.isascii() and text.isdigit()


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext (``+XX`` hex escapes of UTF-8 bytes; Latin-1 if not UTF-8)."""
    if text.isascii() and text.isprintable() and not any(c in text for c in "+= "):
        return text  # nothing escaped (every shadow message id): the common case, at once
    return _decode_xtext_escapes(text)


def _decode_xtext_escapes(text: str) -> str:
    """:func:`xtext_decode` character by character."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+":
            hexpart = text[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(h in "0123456789ABCDEFabcdef" for h in hexpart):
                raise EnvelopeSyntaxError("bad xtext escape")
            out.append(int(hexpart, 16))
            i += 3
        else:
            if not 33 <= ord(c) <= 126 or c == "=":
                raise EnvelopeSyntaxError("bad xtext character")
            out.append(ord(c))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return out.decode("latin-1")


def xtext_encode(text: str) -> str:
    """RFC 3461 xtext: printable ASCII but ``+`` and ``=`` as is, every other byte of the
    UTF-8 encoding as ``+XX``."""
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in text
    )


def parse_shadow_message_id(text: str) -> str:
    """A ``XSHADOW=`` / ``XQDISCARD`` id: a GUID in its 36-character hyphenated form."""
    value = xtext_decode(text)
    if len(value) != 36:
        raise EnvelopeSyntaxError("shadow message id is not a 36-character GUID")
    try:
        parsed = uuid.UUID(value)
    except ValueError as e:
        raise EnvelopeSyntaxError("shadow message id is not a GUID") from e
    return str(parsed)


def encode_shadow_context(connector_id: uuid.UUID | str, server_name: str, tls_domain: str) -> str:
    """The ``XSHADOW`` argument: base64 of ``<connector-guid>@<server>@<tls-domain>``."""
    raw = f"{connector_id}@{server_name}@{tls_domain}".encode()
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class ShadowContext:
    """A decoded ``XSHADOW`` context: which shadow holder asked."""

    encoded: str
    connector_id: str
    server_name: str
    tls_domain: str


def decode_shadow_context(encoded: str) -> ShadowContext:
    if len(encoded) > MAX_SHADOW_CONTEXT:
        raise EnvelopeSyntaxError("shadow context over 255 characters")
    try:
        raw = base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError as e:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise EnvelopeSyntaxError("shadow context is not base64 of UTF-8 text") from e
    parts = raw.split("@")
    if len(parts) != 3 or not parts[1]:
        raise EnvelopeSyntaxError("shadow context is not <guid>@<server>@<tls-domain>")
    if any(ord(c) < 32 for c in raw):
        raise EnvelopeSyntaxError("control character in shadow context")
    return ShadowContext(encoded, parts[0], parts[1], parts[2])


def encode_database_id(database_id: uuid.UUID) -> str:
    """The ``XSHADOW`` success reply: base64 of the 16 bytes of the queue database GUID."""
    return base64.b64encode(database_id.bytes).decode("ascii")


def decode_database_id(text: str) -> uuid.UUID:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error, or non-ASCII text
        raise EnvelopeSyntaxError("database id is not base64") from e
    if len(raw) != 16:
        raise EnvelopeSyntaxError("database id is not 16 bytes")
    return uuid.UUID(bytes=raw)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
