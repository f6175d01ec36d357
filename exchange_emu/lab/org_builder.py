"""Write small organization files: for tests, benchmarks and throw-away labs.

The default lab lives in etc/lab.toml; this builds others on free ports
without repeating the TOML by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TomlValue = str | int | bool | tuple[str, ...]


@dataclass(frozen=True)
class ServerSpec:
    """One server of the organization file (``[[servers]]``); ``port`` is its SMTP port, or
    its store-driver port for a mailbox server."""

    name: str
    role: str  # hub | edge | mailbox | legacy
    port: int
    site: str | None = "Site-A"
    version: str | None = None
    local_domains: tuple[str, ...] = ()
    database_url: str | None = None
    mailbox_store_url: str | None = None
    store_driver_port: int | None = None
    """For a server with both hub and mailbox roles (``role="hub,mailbox"``)."""
    client_port: int | None = None
    """A ``Client <NAME>`` submission connector (AUTH LOGIN/PLAIN) on this port."""
    ack_delay: str | None = None
    """MaxAcknowledgementDelay of the Default connector (TimeSpan text)."""
    receive_settings: Mapping[str, TomlValue] = field(default_factory=dict)
    """More keys of the Default receive connector (``max_inbound_connection_per_source``,
    ``connection_inactivity_timeout``, ``org_server_networks`` …)."""
    host: str = "127.0.0.1"
    """The address the server lives at: its ``smtp``/``store_driver`` addresses and its
    receive connectors' bindings (a network namespace's address in tests/test_netns.py)."""

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
    require_tls: bool = False
    """RequireTLS: verified TLS to the smart hosts, or nothing is sent."""


@dataclass(frozen=True)
class MailboxDatabaseSpec:
    """A mailbox database (``[[mailbox_databases]]``) mounted on mailbox server ``server``."""

    name: str
    server: str


@dataclass(frozen=True)
class RecipientSpec:
    """A recipient (``[[recipients]]``): give ``database`` (Exchange 2010 mailbox) or
    ``server`` (a legacy or Internet server's mailbox)."""

    address: str
    display_name: str | None = None
    database: str | None = None
    server: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class OrgSpec:
    servers: Sequence[ServerSpec]
    send_connectors: Sequence[SendConnectorSpec] = ()
    transport: Mapping[str, str | int | bool] = field(default_factory=dict)
    org_server_networks: tuple[str, ...] = ("127.0.0.0/8",)
    sites: tuple[str, ...] = ("Site-A",)
    admin_port: int | None = None
    """The lab admin endpoint (``[lab] admin``) of the supervisor."""
    mailbox_databases: Sequence[MailboxDatabaseSpec] = ()
    recipients: Sequence[RecipientSpec] = ()
    relay_domains: Sequence[tuple[str, str]] = ()
    """More accepted domains, as (domain, type): ``("fabrikam.test", "ExternalRelay")``."""


def _value(value: TomlValue) -> str:
    if isinstance(value, tuple):
        return _strings(value)
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
        f"org_server_networks = {_strings(spec.org_server_networks)}\n"
        + (f'admin = "127.0.0.1:{spec.admin_port}"\n' if spec.admin_port else ""),
    ]
    lines += [f'[[sites]]\nname = "{site}"\n' for site in spec.sites]
    lines.append('[[accepted_domains]]\ndomain = "contoso.test"\ntype = "Authoritative"\n'
                 "default = true\n")
    lines += [f'[[accepted_domains]]\ndomain = "{domain}"\ntype = "{kind}"\n'
              for domain, kind in spec.relay_domains]
    for server in spec.servers:
        listener = "store_driver" if server.role == "mailbox" else "smtp"
        roles = _strings(server.role.split(","))
        text = (f'[[servers]]\nname = "{server.name}"\nfqdn = "{server.fqdn}"\n'
                f'roles = {roles}\n{listener} = "{server.host}:{server.port}"\n')
        if server.store_driver_port is not None:
            text += f'store_driver = "{server.host}:{server.store_driver_port}"\n'
        if server.site is not None and server.role != "edge":
            text += f'site = "{server.site}"\n'
        if server.version is not None:
            text += f'version = "{server.version}"\n'
        if server.local_domains:
            text += f"local_domains = {_strings(server.local_domains)}\n"
        if server.database_url is not None:
            text += f'database_url = "{server.database_url}"\n'
        if server.mailbox_store_url is not None:
            text += f'mailbox_store_url = "{server.mailbox_store_url}"\n'
        if (server.client_port is not None or server.ack_delay is not None
                or server.receive_settings):
            text += (f'[[servers.receive_connectors]]\nname = "Default {server.name}"\n'
                     f'bind = "{server.host}:{server.port}"\n')
            if server.ack_delay is not None:
                text += f'max_acknowledgement_delay = "{server.ack_delay}"\n'
            text += "".join(f"{key} = {_value(value)}\n"
                            for key, value in server.receive_settings.items())
        if server.client_port is not None:
            text += (f'[[servers.receive_connectors]]\nname = "Client {server.name}"\n'
                     f'bind = "{server.host}:{server.client_port}"\nusage = "Client"\n'
                     'auth_mechanisms = ["LOGIN", "PLAIN"]\n')
        lines.append(text)
    for database in spec.mailbox_databases:
        lines.append(
            f'[[mailbox_databases]]\nname = "{database.name}"\nserver = "{database.server}"\n'
        )
    for recipient in spec.recipients:
        text = f'[[recipients]]\naddress = "{recipient.address}"\n'
        if recipient.display_name is not None:
            text += f'display_name = "{recipient.display_name}"\n'
        if recipient.database is not None:
            text += f'database = "{recipient.database}"\n'
        if recipient.server is not None:
            text += f'server = "{recipient.server}"\n'
        if recipient.password is not None:
            text += f'password = "{recipient.password}"\n'
        lines.append(text)
    for connector in spec.send_connectors:
        lines.append(
            f'[[send_connectors]]\nname = "{connector.name}"\n'
            f"address_spaces = {_strings(connector.address_spaces)}\n"
            f"source_servers = {_strings(connector.source_servers)}\n"
            f"smart_hosts = {_strings(connector.smart_hosts)}\n"
            + ("require_tls = true\n" if connector.require_tls else "")
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
