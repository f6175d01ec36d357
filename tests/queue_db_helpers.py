"""Helpers for tests of the queue database (``QueueDatabase``) on the real reactor."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import Connection
from twisted.internet import defer

from exchange_emu.storage import QueueDatabase


def hold_writer(db: QueueDatabase) -> tuple[threading.Event, defer.Deferred[Any]]:
    """Park the writer thread inside a (long) write job, so the writes asked for next wait
    as one group; set the returned event to let it go."""
    started, gate = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        gate.wait(10)

    held = db.write(hold)
    assert started.wait(10), "writer never picked up the holding job"
    return gate, held
