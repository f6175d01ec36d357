"""Services every server role starts with: its database, opened before anything
listens, and listeners whose busy port is a one-line start-up error."""

from __future__ import annotations

from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from exchange_emu.directory import Address
from exchange_emu.startup import StartupError
from exchange_emu.storage import QueueDatabase, StorageError

log = Logger()


class DatabaseService(service.Service):
    """Opens a server's database before its listeners, closes it after them."""

    def __init__(self, db: QueueDatabase, server_name: str) -> None:
        self.db = db
        self.server_name = server_name

    def privilegedStartService(self) -> None:
        try:
            self.db.open()
        except StorageError as e:
            raise StartupError(f"{self.server_name}: {e}") from None
        super().privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        return self.db.stopService()


_DATABASES = (DatabaseService, QueueDatabase)
"""The children a RoleService stops last: the database, wrapped or as itself."""


class RoleService(service.MultiService):
    """A server role's services, stopped together and then its database: what finishes
    while the role stops (a commit under way, the transport's clean-stop mark) still finds
    the database open. (``MultiService`` alone stops every child at once.)"""

    def stopService(self) -> Deferred[Any]:
        service.Service.stopService(self)
        children = list(self)
        others = [s for s in reversed(children) if not isinstance(s, _DATABASES)]
        databases = [s for s in children if isinstance(s, _DATABASES)]
        first: Deferred[Any] = DeferredList([maybeDeferred(s.stopService) for s in others])
        return first.addBoth(
            lambda _: DeferredList([maybeDeferred(s.stopService) for s in databases]))


class Listener(service.Service):
    """A listening port (a receive connector, a store-driver endpoint)."""

    def __init__(self, server_name: str, what: str, address: Address, factory: Any,
                 reactor: Any) -> None:
        self.server_name = server_name
        self.what = what
        self.address = address
        self._inner = strports.service(address.endpoint(), factory, reactor=reactor)

    def privilegedStartService(self) -> None:
        try:
            self._inner.privilegedStartService()
        except CannotListenError as e:
            raise StartupError(
                f"{self.server_name}: {self.what} cannot listen on {self.address}: "
                f"{e.socketError}"
            ) from None
        super().privilegedStartService()
        log.info("{server}: {what} listening on {address}", server=self.server_name,
                 what=self.what, address=str(self.address))

    def startService(self) -> None:
        super().startService()
        self._inner.startService()

    def stopService(self) -> Any:
        super().stopService()
        return self._inner.stopService()
