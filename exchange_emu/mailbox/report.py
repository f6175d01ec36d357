"""Read a mailbox for people: ``exchange-emu mailbox list`` and ``mailbox show``.

A blocking, read-only look into a mailbox server's store, like ``Get-MailboxFolderStatistics``
and opening an item in Outlook. It opens only an engine (no threads, no migration), so it works
while the mailbox server runs: SQLite in WAL mode lets a reader in beside the writer. Every
problem is one :class:`MailboxReportError` line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from exchange_emu.directory import Organization
from exchange_emu.logs import format_timestamp
from exchange_emu.mailbox import operations as ops
from exchange_emu.mailbox.errors import UnknownMailbox
from exchange_emu.mailbox.migrations import MAILBOX_MIGRATIONS
from exchange_emu.mailbox.mime import header_block
from exchange_emu.mailbox.tables import FOLDERS, Folder, mailboxes
from exchange_emu.storage.engine import create_queue_engine, display_url, is_sqlite_memory
from exchange_emu.storage.migrations import get_version, latest_version

_SUBJECT_WIDTH = 50
_SENDER_WIDTH = 40


class MailboxReportError(Exception):
    """Why a mailbox cannot be shown, in one line."""


@dataclass(frozen=True)
class MailboxLocation:
    """Where a mailbox lives: its mailbox database, mailbox server and that server's store."""

    address: str
    display_name: str
    database: str
    server: str
    store_url: str


def locate_mailbox(organization: Organization, address: str) -> MailboxLocation:
    """Find ``address``'s mailbox database and mailbox server in the organization."""
    recipient = organization.recipient(address)
    if recipient is None:
        raise MailboxReportError(f"no recipient {address.strip()} in {organization.source}")
    if recipient.database is None:
        raise MailboxReportError(
            f"{recipient.address} is not on an Exchange mailbox database "
            f"(its mailbox is on {recipient.server})"
        )
    database = organization.database(recipient.database)
    if database is None:  # the loader prevents this
        raise MailboxReportError(f"no mailbox database {recipient.database} in the organization")
    server = organization.server(database.server)
    return MailboxLocation(
        recipient.address, recipient.display_name, database.name, server.name,
        server.mailbox_store_url or server.database_url
    )


def parse_folder(text: str) -> Folder:
    """A folder name, case-insensitive (``sent items`` → ``Sent Items``)."""
    wanted = " ".join(text.split()).lower()
    for folder in FOLDERS:
        if folder.value.lower() == wanted:
            return folder
    raise MailboxReportError(
        f"unknown folder {text!r} (folders: {', '.join(f.value for f in FOLDERS)})"
    )


def open_store(location: MailboxLocation) -> Engine:
    """An engine on the mailbox server's store, refusing one that does not exist yet."""
    where = f"the mailbox store of {location.server} ({display_url(location.store_url)})"
    try:
        url = sa.make_url(location.store_url)
    except Exception as exc:
        raise MailboxReportError(f"{where}: {exc}") from None
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        missing = not path.startswith("file:") and not os.path.exists(path)
        if is_sqlite_memory(url) or missing:
            raise MailboxReportError(
                f"{where} does not exist yet; start {location.server} first"
            )
    engine: Engine | None = None
    try:
        engine = create_queue_engine(location.store_url)
        with engine.connect() as conn, conn.begin():
            version = get_version(conn)
            is_mailbox_store = sa.inspect(conn).has_table(mailboxes.name)
    except Exception as exc:
        if engine is not None:
            engine.dispose()
        raise MailboxReportError(f"cannot open {where}: {_one_line(exc)}") from None
    newest = latest_version(MAILBOX_MIGRATIONS)
    problem = None
    if version == 0:
        problem = f"{where} does not exist yet; start {location.server} first"
    elif not is_mailbox_store:
        problem = f"{where} is not a mailbox store"
    elif version > newest:
        problem = (
            f"{where} has schema version {version}, newer than this exchange-emu "
            f"supports ({newest})"
        )
    if problem is not None:
        engine.dispose()
        raise MailboxReportError(problem)
    return engine


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    lines = [line.strip() for line in str(source).splitlines() if line.strip()]
    return lines[0] if lines else type(source).__name__


def read_listing(
    engine: Engine, location: MailboxLocation, folder: Folder | None = None
) -> tuple[dict[str, int], list[ops.ItemSummary]]:
    """Folder counts and the items (of ``folder``, or all) of the mailbox."""
    with engine.connect() as conn, conn.begin():
        try:
            counts = ops.folder_counts(conn, location.address)
            listed = ops.list_items(conn, location.address, folder)
        except UnknownMailbox:
            raise _not_synced(location) from None
    return counts, listed


def read_item(engine: Engine, location: MailboxLocation, item_id: int) -> ops.StoredItem:
    """Item ``item_id`` of the mailbox (an item of another mailbox is not found)."""
    with engine.connect() as conn, conn.begin():
        _require_synced(conn, location)
        item = ops.get_item(conn, item_id)
    if item is None or item.mailbox != location.address:
        raise MailboxReportError(f"no item {item_id} in {location.address}'s mailbox")
    return item


def _require_synced(conn: Connection, location: MailboxLocation) -> None:
    found = conn.execute(
        sa.select(mailboxes.c.address).where(mailboxes.c.address == location.address)
    ).first()
    if found is None:
        raise _not_synced(location)


def _not_synced(location: MailboxLocation) -> MailboxReportError:
    return MailboxReportError(
        f"{location.address} has no mailbox in the store of {location.server} yet "
        f"(mailboxes are created from the organization file when {location.server} starts)"
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def item_time(item: ops.ItemSummary | ops.StoredItem) -> float:
    """When a delivered item was received, else its client submit time."""
    return item.delivered_at if item.delivered_at is not None else item.submit_time


def format_listing(
    location: MailboxLocation, counts: dict[str, int], listed: list[ops.ItemSummary]
) -> str:
    """The folder counts, then one line per item: Id, Folder, Time, Sender, Subject, Size."""
    out = [
        f"{location.address} ({location.display_name}): mailbox database {location.database} "
        f"on {location.server}",
        "  ".join(f"{folder}: {count}" for folder, count in counts.items()),
        "",
    ]
    if not listed:
        out.append("(no items)")
        return "\n".join(out) + "\n"
    header = ("Id", "Folder", "Time", "Sender", "Subject", "Size")
    rows = [
        (
            str(item.item_id),
            item.folder,
            format_timestamp(item_time(item)),
            _cut(item.sender or "<>", _SENDER_WIDTH),
            _cut(item.subject or "", _SUBJECT_WIDTH),
            str(item.size),
        )
        for item in listed
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out.append(line(header))
    out.append(line(tuple("-" * len(name) for name in header)))
    out.extend(line(row) for row in rows)
    return "\n".join(out) + "\n"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def format_item(item: ops.StoredItem, *, body: bool = False) -> str:
    """The item's folder and store properties, then its header block (whole message if
    ``body``)."""
    lines = [
        f"Item {item.item_id} of {item.mailbox} (mailbox database {item.database})",
        f"Folder: {item.folder}",
        f"Message-ID: {item.message_id}",
        f"Client submit time: {format_timestamp(item.submit_time)}",
    ]
    if item.delivered_at is not None:
        lines.append(f"Received: {format_timestamp(item.delivered_at)}")
    lines += [
        f"Sender: {item.sender or '<>'}",
        f"Recipients: {', '.join(item.recipients)}",
        f"Size: {item.size}",
    ]
    if item.submission_state is not None:
        submission = f"Submission: {item.submission_state} via {item.submitted_via}"
        if item.notified_at is not None:
            submission += f" (notified {format_timestamp(item.notified_at)})"
        lines.append(submission)
    text = _text(item.mime if body else header_block(item.mime))
    return "\n".join(lines) + "\n\n" + text.rstrip("\n") + "\n"

