"""Start-up failures that end a server with one line, not a traceback."""

from __future__ import annotations

from twisted.application import service


class StartupError(Exception):
    """A server cannot start (busy port, unreadable database, …); str() is the one line."""


class ExitOnStartupError(service.MultiService):
    """The top service twistd runs: a ``StartupError`` while starting becomes
    ``SystemExit`` with its one-line message, so twistd exits non-zero without
    a traceback."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            raise SystemExit(f"{self.program}: error: {e}") from None
