"""Receiving a message body: the ``DATA`` decoder (end-of-data detection and
dot-unstuffing, RFC 5321 §4.5.2) and the spool that keeps bodies out of RAM.

Only ``CRLF.CRLF`` ends ``DATA``. A bare LF or bare CR followed by a dot is
ordinary content, so no variant of "SMTP smuggling" can end a message early
and have the rest run as commands.
"""

from __future__ import annotations

import tempfile
from typing import IO

SPOOL_IN_MEMORY = 256 * 1024
"""Bodies larger than this go to a temporary file while they are received."""

_TERMINATOR = b"\r\n.\r\n"


class BodySpool:
    """Collects one message body, bounded by the connector's size limit.

    Bytes past the size limit, and every byte of a body with an over-long
    line, are read and dropped: the message will be refused after the end of
    data, never stored.
    """

    def __init__(self, max_size: int, max_line_length: int, prefix: bytes = b"") -> None:
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.size = 0
        self.oversize = False
        self.line_too_long = False
        self.prefix = prefix
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY
        )
        self._line_length = 0  # bytes of the current (unfinished) line

    @property
    def refused(self) -> bool:
        return self.oversize or self.line_too_long

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._check_lines(data)
        self.size += len(data)
        if self.size > self.max_size:
            self.oversize = True
        if not self.refused:
            self._file.write(data)

    def _check_lines(self, data: bytes) -> None:
        if self.line_too_long:
            return
        first_break = data.find(b"\n")
        if first_break < 0:
            self._line_length += len(data)
        else:
            longest = max(map(len, data[first_break + 1 :].split(b"\n")))
            longest_first = self._line_length + first_break
            self._line_length = len(data) - data.rfind(b"\n") - 1
            if max(longest, longest_first) > self.max_line_length + 1:
                self.line_too_long = True
        if self._line_length > self.max_line_length + 1:
            self.line_too_long = True

    def headers(self, limit: int = 64 * 1024) -> bytes:
        """The header block (up to the first empty line, at most ``limit`` bytes)."""
        self._file.seek(0)
        head = self._file.read(limit)
        self._file.seek(0, 2)
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = head.find(sep)
            if end >= 0:
                return head[: end + len(sep)]
        return head

    def header_size_exceeds(self, limit: int) -> bool:
        """MaxHeaderSize: the header block (up to the first empty line) is over ``limit``."""
        if self.size <= limit:
            return False
        self._file.seek(0)
        head = self._file.read(limit + 4)
        self._file.seek(0, 2)
        ends = [end + len(sep) for sep in (b"\r\n\r\n", b"\n\n")
                if (end := head.find(sep)) >= 0]
        return not ends or min(ends) > limit + 2  # the empty line's own CRLF is free

    def open(self) -> PrefixedBody:
        """A readable view of the stored body, after ``prefix`` (trace headers)."""
        return PrefixedBody(self.prefix, self._file)

    def close(self) -> None:
        self._file.close()


class PrefixedBody:
    """A file-like body: some header bytes written by this server, then the
    spooled content. The storage layer reads it from position 0."""

    def __init__(self, prefix: bytes, body: IO[bytes]) -> None:
        self._prefix = prefix
        self._body = body
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset != 0 or whence != 0:
            raise ValueError("PrefixedBody only rewinds to the start")
        self._pos = 0
        self._body.seek(0)
        return 0

    @property
    def size(self) -> int:
        """The whole body's length, header bytes included."""
        position = self._body.tell()
        end = self._body.seek(0, 2)
        self._body.seek(position)
        return len(self._prefix) + end

    def read(self, size: int = -1) -> bytes:
        out = b""
        if self._pos < len(self._prefix):
            end = len(self._prefix) if size < 0 else min(len(self._prefix), self._pos + size)
            out = self._prefix[self._pos : end]
            self._pos = end
            if size >= 0:
                size -= len(out)
                if size == 0:
                    return out
        rest = self._body.read(size)
        self._pos += len(rest)
        return out + rest

    def close(self) -> None:
        self._body.close()


class DotDecoder:
    """Incremental decoder of a ``DATA`` body.

    ``feed`` returns ``None`` while the body goes on, or the bytes that came
    after ``CRLF.CRLF`` once it ended (pipelined commands, to be parsed as
    commands). The stream is treated as if preceded by CRLF, so a first line
    of ``.`` ends the body and a leading ``..`` is unstuffed.
    """

    def __init__(self, sink: BodySpool) -> None:
        self._sink = sink
        self._carry = b"\r\n"
        self._started = False

    def feed(self, data: bytes) -> bytes | None:
        work = self._carry + data
        end = work.find(_TERMINATOR)
        if end >= 0:
            self._emit(work[: end + 2])
            self._carry = b""
            return work[end + len(_TERMINATOR) :]
        cut = work.rfind(b"\r\n")
        if cut <= 0:
            # No line end beyond the carried one: keep what could start a
            # terminator, pass the rest on (a very long line) — but never cut
            # through a leading "\r\n..", whose stuffed dot must go.
            cut = len(work) - 4
            if work.startswith(b"\r\n") and cut < 4:
                cut = 0
            cut = max(cut, 0)
        self._emit(work[:cut])
        self._carry = work[cut:]
        return None

    def _emit(self, chunk: bytes) -> None:
        if not chunk:
            return
        chunk = chunk.replace(b"\r\n..", b"\r\n.")
        if not self._started:
            # Drop the virtual CRLF that stands before the first line.
            chunk = chunk[2:]
            self._started = True
        self._sink.write(chunk)
