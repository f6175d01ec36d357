"""The queue viewer's database operations (transport/admin_jobs.py) on SQLite and
PostgreSQL: queue numbers and suspension survive a reopen, messages are listed per queue,
suspended and resubmitted, removed with or without an NDR, and exported in chunks."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from exchange_emu.storage import NewMessage
from exchange_emu.storage.engine import create_queue_engine
from exchange_emu.storage.migrations import upgrade
from exchange_emu.storage.queue import accept_message
from exchange_emu.storage.tables import messages, recipients
from exchange_emu.transport import admin_jobs as aj
from exchange_emu.transport.jobs import DsnSettings

SIGNER = DsnSettings("hub01.contoso.test", "postmaster@contoso.test")


@pytest.fixture
def engine(queue_db: Any) -> Any:
    engine = create_queue_engine(queue_db.url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _in_queue(conn: Any, queue: str, body: bytes = b"Subject: hi\r\n\r\nhello\r\n",
              rcpts: tuple[str, ...] = ("carol@contoso.test",), status: str = "retry") -> int:
    internal_id = accept_message(conn, NewMessage(
        sender="alice@contoso.test", recipients=rcpts, body=body, received_at=1000.0,
        message_id="<m@contoso.test>", subject="hi"))
    conn.execute(sa.update(recipients).where(recipients.c.internal_id == internal_id)
                 .values(queue=queue, next_hop=queue, status=status,
                         last_response="451 4.4.0 refused"))
    return internal_id


def test_queue_numbers_are_stable_and_suspension_is_durable(engine, queue_db):
    with engine.begin() as conn:
        numbers = aj.queue_numbers(conn, aj.DELIVERY, ["Site-B", "DB01"])
        assert aj.queue_numbers(conn, aj.DELIVERY, ["Site-B"]) == {"Site-B": numbers["Site-B"]}
        assert aj.queue_numbers(conn, aj.SHADOW, ["HUB02"])["HUB02"] not in numbers.values()
        aj.set_queue_suspended(conn, "Site-B", True)
    engine.dispose()
    again = create_queue_engine(queue_db.url)
    try:
        with again.begin() as conn:
            assert aj.suspended_queues(conn) == {"Site-B"}
            assert aj.queue_by_number(conn, aj.DELIVERY, numbers["Site-B"]) == ("Site-B", True)
            assert aj.queue_by_number(conn, aj.DELIVERY, 999) is None
            aj.set_queue_suspended(conn, "Site-B", False)
            assert aj.suspended_queues(conn) == set()
    finally:
        again.dispose()


def test_list_suspend_resubmit(engine):
    with engine.begin() as conn:
        first = _in_queue(conn, "Site-B", rcpts=("carol@contoso.test", "dave@contoso.test"))
        second = _in_queue(conn, "DB01")
        counts, shadows = aj.queue_message_counts(conn)
        assert counts == {"Site-B": 1, "DB01": 1} and shadows == {}
        listed = aj.queued_messages(conn, "Site-B")
        assert [(m.internal_id, m.queue, len(m.recipients)) for m in listed] == [
            (first, "Site-B", 2)]
        assert listed[0].recipients[0].last_response == "451 4.4.0 refused"
        assert aj.suspend_message(conn, first, "Site-B") == 2
        assert {r.status for r in aj.queued_messages(conn, internal_id=first)[0].recipients} \
            == {"suspended"}
        assert aj.resubmit(conn, "Site-B", None, ("ready", "retry")) == []
        assert aj.resubmit(conn, "Site-B", [first], ("suspended",)) == [first]
        assert [m.queue for m in aj.queued_messages(conn, internal_id=first)] == ["Submission"]
        assert aj.retry_now(conn, "DB01", 5.0) == 1
        assert aj.queued_messages(conn, "DB01")[0].recipients[0].next_retry_at == 5.0
        del second


def test_remove_with_and_without_ndr(engine):
    with engine.begin() as conn:
        silent = _in_queue(conn, "Site-B")
        loud = _in_queue(conn, "Site-B")
        report, removed = aj.remove_message(conn, silent, "Site-B", False, 2000.0, SIGNER)
        assert removed == 1 and report.dsns == [] and len(report.failed) == 1
        assert report.settled[0].deleted
        report, removed = aj.remove_message(conn, loud, "Site-B", True, 2000.0, SIGNER)
        assert removed == 1 and len(report.dsns) == 1
        ndr_id = report.dsns[0][0]
        ndr = aj.queued_messages(conn, "Submission", internal_id=ndr_id)[0]
        assert ndr.sender == "" and ndr.recipients[0].address == "alice@contoso.test"
        assert aj.queued_messages(conn, "Site-B") == []
        assert aj.remove_message(conn, loud, "Site-B", True, 2000.0, SIGNER)[1] == 0


def test_export_reads_the_body_in_chunks(engine):
    body = b"Subject: big\r\n\r\n" + bytes(range(256)) * 1000 + b"\r\n"
    with engine.begin() as conn:
        internal_id = _in_queue(conn, "Site-B", body=body)
        assert aj.body_size(conn, internal_id) == len(body)
        assert aj.body_size(conn, 999) is None
        chunks = []
        offset = 0
        while offset < len(body):
            chunk = aj.body_chunk(conn, internal_id, offset, 7000)
            assert 0 < len(chunk) <= 7000
            chunks.append(chunk)
            offset += len(chunk)
        assert b"".join(chunks) == body
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one() == 1
