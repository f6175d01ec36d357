"""Scenarios A, B and C between real mailbox and hub processes over loopback:
a client's message from alice (MBX01, Site-A) to carol (MBX02, Site-B)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from org_files import two_site_org
from process_lab import ProcessLab, step_rows

from exchange_emu.directory import load_organization
from exchange_emu.mailbox.report import locate_mailbox, open_store, read_listing

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "exchange-emu")


def send(config: Path, subject: str, to: tuple[str, ...] = ("carol@contoso.test",)) -> str:
    """``exchange-emu send`` (scenario A); the Message-ID it was given."""
    result = subprocess.run(
        [EXE, "send", "--config", str(config), "--from", "alice@contoso.test", "--to", *to,
         "--subject", subject, "--body", "Hello"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"(<[^>]+>)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def folder(config: Path, address: str, name: str) -> list[str]:
    """The Message-IDs in one folder of a mailbox, read from its mailbox server's store."""
    location = locate_mailbox(load_organization(config), address)
    engine = open_store(location)
    try:
        _, items = read_listing(engine, location)
    finally:
        engine.dispose()
    return [item.message_id for item in items if item.folder == name]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[ProcessLab, Path]]:
    config, _ = two_site_org(tmp_path)
    process_lab = ProcessLab(config, tmp_path)
    yield process_lab, config
    process_lab.stop_all()


def wait_in_folder(lab: ProcessLab, config: Path, address: str, name: str, mid: str,
                   count: int = 1) -> None:
    import time

    deadline = time.monotonic() + 30
    while folder(config, address, name).count(mid) < count:
        assert time.monotonic() < deadline, f"{mid} not in {address}'s {name}\n{lab.output()}"
        time.sleep(0.1)


def test_alice_to_carol_across_sites_follows_a_b_d_c(lab):
    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB03", "HUB01", "HUB02")
    mid = send(config, "Across sites")
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    wait_in_folder(process_lab, config, "alice@contoso.test", "Sent Items", mid)
    assert mid not in folder(config, "alice@contoso.test", "Outbox")
    # The Site-A hub that took it holds a shadow for HUB03 until HUB03 delivered (C.4).
    taken = process_lab.wait_for("MBX01", lambda e: e.message_id == mid and e.step == "B.1")
    taker = taken[0].custom_data["hub"]
    process_lab.wait_for(taker, lambda e: e.message_id == mid and "C.4" in e.steps)
    process_lab.wait_for("MBX01", lambda e: e.message_id == mid and e.step == "B.4")
    mbx01 = step_rows(process_lab.events("MBX01"), mid)
    hub = step_rows(process_lab.events(taker), mid)
    hub03 = step_rows(process_lab.events("HUB03"), mid)
    assert [s for _, s in mbx01] == ["A", "B.1", "B.4"]
    assert hub[:7] == [("RECEIVE", "B.2"), ("SEND", "B.3"), ("SEND", "D.1"), ("SEND", "D.2"),
                       ("SEND", "D.3"), ("SEND", "D.4.1"), ("HAREDIRECT", "D.4.3")]
    assert ("NOTIFYMAPI", "B.4") in hub and ("NOTIFYMAPI", "B.5") in hub
    assert hub[-3:] == [("HADISCARD", "D.5"), ("HADISCARD", "D.7"), ("HADISCARD", "C.4")]
    assert hub03[:4] == [("RECEIVE", "D.4.2"), ("DELIVER", "C.1"), ("DELIVER", "C.2"),
                         ("NOTIFYSHADOW", "C.3")]
    assert ("NOTIFYSHADOW", "D.6") in hub03
    assert folder(config, "carol@contoso.test", "Inbox").count(mid) == 1


def test_hub_killed_between_b2_and_b4_leaves_the_item_in_the_outbox(lab):
    """The hub that took the item dies before the next hop had it: the item is still in
    the Outbox, the Mail Submission service hands it to the other hub, and carol gets
    it once."""
    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB01", "HUB02")  # HUB03 down: no way to Site-B
    mid = send(config, "Hub dies")
    taken = process_lab.wait_for("MBX01", lambda e: e.message_id == mid and e.step == "B.1")
    taker = taken[0].custom_data["hub"]
    other = "HUB02" if taker == "HUB01" else "HUB01"
    assert mid in folder(config, "alice@contoso.test", "Outbox")
    process_lab.kill(taker)
    process_lab.wait_for(other, lambda e: e.message_id == mid and e.step == "B.2")
    process_lab.start("HUB03")
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    wait_in_folder(process_lab, config, "alice@contoso.test", "Sent Items", mid)
    assert folder(config, "carol@contoso.test", "Inbox").count(mid) == 1


def test_receiving_hub_killed_after_c1_before_c3_gives_one_copy(lab):
    """HUB03 delivers to carol and dies before it records it (no discard for the holder):
    the holder resubmits (HUB03 is back with a new queue database), HUB03 delivers again,
    and duplicate detection keeps carol at one copy (DUPLICATEDELIVER)."""
    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB01", "HUB02")
    process_lab.start("HUB03", env={"EXCHANGE_EMU_CRASH_AT": "C.1"})
    mid = send(config, "Crash after C.1")
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    process = process_lab.processes.pop("HUB03")
    assert process.proc.wait(20) == -9  # it killed itself right after C.1
    process_lab.wipe("HUB03")
    process_lab.start("HUB03")
    duplicate = process_lab.wait_for("HUB03", lambda e: e.event_id == "DUPLICATEDELIVER")
    assert duplicate[0].message_id == mid
    assert folder(config, "carol@contoso.test", "Inbox").count(mid) == 1
    taker = next(n for n in ("HUB01", "HUB02")
                 if any(e.event_id == "RESUBMIT" for e in process_lab.events(n)))
    assert taker


def test_lossy_failover_redelivers_from_the_dumpster_once(lab):
    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB03", "HUB01", "HUB02")
    mid = send(config, "Before the failover")
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    result = subprocess.run([EXE, "failover", "--config", str(config), "DB02", "--lossy",
                             "--lost-seconds", "120"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 items lost" in result.stdout
    process_lab.wait_for("HUB03", lambda e: e.event_id == "RESUBMIT" and e.message_id == mid)
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    assert folder(config, "carol@contoso.test", "Inbox").count(mid) == 1


def test_client_submission_connector_authenticates_and_never_shadows(lab):
    """Scenario A over SMTP: alice authenticates on HUB01's Client connector (smtplib
    as the mail client) inside TLS, may send only as herself, and the hub logs that no
    shadow exists for this leg; the message then reaches carol's Inbox."""
    import smtplib
    import ssl

    from exchange_emu.security import ensure_certificates

    process_lab, config = lab
    ensure_certificates(process_lab.organization)  # AUTH only inside TLS
    process_lab.start("MBX01", "MBX02", "HUB03", "HUB01", "HUB02")
    port = next(c.bind.port for c in process_lab.organization.server("HUB01").receive_connectors
                if c.usage == "Client")
    tls = ssl.create_default_context(
        cafile=str(process_lab.organization.tls.ca_certificate))  # type: ignore[union-attr]
    tls.check_hostname = False  # dialled as 127.0.0.1; the chain is still verified
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("laptop.contoso.test")
        assert not client.has_extn("auth")
        client.starttls(context=tls)
        client.ehlo("laptop.contoso.test")
        assert "xshadow" not in client.esmtp_features
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice@contoso.test", "wrong")
        client.login("alice@contoso.test", "P@ssw0rd")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("bob@contoso.test", ["carol@contoso.test"], b"Subject: x\r\n\r\nx")
        client.sendmail("alice@contoso.test", ["carol@contoso.test"],
                        b"Message-ID: <client-587@contoso.test>\r\nSubject: 587\r\n\r\nhi\r\n")
    mid = "<client-587@contoso.test>"
    received = process_lab.wait_for("HUB01", lambda e: e.message_id == mid
                                    and e.event_id == "RECEIVE")
    assert received[0].step == "A" and received[0].custom_data["shadow"] == "none"
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)


@pytest.mark.parametrize("with_hub02", [True, False])
def test_hub_and_mailbox_on_one_server_keep_the_shadow_off_the_box(tmp_path, with_hub02):
    """EX01 is hub and mailbox server. Its Mail Submission service prefers HUB02, and its
    hub delivers to its own database through HUB02, so the copy that protects the message
    is never on the box that holds it. Alone in the site, EX01 does both itself."""
    import smtplib

    from org_files import mixed_role_org

    config, ports = mixed_role_org(tmp_path, with_hub02=with_hub02)
    process_lab = ProcessLab(config, tmp_path)
    try:
        process_lab.start("EX01", *(["HUB02"] if with_hub02 else []))
        result = subprocess.run(
            [EXE, "send", "--config", str(config), "--from", "alice@contoso.test", "--to",
             "bob@contoso.test", "--subject", "same box"], capture_output=True, text=True,
            timeout=60)
        assert result.returncode == 0, result.stderr
        mid = re.search(r"(<[^>]+>)", result.stdout).group(1)
        submitted = process_lab.wait_for("EX01", lambda e: e.message_id == mid
                                         and e.step == "B.1")
        expected_hub = "HUB02" if with_hub02 else "EX01"
        assert submitted[0].custom_data["hub"] == expected_hub
        process_lab.wait_for(expected_hub, lambda e: e.message_id == mid
                             and e.event_id == "DELIVER")
        wait_in_folder(process_lab, config, "bob@contoso.test", "Inbox", mid)

        with smtplib.SMTP("127.0.0.1", ports["EX01"], timeout=10) as client:
            client.sendmail("app@contoso.test", ["bob@contoso.test"],
                            b"Message-ID: <into-ex01@contoso.test>\r\nSubject: in\r\n\r\nx\r\n")
        mid = "<into-ex01@contoso.test>"
        process_lab.wait_for(expected_hub, lambda e: e.message_id == mid
                             and e.event_id == "DELIVER")
        if with_hub02:  # EX01 relayed it to HUB02 and kept the shadow copy
            sent = process_lab.wait_for("EX01", lambda e: e.message_id == mid
                                        and e.event_id == "HAREDIRECT")
            assert sent[0].custom_data["primary"] == "HUB02"
        wait_in_folder(process_lab, config, "bob@contoso.test", "Inbox", mid)
    finally:
        process_lab.stop_all()


def test_replication_report_empties_the_dumpster(lab):
    """Items leave the transport dumpster once the database's copies have them."""
    import sqlalchemy as sa

    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB03", "HUB01", "HUB02")
    mid = send(config, "Replicated")
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
    url = process_lab.organization.server("HUB03").database_url
    engine = sa.create_engine(url)

    def dumpster() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM dumpster")).scalar_one()

    try:
        # The hub records the dumpster copy after the delivery it saw succeed: wait for it.
        import time

        deadline = time.monotonic() + 30
        while dumpster() != 1:
            assert time.monotonic() < deadline, f"dumpster holds {dumpster()}, not 1"
            time.sleep(0.05)
        result = subprocess.run([EXE, "replicated", "--config", str(config), "DB02"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "1 hubs told" in result.stdout
        assert dumpster() == 0
    finally:
        engine.dispose()


def test_um_voice_mail_is_held_then_delivered(lab, tmp_path):
    """A UM server's submission (plain SMTP, no XSHADOW) is an F entry point: the hub
    holds its 250 until the message is safe at the next hop, then carol has it."""
    import wave

    process_lab, config = lab
    process_lab.start("MBX01", "MBX02", "HUB03", "HUB01", "HUB02")
    audio = tmp_path / "message.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    result = subprocess.run([EXE, "um-submit", "--config", str(config), "--to",
                             "carol@contoso.test", "--wav", str(audio), "--duration", "1",
                             "--hub", "HUB01"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mid = re.search(r"(<[^>]+>)", result.stdout).group(1)
    acked = process_lab.wait_for("HUB01", lambda e: e.message_id == mid and "F.7" in e.steps)
    assert acked[0].custom_data["delayed_ack"] == "Delivered"
    wait_in_folder(process_lab, config, "carol@contoso.test", "Inbox", mid)
