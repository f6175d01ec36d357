"""A one-hub organization for hostile-input and load tests: HUB01 (a real process) relays
fabrikam.test (ExternalRelay) to INTERNET01, where a foreign sink (aiosmtpd) listens.

HUB01's Default connector trusts no address as an org server, so every test client is an
anonymous Internet peer: relay control and the per-source limits apply to it.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from org_files import FAST_RETRY
from sink import Sink

from exchange_emu.lab.org_builder import (
    OrgSpec,
    SendConnectorSpec,
    ServerSpec,
    TomlValue,
    write_org,
)

from server_process import ServerProcess, free_ports


def hostile_org(directory: Path, **receive: TomlValue) -> tuple[Path, dict[str, int]]:
    """The organization file and the ports of HUB01 and INTERNET01 (the sink's)."""
    hub_port, internet_port = free_ports(2)
    # No tarpit unless asked for: the tests check each reply, not Exchange's 5 s delay.
    settings: dict[str, TomlValue] = {"org_server_networks": (), "tarpit_interval": "00:00:00"}
    settings.update(receive)
    spec = OrgSpec(
        [ServerSpec("HUB01", "hub", hub_port, ack_delay="00:00:00", receive_settings=settings),
         ServerSpec("INTERNET01", "legacy", internet_port, site=None, version="non-exchange",
                    local_domains=("fabrikam.test",))],
        send_connectors=[SendConnectorSpec("Internet", ("HUB01",), ("INTERNET01",))],
        relay_domains=[("fabrikam.test", "ExternalRelay")],
        transport=dict(FAST_RETRY),
    )
    return write_org(directory / "hostile.toml", spec), {"HUB01": hub_port,
                                                         "INTERNET01": internet_port}


@contextlib.contextmanager
def hub_and_sink(directory: Path, **receive: TomlValue) -> Iterator[tuple[ServerProcess, Sink,
                                                                         int]]:
    """HUB01 running as a process and the sink listening; yields (hub, sink, hub port)."""
    config, ports = hostile_org(directory, **receive)
    with Sink(ports["INTERNET01"]) as sink:
        hub = ServerProcess("hub", config, "HUB01", directory).start()
        try:
            yield hub, sink, ports["HUB01"]
        finally:
            hub.stop()


def send(port: int, message_id: str, body: str = "hello\r\n",
         to: str = "erin@fabrikam.test") -> Any:
    """Deliver one message with smtplib; the server's reply to the end of data."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.fabrikam.test")
        client.mail("alice@fabrikam.test")
        client.rcpt(to)
        return client.data(f"Message-ID: {message_id}\r\nSubject: s\r\n\r\n{body}".encode())


class RawSession:
    """A socket speaking raw bytes to the server, for input no client library would send."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.pending = b""
        self.banner = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply, or b"" at end of stream."""
        lines = []
        while True:
            while b"\r\n" not in self.pending:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b"".join(lines)
                self.pending += chunk
            line, self.pending = self.pending.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    def command(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server closed the connection (read until EOF, bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
