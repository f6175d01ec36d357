"""The lab's side of fault injection: writing each server's fault plan
(``<data_dir>/faults.json``, read by ``exchange_emu.fault_plan``), and wiping a
server's queue database (a lost disk).

Plans are files, so these work whether the lab runs one process per server or
``--single-process``, with or without the lab admin endpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from exchange_emu.directory import Organization, Server
from exchange_emu.fault_plan import APPLIED_FILE, PARTITION_MODES, PLAN_FILE, normalize_stage


class FaultError(Exception):
    """A fault request that cannot be carried out; the message says what to do."""


DEFAULT_TEXT = {2: "2.0.0 OK (fault injection)", 4: "4.3.2 Temporary failure (fault injection)",
                5: "5.3.0 Permanent failure (fault injection)"}


def server_named(organization: Organization, name: str) -> Server:
    known = {n.lower(): n for n in organization.servers}
    if name.lower() not in known:
        raise FaultError(f"no server named {name!r} (known: {', '.join(known.values())})")
    return organization.servers[known[name.lower()]]


def plan_path(server: Server) -> Path:
    return Path(server.data_dir) / PLAN_FILE


def read_plan(server: Server) -> dict[str, Any]:
    try:
        data = json.loads(plan_path(server).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise FaultError(f"{plan_path(server)} is not valid JSON ({e}); delete it") from None
    return data if isinstance(data, dict) else {}


def write_plan(server: Server, plan: dict[str, Any]) -> None:
    """Replace the plan atomically (the server never reads half a file)."""
    path = plan_path(server)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = {k: v for k, v in plan.items() if v}
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".faults-")
    with os.fdopen(fd, "w") as out:
        json.dump(plan, out, indent=2)
    os.replace(temporary, path)


def applied(server: Server) -> bool:
    """Has the (running) server picked up the current state of its plan file?"""
    try:
        st = plan_path(server).stat()
        current: list[int] | None = [st.st_ino, st.st_mtime_ns, st.st_size]
    except FileNotFoundError:
        current = None
    try:
        acknowledged = json.loads((Path(server.data_dir) / APPLIED_FILE).read_text())
    except (OSError, ValueError):
        return current is None
    return bool(acknowledged.get("stamp") == current)


def not_applied(organization: Organization, timeout: float = 3.0) -> list[str]:
    """Wait (bounded) until every server has picked up its plan; the ones that did not
    (stopped servers never do: they read the plan when they start)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        late = [s.name for s in organization.servers.values() if not applied(s)]
        if not late or time.monotonic() > deadline:
            return late
        time.sleep(0.05)


def partition(organization: Organization, a: str, b: str, mode: str = "refuse",
              hang: float = 30.0) -> str:
    """Cut ``a`` and ``b`` off from each other (both directions)."""
    if mode not in PARTITION_MODES:
        raise FaultError(f"unknown partition mode {mode!r} (modes: {', '.join(PARTITION_MODES)})")
    first, second = server_named(organization, a), server_named(organization, b)
    if first.name == second.name:
        raise FaultError("a partition needs two different servers")
    for this, peer in ((first, second), (second, first)):
        plan = read_plan(this)
        partitions = [p for p in plan.get("partitions", []) if p.get("peer") != peer.name]
        partitions.append({"peer": peer.name, "fqdn": peer.fqdn, "mode": mode, "hang": hang})
        plan["partitions"] = partitions
        write_plan(this, plan)
    return f"{first.name} and {second.name} partitioned ({mode})"


def heal(organization: Organization, names: list[str]) -> str:
    """No names: every fault of every server. One: every fault of that server (and the
    partitions others have from it). Two: the partition between them."""
    if len(names) > 2:
        raise FaultError("heal takes no server, one, or the two sides of a partition")
    chosen = [server_named(organization, n) for n in names]
    for server in organization.servers.values():
        plan = read_plan(server)
        if not plan:
            continue
        if not chosen:
            plan = {}
        elif len(chosen) == 1:
            if server.name == chosen[0].name:
                plan = {}
            else:
                plan["partitions"] = [p for p in plan.get("partitions", [])
                                      if p.get("peer") != chosen[0].name]
        else:
            pair = {c.name for c in chosen}
            if server.name in pair:
                plan["partitions"] = [p for p in plan.get("partitions", [])
                                      if p.get("peer") not in pair]
        write_plan(server, plan)
    if not chosen:
        return "every fault healed"
    return f"healed: {' and '.join(c.name for c in chosen)}"


def slow(organization: Organization, name: str, delay_ms: int) -> str:
    if delay_ms < 0:
        raise FaultError("--delay must be 0 or more milliseconds")
    server = server_named(organization, name)
    plan = read_plan(server)
    plan["delay_ms"] = delay_ms
    write_plan(server, plan)
    return (f"{server.name}: every SMTP reply {delay_ms} ms late" if delay_ms
            else f"{server.name}: replies on time")


def script_reply(organization: Organization, name: str, verb: str, code: int,
                 text: str | None = None, count: int = 1, probability: float = 1.0,
                 seed: int | None = None) -> str:
    """The next ``count`` (0: every) replies at ``verb`` become ``code text``; with
    ``probability`` below 1 each is replaced with that chance (seeded: reproducible)."""
    server = server_named(organization, name)
    try:
        stage = normalize_stage(verb)
    except ValueError as e:
        raise FaultError(str(e)) from None
    if not 200 <= code <= 599:
        raise FaultError(f"--code {code} is not an SMTP reply code (200-599)")
    if count < 0 or not 0.0 < probability <= 1.0:
        raise FaultError("--count must be 0 (always) or more; --probability in (0, 1]")
    plan = read_plan(server)
    rule: dict[str, Any] = {"id": uuid.uuid4().hex[:12], "stage": stage, "code": code,
                            "text": text or DEFAULT_TEXT.get(code // 100, "(fault injection)"),
                            "count": count, "probability": probability}
    if seed is not None:
        rule["seed"] = seed
    plan["replies"] = [*plan.get("replies", []), rule]
    write_plan(server, plan)
    times = "every time" if count == 0 else f"{count} time{'s' if count != 1 else ''}"
    return f"{server.name}: {stage} answered '{code} {rule['text']}' {times}"


def list_faults(organization: Organization) -> list[str]:
    """One line per fault of the organization's servers."""
    lines = []
    for server in organization.servers.values():
        plan = read_plan(server)
        for p in plan.get("partitions", []):
            lines.append(f"{server.name}: partitioned from {p['peer']} ({p['mode']})")
        if plan.get("delay_ms"):
            lines.append(f"{server.name}: SMTP replies {plan['delay_ms']} ms late")
        for r in plan.get("replies", []):
            times = "every time" if not r.get("count") else f"{r['count']} times"
            chance = (f", probability {r['probability']}" if r.get("probability", 1.0) < 1
                      else "")
            lines.append(f"{server.name}: {r['stage']} answered '{r['code']} {r['text']}' "
                         f"({times}{chance})")
    return lines


def faults_json(organization: Organization) -> dict[str, Any]:
    return {name: read_plan(server) for name, server in organization.servers.items()}


def queue_database_files(server: Server) -> list[Path]:
    """The files of the server's SQLite queue database (with its journal files)."""
    if not server.roles & {"hub", "edge", "legacy"}:
        raise FaultError(f"{server.name} has no queue database: its database is a mailbox "
                         "store (exchange-emu failover --lossy simulates losing it)")
    url = sa.make_url(server.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise FaultError(f"{server.name}'s queue database is not an SQLite file "
                         f"({url.get_backend_name()}); drop it with that database's tools")
    path = Path(url.database)
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm",
                                                                      "-journal"))]


def wipe_queue_database(server: Server) -> int:
    """Delete the (stopped) server's queue database files; how many there were."""
    removed = 0
    for path in queue_database_files(server):
        if path.exists():
            path.unlink()
            removed += 1
    return removed
