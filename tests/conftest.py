"""Shared pytest fixtures.

Queue-database URLs (storage tests): ``sqlite_queue_db``, ``postgresql_queue_db`` and the
parametrized ``queue_db`` give a fresh, empty queue database per test as a
:class:`QueueDbUrl`. PostgreSQL comes from the server at 127.0.0.1:5432 (user postgres, trust
auth, database ``test``): one uniquely named database per test session, one schema per test,
both dropped afterwards. Unreachable server: the tests are skipped, or fail when
``EXCHANGE_EMU_REQUIRE_POSTGRESQL=1``. On a ``twisted.trial`` TestCase use
``@pytest.mark.usefixtures("sqlite_queue_db")``: the fixture sets ``self.queue_db``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

STORAGE_PG_HOST = "127.0.0.1"
STORAGE_PG_PORT = 5432
STORAGE_PG_USER = "postgres"
STORAGE_PG_ADMIN_DB = "test"
STORAGE_REQUIRE_PG_ENV = "EXCHANGE_EMU_REQUIRE_POSTGRESQL"


@dataclass(frozen=True)
class QueueDbUrl:
    """A queue database for one test: its SQLAlchemy URL and a way to wipe it (all data
    and schema gone, as if the server's queue database had been deleted)."""

    backend: str
    url: str
    wipe: Callable[[], None]


def _storage_attach(request: pytest.FixtureRequest, value: QueueDbUrl) -> None:
    if request.instance is not None:
        request.instance.queue_db = value


@pytest.fixture
def sqlite_queue_db(request: pytest.FixtureRequest, tmp_path: Path) -> QueueDbUrl:
    """A SQLite queue database file (not yet created) in the test's temporary directory."""
    path = tmp_path / "data" / "queue.db"

    def wipe() -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    value = QueueDbUrl("sqlite", f"sqlite:///{path}", wipe)
    _storage_attach(request, value)
    return value


def _storage_pg_connect(dbname: str) -> Any:
    import psycopg2  # type: ignore[import-untyped]

    conn = psycopg2.connect(
        host=STORAGE_PG_HOST,
        port=STORAGE_PG_PORT,
        user=STORAGE_PG_USER,
        dbname=dbname,
        connect_timeout=5,
    )
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def storage_postgresql_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session; yields its name."""
    try:
        admin = _storage_pg_connect(STORAGE_PG_ADMIN_DB)
    except Exception as exc:
        reason = (
            f"PostgreSQL at {STORAGE_PG_HOST}:{STORAGE_PG_PORT} unreachable: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        )
        if os.environ.get(STORAGE_REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{reason} ({STORAGE_REQUIRE_PG_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    name = f"exchange_emu_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgresql_queue_db(
    request: pytest.FixtureRequest, storage_postgresql_database: str
) -> Iterator[QueueDbUrl]:
    """A fresh schema in the session's PostgreSQL database, selected through search_path."""
    schema = f"q_{uuid.uuid4().hex[:12]}"
    conn = _storage_pg_connect(storage_postgresql_database)

    def create() -> None:
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')

    def wipe() -> None:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        create()

    create()
    url = (
        f"postgresql+psycopg2://{STORAGE_PG_USER}@{STORAGE_PG_HOST}:{STORAGE_PG_PORT}/"
        f"{storage_postgresql_database}?options=-csearch_path%3D{schema}"
    )
    value = QueueDbUrl("postgresql", url, wipe)
    _storage_attach(request, value)
    try:
        yield value
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def queue_db(request: pytest.FixtureRequest) -> QueueDbUrl:
    """A fresh queue database on each backend (for plain pytest test functions)."""
    value: QueueDbUrl = request.getfixturevalue(f"{request.param}_queue_db")
    return value
