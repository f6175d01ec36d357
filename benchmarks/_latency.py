"""Per-message latency through a relay, as a child process of the benchmark suite.

smtp-source reports no per-message timing, so the suite runs this load client and sink
(our ESMTP client, and a sink built on our SMTP server that stores nothing) against the
same relay: each message goes in its own session and with ``DATA``, as smtp-source sends
them, and carries a Message-ID that the sink recognises. (Not ``BDAT``: pipelined after
``MAIL`` and ``RCPT``, it leaves the client nothing to send while the relay's last reply is
due, so Postfix, which writes its earlier replies first and does not set ``TCP_NODELAY``,
holds that ``250`` back until the client's delayed TCP acknowledgement: 40 ms.)

Two latencies per message, both from the moment its session started sending MAIL:

* acknowledgement: until the relay's final ``250`` (held by delayed acknowledgement on
  EDGE01 until the message left HUB01 and its discard notification came back);
* end to end: until the sink received it.

Prints one JSON object: ``{"ack": [p50, p99], "e2e": [p50, p99], "arrived": n, "failures": [...]}``
(seconds).

    .venv/bin/python benchmarks/_latency.py --port 2530 --sink-port 2550 --messages 500
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _messages import make_body
from relay import SinkPolicy, _quantiles
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from exchange_emu.smtp.client import OutboundMessage, SessionRequest, send_session
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.smtp.server import ExchangeESMTPFactory


async def measure(reactor: Any, port: int, sink_port: int, total: int, sessions: int,
                  size: int, timeout: float) -> dict[str, Any]:
    sink = SinkPolicy(reactor)
    sink.expected = total
    # A relay may keep its sessions open for many messages (Postfix's connection cache)
    # and open many: the sink lifts those limits, so nothing is deferred.
    factory = ExchangeESMTPFactory(ServerSettings(
        "sink", "sink.fabrikam.test", max_message_size=0, max_messages_per_connection=0,
        max_inbound_connection_per_source=100_000), sink, reactor)
    listening = await TCP4ServerEndpoint(reactor, sink_port,
                                         interface="127.0.0.1").listen(factory)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    counter = iter(range(total))
    started: dict[str, float] = {}
    acks: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        for n in counter:
            message = OutboundMessage("app@contoso.test", ("erin@fabrikam.test",),
                                      make_body(size, n, "latency"))
            outcome = await send_session(
                endpoint, SessionRequest("load.contoso.test", [message], use_bdat=False),
                reactor)
            for m in outcome.messages:
                started[f"<latency-{n}@contoso.test>"] = m.finished_at - m.elapsed
                (acks.append(m.elapsed) if m.accepted
                 else failures.append(str(m.data_reply or m.mail_reply)))
            if outcome.error:
                failures.append(outcome.error)

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(sessions)])
    sink.done.addTimeout(timeout, reactor)
    try:
        await sink.done
    except defer.TimeoutError:
        failures.append(f"only {len(sink.arrived)} of {total} reached the sink in {timeout} s")
    await listening.stopListening()
    e2e = sorted(sink.arrived[m] - started[m] for m in sink.arrived if m in started)
    return {"ack": list(_quantiles(sorted(acks))), "e2e": list(_quantiles(e2e)),
            "arrived": len(sink.arrived), "failures": failures[:5]}


def main() -> int:
    parser = argparse.ArgumentParser(description="per-message latency through a relay")
    parser.add_argument("--port", type=int, required=True, help="the relay's SMTP port")
    parser.add_argument("--sink-port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    result: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        result.update(await measure(reactor, args.port, args.sink_port, args.messages,
                                    args.sessions, args.size, args.timeout))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)), [])
    except SystemExit as stop:
        if stop.code:
            return int(stop.code) if isinstance(stop.code, int) else 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
