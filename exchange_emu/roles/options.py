"""Command-line options shared by the twistd plugins of every role."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from exchange_emu.directory import (
    Organization,
    OrganizationFileError,
    Server,
    UnknownServerError,
    load_organization,
)


class OrganizationOptions(usage.Options):
    """``--config`` and ``--port-offset``: which organization file, shifted how."""

    optParameters: Any = [
        ["config", "c", "etc/lab.toml", "The organization file (TOML)."],
        ["port-offset", None, 0, "Add this to every port of the file.", int],
    ]

    def organization(self, program: str) -> Organization:
        """Load the organization file, or end the program with its one-line error."""
        try:
            return load_organization(self["config"], port_offset=self["port-offset"])
        except OrganizationFileError as e:
            raise SystemExit(f"{program}: error: {e}") from None


class ServerOptions(OrganizationOptions):
    """Options of a single-server role: the organization file and which server to be."""

    optParameters: Any = [
        *OrganizationOptions.optParameters,
        ["server", "s", None, "The server of the organization file to run (e.g. HUB01)."],
    ]

    def postOptions(self) -> None:
        if not self["server"]:
            raise usage.UsageError("--server NAME is required (e.g. --server HUB01)")

    def server(self, program: str, role: str) -> tuple[Organization, Server]:
        """The organization and this process's server, checked to hold ``role``."""
        organization = self.organization(program)
        try:
            server = organization.server(self["server"])
        except UnknownServerError as e:
            raise SystemExit(f"{program}: error: {e}") from None
        if role not in server.roles:
            raise SystemExit(
                f"{program}: error: server {server.name} in {self['config']} has roles "
                f"{', '.join(sorted(server.roles))}, not {role}"
            )
        return organization, server
