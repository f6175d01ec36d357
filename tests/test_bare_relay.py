"""The stack's floor used by the benchmark suite (benchmarks/bare_relay.py) is a real
store-and-forward relay: real processes on loopback, a foreign sink (aiosmtpd) and a foreign
client (smtplib). A floor that lost mail or acknowledged early would flatter the stack."""

from __future__ import annotations

import select
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange_emu.lab.processes import free_ports
from tests.sink import Sink

RELAY = Path(__file__).resolve().parent.parent / "benchmarks" / "bare_relay.py"
BODY = (b"Subject: floor\r\n\r\n.a line that starts with a dot\r\n..and one with two\r\n"
        b"last line\r\n")


class BareRelay:
    def __init__(self, port: int, next_port: int, database: Path, hold: bool,
                 writer_thread: bool) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RELAY), "--port", str(port), "--next",
             f"127.0.0.1:{next_port}", "--database", str(database),
             *(["--hold"] if hold else []), *(["--writer-thread"] if writer_thread else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else b""
        if b"listening" not in line:
            self.process.kill()
            raise AssertionError(f"bare relay did not start: {line!r}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(10)


@pytest.fixture
def relays() -> Iterator[list[BareRelay]]:
    started: list[BareRelay] = []
    yield started
    for relay in started:
        if relay.process.poll() is None:
            relay.stop(signal.SIGKILL)


def _send(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for _ in range(count):
            client.sendmail("app@contoso.test", ["erin@fabrikam.test", "ann@fabrikam.test"],
                            BODY)


@pytest.mark.parametrize("writer_thread", [False, True], ids=["inline", "writer-thread"])
def test_two_holding_hops_acknowledge_only_once_the_sink_has_the_message(
        tmp_path: Path, relays: list[BareRelay], writer_thread: bool) -> None:
    first, second, sink_port = free_ports(3)
    with Sink(sink_port) as sink:
        relays.append(BareRelay(second, sink_port, tmp_path / "2.db", hold=True,
                                writer_thread=writer_thread))
        relays.append(BareRelay(first, second, tmp_path / "1.db", hold=True,
                                writer_thread=writer_thread))
        with smtplib.SMTP("127.0.0.1", first, timeout=30) as client:
            for n in range(1, 4):
                client.sendmail("app@contoso.test", ["erin@fabrikam.test"], BODY)
                # Held: the 250 came back only after the sink said 250 to the second hop.
                assert len(sink.messages) == n
        received = sink.wait_for(3)
    assert all(m.data.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")
               for m in received)
    assert all(m.recipients == ["erin@fabrikam.test"] for m in received)


@pytest.mark.parametrize("writer_thread", [False, True], ids=["inline", "writer-thread"])
def test_an_acknowledged_message_survives_kill_9_and_goes_out_after_restart(
        tmp_path: Path, relays: list[BareRelay], writer_thread: bool) -> None:
    port, sink_port = free_ports(2)
    relay = BareRelay(port, sink_port, tmp_path / "q.db", hold=False,
                      writer_thread=writer_thread)  # next hop down
    relays.append(relay)
    _send(port, 2)  # acknowledged after the commit
    relay.stop(signal.SIGKILL)
    with Sink(sink_port) as sink:
        relays.append(BareRelay(port, sink_port, tmp_path / "q.db", hold=False,
                                writer_thread=writer_thread))
        received = sink.wait_for(2)
    assert [m.recipients for m in received] == [["erin@fabrikam.test", "ann@fabrikam.test"]] * 2
    assert {m.data.replace(b"\r\n", b"\n") for m in received} == {BODY.replace(b"\r\n", b"\n")}
