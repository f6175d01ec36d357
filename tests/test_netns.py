"""Several hosts: every server of one organization file in its own network namespace at
its own address (10.77.N.x), started with ``ip netns exec``; scenario D (HUB01 → HUB02 →
EDGE01 → INTERNET01) and F (the Internet → EDGE01 → HUB01 → MBX01) across them, then
each again across a partition (a server's link down) that heals (link up): delivered,
exactly once. docs/multi-host.md walks through it.

Needs root (CAP_NET_ADMIN) and iproute2: skipped with the reason otherwise, unless
EXCHANGE_EMU_REQUIRE_NETNS=1 (CI), which makes that a failure."""

from __future__ import annotations

import os
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import Hosts, NetnsUnavailable, check_available
from process_lab import ProcessLab

from exchange_emu.lab.crash_matrix import copies_in_files, copies_in_mailbox
from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    SendConnectorSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.lab.processes import ServerProcess

pytestmark = pytest.mark.integration

NAMES = ("MBX01", "HUB01", "HUB02", "EDGE01", "INTERNET01")
SMTP_PORT = 25  # every host has its own port space: the real port
STORE_DRIVER_PORT = 3000


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    try:
        check_available()
    except NetnsUnavailable as e:
        if os.environ.get("EXCHANGE_EMU_REQUIRE_NETNS") == "1":
            pytest.fail(f"{e} (EXCHANGE_EMU_REQUIRE_NETNS=1)", pytrace=False)
        pytest.skip(str(e))
    made = Hosts(NAMES)
    try:
        yield made.create()
    finally:
        made.remove()
    assert made.existing_namespaces() == []


def multi_host_org(directory: Path, hosts: Hosts) -> Path:
    """One organization file: each server at its namespace's address."""
    def at(name: str, role: str, port: int = SMTP_PORT, **options: Any) -> ServerSpec:
        return ServerSpec(name, role, port, host=hosts.address[name], **options)

    spec = OrgSpec(
        [at("MBX01", "mailbox", STORE_DRIVER_PORT),
         at("HUB01", "hub", ack_delay="00:00:03"),
         at("HUB02", "hub", ack_delay="00:00:03"),
         at("EDGE01", "edge", site=None, ack_delay="00:00:03"),
         at("INTERNET01", "legacy", site=None, version="non-exchange",
            local_domains=("fabrikam.test",))],
        send_connectors=[
            SendConnectorSpec("Internet via EDGE01", ("HUB02",), ("EDGE01",)),
            SendConnectorSpec("EdgeSync - to Internet", ("EDGE01",), ("INTERNET01",)),
            SendConnectorSpec("EdgeSync - Inbound", ("EDGE01",), ("HUB01",), ("contoso.test",)),
        ],
        # The test process (hosts.gateway) is an application server of the organization.
        org_server_networks=(str(hosts.subnet),),
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[RecipientSpec("bob@contoso.test", "Bob", database="DB01"),
                    RecipientSpec("erin@fabrikam.test", "Erin", server="INTERNET01")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:01",
                   "ShadowHeartbeatRetryCount": 1000,  # a partition is not a takeover here
                   "QueueGlitchRetryInterval": "00:00:01",
                   "TransientFailureRetryInterval": "00:00:01",
                   "MessageRetryInterval": "00:00:01"},
    )
    return write_org(directory / "multi-host.toml", spec)


@pytest.fixture
def lab(tmp_path: Path, hosts: Hosts) -> Iterator[ProcessLab]:
    lab = ProcessLab(multi_host_org(tmp_path, hosts), tmp_path)
    try:
        for name in NAMES:
            role = sorted(lab.organization.server(name).roles)[0]
            process = ServerProcess(role, lab.config, name, tmp_path)
            process.argv = hosts.exec_prefix(name) + process.argv
            lab.processes[name] = process.start()
        yield lab
    finally:
        lab.stop_all()


def send(host: str, sender: str, recipient: str, message_id: str) -> None:
    with smtplib.SMTP(host, SMTP_PORT, timeout=60) as client:
        client.sendmail(sender, [recipient],
                        f"Message-ID: {message_id}\r\nSubject: multi-host\r\n\r\nx\r\n")


def wait_copies(count: Callable[[], Counter[str]], message_id: str,
                timeout: float = 30.0) -> int:
    """Poll (bounded) until the message is there; how many copies."""
    deadline = time.monotonic() + timeout
    while not count()[message_id]:
        assert time.monotonic() < deadline, f"{message_id} not delivered after {timeout} s"
        time.sleep(0.1)
    return int(count()[message_id])


def queue_empty(lab: ProcessLab, name: str, timeout: float = 30.0) -> None:
    """Poll (bounded) until ``name`` has nothing left: no later copy can appear."""
    from exchange_emu.lab.crash_matrix import queued_messages

    deadline = time.monotonic() + timeout
    while queued_messages(lab.organization.server(name).database_url):
        assert time.monotonic() < deadline, f"{name}'s queue not empty after {timeout} s"
        time.sleep(0.1)


def test_scenarios_d_and_f_across_hosts_and_a_healed_partition(lab: ProcessLab,
                                                               hosts: Hosts) -> None:
    org = lab.organization
    internet = org.server("INTERNET01")
    store_url = org.server("MBX01").mailbox_store_url
    assert store_url is not None
    for name in NAMES:  # every server at its own address, none on loopback
        server = org.server(name)
        address = server.smtp or server.store_driver
        assert address is not None and address.host == hosts.address[name]

    def erin() -> Counter[str]:
        return copies_in_files(internet.data_dir, "erin@fabrikam.test")

    def bob() -> Counter[str]:
        return copies_in_mailbox(store_url, "bob@contoso.test")

    # D: HUB01 → HUB02 → EDGE01 → INTERNET01, each hop to another host.
    send(hosts.address["HUB01"], "alice@contoso.test", "erin@fabrikam.test", "<d@hosts>")
    assert wait_copies(erin, "<d@hosts>") == 1
    lab.wait_for("HUB01", lambda e: e.message_id == "<d@hosts>" and "D.7" in e.steps)
    lab.wait_for("HUB02", lambda e: e.message_id == "<d@hosts>" and "D.7" in e.steps)
    received = org.server("HUB02").data_dir / "TransportRoles" / "Logs" / "ProtocolLog"
    assert any(hosts.address["HUB01"] in p.read_text()
               for p in received.rglob("RECV*.LOG")), "HUB02 never heard from HUB01's address"

    # F: the Internet (this process) → EDGE01 → HUB01 → MBX01.
    send(hosts.address["EDGE01"], "erin@fabrikam.test", "bob@contoso.test", "<f@hosts>")
    assert wait_copies(bob, "<f@hosts>") == 1
    acked = lab.wait_for("EDGE01", lambda e: e.message_id == "<f@hosts>" and "F.7" in e.steps)
    assert acked[0].custom_data["delayed_ack"] == "Delivered"

    # D across a partition: EDGE01 cut off; HUB02 keeps the message (its connection
    # attempts go unanswered) until the link is back.
    hosts.partition("EDGE01")
    send(hosts.address["HUB01"], "alice@contoso.test", "erin@fabrikam.test", "<d-cut@hosts>")
    # HUB01 held its 250 for the 3 s MaxAcknowledgementDelay and then let it go: the
    # message could not get past HUB02.
    held = lab.wait_for("HUB01", lambda e: e.message_id == "<d-cut@hosts>" and "F.7" in e.steps)
    assert held[0].custom_data["delayed_ack"] != "Delivered"
    lab.wait_for("HUB02", lambda e: e.message_id == "<d-cut@hosts>" and e.step == "D.4.2")
    assert not erin()["<d-cut@hosts>"]
    hosts.heal("EDGE01")
    assert wait_copies(erin, "<d-cut@hosts>", timeout=60) == 1

    # F across a partition: HUB01 cut off; EDGE01 acknowledges (the hold is skipped or
    # expires), keeps the message and delivers it once HUB01 is reachable again.
    hosts.partition("HUB01")
    send(hosts.address["EDGE01"], "erin@fabrikam.test", "bob@contoso.test", "<f-cut@hosts>")
    held = lab.wait_for("EDGE01", lambda e: e.message_id == "<f-cut@hosts>"
                        and "F.7" in e.steps)
    assert held[0].custom_data["delayed_ack"] != "Delivered"
    assert not bob()["<f-cut@hosts>"]
    hosts.heal("HUB01")
    assert wait_copies(bob, "<f-cut@hosts>", timeout=60) == 1

    # Exactly once: nothing left anywhere that could still deliver a second copy.
    for name in ("HUB01", "HUB02", "EDGE01"):
        queue_empty(lab, name)
    assert erin()["<d-cut@hosts>"] == 1 and bob()["<f-cut@hosts>"] == 1
    assert erin()["<d@hosts>"] == 1 and bob()["<f@hosts>"] == 1
