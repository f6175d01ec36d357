"""End-to-end relay through real server processes:

    load client → EDGE01 → HUB01 → sink        (--path edge-hub, the default)
    load client → HUB01 → sink                 (--path hub)
    load client → sink                         (--path direct: the ceiling)

EDGE01 and HUB01 are ``twistd`` processes; the load client and the sink run in
this process (our ESMTP client; a sink built on our SMTP server that commits
nothing). EDGE01 → HUB01 is a shadowed session (scenario D) unless --shadow off
sets ShadowRedundancyEnabled to false; HUB01 → sink is scenario E.

It prints messages per second end to end, the end-to-end latency per message
(from the message's MAIL to its arrival at the sink, p50/p99), the first hop's acknowledgement
latency, CPU time per message and peak memory of each server process.

    .venv/bin/python benchmarks/relay.py --messages 2000 --sessions 20
    .venv/bin/python benchmarks/relay.py --messages 2000 --sessions 20 --shadow off
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from _messages import make_body
from _workdir import add_keep_option, work_directory
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from zope.interface import implementer

from exchange_emu.lab.org_builder import OrgSpec, SendConnectorSpec, ServerSpec
from exchange_emu.lab.org_builder import write_org as write_org_file
from exchange_emu.lab.processes import ServerProcess, free_ports
from exchange_emu.smtp.client import OutboundMessage, SessionRequest, send_session
from exchange_emu.smtp.interfaces import (
    Acceptance,
    IReceivePolicy,
    ReceivedMessage,
    ServerSettings,
    SessionInfo,
)
from exchange_emu.smtp.server import ExchangeESMTPFactory

MESSAGES_PER_SESSION = 20


def write_org(directory: Path, ports: dict[str, int], shadow: bool) -> Path:
    spec = OrgSpec(
        [ServerSpec("HUB01", "hub", ports["HUB01"]),
         ServerSpec("EDGE01", "edge", ports["EDGE01"], site=None)],
        send_connectors=[
            SendConnectorSpec("EDGE01 to HUB01", ("EDGE01",), ("HUB01",)),
            SendConnectorSpec("HUB01 to the sink", ("HUB01",), (f"127.0.0.1:{ports['SINK']}",)),
        ],
        transport={"ShadowRedundancyEnabled": shadow,
                   "ShadowHeartbeatTimeoutInterval": "00:00:05"},
    )
    return write_org_file(directory / "relay.toml", spec)


@implementer(IReceivePolicy)
class SinkPolicy:
    """Accepts everything, stores nothing, notes when each message arrived."""

    shadow_redundancy_enabled = False

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.arrived: dict[str, float] = {}
        self.done: defer.Deferred[None] = defer.Deferred()
        self.expected = 0

    def database_id(self) -> str:
        return "AAAAAAAAAAAAAAAAAAAAAA=="

    def is_org_server(self, session: SessionInfo) -> bool:
        return False

    def certificate_server(self, session: SessionInfo) -> str | None:
        return None

    def check_sender(self, session: Any, sender: str, params: Any) -> None:
        return None

    def check_recipient(self, session: Any, sender: str, recipient: Any) -> None:
        return None

    def accept(self, message: ReceivedMessage) -> defer.Deferred[Acceptance]:
        self.arrived.setdefault(message.message_id, self.clock.seconds())
        if len(self.arrived) >= self.expected and not self.done.called:
            self.done.callback(None)
        return defer.succeed(Acceptance(len(self.arrived), message.message_id))

    def take_discards(self, session: Any, maximum: int) -> defer.Deferred[list[str]]:
        return defer.succeed([])


async def run_load(reactor: Any, first_hop: int, sink: SinkPolicy, total: int,
                   sessions: int, size: int, timeout: float,
                   per_session: int = MESSAGES_PER_SESSION) -> dict[str, Any]:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", first_hop)
    counter = iter(range(total))
    submitted: dict[str, float] = {}
    acks: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        while True:
            batch = [n for _, n in zip(range(per_session), counter, strict=False)]
            if not batch:
                return
            messages = [OutboundMessage("app@contoso.test", ("erin@fabrikam.test",),
                                        make_body(size, n, "relay")) for n in batch]
            outcome = await send_session(endpoint, SessionRequest("load.contoso.test", messages),
                                         reactor)
            for n, m in zip(batch, outcome.messages, strict=False):
                # When this message's MAIL went out (not the session's start).
                submitted[f"<relay-{n}@contoso.test>"] = m.finished_at - m.elapsed
            for m in outcome.messages:
                (acks.append(m.elapsed) if m.accepted
                 else failures.append(str(m.data_reply or m.mail_reply)))
            if outcome.error:
                failures.append(outcome.error)

    sink.expected = total
    started = reactor.seconds()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(sessions)])
    sink.done.addTimeout(timeout, reactor)
    try:
        await sink.done
    except defer.TimeoutError:
        failures.append(f"only {len(sink.arrived)} of {total} reached the sink in {timeout} s")
    elapsed = max(sink.arrived.values(), default=reactor.seconds()) - started
    latencies = [sink.arrived[m] - submitted[m] for m in sink.arrived if m in submitted]
    return {"elapsed": elapsed, "latencies": latencies, "acks": acks, "failures": failures,
            "arrived": len(sink.arrived)}


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0] if values else 0.0,) * 2  # type: ignore[return-value]
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def main() -> int:
    parser = argparse.ArgumentParser(description="end-to-end relay benchmark")
    parser.add_argument("--path", choices=("edge-hub", "hub", "direct"), default="edge-hub")
    parser.add_argument("--shadow", choices=("on", "off"), default="on")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--per-session", type=int, default=MESSAGES_PER_SESSION,
                        help="messages per load session (smtp-source sends 1)")
    add_keep_option(parser)
    args = parser.parse_args()

    with work_directory(args.keep) as directory:
        ports = dict(zip(("HUB01", "EDGE01", "SINK"), free_ports(3), strict=True))
        config = write_org(directory, ports, args.shadow == "on")
        servers = {"edge-hub": ["HUB01", "EDGE01"], "hub": ["HUB01"], "direct": []}[args.path]
        processes = {name: ServerProcess("edge" if name == "EDGE01" else "hub", config, name,
                                         directory).start() for name in servers}
        first_hop = ports[servers[-1]] if servers else ports["SINK"]
        result: dict[str, Any] = {}
        cpu: dict[str, float] = {}
        peaks: dict[str, int | None] = {}

        async def run(reactor: Any) -> None:
            sink = SinkPolicy(reactor)
            factory = ExchangeESMTPFactory(ServerSettings("sink", "sink.fabrikam.test",
                                                          max_message_size=0), sink, reactor)
            port = await TCP4ServerEndpoint(reactor, ports["SINK"],
                                            interface="127.0.0.1").listen(factory)
            before = {n: (p.cpu_seconds() or 0.0) for n, p in processes.items()}
            result.update(await run_load(reactor, first_hop, sink, args.messages,
                                         args.sessions, args.size, args.timeout,
                                         args.per_session))
            for n, p in processes.items():
                cpu[n] = (p.cpu_seconds() or 0.0) - before[n]
                peaks[n] = p.peak_memory_kib()
            await port.stopListening()

        try:
            task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)), [])
        except SystemExit:
            pass
        finally:
            for p in processes.values():
                p.stop()

    arrived = result.get("arrived", 0)
    p50, p99 = _quantiles(sorted(result.get("latencies", [])))
    a50, a99 = _quantiles(sorted(result.get("acks", [])))
    hops = " → ".join(["client", *reversed(servers), "sink"])
    print(f"relay {hops}: {arrived} of {args.messages} messages of {args.size} bytes over "
          f"{args.sessions} sessions, shadow redundancy {args.shadow}")
    print(f"  throughput              {arrived / max(result.get('elapsed', 1), 1e-9):.0f} "
          "messages/s end to end")
    print(f"  end-to-end latency      p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(f"  first-hop ack latency   p50 {a50 * 1000:.1f} ms, p99 {a99 * 1000:.1f} ms")
    for name in servers:
        per = cpu[name] / arrived * 1000 if arrived else 0.0
        peak = peaks[name]
        print(f"  {name:<8} CPU {per:.2f} ms/message, peak memory "
              f"{peak / 1024 if peak else 0:.1f} MiB")
    if result.get("failures"):
        print(f"  FAILURES: {len(result['failures'])}, first: {result['failures'][0]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
