"""A server of the organization as its own OS process (``twistd -n exchange-<role>``),
so that it can be started, stopped, and killed for real."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")
READY_MARK = "listening on"
"""What a transport server logs once its receive connectors accept connections."""


LISTEN_PORTS_FLOOR = 10000
RECENT_PORTS = 4096
"""How many of the ports :func:`free_ports` handed out last it will not hand out again."""
_recent_ports: deque[int] = deque()
_recent_port_set: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago, chosen below the kernel's ephemeral
    range: a port from that range can be taken by any outgoing connection (another server
    of the same lab connecting somewhere) between this check and the server's bind.

    None of the last :data:`RECENT_PORTS` ports handed out in this process is handed out
    again: labs run side by side in threads (the crash matrix's workers) keep their ports
    while a killed server is down, and another lab must not take that port meanwhile (its
    messages would reach the wrong lab's server)."""
    with _ports_lock:
        ports = _free_ports(count)
        for port in ports:
            _recent_ports.append(port)
            _recent_port_set.add(port)
        while len(_recent_ports) > RECENT_PORTS:
            _recent_port_set.discard(_recent_ports.popleft())
        return ports


def _free_ports(count: int) -> list[int]:
    ceiling = _ephemeral_floor()
    candidates = random.sample(range(LISTEN_PORTS_FLOOR, ceiling), ceiling - LISTEN_PORTS_FLOOR)
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            if len(sockets) == count:
                break
            if port in _recent_port_set:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < count:
            raise OSError(f"fewer than {count} free ports below {ceiling} on 127.0.0.1")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess:
    """One ``twistd -n exchange-<role>`` process, with its output collected."""

    def __init__(self, role: str, config: Path, server: str, cwd: Path,
                 env: dict[str, str] | None = None) -> None:
        self.argv = [TWISTD, "-n", "--pidfile=", f"exchange-{role}", "--config", str(config),
                     "--server", server]
        self.cwd = cwd
        self.extra_env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start, and wait (bounded) until it says it listens; raise with its output if not."""
        self._ready.clear()
        self.lines = []
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait(5)
                time.sleep(0.1)  # let the reader take the last lines
                raise RuntimeError("server did not start:\n" + self.output)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_MARK in line:
                self._ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or close anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, and wait for a clean shutdown; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time the process has used so far."""
        return cpu_seconds(self.pid)

    def peak_memory_kib(self) -> int | None:
        """The process's peak resident memory (VmHWM), while it runs."""
        return peak_memory_kib(self.pid)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time process ``pid`` has used so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_kib(pid: int) -> int | None:
    """Process ``pid``'s peak resident memory (VmHWM), while it runs."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
