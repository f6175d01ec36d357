"""``exchange-emu``: the command line of the emulator."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

from exchange_emu.directory import OrganizationFileError, UnknownServerError, load_organization


def _load(path: str, port_offset: int = 0):  # type: ignore[no-untyped-def]
    try:
        return load_organization(path, port_offset=port_offset)
    except OrganizationFileError as e:
        raise SystemExit(f"exchange-emu: error: {e}") from None


def cmd_check_config(args: argparse.Namespace) -> int:
    organization = _load(args.config, args.port_offset)
    from exchange_emu.roles.lab import server_table

    print(f"{args.config}: organization {organization.name}, "
          f"{len(organization.servers)} servers: OK")
    print(server_table(organization))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    organization = _load(args.config, args.port_offset)
    from exchange_emu.roles.lab import server_table

    if args.fresh:
        for server in organization.servers.values():
            if server.data_dir.exists():
                shutil.rmtree(server.data_dir)
    print(f"Exchange lab: organization {organization.name} from {args.config}")
    print(server_table(organization))
    print("Logs and queue databases: under each server's DATA folder above. "
          "Ctrl-C stops the lab.", flush=True)
    from twisted.scripts.twistd import run

    argv = ["twistd", "--nodaemon", "--pidfile=", "exchange-lab", "--config", args.config,
            "--port-offset", str(args.port_offset)]
    sys.argv = argv
    run()
    return 0


def _error(message: str) -> int:
    print(f"exchange-emu: error: {message}", file=sys.stderr)
    return 2


def cmd_track(args: argparse.Namespace) -> int:
    """``Get-MessageTrackingLog``: search the servers' message tracking logs, print a table."""
    from exchange_emu.admin.tracking import (
        TRACKING_LOG_SUBDIR,
        TrackingQuery,
        TrackingQueryError,
        search_tracking_logs,
        tracking_log_directory,
    )
    from exchange_emu.logs import format_table, to_json

    try:
        query = TrackingQuery.from_text(
            start=args.start,
            end=args.end,
            event_id=args.event_id,
            message_id=args.message_id,
            internal_message_id=args.internal_message_id,
            sender=args.sender,
            recipients=args.recipients,
            subject=args.subject,
            reference=args.reference,
            result_size=args.result_size,
        )
    except TrackingQueryError as e:
        return _error(str(e))
    organization = _load(args.config, args.port_offset)
    try:
        found = search_tracking_logs(organization, query, args.server)
    except UnknownServerError as e:
        return _error(str(e))
    if not found.log_files:
        if len(found.servers) == 1:
            where = str(tracking_log_directory(found.servers[0]))
        else:
            where = f"<data_dir>/{TRACKING_LOG_SUBDIR.as_posix()} of {len(found.servers)} servers"
        print(f"exchange-emu: no message tracking logs found in {where}", file=sys.stderr)
    if args.json:
        print(to_json(found.events))
    else:
        print(format_table(found.events), end="")
    if found.truncated:
        print(
            f"exchange-emu: warning: more events match than the {query.result_size} shown; "
            "raise --result-size (or use --result-size unlimited) to see them",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange-emu",
        description="An emulator of the Microsoft Exchange 2010 transport roles "
        "(mailbox, hub, edge, legacy) built around shadow redundancy.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="etc/lab.toml", help="organization file (TOML)")
        p.add_argument("--port-offset", type=int, default=0, help="shift every port by N")

    lab = commands.add_parser("lab", help="run every server of an organization file")
    with_config(lab)
    lab.add_argument("--fresh", action="store_true", help="delete the servers' data first")
    lab.set_defaults(func=cmd_lab)

    check = commands.add_parser("check-config", help="validate an organization file")
    with_config(check)
    check.set_defaults(func=cmd_check_config)

    track = commands.add_parser(
        "track",
        help="search message tracking logs (Get-MessageTrackingLog)",
        description="Get-MessageTrackingLog: search the message tracking logs of some servers "
        "(default: every server of the organization) and print the events in time order. "
        "Dates are ISO 8601; a date without an offset is UTC.",
    )
    with_config(track)
    track.add_argument("--server", nargs="+", action="extend", metavar="NAME",
                       help="search only these servers' logs (-Server)")
    track.add_argument("--start", metavar="ISO", help="events at or after this time (-Start)")
    track.add_argument("--end", metavar="ISO", help="events before this time (-End)")
    track.add_argument("--event-id", metavar="ID", help="RECEIVE, SEND, DELIVER, ... (-EventId)")
    track.add_argument("--message-id", metavar="ID", help="the Message-ID header (-MessageId)")
    track.add_argument("--internal-message-id", metavar="N",
                       help="the server's own message number (-InternalMessageId)")
    track.add_argument("--sender", metavar="ADDR", help="sender address (-Sender)")
    track.add_argument("--recipients", nargs="+", action="extend", metavar="ADDR",
                       help="any of these recipients (-Recipients)")
    track.add_argument("--subject", metavar="TEXT", help="subject contains (-MessageSubject)")
    track.add_argument("--reference", metavar="TEXT", help="the reference field (-Reference)")
    track.add_argument("--result-size", metavar="N|unlimited",
                       help="at most N events, default 1000 (-ResultSize)")
    track.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    track.set_defaults(func=cmd_track)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
