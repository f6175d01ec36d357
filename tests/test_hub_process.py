"""``twistd exchange-hub`` as a real process on real loopback sockets."""

from __future__ import annotations

import re
import signal
import smtplib
import socket
import time

import pytest
import sqlalchemy as sa

from server_process import TWISTD, ServerProcess, free_ports, run_to_exit, small_org

pytestmark = pytest.mark.integration


def test_hub_starts_listens_and_speaks_exchange(tmp_path):
    (port,) = free_ports(1)
    config = small_org(tmp_path, port)
    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            code, ehlo = client.ehlo("hub02.contoso.test")
            assert code == 250
            assert ehlo.decode().splitlines()[-1] == "XSHADOW"
        assert "HUB01: receive connector 'Default HUB01' listening on" in hub.output
    finally:
        # twistd ends by re-raising the signal it was stopped with.
        assert hub.stop() in (0, -15)


def _catches(pid: int, *signals: int) -> bool:
    """Has process ``pid`` handlers for all these signals (``SigCgt`` in /proc)?"""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status
                      if line.startswith("SigCgt:"))
    return all(caught & (1 << (number - 1)) for number in signals)


def test_a_second_stop_signal_while_stopping_is_no_traceback(tmp_path):
    """Ctrl-C on a lab reaches every server, and then the supervisor sends SIGTERM: the
    second signal, while the server already stops, is ignored without a traceback (it
    used to call reactor.stop again: ReactorNotRunning), and the server stops cleanly."""
    (port,) = free_ports(1)
    config = small_org(tmp_path, port)
    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    assert hub.proc is not None
    deadline = time.monotonic() + 10
    while not _catches(hub.pid, signal.SIGINT, signal.SIGTERM):  # the reactor is running
        assert time.monotonic() < deadline, "twistd never caught SIGINT and SIGTERM"
        time.sleep(0.02)
    hub.proc.send_signal(signal.SIGINT)
    hub.proc.send_signal(signal.SIGTERM)
    status = hub.proc.wait(30)
    deadline = time.monotonic() + 10  # the reader thread takes the last lines
    while "Server Shut Down." not in hub.output and time.monotonic() < deadline:
        time.sleep(0.02)
    # Either signal may be handled first: the kernel can hand SIGINT to another thread of
    # the process a moment after the main thread took SIGTERM. The first one stops the
    # server; the other is ignored.
    stopped_by = re.findall(r"Received (SIGINT|SIGTERM), shutting down\.", hub.output)
    ignored = re.findall(r"Received (SIGINT|SIGTERM) while already stopping: ignored",
                         hub.output)
    assert len(stopped_by) == 1, (status, hub.output[-3000:])
    assert ignored == [{"SIGINT": "SIGTERM", "SIGTERM": "SIGINT"}[stopped_by[0]]], \
        hub.output[-3000:]
    assert "Traceback" not in hub.output, hub.output
    assert "ReactorNotRunning" not in hub.output, hub.output
    assert "Main loop terminated." in hub.output
    assert status in (0, -getattr(signal, stopped_by[0]))


def test_lab_config_hub01_listens_on_2525(tmp_path):
    """The README's example: the default lab's HUB01 on 127.0.0.1:2525."""
    from pathlib import Path

    lab = Path(__file__).resolve().parent.parent / "etc" / "lab.toml"
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 2525))
    except OSError:
        pytest.skip("port 2525 is in use on this machine (a lab is running?)")
    finally:
        probe.close()
    hub = ServerProcess("hub", lab, "HUB01", tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", 2525), timeout=10) as s:
            assert s.recv(200).startswith(b"220 hub01.contoso.test Microsoft ESMTP MAIL Service")
    finally:
        hub.stop()
    assert (tmp_path / "var" / "HUB01" / "queue.db").exists()


def test_busy_port_ends_startup_with_one_line_error(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        config = small_org(tmp_path, port)
        result = run_to_exit(
            [TWISTD, "-n", "--pidfile=", "exchange-hub", "--config", str(config),
             "--server", "HUB01"], tmp_path)
    finally:
        blocker.close()
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_server_name_ends_startup_with_one_line_error(tmp_path):
    (port,) = free_ports(1)
    config = small_org(tmp_path, port)
    result = run_to_exit(
        [TWISTD, "-n", "--pidfile=", "exchange-hub", "--config", str(config),
         "--server", "HUB9"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"exchange-hub: error: no server named 'HUB9' in {config} (known: HUB01)"]


def test_malformed_config_ends_startup_with_one_line_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[organization]\nname = "Contoso"\n[[servers]]\nname = 5\n')
    result = run_to_exit(
        [TWISTD, "-n", "--pidfile=", "exchange-hub", "--config", str(config),
         "--server", "HUB01"], tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"exchange-hub: error: {config}: ")


def _message_rows(url: str, message_id: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM messages WHERE internet_message_id = :m"),
                {"m": message_id},
            ).scalar_one()
    finally:
        engine.dispose()


def test_sigkill_right_after_250_loses_nothing(tmp_path, queue_db):
    """Durable before acknowledged: the 250 2.6.0 goes out after the commit, so a
    SIGKILL at once after it still finds the message in the queue database."""
    (port,) = free_ports(1)
    config = small_org(tmp_path, port, database_url=queue_db.url)
    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    message_ids = [f"<kill-{i}@contoso.test>" for i in range(5)]
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("app.contoso.test")
            # No send connector leads to fabrikam.test: the messages wait in the
            # Unreachable queue, so they must still be in the database afterwards.
            for message_id in message_ids:
                client.sendmail("app@contoso.test", ["erin@fabrikam.test"],
                                f"Message-ID: {message_id}\r\nSubject: k\r\n\r\nx\r\n")
            # The last reply has arrived: kill before anything else can happen.
            hub.kill()
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.kill()
    restarted = ServerProcess("hub", config, "HUB01", tmp_path).start()
    restarted.stop()
    for message_id in message_ids:
        assert _message_rows(queue_db.url, message_id) == 1


def test_quoted_local_part_with_semicolon_is_accepted_and_tracked(tmp_path):
    """A recipient ``"a;b"@…`` (RFC 5321 quoted local part) gets the 250 like any other
    and its RECEIVE row names it whole: the tracking row used to raise after the commit,
    so the sender got a 451 for a message the hub had queued (and would send again)."""
    from exchange_emu.logs import read_tracking_logs

    (port,) = free_ports(1)
    config = small_org(tmp_path, port)
    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    recipients = ['"a;b"@fabrikam.test', "erin@fabrikam.test"]
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            refused = client.sendmail("app@contoso.test", recipients,
                                      "Message-ID: <semi@contoso.test>\r\nSubject: q\r\n\r\nx\r\n")
        assert refused == {}
    finally:
        hub.stop()
    assert "Traceback" not in hub.output
    rows = [e for e in read_tracking_logs(
        tmp_path / "var" / "HUB01" / "TransportRoles" / "Logs" / "MessageTracking")
        if e.event_id == "RECEIVE" and e.message_id == "<semi@contoso.test>"]
    # F.4 (queued) and F.7 (the 250 sent: delayed acknowledgement skipped, no route)
    assert [(e.step, e.recipient_address) for e in rows] == [
        ("F.4", tuple(recipients)), ("F.7", tuple(recipients))]
