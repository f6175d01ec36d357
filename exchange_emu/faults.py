"""Crash points: a server kills itself at an exact instant, for fault injection.

``EXCHANGE_EMU_CRASH_AT=<point>`` in a server's environment makes it kill itself
with SIGKILL there — the instants a real crash is hardest to hit by timing alone
(``exchange-emu fault crash-at SERVER POINT`` restarts a lab server so):

- ``A``   mailbox server: a client's message arrived, before the Outbox commit;
- ``B.2`` hub: it committed a message taken from an Outbox to its Submission queue,
  before it logged B.2 or answered the mailbox;
- ``C.1`` hub: it delivered to a mailbox, before it recorded the delivery;
- ``E.4`` legacy or Internet server (no XSHADOW): it committed a message and answered
  250, before writing it to its own mailbox.

Network partitions, slow replies and scripted replies: exchange_emu/fault_plan.py.
"""

from __future__ import annotations

import os
import signal

from twisted.logger import Logger

log = Logger()

CRASH_AT = "EXCHANGE_EMU_CRASH_AT"
CRASH_POINTS = ("A", "B.2", "C.1", "E.4")


def crash_point(step: str) -> None:
    """Die here (SIGKILL) if this server was told to crash at ``step``."""
    if os.environ.get(CRASH_AT) == step:
        log.critical("fault injection: crashing at step {step}", step=step)
        os.kill(os.getpid(), signal.SIGKILL)
