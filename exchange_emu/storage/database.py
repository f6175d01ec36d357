"""The queue database service: one transport server's queue store, off the reactor thread.

Emulates the role of Exchange's transport queue database (``mail.que``): every message a server
acknowledges is committed here first ("durable before acknowledged"), and the database carries
a GUID that ``XSHADOW`` hands to shadow holders.

Threads. All database work runs on threads this service owns; callers get Deferreds, which fire
on the reactor thread (``reactor.callFromThread``) with plain values materialized in the thread.

* One **writer** thread runs write jobs with *group commit*: the jobs waiting when it becomes
  free (at most ``max_batch``) run in one transaction and commit together, so a burst of N
  messages costs a few commits, not N. If the batch fails it is rolled back and each job re-runs
  in its own transaction, so only the faulty job's Deferred errbacks. A write's Deferred fires
  only after its commit returned.
* **Short writes** (:meth:`QueueDatabase.write_short`: a few rows, no large body) on a SQLite
  file run their statements on the reactor thread and leave only the ``COMMIT`` (the fsync) to
  the writer thread. Run on the writer, each statement handed the interpreter lock back and
  forth with the reactor, and a batch took several times its CPU time. The reactor never waits
  for a lock there: its ``BEGIN IMMEDIATE`` does not wait (``busy_timeout`` 0), and a batch
  that cannot run at once goes to the writer thread whole. Every write, short or not, takes
  its turn in one queue, in the order it was asked for.
* ``readers`` reader threads run read jobs, each in its own (read) transaction; SQLite in WAL
  mode lets them read while the writer writes. A private in-memory SQLite database has one
  connection only, so there its reads run on the writer thread.
"""

from __future__ import annotations

import base64
import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from exchange_emu.storage import tables
from exchange_emu.storage.engine import (
    WRITE_OPTIONS,
    create_queue_engine,
    display_url,
    is_sqlite_memory,
)
from exchange_emu.storage.errors import StorageError
from exchange_emu.storage.migrations import MIGRATIONS, Migration, upgrade

_P = ParamSpec("_P")
_T = TypeVar("_T")

log = Logger()

SHORT_WRITE_BODY_BYTES = 256 * 1024
"""The largest message body a :meth:`QueueDatabase.write_short` may carry: reading and
storing it on the reactor thread takes well under a millisecond."""
SHORT_WRITE_ROWS = 200
"""The most rows (recipients, shadow copies, notifications) a short write may touch."""


def short_write(rows: int, body_bytes: int = 0) -> bool:
    """Whether a write of ``rows`` rows carrying ``body_bytes`` of message bodies is short
    enough for :meth:`QueueDatabase.write_short`."""
    return rows <= SHORT_WRITE_ROWS and body_bytes <= SHORT_WRITE_BODY_BYTES


class _State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    CLOSING = "closing"


@dataclass
class _Job:
    """A function to run on a database thread and the Deferred waiting for its result."""

    fn: Callable[[Connection], Any]
    deferred: defer.Deferred[Any]
    short: bool = False
    """A short write: its statements may run on the reactor thread (:meth:`write_short`)."""


def _job(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
         short: bool = False) -> _Job:
    """``fn(conn, *args, **kwargs)`` as a job, with a new Deferred for its result."""

    def run(conn: Connection) -> Any:
        return fn(conn, *args, **kwargs)

    return _Job(run, defer.Deferred(), short)


@dataclass
class _Commit:
    """For the writer thread: commit a batch whose statements ran on the reactor thread."""

    batch: list[_Job]
    transaction: sa.engine.Transaction
    results: list[Any]


@dataclass
class _Batch:
    """For the writer thread: run a batch's statements and commit (as without short writes)."""

    batch: list[_Job]


_STOP = object()  # sentinel that ends a worker thread's loop


def _materialized(result: _T) -> _T:
    """Refuse live cursor objects: they must not leave the database thread."""
    if isinstance(result, sa.engine.Result | sa.engine.Row):
        raise TypeError(
            f"a queue database job returned a live {type(result).__name__}; "
            "materialize rows (tuples, dataclasses) inside the job"
        )
    return result


def _keeps_connections(engine: Engine) -> bool:
    """Whether the database threads keep their connections between jobs: everywhere but on
    in-memory SQLite (one connection shared by every thread). Checking a connection out of
    the pool and back costs, per transaction, a tenth of a hub's Python CPU on SQLite and on
    PostgreSQL two round trips (the pre-ping and the reset's rollback). A kept connection
    the server dropped is replaced: see :func:`_lost_connection`."""
    return not is_sqlite_memory(engine.url)


def _runs_short_writes_inline(engine: Engine) -> bool:
    """Whether short writes run their statements on the reactor thread: on a SQLite file,
    where they are in-process work. Not on PostgreSQL (each statement is a round trip to the
    server) nor on in-memory SQLite (its one connection also serves the reads)."""
    return engine.dialect.name == "sqlite" and _keeps_connections(engine)


def _lost_connection(engine: Engine, exc: BaseException, conn: Connection) -> bool:
    """Whether ``exc`` says the database connection under ``conn`` is gone (a server
    restarted, a backend terminated): through Core (wrapped) or straight from the driver
    (:mod:`exchange_emu.storage.direct`)."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return False
    with contextlib.suppress(Exception):
        driver = conn.connection.driver_connection
        return bool(engine.dialect.is_disconnect(exc, driver, None))
    return False


def _close_quietly(conn: Connection | None) -> None:
    """Close ``conn`` if there is one, keeping any error of the job that failed."""
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def _one_line(exc: BaseException) -> str:
    """A one-line reason for ``exc``: the DB-API error's first line if there is one."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    for line in str(source).splitlines():
        if line.strip():
            return line.strip()
    return type(source).__name__


class QueueDatabase(service.Service):
    """A transport server's queue database as a Twisted service (start first, stop last).

    ``url`` is any SQLAlchemy URL; SQLite (``sqlite:////var/lib/exchange-emu/hub01/queue.db``)
    runs in WAL mode with ``synchronous=FULL``. :meth:`open` (called by
    :meth:`privilegedStartService`, or directly) blocks: it creates the engine, migrates the
    schema, loads or creates the database GUID and starts the threads, raising
    :class:`StorageError` with a one-line reason when it cannot. Call :meth:`write` and
    :meth:`read` from the reactor thread only.
    """

    def __init__(
        self,
        url: str,
        *,
        reactor: IReactorFromThreads,
        max_batch: int = 256,
        readers: int = 2,
        busy_timeout: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if readers < 0:
            raise ValueError("readers must not be negative")
        self.url = url
        self.max_batch = max_batch
        self._reactor = reactor
        self._readers_wanted = readers
        self._busy_timeout = busy_timeout
        self._migrations = tuple(migrations)
        self._state = _State.CLOSED
        self._engine: Engine | None = None
        self._database_id: uuid.UUID | None = None
        self._schema_version = 0
        self._write_queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._read_queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        # The writer thread's connection between batches (SQLite files only: see _transaction).
        self._writer_conn: Connection | None = None
        self._readers: list[threading.Thread] = []
        self._close_waiters: list[defer.Deferred[None]] = []
        # Short writes (SQLite files only): every write waits here, on the reactor thread,
        # while a batch is in flight; the next batch starts when its commit is done.
        self._short_writes = False
        self._waiting: list[_Job] = []
        self._in_flight = False
        self._drained: list[defer.Deferred[None]] = []
        self._start_call: IDelayedCall | None = None
        self._reactor_reader: Connection | None = None
        #: Short reads that ran on a reader thread after all (too long, a lock, an error).
        self.short_reads_refused = 0
        self._writer_waits_for_lock = True
        """Whether the writer's connection waits ``busy_timeout`` for SQLite's write lock."""
        #: Transactions the writer committed (a batch counts once): the group-commit gauge.
        self.commits = 0
        #: Batches the writer took off its queue.
        self.batches = 0
        #: Batches that failed and were re-run one job per transaction.
        self.batch_failures = 0

    # --- identity ----------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return display_url(self.url)

    @property
    def is_open(self) -> bool:
        """Whether the database accepts jobs."""
        return self._state is _State.OPEN

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (only for blocking use off the reactor, e.g. tools, tests)."""
        if self._engine is None:
            raise StorageError(f"queue database {self.display_url} is not open")
        return self._engine

    @property
    def database_id(self) -> uuid.UUID:
        """The queue database's GUID, created with the database (new when it is recreated)."""
        if self._database_id is None:
            raise StorageError(f"queue database {self.display_url} is not open")
        return self._database_id

    @property
    def database_id_base64(self) -> str:
        """The GUID as ``XSHADOW`` answers it: base64 of ``uuid.bytes`` (RFC 4122 byte order).

        24 characters ending in ``==``, e.g. ``q3Jx0V5YqUqW3w3vOaG5Xw==``.
        """
        return base64.b64encode(self.database_id.bytes).decode("ascii")

    @property
    def pending_writes(self) -> int:
        """Write jobs waiting for the writer thread (approximate; for gauges)."""
        return self._write_queue.qsize() + len(self._waiting)

    @property
    def schema_version(self) -> int:
        """The schema version the database was at after opening."""
        return self._schema_version

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the engine, migrate, load/create the GUID and start the threads (blocking).

        A no-op when already open. Raises :class:`StorageError` (one line, password hidden).
        """
        if self._state is _State.OPEN:
            return
        if self._state is _State.CLOSING:
            raise StorageError(f"queue database {self.display_url} is still closing")
        engine: Engine | None = None
        try:
            engine = create_queue_engine(self.url, busy_timeout=self._busy_timeout)
            version = upgrade(engine, self._migrations)
            guid = self._load_or_create_guid(engine)
        except Exception as exc:
            if engine is not None:
                engine.dispose()
            error = type(exc) if isinstance(exc, StorageError) else StorageError
            raise error(f"cannot open queue database {self.display_url}: {_one_line(exc)}") from (
                exc
            )
        self._engine = engine
        self._database_id = guid
        self._schema_version = version
        self._short_writes = _runs_short_writes_inline(engine)
        self._state = _State.OPEN
        self._start_threads(engine)
        log.info(
            "opened queue database {url} (schema version {version}, database id {guid})",
            url=self.display_url,
            version=version,
            guid=str(guid),
        )

    def privilegedStartService(self) -> None:
        """Open the database before twistd drops privileges, so a bad URL stops start-up."""
        self.open()
        super().privilegedStartService()

    def startService(self) -> None:
        """Open the database unless :meth:`privilegedStartService` already did."""
        self.open()
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        """Refuse new jobs, finish the queued ones, join the threads and dispose the engine.

        The returned Deferred fires (on the reactor thread) after all of that; the joining runs
        on a short-lived thread so the reactor never blocks.
        """
        super().stopService()
        if self._state is _State.CLOSED:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._close_waiters.append(waiter)
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            done: defer.Deferred[None] = defer.Deferred()
            done.addBoth(self._closed)
            self._when_drained().addCallback(lambda _: self._start_closer(done))
        return waiter

    def _start_closer(self, done: defer.Deferred[None]) -> None:
        reader, self._reactor_reader = self._reactor_reader, None
        _close_quietly(reader)
        threading.Thread(
            target=self._close_in_thread, args=(done,), name="queue-db-closer", daemon=True
        ).start()

    def _when_drained(self) -> defer.Deferred[None]:
        """Fires once no write waits on the reactor side and no batch is in flight."""
        if not (self._in_flight or self._waiting):
            return defer.succeed(None)
        drained: defer.Deferred[None] = defer.Deferred()
        self._drained.append(drained)
        return drained

    def _closed(self, result: Failure | None) -> None:
        """Reactor side of closing: forget the threads and engine, fire the waiters."""
        self._state = _State.CLOSED
        self._engine = None
        self._writer = None
        self._readers = []
        waiters, self._close_waiters = self._close_waiters, []
        if not isinstance(result, Failure):
            log.info("closed queue database {url} ({commits} commits in {batches} batches)",
                     url=self.display_url, commits=self.commits, batches=self.batches)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    # --- jobs --------------------------------------------------------------------------------

    def write(
        self,
        fn: Callable[Concatenate[Connection, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> defer.Deferred[_T]:
        """Run ``fn(conn, *args, **kwargs)`` in a group-committed write transaction.

        The Deferred fires with ``fn``'s result after the transaction committed. ``fn`` must not
        commit or roll back, must return materialized values, and may run twice (see module doc).
        """
        return self._write(fn, args, kwargs, short=False)

    def write_short(
        self,
        fn: Callable[Concatenate[Connection, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> defer.Deferred[_T]:
        """:meth:`write` for a job that touches a few rows and no body over
        :data:`SHORT_WRITE_BODY_BYTES`: on a SQLite file its statements may run on the
        reactor thread (the commit never does). Elsewhere the same as :meth:`write`."""
        return self._write(fn, args, kwargs, short=True)

    def _write(self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any],
               *, short: bool) -> defer.Deferred[_T]:
        if self._short_writes:
            return self._enqueue(fn, args, kwargs, short=short)
        return self._submit(self._write_queue, fn, args, kwargs)

    def read(
        self,
        fn: Callable[Concatenate[Connection, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> defer.Deferred[_T]:
        """Run ``fn(conn, *args, **kwargs)`` in a read transaction on a reader thread."""
        target = self._read_queue if self._readers else self._write_queue
        return self._submit(target, fn, args, kwargs)

    def read_short(
        self,
        short: Callable[Concatenate[Connection, _P], _T],
        fn: Callable[Concatenate[Connection, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> defer.Deferred[_T]:
        """:meth:`read` of ``fn``, tried first as ``short``: the same read where it touches
        a few rows and at most :data:`SHORT_WRITE_BODY_BYTES` of bodies, raising
        :class:`NotShort` where it would read more. On a SQLite file ``short`` runs on the
        reactor thread at its next turn (as a read's result came back from a reader thread,
        after the replies written meanwhile went out), in a read transaction of its own
        connection. If it raises, or SQLite would make it wait (``busy_timeout`` 0), ``fn``
        runs on a reader thread, as :meth:`read` runs it."""
        if not (self._short_writes and self._state is _State.OPEN
                and IReactorTime.providedBy(self._reactor)):
            return self.read(fn, *args, **kwargs)
        d: defer.Deferred[_T] = defer.Deferred()

        def run() -> None:
            if self._state is _State.OPEN:
                try:
                    conn = self._reactor_reader
                    if conn is None:
                        conn = self._reactor_reader = self.engine.connect()
                        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                            "PRAGMA busy_timeout=0")
                    with conn.begin():
                        result = _materialized(short(conn, *args, **kwargs))
                except Exception:  # NotShort, a lock, or the job's error: the reader decides
                    self.short_reads_refused += 1
                else:
                    d.callback(result)
                    return
            self.read(fn, *args, **kwargs).chainDeferred(d)

        IReactorTime(self._reactor).callLater(0, run)
        return d

    def _submit(
        self,
        target: queue.SimpleQueue[_Job | object],
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> defer.Deferred[_T]:
        if self._state is not _State.OPEN:
            return self._not_open()
        job = _job(fn, args, kwargs)
        target.put(job)
        return job.deferred

    def _not_open(self) -> defer.Deferred[Any]:
        return defer.fail(StorageError(f"queue database {self.display_url} is not open"))

    # --- short writes (reactor side) ---------------------------------------------------------

    def _enqueue(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any], *,
        short: bool,
    ) -> defer.Deferred[_T]:
        if self._state is not _State.OPEN:
            return self._not_open()
        job = _job(fn, args, kwargs, short)
        self._waiting.append(job)
        if not self._in_flight and self._start_call is None:
            if short and IReactorTime.providedBy(self._reactor):
                # At the reactor's next turn, with whatever else this turn asked for.
                self._start_call = IReactorTime(self._reactor).callLater(0, self._start_due)
            else:
                self._next_batch()
        return job.deferred

    def _start_due(self) -> None:
        self._start_call = None
        if not self._in_flight:
            self._next_batch()

    def _next_batch(self) -> None:
        """Start the next batch of waiting writes: statements here and the commit on the
        writer thread when every job is short, the whole batch on the writer otherwise.
        With nothing in flight, a short write starts at the reactor's next turn (with the
        writes asked for in this one: starting each at once cost a tenth of the relay's
        throughput in commits), a long one at once; the writes asked for while a batch is
        in flight start when its commit is done."""
        if not self._waiting:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
            return
        batch = self._waiting[: self.max_batch]
        del self._waiting[: self.max_batch]
        self._in_flight = True
        self.batches += 1
        if all(job.short for job in batch):
            started = self._start_on_reactor(batch)
            if started is not None:
                self._write_queue.put(started)
                return
        self._write_queue.put(_Batch(batch))

    def _start_on_reactor(self, batch: list[_Job]) -> _Commit | None:
        """Run ``batch``'s statements in a transaction on the writer's connection, without
        waiting for SQLite's write lock; None (rolled back) if that or any job failed."""
        conn = self._writer_conn
        try:
            if conn is None:
                conn = self._writer_conn = self.engine.connect()
                conn.execution_options(**WRITE_OPTIONS)
                self._writer_waits_for_lock = True
            if self._writer_waits_for_lock:
                conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA busy_timeout=0")
                self._writer_waits_for_lock = False
            transaction = conn.begin()
        except Exception:
            return None
        try:
            results = [_materialized(job.fn(conn)) for job in batch]
        except Exception:
            with contextlib.suppress(Exception):
                transaction.rollback()
            return None
        return _Commit(batch, transaction, results)

    def _batch_done(self) -> None:
        self._in_flight = False
        self._next_batch()

    # --- thread side -------------------------------------------------------------------------

    def _now(self) -> float:
        if IReactorTime.providedBy(self._reactor):
            return float(IReactorTime(self._reactor).seconds())
        return time.time()

    def _load_or_create_guid(self, engine: Engine) -> uuid.UUID:
        info = tables.database_info
        with engine.connect() as conn:
            conn.execution_options(**WRITE_OPTIONS)
            with conn.begin():
                stored = conn.execute(
                    sa.select(info.c.database_guid).where(info.c.id == 1)
                ).scalar_one_or_none()
                if stored is not None:
                    return uuid.UUID(stored)
                guid = uuid.uuid4()
                conn.execute(
                    sa.insert(info).values(id=1, database_guid=str(guid), created_at=self._now())
                )
        log.info("created queue database {url} with id {guid}", url=self.display_url, guid=guid)
        return guid

    def _start_threads(self, engine: Engine) -> None:
        readers = 0 if is_sqlite_memory(sa.make_url(self.url)) else self._readers_wanted
        self._writer = threading.Thread(
            target=self._writer_loop, args=(engine,), name="queue-db-writer", daemon=True
        )
        self._readers = [
            threading.Thread(
                target=self._reader_loop, args=(engine,), name=f"queue-db-reader-{n}", daemon=True
            )
            for n in range(readers)
        ]
        for thread in (self._writer, *self._readers):
            thread.start()

    def _close_in_thread(self, done: defer.Deferred[None]) -> None:
        try:
            self._write_queue.put(_STOP)
            for _ in self._readers:
                self._read_queue.put(_STOP)
            for thread in (self._writer, *self._readers):
                if thread is not None:
                    thread.join()
            if self._engine is not None:
                self._engine.dispose()
        except Exception:
            failure = Failure()
            self._reactor.callFromThread(done.errback, failure)
        else:
            self._reactor.callFromThread(done.callback, None)

    def _deliver(self, outcomes: list[tuple[defer.Deferred[Any], Any]],
                 then: Callable[[], None] | None = None) -> None:
        """Fire Deferreds on the reactor thread, in job order (one wake-up per batch), then
        call ``then`` there (writes their callbacks asked for join the next batch)."""

        def fire() -> None:
            for d, outcome in outcomes:
                if isinstance(outcome, Failure):
                    d.errback(outcome)
                else:
                    d.callback(outcome)
            if then is not None:
                then()

        self._reactor.callFromThread(fire)

    def _transaction(self, engine: Engine, jobs: list[_Job]) -> list[Any]:
        """Run ``jobs`` in one write transaction and commit; return their results.

        The writer keeps its connection from one batch to the next (:func:`_keeps_connections`);
        after a failed batch it takes a fresh one. A batch whose kept connection turns out
        lost before the commit runs once more on a new connection (nothing of it was
        committed); a failed commit is never run again (it may have happened).
        """
        keep = _keeps_connections(engine)
        conn = self._writer_conn if keep else None
        kept = conn is not None
        if conn is None:
            conn = engine.connect()
            conn.execution_options(**WRITE_OPTIONS)
        try:
            transaction = conn.begin()
            results = [_materialized(job.fn(conn)) for job in jobs]
        except BaseException as exc:
            lost = kept and _lost_connection(engine, exc, conn)
            self._writer_conn = None
            _close_quietly(conn)  # the batch's own error is the one to report
            if lost:  # nothing was committed: the jobs once more, on a fresh connection
                log.info("queue database connection lost; writing on a new one")
                return self._transaction(engine, jobs)
            raise
        try:
            transaction.commit()
        except BaseException:  # not retried: the commit may have happened
            self._writer_conn = None
            _close_quietly(conn)
            raise
        if keep:
            self._writer_conn = conn
        else:
            conn.close()
        self.commits += 1
        return results

    def _close_writer_connection(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            conn.close()

    def _close_writer_connection_quietly(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        _close_quietly(conn)

    def _run_batch(self, engine: Engine, batch: list[_Job],
                   then: Callable[[], None] | None = None) -> None:
        try:
            results = self._transaction(engine, batch)
        except Exception:
            failure = Failure()
            failure.cleanFailure()
            if len(batch) == 1:
                self._deliver([(batch[0].deferred, failure)], then)
                return
            self.batch_failures += 1
            outcomes: list[tuple[defer.Deferred[Any], Any]] = []
            for job in batch:
                try:
                    (result,) = self._transaction(engine, [job])
                except Exception:
                    failure = Failure()
                    failure.cleanFailure()
                    outcomes.append((job.deferred, failure))
                else:
                    outcomes.append((job.deferred, result))
            self._deliver(outcomes, then)
        else:
            self._deliver([(job.deferred, r) for job, r in zip(batch, results, strict=True)],
                          then)

    def _commit(self, item: _Commit) -> None:
        """Commit a batch whose statements ran on the reactor thread. A failed commit is
        not run again (it may have happened): every job of the batch fails with it."""
        try:
            item.transaction.commit()
        except Exception:
            failure = Failure()
            failure.cleanFailure()
            self._close_writer_connection_quietly()
            self._deliver([(job.deferred, failure) for job in item.batch], self._batch_done)
            return
        self.commits += 1
        self._deliver([(job.deferred, r) for job, r in zip(item.batch, item.results, strict=True)],
                      self._batch_done)

    def _run_whole_batch(self, engine: Engine, item: _Batch) -> None:
        """A batch with a long write, or short ones that could not start on the reactor:
        statements and commit here, waiting for SQLite's lock as long as ``busy_timeout``."""
        if self._writer_conn is not None and not self._writer_waits_for_lock:
            try:
                self._writer_conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    f"PRAGMA busy_timeout={round(self._busy_timeout * 1000)}")
            except Exception:
                self._close_writer_connection_quietly()
        self._writer_waits_for_lock = True  # (a connection made now waits as well)
        self._run_batch(engine, item.batch, self._batch_done)

    def _writer_loop(self, engine: Engine) -> None:
        """Group commit: take every job already waiting (up to ``max_batch``) as one batch."""
        try:
            self._write_batches(engine)
        finally:
            self._close_writer_connection()

    def _write_batches(self, engine: Engine) -> None:
        while True:
            first = self._write_queue.get()
            if first is _STOP:
                return
            if isinstance(first, _Commit):
                self._commit(first)
                continue
            if isinstance(first, _Batch):
                self._run_whole_batch(engine, first)
                continue
            assert isinstance(first, _Job)
            self.batches += 1
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._write_queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, _Job)
                batch.append(item)
            self._run_batch(engine, batch)
            if stop:
                return

    def _reader_loop(self, engine: Engine) -> None:
        """Each read in its own transaction, on one connection kept by the thread (as the
        writer does; one checked out per read on in-memory SQLite). A read whose kept
        connection was lost runs once more on a new one."""
        keep = _keeps_connections(engine)
        conn: Connection | None = None
        try:
            while True:
                item = self._read_queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, _Job)
                kept = conn is not None
                try:
                    if conn is None:
                        conn = engine.connect()
                    try:
                        with conn.begin():
                            result = _materialized(item.fn(conn))
                    except Exception as exc:
                        if not (kept and _lost_connection(engine, exc, conn)):
                            raise
                        log.info("queue database connection lost; reading on a new one")
                        _close_quietly(conn)
                        conn = None
                        conn = engine.connect()
                        with conn.begin():
                            result = _materialized(item.fn(conn))
                except Exception:
                    failure = Failure()
                    failure.cleanFailure()
                    _close_quietly(conn)  # a fresh connection for the next read
                    conn = None
                    self._deliver([(item.deferred, failure)])
                else:
                    if not keep:
                        _close_quietly(conn)
                        conn = None
                    self._deliver([(item.deferred, result)])
        finally:
            _close_quietly(conn)
