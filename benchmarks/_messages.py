"""Test messages for the benchmarks."""

from __future__ import annotations


def make_body(size: int, n: int, tag: str) -> bytes:
    """A plain message of about ``size`` bytes whose Message-ID is ``<tag-n@contoso.test>``."""
    head = (f"Message-ID: <{tag}-{n}@contoso.test>\r\nFrom: app@contoso.test\r\n"
            f"To: erin@fabrikam.test\r\nSubject: {tag} {n}\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(0, (size - len(head)) // len(line))
