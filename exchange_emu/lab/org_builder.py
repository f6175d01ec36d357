"""Write small organization files: for tests, benchmarks and throw-away labs.

The default lab lives in etc/lab.toml; this builds others on free ports
without repeating the TOML by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerSpec:
    """One server of the organization file (``[[servers]]``)."""

    name: str
    role: str  # hub | edge | mailbox | legacy
    port: int
    site: str | None = "Site-A"
    version: str | None = None
    local_domains: tuple[str, ...] = ()
    database_url: str | None = None

    @property
    def fqdn(self) -> str:
        if self.version == "non-exchange" and self.local_domains:
            return f"mail.{self.local_domains[0]}"
        return f"{self.name.lower()}.contoso.test"


@dataclass(frozen=True)
class SendConnectorSpec:
    name: str
    source_servers: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    address_spaces: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class OrgSpec:
    servers: Sequence[ServerSpec]
    send_connectors: Sequence[SendConnectorSpec] = ()
    transport: Mapping[str, str | int | bool] = field(default_factory=dict)
    org_server_networks: tuple[str, ...] = ("127.0.0.0/8",)
    sites: tuple[str, ...] = ("Site-A",)


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def org_toml(spec: OrgSpec, data_root: Path) -> str:
    """The organization file for ``spec``: Contoso, accepted domain contoso.test."""
    lines = [
        '[organization]\nname = "Contoso"\n',
        f'[lab]\ndata_root = "{data_root}"\n'
        f"org_server_networks = {_strings(spec.org_server_networks)}\n",
    ]
    lines += [f'[[sites]]\nname = "{site}"\n' for site in spec.sites]
    lines.append('[[accepted_domains]]\ndomain = "contoso.test"\ntype = "Authoritative"\n'
                 "default = true\n")
    for server in spec.servers:
        text = (f'[[servers]]\nname = "{server.name}"\nfqdn = "{server.fqdn}"\n'
                f'roles = ["{server.role}"]\nsmtp = "127.0.0.1:{server.port}"\n')
        if server.site is not None and server.role != "edge":
            text += f'site = "{server.site}"\n'
        if server.version is not None:
            text += f'version = "{server.version}"\n'
        if server.local_domains:
            text += f"local_domains = {_strings(server.local_domains)}\n"
        if server.database_url is not None:
            text += f'database_url = "{server.database_url}"\n'
        lines.append(text)
    for connector in spec.send_connectors:
        lines.append(
            f'[[send_connectors]]\nname = "{connector.name}"\n'
            f"address_spaces = {_strings(connector.address_spaces)}\n"
            f"source_servers = {_strings(connector.source_servers)}\n"
            f"smart_hosts = {_strings(connector.smart_hosts)}\n"
        )
    if spec.transport:
        lines.append("[transport]\n" + "".join(
            f"{key} = {_value(value)}\n" for key, value in spec.transport.items()))
    return "\n".join(lines)


def write_org(path: Path, spec: OrgSpec, data_root: Path | None = None) -> Path:
    """Write the organization file; servers keep their data under ``data_root``
    (default: ``var`` beside the file)."""
    path.write_text(org_toml(spec, data_root or path.parent / "var"))
    return path
