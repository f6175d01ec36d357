"""SQLAlchemy engines for the queue database: embedded SQLite (WAL) or any server URL.

Exchange 2010 keeps each transport server's queue in its own ESE database (``mail.que``) on
local disk. The emulator's default is its closest equivalent, a SQLite file in write-ahead-log
mode with ``synchronous=FULL``; any other SQLAlchemy URL (PostgreSQL via psycopg2) works too.
"""

from __future__ import annotations

import os
import re
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

#: Execution option naming the SQLite ``BEGIN`` flavour a connection's transactions use.
SQLITE_BEGIN_OPTION = "exchange_emu_sqlite_begin"

#: Execution options for the writer: on SQLite take the write lock at ``BEGIN`` so a
#: transaction never fails half-way when upgrading a read lock (ignored on other backends).
WRITE_OPTIONS: dict[str, Any] = {SQLITE_BEGIN_OPTION: "IMMEDIATE"}

#: Seconds libpq waits for a PostgreSQL server before giving up (unless the URL says).
PG_CONNECT_TIMEOUT = 10

_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@]*:)[^@/]*@")


def display_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for logs and errors."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_URL.sub(r"\g<head>***@", url)


def is_sqlite_memory(url: URL) -> bool:
    """Whether ``url`` names a private in-memory SQLite database (one connection, no file)."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names, or None for memory and ``file:`` URI databases."""
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        return None
    return database


def create_queue_engine(url: str, *, busy_timeout: float = 30.0) -> Engine:
    """Create the engine for a queue database URL (blocking; call before the reactor runs).

    SQLite: creates the file's directory, and every connection gets ``journal_mode=WAL``,
    ``synchronous=FULL``, ``foreign_keys=ON`` and ``busy_timeout``; transactions are real
    (SQLAlchemy emits ``BEGIN`` itself instead of the sqlite3 module's legacy mode), so DDL in
    migrations is transactional too. An in-memory SQLite URL uses a single shared connection.
    Other backends get ``pool_pre_ping``: a connection checked out after the server dropped
    it is replaced (the database threads keep theirs and check out a new one after a failure).
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        libpq = parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
            "psycopg2",
            "psycopg",
        )
        if libpq and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT}
        return sa.create_engine(parsed, **kwargs)

    path = _sqlite_file(parsed)
    if path is not None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
    connect_args: dict[str, Any] = {"timeout": busy_timeout, "check_same_thread": False}
    if is_sqlite_memory(parsed):
        engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=StaticPool)
    else:
        engine = sa.create_engine(parsed, connect_args=connect_args)
    _install_sqlite_hooks(engine, busy_timeout_ms=round(busy_timeout * 1000))
    return engine


def _install_sqlite_hooks(engine: Engine, *, busy_timeout_ms: int) -> None:
    """Set the per-connection pragmas and take over ``BEGIN`` from the sqlite3 module."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            # No implicit transactions from the driver: SQLAlchemy's "begin" hook below
            # emits BEGIN, so SELECTs and DDL are part of the transaction as well.
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        if mode not in _BEGIN_MODES:
            raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
        # Straight on the driver: every transaction begins here, and Core's execution
        # machinery cost several times what SQLite takes for a BEGIN.
        conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]
