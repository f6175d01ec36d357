"""Push N messages of S bytes over M concurrent SMTP sessions into one hub
transport server (a real ``twistd exchange-hub`` process that accepts and
commits), and print throughput, per-message latency and the hub's peak memory.

The recipients are in a domain no send connector serves, so after the commit
the categorizer parks them in the Unreachable queue: the hub does the whole
receive side (parse, commit, categorize) and sends nothing.

    .venv/bin/python benchmarks/hub_sink.py --messages 2000 --sessions 20 --size 10240
    .venv/bin/python benchmarks/hub_sink.py --database-url postgresql://postgres@127.0.0.1/test

Every message counted was acknowledged with ``250 2.6.0`` - i.e. committed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _messages import make_body
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from exchange_emu.lab.org_builder import OrgSpec, ServerSpec
from exchange_emu.lab.org_builder import write_org as write_org_file
from exchange_emu.lab.processes import ServerProcess, free_ports
from exchange_emu.smtp.client import OutboundMessage, SessionRequest, send_session

MESSAGES_PER_SESSION = 20  # Exchange's MaxMessagesPerConnection


def write_org(directory: Path, port: int, database_url: str | None) -> Path:
    spec = OrgSpec([ServerSpec("HUB01", "hub", port, database_url=database_url)])
    return write_org_file(directory / "bench.toml", spec)


async def load(reactor: Any, port: int, total: int, sessions: int, size: int) -> dict[str, Any]:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    counter = iter(range(total))
    latencies: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        while True:
            batch = [n for _, n in zip(range(MESSAGES_PER_SESSION), counter, strict=False)]
            if not batch:
                return
            messages = [OutboundMessage("app@contoso.test", ("erin@fabrikam.test",),
                                        make_body(size, n, "bench")) for n in batch]
            outcome = await send_session(endpoint, SessionRequest("load.contoso.test", messages),
                                         reactor)
            for m in outcome.messages:
                (latencies.append(m.elapsed) if m.accepted
                 else failures.append(str(m.data_reply or m.mail_reply)))
            if outcome.error or len(outcome.messages) != len(messages):
                failures.append(outcome.error or "short session")

    started = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(sessions)])
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (port,) = free_ports(1)
        config = write_org(directory, port, args.database_url)
        hub = ServerProcess("hub", config, "HUB01", directory).start()
        try:
            result: dict[str, Any] = {}

            async def run(reactor: Any) -> None:
                result.update(await load(reactor, port, args.messages, args.sessions, args.size))

            task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)), [])
        except SystemExit:
            pass
        finally:
            peak = hub.peak_memory_kib()
            cpu = hub.cpu_seconds()
            hub.stop()
    latencies = sorted(result["latencies"])
    accepted = len(latencies)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"hub sink: {accepted} of {args.messages} messages of {args.size} bytes accepted "
          f"over {args.sessions} sessions in {result['elapsed']:.2f} s "
          f"({'SQLite' if not args.database_url else args.database_url.split(':')[0]})")
    print(f"  throughput      {accepted / result['elapsed']:.0f} messages/s")
    print(f"  latency p50/p99 {q[49] * 1000:.1f} / {q[98] * 1000:.1f} ms  (MAIL to 250 2.6.0)")
    if cpu is not None and accepted:
        print(f"  hub CPU         {cpu / accepted * 1000:.2f} ms per message")
    print(f"  hub peak memory {peak / 1024:.1f} MiB" if peak else "  hub peak memory n/a")
    if result["failures"]:
        print(f"  FAILURES: {len(result['failures'])}, first: {result['failures'][0]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
