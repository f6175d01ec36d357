"""``exchange-emu certs init|show``: the lab certificate authority on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from exchange_emu.directory import Organization, OrganizationFileError, load_organization
from exchange_emu.security.authority import ensure_certificates
from exchange_emu.security.credentials import CertificateError, load_credentials


def _organization(args: argparse.Namespace) -> Organization:
    try:
        return load_organization(args.config, port_offset=args.port_offset)
    except OrganizationFileError as e:
        raise SystemExit(f"exchange-emu: error: {e}") from None


def prepare_certificates(organization: Organization) -> list[str]:
    """Make the missing certificates, then check every server's (one line on failure)."""
    try:
        made = ensure_certificates(organization)
        for server in organization.servers.values():
            load_credentials(organization, server)
    except CertificateError as e:
        raise SystemExit(f"exchange-emu: error: {e}") from None
    return made


def cmd_certs_init(args: argparse.Namespace) -> int:
    organization = _organization(args)
    made = prepare_certificates(organization)
    for line in made:
        print(f"created {line}")
    tls = organization.tls
    assert tls is not None
    if not made:
        print(f"nothing to do: the CA {tls.ca_certificate} and every server's certificate "
              "exist")
    return 0


def cmd_certs_show(args: argparse.Namespace) -> int:
    organization = _organization(args)
    tls = organization.tls
    assert tls is not None
    print(f"CA: {tls.ca_certificate}")
    status = 0
    for server in organization.servers.values():
        try:
            credentials = load_credentials(organization, server)
        except CertificateError as e:
            print(f"{server.name}: error: {e}")
            status = 1
            continue
        if credentials is None:
            print(f"{server.name}: no certificates yet (run: exchange-emu certs init)")
            continue
        leaf = credentials.certificate
        print(f"{server.name}: {server.certificate} {leaf.subject.rfc4514_string()} "
              f"valid until {leaf.not_valid_after_utc:%Y-%m-%d}")
    return status


def register(commands: Any, with_config: Any) -> None:
    """Add ``certs init`` and ``certs show`` to the ``exchange-emu`` subcommands."""
    certs = commands.add_parser(
        "certs", help="the lab certificate authority: make or show the servers' certificates",
        description="Make the organization CA and one certificate per server (subject and "
                    "DNS name = the server's FQDN) where missing; see docs/security.md.")
    actions = certs.add_subparsers(dest="certs_command", required=True)
    init = actions.add_parser("init", help="create the CA and the missing certificates")
    with_config(init)
    init.set_defaults(func=cmd_certs_init)
    show = actions.add_parser("show", help="list each server's certificate and check it")
    with_config(show)
    show.set_defaults(func=cmd_certs_show)
