"""Shadow redundancy between real transport server processes over loopback
(scenario D, and E at the Internet boundary), including killed primaries."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from org_files import chain_org
from process_lab import ProcessLab, step_rows
from sink import Sink

pytestmark = pytest.mark.integration


def submit(port: int, message_id: str, to: str = "erin@fabrikam.test") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("alice@contoso.test", [to],
                        f"Message-ID: {message_id}\r\nSubject: shadow test\r\n\r\nhello\r\n")


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator:
    labs: list[tuple[ProcessLab, Sink | None]] = []

    def make(**options) -> tuple[ProcessLab, dict[str, int]]:
        config, ports = chain_org(tmp_path, **options)
        lab = ProcessLab(config, tmp_path)
        labs.append((lab, None))
        return lab, ports

    yield make
    for lab, _ in labs:
        lab.stop_all()


def test_hub_to_hub_to_edge_follows_d1_to_d7(lab_factory):
    """HUB01 → HUB02 → EDGE01 → sink: each shadowed hop shows D.1–D.7 in order, on
    the right servers, and the last hop (to a server without XSHADOW) shows E."""
    lab, ports = lab_factory()
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("EDGE01", "HUB02", "HUB01")
        submit(ports["HUB01"], "<d-chain@contoso.test>")
        sink.wait_for(1)
        # HUB01 deletes its shadow once HUB02 says so (D.7), HUB02 once EDGE01 does.
        lab.wait_for("HUB01", lambda e: "D.7" in e.steps)
        lab.wait_for("HUB02", lambda e: "D.7" in e.steps)
        lab.wait_for("EDGE01", lambda e: e.step == "D.6")
        hub01, hub02, edge01 = (lab.events(n) for n in ("HUB01", "HUB02", "EDGE01"))
    mid = "<d-chain@contoso.test>"
    # HUB01 took the message from smtplib, a peer without XSHADOW: scenario F, whose
    # F.5 is scenario D towards HUB02; the held 250 goes out as the discard comes back
    # (F.6, F.7), and deleting the shadow copy (D.7) deletes the message (F.8).
    assert step_rows(hub01, mid) == [
        ("RECEIVE", "F.1"), ("RECEIVE", "F.2"), ("RECEIVE", "F.3"), ("RECEIVE", "F.4"),
        ("SEND", "F.5"), ("SEND", "D.1"), ("SEND", "D.2"), ("SEND", "D.3"), ("SEND", "D.4.1"),
        ("HAREDIRECT", "D.4.3"), ("HADISCARD", "D.5"), ("HADISCARD", "F.6"),
        ("RECEIVE", "F.7"), ("HADISCARD", "D.7"), ("HADISCARD", "F.8"),
    ]
    ack = next(e for e in hub01 if e.message_id == mid and "F.7" in e.steps)
    assert ack.custom_data["delayed_ack"] == "Delivered"
    hub02_rows = step_rows(hub02, mid)
    assert hub02_rows[:7] == [
        ("RECEIVE", "D.4.2"),
        ("SEND", "D.1"), ("SEND", "D.2"), ("SEND", "D.3"), ("SEND", "D.4.1"),
        ("HAREDIRECT", "D.4.3"), ("NOTIFYSHADOW", "D.4.4"),
    ]
    # Then, in an order set by the timers: HUB02 drops its shadow of EDGE01's copy
    # (D.5, D.7) and hands HUB01 the discard it prepared at D.4.4 (D.6).
    assert sorted(hub02_rows[7:]) == [
        ("HADISCARD", "D.5"), ("HADISCARD", "D.7"), ("NOTIFYSHADOW", "D.6")]
    assert hub02_rows.index(("HADISCARD", "D.5")) < hub02_rows.index(("HADISCARD", "D.7"))
    assert step_rows(edge01, mid) == [
        ("RECEIVE", "D.4.2"),
        ("SEND", "E.1"), ("SEND", "E.2"), ("SEND", "E.3"), ("SEND", "E.4"), ("SEND", "E.5"),
        ("NOTIFYSHADOW", "E.6"), ("NOTIFYSHADOW", "D.6"),
    ]
    # The primary's D.6 row names the message like its other rows for it.
    for primary in (hub02, edge01):
        received = next(e for e in primary if e.message_id == mid and e.event_id == "RECEIVE")
        handed_out = next(e for e in primary if e.message_id == mid and e.step == "D.6")
        assert (handed_out.internal_message_id, handed_out.sender_address,
                handed_out.message_subject) == (
            received.internal_message_id, "alice@contoso.test", "shadow test")

    def at(events, step):
        return next(e.date_time for e in events if e.message_id == mid and step in e.steps)

    # Across servers, cause precedes effect: the primary records the shadow before the
    # holder's 250 arrives; it hands the discard out after the query and before deletion.
    assert at(hub02, "D.4.2") <= at(hub01, "D.4.3")
    assert at(hub01, "D.5") <= at(hub02, "D.6") <= at(hub01, "D.7")
    assert at(edge01, "D.4.2") <= at(hub02, "D.4.3")
    assert at(hub02, "D.5") <= at(edge01, "D.6") <= at(hub02, "D.7")
    # The next hop's shadow is discarded only after the message left it for good.
    assert at(edge01, "E.4") <= at(edge01, "D.6")
    send = next(e for e in hub01 if e.message_id == mid and e.event_id == "SEND")
    assert send.server_hostname == "hub01.contoso.test"
    assert send.custom_data["destination"] == "hub02.contoso.test"
    # The holder's rows are stamped when things happened: the 250 before the shadow
    # copy, the discard query before the primary answered it.
    assert at(hub01, "D.4.1") <= at(hub01, "D.4.3") <= at(hub01, "D.5")
    assert len(sink.messages) == 1


def test_primary_killed_after_250_holder_resubmits_exactly_once(lab_factory):
    """HUB02 acknowledges, then dies before relaying: HUB01's heartbeats fail, it
    takes ownership at the retry count, reroutes through HUB03, and the message
    reaches the sink exactly once."""
    lab, ports = lab_factory(internet_sources=("HUB02", "HUB03"), retry_count=2)
    mid = "<killed-primary@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("HUB02", "HUB03", "HUB01")  # EDGE01 is down: HUB02 cannot relay yet
        submit(ports["HUB01"], mid)
        lab.wait_for("HUB01", lambda e: e.step == "D.4.3" and e.message_id == mid)
        lab.kill("HUB02")
        lab.start("EDGE01")
        resubmit = lab.wait_for("HUB01", lambda e: e.event_id == "RESUBMIT", timeout=30)
        assert resubmit[0].custom_data["reason"] == "heartbeat retry count reached"
        sink.wait_for(1)
        lab.wait_for("HUB03", lambda e: e.event_id == "SEND" and e.message_id == mid)
        # The takeover copy is shadowed on HUB03 and discarded when HUB03 is done.
        lab.wait_for("HUB01", lambda e: e.step == "D.7" and e.message_id == mid)
        assert [m.data.count(mid.encode()) for m in sink.messages] == [1]


def test_primary_back_with_wiped_database_gets_immediate_resubmission(lab_factory):
    """HUB02 comes back with a new queue database: its XSHADOW reply carries a new
    database id, and HUB01 resubmits its whole shadow queue for HUB02 at once."""
    lab, ports = lab_factory(retry_count=1000)  # only the database id can trigger it
    mid = "<wiped-primary@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("HUB02", "HUB01")
        submit(ports["HUB01"], mid)
        lab.wait_for("HUB01", lambda e: e.step == "D.4.3" and e.message_id == mid)
        lab.kill("HUB02")
        lab.wipe("HUB02")
        lab.start("EDGE01", "HUB02")
        resubmit = lab.wait_for("HUB01", lambda e: e.event_id == "RESUBMIT", timeout=20)
        assert resubmit[0].custom_data["reason"] == "primary database id changed"
        sink.wait_for(1)
        assert len(sink.messages) == 1


def test_primary_back_with_intact_database_after_takeover_gives_the_documented_duplicate(
        lab_factory):
    """HUB01 took ownership and delivered through HUB03; then HUB02 returns with its
    database intact and delivers its own copy too: a foreign recipient gets the
    message twice, and the tracking logs show why (protocol.md §5)."""
    lab, ports = lab_factory(internet_sources=("HUB02", "HUB03"), retry_count=2)
    mid = "<duplicate@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("HUB02", "HUB03", "HUB01")
        submit(ports["HUB01"], mid)
        lab.wait_for("HUB01", lambda e: e.step == "D.4.3" and e.message_id == mid)
        lab.kill("HUB02")
        lab.start("EDGE01")
        lab.wait_for("HUB01", lambda e: e.event_id == "RESUBMIT")
        sink.wait_for(1)
        lab.start("HUB02")
        sink.wait_for(2)
        sends = lab.wait_for("HUB02", lambda e: e.event_id == "SEND" and e.message_id == mid)
        assert sends
    assert [m.data.count(mid.encode()) for m in sink.messages] == [1, 1]


def test_message_to_a_server_without_xshadow_follows_e1_to_e6(lab_factory):
    """HUB02 → EDGE01 → aiosmtpd: EDGE01 sends without shadowing, deletes the message
    and prepares the discard notification for HUB02 (E.1–E.6)."""
    lab, ports = lab_factory()
    mid = "<e-path@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("EDGE01", "HUB02")
        submit(ports["HUB02"], mid)
        sink.wait_for(1)
        lab.wait_for("EDGE01", lambda e: e.step == "E.6")
        edge01 = lab.events("EDGE01")
    assert step_rows(edge01, mid)[:7] == [
        ("RECEIVE", "D.4.2"),
        ("SEND", "E.1"), ("SEND", "E.2"), ("SEND", "E.3"), ("SEND", "E.4"), ("SEND", "E.5"),
        ("NOTIFYSHADOW", "E.6"),
    ]
    send = next(e for e in edge01 if e.event_id == "SEND")
    assert send.recipient_status[0].startswith("250 2.0.0 OK queued by the sink")
