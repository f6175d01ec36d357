"""Regression (found by the crash matrix, docs/crash-matrix.md): a hub whose mailbox
delivery queue went to Retry while the mailbox server was down must deliver as soon as
the store driver link is back — not at its next retry time, which after the glitch and
transient retries is OutboundConnectionFailureRetryInterval (10 minutes by default)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from process_lab import ProcessLab

from exchange_emu.lab.crash_matrix import copies_in_mailbox
from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.lab.processes import free_ports

pytestmark = pytest.mark.integration


def test_mailbox_queue_in_retry_delivers_when_the_mailbox_server_is_back(tmp_path: Path):
    mbx_port, hub_port = free_ports(2)
    spec = OrgSpec(
        [ServerSpec("MBX01", "mailbox", mbx_port),
         ServerSpec("HUB01", "hub", hub_port, ack_delay="00:00:01")],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01")],
        # One failed attempt puts the queue at the 10-minute outbound retry interval.
        transport={"QueueGlitchRetryCount": 0, "TransientFailureRetryAttempts": 0,
                   "QueueGlitchRetryInterval": "00:00:01"},
    )
    lab = ProcessLab(write_org(tmp_path / "org.toml", spec), tmp_path)
    try:
        lab.start("HUB01")  # MBX01 is down
        with smtplib.SMTP("127.0.0.1", hub_port, timeout=30) as client:
            client.sendmail("app@contoso.test", ["alice@contoso.test"],
                            b"Message-ID: <back@contoso.test>\r\nSubject: x\r\n\r\nx\r\n")
        lab.wait_for("HUB01", lambda e: e.event_id == "DEFER"
                     and e.message_id == "<back@contoso.test>")
        lab.start("MBX01")
        lab.wait_for("HUB01", lambda e: e.event_id == "DELIVER"
                     and e.message_id == "<back@contoso.test>", timeout=30)
        store = lab.organization.server("MBX01").mailbox_store_url
        assert store is not None
        assert copies_in_mailbox(store, "alice@contoso.test")["<back@contoso.test>"] == 1
    finally:
        lab.stop_all()
