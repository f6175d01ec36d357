"""``exchange-emu fault …``: break the running lab on purpose.

Whole servers (kill, stop, start, restart, wipe-db, crash-at) go through the lab
admin endpoint of a supervised lab. Partitions, slow servers and scripted replies
are written straight into the servers' fault plans (``<data_dir>/faults.json``), so
they also work with ``exchange-emu lab --single-process``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from exchange_emu.directory import OrganizationFileError, load_organization
from exchange_emu.fault_plan import PARTITION_MODES, STAGES
from exchange_emu.lab import fault_control
from exchange_emu.lab.fault_control import FaultError

SERVER_ACTIONS = {
    "kill": "SIGKILL the server: a crash at any instant",
    "stop": "stop the server cleanly",
    "start": "start the server, with its data",
    "restart": "stop, then start the server",
    "wipe-db": "stop the server, delete its queue database, start it (a lost disk)",
}


def _error(message: str) -> int:
    print(f"exchange-emu: error: {message}", file=sys.stderr)
    return 2


def _organization(args: argparse.Namespace) -> Any:
    try:
        return load_organization(args.config, port_offset=args.port_offset)
    except OrganizationFileError as e:
        raise SystemExit(f"exchange-emu: error: {e}") from None


def admin_post(organization: Any, path: str, body: dict[str, Any] | None = None,
               timeout: float = 90.0) -> dict[str, Any]:
    """POST to the lab admin endpoint; FaultError with its one-line answer on failure."""
    admin = organization.lab.admin
    if admin is None:
        raise FaultError("the organization file gives the lab no admin address ([lab] admin)")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{admin}{path}", data=data, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e).get("error", str(e))
        except ValueError:
            message = str(e)
        raise FaultError(message) from None
    except OSError as e:
        raise FaultError(f"no lab answers at http://{admin} ({getattr(e, 'reason', e)}); is "
                         "exchange-emu lab running (not --single-process)?") from None


def cmd_server_action(args: argparse.Namespace) -> int:
    organization = _organization(args)
    try:
        answer = admin_post(organization, f"/servers/{args.server}/{args.fault}")
    except FaultError as e:
        return _error(str(e))
    state = "running" if answer["running"] else "not running"
    print(f"{answer['server']}: {answer['action']} done; now {state}")
    return 0


def cmd_crash_at(args: argparse.Namespace) -> int:
    organization = _organization(args)
    try:
        answer = admin_post(organization, "/faults/crash-at",
                            {"server": args.server, "step": args.step})
    except FaultError as e:
        return _error(str(e))
    print(f"{answer['server']}: restarted; it will crash at {answer['crash_at']}")
    return 0


def _plan_command(action: Callable[[Any, argparse.Namespace], str],
                  changes: bool = True) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        organization = _organization(args)
        try:
            print(action(organization, args))
        except FaultError as e:
            return _error(str(e))
        late = fault_control.not_applied(organization) if changes else []
        if late:
            print(f"exchange-emu: note: not picked up yet by {', '.join(late)} (a stopped "
                  "server applies its plan when it starts)", file=sys.stderr)
        return 0

    return run


def _list(organization: Any, args: argparse.Namespace) -> str:
    lines = fault_control.list_faults(organization)
    return "\n".join(lines) if lines else "no faults"


def register(commands: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    fault = commands.add_parser(
        "fault", help="break the running lab: kill, partition, slow, scripted replies, ...",
        description="Fault injection on the running lab. kill/stop/start/restart/wipe-db/"
        "crash-at act on whole servers through the lab admin endpoint (supervised lab); "
        "partition, heal, slow and reply write the servers' fault plans and work with "
        "--single-process too.")
    with_config(fault)  # `fault --config X kill S` as well as `fault kill S --config X`

    def sub_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=argparse.SUPPRESS,
                       help="organization file (TOML; default etc/lab.toml)")
        p.add_argument("--port-offset", type=int, default=argparse.SUPPRESS,
                       help="shift every port by N")

    faults = fault.add_subparsers(dest="fault", metavar="FAULT", required=True)
    for action, text in SERVER_ACTIONS.items():
        p = faults.add_parser(action, help=text, description=text)
        sub_config(p)
        p.add_argument("server", metavar="SERVER")
        p.set_defaults(func=cmd_server_action)

    crash = faults.add_parser(
        "crash-at", help="restart a server so that it crashes at a step",
        description="Restart SERVER with EXCHANGE_EMU_CRASH_AT=STEP: it kills itself "
        "(SIGKILL) right after that point (see docs/lab.md for the points).")
    sub_config(crash)
    crash.add_argument("server", metavar="SERVER")
    crash.add_argument("step", metavar="STEP")
    crash.set_defaults(func=cmd_crash_at)

    part = faults.add_parser(
        "partition", help="cut two servers off from each other",
        description="Connections between A and B fail both ways: refuse (connection "
        "refused / 421 after EHLO) or blackhole (a connect that hangs --hang seconds; the "
        "server never answers).")
    sub_config(part)
    part.add_argument("a", metavar="SERVER_A")
    part.add_argument("b", metavar="SERVER_B")
    part.add_argument("--mode", choices=PARTITION_MODES, default="refuse")
    part.add_argument("--hang", type=float, default=30.0, metavar="SECONDS",
                      help="blackhole: how long a connect hangs (default 30, the connect "
                      "timeout)")
    part.set_defaults(func=_plan_command(
        lambda org, a: fault_control.partition(org, a.a, a.b, a.mode, a.hang)))

    heal = faults.add_parser(
        "heal", help="undo faults: all, one server's, or one partition",
        description="No server: heal every fault. One: every fault of that server. Two: the "
        "partition between them.")
    sub_config(heal)
    heal.add_argument("servers", nargs="*", metavar="SERVER")
    heal.set_defaults(func=_plan_command(lambda org, a: fault_control.heal(org, a.servers)))

    slow = faults.add_parser("slow", help="delay every SMTP reply of a server",
                             description="Every SMTP reply of SERVER (banner included) "
                             "comes --delay milliseconds late; --delay 0 undoes it.")
    sub_config(slow)
    slow.add_argument("server", metavar="SERVER")
    slow.add_argument("--delay", type=int, required=True, metavar="MS")
    slow.set_defaults(func=_plan_command(
        lambda org, a: fault_control.slow(org, a.server, a.delay)))

    reply = faults.add_parser(
        "reply", help="script a server's SMTP reply at a stage",
        description="The next --count replies of SERVER at --verb (CONNECT is the banner, "
        "DOT/EOD the reply after DATA's dot, BDAT the reply to BDAT LAST) become --code "
        "--text. Exchange servers send with BDAT. --count 0: every time until healed.")
    sub_config(reply)
    reply.add_argument("server", metavar="SERVER")
    reply.add_argument("--verb", required=True, metavar="|".join(STAGES[:9]) + "|...")
    reply.add_argument("--code", type=int, required=True)
    reply.add_argument("--text", help="the reply text (default: an enhanced status code and "
                       "'(fault injection)')")
    reply.add_argument("--count", type=int, default=1)
    reply.add_argument("--probability", type=float, default=1.0,
                       help="replace each reply with this chance (with --seed: reproducible)")
    reply.add_argument("--seed", type=int)
    reply.set_defaults(func=_plan_command(lambda org, a: fault_control.script_reply(
        org, a.server, a.verb, a.code, a.text, a.count, a.probability, a.seed)))

    listing = faults.add_parser("list", help="the faults in force")
    sub_config(listing)
    listing.set_defaults(func=_plan_command(_list, changes=False))
