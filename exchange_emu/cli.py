"""``exchange-emu``: the command line of the emulator."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange_emu.directory import OrganizationFileError, UnknownServerError, load_organization

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from exchange_emu.mailbox.report import MailboxLocation


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
    from exchange_emu.security.cli_certs import prepare_certificates

    for line in prepare_certificates(organization):
        print(f"certificate created: {line}")
    print(f"Exchange lab: organization {organization.name} from {args.config}")
    print(server_table(organization))
    print("Logs and queue databases: under each server's DATA folder above. "
          "Ctrl-C stops the lab.", flush=True)
    if args.single_process:
        from twisted.scripts.twistd import run

        sys.argv = ["twistd", "--nodaemon", "--pidfile=", "exchange-lab", "--config",
                    args.config, "--port-offset", str(args.port_offset)]
        run()
        return 0
    return _run_supervised(organization, Path(args.config), args.port_offset)


def _run_supervised(organization: Any, config: Path, port_offset: int) -> int:
    """Every server as its own process until Ctrl-C (or SIGTERM) stops them all."""
    from twisted.internet import reactor as default_reactor

    from exchange_emu.lab.supervisor import LabSupervisor
    from exchange_emu.stop_signals import StopOnceOnSignals

    reactor: Any = default_reactor
    supervisor = LabSupervisor(organization, config.resolve(), port_offset, reactor,
                               write=lambda line: print(line, flush=True))
    admin = organization.lab.admin
    if admin is not None:
        from twisted.internet.error import CannotListenError

        from exchange_emu.lab.admin_api import admin_site

        try:
            reactor.listenTCP(admin.port, admin_site(supervisor), interface=admin.host)
        except CannotListenError as e:
            return _error(f"the lab admin endpoint cannot listen on {admin}: {e.socketError}")
        print(f"Lab admin (faults: exchange-emu fault --help): "
              f"http://{admin}/servers", flush=True)
        print(f"Management API (exchange-emu get-queue, get-message, ...): "
              f"http://{admin}/api/queues", flush=True)
    reactor.callWhenRunning(supervisor.start)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    StopOnceOnSignals(reactor).startService()  # (make forwards a signal a second time)
    reactor.run()
    print("Exchange lab stopped.", flush=True)
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


def _mailbox_location(args: argparse.Namespace) -> tuple[MailboxLocation, Engine]:
    """The mailbox of ``args.address`` and an engine on its mailbox server's store."""
    from exchange_emu.mailbox.report import locate_mailbox, open_store

    organization = _load(args.config, args.port_offset)
    location = locate_mailbox(organization, args.address)
    return location, open_store(location)


def cmd_mailbox_list(args: argparse.Namespace) -> int:
    """``Get-MailboxFolderStatistics``-like: folder counts and the items of one mailbox."""
    from exchange_emu.mailbox.report import (
        MailboxReportError,
        format_listing,
        parse_folder,
        read_listing,
    )

    try:
        folder = parse_folder(args.folder) if args.folder is not None else None
        location, engine = _mailbox_location(args)
        try:
            counts, listed = read_listing(engine, location, folder)
        finally:
            engine.dispose()
    except MailboxReportError as e:
        return _error(str(e))
    print(format_listing(location, counts, listed), end="")
    return 0


def cmd_mailbox_show(args: argparse.Namespace) -> int:
    """Open one mailbox item: its folder and headers (the whole message with ``--body``)."""
    from exchange_emu.mailbox.report import MailboxReportError, format_item, read_item

    try:
        location, engine = _mailbox_location(args)
        try:
            item = read_item(engine, location, args.item_id)
        finally:
            engine.dispose()
    except MailboxReportError as e:
        return _error(str(e))
    print(format_item(item, body=args.body), end="")
    return 0


def _run_twisted(coroutine_function: Any) -> Any:
    """Run ``coroutine_function(reactor)`` on the reactor and return its result."""
    from twisted.internet import defer, task

    result: list[Any] = []

    async def main(reactor: Any) -> None:
        result.append(await coroutine_function(reactor))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)), [])
    except SystemExit as e:
        if e.code:
            raise
    return result[0] if result else None


class _Failed(Exception):
    """A CLI command already printed its one-line error; exit with ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status


def _mailbox_server_call(call: Any, what: str) -> Any:
    """Run ``call(reactor)`` against a mailbox server and return its result; on failure
    print the one-line error and raise ``_Failed``."""
    from exchange_emu.mailbox.client import SubmitError

    outcome: list[Any] = []

    async def run(reactor: Any) -> None:
        try:
            outcome.append(await call(reactor))
        except SubmitError as e:
            outcome.append(e)

    _run_twisted(run)
    if not outcome:
        raise _Failed(_error(f"{what} did not complete"))
    if isinstance(outcome[0], SubmitError):
        raise _Failed(_error(str(outcome[0])))
    return outcome[0]


def cmd_send(args: argparse.Namespace) -> int:
    """Scenario A: a client writes a message into the sender's Outbox (MAPI stand-in)."""
    from exchange_emu.mailbox.client import compose, submit

    organization = _load(args.config, args.port_offset)
    if args.file:
        try:
            mime = Path(args.file).read_bytes()
        except OSError as e:
            return _error(f"cannot read {args.file}: {e.strerror}")
    else:
        mime = compose(args.sender, args.to, args.subject, args.body)
    done = _mailbox_server_call(
        lambda reactor: submit(reactor, organization, args.sender, args.to, mime),
        "submission")
    print(f"In the Outbox of {args.sender} on {done.mailbox_server}\\{done.database}: "
          f"item {done.item_id}, {done.message_id}")
    return 0


def cmd_failover(args: argparse.Namespace) -> int:
    """Fail a mailbox database over to its copy; lossy: ask the hubs to redeliver."""
    from exchange_emu.mailbox.client import failover

    organization = _load(args.config, args.port_offset)
    answer = _mailbox_server_call(
        lambda reactor: failover(reactor, organization, args.database, lossy=args.lossy,
                                 lost_seconds=args.lost_seconds),
        "failover")
    kind = "lossy" if args.lossy else "lossless"
    print(f"{kind} failover of {args.database}: {answer['lost']} items lost; "
          f"{answer['hubs']} hubs asked to redeliver from their transport dumpsters")
    return 0


def cmd_replicated(args: argparse.Namespace) -> int:
    """A database's copies hold its log up to a time: the hubs' dumpsters let go of older
    items (what Exchange's replication reports to the transport dumpster)."""
    import time

    from exchange_emu.admin.tracking import TrackingQuery, TrackingQueryError
    from exchange_emu.mailbox.client import report_replication

    organization = _load(args.config, args.port_offset)
    if args.up_to == "now":
        up_to = time.time()
    else:
        try:
            query = TrackingQuery.from_text(start=args.up_to)
        except TrackingQueryError as e:
            return _error(str(e).replace("--start", "--up-to"))
        assert query.start is not None
        up_to = query.start.timestamp()
    hubs = _mailbox_server_call(
        lambda reactor: report_replication(reactor, organization, args.database, up_to),
        "replication report")
    print(f"{args.database} replicated up to {up_to:.3f}; {hubs} hubs told")
    return 0


def cmd_um_submit(args: argparse.Namespace) -> int:
    """A UM server's voice mail submission to a hub (a scenario F entry point)."""
    import time

    from exchange_emu.um import UMSubmitError, VoiceMail, hub_for, read_audio, submit_voice_mail

    organization = _load(args.config, args.port_offset)
    try:
        audio = read_audio(args.wav)
        hub = hub_for(organization, args.hub)
        message_id = submit_voice_mail(
            organization, hub, VoiceMail(args.caller, args.to, audio, args.duration),
            now=time.time())
    except (UMSubmitError, LookupError) as e:
        return _error(str(e).strip("'\""))
    print(f"Voice mail for {args.to} accepted by {hub.name}: {message_id}")
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    """Run scenarios through the running lab and narrate them from the tracking logs."""
    from exchange_emu.lab.scenarios import SCENARIOS, run
    from exchange_emu.mailbox.client import SubmitError

    organization = _load(args.config, args.port_offset)
    wanted = SCENARIOS if args.scenario.lower() == "all" else args.scenario.upper()
    if wanted not in SCENARIOS or not wanted:
        return _error(f"no scenario {args.scenario!r}: A, B, C, D, E, F or all")
    if args.fail is not None:
        from exchange_emu.lab.cli_experiments import run_failure

        return run_failure(organization, wanted, args.fail, args.timeout,
                           Path(args.svg) if args.svg else None)
    outcome: list[Any] = []

    async def go(reactor: Any) -> None:
        try:
            outcome.extend(await run(reactor, organization, wanted,
                                     lambda line: print(line, flush=True), args.timeout))
        except (SubmitError, OSError) as e:
            outcome.append(e)

    _run_twisted(go)
    if outcome and isinstance(outcome[-1], Exception):
        return _error(f"{outcome[-1]}; is the lab running (exchange-emu lab)?")
    if args.svg:
        from exchange_emu.lab.scenario_diagram import write_scenario_svgs

        try:
            for written in write_scenario_svgs(organization, outcome, Path(args.svg)):
                print(f"Sequence diagram: {written}")
        except OSError as e:
            return _error(f"cannot write {args.svg}: {e.strerror}")
    failed = [r.scenario for r in outcome if not r.ok]
    print(f"{len(outcome) - len(failed)} of {len(outcome)} scenarios followed the documented "
          "steps" + (f"; not: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """A ``password_hash`` value for a recipient of the organization file."""
    import getpass

    from exchange_emu.directory.passwords import hash_password

    password = args.password if args.password is not None else getpass.getpass("Password: ")
    print(hash_password(password))
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
    lab.add_argument("--single-process", action="store_true",
                     help="run every server in this one process (default: one process each)")
    lab.set_defaults(func=cmd_lab)

    from exchange_emu.security.cli_certs import register as register_certs

    register_certs(commands, with_config)

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

    mailbox = commands.add_parser(
        "mailbox",
        help="look into a mailbox on a mailbox server's store",
        description="Read a mailbox of an Exchange 2010 mailbox database directly from its "
        "mailbox server's store (the server may be running).",
    )
    mailbox_commands = mailbox.add_subparsers(dest="mailbox_command", metavar="COMMAND",
                                              required=True)
    listing = mailbox_commands.add_parser(
        "list", help="folder counts and items of a mailbox",
        description="Folder counts and one line per item: Id, Folder, Time (received for "
        "delivered items, else the client submit time, UTC), Sender, Subject, Size.")
    with_config(listing)
    listing.add_argument("address", metavar="ADDRESS", help="the mailbox's SMTP address")
    listing.add_argument("--folder", metavar="F",
                         help="only this folder: Inbox, Outbox, 'Sent Items', Drafts, "
                         "'Deleted Items'")
    listing.set_defaults(func=cmd_mailbox_list)
    show = mailbox_commands.add_parser(
        "show", help="one item of a mailbox: folder and headers",
        description="Print an item's folder, store properties and header block.")
    with_config(show)
    show.add_argument("address", metavar="ADDRESS", help="the mailbox's SMTP address")
    show.add_argument("item_id", metavar="ITEM_ID", type=int, help="the item id (from list)")
    show.add_argument("--body", action="store_true", help="print the whole message")
    show.set_defaults(func=cmd_mailbox_show)

    send = commands.add_parser(
        "send", help="submit a message into the sender's Outbox (scenario A)",
        description="A mail client's submission, as MAPI or ActiveSync does it: the message "
        "goes into the sender's Outbox on their mailbox server; the Mail Submission service "
        "then hands it to a hub of the site (scenario B).")
    with_config(send)
    send.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    send.add_argument("--to", required=True, nargs="+", action="extend", metavar="ADDR")
    send.add_argument("--subject", default="Test message")
    send.add_argument("--body", default="This is a test message from exchange-emu.")
    send.add_argument("--file", metavar="MESSAGE.EML", help="send this RFC 5322 file instead")
    send.set_defaults(func=cmd_send)

    fail_over = commands.add_parser(
        "failover", help="fail a mailbox database over (lossy: dumpster redelivery)",
        description="Move a mailbox database to its passive copy. With --lossy the copy "
        "lacked the last --lost-seconds of the log: those items are lost, and every hub of "
        "the site redelivers from its transport dumpster; duplicate detection drops what "
        "survived.")
    with_config(fail_over)
    fail_over.add_argument("database", metavar="DATABASE")
    fail_over.add_argument("--lossy", action="store_true")
    fail_over.add_argument("--lost-seconds", type=float, default=60.0)
    fail_over.set_defaults(func=cmd_failover)

    replicated = commands.add_parser(
        "replicated", help="report a database replicated up to a time (dumpster truncation)",
        description="Tell a mailbox database's server that its copies hold the log up to a "
        "time; the hubs of its site drop older items from their transport dumpsters.")
    with_config(replicated)
    replicated.add_argument("database", metavar="DATABASE")
    replicated.add_argument("--up-to", default="now", metavar="ISO|now")
    replicated.set_defaults(func=cmd_replicated)

    um = commands.add_parser(
        "um-submit", help="submit a voice mail to a hub as a UM server does (scenario F)",
        description="An Exchange 2010 Unified Messaging server submits voice mail to a hub of "
        "its site over plain SMTP, without XSHADOW: the hub holds its 250 (delayed "
        "acknowledgement) until the message is safe elsewhere.")
    with_config(um)
    um.add_argument("--to", required=True, metavar="ADDR")
    um.add_argument("--wav", required=True, metavar="FILE", help="the recorded message")
    um.add_argument("--caller", default="+1 425 555 0100 <um01@contoso.test>",
                    help="who called (From:)")
    um.add_argument("--duration", type=int, default=0, help="seconds, for the subject")
    um.add_argument("--hub", metavar="NAME", help="the hub to submit to (default: the first)")
    um.set_defaults(func=cmd_um_submit)

    from exchange_emu.lab.cli_faults import register as register_faults

    register_faults(commands, with_config)

    scenario = commands.add_parser(
        "scenario", help="run a scenario (A-F, or all) through the running lab, narrated",
        description="Send the message a scenario needs through the running lab, follow it in "
        "every server's tracking log, print the document's steps as they happened, and say "
        "whether it followed them.")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", metavar="COMMAND",
                                                required=True)
    scenario_run = scenario_commands.add_parser("run", help="run and narrate")
    with_config(scenario_run)
    scenario_run.add_argument("scenario", metavar="A|B|C|D|E|F|all")
    scenario_run.add_argument("--timeout", type=float, default=60.0,
                              help="seconds to wait for the steps")
    scenario_run.add_argument("--fail", metavar="STEP:ACTION",
                              help="a failure experiment, e.g. D.4.3:kill-primary "
                              "(docs/teaching/)")
    scenario_run.add_argument("--svg", metavar="FILE.svg",
                              help="also draw the run's sequence diagram (one file per message)")
    scenario_run.set_defaults(func=cmd_scenario)

    from exchange_emu.admin.cli_queues import register as register_management

    register_management(commands, with_config)

    hashing = commands.add_parser(
        "hash-password", help="make a password_hash for the organization file",
        description="Print a PBKDF2-SHA256 password_hash for a recipient of the organization "
        "file (asks for the password when --password is not given).")
    hashing.add_argument("--password", help="the password (visible in the shell history)")
    hashing.set_defaults(func=cmd_hash_password)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except _Failed as e:
        return e.status


if __name__ == "__main__":
    sys.exit(main())
