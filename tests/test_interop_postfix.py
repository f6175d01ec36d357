"""Interop with real MTAs nobody here wrote: Postfix as INTERNET01 on both sides of
EDGE01 (scenarios F and E), and swaks as a scripted client. Skipped with the reason
where Postfix or swaks is missing; CI installs them and makes a skip a failure."""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from org_files import internet_org
from postfix import REQUIRE, Postfix, require_postfix
from process_lab import ProcessLab, step_rows

from exchange_emu.directory import load_organization
from exchange_emu.mailbox.report import locate_mailbox, open_store, read_listing

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[ProcessLab, Postfix, dict[str, int], Path]]:
    require_postfix()
    config, ports = internet_org(tmp_path)
    postfix = Postfix(ports["INTERNET01"], {
        "contoso.test": f"127.0.0.1:{ports['EDGE01']}",
        "fabrikam.test": "127.0.0.1:1",  # nowhere: Postfix keeps fabrikam.test mail queued
    }).start()
    process_lab = ProcessLab(config, tmp_path)
    try:
        yield process_lab, postfix, ports, config
    finally:
        process_lab.stop_all()
        postfix.stop()


def inbox(config: Path, address: str) -> list[str]:
    location = locate_mailbox(load_organization(config), address)
    engine = open_store(location)
    try:
        _, items = read_listing(engine, location)
    finally:
        engine.dispose()
    return [item.message_id for item in items if item.folder == "Inbox"]


def wait_in_inbox(config: Path, address: str, mid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while mid not in inbox(config, address):
        assert time.monotonic() < deadline, f"{mid} never reached {address}'s Inbox"
        time.sleep(0.2)


def via_postfix(ports: dict[str, int], mid: str, to: str = "alice@contoso.test") -> None:
    with smtplib.SMTP("127.0.0.1", ports["INTERNET01"], timeout=10) as client:
        client.sendmail("erin@fabrikam.test", [to],
                        f"Message-ID: {mid}\r\nSubject: from Postfix\r\n\r\nhi\r\n".encode())


def test_postfix_to_edge_is_held_until_the_next_hops_have_it(lab):
    """Scenario F with a real Internet MTA: EDGE01 holds Postfix's 250 until HUB01 has
    delivered to MBX01 and said so; Postfix's own log shows the wait, and EDGE01's
    tracking log shows F.1–F.8."""
    process_lab, postfix, ports, config = lab
    process_lab.start("MBX01", "HUB01", "EDGE01")
    mid = "<f-postfix@fabrikam.test>"
    via_postfix(ports, mid)
    wait_in_inbox(config, "alice@contoso.test", mid)
    sent = postfix.wait_for(rf"to=<alice@contoso.test>, relay=127.0.0.1\[127.0.0.1\]:"
                            rf"{ports['EDGE01']}.*status=sent \(250 2\.6\.0")
    transmission = float(re.search(r"delays=[^/]+/[^/]+/[^/]+/([0-9.]+)", sent[0]).group(1))
    acked = process_lab.wait_for("EDGE01", lambda e: e.message_id == mid and "F.7" in e.steps)
    assert acked[0].custom_data["delayed_ack"] == "Delivered"
    held = acked[0].custom_data["tarpit"]  # e.g. 0.00:00:00.412
    held_seconds = float(held.rsplit(":", 1)[1])
    assert held_seconds > 0
    assert transmission >= held_seconds  # Postfix waited at least as long as EDGE01 held
    steps = [s for _, s in step_rows(process_lab.events("EDGE01"), mid)]
    f_steps = [s for s in steps if s.startswith("F.")]
    assert f_steps == ["F.1", "F.2", "F.3", "F.4", "F.5", "F.6", "F.7", "F.8"]


def test_hub_to_edge_to_postfix_follows_e_and_postfix_holds_it(lab):
    """Scenario E with a real MTA as the next hop: EDGE01 sends without XSHADOW (Postfix
    does not offer it), deletes, prepares the discard for HUB01; Postfix has the message."""
    process_lab, postfix, ports, _config = lab
    process_lab.start("MBX01", "HUB01", "EDGE01")
    mid = "<e-postfix@contoso.test>"
    with smtplib.SMTP("127.0.0.1", ports["HUB01"], timeout=60) as client:
        client.sendmail("alice@contoso.test", ["erin@fabrikam.test"],
                        f"Message-ID: {mid}\r\nSubject: to Postfix\r\n\r\nhi\r\n".encode())
    process_lab.wait_for("EDGE01", lambda e: e.message_id == mid and e.step == "E.6")
    steps = [s for _, s in step_rows(process_lab.events("EDGE01"), mid)]
    assert steps[:7] == ["D.4.2", "E.1", "E.2", "E.3", "E.4", "E.5", "E.6"]
    postfix.wait_for(r"from=<alice@contoso.test>")
    assert "erin@fabrikam.test" in postfix.queue()  # held by Postfix (its next hop is down)


def test_edge_killed_while_holding_postfix_message(lab):
    """EDGE01 dies before it acknowledged Postfix: Postfix never got 250, so it retries;
    the message arrives, once (duplicate detection at the mailbox)."""
    process_lab, postfix, ports, config = lab
    process_lab.start("HUB01", "EDGE01")  # MBX01 down: HUB01 cannot finish, EDGE01 holds
    mid = "<killed-edge@fabrikam.test>"
    via_postfix(ports, mid)
    process_lab.wait_for("EDGE01", lambda e: e.message_id == mid and "F.4" in e.steps)
    process_lab.wait_for("EDGE01", lambda e: e.message_id == mid and "D.4.3" in e.steps)
    process_lab.kill("EDGE01")
    postfix.wait_for(r"to=<alice@contoso.test>.*status=deferred")
    process_lab.start("MBX01", "EDGE01")
    postfix.flush()
    wait_in_inbox(config, "alice@contoso.test", mid, timeout=90)
    postfix.wait_for(r"to=<alice@contoso.test>.*status=sent")
    # Two copies reached HUB01 (the one EDGE01 relayed before it died, and Postfix's
    # retry); the mailbox kept one and dropped the other.
    process_lab.wait_for("HUB01", lambda e: e.message_id == mid
                         and e.event_id == "DUPLICATEDELIVER")
    assert inbox(config, "alice@contoso.test").count(mid) == 1


def test_swaks_as_a_foreign_client(tmp_path):
    """swaks, a scripted SMTP client, submits through EDGE01 to alice."""
    if shutil.which("swaks") is None:
        reason = "swaks is not installed (apt-get install swaks)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{reason}; {REQUIRE}=1", pytrace=False)
        pytest.skip(reason)
    config, ports = internet_org(tmp_path)
    process_lab = ProcessLab(config, tmp_path)
    try:
        process_lab.start("MBX01", "HUB01", "EDGE01")
        result = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{ports['EDGE01']}", "--from",
             "erin@fabrikam.test", "--to", "alice@contoso.test", "--timeout", "60"],
            capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        accepted = re.search(r"<-  250 2\.6\.0 (<[^>]+>) \[InternalId=\d+, "
                             r"Hostname=edge01\.contoso\.test\] Queued mail for delivery",
                             result.stdout)
        assert accepted, result.stdout
        wait_in_inbox(config, "alice@contoso.test", accepted.group(1))
    finally:
        process_lab.stop_all()
