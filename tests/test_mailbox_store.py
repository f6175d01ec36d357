"""Tests for exchange_emu.mailbox: the mailbox store of an Exchange 2010 mailbox server.

Thread-side operations run as plain pytest functions on the parametrized ``queue_db`` fixture
(SQLite WAL file and PostgreSQL), each inside its own transaction as the database service would
run it. The Deferred facade runs through a real :class:`QueueDatabase` in ``twisted.trial``
TestCases, one per backend. The ``exchange-emu mailbox`` CLI is run on a small organization.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial import unittest

from exchange_emu.cli import main
from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.mailbox import (
    DELIVERED_TO_RETENTION,
    MAILBOX_MIGRATIONS,
    MailboxStore,
    UnknownMailbox,
    mailbox_database,
    tables,
)
from exchange_emu.mailbox import operations as ops
from exchange_emu.mailbox.mime import rfc2822_date
from exchange_emu.storage import tables as storage_tables
from exchange_emu.storage.engine import create_queue_engine
from exchange_emu.storage.migrations import upgrade

if TYPE_CHECKING:
    from conftest import QueueDbUrl

_P = ParamSpec("_P")
_T = TypeVar("_T")

reactor = IReactorFromThreads(global_reactor)

NOW = datetime(2026, 11, 28, 13, 0, tzinfo=UTC).timestamp()
FQDN = "mbx01.contoso.test"
MAILBOXES = [
    ("alice@contoso.test", "Alice", "DB01"),
    ("bob@contoso.test", "Bob", "DB01"),
    ("carol@contoso.test", "Carol", "DB02"),
]
BARE = b"From: alice@contoso.test\r\nTo: bob@contoso.test\r\nSubject: Budget, Q4\r\n\r\nHi Bob.\r\n"
FULL = (
    b"Message-ID: <7c1d@contoso.test>\r\nDate: Fri, 27 Nov 2026 09:00:00 +0100\r\n"
    b"From: alice@contoso.test\r\nTo: bob@contoso.test\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= plans\r\n\r\nSee you.\r\n"
)


def delivery(n: int = 1) -> bytes:
    return (
        f"Message-ID: <m{n}@contoso.test>\r\nDate: Sat, 28 Nov 2026 13:00:00 +0000\r\n"
        f"From: erin@fabrikam.test\r\nSubject: delivery {n}\r\n\r\nbody {n} text\r\n"
    ).encode()


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def engine(queue_db: QueueDbUrl) -> Iterator[Engine]:
    """A migrated mailbox store on each backend, with alice and bob on DB01, carol on DB02."""
    engine = create_queue_engine(queue_db.url)
    try:
        assert upgrade(engine, MAILBOX_MIGRATIONS) == 1
        run(engine, ops.ensure_mailboxes, MAILBOXES)
        yield engine
    finally:
        engine.dispose()


def run(
    engine: Engine, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``fn`` in a transaction of its own and commit, as the database service does."""
    with engine.connect() as conn, conn.begin():
        return fn(conn, *args, **kwargs)


def deliver(engine: Engine, recipients: list[str], n: int = 1, *, database: str = "DB01",
            submit_time: float = NOW - 60, now: float = NOW) -> dict[str, str]:
    return run(
        engine, ops.deliver, database=database, recipients=recipients,
        sender="erin@fabrikam.test", mime=delivery(n), message_id=f"<m{n}@contoso.test>",
        submit_time=submit_time, now=now,
    )


def count(engine: Engine, table: sa.Table, *where: Any) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        return int(conn.execute(query.where(*where) if where else query).scalar_one())


def inbox(engine: Engine, address: str) -> list[ops.ItemSummary]:
    return run(engine, ops.list_items, address, "Inbox")


# --- schema ----------------------------------------------------------------------------------


def test_migration_matches_model_and_database_info(queue_db: QueueDbUrl) -> None:
    """Migrating an empty database gives exactly the tables, columns and indexes of
    exchange_emu.mailbox.tables, and a database_info shaped like the queue database's."""
    engine = create_queue_engine(queue_db.url)
    try:
        assert upgrade(engine, MAILBOX_MIGRATIONS) == 1
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == set(tables.metadata.tables)
        for table in tables.metadata.sorted_tables:
            reflected = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            assert reflected == {c.name: c.nullable for c in table.columns}, table.name
            reflected_ix = {ix["name"] for ix in inspector.get_indexes(table.name)}
            assert {ix.name for ix in table.indexes} <= reflected_ix, table.name
        info = {c["name"] for c in inspector.get_columns("database_info")}
        assert info == {c.name for c in storage_tables.database_info.columns}
        unique = {u["name"] for u in inspector.get_unique_constraints("delivered_to")}
        assert "uq_delivered_to_key" in unique
    finally:
        engine.dispose()


# --- scenario A: the Outbox ------------------------------------------------------------------


def test_outbox_submission_adds_message_id_and_date_when_missing(engine: Engine) -> None:
    """A client message without Message-ID and Date is stored in the sender's Outbox with
    ``Message-ID: <uuid@fqdn>`` and ``Date:`` of the client submit time added; nothing else."""
    item = run(engine, ops.submit_to_outbox, mailbox="Alice@Contoso.test",
               recipients=["bob@contoso.test"], mime=BARE, now=NOW, fqdn=FQDN)
    assert item.mailbox == "alice@contoso.test"
    assert item.database == "DB01"
    assert item.submit_time == NOW
    assert item.subject == "Budget, Q4"
    assert item.message_id.startswith("<") and item.message_id.endswith(f"@{FQDN}>")
    stored = run(engine, ops.get_item, item.item_id)
    assert stored is not None
    assert stored.folder == "Outbox"
    assert stored.recipients == ("bob@contoso.test",)
    assert stored.mime.endswith(BARE)
    assert stored.size == item.size == len(stored.mime)
    parsed = email.message_from_bytes(stored.mime, policy=email.policy.default)
    assert parsed.get_all("Message-ID") == [item.message_id]
    assert parsed.get_all("Date") == [rfc2822_date(NOW)]
    assert parsed["Date"].datetime.timestamp() == NOW
    counts = run(engine, ops.folder_counts, "alice@contoso.test")
    assert counts == {"Inbox": 0, "Outbox": 1, "Sent Items": 0, "Drafts": 0,
                      "Deleted Items": 0}
    assert run(engine, ops.pending_outbox) == [item]
    assert count(engine, tables.items) == 1 and count(engine, tables.delivered_to) == 0


def test_outbox_submission_keeps_message_id_and_date_when_present(engine: Engine) -> None:
    """A message that has both fields is stored byte for byte; its Subject is decoded."""
    item = run(engine, ops.submit_to_outbox, mailbox="alice@contoso.test",
               recipients=["bob@contoso.test"], mime=FULL, now=NOW, fqdn=FQDN)
    assert item.message_id == "<7c1d@contoso.test>"
    assert item.subject == "Café plans"
    stored = run(engine, ops.get_item, item.item_id)
    assert stored is not None and stored.mime == FULL


def test_outbox_submission_keeps_bare_lf_line_endings(engine: Engine) -> None:
    """Added fields use the message's own line ending (a bare-LF message stays bare LF)."""
    mime = BARE.replace(b"\r\n", b"\n")
    item = run(engine, ops.submit_to_outbox, mailbox="alice@contoso.test",
               recipients=["bob@contoso.test"], mime=mime, now=NOW, fqdn=FQDN)
    stored = run(engine, ops.get_item, item.item_id)
    assert stored is not None
    assert b"\r" not in stored.mime and stored.mime.endswith(mime)


def test_outbox_submission_for_unknown_mailbox_fails(engine: Engine) -> None:
    """An unknown sender mailbox raises UnknownMailbox naming it, and stores nothing."""
    with pytest.raises(UnknownMailbox, match=r"zoe@contoso\.test"):
        run(engine, ops.submit_to_outbox, mailbox="zoe@contoso.test",
            recipients=["bob@contoso.test"], mime=BARE, now=NOW, fqdn=FQDN)
    assert count(engine, tables.items) == 0


# --- scenario B: hand-over to a hub ----------------------------------------------------------


def test_move_to_sent_items_happens_once(engine: Engine) -> None:
    """B.4: the item leaves the Outbox for Sent Items once; a second report (or one for an
    unknown item) changes nothing and says so."""
    first = run(engine, ops.submit_to_outbox, mailbox="alice@contoso.test",
                recipients=["bob@contoso.test"], mime=BARE, now=NOW, fqdn=FQDN)
    second = run(engine, ops.submit_to_outbox, mailbox="bob@contoso.test",
                 recipients=["alice@contoso.test"], mime=FULL, now=NOW + 1, fqdn=FQDN)
    assert run(engine, ops.mark_notified, first.item_id, "HUB01", NOW + 2) is True
    notified = run(engine, ops.get_item, first.item_id)
    assert notified is not None
    assert (notified.submission_state, notified.submitted_via, notified.notified_at) == (
        "notified", "HUB01", NOW + 2)
    assert run(engine, ops.pending_outbox, "DB01") == [first, second]  # notified: still pending

    assert run(engine, ops.move_to_sent_items, first.item_id, "HUB02") is True
    assert run(engine, ops.move_to_sent_items, first.item_id, "HUB01") is False
    assert run(engine, ops.move_to_sent_items, 9999, "HUB01") is False
    assert run(engine, ops.mark_notified, first.item_id, "HUB01", NOW + 3) is False
    moved = run(engine, ops.get_item, first.item_id)
    assert moved is not None
    assert (moved.folder, moved.submission_state, moved.submitted_via) == (
        "Sent Items", "taken", "HUB02")
    assert run(engine, ops.pending_outbox) == [second]
    assert run(engine, ops.pending_outbox, "DB02") == []
    assert run(engine, ops.folder_counts, "alice@contoso.test")["Sent Items"] == 1
    assert run(engine, ops.folder_counts, "alice@contoso.test")["Outbox"] == 0


# --- scenario C: delivery and DeliveredTo ----------------------------------------------------


def test_redelivery_is_dropped_as_duplicate(engine: Engine) -> None:
    """C.1 twice: the second delivery finds both mailboxes in DeliveredTo, so both are
    "duplicate" and each Inbox keeps exactly one copy."""
    recipients = ["alice@contoso.test", "bob@contoso.test"]
    assert deliver(engine, recipients) == dict.fromkeys(recipients, "delivered")
    assert deliver(engine, recipients, now=NOW + 30) == dict.fromkeys(recipients, "duplicate")
    for address in recipients:
        (item,) = inbox(engine, address)
        assert (item.message_id, item.subject, item.delivered_at) == (
            "<m1@contoso.test>", "delivery 1", NOW)
    assert count(engine, tables.delivered_to) == 2


def test_same_message_id_with_other_submit_time_is_not_a_duplicate(engine: Engine) -> None:
    """DeliveredTo is keyed on Message-ID *and* client submit time: a message resent with the
    same Message-ID but a new submit time is delivered again."""
    assert deliver(engine, ["alice@contoso.test"]) == {"alice@contoso.test": "delivered"}
    again = deliver(engine, ["alice@contoso.test"], submit_time=NOW - 59, now=NOW + 1)
    assert again == {"alice@contoso.test": "delivered"}
    assert len(inbox(engine, "alice@contoso.test")) == 2


def test_unknown_recipient(engine: Engine) -> None:
    """A recipient with no mailbox in that mailbox database is "unknown" (also one that lives
    in another database); the others are delivered, keyed as the caller wrote them."""
    statuses = deliver(engine, ["Alice@Contoso.TEST", "carol@contoso.test", "zoe@contoso.test"])
    assert statuses == {
        "Alice@Contoso.TEST": "delivered",
        "carol@contoso.test": "unknown",
        "zoe@contoso.test": "unknown",
    }
    assert len(inbox(engine, "alice@contoso.test")) == 1
    assert inbox(engine, "carol@contoso.test") == []
    assert count(engine, tables.delivered_to) == 1


def test_delivered_to_expires_after_retention(engine: Engine) -> None:
    """DeliveredTo rows older than the retention (7 days) are dropped; after that the same
    message counts as new, while younger rows still catch duplicates."""
    assert DELIVERED_TO_RETENTION == 7 * 24 * 3600
    deliver(engine, ["alice@contoso.test"], 1, now=NOW)
    later = NOW + DELIVERED_TO_RETENTION + 3600
    deliver(engine, ["alice@contoso.test"], 2, now=later - 60)
    assert run(engine, ops.expire_delivered_to, later - DELIVERED_TO_RETENTION) == 1
    assert run(engine, ops.expire_delivered_to, later - DELIVERED_TO_RETENTION) == 0
    assert deliver(engine, ["alice@contoso.test"], 2, now=later) == {
        "alice@contoso.test": "duplicate"}
    assert deliver(engine, ["alice@contoso.test"], 1, now=later) == {
        "alice@contoso.test": "delivered"}


# --- DAG: lossy failover ---------------------------------------------------------------------


def test_lossy_rollback_loses_only_that_database_after_the_time(engine: Engine) -> None:
    """A lossy failover of DB01 to t: DB01's items created after t and their DeliveredTo rows
    are gone (so a redelivery from the transport dumpster is accepted again); DB01's older
    items and every DB02 item are untouched."""
    deliver(engine, ["alice@contoso.test"], 1, now=NOW)
    deliver(engine, ["alice@contoso.test", "bob@contoso.test"], 2, now=NOW + 100)
    deliver(engine, ["carol@contoso.test"], 3, database="DB02", now=NOW + 100)
    run(engine, ops.submit_to_outbox, mailbox="bob@contoso.test",
        recipients=["erin@fabrikam.test"], mime=FULL, now=NOW + 120, fqdn=FQDN)

    assert run(engine, ops.lossy_rollback, "DB01", NOW + 50) == 3
    assert [i.message_id for i in inbox(engine, "alice@contoso.test")] == ["<m1@contoso.test>"]
    assert inbox(engine, "bob@contoso.test") == []
    assert run(engine, ops.pending_outbox) == []
    assert len(inbox(engine, "carol@contoso.test")) == 1
    assert count(engine, tables.delivered_to, tables.delivered_to.c.database == "DB01") == 1
    assert count(engine, tables.delivered_to, tables.delivered_to.c.database == "DB02") == 1

    redelivered = deliver(engine, ["alice@contoso.test", "bob@contoso.test"], 2, now=NOW + 200)
    assert redelivered == {"alice@contoso.test": "delivered", "bob@contoso.test": "delivered"}
    assert deliver(engine, ["alice@contoso.test"], 1, now=NOW + 200) == {
        "alice@contoso.test": "duplicate"}
    assert deliver(engine, ["carol@contoso.test"], 3, database="DB02", now=NOW + 200) == {
        "carol@contoso.test": "duplicate"}


def test_database_replication_state(engine: Engine) -> None:
    """A database is not replicated until said so; the replicated-up-to time is recorded."""
    assert run(engine, ops.database_state, "DB01") == ops.DatabaseState("DB01", False, None)
    run(engine, ops.set_replicated, "DB01", True)
    state = run(engine, ops.report_replicated_up_to, "DB01", NOW)
    assert state == ops.DatabaseState("DB01", True, NOW)
    assert run(engine, ops.report_replicated_up_to, "DB02", NOW) == ops.DatabaseState(
        "DB02", False, NOW)
    assert run(engine, ops.set_replicated, "DB01", False).replicated_up_to == NOW


# --- mailboxes -------------------------------------------------------------------------------


def test_ensure_mailboxes_is_idempotent(engine: Engine) -> None:
    """Syncing the same organization again changes nothing (also with other address case);
    a changed display name or database is updated, and a moved mailbox takes its items."""
    assert run(engine, ops.ensure_mailboxes, MAILBOXES) == 0
    assert run(engine, ops.ensure_mailboxes, [("ALICE@contoso.test", "Alice", "DB01")]) == 0
    assert count(engine, tables.mailboxes) == 3
    deliver(engine, ["bob@contoso.test"])
    changed = [("alice@contoso.test", "Alice Smith", "DB01"), ("bob@contoso.test", "Bob", "DB02")]
    assert run(engine, ops.ensure_mailboxes, changed) == 2
    assert run(engine, ops.ensure_mailboxes, changed) == 0
    assert run(engine, ops.mailbox_addresses) == [
        ops.Mailbox("alice@contoso.test", "Alice Smith", "DB01"),
        ops.Mailbox("bob@contoso.test", "Bob", "DB02"),
        ops.Mailbox("carol@contoso.test", "Carol", "DB02"),
    ]
    (item,) = inbox(engine, "bob@contoso.test")
    stored = run(engine, ops.get_item, item.item_id)
    assert stored is not None and stored.database == "DB02"
    assert deliver(engine, ["bob@contoso.test"], database="DB02") == {
        "bob@contoso.test": "duplicate"}


# --- the Deferred facade on a QueueDatabase --------------------------------------------------


class _MailboxStoreBehaviour:
    """MailboxStore through QueueDatabase's threads, on one backend."""

    queue_db: QueueDbUrl
    addCleanup: Callable[..., None]
    assertEqual: Callable[..., None]
    assertFailure: Callable[..., defer.Deferred[Any]]

    def open_store(self) -> MailboxStore:
        db = mailbox_database(self.queue_db.url, reactor=reactor)
        db.open()
        self.addCleanup(db.stopService)
        return MailboxStore(db)

    async def test_queue_database_opens_the_mailbox_store(self) -> None:
        """QueueDatabase with MAILBOX_MIGRATIONS creates the store with a GUID that survives a
        reopen; submission, hand-over and delivery work through the Deferred facade."""
        store = self.open_store()
        self.assertEqual(store.db.schema_version, 1)
        guid = store.db.database_id
        self.assertEqual(await store.ensure_mailboxes(MAILBOXES), 3)
        item = await store.submit_to_outbox(mailbox="alice@contoso.test",
                                            recipients=["bob@contoso.test"], mime=BARE,
                                            now=NOW, fqdn=FQDN)
        self.assertEqual(await store.pending_outbox(), [item])
        self.assertEqual(await store.mark_notified(item.item_id, "HUB01", NOW), True)
        self.assertEqual(await store.mark_taken(item.item_id, "HUB01"), True)
        self.assertEqual(await store.move_to_sent_items(item.item_id, "HUB01"), True)
        self.assertEqual(await store.move_to_sent_items(item.item_id, "HUB01"), False)
        stored = await store.get_item(item.item_id)
        assert stored is not None
        self.assertEqual(stored.folder, "Sent Items")
        statuses = await store.deliver(database="DB01", recipients=["bob@contoso.test"],
                                       sender="alice@contoso.test", mime=stored.mime,
                                       message_id=item.message_id, submit_time=NOW, now=NOW + 1)
        self.assertEqual(statuses, {"bob@contoso.test": "delivered"})
        self.assertEqual((await store.folder_counts("bob@contoso.test"))["Inbox"], 1)
        await self.assertFailure(
            store.submit_to_outbox(mailbox="zoe@contoso.test", recipients=["bob@contoso.test"],
                                   mime=BARE, now=NOW, fqdn=FQDN),
            UnknownMailbox,
        )
        await store.db.stopService()
        store.db.open()
        self.assertEqual(store.db.database_id, guid)
        self.assertEqual(len(await store.list_items("bob@contoso.test")), 1)


@pytest.mark.usefixtures("sqlite_queue_db")
class SQLiteMailboxStoreTests(_MailboxStoreBehaviour, unittest.TestCase):
    """The facade on a SQLite WAL file."""


@pytest.mark.postgresql
@pytest.mark.usefixtures("postgresql_queue_db")
class PostgreSQLMailboxStoreTests(_MailboxStoreBehaviour, unittest.TestCase):
    """The facade on PostgreSQL."""


# --- exchange-emu mailbox list / show --------------------------------------------------------


@pytest.fixture
def org(tmp_path: Path, queue_db: QueueDbUrl) -> Path:
    """MBX01 (store at ``queue_db``) with DB01 holding alice and bob; dave lives on LEGACY01."""
    spec = OrgSpec(
        [
            ServerSpec("MBX01", "mailbox", 32601, mailbox_store_url=queue_db.url),
            ServerSpec("HUB01", "hub", 32525),
            ServerSpec("LEGACY01", "legacy", 32540, site=None, version="2007",
                       local_domains=("legacy.contoso.test",)),
        ],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[
            RecipientSpec("alice@contoso.test", "Alice", database="DB01"),
            RecipientSpec("bob@contoso.test", "Bob", database="DB01"),
            RecipientSpec("dave@legacy.contoso.test", "Dave", server="LEGACY01"),
            RecipientSpec("frank@contoso.test", database="DB01"),  # not synced to the store
        ],
    )
    return write_org(tmp_path / "org.toml", spec, tmp_path / "var")


def fill_store(url: str) -> tuple[int, int]:
    """Alice sent one message (now in Sent Items) and received one; returns their ids."""
    engine = create_queue_engine(url)
    try:
        upgrade(engine, MAILBOX_MIGRATIONS)
        run(engine, ops.ensure_mailboxes, MAILBOXES[:2])
        sent = run(engine, ops.submit_to_outbox, mailbox="alice@contoso.test",
                   recipients=["bob@contoso.test"], mime=BARE, now=NOW, fqdn=FQDN)
        run(engine, ops.move_to_sent_items, sent.item_id, "HUB01")
        deliver(engine, ["alice@contoso.test"], 7, now=NOW + 90)
        (received,) = inbox(engine, "alice@contoso.test")
        return sent.item_id, received.item_id
    finally:
        engine.dispose()


def cli(capsys: pytest.CaptureFixture[str], org: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["mailbox", *argv, "--config", str(org)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_and_show(
    org: Path, queue_db: QueueDbUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbox list`` prints the folder counts and one line per item; ``--folder`` filters
    (case-insensitive); ``mailbox show`` prints the folder and headers, the body only with
    ``--body``."""
    sent_id, received_id = fill_store(queue_db.url)
    code, out, err = cli(capsys, org, "list", "Alice@contoso.test")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "alice@contoso.test (Alice): mailbox database DB01 on MBX01"
    assert lines[1] == "Inbox: 1  Outbox: 0  Sent Items: 1  Drafts: 0  Deleted Items: 0"
    assert lines[3].split() == ["Id", "Folder", "Time", "Sender", "Subject", "Size"]
    assert lines[5].split()[:4] == [
        str(sent_id), "Sent", "Items", "2026-11-28T13:00:00.000Z"]
    assert "alice@contoso.test  Budget, Q4" in lines[5]
    assert lines[6].split()[:4] == [
        str(received_id), "Inbox", "2026-11-28T13:01:30.000Z", "erin@fabrikam.test"]
    assert len(lines) == 7

    code, out, _ = cli(capsys, org, "list", "alice@contoso.test", "--folder", "inbox")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[5:]] == [str(received_id)]

    code, out, err = cli(capsys, org, "show", "alice@contoso.test", str(received_id))
    assert (code, err) == (0, "")
    assert f"Item {received_id} of alice@contoso.test (mailbox database DB01)" in out
    assert "Folder: Inbox" in out
    assert "Received: 2026-11-28T13:01:30.000Z" in out
    assert "Subject: delivery 7" in out and "body 7 text" not in out
    code, out, _ = cli(capsys, org, "show", "alice@contoso.test", str(received_id), "--body")
    assert code == 0 and "body 7 text" in out

    code, out, _ = cli(capsys, org, "show", "alice@contoso.test", str(sent_id))
    assert "Folder: Sent Items" in out and "Submission: taken via HUB01" in out


def test_cli_errors_are_one_line(
    org: Path, queue_db: QueueDbUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    """No store yet, a mailbox not on an Exchange database, an unknown address, another
    mailbox's item, an unknown folder: one ``exchange-emu: error:`` line and exit 2."""
    cases: list[tuple[tuple[str, ...], str]] = [
        (("list", "alice@contoso.test"), "the mailbox store of MBX01 "),
    ]
    for argv, expected in cases:
        code, out, err = cli(capsys, org, *argv)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1 and expected in err and "does not exist yet" in err
    if queue_db.backend == "sqlite":
        path = sa.make_url(queue_db.url).database
        assert path is not None and not Path(path).exists()  # looking created nothing

    _, received_id = fill_store(queue_db.url)
    cases = [
        (("list", "dave@legacy.contoso.test"),
         "dave@legacy.contoso.test is not on an Exchange mailbox database (its mailbox is on "
         "LEGACY01)"),
        (("list", "zoe@contoso.test"), f"no recipient zoe@contoso.test in {org}"),
        (("show", "frank@contoso.test", "1"),
         "frank@contoso.test has no mailbox in the store of MBX01 yet"),
        (("show", "bob@contoso.test", str(received_id)),
         f"no item {received_id} in bob@contoso.test's mailbox"),
        (("list", "alice@contoso.test", "--folder", "Junk"), "unknown folder 'Junk'"),
    ]
    for argv, expected in cases:
        code, out, err = cli(capsys, org, *argv)
        assert (code, out) == (2, "")
        assert err.startswith("exchange-emu: error: ") and err.count("\n") == 1
        assert expected in err, err
