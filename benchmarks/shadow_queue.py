"""Shadow queues at scale.

1. Memory: a real HUB01 process whose queue database holds N messages sitting
   in its shadow queue for a primary (HUB02). The engine keeps no per-shadow
   state in memory (the queue database is the shadow queue), so its resident
   memory should not grow with N. Printed: peak RSS with 0 and with N shadows.
2. Discarding: the primary hands out N discard notifications (XQDISCARD
   batches of --batch ids) and the holder drops the N shadow copies (D.6–D.7),
   timed at N/10 and N to show how it scales.

    .venv/bin/python benchmarks/shadow_queue.py --shadows 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from twisted.internet import reactor

from exchange_emu.lab.org_builder import OrgSpec, ServerSpec, write_org
from exchange_emu.lab.processes import ServerProcess, free_ports
from exchange_emu.smtp.envelope import encode_shadow_context
from exchange_emu.storage import QueueDatabase
from exchange_emu.storage.tables import discard_notifications, messages, recipients, shadow_messages
from exchange_emu.transport import jobs

NOW = time.time()
CONTEXT = encode_shadow_context(uuid.uuid4(), "HUB01", "hub01.contoso.test")


def fill_holder(url: str, count: int, body_size: int) -> list[str]:
    """N messages in HUB01's shadow queue for HUB02; returns their shadow ids."""
    db = QueueDatabase(url, reactor=reactor)
    db.open()
    body = b"x" * body_size
    shadow_ids = [str(uuid.uuid4()) for _ in range(count)]
    with db.engine.begin() as conn:
        first = (conn.execute(sa.select(sa.func.max(messages.c.internal_id))).scalar() or 0) + 1
        for start in range(0, count, 5000):
            ids = range(first + start, first + min(count, start + 5000))
            conn.execute(sa.insert(messages), [dict(
                internal_id=i, internet_message_id=f"<s{i}@contoso.test>", sender="a@contoso.test",
                size=body_size, body=body, received_at=NOW, source="SMTP", hop_count=1,
                body_type="7BIT", delayed_ack=False, state="shadow", crash_count=0) for i in ids])
            conn.execute(sa.insert(recipients), [dict(
                internal_id=i, address="erin@fabrikam.test", status="delivered", queue="Site-A",
                retry_count=0, delivered_to="HUB02") for i in ids])
            conn.execute(sa.insert(shadow_messages), [dict(
                internal_id=i, primary_server="HUB02", shadow_message_id=shadow_ids[i - first],
                created_at=NOW) for i in ids])
    db.engine.dispose()
    return shadow_ids


def fill_primary(url: str, shadow_ids: list[str]) -> None:
    db = QueueDatabase(url, reactor=reactor)
    db.open()
    with db.engine.begin() as conn:
        for start in range(0, len(shadow_ids), 5000):
            conn.execute(sa.insert(discard_notifications), [dict(
                shadow_context=CONTEXT, shadow_message_id=sid, created_at=NOW,
                internet_message_id="<x@contoso.test>") for sid in shadow_ids[start:start + 5000]])
    db.engine.dispose()


def time_discards(directory: Path, count: int, batch: int, body_size: int) -> tuple[float, float]:
    """Seconds for the primary to hand out, and for the holder to apply, N discards."""
    holder_url = f"sqlite:///{directory}/holder-{count}.db"
    primary_url = f"sqlite:///{directory}/primary-{count}.db"
    shadow_ids = fill_holder(holder_url, count, body_size)
    fill_primary(primary_url, shadow_ids)
    holder = QueueDatabase(holder_url, reactor=reactor)
    primary = QueueDatabase(primary_url, reactor=reactor)
    holder.open()
    primary.open()
    hand_out = apply = 0.0
    while True:
        t0 = time.perf_counter()
        with primary.engine.begin() as conn:
            handed = jobs.hand_out_discards(conn, CONTEXT, batch)
        t1 = time.perf_counter()
        with holder.engine.begin() as conn:
            jobs.apply_discards(conn, "HUB02", [sid for sid, _ in handed])
        t2 = time.perf_counter()
        hand_out += t1 - t0
        apply += t2 - t1
        if len(handed) < batch:
            break
    with holder.engine.begin() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
    assert left == 0, f"{left} messages left after discarding"
    holder.engine.dispose()
    primary.engine.dispose()
    return hand_out, apply


def holder_memory(directory: Path, count: int, body_size: int) -> int | None:
    """Peak RSS (KiB) of a real HUB01 process holding ``count`` shadow copies."""
    ports = free_ports(2)
    data = directory / f"mem-{count}"
    config = data / "org.toml"
    data.mkdir()
    write_org(config, OrgSpec(
        [ServerSpec("HUB01", "hub", ports[0]), ServerSpec("HUB02", "hub", ports[1])],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:01",
                   "ShadowHeartbeatRetryCount": 1000000}), data)
    if count:
        fill_holder(f"sqlite:///{data}/HUB01/queue.db", count, body_size)
    hub = ServerProcess("hub", config, "HUB01", data).start()
    try:
        time.sleep(5)  # a few heartbeat checks (each counts the shadow queues)
        return hub.peak_memory_kib()
    finally:
        hub.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="shadow queues at scale")
    parser.add_argument("--shadows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=50, help="XQDISCARD <max> (50-1000)")
    parser.add_argument("--body-size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        directory = Path(tmp)
        empty = holder_memory(directory, 0, args.body_size)
        full = holder_memory(directory, args.shadows, args.body_size)
        print(f"holder process peak memory: {(empty or 0) / 1024:.1f} MiB with no shadows, "
              f"{(full or 0) / 1024:.1f} MiB with {args.shadows} shadow copies "
              f"({((full or 0) - (empty or 0)) * 1024 / args.shadows:.0f} bytes per shadow)")
        for n in (args.shadows // 10, args.shadows):
            hand_out, apply = time_discards(directory, n, args.batch, args.body_size)
            print(f"discarding {n} shadows in XQDISCARD batches of {args.batch}: primary "
                  f"hands out in {hand_out:.2f} s ({hand_out / n * 1e6:.0f} us each), holder "
                  f"drops in {apply:.2f} s ({apply / n * 1e6:.0f} us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
