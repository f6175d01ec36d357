"""Fault hooks a server honours so a test or the lab can break it at an exact step.

``EXCHANGE_EMU_CRASH_AT=C.1`` in a server's environment makes it kill itself
with SIGKILL right after that step happened and before anything else is
committed — the instant a real crash is hardest to hit by timing alone.
"""

from __future__ import annotations

import os
import signal

from twisted.logger import Logger

log = Logger()

CRASH_AT = "EXCHANGE_EMU_CRASH_AT"


def crash_point(step: str) -> None:
    """Die here (SIGKILL) if this server was told to crash at ``step``."""
    if os.environ.get(CRASH_AT) == step:
        log.critical("fault injection: crashing at step {step}", step=step)
        os.kill(os.getpid(), signal.SIGKILL)
