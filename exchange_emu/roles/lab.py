"""``twistd exchange-lab``: every server of an organization file in one process.

Hubs, edges and mailbox servers are real; the legacy role (a later issue)
starts as a placeholder that says so.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from exchange_emu.directory import Organization
from exchange_emu.roles.options import OrganizationOptions
from exchange_emu.roles.server_services import ExchangeServer
from exchange_emu.security.credentials import CertificateError
from exchange_emu.startup import ExitOnStartupError
from exchange_emu.stop_signals import StopOnceOnSignals


class Options(OrganizationOptions):
    synopsis = "--config etc/lab.toml [--port-offset N]"
    longdesc = "Run every server of an organization file in this one process."


def server_table(organization: Organization) -> str:
    """The lab's servers, roles, sites and endpoints, as a table for people."""
    rows = [("SERVER", "ROLES", "SITE", "SMTP", "STORE DRIVER", "DATA")]
    for server in organization.servers.values():
        rows.append(
            (
                server.name,
                ",".join(sorted(server.roles))
                + (f" ({server.version})" if "legacy" in server.roles else ""),
                server.site or "-",
                str(server.smtp) if server.smtp else "-",
                str(server.store_driver) if server.store_driver else "-",
                str(server.data_dir),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    organization = options.organization("exchange-lab")
    top = ExitOnStartupError("exchange-lab")
    StopOnceOnSignals(reactor).setServiceParent(top)
    for server in organization.servers.values():
        try:
            ExchangeServer(organization, server, reactor).setServiceParent(top)
        except CertificateError as e:
            raise SystemExit(f"exchange-lab: error: {e}") from None
    return top
