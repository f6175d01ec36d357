"""Moving message bodies over the store-driver link in AMP-sized chunks."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.protocols import amp

from exchange_emu.storedriver.commands import CHUNK_SIZE, FetchBody, UnknownUpload, Upload


class Uploads:
    """The bodies a peer is uploading on one connection, by upload id."""

    def __init__(self, max_size: int = 150 * 1024 * 1024) -> None:
        self._parts: dict[int, list[bytes]] = {}
        self._sizes: dict[int, int] = {}
        self._ids = itertools.count(1)
        self.max_size = max_size

    def append(self, upload_id: int, data: bytes) -> int:
        if upload_id == 0:
            upload_id = next(self._ids)
            self._parts[upload_id] = []
            self._sizes[upload_id] = 0
        if upload_id not in self._parts:
            raise UnknownUpload(f"no upload {upload_id} on this connection")
        self._sizes[upload_id] += len(data)
        if self._sizes[upload_id] > self.max_size:
            self.discard(upload_id)
            raise UnknownUpload(f"upload {upload_id} is over {self.max_size} bytes")
        self._parts[upload_id].append(data)
        return upload_id

    def take(self, upload_id: int) -> bytes:
        parts = self._parts.pop(upload_id, None)
        self._sizes.pop(upload_id, None)
        if parts is None:
            raise UnknownUpload(f"no upload {upload_id} on this connection")
        return b"".join(parts)

    def discard(self, upload_id: int) -> None:
        self._parts.pop(upload_id, None)
        self._sizes.pop(upload_id, None)


async def upload(proto: amp.AMP, body: bytes) -> int:
    """Send ``body`` to the peer in chunks; the upload id to name it by."""
    upload_id = 0
    for start in range(0, max(len(body), 1), CHUNK_SIZE):
        answer: dict[str, Any] = await proto.callRemote(
            Upload, upload_id=upload_id, data=body[start:start + CHUNK_SIZE])
        upload_id = int(answer["upload_id"])
    return upload_id


async def fetch_body(proto: amp.AMP, database: str, item_id: int) -> bytes:
    """Pull an Outbox item's body from the mailbox server, chunk by chunk."""
    parts: list[bytes] = []
    offset = 0
    while True:
        answer: dict[str, Any] = await proto.callRemote(
            FetchBody, database=database, item_id=item_id, offset=offset)
        parts.append(answer["data"])
        offset += len(answer["data"])
        if answer["last"]:
            return b"".join(parts)


def body_chunk(body: bytes, offset: int) -> dict[str, Any]:
    """The ``FetchBody`` answer for ``offset``."""
    data = body[offset:offset + CHUNK_SIZE]
    return {"data": data, "last": offset + len(data) >= len(body)}


class StoreDriverAMP(amp.AMP):
    """AMP without a log line for every connection made and lost (a lab makes many)."""

    def makeConnection(self, transport: Any) -> None:
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any = None) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
