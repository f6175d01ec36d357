"""What TLS costs one SMTP session: N sequential sessions (EHLO, one 10 KB message, QUIT)
from our client to our server over loopback, in clear and with STARTTLS verified against
the lab CA (both sides presenting certificates). Prints sessions per second and the
per-session cost of TLS.

    .venv/bin/python benchmarks/tls_sessions.py [--sessions 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _messages import make_body
from tls_fixtures import tls_org
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from exchange_emu.security.tls import ClientContexts, send_tls, server_options
from exchange_emu.smtp.client import OutboundMessage, SessionRequest, send_session
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory

from smtp_fakes import FakePolicy


async def run(reactor: Any, sessions: int) -> None:
    lab = tls_org(Path(tempfile.mkdtemp(prefix="exchange-emu-bench-")))
    org = lab.organization
    hub02 = lab.credentials("HUB02")
    policy = FakePolicy()
    settings = ServerSettings("Default HUB02", "hub02.contoso.test", tls=server_options(hub02))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        ExchangeESMTPFactory(settings, policy, reactor))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    body = make_body(10_240, 0, "tls")
    message = OutboundMessage("alice@contoso.test", ("erin@fabrikam.test",), body)
    contexts = ClientContexts(lab.credentials("HUB01"))
    results = {}
    for mode in ("clear", "tls"):
        started = time.perf_counter()
        for _ in range(sessions):
            tls = None
            if mode == "tls":
                tls, _ = send_tls(contexts, org.server("HUB02"),
                                  "hub02.contoso.test", False)
            outcome = await send_session(endpoint, SessionRequest(
                "hub01.contoso.test", [message], tls=tls), reactor)
            assert outcome.messages and outcome.messages[0].accepted, outcome
            assert outcome.tls == (mode == "tls")
        results[mode] = time.perf_counter() - started
        print(f"{mode:5}: {sessions} sessions in {results[mode]:.2f} s = "
              f"{sessions / results[mode]:.0f} sessions/s, "
              f"{1000 * results[mode] / sessions:.2f} ms each")
    extra = 1000 * (results["tls"] - results["clear"]) / sessions
    print(f"TLS adds {extra:.2f} ms per session (handshake, certificate checks)")
    await port.stopListening()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args.sessions)))


if __name__ == "__main__":
    main()
