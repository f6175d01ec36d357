"""The lab supervisor: every server of an organization file as its own OS process
(``twistd -n exchange-<role> --server NAME``), so that one can be killed for real.

Each process's output is shown with the server's name in front. Stopping the
supervisor (Ctrl-C) stops every server cleanly (SIGTERM, then SIGKILL for one
that does not stop within a bound); a server that exits on its own is reported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from exchange_emu.directory import Organization, Server
from exchange_emu.lab.processes import READY_MARK

STOP_GRACE = 20.0
"""Seconds a server gets to stop after SIGTERM before it is killed."""


def role_command(server: Server) -> str:
    """The twistd plugin that starts this server (each runs all the server's roles)."""
    for role in ("hub", "edge", "legacy", "mailbox"):
        if role in server.roles:
            return f"exchange-{role}"
    raise ValueError(f"{server.name} has no role the emulator runs")


class ServerProcessProtocol(ProcessProtocol):
    """One server process: its output, prefixed, and its end."""

    def __init__(self, name: str, write: Callable[[str], None],
                 on_ready: Callable[[str], None] = lambda name: None) -> None:
        self.name = name
        self.write = write
        self.on_ready = on_ready
        self.ready = False
        self.ended: Deferred[int | None] = Deferred()
        self._partial = b""
        self.stopping = False

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            self.write(f"[{self.name}] {text}")
            if not self.ready and READY_MARK in text:
                self.ready = True
                self.on_ready(self.name)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self.write(f"[{self.name}] {self._partial.decode('utf-8', 'replace')}")
        code = getattr(reason.value, "exitCode", None)
        if not self.stopping:
            self.write(f"[{self.name}] exited unexpectedly (status {code}, signal "
                       f"{getattr(reason.value, 'signal', None)})")
        self.ended.callback(code)


class LabSupervisor:
    """Starts, watches and stops the server processes of one organization file."""

    def __init__(self, organization: Organization, config: Path, port_offset: int,
                 reactor: Any, write: Callable[[str], None] = print) -> None:
        self.organization = organization
        self.config = config
        self.port_offset = port_offset
        self.reactor = reactor
        self.write = write
        self.processes: dict[str, tuple[Any, ServerProcessProtocol]] = {}
        self._started_at = 0.0
        self._announced_all = False

    def argv(self, server: Server) -> list[str]:
        twistd = str(Path(sys.executable).parent / "twistd")
        return [twistd, "-n", "--pidfile=", role_command(server), "--config",
                str(self.config), "--server", server.name, "--port-offset",
                str(self.port_offset)]

    def start(self, name: str | None = None, env_extra: dict[str, str] | None = None) -> None:
        """Start every server (or one; ``env_extra`` adds to its environment, e.g.
        EXCHANGE_EMU_CRASH_AT for fault injection)."""
        servers = ([self.organization.server(name)] if name
                   else list(self.organization.servers.values()))
        if name is None:
            self._started_at = self.reactor.seconds()
            self._announced_all = False
        for server in servers:
            if server.name in self.processes:
                continue
            proto = ServerProcessProtocol(server.name, self.write, self._server_ready)
            argv = self.argv(server)
            env = dict(os.environ, PYTHONUNBUFFERED="1")  # no line lost when a server stops
            env.pop("EXCHANGE_EMU_CRASH_AT", None)
            env.update(env_extra or {})
            transport = self.reactor.spawnProcess(proto, argv[0], argv, env=env)
            self.processes[server.name] = (transport, proto)
            proto.ended.addBoth(self._ended, server.name, proto)

    def _server_ready(self, name: str) -> None:
        """Start-up progress: one line per server that listens, one when all do."""
        ready = sum(proto.ready for _, proto in self.processes.values())
        total = len(self.organization.servers)
        self.write(f"[lab] {name} is listening ({ready} of {total} servers ready)")
        if ready == total and not self._announced_all:
            self._announced_all = True
            seconds = self.reactor.seconds() - self._started_at
            self.write(f"[lab] all {total} servers ready in {seconds:.1f} s; "
                       "try: exchange-emu scenario run all")

    def _ended(self, result: object, name: str, proto: ServerProcessProtocol) -> object:
        if self.processes.get(name, (None, None))[1] is proto:
            del self.processes[name]
        return result

    def stop(self, name: str | None = None) -> Deferred[Any]:
        """SIGTERM every server (or one); SIGKILL what has not stopped in STOP_GRACE."""
        names = [name] if name else list(self.processes)
        waits = []
        for each in names:
            if each not in self.processes:
                continue
            transport, proto = self.processes[each]
            proto.stopping = True
            try:
                transport.signalProcess("TERM")
            except Exception:
                continue
            killer = self.reactor.callLater(STOP_GRACE, _kill, transport)
            proto.ended.addBoth(_cancel_then_pass, killer)
            waits.append(proto.ended)
        return DeferredList(waits, consumeErrors=True)

    def kill(self, name: str) -> None:
        """SIGKILL one server: a crash, for fault injection."""
        transport, proto = self.processes[name]
        proto.stopping = True
        transport.signalProcess(signal.SIGKILL)


def _kill(transport: Any) -> None:
    with contextlib.suppress(Exception):  # it may have ended meanwhile
        transport.signalProcess("KILL")


def _cancel_then_pass(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result
