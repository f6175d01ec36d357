"""``exchange-emu``: the command line of the emulator."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

from exchange_emu.directory import OrganizationFileError, load_organization


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
