"""DirectStatement: hot statements straight on SQLite's driver, through Core elsewhere — the
same rows, counts and keys on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from exchange_emu.storage.direct import DirectStatement
from exchange_emu.storage.engine import create_queue_engine
from exchange_emu.storage.migrations import MIGRATIONS, upgrade
from exchange_emu.storage.tables import messages, recipients

IDS = sa.bindparam("ids", expanding=True)
INSERT_MESSAGE = DirectStatement(sa.insert(messages), column_keys=[
    "internet_message_id", "sender", "size", "body", "received_at", "source", "subject",
    "delayed_ack"])
INSERT_RECIPIENT = DirectStatement(sa.insert(recipients), column_keys=[
    "internal_id", "address", "queue", "status"])
ADDRESSES = DirectStatement(
    sa.select(recipients.c.internal_id, recipients.c.address)
    .where(recipients.c.internal_id.in_(IDS), recipients.c.status.in_(("ready", "retry")))
    .order_by(recipients.c.id))
MARK = DirectStatement(
    sa.update(recipients).where(recipients.c.address == sa.bindparam("b_address"))
    .values(status="delivered", last_response=sa.bindparam("b_reply")))
DELETE = DirectStatement(sa.delete(messages).where(messages.c.internal_id.in_(IDS)))
MESSAGE_FACTS = DirectStatement(
    sa.select(messages.c.internal_id, messages.c.body, messages.c.hop_count,
              messages.c.body_type, messages.c.state, messages.c.subject)
    .where(messages.c.internal_id.in_(IDS)).order_by(messages.c.internal_id))


@pytest.fixture(params=["sqlite", "psycopg2", "psycopg"])
def url(request: pytest.FixtureRequest) -> str:
    """SQLite, and PostgreSQL through each driver a direct statement runs on."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_queue_db").url)
    pg = str(request.getfixturevalue("postgresql_queue_db").url)
    return pg.replace("postgresql+psycopg2://", f"postgresql+{request.param}://")


@pytest.fixture
def connection(url: str) -> Iterator[sa.Connection]:
    engine = create_queue_engine(url)
    upgrade(engine, MIGRATIONS)
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    finally:
        engine.dispose()


def _add(conn: sa.Connection, n: int, addresses: list[str]) -> int:
    internal_id = INSERT_MESSAGE.insert(conn, {
        "internet_message_id": f"<{n}@x>", "sender": "a@x", "size": 3, "body": b"\x00\xffb",
        "received_at": 1.5, "source": "SMTP", "subject": f"s{n}", "delayed_ack": True})
    INSERT_RECIPIENT.run_many(conn, [
        {"internal_id": internal_id, "address": a, "queue": "q", "status": "ready"}
        for a in addresses])
    return internal_id


def test_same_rows_counts_and_keys_on_both_backends(connection: sa.Connection) -> None:
    first = _add(connection, 1, ["r1@x", "r2@x"])
    second = _add(connection, 2, ["r3@x"])
    third = _add(connection, 3, ["r4@x"])
    assert first < second < third

    # IN lists of several lengths through one statement; literal IN list and column
    # defaults (hop_count 0, body_type 7BIT, state queued) supplied by the statement.
    rows = ADDRESSES.rows(connection, {"ids": [first, third]})
    assert [tuple(r) for r in rows] == [(first, "r1@x"), (first, "r2@x"), (third, "r4@x")]
    assert ADDRESSES.scalars(connection, {"ids": [second]}) == [second]
    facts = [tuple(r) for r in MESSAGE_FACTS.rows(connection, {"ids": [first, second, third]})]
    assert facts[0][2:] == (0, "7BIT", "queued", "s1")
    assert facts[0][1] == b"\x00\xffb" and type(facts[0][1]) is bytes  # not a memoryview

    MARK.run_many(connection, [{"b_address": "r1@x", "b_reply": "250 ok"},
                               {"b_address": "r4@x", "b_reply": "250 fine"}])
    assert [tuple(r) for r in ADDRESSES.rows(connection, {"ids": [first, second, third]})] == [
        (first, "r2@x"), (second, "r3@x")]
    replies = connection.execute(sa.select(recipients.c.address, recipients.c.last_response)
                                 .where(recipients.c.status == "delivered")
                                 .order_by(recipients.c.address)).all()
    assert [tuple(r) for r in replies] == [("r1@x", "250 ok"), ("r4@x", "250 fine")]

    assert DELETE.run(connection, {"ids": [second, third, 999]}) == 2
    remaining = connection.execute(sa.select(messages.c.internal_id)).scalars().all()
    assert remaining == [first]


def test_an_empty_in_list_matches_nothing(connection: sa.Connection) -> None:
    _add(connection, 1, ["r1@x"])
    assert ADDRESSES.rows(connection, {"ids": []}) == []
    assert DELETE.run(connection, {"ids": []}) == 0


def test_runs_on_the_driver_not_through_core(url: str) -> None:
    """The point of a direct statement: on SQLite, psycopg2 and psycopg, Core's execution
    machinery is skipped."""
    engine = create_queue_engine(url)
    upgrade(engine, MIGRATIONS)
    through_core: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_rest: through_core.append(statement))
    try:
        with engine.connect() as conn, conn.begin():
            before = list(through_core)
            internal_id = INSERT_MESSAGE.insert(conn, {
                "internet_message_id": "<1@x>", "sender": "a@x", "size": 3, "body": b"b",
                "received_at": 1.5, "source": "SMTP", "subject": "s", "delayed_ack": True})
            INSERT_RECIPIENT.insert(conn, {
                "internal_id": internal_id, "address": "r1@x", "queue": "q", "status": "ready"})
            INSERT_RECIPIENT.run_many(conn, [
                {"internal_id": internal_id, "address": a, "queue": "q", "status": "ready"}
                for a in ("r2@x", "r3@x")])
            assert ADDRESSES.rows(conn, {"ids": [internal_id]}) == [
                (internal_id, "r1@x"), (internal_id, "r2@x"), (internal_id, "r3@x")]
            assert MARK.run(conn, {"b_address": "r1@x", "b_reply": "250"}) == 1
            MARK.run_many(conn, [{"b_address": "r2@x", "b_reply": "250"}])
            assert MESSAGE_FACTS.rows(conn, {"ids": [internal_id]})[0][1] == b"b"
            assert DELETE.run(conn, {"ids": [internal_id]}) == 1
            assert through_core == before
    finally:
        engine.dispose()
