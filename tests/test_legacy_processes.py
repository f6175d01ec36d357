"""The legacy role between real processes: an Exchange 2003 bridgehead (LEGACY01) and a
2010 hub, both ways — no XSHADOW, XEXCH50 from the 2003 server, delayed acknowledgement
at the 2010 hub for mail from the legacy server (scenario F), E towards it."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from org_files import legacy_org
from process_lab import ProcessLab, step_rows

pytestmark = pytest.mark.integration


def test_legacy_2003_and_hub_both_ways(tmp_path: Path):
    config, ports = legacy_org(tmp_path)
    lab = ProcessLab(config, tmp_path)
    try:
        lab.start("MBX01", "HUB01", "LEGACY01")
        with smtplib.SMTP(timeout=10) as client:
            _, banner = client.connect("127.0.0.1", ports["LEGACY01"])
            features = client.ehlo("hub01.contoso.test")[1].decode()
        assert b"Microsoft ESMTP MAIL Service, Version: 6.0." in banner
        assert "x-exps" in features.lower() and "X-LINK2STATE" in features
        assert "XEXCH50" in features and "XSHADOW" not in features

        # HUB01 -> LEGACY01: scenario E, then LEGACY01's own mailbox.
        with smtplib.SMTP("127.0.0.1", ports["HUB01"], timeout=60) as client:
            client.sendmail("alice@contoso.test", ["dave@legacy.contoso.test"],
                            b"Message-ID: <to-legacy@contoso.test>\r\nSubject: e\r\n\r\nx\r\n")
        lab.wait_for("LEGACY01", lambda e: e.event_id == "DELIVER"
                     and e.message_id == "<to-legacy@contoso.test>")
        hub_steps = [s for _, s in step_rows(lab.events("HUB01"), "<to-legacy@contoso.test>")]
        e_steps = [s for s in hub_steps if s.startswith("E.")]
        assert e_steps[:5] == ["E.1", "E.2", "E.3", "E.4", "E.5"]
        mailbox = tmp_path / "var" / "LEGACY01" / "Mailboxes" / "dave@legacy.contoso.test"
        assert len(list(mailbox.glob("*.eml"))) == 1

        # LEGACY01 -> HUB01 -> MBX01: XEXCH50 from the 2003 server; delayed ack at HUB01.
        with smtplib.SMTP("127.0.0.1", ports["LEGACY01"], timeout=60) as client:
            client.sendmail("dave@legacy.contoso.test", ["alice@contoso.test"],
                            b"Message-ID: <from-legacy@contoso.test>\r\nSubject: f\r\n\r\nx\r\n")
        acked = lab.wait_for("HUB01", lambda e: e.message_id == "<from-legacy@contoso.test>"
                             and "F.7" in e.steps)
        assert acked[0].custom_data["delayed_ack"] == "Delivered"
        received = tmp_path / "var" / "HUB01" / "TransportRoles" / "Logs" / "ProtocolLog"
        deadline = time.monotonic() + 10
        while not any("XEXCH50 " in p.read_text() for p in received.rglob("RECV*.LOG")):
            assert time.monotonic() < deadline, "HUB01 never saw XEXCH50"
            time.sleep(0.1)
    finally:
        lab.stop_all()
