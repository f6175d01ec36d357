"""Hot queue-database statements run straight on the SQLite driver.

The transport queue's busiest statements (accepting a message, recording a delivery session,
applying discards) run for every message or session. SQLAlchemy's execution machinery costs
several times more Python time than SQLite takes to run such a statement, and that time is
spent on a database thread that competes with the reactor for the interpreter lock.

:class:`DirectStatement` keeps SQLAlchemy Core as the one place the SQL is written: the Core
statement is compiled once, and on SQLite its SQL string runs on the ``sqlite3`` connection
under the same transaction (``sqlite3`` caches the prepared statement). On any other backend
(PostgreSQL) it runs through ``Connection.execute`` unchanged, so the two paths give the same
rows: plain tuples on SQLite, ``Row`` objects (which index the same way) elsewhere. Only types
the ``sqlite3`` module stores and returns as SQLAlchemy would (integers, floats, strings,
bytes, ``None``, booleans as parameters) may pass through a direct statement.
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


@dataclass(frozen=True)
class _Compiled:
    """One statement's SQLite form: SQL (with ``IN`` lists still to expand) and its params."""

    sql: str
    names: tuple[str, ...]
    """Parameter names in placeholder order."""
    defaults: Mapping[str, Any]
    """Values the statement itself supplies (literals, column defaults)."""
    expanding: frozenset[str]
    """Names of ``IN`` list parameters, one placeholder per element."""


class DirectStatement:
    """A Core statement compiled once and run on the DB-API connection where it is SQLite.

    ``column_keys`` names the columns an ``INSERT`` supplies (the others take their scalar
    Python default, or the database's). Parameters are passed by name as with Core.
    """

    def __init__(self, statement: sa.Executable, *, column_keys: Sequence[str] | None = None
                 ) -> None:
        self.statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._sqlite: _Compiled | None = None
        self._expanded: dict[tuple[int, ...], str] = {}

    # --- running ----------------------------------------------------------------------------

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None
             ) -> list[Sequence[Any]]:
        """All rows of a query, each indexable by column position."""
        direct = self._bind(conn, params or {})
        if direct is None:
            return list(conn.execute(self.statement, dict(params or {})))
        return _driver(conn).execute(*direct).fetchall()

    def scalars(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self.rows(conn, params)]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Run a data change once; the number of rows it matched."""
        direct = self._bind(conn, params or {})
        if direct is None:
            return int(conn.execute(self.statement, dict(params or {})).rowcount)
        return int(_driver(conn).execute(*direct).rowcount)

    def insert(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Insert one row; its new integer primary key."""
        direct = self._bind(conn, params)
        if direct is None:
            key = conn.execute(self.statement, dict(params)).inserted_primary_key
            rowid = None if key is None else key[0]
        else:
            rowid = _driver(conn).execute(*direct).lastrowid
        if rowid is None:
            raise RuntimeError("the database returned no primary key")
        return int(rowid)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a data change once per parameter set, as one ``executemany``."""
        if not rows:
            return
        if not _is_sqlite(conn):
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        compiled = self._compile(conn)
        if compiled.expanding:
            raise ValueError("an IN list parameter cannot be used with run_many")
        defaults, names = compiled.defaults, compiled.names
        _driver(conn).executemany(
            compiled.sql,
            [tuple(row[n] if n in row else defaults[n] for n in names) for row in rows],
        )

    # --- compiling ----------------------------------------------------------------------------

    def _compile(self, conn: Connection) -> _Compiled:
        compiled = self._sqlite
        if compiled is None:
            compiled = self._sqlite = _compile_for(conn.dialect, self.statement,
                                                   self._column_keys)
        return compiled

    def _bind(self, conn: Connection, params: Mapping[str, Any]
              ) -> tuple[str, tuple[Any, ...]] | None:
        """The SQL (``IN`` lists expanded to their lengths) and the positional values, or
        None where Core runs the statement: not SQLite, or an empty ``IN`` list (which Core
        renders as an expression of its own)."""
        if not _is_sqlite(conn):
            return None
        compiled = self._compile(conn)
        defaults = compiled.defaults
        if not compiled.expanding:
            return compiled.sql, tuple(
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
        key = tuple(lengths)
        sql = self._expanded.get(key)
        if sql is None:
            counts = iter(lengths)
            sql = _POSTCOMPILE.sub(lambda _m: ", ".join("?" * next(counts)), compiled.sql)
            if len(self._expanded) < 64:  # IN lists come in few lengths; bound the cache
                self._expanded[key] = sql
        return sql, tuple(values)


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _driver(conn: Connection) -> Any:
    """The ``sqlite3`` connection under ``conn`` (inside its open transaction)."""
    return conn.connection.driver_connection


def _compile_for(dialect: sa.Dialect, statement: sa.Executable,
                 column_keys: list[str] | None) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    if compiled.positiontup is None or dialect.paramstyle != "qmark":
        raise TypeError(f"direct statements need qmark parameters, not {dialect.paramstyle}")
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
    return _Compiled(compiled.string, names, defaults, expanding)

