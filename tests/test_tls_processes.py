"""Real hub processes that know each other only by their organization certificates (the
lab trust rule is off): client submission over TLS with AUTH, hub-to-hub shadow
redundancy over TLS, XQDISCARD isolation, and RequireTLS towards the Internet."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_lab import ProcessLab
from sink import Sink
from test_tls import _anonymous_dialogue, _shadow_as
from tls_fixtures import CertLab, tls_org

from exchange_emu.lab.processes import free_ports

pytestmark = pytest.mark.integration

NAMES = ("MBX01", "HUB01", "HUB02", "HUB03", "INTERNET01", "CLIENT")


@pytest.fixture
def started(tmp_path: Path) -> Iterator:
    labs: list[ProcessLab] = []

    def start(**options: object) -> tuple[CertLab, ProcessLab, dict[str, int]]:
        ports = dict(zip(NAMES, free_ports(len(NAMES)), strict=True))
        certs = tls_org(tmp_path, ports, client_port=ports["CLIENT"], **options)  # type: ignore[arg-type]
        lab = ProcessLab(certs.config, tmp_path)
        labs.append(lab)
        return certs, lab, ports

    yield start
    for lab in labs:
        lab.stop_all()


def submit_over_tls(port: int, ca: Path, message_id: str) -> tuple[bool, bool]:
    """alice submits on HUB01's Client connector: AUTH only inside TLS (CA-verified)."""
    wait_listening(port)
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # we dial 127.0.0.1; the chain is still verified
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("outlook.contoso.test")
        auth_in_clear = client.has_extn("auth")
        client.starttls(context=context)
        client.ehlo("outlook.contoso.test")
        auth_in_tls = client.has_extn("auth")
        client.login("alice@contoso.test", "P@ssw0rd")
        client.sendmail("alice@contoso.test", ["erin@fabrikam.test"],
                        f"Message-ID: {message_id}\r\nSubject: over TLS\r\n\r\nhello\r\n")
    return auth_in_clear, auth_in_tls


def test_hubs_shadow_each_other_over_tls_with_certificates_only(started):
    """HUB01 relays to HUB02 over TLS; HUB02 knows HUB01 only by its certificate, offers
    XSHADOW, and HUB01's shadow is discarded once HUB02 delivered (D.7). A stranger and
    HUB03 (a real org certificate) cannot collect HUB01's discards."""
    certs, lab, ports = started()
    ca = certs.organization.tls.ca_certificate
    mid = "<tls-shadow@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("HUB02", "HUB01")
        assert submit_over_tls(ports["CLIENT"], ca, mid) == (False, True)
        sink.wait_for(1)
        lab.wait_for("HUB02", lambda e: e.message_id == mid and e.step == "D.4.2")
        lab.wait_for("HUB01", lambda e: e.message_id == mid and e.step == "D.7")
        plain_ehlo, tls_ehlo, xshadow, xqdiscard, _ = _anonymous_dialogue(ports["HUB02"], ca)
        hub03 = certs.organization.server("HUB03")
        spoof, own, discards = _shadow_as(ports["HUB02"], ca, hub03.certificate,
                                          hub03.certificate_key)
    assert b"XSHADOW" not in plain_ehlo and b"XSHADOW" not in tls_ehlo
    assert xshadow == xqdiscard == b"550 5.7.1 Not authorized\r\n"
    assert spoof == b"550 5.7.1 Not authorized\r\n"
    assert own.startswith(b"250 ") and discards == b"251 OK, no discard events\r\n"
    logs = certs.organization.server("HUB02").data_dir / "TransportRoles" / "Logs"
    wait_for_log(logs, "TLS: client certificate proves HUB01")
    wait_for_log(logs, "XSHADOW context names HUB01; certificate proves HUB03")
    hub01_logs = certs.organization.server("HUB01").data_dir / "TransportRoles" / "Logs"
    wait_for_log(hub01_logs, "TLS negotiated; certificate of hub02.contoso.test verified")


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Poll (bounded) until a port accepts connections (a server's later listeners)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def wait_for_log(directory: Path, text: str, timeout: float = 10.0) -> None:
    """Poll (bounded) a server's SmtpReceive protocol logs for a line."""
    deadline = time.monotonic() + timeout
    while True:
        found = any(text in p.read_text() for p in (directory / "ProtocolLog").rglob("*.LOG"))
        if found:
            return
        assert time.monotonic() < deadline, f"{text!r} not in the protocol log"
        time.sleep(0.1)


def test_require_tls_to_a_peer_without_starttls_defers_and_loses_nothing(started):
    """RequireTLS on the Internet connector, and the Internet server (a foreign MTA)
    offers no STARTTLS: HUB02 sends nothing, the message waits in Retry with a clear
    reason, and goes out once the requirement is dropped."""
    certs, lab, ports = started(internet_require_tls=True)
    ca = certs.organization.tls.ca_certificate
    mid = "<tls-required@contoso.test>"
    with Sink(ports["INTERNET01"]) as sink:
        lab.start("HUB02", "HUB01")
        submit_over_tls(ports["CLIENT"], ca, mid)
        deferred = lab.wait_for("HUB02", lambda e: e.message_id == mid
                                and e.event_id == "DEFER")
        assert "TLS required but the peer does not offer STARTTLS" in \
            deferred[0].recipient_status[0]
        assert sink.messages == []
        lab.stop_all()
        certs.config.write_text(certs.config.read_text().replace("require_tls = true\n", ""))
        lab.start("HUB02", "HUB01")
        sink.wait_for(1)
