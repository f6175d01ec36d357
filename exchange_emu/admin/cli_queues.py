"""The management cmdlets as ``exchange-emu`` subcommands (get-queue, suspend-message, …).

Each talks to the running lab's admin endpoint (``[lab] admin``), which forwards to the
servers, and prints Exchange-like tables (``--json`` for the API's JSON instead). A lab that
does not answer, a bad identity or filter: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from exchange_emu.admin.formatting import format_list, format_table

NOT_RUNNING_HEADER = "X-Exchange-Emu-Not-Running"


class CliError(Exception):
    """Printed as ``exchange-emu: error: <message>``; exit status 2."""


def _lab_address(args: argparse.Namespace) -> str:
    from exchange_emu.directory import OrganizationFileError, load_organization

    try:
        organization = load_organization(args.config, port_offset=args.port_offset)
    except OrganizationFileError as e:
        raise CliError(str(e)) from None
    if organization.lab.admin is None:
        raise CliError(f"{args.config} gives the lab no admin address ([lab] admin)")
    return str(organization.lab.admin)


def call(args: argparse.Namespace, method: str, path: str, query: dict[str, Any] | None = None,
         body: dict[str, Any] | None = None, timeout: float = 60.0) -> tuple[bytes, Any]:
    """One request to the lab endpoint: (raw answer, headers); CliError on any refusal."""
    address = _lab_address(args)
    wanted = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    url = f"http://{address}{path}" + (f"?{urlencode(wanted)}" if wanted else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            headers = response.headers
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", str(e))
        except ValueError:
            message = str(e)
        raise CliError(message) from None
    except OSError as e:
        raise CliError(f"no lab answers at http://{address} ({getattr(e, 'reason', e)}); "
                       "is exchange-emu lab running (not --single-process)?") from None
    missing = headers.get(NOT_RUNNING_HEADER)
    if missing:
        print(f"exchange-emu: warning: not running, not listed: {missing}", file=sys.stderr)
    return raw, headers


def call_json(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    raw, _ = call(args, method, path, **kwargs)
    return json.loads(raw)


def _settings(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--set {pair!r}: write Name=Value, e.g. "
                           "--set MaxAcknowledgementDelay=00:00:30")
        out[name.strip()] = value.strip()
    if not out:
        raise CliError("give at least one --set Name=Value")
    return out


QUEUE_COLUMNS = ("Identity", "DeliveryType", "Status", "MessageCount", "NextHopDomain")
MESSAGE_COLUMNS = ("Identity", "FromAddress", "Status", "Queue", "Subject")
CONNECTOR_COLUMNS = ("Identity", "Bindings", "MaxAcknowledgementDelay", "MaxMessageSize",
                     "MaxRecipientsPerMessage")


def _show(args: argparse.Namespace, rows: Any, columns: Sequence[str] | None) -> None:
    if args.json:
        print(json.dumps(rows, indent=1))
    elif columns is None:
        print(format_list(rows if isinstance(rows, list) else [rows]), end="")
    else:
        print(format_table(rows if isinstance(rows, list) else [rows], columns), end="")


def cmd_get_queue(args: argparse.Namespace) -> None:
    rows = call_json(args, "GET", "/api/queues", query={
        "server": args.server, "identity": args.identity, "filter": args.filter,
        "result_size": args.result_size})
    _show(args, rows, QUEUE_COLUMNS if not args.identity else None)


def cmd_get_message(args: argparse.Namespace) -> None:
    if args.identity:
        row = call_json(args, "GET", "/api/message", query={"identity": args.identity})
        if not args.json:
            row = dict(row, Recipients=", ".join(
                f"{r['Address']} ({r['Status']})" for r in row.get("Recipients", [])))
        _show(args, row, None)
        return
    rows = call_json(args, "GET", "/api/messages", query={
        "server": args.server, "queue": args.queue, "filter": args.filter,
        "result_size": args.result_size})
    _show(args, rows, MESSAGE_COLUMNS)


def _action(path: str, columns: Sequence[str], **extra: str) -> Callable[[argparse.Namespace],
                                                                         None]:
    def run(args: argparse.Namespace) -> None:
        body: dict[str, Any] = {"identity": args.identity}
        for key, attribute in extra.items():
            body[key] = bool(getattr(args, attribute))
        _show(args, call_json(args, "POST", path, body=body), columns)
    return run


def cmd_export_message(args: argparse.Namespace) -> None:
    raw, _ = call(args, "GET", "/api/message/export", query={"identity": args.identity})
    if args.out:
        try:
            with open(args.out, "wb") as out:
                out.write(raw)
        except OSError as e:
            raise CliError(f"cannot write {args.out}: {e.strerror}") from None
        print(f"{args.identity}: {len(raw)} bytes written to {args.out}")
    else:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()


def cmd_get_transportconfig(args: argparse.Namespace) -> None:
    _show(args, call_json(args, "GET", "/api/transport-config",
                          query={"server": args.server}), None)


def cmd_set_transportconfig(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"settings": _settings(args.set)}
    if args.server:
        body["server"] = args.server
    _show(args, call_json(args, "POST", "/api/transport-config", body=body), None)


def cmd_get_receiveconnector(args: argparse.Namespace) -> None:
    rows = call_json(args, "GET", "/api/receive-connectors",
                     query={"server": args.server, "identity": args.identity})
    _show(args, rows, None if args.identity else CONNECTOR_COLUMNS)


def cmd_set_receiveconnector(args: argparse.Namespace) -> None:
    rows = call_json(args, "POST", "/api/receive-connector",
                     body={"identity": args.identity, "settings": _settings(args.set)})
    _show(args, rows, None)


def _run(handler: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            handler(args)
        except CliError as e:
            print(f"exchange-emu: error: {e}", file=sys.stderr)
            return 2
        return 0
    return run


def register(commands: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the management subcommands to ``exchange-emu``'s subparsers."""

    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], None],
            *, json_output: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text + " (through the running lab's "
            "admin endpoint; docs/management.md)")
        with_config(parser)
        if json_output:
            parser.add_argument("--json", action="store_true",
                                help="print the API's JSON instead of a table")
        parser.set_defaults(func=_run(handler))
        return parser

    def listing(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--server", metavar="NAME",
                            help="one server (default: every running transport server)")
        parser.add_argument("--filter", metavar="FILTER",
                            help="Exchange -Filter, e.g. '{Status -eq \"Retry\"}'")
        parser.add_argument("--result-size", metavar="N|unlimited",
                            help="at most N rows (default 1000)")

    p = add("get-queue", "Get-Queue: the queues of the running servers", cmd_get_queue)
    listing(p)
    p.add_argument("--identity", metavar="QUEUE", help="one queue, e.g. HUB01\\3")
    p = add("get-message", "Get-Message: the messages in the queues", cmd_get_message)
    listing(p)
    p.add_argument("--queue", metavar="QUEUE", help="only this queue, e.g. HUB01\\3")
    p.add_argument("--identity", metavar="MESSAGE",
                   help="one message with its recipients, e.g. HUB01\\3\\12")
    for name, help_text, path in (
            ("retry-queue", "Retry-Queue: connect to the next hop now", "/api/queue/retry"),
            ("suspend-queue", "Suspend-Queue: stop delivery from a queue",
             "/api/queue/suspend"),
            ("resume-queue", "Resume-Queue: restart delivery from a queue",
             "/api/queue/resume")):
        extra = {"resubmit": "resubmit"} if name == "retry-queue" else {}
        p = add(name, help_text, _action(path, QUEUE_COLUMNS, **extra))
        p.add_argument("identity", metavar="QUEUE", help="e.g. HUB01\\3 or HUB01\\Unreachable")
        if extra:
            p.add_argument("--resubmit", action="store_true",
                           help="send the queue's messages back to the categorizer")
    for name, help_text, path in (
            ("suspend-message", "Suspend-Message: hold a message", "/api/message/suspend"),
            ("resume-message", "Resume-Message: release a held (or poison) message",
             "/api/message/resume"),
            ("remove-message", "Remove-Message: delete a message from its queue",
             "/api/message/remove")):
        extra = {"with_ndr": "with_ndr"} if name == "remove-message" else {}
        p = add(name, help_text, _action(path, ("Identity", "Status"), **extra))
        p.add_argument("identity", metavar="MESSAGE", help="e.g. HUB01\\3\\12")
        if extra:
            p.add_argument("--with-ndr", action="store_true",
                           help="send the sender a non-delivery report")
    p = add("export-message", "Export-Message: a queued message as RFC 822 bytes",
            cmd_export_message, json_output=False)
    p.add_argument("identity", metavar="MESSAGE", help="e.g. HUB01\\3\\12")
    p.add_argument("--out", metavar="FILE", help="write to FILE (default: standard output)")
    p = add("get-transportconfig", "Get-TransportConfig: the [transport] settings in force",
            cmd_get_transportconfig)
    p.add_argument("--server", metavar="NAME", help="one server (default: every running one)")
    p = add("set-transportconfig", "Set-TransportConfig: change [transport] settings of "
            "running servers until they restart", cmd_set_transportconfig)
    p.add_argument("--server", metavar="NAME", help="one server (default: every running one)")
    p.add_argument("--set", action="append", metavar="Name=Value",
                   help="e.g. ShadowHeartbeatTimeoutInterval=00:00:05 (repeatable)")
    p = add("get-receiveconnector", "Get-ReceiveConnector: receive connectors in force",
            cmd_get_receiveconnector)
    p.add_argument("identity", nargs="?", metavar="CONNECTOR",
                   help="e.g. 'HUB01\\Default HUB01'")
    p.add_argument("--server", metavar="NAME", help="one server (default: every running one)")
    p = add("set-receiveconnector", "Set-ReceiveConnector: change a running receive "
            "connector until its server restarts", cmd_set_receiveconnector)
    p.add_argument("identity", metavar="CONNECTOR", help="e.g. 'HUB01\\Default HUB01'")
    p.add_argument("--set", action="append", metavar="Name=Value",
                   help="e.g. MaxAcknowledgementDelay=00:00:30 (repeatable)")
