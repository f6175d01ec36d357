"""The queue database of a transport server (Exchange's ``mail.que``), on SQLAlchemy Core.

Ground floor of the package: imports nothing else of exchange_emu. See docs/storage.md.
"""

from exchange_emu.storage.database import QueueDatabase, short_write
from exchange_emu.storage.errors import (
    MessageNotFoundError,
    NotShort,
    SchemaVersionError,
    StorageError,
)
from exchange_emu.storage.migrations import MIGRATIONS, Migration
from exchange_emu.storage.queue import (
    POISON_QUEUE,
    SUBMISSION_QUEUE,
    UNREACHABLE_QUEUE,
    BodyType,
    MessageState,
    MessageSummary,
    NewMessage,
    PrimaryState,
    Recipient,
    RecipientStatus,
    ShadowRecord,
    StoredMessage,
    StoredRecipient,
)
from exchange_emu.storage.store import QueueStore

__all__ = [
    "MIGRATIONS",
    "POISON_QUEUE",
    "SUBMISSION_QUEUE",
    "UNREACHABLE_QUEUE",
    "BodyType",
    "MessageNotFoundError",
    "MessageState",
    "MessageSummary",
    "Migration",
    "NewMessage",
    "NotShort",
    "PrimaryState",
    "QueueDatabase",
    "QueueStore",
    "Recipient",
    "RecipientStatus",
    "SchemaVersionError",
    "ShadowRecord",
    "StorageError",
    "StoredMessage",
    "StoredRecipient",
    "short_write",
]
