"""A role whose behaviour later issues build: it starts, says so, and idles."""

from __future__ import annotations

from twisted.application import service
from twisted.logger import Logger

log = Logger()


class NotImplementedRole(service.Service):
    """Stands in for a server whose role is not implemented yet."""

    def __init__(self, server_name: str, role: str) -> None:
        self.server_name = server_name
        self.role = role

    def startService(self) -> None:
        super().startService()
        log.warn("{server}: the {role} role is not implemented yet; it starts and does nothing",
                 server=self.server_name, role=self.role)
