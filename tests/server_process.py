"""Real server processes for integration tests: an organization file on
free loopback ports, and twistd started, killed and restarted for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")
READY_MARK = "listening on"


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def small_org(directory: Path, hub_port: int, *, database_url: str | None = None) -> Path:
    """An organization with one hub (HUB01) that trusts loopback as org servers."""
    db_line = f'database_url = "{database_url}"' if database_url else ""
    text = f"""
[organization]
name = "Contoso"

[lab]
data_root = "{directory / 'var'}"
org_server_networks = ["127.0.0.0/8"]

[[sites]]
name = "Site-A"

[[accepted_domains]]
domain = "contoso.test"
type = "Authoritative"

[[servers]]
name = "HUB01"
fqdn = "hub01.contoso.test"
roles = ["hub"]
site = "Site-A"
smtp = "127.0.0.1:{hub_port}"
{db_line}
"""
    path = directory / "org.toml"
    path.write_text(text)
    return path


class ServerProcess:
    """One ``twistd -n exchange-<role>`` process, with its output collected."""

    def __init__(self, role: str, config: Path, server: str, cwd: Path) -> None:
        self.argv = [TWISTD, "-n", "--pidfile=", f"exchange-{role}", "--config", str(config),
                     "--server", server]
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start and wait (bounded) until it says it listens; fail with its output if not."""
        self._ready.clear()
        self.lines = []
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.wait(5)
                time.sleep(0.1)  # let the reader drain the last lines
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
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def run_to_exit(argv: list[str], cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
