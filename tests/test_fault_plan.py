"""The fault plan as the SMTP server and client honour it, on a StringTransport and a
task.Clock: slow replies, black holes that hold input until healed, scripted replies
with a count, partitioned peers the client cannot reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from exchange_emu.fault_plan import FaultPlan
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import NOW, FakePolicy, Harness, _addr


def write(plan: FaultPlan, **content: Any) -> None:
    plan.path.write_text(json.dumps(content))
    assert plan.reload()


def connect(plan: FaultPlan) -> Harness:
    clock = Clock()
    clock.advance(NOW)
    policy = FakePolicy()
    settings = ServerSettings(connector_name="Default EDGE01", fqdn="edge01.contoso.test",
                              max_message_size=37748736)
    factory = ExchangeESMTPFactory(settings, policy, clock)
    factory.faults = plan
    proto = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=_addr("127.0.0.1", 50000),
                                hostAddress=_addr("127.0.0.1", 2530))
    proto.makeConnection(transport)
    return Harness(transport, proto, policy, clock)


@pytest.fixture
def plan(tmp_path: Path) -> FaultPlan:
    return FaultPlan.for_data_dir(tmp_path)


def test_no_plan_file_means_no_faults(plan: FaultPlan) -> None:
    h = connect(plan)
    assert h.output().startswith(b"220 edge01.contoso.test")
    assert h.feed(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_slow_server_answers_every_reply_late_and_in_order(plan: FaultPlan) -> None:
    write(plan, delay_ms=500)
    h = connect(plan)
    assert h.output() == b""
    h.clock.advance(0.5)
    assert h.output().startswith(b"220 ")
    assert h.feed(b"NOOP\r\nRSET\r\n") == b""
    h.clock.advance(0.49)
    assert h.output() == b""
    h.clock.advance(0.01)
    assert h.output() == b"250 2.0.0 OK\r\n"
    h.clock.advance(0.5)
    assert h.output() == b"250 2.0.0 Resetting\r\n"


def test_partition_refuse_drops_the_peer_after_its_ehlo(plan: FaultPlan) -> None:
    write(plan, partitions=[{"peer": "HUB01", "fqdn": "hub01.contoso.test",
                             "mode": "refuse"}])
    h = connect(plan)
    h.output()
    assert h.feed(b"EHLO hub01.contoso.test\r\n").startswith(b"421 4.4.2 ")
    assert h.transport.disconnecting
    other = connect(plan)
    other.output()
    assert other.feed(b"EHLO hub02.contoso.test\r\n").startswith(b"250-")


def test_blackhole_holds_input_until_the_partition_heals(plan: FaultPlan) -> None:
    write(plan, partitions=[{"peer": "HUB01", "fqdn": "hub01.contoso.test",
                             "mode": "blackhole"}])
    h = connect(plan)
    h.output()
    assert h.feed(b"EHLO hub01.contoso.test\r\nNOOP\r\n") == b""
    h.clock.advance(10)
    assert h.output() == b"" and not h.transport.disconnecting
    write(plan)
    h.clock.advance(0.2)
    out = h.output()
    assert out.startswith(b"250-edge01.contoso.test") and out.endswith(b"250 2.0.0 OK\r\n")


def test_scripted_reply_counts_then_the_server_answers_again(plan: FaultPlan) -> None:
    write(plan, replies=[{"id": "r1", "stage": "MAIL", "code": 451,
                          "text": "4.7.1 Try later", "count": 2}])
    h = connect(plan)
    h.output()
    h.feed(b"EHLO client.example\r\n")
    assert h.feed(b"MAIL FROM:<a@example.com>\r\n") == b"451 4.7.1 Try later\r\n"
    write(plan, replies=[{"id": "r1", "stage": "MAIL", "code": 451,
                          "text": "4.7.1 Try later", "count": 2}], delay_ms=0)
    assert h.feed(b"MAIL FROM:<a@example.com>\r\n") == b"451 4.7.1 Try later\r\n"
    assert h.feed(b"MAIL FROM:<a@example.com>\r\n").startswith(b"250 ")


def test_scripted_reply_after_the_dot_drops_the_transaction(plan: FaultPlan) -> None:
    write(plan, replies=[{"id": "r1", "stage": "DOT", "code": 451, "text": "4.3.2 No",
                          "count": 1}])
    h = connect(plan)
    h.output()
    h.feed(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@contoso.test>\r\n")
    assert h.feed(b"DATA\r\n") == b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    assert h.feed(b"Subject: x\r\n\r\nbody\r\n.\r\n") == b"451 4.3.2 No\r\n"
    assert h.policy.stored == []
    assert h.feed(b"RCPT TO:<b@contoso.test>\r\n").startswith(b"503 ")


def test_connect_banner_421_closes(plan: FaultPlan) -> None:
    write(plan, replies=[{"id": "r1", "stage": "CONNECT", "code": 421,
                          "text": "4.3.2 Busy", "count": 0}])
    h = connect(plan)
    assert h.output() == b"421 4.3.2 Busy\r\n"
    assert h.transport.disconnecting


def test_client_cannot_reach_a_partitioned_peer(plan: FaultPlan) -> None:
    class Target:
        server = "HUB01"

    reached: list[Any] = []
    guarded = plan.guard(lambda target: reached.append(target), Clock())
    guarded(Target())
    assert len(reached) == 1
    write(plan, partitions=[{"peer": "HUB01", "fqdn": "hub01.contoso.test",
                             "mode": "refuse"}])
    refused = guarded(Target()).connect(None)
    failure = []
    refused.addErrback(failure.append)
    assert failure[0].check(error.ConnectionRefusedError)

    clock = Clock()
    write(plan, partitions=[{"peer": "HUB01", "fqdn": "hub01.contoso.test",
                             "mode": "blackhole", "hang": 30}])
    hanging = plan.guard(lambda target: None, clock)(Target()).connect(None)
    hanging.addErrback(failure.append)
    clock.advance(29.9)
    assert len(failure) == 1
    clock.advance(0.1)
    assert failure[1].check(error.TimeoutError)


def test_the_watcher_applies_a_change_and_tells_the_lab(tmp_path: Path) -> None:
    """The server polls its plan and acknowledges it; the lab sees when it is in force."""
    from exchange_emu.directory import load_organization
    from exchange_emu.fault_plan import FaultPlanWatcher
    from exchange_emu.lab import fault_control
    from exchange_emu.lab.org_builder import OrgSpec, ServerSpec, write_org

    config = write_org(tmp_path / "org.toml", OrgSpec([ServerSpec("HUB01", "hub", 2525),
                                                       ServerSpec("HUB02", "hub", 2526)]))
    organization = load_organization(config)
    hub01 = organization.server("HUB01")
    hub01.data_dir.mkdir(parents=True)
    clock = Clock()
    plan = FaultPlan.for_data_dir(hub01.data_dir)
    watcher = FaultPlanWatcher(plan, "HUB01", clock)
    watcher.startService()
    assert fault_control.applied(hub01)
    fault_control.partition(organization, "HUB01", "HUB02", "blackhole", 5)
    assert not fault_control.applied(hub01) and plan.partitions == {}
    clock.advance(0.2)
    assert plan.partition_from("HUB02") == ("blackhole", 5.0)
    assert fault_control.applied(hub01)
    fault_control.heal(organization, ["HUB01", "HUB02"])
    clock.advance(0.2)
    assert plan.partition_from("HUB02") is None and fault_control.applied(hub01)
    watcher.stopService()
