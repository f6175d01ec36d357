"""Errors raised by the queue database (Exchange's transport "mail.que" database)."""

from __future__ import annotations


class StorageError(Exception):
    """The queue database cannot be opened or used.

    Raised synchronously by :meth:`QueueDatabase.open` with a one-line message such as
    ``cannot open queue database sqlite:////var/q/queue.db: unable to open database file``,
    and delivered through Deferreds when a job is submitted to a database that is not open.
    """


class SchemaVersionError(StorageError):
    """The database's schema is newer than this code understands (a downgrade was attempted)."""


class MessageNotFoundError(StorageError, LookupError):
    """No message with this InternalId is in the queue database."""


class NotShort(Exception):
    """Raised by a job run with :meth:`QueueDatabase.read_short` that finds more to read than
    a short read may (it then runs on a reader thread)."""
