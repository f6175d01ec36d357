"""One stop per process: a second SIGINT or SIGTERM while a server already stops is
ignored.

Stopping a lab with Ctrl-C signals every server twice. The terminal sends SIGINT to the
whole process group, and the lab supervisor then sends each server SIGTERM. Twisted's
handler answered the second signal with another ``reactor.stop()``, which raises
``ReactorNotRunning``, and the server logged a traceback while it stopped cleanly.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from twisted.application import service
from twisted.logger import Logger

log = Logger()

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnceOnSignals(service.Service):
    """Wraps the reactor's SIGINT and SIGTERM handlers (once it runs and has installed
    them) so that only the first stop request of the process reaches them."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        if threading.current_thread() is threading.main_thread():  # (signals: main only)
            self.reactor.callWhenRunning(self._wrap_handlers)
        self.reactor.addSystemEventTrigger("before", "shutdown", self._shutting_down)

    def _shutting_down(self) -> None:
        self.stopping = True

    def _wrap_handlers(self) -> None:
        for number in _SIGNALS:
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, self._once(handler))

    def _once(self, handler: Any) -> Any:
        def first_only(number: int, frame: FrameType | None) -> None:
            if self.stopping:
                log.info("Received {signal} while already stopping: ignored",
                         signal=signal.Signals(number).name)
                return
            self.stopping = True
            handler(number, frame)
        return first_only
