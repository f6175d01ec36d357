"""Load against a real hub on loopback: 500 idle connections, 50 connections flooding junk
and a slow-loris do not stop a well-behaved client (smtplib) from delivering, and the hub's
memory stays bounded. Figures are printed (run with ``-s``; see docs/hostile-input.md).

Every test connection comes from 127.0.0.1, so the connector's per-source limit decides the
scenario. With Exchange's default (MaxInboundConnectionPerSource 20) the attackers' idle
connections fill it and the client is refused exactly as Exchange would refuse it; the
recovery path is ConnectionInactivityTimeout dropping the idle ones. For the load itself the
connector allows 1000 per source (Exchange allows up to unlimited), keeping
MaxInboundConnection at its default 5000, so all 551 attacking connections are admitted and
really served.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import smtplib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_lab import RawSession, hub_and_sink, send

pytestmark = pytest.mark.integration

IDLE, JUNK, PIPELINERS, LORIS_INTERVAL = 500, 25, 25, 0.2
ACK_BOUND, DELIVERY_BOUND = 10.0, 20.0


def _ensure_fd_limit(needed: int) -> None:
    """Raise the soft fd limit (the hub process inherits it), or skip saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        pytest.skip(f"needs {needed} open files, the limit is {soft} (raise ulimit -n)")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


class Attack:
    """Junk senders, pipeliners that never read their replies and a slow-loris, each in a
    thread that reconnects whenever the hub closes on it, until stopped — all in a process
    of their own, so that they do not share the measuring client's interpreter lock."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.sent = context.Value("q", 0)
        self.process = context.Process(target=_attack_main, args=(port, self.stop, self.sent),
                                       daemon=True)

    def __enter__(self) -> Attack:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(20)
        if self.process.is_alive():
            self.process.kill()

    @property
    def bytes_sent(self) -> int:
        return int(self.sent.value)


def _attack_main(port: int, stop: Any, sent: Any) -> None:
    """The attacking process: its threads run until ``stop`` is set."""

    def count(n: int) -> None:
        with sent.get_lock():
            sent.value += n

    def forever(attack: Callable[[], None]) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                attack()

    def junk() -> None:
        """Binary junk and long lines: protocol errors until the hub closes the session."""
        data = os.urandom(4096).replace(b"\n", b"\r\n") + b"\r\n" + b"X" * 5000
        with _connect(port) as s:
            s.settimeout(0.5)
            while not stop.is_set():
                s.sendall(data)
                count(len(data))
                try:
                    if not s.recv(65536):
                        return  # closed: 421 4.7.0 too many errors
                except TimeoutError:
                    pass

    def pipeline() -> None:
        """Endless pipelined NOOPs, never reading a reply."""
        chunk = b"NOOP\r\n" * 5000
        with _connect(port) as s:
            s.settimeout(0.5)
            while not stop.is_set():
                # (A timeout: the hub stopped reading from us, TCP back-pressure.)
                with contextlib.suppress(TimeoutError):
                    count(s.send(chunk))

    def slow_loris() -> None:
        """A session one byte per interval."""
        script = (b"EHLO slowloris.example\r\nMAIL FROM:<slow@fabrikam.test>\r\n"
                  b"RCPT TO:<erin@fabrikam.test>\r\nDATA\r\n" + b"Subject: slow\r\n\r\n"
                  + b"s" * 10_000)
        with _connect(port) as s:
            for byte in script:
                if stop.wait(LORIS_INTERVAL):
                    return
                s.sendall(bytes([byte]))
                count(1)

    threads = ([threading.Thread(target=forever, args=(junk,)) for _ in range(JUNK)]
               + [threading.Thread(target=forever, args=(pipeline,))
                  for _ in range(PIPELINERS)]
               + [threading.Thread(target=forever, args=(slow_loris,))])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_exchange_default_per_source_limit_refuses_then_inactivity_timeout_recovers(
        tmp_path: Path):
    """MaxInboundConnectionPerSource 20 (Exchange's default): 20 idle attacker connections
    from the client's own address make the hub refuse the client, as Exchange would; once
    ConnectionInactivityTimeout (2 s here) drops them, the client delivers."""
    with hub_and_sink(tmp_path, connection_inactivity_timeout="00:00:02") as (hub, sink, port):
        idle = [RawSession(port) for _ in range(20)]
        assert all(s.banner.startswith(b"220 ") for s in idle)
        refused = RawSession(port)
        assert refused.banner.startswith(b"421 4.3.2 The maximum number of concurrent "
                                         b"connections has exceeded a limit")
        started = time.monotonic()
        deadline = started + 15
        while True:
            try:
                code, _ = send(port, "<after-idle@fabrikam.test>")
                break
            except (OSError, smtplib.SMTPException) as error:
                assert time.monotonic() < deadline, f"still refused: {error!r}"
                time.sleep(0.2)  # the client's own retry interval
        recovered = time.monotonic() - started
        assert code == 250
        assert len(sink.wait_for(1)) == 1
        assert all(s.reply() == b"421 4.4.1 Connection timed out\r\n" for s in idle)
        print(f"\nper-source 20: client refused with 20 idle attackers; delivered "
              f"{recovered:.1f} s later (ConnectionInactivityTimeout 2 s)")
        assert hub.proc is not None and hub.proc.poll() is None


def test_well_behaved_client_delivers_under_idle_flood_and_slow_loris(tmp_path: Path):
    _ensure_fd_limit(2 * (IDLE + JUNK + PIPELINERS) + 200)
    with hub_and_sink(tmp_path, max_inbound_connection_per_source=1000,
                      connection_inactivity_timeout="00:05:00",
                      tarpit_interval="00:00:05") as (hub, sink, port):
        baseline = memory_kib(hub.pid)
        started = time.monotonic()
        assert send(port, "<quiet@fabrikam.test>")[0] == 250
        quiet_ack = time.monotonic() - started
        sink.wait_for(1)
        quiet_delivery = time.monotonic() - started
        idle = [_connect(port) for _ in range(IDLE)]
        for s in idle:
            assert s.recv(512).startswith(b"220 "), "an idle connection was not admitted"
        with_idle = memory_kib(hub.pid)
        acks, deliveries = [], []
        with Attack(port) as attack:
            time.sleep(2.0)  # let the flood and the loris get going
            for n in range(3):
                started = time.monotonic()
                code, reply = send(port, f"<under-load-{n}@fabrikam.test>", "hello\r\n" * 100)
                acks.append(time.monotonic() - started)
                assert code == 250, reply
                sink.wait_for(n + 2, timeout=DELIVERY_BOUND)
                deliveries.append(time.monotonic() - started)
            during = memory_kib(hub.pid)
            sent = attack.bytes_sent
            cpu = hub.cpu_seconds()
        # The idle connections were served all along: one still answers.
        idle[0].sendall(b"NOOP\r\n")
        assert idle[0].recv(512) == b"250 2.0.0 OK\r\n"
        for s in idle:
            s.close()
        after = memory_kib(hub.pid)
        assert hub.proc is not None and hub.proc.poll() is None
    assert [m.data.count(b"<under-load-") for m in sink.messages] == [0, 1, 1, 1]
    assert max(acks) < ACK_BOUND and max(deliveries) < DELIVERY_BOUND
    growth = during["VmHWM"] - baseline["VmRSS"]
    assert growth < 200 * 1024, f"hub grew by {growth} KiB"
    print(f"\nload: {IDLE} idle + {JUNK} junk + {PIPELINERS} pipelining + 1 slow-loris; "
          f"attackers sent {sent / 1e6:.1f} MB; hub CPU {cpu:.1f} s\n"
          f"  time to 250: {', '.join(f'{a:.2f}' for a in acks)} s; to the sink: "
          f"{', '.join(f'{d:.2f}' for d in deliveries)} s (without the attack: "
          f"{quiet_ack:.2f} s and {quiet_delivery:.2f} s)\n"
          f"  hub RSS: {baseline['VmRSS'] // 1024} MiB at start, "
          f"{with_idle['VmRSS'] // 1024} MiB with {IDLE} idle, "
          f"{during['VmRSS'] // 1024} MiB under attack (peak {during['VmHWM'] // 1024} MiB), "
          f"{after['VmRSS'] // 1024} MiB after")


