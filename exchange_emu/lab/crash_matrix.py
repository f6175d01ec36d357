"""The crash matrix: for each scenario A–F and each server on its path, SIGKILL that
server at seeded random instants while a stream of messages flows, restart it (or not),
and check where every acknowledged message ended up.

"Acknowledged" is what the sender was told: a ``250`` for an SMTP sender, a committed
Outbox item for a client submission (scenario A). Exchange recipients must have each such
message in their Inbox (read from the mailbox store) **exactly once**; recipients on a
foreign or legacy server of ours (INTERNET01, LEGACY01: one file per copy under
``Mailboxes/``) **at least once**, with the extra copies counted as the duplicates shadow
redundancy documents (a primary back with its database intact after a takeover).

Used by ``benchmarks/crash.py`` (large runs) and ``tests/crash/test_crash_matrix.py``
(a small run in CI); see docs/crash-matrix.md.
"""

from __future__ import annotations

import email.parser
import hashlib
import os
import random
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from exchange_emu.lab.duplicate_causes import UNEXPLAINED, duplicate_causes
from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    SendConnectorSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.lab.processes import ServerProcess, free_ports
from exchange_emu.logs.tracking_event import TrackingEvent

FAST_TIMERS: dict[str, str | int | bool] = {
    "QueueGlitchRetryInterval": "00:00:01",
    "TransientFailureRetryInterval": "00:00:01",
    "MessageRetryInterval": "00:00:01",
    "OutboundConnectionFailureRetryInterval": "00:00:05",
    "ShadowHeartbeatTimeoutInterval": "00:00:01",
    "ShadowHeartbeatRetryCount": 2,
}
"""Timers short enough that a takeover (2 failed heartbeats) happens within seconds, and
that a queue whose next hop was down for a while (more than the glitch and transient
retries, about 10 s) tries again within seconds rather than Exchange's 10 minutes."""

SHADOW_GRACE = 10.0
"""Once everything is delivered, how long the shadow holders get to discard their copies
(ten heartbeats) before the copies still held are counted as "shadows left"."""

ACK_DELAY = "00:00:02"
"""MaxAcknowledgementDelay of every receive connector: a held 250 waits at most this."""


@dataclass(frozen=True)
class Route:
    """How a scenario's messages travel: who sends them, to whom, and where they land."""

    entry: str
    """The server the sender talks to (SMTP), or the mailbox server (client submission)."""
    sender: str
    recipient: str
    destination: str
    """Where the recipient's copies are counted: a mailbox server (exactly once) or a
    foreign/legacy server of ours (at least once)."""
    client_submission: bool = False


ROUTES = {
    "A": Route("MBX01", "alice@contoso.test", "bob@contoso.test", "MBX01", True),
    "B": Route("MBX01", "alice@contoso.test", "bob@contoso.test", "MBX01", True),
    "C": Route("HUB01", "app@contoso.test", "bob@contoso.test", "MBX01"),
    "D": Route("HUB01", "alice@contoso.test", "erin@fabrikam.test", "INTERNET01"),
    "E": Route("HUB01", "alice@contoso.test", "dave@legacy.contoso.test", "LEGACY01"),
    "F": Route("EDGE01", "erin@fabrikam.test", "bob@contoso.test", "MBX01"),
}

SERVERS = {
    "A": ("MBX01", "HUB01"),
    "B": ("MBX01", "HUB01", "HUB02"),
    "C": ("MBX01", "HUB01"),
    "D": ("HUB01", "HUB02", "HUB03", "EDGE01", "INTERNET01"),
    "E": ("HUB01", "LEGACY01"),
    "F": ("MBX01", "HUB01", "EDGE01"),
}
"""The servers each scenario's lab runs (its path, plus a second hub where another
server must be able to take over)."""


@dataclass(frozen=True)
class Case:
    """One row of the matrix: kill ``killed`` during scenario ``scenario``'s stream."""

    scenario: str
    killed: str
    restart: bool = True
    note: str = ""


CASES: tuple[Case, ...] = (
    Case("A", "MBX01", note="client submission into the Outbox (A.1)"),
    Case("B", "MBX01", note="Mail Submission service (B.1, B.4)"),
    Case("B", "HUB01", note="hub taking items from the Outbox (B.2-B.4)"),
    Case("B", "HUB01", restart=False, note="items not yet owned go to HUB02"),
    Case("C", "HUB01", note="store driver delivery (C.1-C.3)"),
    Case("C", "MBX01", note="the mailbox store during delivery"),
    Case("D", "HUB01", note="shadow holder"),
    Case("D", "HUB02", note="primary, back before or after the takeover"),
    Case("D", "HUB02", restart=False, note="primary never back: HUB01 takes over via HUB03"),
    Case("D", "EDGE01", note="primary of HUB02's shadow"),
    Case("D", "INTERNET01", note="the foreign end (ours)"),
    Case("E", "HUB01", note="the last Exchange hop"),
    Case("E", "LEGACY01", note="Exchange 2007 server (ours)"),
    Case("F", "EDGE01", note="delayed acknowledgement holder"),
    Case("F", "HUB01", note="primary of EDGE01's shadow"),
    Case("F", "MBX01", note="the mailbox store"),
)


@dataclass(frozen=True)
class Size:
    """How much of the matrix to run."""

    trials: int = 1
    messages: int = 8
    kills: int = 1
    """Kills of the server per trial."""
    drain_timeout: float = 60.0
    interval: float = 0.15
    refused_retry: float = 10.0
    """How long a sender keeps retrying a message whose connection is refused."""
    """Pause of each of the two senders between messages: the stream's pace."""


SMALL = Size(trials=1, messages=6, kills=1)
LARGE = Size(trials=2, messages=30, kills=3, drain_timeout=120.0)


@dataclass
class CaseResult:
    case: Case
    backend: str
    trials: int = 0
    sent: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    resubmitted: int = 0
    """Shadow copies resubmitted by their holder (RESUBMIT rows): takeovers."""
    suppressed: int = 0
    """Copies the mailbox dropped as duplicates (DUPLICATEDELIVER rows)."""
    poisoned: int = 0
    """Messages left in a Poison queue (a server crashed twice with them in Submission);
    they wait for an administrator, so the drain does not wait for them."""
    shadows_left: int = 0
    """Shadow copies still held at the end: their discard notification was handed out
    but never applied (the holder crashed in between); ShadowMessageAutoDiscardInterval
    drops them. The drain does not wait for them."""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    duplicate_causes: Counter[str] = field(default_factory=Counter)
    """The extra copies by cause (``lab.duplicate_causes``): takeover, sent again,
    unexplained."""
    unexplained: list[str] = field(default_factory=list)
    """Message-IDs of duplicates neither cause explains."""

    def duplicates_explained(self) -> str:
        """The duplicates by cause, in a few words (empty without duplicates)."""
        return ", ".join(f"{n} {cause}" for cause, n in sorted(self.duplicate_causes.items()))


# --- where each server keeps its queue database -------------------------------------------


class SqliteStores:
    """Each server's default: SQLite files in its data folder."""

    name = "sqlite"

    def urls(self, servers: Sequence[str]) -> dict[str, dict[str, str]]:
        return {}

    def release(self, urls: dict[str, dict[str, str]]) -> None:
        pass


class PostgresStores:
    """One PostgreSQL schema per server database (queue database, mailbox store), in
    ``database`` at ``host:port``, selected through ``search_path`` as tests/conftest.py
    does; ``release`` drops a trial's schemas."""

    name = "postgresql"

    def __init__(self, database: str, host: str = "127.0.0.1", port: int = 5432,
                 user: str = "postgres") -> None:
        self.database, self.host, self.port, self.user = database, host, port, user

    def _execute(self, sql: str) -> None:
        import psycopg2  # type: ignore[import-untyped]

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                dbname=self.database, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def _url(self, schema: str) -> str:
        return (f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.database}"
                f"?options=-csearch_path%3D{schema}")

    def urls(self, servers: Sequence[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for server in servers:
            kinds = ("database_url", "mailbox_store_url") if server.startswith("MBX") \
                else ("database_url",)
            for kind in kinds:
                schema = f"c_{server.lower()}_{kind[0]}_{uuid.uuid4().hex[:10]}"
                self._execute(f'CREATE SCHEMA "{schema}"')
                out.setdefault(server, {})[kind] = self._url(schema)
        return out

    def release(self, urls: dict[str, dict[str, str]]) -> None:
        """Drop the schemas ``urls`` made."""
        for server_urls in urls.values():
            for url in server_urls.values():
                schema = url.rsplit("search_path%3D", 1)[1]
                self._execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


Stores = SqliteStores | PostgresStores


@contextmanager
def postgres_database(host: str = "127.0.0.1", port: int = 5432,
                      user: str = "postgres", admin_db: str = "test") -> Iterator[str]:
    """A uniquely named PostgreSQL database for one run, dropped afterwards."""
    import psycopg2

    admin = psycopg2.connect(host=host, port=port, user=user, dbname=admin_db,
                             connect_timeout=5)
    admin.autocommit = True
    name = f"exchange_emu_crash_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --- the organization of one trial --------------------------------------------------------

ALL_SERVERS: dict[str, dict[str, Any]] = {
    "MBX01": {"role": "mailbox"},
    "HUB01": {"role": "hub"},
    "HUB02": {"role": "hub"},
    "HUB03": {"role": "hub"},
    "EDGE01": {"role": "edge", "site": None},
    "INTERNET01": {"role": "legacy", "site": None, "version": "non-exchange",
                   "local_domains": ("fabrikam.test",)},
    "LEGACY01": {"role": "legacy", "version": "2007",
                 "local_domains": ("legacy.contoso.test",)},
}

CONNECTORS = (
    SendConnectorSpec("Internet via EDGE01", ("HUB02", "HUB03"), ("EDGE01",)),
    SendConnectorSpec("EdgeSync - to Internet", ("EDGE01",), ("INTERNET01",)),
    SendConnectorSpec("EdgeSync - Inbound", ("EDGE01",), ("HUB01",), ("contoso.test",)),
)


def scenario_org(directory: Path, scenario: str, stores: dict[str, dict[str, str]], *,
                 hosts: dict[str, str] | None = None,
                 networks: tuple[str, ...] = ("127.0.0.0/8",)) -> tuple[Path, dict[str, int]]:
    """The organization file of one scenario's lab: its servers on free ports (or at
    ``hosts``' addresses), and the send connectors among them."""
    names = SERVERS[scenario]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    servers = []
    for name in names:
        options = dict(ALL_SERVERS[name])
        role = options.pop("role")
        if role in ("hub", "edge"):
            options["ack_delay"] = ACK_DELAY
        if hosts:
            options["host"] = hosts[name]
        options.update(stores.get(name, {}))
        servers.append(ServerSpec(name, role, ports[name], **options))
    running = set(names)
    connectors = [c for c in CONNECTORS
                  if set(c.smart_hosts) <= running and set(c.source_servers) & running]
    connectors = [SendConnectorSpec(c.name, tuple(s for s in c.source_servers if s in running),
                                    c.smart_hosts, c.address_spaces) for c in connectors]
    recipients = [RecipientSpec("alice@contoso.test", "Alice", database="DB01"),
                  RecipientSpec("bob@contoso.test", "Bob", database="DB01")]
    if "LEGACY01" in running:
        recipients.append(RecipientSpec("dave@legacy.contoso.test", "Dave", server="LEGACY01"))
    if "INTERNET01" in running:
        recipients.append(RecipientSpec("erin@fabrikam.test", "Erin", server="INTERNET01"))
    spec = OrgSpec(
        servers, send_connectors=connectors, transport=FAST_TIMERS,
        org_server_networks=networks,
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")] if "MBX01" in running else [],
        recipients=recipients if "MBX01" in running else recipients[2:],
    )
    return write_org(directory / f"crash-{scenario}.toml", spec), ports


# --- counting copies at the destination ---------------------------------------------------


def _message_id(raw: bytes) -> str:
    headers = email.parser.BytesHeaderParser().parsebytes(raw)
    return str(headers.get("Message-ID", "")).strip()


def copies_in_files(data_dir: Path, recipient: str) -> Counter[str]:
    """Copies per Message-ID in a legacy/foreign server's local mailbox (one file each)."""
    folder = data_dir / "Mailboxes" / recipient.lower()
    return Counter(_message_id(p.read_bytes()) for p in folder.glob("*.eml")) \
        if folder.is_dir() else Counter()


def copies_in_mailbox(store_url: str, recipient: str) -> Counter[str]:
    """Copies per Message-ID in a mailbox's Inbox, read from the mailbox store."""
    from exchange_emu.mailbox.tables import items

    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.internet_message_id).where(
                items.c.mailbox == recipient.lower(), items.c.folder == "Inbox")).scalars()
            return Counter(str(r) for r in rows)
    except sa.exc.OperationalError:
        return Counter()  # not created yet
    finally:
        engine.dispose()


def queued_messages(url: str, state: str = "queued") -> int:
    """Messages in ``state`` in a server's queue database: ``queued`` (still to be
    delivered by it), ``shadow`` (shadow copies kept for a primary) or ``poison``."""
    from exchange_emu.storage.tables import messages

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(messages).where(
                messages.c.state == state)).scalar_one())
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return 0
    finally:
        engine.dispose()


def held_messages(url: str, message_ids: set[str]) -> set[str]:
    """Which of ``message_ids`` a server's queue database still holds."""
    from exchange_emu.storage.tables import messages

    if not message_ids:
        return set()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {str(m) for m in conn.execute(sa.select(
                messages.c.internet_message_id).where(
                    messages.c.internet_message_id.in_(sorted(message_ids)))).scalars()}
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return set()
    finally:
        engine.dispose()


def leftovers(url: str, *, mailbox_store: bool) -> list[str]:
    """What a server still holds, one line per item: Outbox items of a mailbox store, or
    queued messages with their recipients' queue and status."""
    from exchange_emu.mailbox.tables import items
    from exchange_emu.storage.tables import messages, recipients

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if mailbox_store:
                rows = conn.execute(sa.select(
                    items.c.id, items.c.internet_message_id, items.c.submission_state,
                    items.c.submitted_via).where(items.c.folder == "Outbox"))
                return [f"Outbox item {r.id} {r.internet_message_id} state={r.submission_state}"
                        f" via={r.submitted_via}" for r in rows]
            rows = conn.execute(sa.select(
                messages.c.internal_id, messages.c.internet_message_id, messages.c.state,
                messages.c.mapi_submission, recipients.c.queue, recipients.c.status,
                recipients.c.last_response).join(
                recipients, recipients.c.internal_id == messages.c.internal_id))
            return [f"message {r.internal_id} {r.internet_message_id} state={r.state} "
                    f"mapi={r.mapi_submission} queue={r.queue} status={r.status} "
                    f"last={r.last_response}" for r in rows]
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as e:
        return [f"unreadable: {e}"]
    finally:
        engine.dispose()


def outbox_items(store_url: str) -> int:
    from exchange_emu.mailbox.tables import items

    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(items).where(
                items.c.folder == "Outbox")).scalar_one())
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return 0
    finally:
        engine.dispose()


# --- one trial ----------------------------------------------------------------------------


@dataclass
class Stream:
    """Messages sent so far and which were acknowledged."""

    sent: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    attempts: threading.Condition = field(default_factory=threading.Condition)

    def record(self, message_id: str, acknowledged: bool) -> None:
        with self.attempts:
            self.sent.append(message_id)
            if acknowledged:
                self.acknowledged.append(message_id)
            self.attempts.notify_all()

    def wait_sent(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.attempts:
            while len(self.sent) < count and time.monotonic() < deadline:
                self.attempts.wait(max(0.0, deadline - time.monotonic()))


class Trial:
    """One lab of real processes for one case, one seed."""

    def __init__(self, case: Case, directory: Path, stores: Stores, seed: int,
                 size: Size, *, hosts: dict[str, str] | None = None,
                 launcher: Callable[[str, list[str]], list[str]] | None = None) -> None:
        self.case, self.directory, self.size = case, directory, size
        self.route = ROUTES[case.scenario]
        self.random = random.Random(seed)
        self.tag = hashlib.sha1(f"{case}{seed}".encode()).hexdigest()[:8]
        self.stores = stores
        self.urls = urls = stores.urls(SERVERS[case.scenario])
        self.config, self.ports = scenario_org(directory, case.scenario, urls, hosts=hosts)
        from exchange_emu.directory import load_organization

        self.organization = load_organization(self.config)
        self.launcher = launcher
        self.processes: dict[str, ServerProcess] = {}
        self.stream = Stream()
        self.problems: list[str] = []
        self.refusals: list[str] = []
        """Why the sender got no acknowledgement, per refused message."""

    # servers
    def _process(self, name: str) -> ServerProcess:
        role = sorted(self.organization.server(name).roles)[0]
        process = ServerProcess(role, self.config, name, self.directory)
        if self.launcher is not None:
            process.argv = self.launcher(name, process.argv)
        return process

    def start_all(self) -> None:
        for name in SERVERS[self.case.scenario]:
            self.processes[name] = self._process(name).start()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.proc is not None and process.proc.poll() is None:
                try:
                    process.stop()
                except subprocess.TimeoutExpired:
                    process.kill()

    def output(self) -> str:
        return "\n".join(f"--- {n}\n" + "\n".join(p.lines[-40:])
                         for n, p in self.processes.items())

    # the stream
    def _address(self, name: str) -> tuple[str, int]:
        server = self.organization.server(name)
        address = server.smtp or server.store_driver
        assert address is not None
        return address.host, address.port

    def _outbox_client(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "exchange_emu.lab.outbox_client", "--config",
             str(self.config), "--from", self.route.sender, "--to", self.route.recipient],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=self.directory)

    def _attempt(self, message_id: str, body: bytes,
                 client: subprocess.Popen[str] | None) -> str | None:
        """One attempt to hand the message over: None once acknowledged, else why not."""
        if client is not None:
            assert client.stdin is not None and client.stdout is not None
            eml = self.directory / f"{message_id.strip('<>')}.eml"
            eml.write_bytes(body)
            client.stdin.write(f"{eml}\n")
            client.stdin.flush()
            answer = client.stdout.readline().strip()
            return None if answer.startswith("OK") else answer or "outbox client died"
        host, port = self._address(self.route.entry)
        try:
            with smtplib.SMTP(host, port, timeout=30) as smtp:
                smtp.sendmail(self.route.sender, [self.route.recipient], body)
            return None
        except (OSError, smtplib.SMTPException) as e:
            return f"{type(e).__name__}: {e}"

    def _send_one(self, number: int, client: subprocess.Popen[str] | None) -> None:
        """Send one message. A server that refuses the connection never saw it: like a
        real client, try again a little later (bounded); anything else is final."""
        message_id = f"<crash-{self.tag}-{number}@contoso.test>"
        body = (f"Message-ID: {message_id}\r\nFrom: {self.route.sender}\r\n"
                f"To: {self.route.recipient}\r\nSubject: crash {self.case.scenario} "
                f"{self.case.killed} {number}\r\n\r\nmessage {number}\r\n").encode()
        deadline = time.monotonic() + self.size.refused_retry
        while True:
            why = self._attempt(message_id, body, client)
            refused = why is not None and ("ConnectionRefused" in why
                                           or "Connection refused" in why)
            if not refused or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # a client's retry interval
        if why is not None:
            self.refusals.append(why)
        self.stream.record(message_id, why is None)

    def _sender(self, numbers: Sequence[int]) -> None:
        client = self._outbox_client() if self.route.client_submission else None
        try:
            for number in numbers:
                self._send_one(number, client)
                time.sleep(self.size.interval)  # the stream's pace, not a wait for an event
        finally:
            if client is not None:
                assert client.stdin is not None
                client.stdin.close()
                client.wait(30)

    def run_stream_with_kills(self) -> None:
        """Two senders share the messages; the killer strikes after a seeded number of
        attempts (plus a seeded fraction of a second) and restarts after a seeded pause."""
        total = self.size.messages
        senders = [threading.Thread(target=self._sender, args=(range(i, total, 2),),
                                    daemon=True) for i in range(2)]
        for thread in senders:
            thread.start()
        marks = sorted(self.random.randrange(0, max(1, total - 1))
                       for _ in range(self.size.kills))
        for mark in marks:
            self.stream.wait_sent(mark, timeout=60)
            time.sleep(self.random.uniform(0.0, 0.3))  # the random instant of the crash
            victim = self.processes[self.case.killed]
            if victim.proc is not None and victim.proc.poll() is None:
                victim.kill()
            if not self.case.restart:
                break  # never back: one kill is the whole story
            time.sleep(self.random.uniform(0.0, 1.5))  # downtime
            victim.start()
        for thread in senders:
            thread.join(180)

    # the verdict
    def destination_copies(self) -> Counter[str]:
        server = self.organization.server(self.route.destination)
        if self.route.destination.startswith("MBX"):
            assert server.mailbox_store_url is not None
            return copies_in_mailbox(server.mailbox_store_url, self.route.recipient)
        return copies_in_files(server.data_dir, self.route.recipient)

    def _settled(self) -> bool:
        for name, process in self.processes.items():
            if process.proc is None or process.proc.poll() is not None:
                continue  # a server that never came back keeps what it had
            server = self.organization.server(name)
            if server.mailbox_store_url is not None and outbox_items(server.mailbox_store_url):
                return False
            if (server.roles - {"mailbox"}) and queued_messages(server.database_url):
                return False
        return True

    def wait_for_drain(self) -> Counter[str]:
        """Poll (bounded) until every acknowledged message arrived and every live
        server's queue and the Outbox are empty, so no later duplicate can appear."""
        deadline = time.monotonic() + self.size.drain_timeout
        while True:
            copies = self.destination_copies()
            arrived = all(copies[m] for m in self.stream.acknowledged)
            if arrived and self._settled():
                self._wait_for_shadows(min(deadline, time.monotonic() + SHADOW_GRACE))
                return self.destination_copies()
            if time.monotonic() > deadline:
                missing = {m for m in self.stream.acknowledged if not copies[m]}
                held = self.held(missing)
                what = (f"{len(missing)} acknowledged messages missing, of which "
                        f"{len(held)} still queued on a server" if missing
                        else "queues not empty")
                self.problems.append(f"after {self.size.drain_timeout:.0f} s: {what}")
                self.problems += self.what_is_left()
                return copies
            time.sleep(0.2)  # the polling interval

    def _wait_for_shadows(self, deadline: float) -> None:
        """Give the holders a few heartbeats to collect their discard notifications."""
        while self.left_in("shadow") and time.monotonic() < deadline:
            time.sleep(0.2)

    def what_is_left(self) -> list[str]:
        out = []
        for name in self.processes:
            server = self.organization.server(name)
            if server.mailbox_store_url is not None:
                out += [f"{name}: {line}" for line in
                        leftovers(server.mailbox_store_url, mailbox_store=True)]
            if server.roles - {"mailbox"}:
                out += [f"{name}: {line}" for line in
                        leftovers(server.database_url, mailbox_store=False)]
        return out

    def held(self, message_ids: set[str]) -> set[str]:
        """Which of ``message_ids`` some server (running or not) still has queued."""
        found: set[str] = set()
        for name in self.processes:
            server = self.organization.server(name)
            if server.roles - {"mailbox"}:
                found |= held_messages(server.database_url, message_ids)
        return found

    def left_in(self, state: str) -> int:
        """Messages in ``state`` on every server with a queue database."""
        return sum(queued_messages(self.organization.server(n).database_url, state)
                   for n in self.processes if self.organization.server(n).roles - {"mailbox"})

    def tracking_events(self) -> list[TrackingEvent]:
        """Every server's message tracking rows about this trial's messages."""
        from exchange_emu.logs import read_tracking_logs

        sent = set(self.stream.sent)
        events = []
        for name in self.processes:
            logs = self.organization.server(name).data_dir / "TransportRoles" / "Logs"
            events += [e for e in read_tracking_logs(logs / "MessageTracking")
                       if e.message_id in sent]
        return events

    def fqdns(self) -> set[str]:
        """The host names of the lab's servers (each keeps a tracking log)."""
        return {self.organization.server(name).fqdn for name in self.processes}

    def run(self) -> tuple[Stream, Counter[str]]:
        try:
            self.start_all()
            self.run_stream_with_kills()
            if self.case.killed == self.route.destination and not self.case.restart:
                raise ValueError("the destination must come back to be counted")
            return self.stream, self.wait_for_drain()
        finally:
            self.stop_all()


def run_case(case: Case, root: Path, stores: Stores, size: Size, seed: int,
             **trial_options: Any) -> CaseResult:
    """Run ``size.trials`` trials of one case; each trial a fresh lab under ``root``."""
    result = CaseResult(case, stores.name)
    started = time.monotonic()
    for number in range(size.trials):
        directory = root / f"{case.scenario}-{case.killed}-{int(case.restart)}-{number}"
        directory.mkdir(parents=True)
        trial_seed = int(hashlib.sha1(f"{seed}:{case}:{number}".encode()).hexdigest()[:8], 16)
        trial = Trial(case, directory, stores, trial_seed, size, **trial_options)
        try:
            stream, copies = trial.run()
        finally:
            stores.release(trial.urls)
        result.trials += 1
        result.sent += len(stream.sent)
        result.acknowledged += len(stream.acknowledged)
        result.lost += [m for m in stream.acknowledged if not copies[m]]
        result.duplicates += sum(n - 1 for m, n in copies.items()
                                 if n > 1 and m in stream.sent)
        if ROUTES[case.scenario].destination.startswith("MBX"):
            extra = {m: n for m, n in copies.items() if n > 1 and m in stream.sent}
            if extra:
                result.problems.append(f"trial {number}: duplicates in an Exchange mailbox "
                                       f"(must be exactly once): {extra}")
        strays = sorted(m for m in copies if m not in stream.sent)
        if strays:
            result.problems.append(
                f"trial {number}: {len(strays)} message(s) this trial never sent arrived at "
                f"its destination (another lab's, through a shared port?): {strays[:3]}")
        result.poisoned += trial.left_in("poison")
        result.shadows_left += trial.left_in("shadow")
        events = trial.tracking_events()
        counts = Counter(e.event_id for e in events)
        result.resubmitted += counts["RESUBMIT"]
        result.suppressed += counts["DUPLICATEDELIVER"]
        duplicated = [m for m, n in copies.items() if n > 1 and m in stream.sent]
        for message_id, cause in duplicate_causes(events, duplicated, trial.fqdns()).items():
            result.duplicate_causes[cause] += copies[message_id] - 1
            if cause == UNEXPLAINED:
                result.unexplained.append(message_id)
        if trial.problems or result.lost:
            result.problems += [f"trial {number} (seed {trial_seed}): {p}"
                                for p in trial.problems]
            result.problems.append(trial.output())
    result.seconds = time.monotonic() - started
    return result


def run_matrix(root: Path, stores: Stores, size: Size, seed: int,
               cases: Sequence[Case] = CASES,
               report: Callable[[CaseResult], None] | None = None,
               workers: int = 1) -> list[CaseResult]:
    """Run the cases (``workers`` at a time, each in its own lab); results in case order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(case: Case) -> CaseResult:
        result = run_case(case, root, stores, size, seed)
        if report is not None:
            report(result)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, cases))


HEADER = ("backend", "scenario", "killed", "restart", "trials", "sent", "acked", "lost",
          "dups", "resubmitted", "dups dropped", "poisoned", "shadows left", "seconds")


def table(results: Sequence[CaseResult]) -> str:
    """The matrix as a Markdown table."""
    rows = [HEADER] + [
        (r.backend, r.case.scenario, r.case.killed, "yes" if r.case.restart else "no",
         str(r.trials), str(r.sent), str(r.acknowledged), str(len(r.lost)),
         str(r.duplicates), str(r.resubmitted), str(r.suppressed), str(r.poisoned),
         str(r.shadows_left), f"{r.seconds:.1f}")
        for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def environment_seed() -> int:
    """EXCHANGE_EMU_CRASH_SEED, or a fixed default so that CI runs are reproducible."""
    return int(os.environ.get("EXCHANGE_EMU_CRASH_SEED", "20261128"))
