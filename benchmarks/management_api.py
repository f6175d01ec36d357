"""How fast the management API answers on a loaded hub: N messages wait in one real hub's
Unreachable queue (their domain has no route), then Get-Queue, Get-Message (all N) and
Export-Message of one large message are timed on the hub's own admin endpoint.

    .venv/bin/python benchmarks/management_api.py --messages 2000 --export-size 8388608

Prints the median and worst latency of each call, and the export's throughput.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from exchange_emu.lab.org_builder import OrgSpec, ServerSpec, write_org
from exchange_emu.lab.processes import ServerProcess, free_ports

PER_CONNECTION = 20  # the receive connector's MaxMessagesPerConnection


def fetch(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    return time.perf_counter() - started, data


def timed(url: str, repeat: int) -> tuple[list[float], bytes]:
    times, data = [], b""
    for _ in range(repeat):
        elapsed, data = fetch(url)
        times.append(elapsed)
    return times, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--export-size", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port = free_ports(1)[0]
        config = write_org(directory / "bench.toml",
                           OrgSpec([ServerSpec("HUB01", "hub", port)]))
        hub = ServerProcess("hub", config, "HUB01", directory).start()
        try:
            big = (b"Subject: big\r\nMessage-ID: <big@contoso.test>\r\n\r\n"
                   + b"x" * 998 + b"\r\n") * max(1, args.export_size // 1000)
            sent = 0
            while sent < args.messages:
                with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                    for _ in range(min(PER_CONNECTION, args.messages - sent)):
                        body = big if sent == 0 else (
                            b"Subject: m%d\r\nMessage-ID: <m%d@contoso.test>\r\n\r\nhi\r\n"
                            % (sent, sent))
                        client.sendmail("app@contoso.test", ["erin@fabrikam.test"], body)
                        sent += 1
            address = (directory / "var" / "HUB01" / "admin.address").read_text().strip()
            base = f"http://{address}/api"
            deadline = time.monotonic() + 120
            while True:  # until the categorizer has parked every message
                queues = json.loads(fetch(f"{base}/queues")[1])
                parked = sum(q["MessageCount"] for q in queues
                             if q["Identity"].endswith("\\Unreachable"))
                if parked >= args.messages or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            q_times, _ = timed(f"{base}/queues", args.repeat)
            m_times, listed = timed(f"{base}/messages?result_size=unlimited", args.repeat)
            rows = json.loads(listed)
            big_id = next(r["Identity"] for r in rows
                          if r["InternetMessageId"] == "<big@contoso.test>")
            e_times, exported = timed(
                f"{base}/message/export?identity={urllib.parse.quote(big_id)}", 3)
        finally:
            hub.stop()
    print(f"hub with {parked} messages in Unreachable ({args.messages} sent)")
    for name, times in (("Get-Queue", q_times), (f"Get-Message ({len(rows)} rows)", m_times),
                        (f"Export-Message ({len(exported)} bytes)", e_times)):
        print(f"{name:34} median {statistics.median(times) * 1000:8.1f} ms   "
              f"worst {max(times) * 1000:8.1f} ms")
    print(f"export throughput {len(exported) / statistics.median(e_times) / 2**20:.1f} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
