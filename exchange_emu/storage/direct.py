"""Hot queue-database statements run straight on the database driver.

The transport queue's busiest statements (accepting a message, recording a delivery session,
applying discards) run for every message or session. SQLAlchemy's execution machinery costs
several times more Python time than the database takes to run such a statement, and that time
is spent on a database thread that competes with the reactor for the interpreter lock.

:class:`DirectStatement` keeps SQLAlchemy Core as the one place the SQL is written: the Core
statement is compiled once per backend, and its SQL string runs on the driver's connection
under the same transaction — the ``sqlite3`` connection on SQLite (which caches the prepared
statement), a ``psycopg2`` or ``psycopg`` (3) cursor on PostgreSQL. With another driver it
runs through
``Connection.execute`` unchanged. Every path gives the same rows: plain tuples from a driver
(``bytea`` values as ``bytes``, as Core gives them), ``Row`` objects from Core (which index
the same way). Only types both drivers store and return as SQLAlchemy would (integers,
floats, strings, bytes, ``None``, booleans) may pass through a direct statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["DirectStatement"]

_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
_SQLITE, _PSYCOPG2, _PSYCOPG = "sqlite", "psycopg2", "psycopg"
_PLACEHOLDERS = {_SQLITE: "?", _PSYCOPG2: "%s", _PSYCOPG: "%s"}


@dataclass(frozen=True)
class _Compiled:
    """One statement's form for one driver: SQL (with ``IN`` lists still to expand) and its
    parameters."""

    sql: str
    names: tuple[str, ...]
    """Parameter names in placeholder order."""
    defaults: Mapping[str, Any]
    """Values the statement itself supplies (literals, column defaults)."""
    expanding: frozenset[str]
    """Names of ``IN`` list parameters, one placeholder per element."""
    binary_columns: tuple[int, ...]
    """Result columns of binary type (psycopg2 gives ``memoryview``; Core gives ``bytes``)."""


class DirectStatement:
    """A Core statement compiled once and run on the DB-API connection where it is SQLite,
    psycopg2 or psycopg.

    ``column_keys`` names the columns an ``INSERT`` supplies (the others take their scalar
    Python default, or the database's). Parameters are passed by name as with Core.
    """

    def __init__(self, statement: sa.Executable, *, column_keys: Sequence[str] | None = None
                 ) -> None:
        self.statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[str, _Compiled] = {}
        self._expanded: dict[tuple[str, tuple[int, ...]], str] = {}

    # --- running ----------------------------------------------------------------------------

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None
             ) -> list[Sequence[Any]]:
        """All rows of a query, each indexable by column position."""
        direct = self._bind(conn, params or {})
        if direct is None:
            return list(conn.execute(self.statement, dict(params or {})))
        driver, sql, values = direct
        if driver == _SQLITE:
            return _driver(conn).execute(sql, values).fetchall()
        with _driver(conn).cursor() as cursor:
            cursor.execute(sql, values)
            rows: list[Sequence[Any]] = cursor.fetchall()
        binary = self._compiled[driver].binary_columns
        if binary and rows:
            rows = [_with_bytes(row, binary) for row in rows]
        return rows

    def scalars(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self.rows(conn, params)]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Run a data change once; the number of rows it matched."""
        direct = self._bind(conn, params or {})
        if direct is None:
            return int(conn.execute(self.statement, dict(params or {})).rowcount)
        driver, sql, values = direct
        if driver == _SQLITE:
            return int(_driver(conn).execute(sql, values).rowcount)
        with _driver(conn).cursor() as cursor:
            cursor.execute(sql, values)
            return int(cursor.rowcount)

    def insert(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Insert one row; its new integer primary key."""
        direct = self._bind(conn, params)
        if direct is None:
            key = conn.execute(self.statement, dict(params)).inserted_primary_key
            rowid = None if key is None else key[0]
        elif direct[0] == _SQLITE:
            rowid = _driver(conn).execute(direct[1], direct[2]).lastrowid
        else:  # PostgreSQL's INSERT was compiled with RETURNING its key
            with _driver(conn).cursor() as cursor:
                cursor.execute(direct[1], direct[2])
                returned = cursor.fetchone()
            rowid = None if returned is None else returned[0]
        if rowid is None:
            raise RuntimeError("the database returned no primary key")
        return int(rowid)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a data change once per parameter set: one ``executemany`` on SQLite and on
        psycopg, pages of statements sent together on psycopg2 (``execute_batch``)."""
        if not rows:
            return
        driver = _driver_of(conn)
        if driver is None:
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        compiled = self._compile(conn, driver)
        if compiled.expanding:
            raise ValueError("an IN list parameter cannot be used with run_many")
        defaults, names = compiled.defaults, compiled.names
        values = [tuple(row[n] if n in row else defaults[n] for n in names) for row in rows]
        if driver == _SQLITE:
            _driver(conn).executemany(compiled.sql, values)
            return
        with _driver(conn).cursor() as cursor:
            if len(values) == 1:
                cursor.execute(compiled.sql, values[0])
            elif driver == _PSYCOPG2:
                execute_batch(cursor, compiled.sql, values)
            else:  # psycopg 3 sends an executemany's statements together itself
                cursor.executemany(compiled.sql, values)

    # --- compiling ----------------------------------------------------------------------------

    def _compile(self, conn: Connection, driver: str) -> _Compiled:
        compiled = self._compiled.get(driver)
        if compiled is None:
            compiled = self._compiled[driver] = _compile_for(
                conn.dialect, driver, self.statement, self._column_keys)
        return compiled

    def _bind(self, conn: Connection, params: Mapping[str, Any]
              ) -> tuple[str, str, tuple[Any, ...]] | None:
        """The driver, the SQL (``IN`` lists expanded to their lengths) and the positional
        values; or None where Core runs the statement: another driver, or an empty ``IN``
        list (which Core renders as an expression of its own)."""
        driver = _driver_of(conn)
        if driver is None:
            return None
        compiled = self._compile(conn, driver)
        defaults = compiled.defaults
        if not compiled.expanding:
            return driver, compiled.sql, tuple(
                params[n] if n in params else defaults[n] for n in compiled.names)
        values: list[Any] = []
        lengths: list[int] = []
        for name in compiled.names:
            value = params[name] if name in params else defaults[name]
            if name in compiled.expanding:
                items = list(value)
                if not items:
                    return None
                lengths.append(len(items))
                values.extend(items)
            else:
                values.append(value)
        key = (driver, tuple(lengths))
        sql = self._expanded.get(key)
        if sql is None:
            counts = iter(lengths)
            placeholder = _PLACEHOLDERS[driver]
            sql = _POSTCOMPILE.sub(
                lambda _m: ", ".join([placeholder] * next(counts)), compiled.sql)
            if len(self._expanded) < 64:  # IN lists come in few lengths; bound the cache
                self._expanded[key] = sql
        return driver, sql, tuple(values)


def execute_batch(cursor: Any, sql: str, values: list[tuple[Any, ...]]) -> None:
    """psycopg2's ``execute_batch`` (imported only where psycopg2 runs the statement)."""
    from psycopg2.extras import execute_batch as batch  # type: ignore[import-untyped]

    batch(cursor, sql, values)


def _driver_of(conn: Connection) -> str | None:
    """Which driver a direct statement runs on under ``conn``, or None (Core runs it)."""
    dialect = conn.dialect
    if dialect.name == "sqlite":
        return _SQLITE
    if dialect.name == "postgresql" and dialect.driver in (_PSYCOPG2, _PSYCOPG):
        return str(dialect.driver)
    return None


def _driver(conn: Connection) -> Any:
    """The driver's connection under ``conn`` (inside its open transaction)."""
    return conn.connection.driver_connection


def _with_bytes(row: Sequence[Any], columns: tuple[int, ...]) -> tuple[Any, ...]:
    values = list(row)
    for index in columns:
        if isinstance(values[index], memoryview):
            values[index] = values[index].tobytes()
    return tuple(values)


def _compile_for(dialect: sa.Dialect, driver: str, statement: sa.Executable,
                 column_keys: list[str] | None) -> _Compiled:
    if driver != _SQLITE:
        # psycopg's own paramstyle is pyformat (named); compile positional "%s" instead,
        # with a dialect of the same class (RETURNING for an INSERT's key included).
        dialect = type(dialect)(paramstyle="format")  # type: ignore[call-arg]
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    if compiled.positiontup is None or dialect.paramstyle != (
            "qmark" if driver == _SQLITE else "format"):
        raise TypeError(f"direct statements need positional parameters, not {dialect.paramstyle}")
    names = tuple(compiled.positiontup)
    defaults: dict[str, Any] = {k: v for k, v in compiled.params.items() if v is not None}
    table = getattr(statement, "table", None)
    if isinstance(statement, sa.Insert) and table is not None:
        for column in table.c:
            default = column.default
            if column.key in names and default is not None and default.is_scalar:
                defaults.setdefault(column.key, default.arg)
    for name in names:
        defaults.setdefault(name, None)
    expanding = frozenset(_POSTCOMPILE.findall(compiled.string))
    # The placeholders of an IN list are in the SQL as __[POSTCOMPILE_name]; each is one
    # name in the parameter order, expanded per call.
    order = [m.group(1) for m in _POSTCOMPILE.finditer(compiled.string)]
    if [n for n in names if n in expanding] != order:
        raise TypeError("IN list parameters out of placeholder order")
    binary = tuple(index for index, column in enumerate(compiled._result_columns)
                   if isinstance(column[3], sa.LargeBinary))
    return _Compiled(compiled.string, names, defaults, expanding, binary)
