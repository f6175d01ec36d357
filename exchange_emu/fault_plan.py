"""The fault plan a server honours: network partitions, slow replies, scripted SMTP replies.

The lab (``exchange-emu fault …``) writes ``<data_dir>/faults.json`` for each server;
the server polls the file's stat every ``POLL_INTERVAL`` seconds and applies a change
at once — with one process per server and with ``--single-process`` alike. Nothing of
this exists in Exchange: it stands for a broken network, an overloaded server, or a
peer answering what a test needs.

- **partition** from peer P (``refuse`` or ``blackhole``): this server's SMTP client
  does not reach P (refused at once, or a connect that hangs ``hang`` seconds and
  fails), and its SMTP server answers a session whose EHLO names P's FQDN with
  ``421 4.4.2`` (refuse) or never answers it at all (blackhole). Lab servers all live
  on 127.0.0.1, so the EHLO domain is what identifies the peer.
- **slow**: every SMTP reply of this server (banner included) comes ``delay`` later.
- **reply**: the next ``count`` commands at a stage (``CONNECT``, ``EHLO``, ``MAIL``,
  ``DATA``, ``DOT``, ``BDAT`` …) get a scripted reply instead of the server's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from exchange_emu.smtp.replies import Reply

log = Logger()

PLAN_FILE = "faults.json"
APPLIED_FILE = "faults.applied"
"""Written by the server: the stamp (inode, mtime, size) of the plan it applies, so that the lab
knows when a change has taken effect."""
POLL_INTERVAL = 0.2
STAGES = ("CONNECT", "EHLO", "HELO", "STARTTLS", "AUTH", "XSHADOW", "MAIL", "RCPT", "DATA",
          "DOT", "BDAT", "XEXCH50", "XQDISCARD", "RSET", "NOOP", "QUIT")
"""Where a scripted reply can replace the server's own: a command verb, ``CONNECT`` (the
banner), ``DOT`` (the reply after DATA's final dot) or ``BDAT`` (the reply to BDAT LAST)."""
STAGE_ALIASES = {"EOD": "DOT", "BANNER": "CONNECT"}
PARTITION_MODES = ("refuse", "blackhole")


def normalize_stage(text: str) -> str:
    """A stage name as the plan stores it; ValueError naming the valid ones otherwise."""
    stage = STAGE_ALIASES.get(text.upper(), text.upper())
    if stage not in STAGES:
        raise ValueError(f"unknown SMTP stage {text!r} (stages: {', '.join(STAGES)}, EOD)")
    return stage


@dataclass(frozen=True)
class Intercept:
    """What the plan does to one reply: answer ``reply`` instead (then close the session
    if ``close``), answer nothing ever (``blackhole``), and/or answer ``delay`` later."""

    reply: Reply | None = None
    close: bool = False
    blackhole: bool = False
    delay: float = 0.0

    @property
    def replaces(self) -> bool:
        return self.reply is not None or self.blackhole


@dataclass
class _ScriptedReply:
    rule_id: str
    stage: str
    reply: Reply
    count: int  # 0: every time
    probability: float
    rng: random.Random
    used: int = 0


@dataclass
class FaultPlan:
    """One server's faults, as last read from its plan file."""

    path: Path
    partitions: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    """Peer server name → (its FQDN, mode, hang seconds)."""
    delay: float = 0.0
    scripted: list[_ScriptedReply] = field(default_factory=list)
    _stamp: tuple[int, int, int] | None = None
    """(inode, mtime, size) of the file last read: the lab replaces it atomically, so a
    change always shows, even within the file system's timestamp granularity."""

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> FaultPlan:
        plan = cls(Path(data_dir) / PLAN_FILE)
        plan.reload()
        return plan

    # -- reading the file ------------------------------------------------------------

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        return self._stamp

    def reload(self) -> bool:
        """Re-read the plan file if it changed; True when it did."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        data: dict[str, Any] = {}
        if stamp is not None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:
                log.warn("fault plan {path} unreadable ({e}); no faults", path=self.path, e=e)
        self._apply(data)
        return True

    def _apply(self, data: dict[str, Any]) -> None:
        self.partitions = {
            p["peer"]: (str(p.get("fqdn", "")).lower(), p.get("mode", "refuse"),
                        float(p.get("hang", 30.0)))
            for p in data.get("partitions", [])}
        self.delay = float(data.get("delay_ms", 0)) / 1000.0
        used = {s.rule_id: s for s in self.scripted}
        scripted = []
        for rule in data.get("replies", []):
            rule_id = str(rule["id"])
            old = used.get(rule_id)
            if old is not None:  # counts consumed survive a change of other faults
                scripted.append(old)
                continue
            seed = rule.get("seed")
            scripted.append(_ScriptedReply(
                rule_id, rule["stage"], Reply(int(rule["code"]), (rule["text"],)),
                int(rule.get("count", 1)), float(rule.get("probability", 1.0)),
                random.Random(seed if seed is not None else rule_id)))
        self.scripted = scripted

    # -- what the SMTP server asks ---------------------------------------------------

    def intercept(self, stage: str, helo: str | None) -> Intercept | None:
        """The fault for the reply at ``stage`` of a session whose peer said ``helo``."""
        peer = (helo or "").lower()
        for fqdn, mode, _hang in self.partitions.values():
            if peer and peer == fqdn:
                if mode == "blackhole":
                    return Intercept(blackhole=True)
                return Intercept(Reply(421, ("4.4.2 Connection dropped: network partition "
                                             "(fault injection)",)), close=True)
        for rule in self.scripted:
            if rule.stage != stage or (rule.count and rule.used >= rule.count):
                continue
            if rule.probability < 1.0 and rule.rng.random() >= rule.probability:
                continue
            rule.used += 1
            close = rule.reply.code == 421 or (stage == "CONNECT" and rule.reply.code >= 400)
            return Intercept(rule.reply, close=close, delay=self.delay)
        if self.delay > 0:
            return Intercept(delay=self.delay)
        return None

    def blackholed(self, helo: str | None) -> bool:
        peer = (helo or "").lower()
        return any(peer == fqdn and mode == "blackhole"
                   for fqdn, mode, _ in self.partitions.values())

    def healed(self, clock: IReactorTime, gone: Any, helo: str | None) -> defer.Deferred[None]:
        """Fires once the black hole for ``helo`` is gone (polled; never if ``gone()``):
        a session's input waits meanwhile, as segments do in a real black hole."""
        d: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if gone():
                return
            if self.blackholed(helo):
                clock.callLater(POLL_INTERVAL, check)
            else:
                d.callback(None)

        clock.callLater(POLL_INTERVAL, check)
        return d

    # -- what the SMTP client asks ---------------------------------------------------

    def partition_from(self, peer: str | None) -> tuple[str, float] | None:
        """(mode, hang) when this server is cut off from the server named ``peer``."""
        if peer is None:
            return None
        found = self.partitions.get(peer)
        return (found[1], found[2]) if found else None

    def guard(self, connect: Any, clock: IReactorTime) -> Any:
        """Wrap a ``connect(target) -> endpoint`` so a partitioned peer cannot be reached."""

        def guarded(target: Any) -> IStreamClientEndpoint:
            cut = self.partition_from(getattr(target, "server", None))
            if cut is None:
                return connect(target)
            return _PartitionedEndpoint(clock, target.server, *cut)

        return guarded


@implementer(IStreamClientEndpoint)
class _PartitionedEndpoint:
    """A peer on the far side of a partition: refused at once, or a connect attempt
    that hangs ``hang`` seconds (a black hole) and then times out."""

    def __init__(self, clock: IReactorTime, peer: str, mode: str, hang: float) -> None:
        self.clock, self.peer, self.mode, self.hang = clock, peer, mode, hang

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.mode != "blackhole":
            return defer.fail(error.ConnectionRefusedError(
                f"network partition from {self.peer} (fault injection)"))
        d: defer.Deferred[Any] = defer.Deferred()
        timer = self.clock.callLater(self.hang, d.errback, error.TimeoutError(
            f"no answer from {self.peer}: black-holed by a network partition"))

        def cancelled(failure: Any) -> Any:
            if timer.active():
                timer.cancel()
            return failure

        d.addErrback(cancelled)
        return d


class FaultPlanWatcher(service.Service):
    """Polls the plan file's stat and reloads it when it changes."""

    def __init__(self, plan: FaultPlan, server: str, clock: IReactorTime) -> None:
        self.plan = plan
        self.server = server
        self.clock = clock
        self._loop: LoopingCall | None = None
        self._acknowledged: object = ()

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._poll)
        self._loop.clock = self.clock
        self._loop.start(POLL_INTERVAL, now=True)

    def _poll(self) -> None:
        try:
            changed = self.plan.reload()
        except Exception:
            log.failure("fault plan reload failed")
            return
        if changed:
            log.info("{server}: fault plan now: {summary}", server=self.server,
                     summary=describe(self.plan))
        if self.plan.stamp != self._acknowledged:
            self._acknowledge()

    def _acknowledge(self) -> None:
        """Tell the lab which plan is in force (APPLIED_FILE, replaced atomically)."""
        stamp = self.plan.stamp
        applied = self.plan.path.with_name(APPLIED_FILE)
        temporary = applied.with_name(APPLIED_FILE + ".tmp")
        try:
            applied.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"stamp": list(stamp) if stamp else None}))
            os.replace(temporary, applied)
        except OSError as e:
            log.warn("cannot write {path}: {e}", path=applied, e=e)
            return
        self._acknowledged = stamp

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            with contextlib.suppress(Exception):
                self._loop.stop()
        return super().stopService()


def describe(plan: FaultPlan) -> str:
    parts = [f"partition from {peer} ({mode})" for peer, (_, mode, _) in
             plan.partitions.items()]
    if plan.delay:
        parts.append(f"replies {plan.delay * 1000:.0f} ms late")
    parts += [f"{r.stage} -> {r.reply.code}" for r in plan.scripted]
    return "; ".join(parts) or "no faults"
