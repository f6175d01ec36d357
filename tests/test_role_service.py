"""A server role stops its services first and its queue database last."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, reactor
from twisted.trial import unittest

from exchange_emu.listening import DatabaseService, RoleService
from exchange_emu.storage import QueueDatabase, StorageError


class _WritesWhileStopping(service.Service):
    """Like the transport engine: stopping waits for a read, then writes (its clean-stop
    mark), so the write comes after every service was asked to stop."""

    def __init__(self, db: QueueDatabase) -> None:
        self.db = db
        self.wrote: object = None

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        d = self.db.read(lambda conn: conn.execute(sa.text("select 1")).scalar_one())
        d.addCallback(lambda _: self.db.write(
            lambda conn: conn.execute(sa.text("select 2")).scalar_one()))

        def noted(result: object) -> None:
            self.wrote = result

        return d.addBoth(noted)


class RoleServiceStopTests(unittest.TestCase):
    def _stop_with(self, role: service.MultiService, wrapped: bool = True
                   ) -> defer.Deferred[list[object]]:
        directory = Path(tempfile.mkdtemp(prefix="role-service"))
        self.addCleanup(shutil.rmtree, directory, True)
        db = QueueDatabase(f"sqlite:///{directory / 'queue.db'}", reactor=reactor)
        (DatabaseService(db, "HUB01") if wrapped else db).setServiceParent(role)
        writer = _WritesWhileStopping(db)
        writer.setServiceParent(role)
        role.privilegedStartService()
        role.startService()
        d = defer.maybeDeferred(role.stopService)
        return d.addCallback(lambda _: [writer.wrote])  # (a Failure returned would errback)

    @defer.inlineCallbacks
    def test_database_stays_open_until_the_other_services_stopped(self) -> Any:
        [wrote] = yield self._stop_with(RoleService())
        self.assertEqual(wrote, 2)

    @defer.inlineCallbacks
    def test_a_queue_database_child_is_stopped_last_too(self) -> Any:
        """As docs/storage.md sets one up: the QueueDatabase itself as the child."""
        [wrote] = yield self._stop_with(RoleService(), wrapped=False)
        self.assertEqual(wrote, 2)

    @defer.inlineCallbacks
    def test_a_plain_multiservice_closes_it_under_them(self) -> Any:
        """Why RoleService exists: MultiService stops every child at once."""
        [wrote] = yield self._stop_with(service.MultiService())
        self.assertIsInstance(getattr(wrote, "value", None), StorageError)
