"""Where a relayed message's time goes, from the servers' own message tracking logs.

smtp-source → EDGE01 → HUB01 → smtp-sink (shadow redundancy and delayed acknowledgement on,
as in benchmarks/suite.py); afterwards, for every message, the time between consecutive
tracking rows — EDGE01 ``RECEIVE`` (committed) → EDGE01 ``SEND`` (HUB01's 250) → HUB01
``RECEIVE`` → HUB01 ``SEND`` (the sink's 250) → HUB01 ``NOTIFYSHADOW`` (discard notification
recorded) → EDGE01 ``HADISCARD`` (asked for it) → EDGE01 ``RECEIVE`` F.7 (the held 250 sent) —
as median and 90th percentile (rows have millisecond time stamps), with each server's CPU per
message and the number of SMTP sessions each opened. One more line splits out the first
stage's wait in EDGE01's delivery queue: EDGE01 ``RECEIVE`` → the ``MAIL FROM … XSHADOW=<id>``
for that message in EDGE01's send protocol log (the id is in EDGE01's ``HAREDIRECT`` row).

    .venv/bin/python benchmarks/timeline.py --messages 2000 --sessions 20
    .venv/bin/python benchmarks/timeline.py --messages 300 --sessions 1 --keep /tmp/timeline
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _postfix import postfix_tools
from _workdir import add_keep_option, work_directory
from relay import write_org

from exchange_emu.lab.processes import ServerProcess, free_ports

STAGES = ["EDGE01 RECEIVE", "EDGE01 SEND", "HUB01 RECEIVE", "HUB01 SEND",
          "HUB01 NOTIFYSHADOW", "EDGE01 HADISCARD", "EDGE01 RECEIVE F.7"]
QUEUE_WAIT = ("EDGE01 RECEIVE", "EDGE01 MAIL to HUB01")
"""EDGE01's commit → its MAIL command for the message: the wait in the delivery queue."""
_SHADOW_ID = re.compile(r"shadow_message_id=([0-9A-Za-z-]+)")
_XSHADOW = re.compile(r"XSHADOW=([0-9A-Za-z-]+)")


def log_rows(directory: Path) -> list[list[str]]:
    """The CSV rows of every ``*.LOG`` file in ``directory`` (a tracking or protocol log)."""
    rows: list[list[str]] = []
    for log in sorted(directory.glob("*.LOG")):
        with log.open(newline="") as f:
            rows.extend(csv.reader(line for line in f if not line.startswith("#")))
    return rows


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def timeline(data_dir: Path) -> dict[str, dict[str, float]]:
    """First time stamp of each stage per Message-ID."""
    stages: dict[str, dict[str, float]] = collections.defaultdict(dict)
    message_of_shadow: dict[str, str] = {}
    for server in ("EDGE01", "HUB01"):
        for row in log_rows(data_dir / server / "TransportRoles/Logs/MessageTracking"):
            stage = f"{server} {row[8]}" + (" F.7" if "F.7" in row[-1] else "")
            stages[row[10]].setdefault(stage, _seconds(row[0]))
            shadow = _SHADOW_ID.search(row[-1]) if stage == "EDGE01 HAREDIRECT" else None
            if shadow:
                message_of_shadow[shadow[1]] = row[10]
    for row in log_rows(data_dir / "EDGE01/TransportRoles/Logs/ProtocolLog/SmtpSend"):
        shadow = _XSHADOW.search(row[7]) if row[6] == ">" else None
        if shadow and shadow[1] in message_of_shadow:
            stages[message_of_shadow[shadow[1]]].setdefault(QUEUE_WAIT[1], _seconds(row[0]))
    return stages


def sessions_opened(data_dir: Path, server: str) -> int:
    count = 0
    for log in (data_dir / server / "TransportRoles/Logs/ProtocolLog/SmtpSend").glob("*.LOG"):
        count += sum(1 for line in log.open() if ",+,," in line)
    return count


def run(directory: Path, messages: int, sessions: int, size: int,
        timeout: float) -> dict[str, Any]:
    tools = postfix_tools()
    if tools is None:
        raise SystemExit("timeline: Postfix's smtp-source and smtp-sink are needed "
                         "(apt-get install postfix)")
    ports = dict(zip(("HUB01", "EDGE01", "SINK"), free_ports(3), strict=True))
    config = write_org(directory, ports, True)
    sink = subprocess.Popen([tools["smtp-sink"], "-u", "nobody", f"127.0.0.1:{ports['SINK']}",
                             "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = {name: ServerProcess("edge" if name == "EDGE01" else "hub", config, name,
                                     directory).start() for name in ("HUB01", "EDGE01")}
    try:
        before = {n: p.cpu_seconds() or 0.0 for n, p in processes.items()}
        started = time.monotonic()
        subprocess.run([tools["smtp-source"], "-s", str(sessions), "-m", str(messages), "-l",
                        str(size), "-f", "app@contoso.test", "-t", "erin@fabrikam.test",
                        "-M", "load.contoso.test", f"127.0.0.1:{ports['EDGE01']}"],
                       check=True, timeout=timeout)
        elapsed = time.monotonic() - started
        cpu = {n: (p.cpu_seconds() or 0.0) - before[n] for n, p in processes.items()}
    finally:
        for p in processes.values():
            p.stop()  # (flushes the logs)
        sink.terminate()
        sink.wait(10)
    data_dir = directory / "var"
    stages = timeline(data_dir)
    gaps = {}
    for first, then in [QUEUE_WAIT, *itertools.pairwise(STAGES)]:
        values = sorted((m[then] - m[first]) * 1000 for m in stages.values()
                        if first in m and then in m)
        if values:
            gaps[f"{first} → {then}"] = {
                "messages": len(values), "p50_ms": statistics.median(values),
                "p90_ms": values[int(len(values) * 0.9)]}
    return {"messages": messages, "sessions": sessions, "seconds": elapsed,
            "cpu_ms_per_message": {n: c * 1000 / messages for n, c in cpu.items()},
            "sessions_opened": {n: sessions_opened(data_dir, n) for n in ("EDGE01", "HUB01")},
            "stages": gaps}


def main() -> int:
    parser = argparse.ArgumentParser(description="per-stage time of relayed messages")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--timeout", type=float, default=600.0)
    add_keep_option(parser)
    args = parser.parse_args()
    with work_directory(args.keep) as directory:
        result = run(directory, args.messages, args.sessions, args.size, args.timeout)
    print(f"{result['messages']} messages of {args.size} bytes over {result['sessions']} "
          f"smtp-source sessions: {result['messages'] / result['seconds']:.0f} msg/s "
          "(until smtp-source is done)")
    for name, ms in result["cpu_ms_per_message"].items():
        print(f"  {name:<7} CPU {ms:.2f} ms/message, "
              f"{result['sessions_opened'][name]} outbound sessions")
    for stage, figures in result["stages"].items():
        print(f"  {stage:<42} p50 {figures['p50_ms']:6.1f} ms   p90 {figures['p90_ms']:6.1f} ms"
              f"   ({figures['messages']} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
