"""The web queue viewer in a real headless browser (Debian chromium via Playwright),
against a real lab: ``exchange-emu lab`` supervising the five server processes of the
two-site organization on free ports, its page served by the lab endpoint.

Screenshots go to test-artifacts/ (the path is printed)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser import launch_chromium, screenshot
from org_files import two_site_org

from exchange_emu.directory import load_organization

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "exchange-emu")
SERVERS = {"MBX01", "HUB01", "HUB02", "MBX02", "HUB03"}
WAIT_MS = 60_000


def _answer(response: Any) -> Any:
    """The JSON body of an answer; None when it is not JSON (twisted's own 404 page)."""
    try:
        return json.load(response)
    except ValueError:
        return None


class Lab:
    def __init__(self, config: Path, url: str, directory: Path) -> None:
        self.config = config
        self.url = url
        self.directory = directory

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, _answer(response)
        except urllib.error.HTTPError as e:
            return e.code, _answer(e)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, _answer(response)
        except urllib.error.HTTPError as e:
            return e.code, _answer(e)

    def inbox(self, address: str) -> str:
        """``exchange-emu mailbox list ADDRESS --folder Inbox``: the mailbox store's view."""
        result = subprocess.run([EXE, "mailbox", "list", address, "--folder", "Inbox",
                                 "--config", str(self.config)], cwd=self.directory,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def wait_for_inbox(self, address: str, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            listing = self.inbox(address)
            if text in listing or time.monotonic() > deadline:
                return listing
            time.sleep(0.5)  # polling the store, bounded by the deadline


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("web-lab")
    config, _ = two_site_org(directory)
    admin = load_organization(config).lab.admin
    proc = subprocess.Popen([EXE, "lab", "--config", str(config)], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if sum("store driver connected to" in seen for seen in lines) >= 3:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "\n".join(lines)
        yield Lab(config, f"http://{admin}", directory)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        print("\n".join(lines[-30:]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(lab.url + "/")
    page.wait_for_selector("#live.on")  # the /events stream is open
    yield page
    context.close()
    assert not errors, errors


def test_page_shows_the_topology_and_whole_server_faults(page: Any, lab: Lab) -> None:
    page.wait_for_function(f"document.querySelectorAll('.server').length === {len(SERVERS)}")
    cards = page.locator(".server")
    names = {cards.nth(i).get_attribute("data-server") for i in range(cards.count())}
    assert names == SERVERS
    assert page.locator(".server[data-running=true] .state.up").count() == len(SERVERS)
    assert "hub" in page.locator(".server[data-server=HUB03] .roles").inner_text()
    # Partition/slow buttons only where the lab answers GET /faults.
    faults_status, _ = lab.get("/faults")
    assert page.locator("#fault-tools").is_hidden() == (faults_status != 200)
    screenshot(page, "web-viewer-topology")

    page.click(".server[data-server=HUB03] button[data-action=kill]")
    page.wait_for_selector(".server[data-server=HUB03][data-running=false] .state.down")
    assert {s["name"]: s["running"] for s in lab.get("/servers")[1]}["HUB03"] is False
    page.click(".server[data-server=HUB03] button[data-action=start]")
    page.wait_for_selector(".server[data-server=HUB03][data-running=true]")
    assert {s["name"]: s["running"] for s in lab.get("/servers")[1]}["HUB03"] is True


def test_message_sent_from_the_page_is_tracked_and_reaches_the_mailbox(page: Any,
                                                                       lab: Lab) -> None:
    subject = f"From the web page {time.time_ns()}"
    page.fill("#send-form input[name=from]", "alice@contoso.test")
    page.fill("#send-form input[name=to]", "carol@contoso.test")
    page.fill("#send-form input[name=subject]", subject)
    page.click("#send-form button[type=submit]")
    sent = page.wait_for_selector("#sent-message")
    message_id = sent.inner_text()
    assert re.fullmatch(r"<[^<>@]+@[^<>]+>", message_id), message_id

    # The live tracking feed (event: tracking) shows the message's rows, up to delivery.
    delivered = f"#feed tr[data-message-id='{message_id}'] >> text=DELIVER"
    page.wait_for_selector(delivered)
    page.click(f"#feed tr[data-message-id='{message_id}'] a.pick >> nth=0")
    page.wait_for_selector("#path tbody tr.event >> text=DELIVER")
    page.wait_for_selector("#path-diagram svg g.arrow")
    assert page.locator("#path-message").inner_text() == message_id
    lanes = page.eval_on_selector_all("#path-diagram svg g.lane",
                                      "gs => gs.map(g => g.getAttribute('data-lane'))")
    assert {"MBX01", "HUB03", "MBX02"} <= set(lanes), lanes
    screenshot(page, "web-viewer-message-path")
    assert subject in lab.wait_for_inbox("carol@contoso.test", subject)


def test_queue_suspend_and_resume_from_the_page(page: Any, lab: Lab) -> None:
    """Suspend-Queue on HUB03's delivery queue to MBX02 holds carol's mail; Resume-Queue
    lets it go. Needs the /api/queue endpoints of the management contract."""
    status, _ = lab.get("/api/queues")
    assert status == 200, "GET /api/queues (the management API) is not served by the lab"
    first = lab.post("/api/send", {"from": "alice@contoso.test", "to": ["carol@contoso.test"],
                                   "subject": "opens the queue", "body": "."})
    assert first[0] == 200, first
    lab.wait_for_inbox("carol@contoso.test", "opens the queue")
    row = page.wait_for_selector(
        "#queues tr.queue[data-identity^='HUB03\\\\']:not([data-identity*='Submission'])"
        ":not([data-identity*='Unreachable']):not([data-identity*='Poison'])")
    identity = row.get_attribute("data-identity")
    assert identity is not None
    escaped = identity.replace("\\", "\\\\")  # a CSS string: HUB03\\1
    selector = f"#queues tr.queue[data-identity='{escaped}']"
    page.click(f"{selector} button[data-action=suspend]")
    page.wait_for_selector(f"{selector} td.status >> text=Suspended")
    queues = {q["Identity"]: q for q in lab.get("/api/queues?server=HUB03")[1]}
    assert queues[identity]["Status"] == "Suspended"

    try:
        subject = f"held by a suspended queue {time.time_ns()}"
        assert lab.post("/api/send", {"from": "alice@contoso.test", "to": ["carol@contoso.test"],
                                      "subject": subject, "body": "."})[0] == 200
        page.wait_for_function(
            "s => Number(document.querySelector(s + ' td.count').textContent) >= 1",
            arg=selector)
        assert subject not in lab.inbox("carol@contoso.test")
        page.click(f"{selector} a.pick")  # Get-Message on the queue: the held message is there
        held = page.wait_for_selector(f"#messages tr.message:has-text('{subject}')")
        message = held.get_attribute("data-identity") or ""
        assert message.startswith(identity + "\\")
        held_row = f"#messages tr.message:has-text('{subject}')"
        page.click(f"{held_row} a.pick")  # Get-Message -Identity: its recipients
        page.wait_for_selector("#path-details li.recipient:has-text('carol@contoso.test')")
        screenshot(page, "web-viewer-queue-suspended")

        page.click(f"{held_row} button[data-action=suspend]")  # Suspend-Message
        page.wait_for_selector(f"{held_row} td.status:text-is('Suspended')")
        assert lab.get(f"/api/message?identity={quote(message)}")[1]["Status"] == "Suspended"
        page.click(f"{held_row} button[data-action=resume]")  # Resume-Message
        page.wait_for_selector(f"{held_row} td.status:not(:text-is('Suspended'))")
        assert lab.get(f"/api/message?identity={quote(message)}")[1]["Status"] != "Suspended"
    except BaseException:
        lab.post("/api/queue/resume", {"identity": identity})  # the next tests need it
        raise

    page.click(f"{selector} button[data-action=resume]")
    page.wait_for_function(
        "s => document.querySelector(s + ' td.status').textContent !== 'Suspended'",
        arg=selector)
    assert subject in lab.wait_for_inbox("carol@contoso.test", subject)


def test_scenario_runner_shows_narration_and_the_sequence_diagram(page: Any,
                                                                  lab: Lab) -> None:
    page.select_option("#scenario-form select", "C")
    page.click("#scenario-form button[type=submit]")
    page.wait_for_selector("#diagrams[data-done=true] svg", timeout=120_000)
    narration = page.locator("#narration").inner_text()
    assert "C (Hub transport server to mailbox server (delivery)): followed" in narration
    assert narration.strip().splitlines()[-1] == (
        "done: 1 of 1 scenarios followed the documented steps")
    svg = "#diagrams svg"
    lanes = page.eval_on_selector_all(f"{svg} g.lane",
                                      "gs => gs.map(g => g.getAttribute('data-lane'))")
    assert {"MAPI client", "MBX01", "HUB03", "MBX02"} <= set(lanes), lanes
    labels = page.eval_on_selector_all(f"{svg} g.arrow text:first-of-type",
                                       "ts => ts.map(t => t.textContent)")
    assert "XSHADOW / BDAT / 250" in labels and "XQDISCARD" in labels, labels
    steps = " ".join(page.eval_on_selector_all(f"{svg} g[data-steps]",
                                               "gs => gs.map(g => g.dataset.steps)"))
    for step in ("C.1", "C.3", "D.4.2", "D.4.3", "D.7"):
        assert step in steps.split(), steps
    assert page.locator(f"{svg} g.shadow[data-ended=discarded]").count() >= 1
    screenshot(page, "web-viewer-scenario")


def test_scenario_endpoint_refuses_bad_requests(lab: Lab) -> None:
    assert lab.post("/scenarios/Q/run") == (
        404, {"error": "no scenario 'Q': A, B, C, D, E, F or all"})
    status, answer = lab.get("/scenarios/0000/diagram.svg")
    assert status == 404 and "no run '0000'" in answer["error"]
    status, answer = lab.get("/diagram.svg")
    assert status == 400 and "message_id" in answer["error"]


def test_network_fault_buttons_where_the_lab_has_faults(page: Any, lab: Lab) -> None:
    """Partition, slow and heal from the page, through the lab's /faults API."""
    status, _ = lab.get("/faults")
    if status != 200:
        pytest.skip("this lab answers no GET /faults (the network faults API is not merged)")
    page.wait_for_selector("#fault-tools:not([hidden])")
    page.select_option("#partition-form select[name=a]", "HUB01")
    page.select_option("#partition-form select[name=b]", "HUB03")
    page.click("#partition-form button[type=submit]")
    page.wait_for_selector("#faults-list li:has-text('HUB01: partitioned from HUB03')")
    page.select_option("#slow-form select[name=server]", "HUB02")
    page.fill("#slow-form input[name=delay_ms]", "1500")
    page.click("#slow-form button[type=submit]")
    page.wait_for_selector("#faults-list li:has-text('HUB02')")
    faults = lab.get("/faults")[1]["faults"]
    assert any("HUB01: partitioned from HUB03" in line for line in faults), faults
    assert any(line.startswith("HUB02") for line in faults), faults
    screenshot(page, "web-viewer-faults")
    page.click("#heal-all")
    page.wait_for_function("document.querySelectorAll('#faults-list li').length === 0")
    assert lab.get("/faults")[1]["faults"] == []
