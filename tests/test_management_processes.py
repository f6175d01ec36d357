"""The management API on a real lab (``exchange-emu lab``, one process per server): the
queue cmdlets through the CLI and through the lab endpoint's HTTP API, with the engine
honouring suspension (also across a restart), NDRs reaching the sender's mailbox, exports
byte for byte, and receive-connector changes taking effect on the running server."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from org_files import small_org, two_hub_org

from exchange_emu.lab.processes import ServerProcess, free_ports

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "exchange-emu")
QUIET = 3.0
"""Seconds a suspended message must stay undelivered; the lab's retry interval is 1 s."""


class Lab:
    """A running ``exchange-emu lab`` and ways to talk to its admin endpoint."""

    def __init__(self, config: Path, ports: dict[str, int], proc: subprocess.Popen[str],
                 lines: list[str]) -> None:
        self.config = config
        self.ports = ports
        self.proc = proc
        self.lines = lines
        self.url = f"http://127.0.0.1:{ports['ADMIN']}"

    def api(self, method: str, path: str, query: dict[str, Any] | None = None,
            body: dict[str, Any] | None = None) -> tuple[int, Any, Any]:
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw, status, headers = response.read(), response.status, response.headers
        except urllib.error.HTTPError as e:
            raw, status, headers = e.read(), e.code, e.headers
        kind = headers.get("content-type", "")
        return status, headers, json.loads(raw) if "json" in kind else raw

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        status, _, answer = self.api(method, path, **kwargs)
        assert status == 200, (path, status, answer)
        return answer

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, args[0], "--config", str(self.config), *args[1:]],
                              capture_output=True, text=True, timeout=90)

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
        """Poll ``check`` (bounded) until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n" +
                                     "\n".join(self.lines[-80:]))
            time.sleep(0.2)

    def links(self, hub: str) -> int:
        """How many times ``hub`` has connected its store driver to its mailbox server."""
        return sum(f"[{hub}]" in line and "store driver connected" in line
                   for line in self.lines)

    def fault(self, action: str, server: str) -> None:
        """A whole-server fault; after a start, wait until the server works again (a hub
        answers its admin API and has its store-driver link)."""
        hub = {"MBX01": "HUB01", "MBX02": "HUB02"}.get(server, server)
        before = self.links(hub)
        self.ok("POST", f"/servers/{server}/{action}")
        if action in ("start", "restart"):
            self.wait_ready(hub, before)

    def wait_ready(self, hub: str, links_before: int = 0) -> None:
        def answers() -> bool:
            try:
                status, _, _ = self.api("GET", "/api/queues", query={"server": hub})
            except urllib.error.URLError:  # the lab endpoint is not listening yet
                return False
            return status == 200
        self.wait(answers, f"{hub} to answer")
        self.wait(lambda: self.links(hub) > links_before, f"{hub}'s store driver link")

    def send(self, subject: str, to: str = "carol@contoso.test") -> str:
        answer = self.ok("POST", "/api/send", body={
            "from": "alice@contoso.test", "to": [to], "subject": subject, "body": "Hello."})
        return str(answer["message_id"])

    def message(self, message_id: str, server: str = "HUB01") -> dict[str, Any] | None:
        for row in self.ok("GET", "/api/messages", query={"server": server}):
            if row["InternetMessageId"] == message_id:
                return dict(row)
        return None

    def queue(self, identity: str) -> dict[str, Any]:
        rows = self.ok("GET", "/api/queues", query={"identity": identity})
        return dict(rows[0])

    def tracked(self, event_id: str, message_id: str, server: str | None = None) -> list[Any]:
        query = {"event_id": event_id, "message_id": message_id}
        if server:
            query["server"] = server
        return list(self.ok("GET", "/api/tracking", query=query))

    def held_in_retry(self, subject: str) -> tuple[str, dict[str, Any]]:
        """With HUB02 stopped, alice's message to carol waits in HUB01's Site-B queue."""
        message_id = self.send(subject)
        row = self.wait(lambda: (m := self.message(message_id)) and m["Status"] == "Retry"
                        and m, f"{subject!r} in a Retry queue")
        return message_id, row


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("management")
    config, ports = two_hub_org(directory)
    proc = subprocess.Popen([EXE, "lab", "--config", str(config)], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    running = Lab(config, ports, proc, lines)
    try:
        for name in ("HUB01", "HUB02"):
            running.wait_ready(name)
        yield running
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def hub02_down(lab: Lab) -> Any:
    """HUB02 stopped for the test, running again afterwards."""
    lab.fault("stop", "HUB02")
    yield
    lab.fault("start", "HUB02")


def test_a_held_message_shows_in_get_queue_and_get_message(lab, hub02_down):
    message_id, row = lab.held_in_retry("held in retry")
    assert re.fullmatch(r"HUB01\\\d+\\\d+", row["Identity"]), row
    assert re.fullmatch(r"HUB01\\\d+", row["Queue"]), row
    assert row["FromAddress"] == "alice@contoso.test" and row["Subject"] == "held in retry"
    assert row["LastError"].startswith("451 4.4.0")
    assert [r["Address"] for r in row["Recipients"]] == ["carol@contoso.test"]
    queue = lab.queue(row["Queue"])
    assert queue["Status"] == "Retry" and queue["NextHopDomain"] == "Site-B"
    assert queue["DeliveryType"] == "SmtpRelayToRemoteAdSite" and queue["MessageCount"] >= 1

    # The CLI: a table by default, JSON on request, the filter subset.
    table = lab.cli("get-queue", "--server", "HUB01", "--filter", '{Status -eq "Retry"}')
    assert table.returncode == 0, table.stderr
    header, rule, *rest = table.stdout.splitlines()
    assert header.split() == ["Identity", "DeliveryType", "Status", "MessageCount",
                              "NextHopDomain"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert [line.split()[:3] for line in rest] == [
        [row["Queue"], "SmtpRelayToRemoteAdSite", "Retry"]]
    listed = json.loads(lab.cli("get-queue", "--json", "--filter",
                                "{MessageCount -gt 0 -and NextHopDomain -eq 'Site-B'}").stdout)
    assert [q["Identity"] for q in listed] == [row["Queue"]]
    one = lab.cli("get-message", "--identity", row["Identity"])
    assert one.returncode == 0 and "carol@contoso.test (Retry)" in one.stdout
    # Every running transport server answers without --server; HUB02 is reported, not an error.
    everything = lab.cli("get-queue")
    assert everything.returncode == 0 and "not running, not listed: HUB02" in everything.stderr
    status, headers, merged = lab.api("GET", "/api/queues")
    assert status == 200 and headers["X-Exchange-Emu-Not-Running"] == "HUB02"
    assert {q["Identity"].split("\\")[0] for q in merged} == {"HUB01"}
    status, _, answer = lab.api("GET", "/api/queues", query={"server": "HUB02"})
    assert status == 502 and "HUB02 is not running" in answer["error"]
    del message_id


def test_suspend_queue_holds_delivery_across_a_restart_until_resume(lab, hub02_down):
    message_id, row = lab.held_in_retry("suspended queue")
    queue = row["Queue"]
    suspended = lab.cli("suspend-queue", queue)
    assert suspended.returncode == 0, suspended.stderr
    assert "Suspended" in suspended.stdout
    lab.fault("start", "HUB02")
    lab.fault("restart", "HUB01")  # suspension is in the queue database
    lab.wait(lambda: (m := lab.message(message_id)) and m["Queue"] == queue,
             "the message back in its (suspended) queue after the restart")
    assert lab.queue(queue)["Status"] == "Suspended"
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        assert not lab.tracked("DELIVER", message_id), "delivered from a suspended queue"
        time.sleep(0.3)
    assert lab.message(message_id) is not None
    resumed = lab.ok("POST", "/api/queue/resume", body={"identity": queue})
    assert resumed["Status"] != "Suspended"
    lab.wait(lambda: lab.tracked("DELIVER", message_id, "HUB02"), "delivery after Resume-Queue")
    lab.wait(lambda: lab.message(message_id) is None, "the message to leave HUB01's queue")
    lab.fault("stop", "HUB02")  # as the fixture left it


def test_suspend_and_resume_message(lab, hub02_down):
    message_id, row = lab.held_in_retry("suspended message")
    identity = row["Identity"]
    answer = lab.ok("POST", "/api/message/suspend", body={"identity": identity})
    assert answer["Status"] in ("Suspended", "PendingSuspend")
    lab.wait(lambda: lab.message(message_id)["Status"] == "Suspended", "Suspended")
    only = lab.ok("GET", "/api/messages", query={"server": "HUB01",
                                                 "filter": '{Status -eq "Suspended"}'})
    assert [m["Identity"] for m in only] == [identity]
    lab.fault("start", "HUB02")
    retried = lab.cli("retry-queue", row["Queue"])
    assert retried.returncode == 0, retried.stderr
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        assert not lab.tracked("DELIVER", message_id), "a suspended message was delivered"
        time.sleep(0.3)
    assert lab.message(message_id)["Status"] == "Suspended"
    resumed = lab.cli("resume-message", identity)
    assert resumed.returncode == 0, resumed.stderr
    lab.wait(lambda: lab.tracked("DELIVER", message_id, "HUB02"), "delivery after resume")
    assert lab.tracked("RESUBMIT", message_id, "HUB01")[0]["CustomData"]["reason"] == (
        "Resume-Message")
    again = lab.cli("resume-message", identity)
    assert again.returncode == 2 and "there is no message" in again.stderr
    lab.fault("stop", "HUB02")


def test_remove_message_with_ndr_reaches_the_sender(lab, hub02_down):
    message_id, row = lab.held_in_retry("removed with NDR")
    removed = lab.cli("remove-message", row["Identity"], "--with-ndr", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["Removed"] == 1
    assert lab.message(message_id) is None
    status, _, answer = lab.api("GET", "/api/message", query={"identity": row["Identity"]})
    assert status == 404 and "there is no message" in answer["error"]
    dsn = lab.wait(lambda: lab.tracked("DSN", message_id, "HUB01"), "the NDR")
    ndr_id = dsn[0]["Reference"]
    lab.wait(lambda: lab.tracked("DELIVER", ndr_id, "HUB01"), "the NDR in alice's mailbox")
    inbox = subprocess.run([EXE, "mailbox", "list", "alice@contoso.test", "--config",
                            str(lab.config), "--folder", "Inbox"],
                           capture_output=True, text=True, timeout=60)
    assert "Undeliverable: removed with NDR" in inbox.stdout, inbox.stdout + inbox.stderr

    # Without -WithNDR the sender hears nothing.
    silent_id, silent = lab.held_in_retry("removed silently")
    lab.ok("POST", "/api/message/remove", body={"identity": silent["Identity"]})
    lab.wait(lambda: lab.tracked("FAIL", silent_id, "HUB01"), "the FAIL row")
    assert lab.message(silent_id) is None and not lab.tracked("DSN", silent_id)


def test_retry_queue_resubmit(lab, hub02_down):
    message_id, row = lab.held_in_retry("resubmitted")
    # Resubmitted while HUB02 is still down: the message is surely still in the queue (once
    # HUB02 runs, HUB01's own retry could deliver it before the resubmission arrives).
    answer = lab.ok("POST", "/api/queue/retry", body={"identity": row["Queue"],
                                                      "resubmit": True})
    assert answer["Identity"] == row["Queue"]
    resubmitted = lab.wait(lambda: lab.tracked("RESUBMIT", message_id, "HUB01"), "RESUBMIT")
    assert resubmitted[0]["CustomData"]["reason"] == "Retry-Queue -Resubmit"
    lab.fault("start", "HUB02")
    lab.wait(lambda: lab.tracked("DELIVER", message_id, "HUB02"), "delivery after resubmit")
    lab.fault("stop", "HUB02")


def test_export_message_is_the_bytes_that_were_sent(lab, hub02_down, tmp_path):
    body = b"".join(b"line %06d of a long message body, to be exported in chunks\r\n" % i
                    for i in range(4000))
    sent = (b"From: alice@contoso.test\r\nTo: carol@contoso.test\r\nSubject: export me\r\n"
            b"Message-ID: <export-me@contoso.test>\r\n\r\n" + body)
    with smtplib.SMTP("127.0.0.1", lab.ports["HUB01"], timeout=60) as client:
        client.sendmail("alice@contoso.test", ["carol@contoso.test"], sent)
    row = lab.wait(lambda: lab.message("<export-me@contoso.test>"), "the message in a queue")
    out = tmp_path / "exported.eml"
    exported = lab.cli("export-message", row["Identity"], "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    data = out.read_bytes()
    # HUB01's own Received: header first, as Exchange's Export-Message shows it.
    received, rest = data.split(b"\r\n", 1)
    assert received.startswith(b"Received: from ") and rest == sent
    status, headers, raw = lab.api("GET", "/api/message/export",
                                   query={"identity": row["Identity"]})
    assert status == 200 and headers["content-type"] == "message/rfc822" and raw == data
    lab.ok("POST", "/api/message/remove", body={"identity": row["Identity"]})


def test_bad_identities_and_filters_change_nothing(lab, hub02_down):
    message_id, row = lab.held_in_retry("bad input")
    before = lab.message(message_id)
    cases = [
        ("suspend-queue", "HUB01\\9999", "there is no queue HUB01\\9999"),
        ("suspend-queue", "HUB01\\Bogus", "is not a queue identity"),
        ("suspend-message", row["Queue"], "is not a message identity"),
        ("remove-message", row["Identity"] + "0", "there is no message"),
        ("resume-queue", "NOSUCH\\1", "no server named 'NOSUCH'"),
        ("suspend-queue", "MBX01\\1", "MBX01 is a mailbox server"),
        ("suspend-queue", "HUB01\\Submission", "works on delivery queues"),
    ]
    for command, identity, says in cases:
        result = lab.cli(command, identity)
        assert result.returncode == 2 and says in result.stderr, (command, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    bad = lab.cli("get-message", "--filter", "{Colour -eq 'red'}")
    assert bad.returncode == 2 and "unknown property 'Colour'" in bad.stderr
    status, _, answer = lab.api("GET", "/api/queues", query={"filter": "{Status -eq}"})
    assert status == 400 and "ends early" in answer["error"]
    status, _, answer = lab.api("POST", "/api/queue/suspend", body={"identity": "HUB01\\x"})
    assert status == 400 and "is not a queue identity" in answer["error"]
    status, _, answer = lab.api("POST", "/api/message/remove", body={"identity": "HUB01\\1\\"})
    assert status == 400
    status, _, answer = lab.api("POST", "/api/queue/suspend", body={})
    assert status == 400 and "identity" in answer["error"]
    for path in ("/api/nothing", "/api/queue/freeze?server=HUB01"):
        status, _, answer = lab.api("GET", path)
        assert status == 404 and "no management API at" in answer["error"], (path, answer)
    status, _, answer = lab.api("GET", "/api/queue/suspend", query={"identity": row["Queue"]})
    assert status == 405 and answer["error"] == "use POST"
    after = lab.message(message_id)
    assert after is not None and after["Status"] == before["Status"] == "Retry"
    assert lab.queue(row["Queue"])["Status"] != "Suspended"
    lab.ok("POST", "/api/message/remove", body={"identity": row["Identity"]})


def test_set_receive_connector_max_acknowledgement_delay_takes_effect(lab):
    """Scenario F's delayed acknowledgement: HUB01 holds the 250 for a message from a peer
    without XSHADOW until the next hop is done with it; with MBX02 stopped that never
    happens, so the 250 comes after MaxAcknowledgementDelay (30 s in this lab, then 2 s)."""
    identity = "HUB01\\Default HUB01"
    before = lab.ok("GET", "/api/receive-connectors", query={"identity": identity})
    assert before[0]["MaxAcknowledgementDelay"] == "00:00:30"
    changed = lab.cli("set-receiveconnector", identity, "--set",
                      "MaxAcknowledgementDelay=00:00:02")
    assert changed.returncode == 0, changed.stderr
    assert "MaxAcknowledgementDelay" in changed.stdout and "00:00:02" in changed.stdout
    # One delivery first, so that HUB01's Site-B queue is not left in Retry by the tests
    # before (a queue in Retry skips delayed acknowledgement).
    warm_up = lab.send("warm-up")
    lab.wait(lambda: lab.tracked("DELIVER", warm_up, "HUB02"), "the warm-up delivery")
    lab.fault("stop", "MBX02")
    try:
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", lab.ports["HUB01"], timeout=60) as client:
            client.sendmail("alice@contoso.test", ["carol@contoso.test"],
                            b"Subject: held ack\r\nMessage-ID: <held-ack@contoso.test>\r\n\r\n"
                            b"hi\r\n")
        held = time.monotonic() - started
        assert 1.5 <= held < 15, held
        # HUB02 took it with XSHADOW: HUB01 keeps a shadow copy until HUB02's discard
        # notification, which cannot come while MBX02 is down.
        shadows = lab.ok("GET", "/api/queues", query={
            "server": "HUB01", "filter": '{DeliveryType -eq "ShadowRedundancy"}'})
        assert [q["NextHopDomain"] for q in shadows] == ["hub02.contoso.test"], shadows
        assert re.fullmatch(r"HUB01\\Shadow\\\d+", shadows[0]["Identity"])
        copies = lab.ok("GET", "/api/messages", query={"queue": shadows[0]["Identity"]})
        assert "<held-ack@contoso.test>" in [m["InternetMessageId"] for m in copies]
        lab.wait(lambda: any(r["CustomData"].get("delayed_ack") == "Expired" for r in
                             lab.tracked("RECEIVE", "<held-ack@contoso.test>", "HUB01")),
                 "F.7 with the acknowledgement delay expired")
    finally:
        lab.fault("start", "MBX02")
    bad = lab.cli("set-receiveconnector", identity, "--set", "MaxAcknowledgementDelay=soon")
    assert bad.returncode == 2 and "MaxAcknowledgementDelay" in bad.stderr
    unknown = lab.api("POST", "/api/receive-connector", body={
        "identity": "HUB01\\Nope", "settings": {"MaxMessageSize": "1MB"}})
    assert unknown[0] == 404
    after = lab.ok("GET", "/api/receive-connectors", query={"identity": identity})
    assert after[0]["MaxAcknowledgementDelay"] == "00:00:02"


def test_transport_config_get_and_set(lab):
    shown = lab.cli("get-transportconfig", "--server", "HUB01")
    assert shown.returncode == 0 and re.search(r"ShadowHeartbeatTimeoutInterval\s+: 00:00:02",
                                               shown.stdout), shown.stdout
    changed = lab.ok("POST", "/api/transport-config", body={
        "server": "HUB01", "settings": {"ShadowHeartbeatRetryCount": 5,
                                        "MessageRetryInterval": "00:00:02"}})
    assert changed[0]["ShadowHeartbeatRetryCount"] == 5
    assert changed[0]["MessageRetryInterval"] == "00:00:02"
    bad = lab.cli("set-transportconfig", "--server", "HUB01", "--set", "Nope=1")
    assert bad.returncode == 2 and "unknown transport setting 'Nope'" in bad.stderr
    both = json.loads(lab.cli("set-transportconfig", "--json", "--set",
                              "ShadowHeartbeatRetryCount=4").stdout)
    assert {row["Identity"]: row["ShadowHeartbeatRetryCount"] for row in both} == {
        "HUB01": 4, "HUB02": 4}
    after = lab.ok("GET", "/api/transport-config", query={"server": "HUB01"})
    assert after[0]["MessageRetryInterval"] == "00:00:02"


def test_the_other_front_end_for_each_action(lab, hub02_down):
    """What the tests above did through the CLI, through HTTP, and the other way round."""
    message_id, row = lab.held_in_retry("both front ends")
    queue, identity = row["Queue"], row["Identity"]
    assert lab.ok("POST", "/api/queue/suspend", body={"identity": queue})["Status"] == (
        "Suspended")
    resumed = lab.cli("resume-queue", queue, "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["Status"] != "Suspended"
    suspended = lab.cli("suspend-message", identity)
    assert suspended.returncode == 0 and "Suspended" in suspended.stdout
    assert lab.message(message_id)["Status"] == "Suspended"
    answer = lab.ok("POST", "/api/message/resume", body={"identity": identity})
    assert answer["Resubmitted"] is True
    lab.wait(lambda: (m := lab.message(message_id)) and m["Status"] == "Retry",
             "the resumed message back in Retry")
    listed = lab.cli("get-message", "--server", "HUB01", "--queue", queue)
    assert listed.returncode == 0 and identity in listed.stdout and "Retry" in listed.stdout
    lab.ok("POST", "/api/message/remove", body={"identity": identity, "with_ndr": False})
    assert lab.message(message_id) is None


def test_set_transport_config_changes_the_running_retry_timers(lab, hub02_down):
    """QueueGlitchRetryInterval set to a minute: the queue's next retry, after a failed
    attempt, is a minute away instead of a second (the lab's setting)."""
    message_id, row = lab.held_in_retry("retry timers")
    lab.ok("POST", "/api/transport-config", body={"server": "HUB01", "settings": {
        "QueueGlitchRetryCount": 1000, "QueueGlitchRetryInterval": "00:01:00"}})
    try:
        lab.ok("POST", "/api/queue/retry", body={"identity": row["Queue"]})

        def far() -> bool:
            due = lab.queue(row["Queue"])["NextRetryTime"]
            return bool(due) and time.mktime(time.strptime(
                due, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime()) > 30
        lab.wait(far, "a next retry a minute away")
    finally:
        lab.ok("POST", "/api/transport-config", body={"server": "HUB01", "settings": {
            "QueueGlitchRetryCount": 4, "QueueGlitchRetryInterval": "00:00:01"}})
    lab.ok("POST", "/api/message/remove", body={"identity": row["Identity"]})
    del message_id


def test_set_receive_connector_size_and_recipient_limits_take_effect(lab):
    identity = "HUB02\\Default HUB02"
    shown = lab.cli("get-receiveconnector", identity)
    assert shown.returncode == 0 and re.search(r"MaxRecipientsPerMessage\s+: 200", shown.stdout)
    changed = lab.ok("POST", "/api/receive-connector", body={
        "identity": identity, "settings": {"MaxMessageSize": "1MB",
                                           "MaxRecipientsPerMessage": 2}})
    assert changed[0]["MaxMessageSize"].startswith("1 MB")
    try:
        with smtplib.SMTP("127.0.0.1", lab.ports["HUB02"], timeout=60) as client:
            client.ehlo("client.contoso.test")
            assert client.esmtp_features["size"] == str(1024 * 1024)
            client.mail("alice@contoso.test")
            assert client.rcpt("carol@contoso.test")[0] == 250
            assert client.rcpt("bob@contoso.test")[0] == 250
            assert client.rcpt("alice@contoso.test")[0] == 452  # 4.5.3 Too many recipients
            client.rset()
    finally:
        lab.ok("POST", "/api/receive-connector", body={
            "identity": identity, "settings": {"MaxMessageSize": "10MB",
                                               "MaxRecipientsPerMessage": 200}})
    with smtplib.SMTP("127.0.0.1", lab.ports["HUB02"], timeout=60) as client:
        client.ehlo("client.contoso.test")
        assert client.esmtp_features["size"] == str(10 * 1024 * 1024)


def test_no_lab_is_a_clear_error(tmp_path):
    config, _ = two_hub_org(tmp_path)
    result = subprocess.run([EXE, "get-queue", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "no lab answers at http://127.0.0.1:" in result.stderr
    assert "is exchange-emu lab running" in result.stderr


def test_a_server_serves_its_admin_key_and_survives_a_busy_one(tmp_path):
    """The ``admin`` key is where a server's management API listens; when that port is
    busy the server still starts, warns, and publishes the port it took instead."""
    smtp, wanted = free_ports(2)
    config = small_org(tmp_path, smtp)
    text = config.read_text().replace(f'smtp = "127.0.0.1:{smtp}"\n',
                                      f'smtp = "127.0.0.1:{smtp}"\nadmin = "127.0.0.1:{wanted}"\n')
    config.write_text(text)
    published = tmp_path / "var" / "HUB01" / "admin.address"

    def queues(address: str) -> list[Any]:
        with urllib.request.urlopen(f"http://{address}/api/queues", timeout=30) as response:
            return list(json.load(response))

    def address_of(hub: ServerProcess) -> str:
        """The address the server published (it does so right after its SMTP listener)."""
        deadline = time.monotonic() + 30
        while not published.exists():
            assert time.monotonic() < deadline, hub.output
            time.sleep(0.1)
        return published.read_text().strip()

    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    try:
        assert address_of(hub) == f"127.0.0.1:{wanted}"
        assert queues(f"127.0.0.1:{wanted}")[0]["Identity"] == "HUB01\\Submission"
    finally:
        hub.stop()  # (twistd re-raises the SIGTERM once stopped cleanly)
    assert not published.exists()
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the old TIME_WAITs
    busy.bind(("127.0.0.1", wanted))
    busy.listen()
    try:
        hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
        try:
            taken = address_of(hub)
            assert taken != f"127.0.0.1:{wanted}"
            assert f"admin endpoint cannot listen on 127.0.0.1:{wanted}" in hub.output
            assert queues(taken)[0]["Identity"] == "HUB01\\Submission"
        finally:
            hub.stop()
    finally:
        busy.close()
