"""The benchmark suite (issue 8): this project side by side with Postfix, in one run on one
machine, so that only ratios measured together are compared.

Relay, for each number of concurrent sessions (``--sessions 1,20``):

* ``postfix``: smtp-source → a private Postfix instance (store and forward) → smtp-sink;
* ``emu``: smtp-source → EDGE01 → HUB01 → smtp-sink, real ``twistd`` processes, shadow
  redundancy and delayed acknowledgement on (smtp-source does not speak XSHADOW, so EDGE01
  holds each ``250`` until HUB01 delivered the message and handed back its discard
  notification), every commit durable (SQLite ``synchronous=FULL``, or ``--database-url``);
* ``emu-nodelay``: the same with delayed acknowledgement off (EDGE01's receive connector's
  MaxAcknowledgementDelay 0): EDGE01 acknowledges after its own commit and still sends on
  to HUB01 under shadow redundancy, keeping a shadow copy until HUB01's discard;
* ``emu-noshadow``: the same with ShadowRedundancyEnabled false (no XSHADOW, no delayed
  acknowledgement): what shadow redundancy adds;
* ``direct``: smtp-source → smtp-sink, the ceiling of the load tools;
* ``bare2-hold``, and when asked for ``bare``, ``bare2`` and ``bare2-hold-thread``: the floor
  of this project's stack, benchmarks/bare_relay.py — a store-and-forward relay in
  Python, Twisted and SQLite with nothing of Exchange; one hop, two hops, two hops that each
  hold their ``250`` until the next hop acknowledged (the shape of delayed acknowledgement),
  and the last committing on a writer thread as exchange-emu does.

Each relay run has two phases on fresh processes. Throughput: smtp-source sends
``--messages`` messages of ``--size`` bytes, one per session as smtp-source does, over N
sessions; msg/s is messages over the time from smtp-source's start until smtp-sink counted
the last one. CPU seconds and peak memory are those of the relay's processes in that phase;
commits are the queue databases' committed transactions (their writers' counters). Latency:
``benchmarks/_latency.py`` (our client and a stamping sink) sends ``--latency-messages`` the
same way and times each message's acknowledgement and its arrival at the sink (p50/p99).
All of it ``--rounds`` times (default 3), every system in turn; the table gives medians, the
throughput's range, and the ratio to Postfix as the median of the same-round ratios
(benchmarks/_rounds.py).

Shadow queues at scale (``--shadows``, benchmarks/shadow_queue.py): a hub's memory holding N
shadow copies, and discarding N/10 and N of them. Resubmission storm (``--storm``): EDGE01
shadows N messages held by HUB01 (whose next hop is down), HUB01 is killed, EDGE01 detects
it by heartbeat, takes the messages over and sends them through HUB02: time until all
arrived; at N/10 and N to show how it scales.

Writes the results as JSON (``--json``), the tables into docs/benchmarks.md between the
``suite`` markers (``--markdown``) and a plot (``--plot``).

    .venv/bin/python benchmarks/suite.py --messages 2000
    .venv/bin/python benchmarks/suite.py --messages 2000 --storm 10000 --shadows 100000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _postfix import PostfixRelay, postfix_tools
from _rounds import added_latency, summarize

from exchange_emu.lab.org_builder import OrgSpec, SendConnectorSpec, ServerSpec, write_org
from exchange_emu.lab.processes import ServerProcess, cpu_seconds, free_ports, peak_memory_kib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SENDER = "app@contoso.test"
RECIPIENT = "erin@fabrikam.test"
MARK_BEGIN = "<!-- suite:begin -->"
MARK_END = "<!-- suite:end -->"
DEFAULT_SYSTEMS = ("postfix", "emu", "emu-nodelay", "emu-noshadow", "direct", "bare2-hold")
FLOOR_SYSTEMS = {"bare": (1, False, False), "bare2": (2, False, False),
                 "bare2-hold": (2, True, False), "bare2-hold-thread": (2, True, True)}
"""The stack's floor (benchmarks/bare_relay.py): hops, whether each holds its 250, and
whether each commits on a writer thread."""
SYSTEMS = DEFAULT_SYSTEMS + tuple(FLOOR_SYSTEMS)
LABELS = {"postfix": "Postfix", "emu": "exchange-emu (shadow + delayed ack)",
          "emu-nodelay": "exchange-emu (shadow, no delayed ack)",
          "emu-noshadow": "exchange-emu (shadow off)", "direct": "smtp-source → smtp-sink",
          "bare": "bare Twisted relay, 1 hop (floor)",
          "bare2": "bare Twisted relay, 2 hops (floor)",
          "bare2-hold": "bare Twisted relay, 2 hops, 250 held (floor)",
          "bare2-hold-thread": "the same, commits on a writer thread (floor)"}


def _wait_until(what: str, condition: Callable[[], bool], timeout: float,
                interval: float = 0.02) -> float:
    """Poll ``condition`` (bounded); the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic()


# --- smtp-sink ---------------------------------------------------------------------------------


class SmtpSink:
    """Postfix's smtp-sink on a free port, counting messages (``-c``): the time it counted
    the n-th message is noted as its counters arrive."""

    def __init__(self, tools: dict[str, str], port: int) -> None:
        self.port = port
        self.count = 0
        self.reached: dict[int, float] = {}
        self.proc = subprocess.Popen(
            [tools["smtp-sink"], "-u", "nobody", "-c", f"127.0.0.1:{port}", "256"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        _wait_until("smtp-sink listening", self._listening, 10)

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.recv(100)
            return True
        except OSError:
            return False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buffer = b""
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            now = time.monotonic()
            buffer += chunk
            *records, buffer = re.split(rb"[\r\n]", buffer)
            for record in records:
                found = re.search(rb"mesg=(\d+)", record)
                if found:
                    self.count = int(found.group(1))
                    self.reached.setdefault(self.count, now)

    def wait_for(self, count: int, timeout: float) -> float:
        """When the sink had ``count`` messages (monotonic time)."""
        _wait_until(f"smtp-sink receiving {count} messages", lambda: self.count >= count,
                    timeout)
        return min(t for n, t in self.reached.items() if n >= count)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


# --- the relays under test -------------------------------------------------------------------


class Relay:
    """A relay under test: started fresh for each phase."""

    name = ""

    def start(self, sink_port: int) -> int:
        """Start relaying to ``sink_port``; the port to send to."""
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        return 0.0

    def peaks_kib(self) -> dict[str, int]:
        return {}

    def stop(self) -> int | None:
        """Stop; the database commits made while running, if it counts them."""
        return None


class DirectRelay(Relay):
    name = "direct"

    def start(self, sink_port: int) -> int:
        return sink_port


class PostfixSystem(Relay):
    name = "postfix"

    def __init__(self) -> None:
        self.postfix: PostfixRelay | None = None

    def start(self, sink_port: int) -> int:
        (port,) = free_ports(1)
        self.postfix = PostfixRelay(port, sink_port).start()
        return port

    def cpu_seconds(self) -> float:
        assert self.postfix is not None
        return self.postfix.cpu_seconds()

    def peaks_kib(self) -> dict[str, int]:
        assert self.postfix is not None
        return self.postfix.peak_memory_kib()

    def stop(self) -> int | None:
        if self.postfix is not None:
            self.postfix.stop()
        return None


_COMMITS = re.compile(r"closed queue database .*\((\d+) commits in (\d+) batches\)")


def stop_and_count_commits(process: ServerProcess) -> int:
    """SIGTERM a server; the commits its queue database reported when it closed."""
    process.stop()
    found: list[int] = []

    def logged() -> bool:
        found[:] = [int(m.group(1)) for line in process.lines if (m := _COMMITS.search(line))]
        return bool(found)

    try:
        _wait_until(f"{process.argv[-1]} reporting its commits", logged, 5)
    except TimeoutError:
        return 0
    return sum(found)


class EmuSystem(Relay):
    """EDGE01 → HUB01 as two twistd processes in a fresh directory."""

    def __init__(self, name: str, database_url: str | None, directory: Path) -> None:
        self.name = name
        self.shadow = name != "emu-noshadow"
        self.delayed_ack = name == "emu"
        self.database_url = database_url
        self.directory = directory
        self.processes: dict[str, ServerProcess] = {}
        self.runs = 0
        self.schemas: list[str] = []

    def _database(self, server: str) -> str | None:
        if self.database_url is None:
            return None
        # One schema per server and run: a PostgreSQL URL gets its own search_path.
        schema = f"bench_{server.lower()}_{uuid.uuid4().hex[:12]}"
        _schema(self.database_url, f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        sep = "&" if "?" in self.database_url else "?"
        return f"{self.database_url}{sep}options=-csearch_path%3D{schema}"

    def start(self, sink_port: int) -> int:
        self.runs += 1
        run_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.directory))
        hub_port, edge_port = free_ports(2)
        config = write_org(run_dir / "relay.toml", OrgSpec(
            [ServerSpec("HUB01", "hub", hub_port, database_url=self._database("HUB01")),
             ServerSpec("EDGE01", "edge", edge_port, site=None,
                        database_url=self._database("EDGE01"),
                        ack_delay=None if self.delayed_ack else "00:00:00")],
            send_connectors=[
                SendConnectorSpec("EDGE01 to HUB01", ("EDGE01",), ("HUB01",)),
                SendConnectorSpec("HUB01 to the sink", ("HUB01",), (f"127.0.0.1:{sink_port}",)),
            ],
            transport={"ShadowRedundancyEnabled": self.shadow}))
        self.processes = {
            "HUB01": ServerProcess("hub", config, "HUB01", run_dir).start(),
            "EDGE01": ServerProcess("edge", config, "EDGE01", run_dir).start(),
        }
        return edge_port

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() or 0.0 for p in self.processes.values())

    def cpu_by_process(self) -> dict[str, float]:
        return {n: p.cpu_seconds() or 0.0 for n, p in self.processes.items()}

    def peaks_kib(self) -> dict[str, int]:
        return {n: p.peak_memory_kib() or 0 for n, p in self.processes.items()}

    def stop(self) -> int | None:
        commits = sum(stop_and_count_commits(p) for p in self.processes.values())
        while self.schemas and self.database_url is not None:
            _schema(self.database_url, f'DROP SCHEMA "{self.schemas.pop()}" CASCADE')
        return commits


class BareSystem(Relay):
    """The stack's floor: ``hops`` bare relays (benchmarks/bare_relay.py) in a row."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.hops, self.hold, self.writer_thread = FLOOR_SYSTEMS[name]
        self.directory = directory
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, sink_port: int) -> int:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.directory))
        ports = free_ports(self.hops)
        next_ports = [*ports[1:], sink_port]
        for hop, (port, next_port) in enumerate(zip(ports, next_ports, strict=True)):
            process = subprocess.Popen(
                [sys.executable, str(HERE / "bare_relay.py"), "--port", str(port),
                 "--next", f"127.0.0.1:{next_port}", "--database", str(run_dir / f"{hop}.db"),
                 *(["--hold"] if self.hold else []),
                 *(["--writer-thread"] if self.writer_thread else [])],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.processes.append(process)
            assert process.stdout is not None
            line = process.stdout.readline()
            if "listening" not in line:
                self.stop()
                raise RuntimeError(f"bare relay did not start: {line.strip()}")
            # Whatever it says later (a refused message) must never fill the pipe and stop it.
            threading.Thread(target=process.stdout.read, daemon=True).start()
        return ports[0]

    def _pids(self) -> dict[str, int]:
        return {f"hop {n + 1}": p.pid for n, p in enumerate(self.processes)}

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self._pids().values())

    def peaks_kib(self) -> dict[str, int]:
        return {name: peak_memory_kib(pid) or 0 for name, pid in self._pids().items()}

    def stop(self) -> int | None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes = []
        return None


def _schema(url: str, statement: str) -> None:
    """Create or drop a PostgreSQL schema of the run."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


# --- one relay run -----------------------------------------------------------------------------


def throughput_phase(tools: dict[str, str], relay: Relay, sessions: int, messages: int,
                     size: int, timeout: float) -> dict[str, Any]:
    sink = SmtpSink(tools, free_ports(1)[0])
    try:
        port = relay.start(sink.port)
        try:
            cpu_before = relay.cpu_seconds()
            by_process_before = relay.cpu_by_process() if isinstance(relay, EmuSystem) else {}
            started = time.monotonic()
            source = subprocess.run(
                [tools["smtp-source"], "-s", str(sessions), "-m", str(messages), "-l",
                 str(size), "-f", SENDER, "-t", RECIPIENT, "-M", "load.contoso.test",
                 f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=timeout)
            if source.returncode != 0:
                raise RuntimeError(f"smtp-source failed: {source.stderr.strip()}")
            finished = sink.wait_for(messages, timeout)
            cpu = relay.cpu_seconds() - cpu_before
            by_process = ({n: round(c - by_process_before[n], 3) for n, c in
                           relay.cpu_by_process().items()}
                          if isinstance(relay, EmuSystem) else {})
            peaks = relay.peaks_kib()
        finally:
            commits = relay.stop()
    finally:
        sink.stop()
    elapsed = finished - started
    return {
        "messages": messages, "seconds": round(elapsed, 3),
        "msg_per_s": round(messages / elapsed, 1),
        "cpu_seconds": round(cpu, 3), "cpu_ms_per_message": round(cpu / messages * 1000, 3),
        "cpu_seconds_by_process": by_process,
        "peak_memory_kib": peaks,
        "commits": commits,
        "commits_per_s": round(commits / elapsed, 1) if commits is not None else None,
    }


def latency_phase(relay: Relay, sessions: int, messages: int, size: int,
                  timeout: float) -> dict[str, Any]:
    sink_port = free_ports(1)[0]
    port = relay.start(sink_port)
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "_latency.py"), "--port", str(port), "--sink-port",
             str(sink_port), "--messages", str(messages), "--sessions", str(sessions),
             "--size", str(size), "--timeout", str(timeout)],
            capture_output=True, text=True, timeout=timeout + 60, cwd=HERE)
    finally:
        relay.stop()
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"latency client failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["failures"]:
        raise RuntimeError(f"latency run failed: {result['failures']}")
    return {"messages": messages,
            "ack_ms": [round(v * 1000, 2) for v in result["ack"]],
            "e2e_ms": [round(v * 1000, 2) for v in result["e2e"]]}


def relay_rounds(args: argparse.Namespace, tools: dict[str, str], directory: Path
                 ) -> list[list[dict[str, Any]]]:
    """``--rounds`` times every system at every session count, one after the other, so
    that drift in the machine's speed reaches every system alike."""
    rounds = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"  round {number} of {args.rounds}", flush=True)
        rounds.append(relay_runs(args, tools, directory))
    return rounds


def relay_runs(args: argparse.Namespace, tools: dict[str, str], directory: Path
               ) -> list[dict[str, Any]]:
    runs = []
    for sessions in args.sessions:
        for system in args.systems:
            relay: Relay
            if system == "postfix":
                relay = PostfixSystem()
            elif system == "direct":
                relay = DirectRelay()
            elif system in FLOOR_SYSTEMS:
                relay = BareSystem(system, directory)
            else:
                relay = EmuSystem(system, args.database_url, directory)
            print(f"  {system:<13} {sessions:>2} sessions: throughput …", end="", flush=True)
            run: dict[str, Any] = {"system": system, "sessions": sessions}
            runs.append(run)
            try:
                run["throughput"] = throughput_phase(tools, relay, sessions, args.messages,
                                                     args.size, args.timeout)
                print(f" {run['throughput']['msg_per_s']:.0f} msg/s; latency …", end="",
                      flush=True)
                if system != "direct" or args.latency_direct:
                    run["latency"] = latency_phase(relay, sessions, args.latency_messages,
                                                   args.size, args.timeout)
                    print(f" p50 {run['latency']['e2e_ms'][0]:.1f} ms, "
                          f"p99 {run['latency']['e2e_ms'][1]:.1f} ms end to end", flush=True)
                else:
                    print(" skipped", flush=True)
            except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                # Noted in the results (and the table) instead of losing the whole run.
                run["error"] = str(e).splitlines()[0][:300]
                print(f" FAILED: {run['error']}", flush=True)
    return runs


# --- shadow queues and resubmission storm ------------------------------------------------------


def shadow_queue_runs(shadows: int, batch: int) -> dict[str, Any]:
    import shadow_queue

    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        directory = Path(tmp)
        empty = shadow_queue.holder_memory(directory, 0, 1024) or 0
        full = shadow_queue.holder_memory(directory, shadows, 1024) or 0
        discards = []
        for n in (max(1, shadows // 10), shadows):
            hand_out, apply = shadow_queue.time_discards(directory, n, batch, 1024)
            discards.append({"shadows": n, "hand_out_s": round(hand_out, 3),
                             "apply_s": round(apply, 3),
                             "us_per_shadow": round((hand_out + apply) / n * 1e6, 1)})
    return {"shadows": shadows, "batch": batch, "peak_kib_empty": empty,
            "peak_kib_full": full,
            "bytes_per_shadow": round((full - empty) * 1024 / shadows, 1),
            "discards": discards}


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return -1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def storm_run(tools: dict[str, str], count: int, directory: Path,
              timeout: float) -> dict[str, Any]:
    """HUB01 holds ``count`` messages shadowed by EDGE01 and dies; EDGE01 resubmits them
    through HUB02."""
    run_dir = directory / f"storm-{count}"
    run_dir.mkdir()
    hub1, hub2, edge, dead = free_ports(4)
    sink = SmtpSink(tools, free_ports(1)[0])
    config = write_org(run_dir / "storm.toml", OrgSpec(
        [ServerSpec("HUB01", "hub", hub1), ServerSpec("HUB02", "hub", hub2),
         ServerSpec("EDGE01", "edge", edge, site=None, ack_delay="00:00:00")],
        send_connectors=[
            SendConnectorSpec("EDGE01 to the hubs", ("EDGE01",), ("HUB01", "HUB02")),
            SendConnectorSpec("HUB01 to nowhere", ("HUB01",), (f"127.0.0.1:{dead}",)),
            SendConnectorSpec("HUB02 to the sink", ("HUB02",), (f"127.0.0.1:{sink.port}",)),
        ],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:01",
                   "ShadowHeartbeatRetryCount": 2}))
    edge_db = run_dir / "var" / "EDGE01" / "queue.db"
    hub_db = run_dir / "var" / "HUB01" / "queue.db"
    held_by_hub01 = "SELECT count(*) FROM shadow_messages WHERE primary_server = 'HUB01'"
    processes = {"HUB01": ServerProcess("hub", config, "HUB01", run_dir).start(),
                 "EDGE01": ServerProcess("edge", config, "EDGE01", run_dir).start()}
    try:
        hub_rss_before = _rss_kib(processes["HUB01"].pid)
        edge_rss_before = _rss_kib(processes["EDGE01"].pid)
        loaded_at = time.monotonic()
        source = subprocess.run(
            [tools["smtp-source"], "-s", "20", "-m", str(count), "-l", "10240", "-f", SENDER,
             "-t", RECIPIENT, "-M", "load.contoso.test", f"127.0.0.1:{edge}"],
            capture_output=True, text=True, timeout=timeout)
        if source.returncode != 0:
            raise RuntimeError(f"smtp-source failed: {source.stderr.strip()}")
        _wait_until(f"EDGE01 shadowing {count} messages for HUB01",
                    lambda: _count(edge_db, held_by_hub01) >= count, timeout, 0.1)
        loaded = time.monotonic() - loaded_at
        queued = _count(hub_db, "SELECT count(*) FROM messages")
        hub_rss = _rss_kib(processes["HUB01"].pid)
        edge_rss = _rss_kib(processes["EDGE01"].pid)
        processes["HUB02"] = ServerProcess("hub", config, "HUB02", run_dir).start()
        killed = time.monotonic()
        processes["HUB01"].kill()
        taken = _wait_until("EDGE01 taking over HUB01's messages",
                            lambda: _count(edge_db, held_by_hub01) == 0, timeout, 0.01)
        arrived = sink.wait_for(count, timeout)
        # The takeover happened before the resubmitted copies arrived, whatever the poll
        # saw: with a few messages the sink can count them all before the next poll.
        taken = min(taken, arrived)
    finally:
        for name, process in processes.items():
            if name != "HUB01" or (process.proc and process.proc.poll() is None):
                process.stop()
        sink.stop()
    return {
        "messages": count, "load_seconds": round(loaded, 2),
        "hub01_queued": queued,
        "hub01_rss_bytes_per_queued": round((hub_rss - hub_rss_before) * 1024 / count, 1),
        "edge01_rss_bytes_per_shadow": round((edge_rss - edge_rss_before) * 1024 / count, 1),
        "detect_seconds": round(taken - killed, 3),
        "resubmit_seconds": round(arrived - taken, 3),
        "total_seconds": round(arrived - killed, 3),
        "resubmitted_per_s": round(count / max(arrived - taken, 0.001), 1),
    }


# --- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "load_average": [round(v, 2) for v in load],
            "python": platform.python_version(), "platform": platform.platform(),
            "postfix": subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                      capture_output=True, text=True).stdout.strip()}


def _ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return "–"
    return f"{value / reference:.2f}×"


def _pair(values: list[float]) -> str:
    return f"{values[0]:.1f} / {values[1]:.1f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    rounds = max((r.get("rounds", 1) for r in results["relay"]), default=1)
    medians = (f" Relay figures are medians of {rounds} rounds (every system in turn); "
               "msg/s gives the range too, and the ratio to Postfix is the median of the "
               "ratios measured in the same round, with their range." if rounds > 1 else "")
    lines = [
        f"Run {results['started']} with `{results['command']}`; "
        f"{m['cpus']} CPUs, load average at start {m['load_average_start']} and at end "
        f"{m['load_average']}, Python {m['python']}, Postfix {m['postfix']}, "
        f"{results['size']}-byte messages, {results['database']}.{medians}",
        "",
        "| system | sessions | msg/s | ratio to Postfix | ack p50 / p99 ms | "
        "end-to-end p50 / p99 ms | CPU ms/msg | commits/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    postfix = {r["sessions"]: r for r in results["relay"]
               if r["system"] == "postfix" and "throughput" in r}
    for r in results["relay"]:
        if "throughput" not in r:
            lines.append(f"| {LABELS[r['system']]} | {r['sessions']} | failed: "
                         f"{r.get('error', '?')} ||||||")
            continue
        t = r["throughput"]
        lat = r.get("latency")
        reference = postfix.get(r["sessions"])
        peaks = ", ".join(f"{n} {_mib(k)}" for n, k in sorted(
            t["peak_memory_kib"].items(), key=lambda kv: -kv[1])[:3]) or "–"
        spread = t.get("msg_per_s_range")
        rate = f"{t['msg_per_s']:.0f}" + (f" ({spread[0]:.0f}–{spread[1]:.0f})"
                                          if spread and rounds > 1 else "")
        ratio = (f"{r['ratio_to_postfix']:.2f}×" if "ratio_to_postfix" in r else _ratio(
            t["msg_per_s"], reference["throughput"]["msg_per_s"] if reference else None))
        ratios = r.get("ratio_to_postfix_range")
        if ratios and rounds > 1:
            ratio += f" ({ratios[0]:.2f}–{ratios[1]:.2f})"
        lines.append(
            f"| {LABELS[r['system']]} | {r['sessions']} | {rate} | {ratio}"
            f" | {_pair(lat['ack_ms']) if lat else '–'} | "
            f"{_pair(lat['e2e_ms']) if lat else '–'} | "
            f"{'–' if r['system'] == 'direct' else format(t['cpu_ms_per_message'], '.2f')} | "
            f"{t['commits_per_s'] if t['commits_per_s'] is not None else '–'} | {peaks} |"
            + (f" latency failed: {r['error']}" if "error" in r else ""))
    added = added_latency(results["relay"])
    if added:
        lines += ["", "Added by shadow redundancy and delayed acknowledgement to the sender's "
                  "acknowledgement at p99 (exchange-emu minus exchange-emu with shadow off): "
                  + ", ".join(f"{ms:+.1f} ms at {n} session{'s' if n != 1 else ''}"
                              for n, ms in added.items()) + "."]
    added = added_latency(results["relay"], "emu-nodelay")
    if added:
        lines += ["", "Added by shadow redundancy alone (exchange-emu without delayed "
                  "acknowledgement minus exchange-emu with shadow off), at p99: "
                  + ", ".join(f"{ms:+.1f} ms at {n} session{'s' if n != 1 else ''}"
                              for n, ms in added.items()) + "."]
    floor = _share_of_floor(results["relay"])
    if floor:
        lines += ["", "Against the stack's floor (the bare relay, two hops, each `250` held): "
                  "exchange-emu with delayed acknowledgement relays "
                  + ", ".join(f"{share:.0%} of its throughput at {n} session"
                              f"{'s' if n != 1 else ''}" for n, share in floor.items()) + "."]
    sq = results.get("shadow_queue")
    if sq:
        lines += ["", f"Shadow queues: a hub holding {sq['shadows']} shadow copies (1 KB bodies): "
                  f"peak RSS {_mib(sq['peak_kib_empty'])} MiB empty, "
                  f"{_mib(sq['peak_kib_full'])} MiB full = {sq['bytes_per_shadow']:.0f} bytes per "
                  f"shadow. Discarding (XQDISCARD batches of {sq['batch']}):", "",
                  "| shadows | primary hands out s | holder drops s | µs per shadow |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {d['shadows']} | {d['hand_out_s']:.2f} | {d['apply_s']:.2f} | "
                  f"{d['us_per_shadow']:.0f} |" for d in sq["discards"]]
    if results.get("storm"):
        lines += ["", "Resubmission storm: HUB01 holds N messages shadowed by EDGE01 (its next "
                  "hop down) and is killed; EDGE01 detects it (heartbeat every 1 s, retry "
                  "count 2), takes the messages over and sends them through HUB02 to "
                  "smtp-sink:", "",
                  "| N | detect s | resubmit s | resubmitted msg/s | HUB01 RSS bytes per queued "
                  "message | EDGE01 RSS bytes per shadow |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['messages']} | {s['detect_seconds']:.2f} | {s['resubmit_seconds']:.2f}"
                  f" | {s['resubmitted_per_s']:.0f} | {s['hub01_rss_bytes_per_queued']:.0f} | "
                  f"{s['edge01_rss_bytes_per_shadow']:.0f} |" for s in results["storm"]]
    return "\n".join(lines) + "\n"


def _share_of_floor(relay: list[dict[str, Any]]) -> dict[int, float]:
    """Per session count: exchange-emu's throughput (shadow + delayed ack) over the floor's
    of the same shape (``bare2-hold``), where both ran."""
    rates = {(r["system"], r["sessions"]): r["throughput"]["msg_per_s"] for r in relay
             if "throughput" in r}
    return {n: rate / rates[("bare2-hold", n)] for (system, n), rate in sorted(rates.items())
            if system == "emu" and rates.get(("bare2-hold", n))}


def write_markdown(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in text:
        text += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_BEGIN}\n{table}{MARK_END}{tail}")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, system in enumerate(results["systems"]):
        color = f"C{SYSTEMS.index(system) if system in SYSTEMS else index}"
        runs = sorted((r for r in results["relay"] if r["system"] == system
                       and "throughput" in r), key=lambda r: r["sessions"])
        if not runs:
            continue
        sessions = [r["sessions"] for r in runs]
        floor = system in FLOOR_SYSTEMS  # dotted, and only its p99: the yardstick, not a relay
        left.plot(sessions, [r["throughput"]["msg_per_s"] for r in runs], marker="o",
                  color=color, linestyle=":" if floor else "-", label=LABELS[system])
        with_latency = [r for r in runs if "latency" in r]
        if with_latency:
            right.plot([r["sessions"] for r in with_latency],
                       [r["latency"]["e2e_ms"][1] for r in with_latency], marker="o",
                       color=color, linestyle=":" if floor else "-",
                       label=f"{LABELS[system]} p99")
            if not floor:
                right.plot([r["sessions"] for r in with_latency],
                           [r["latency"]["e2e_ms"][0] for r in with_latency], marker=".",
                           color=color, linestyle="--", label=f"{LABELS[system]} p50")
    left.set(title="Relay throughput (end to end)", xlabel="concurrent sessions",
             ylabel="messages/s", yscale="log")
    right.set(title="End-to-end latency per message", xlabel="concurrent sessions",
              ylabel="ms", yscale="log")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(f"{results['size']}-byte messages, {results['machine']['cpus']} CPUs, "
                 f"load average {results['machine']['load_average_start'][0]} at start",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 up, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,20, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts must be at least 1")
    return values


def _systems(text: str) -> list[str]:
    systems = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown system {unknown[0]!r} (choose from {', '.join(SYSTEMS)})")
    return systems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="exchange-emu beside Postfix, in one run")
    parser.add_argument("--messages", type=int, default=2000, help="per throughput run")
    parser.add_argument("--latency-messages", type=int, default=500, help="per latency run")
    parser.add_argument("--sessions", type=_int_list, default=[1, 20], help="e.g. 1,20")
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="relay runs of every system, in turn; medians are reported")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--systems", type=_systems, default=list(DEFAULT_SYSTEMS),
                        help=f"comma-separated, from {','.join(SYSTEMS)} (default: "
                             f"{','.join(DEFAULT_SYSTEMS)})")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server for the queue databases (default: SQLite)")
    parser.add_argument("--shadows", type=int, default=100_000, help="0 skips this part")
    parser.add_argument("--discard-batch", type=int, default=1000, help="XQDISCARD <max>")
    parser.add_argument("--storm", type=int, default=1000,
                        help="messages held by the primary that dies (run at N/10 and N; "
                             "0 skips)")
    parser.add_argument("--latency-direct", action="store_true",
                        help="also time latency for smtp-source → smtp-sink's ceiling")
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "benchmarks.png")
    args = parser.parse_args(argv)

    tools = postfix_tools()
    if tools is None:
        print("suite: error: Postfix's postfix, smtp-source and smtp-sink are needed "
              "(apt-get install postfix)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("suite: error: a private Postfix instance and smtp-sink -u nobody need root",
              file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["benchmarks/suite.py", *(argv if argv is not None
                                                      else sys.argv[1:])]),
        "size": args.size, "systems": args.systems,
        "database": "PostgreSQL" if args.database_url else "SQLite (synchronous=FULL, WAL)",
    }
    load_start = [round(v, 2) for v in os.getloadavg()]
    print(f"benchmark suite: load average {load_start}", flush=True)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="exchange-emu-bench-") as tmp:
        directory = Path(tmp)
        results["rounds"] = relay_rounds(args, tools, directory)
        results["relay"] = summarize(results["rounds"])
        if args.shadows:
            print(f"  shadow queues: {args.shadows} shadows …", flush=True)
            results["shadow_queue"] = shadow_queue_runs(args.shadows, args.discard_batch)
        if args.storm:
            results["storm"] = []
            for n in sorted({max(1, args.storm // 10), args.storm}):
                print(f"  resubmission storm: {n} messages …", end="", flush=True)
                try:
                    results["storm"].append(storm_run(tools, n, directory, args.timeout))
                except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                    results.setdefault("errors", []).append(f"storm {n}: {e}")
                    print(f" FAILED: {e}", flush=True)
                    continue
                print(f" {results['storm'][-1]['total_seconds']:.2f} s", flush=True)
    results["machine"] = machine()
    results["machine"]["load_average_start"] = load_start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    write_markdown(args.markdown, table)
    written = [str(args.json), str(args.markdown)]
    if any("throughput" in r for r in results["relay"]):
        plot(results, args.plot)
        written.append(str(args.plot))
    else:  # (a storm-only run must not replace the relay plot with an empty one)
        print(f"no relay figures: {args.plot} left as it was")
    print(table)
    print(f"wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
