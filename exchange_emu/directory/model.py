"""The organization as frozen objects: what Active Directory holds for Exchange 2010."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from exchange_emu.directory.address import Address, parse_address
from exchange_emu.directory.errors import UnknownServerError
from exchange_emu.directory.names import domain_matches
from exchange_emu.directory.transport_settings import TransportSettings

ROLES: Final = frozenset({"mailbox", "hub", "edge", "legacy"})
"""Server roles: Exchange 2010 Mailbox, Hub Transport, Edge Transport, and "legacy" for any
transport server without shadow redundancy (Exchange 2007/2003 or a non-Exchange MTA)."""

LEGACY_VERSIONS: Final = ("2007", "2003", "non-exchange")
DOMAIN_TYPES: Final = ("Authoritative", "InternalRelay", "ExternalRelay")
CONNECTOR_USAGES: Final = ("Default", "Client", "Internet", "Custom")
PERMISSION_GROUPS: Final = (
    "AnonymousUsers",
    "ExchangeUsers",
    "ExchangeServers",
    "ExchangeLegacyServers",
    "Partners",
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Site:
    """An Active Directory site: the unit of Exchange 2010 routing."""

    name: str


@dataclass(frozen=True)
class SiteLink:
    """An AD IP site link between two sites; routing picks the least total cost."""

    sites: tuple[str, str]
    cost: int = 100
    name: str = ""


@dataclass(frozen=True)
class AcceptedDomain:
    """An accepted domain (``Get-AcceptedDomain``): Authoritative, InternalRelay or ExternalRelay.

    ``domain`` may be ``*.example.test``, which covers the subdomains of example.test (not
    example.test itself).
    """

    domain: str
    type: str
    name: str = ""
    default: bool = False


@dataclass(frozen=True)
class MailboxDatabase:
    """A mailbox database, mounted on one Exchange 2010 mailbox server."""

    name: str
    server: str


@dataclass(frozen=True)
class Recipient:
    """A mail recipient: an Exchange 2010 mailbox (``database`` set) or a mailbox held by a
    legacy or Internet server (``database`` None). ``server`` is the server holding it."""

    address: str
    display_name: str
    database: str | None
    server: str
    password_hash: str | None = None


@dataclass(frozen=True)
class ReceiveConnector:
    """A receive connector (``Get-ReceiveConnector``): an SMTP listener and its policy.

    Durations are seconds, sizes bytes; defaults are Exchange 2010's hub transport values.
    """

    name: str
    server: str
    bind: Address
    fqdn: str
    usage: str = "Default"
    permission_groups: tuple[str, ...] = (
        "ExchangeUsers",
        "ExchangeServers",
        "ExchangeLegacyServers",
    )
    org_server_networks: tuple[IPNetwork, ...] = ()
    """Peers from these networks are treated as Exchange servers of the organization."""
    max_acknowledgement_delay: float = 30.0
    max_message_size: int = 10 * 1024 * 1024
    max_recipients_per_message: int = 200
    max_inbound_connection: int = 5000
    max_inbound_connection_per_source: int = 20
    max_messages_per_connection: int = 20
    connection_timeout: float = 10 * 60.0
    connection_inactivity_timeout: float = 5 * 60.0
    max_protocol_errors: int = 5
    max_header_size: int = 64 * 1024
    max_hop_count: int = 60
    max_local_hop_count: int = 8
    tarpit_interval: float = 5.0
    max_command_line_length: int = 2048
    max_data_line_length: int = 32768
    pipelining_enabled: bool = True
    chunking_enabled: bool = True
    binary_mime_enabled: bool = True
    eight_bit_mime_enabled: bool = True
    delivery_status_notification_enabled: bool = True
    enhanced_status_codes_enabled: bool = True
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    require_tls: bool = False
    """Exchange's RequireTLS: ``MAIL`` only after ``STARTTLS`` (530 5.7.0 before)."""
    auth_mechanisms: tuple[str, ...] = ()
    basic_auth_require_tls: bool = True
    """Exchange's BasicAuthRequireTLS: ``AUTH LOGIN/PLAIN`` only inside TLS."""

    def is_org_server_address(self, host: str) -> bool:
        """Whether a peer at ``host`` counts as an Exchange server of the organization."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.org_server_networks)

    @property
    def allows_anonymous(self) -> bool:
        """Whether anonymous peers may send (the AnonymousUsers permission group)."""
        return "AnonymousUsers" in self.permission_groups


@dataclass(frozen=True)
class SendConnector:
    """A send connector (``Get-SendConnector``): address spaces it carries, the transport
    servers that use it, and the smart hosts it relays through (empty: the lab's stand-in
    for DNS MX lookup, the server whose ``local_domains`` holds the recipient domain)."""

    name: str
    address_spaces: tuple[str, ...]
    source_servers: tuple[str, ...]
    smart_hosts: tuple[str, ...] = ()
    """Server names of the file, or ``HOST:PORT`` text (port offset already applied)."""
    cost: int = 1
    max_message_size: int = 10 * 1024 * 1024
    require_tls: bool = False
    """Exchange's RequireTLS: STARTTLS and a verified certificate naming the smart host, or
    the message waits in the queue (Retry); default: opportunistic TLS."""

    def matches(self, domain: str) -> bool:
        """Whether mail for ``domain`` may take this connector."""
        return any(domain_matches(space, domain) for space in self.address_spaces)

    def match_length(self, domain: str) -> int:
        """How specific the best matching address space is (-1: none); routing prefers longer."""
        lengths = [
            0 if space == "*" else len(space)
            for space in self.address_spaces
            if domain_matches(space, domain)
        ]
        return max(lengths, default=-1)

    def resolved_smart_hosts(self, org: Organization) -> tuple[Address, ...]:
        """The smart hosts as addresses: a server name becomes that server's SMTP address."""
        resolved = []
        for host in self.smart_hosts:
            if ":" in host:
                resolved.append(parse_address(host))
            else:
                smtp = org.server(host).smtp
                if smtp is None:  # pragma: no cover - the loader rejects this
                    raise LookupError(f"smart host {host} has no SMTP address")
                resolved.append(smtp)
        return tuple(resolved)


@dataclass(frozen=True)
class Server:
    """An Exchange server (``Get-ExchangeServer``) or a non-Exchange MTA of the lab."""

    name: str
    fqdn: str
    roles: frozenset[str]
    site: str | None
    data_dir: Path
    database_url: str
    mailbox_store_url: str | None = None
    """A mailbox server's store (its mailbox databases); default ``<data_dir>/mailbox.db``."""
    version: str = "2010"
    smtp: Address | None = None
    store_driver: Address | None = None
    admin: Address | None = None
    receive_connectors: tuple[ReceiveConnector, ...] = ()
    local_domains: tuple[str, ...] = ()
    certificate: Path | None = None
    """The server's TLS certificate (PEM, the leaf first); default
    ``<tls directory>/<NAME>.pem``, made by ``exchange-emu certs init``."""
    certificate_key: Path | None = None
    """The private key of ``certificate`` (PEM); default ``<tls directory>/<NAME>.key``."""
    certificate_configured: bool = False
    """The file names ``certificate``/``key`` itself (bring your own: never generated)."""

    @property
    def is_exchange_2010(self) -> bool:
        return self.version == "2010"

    @property
    def is_exchange(self) -> bool:
        """Any Exchange version (2010, 2007, 2003), as opposed to a non-Exchange MTA."""
        return self.version != "non-exchange"

    @property
    def supports_shadow_redundancy(self) -> bool:
        """Exchange 2010 hub and edge transport servers speak XSHADOW; nothing else does."""
        return self.is_exchange_2010 and bool(self.roles & {"hub", "edge"})

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def receive_connector(self, name: str) -> ReceiveConnector | None:
        """The receive connector named ``name`` (case-insensitive), if any."""
        wanted = name.lower()
        return next((c for c in self.receive_connectors if c.name.lower() == wanted), None)


@dataclass(frozen=True)
class LabSettings:
    """Emulator-only settings: the lab admin endpoint, where data lives, the lab trust rule."""

    data_root: Path
    admin: Address | None = None
    org_server_networks: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class TlsSettings:
    """Where the organization's certificate authority lives (``[tls]``; emulator-only: in
    Exchange each server has its own certificate store)."""

    directory: Path
    """Where generated certificates go (default ``<data_root>/certs``)."""
    ca_certificate: Path
    ca_key: Path | None
    """The CA's private key: needed only to issue certificates (None: bring your own)."""
    configured: bool = False
    """The file has a ``[tls]`` table: its certificates must exist (no silent plain text)."""


@dataclass(frozen=True)
class Organization:
    """The Exchange organization read from one TOML file ("Active Directory in one file")."""

    name: str
    source: Path
    sites: Mapping[str, Site]
    site_links: tuple[SiteLink, ...]
    servers: Mapping[str, Server]
    accepted_domains: tuple[AcceptedDomain, ...]
    mailbox_databases: Mapping[str, MailboxDatabase]
    recipients: Mapping[str, Recipient]
    send_connectors: tuple[SendConnector, ...]
    transport: TransportSettings
    lab: LabSettings
    port_offset: int = 0
    tls: TlsSettings | None = None
    """The organization's certificate authority; None only for hand-built objects."""

    def server(self, name: str) -> Server:
        """The server called ``name`` (case-insensitive); raises UnknownServerError."""
        wanted = name.lower()
        for server in self.servers.values():
            if server.name.lower() == wanted:
                return server
        raise UnknownServerError(name, str(self.source), tuple(self.servers))

    def server_by_fqdn(self, fqdn: str) -> Server | None:
        wanted = fqdn.lower().rstrip(".")
        return next((s for s in self.servers.values() if s.fqdn == wanted), None)

    def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        """The accepted domain covering ``domain``: an exact entry, else the longest wildcard."""
        wanted = domain.lower().rstrip(".")
        best: AcceptedDomain | None = None
        for accepted in self.accepted_domains:
            if accepted.domain == wanted:
                return accepted
            if domain_matches(accepted.domain, wanted) and (
                best is None or len(accepted.domain) > len(best.domain)
            ):
                best = accepted
        return best

    @property
    def default_accepted_domain(self) -> AcceptedDomain | None:
        return next((d for d in self.accepted_domains if d.default), None)

    def recipient(self, address: str) -> Recipient | None:
        """The recipient with this SMTP address (case-insensitive)."""
        return self.recipients.get(address.strip().lower())

    def database(self, name: str) -> MailboxDatabase | None:
        wanted = name.lower()
        return next(
            (db for db in self.mailbox_databases.values() if db.name.lower() == wanted), None
        )

    def servers_in_site(self, site: str) -> tuple[Server, ...]:
        """The servers of an AD site (case-insensitive), in file order."""
        wanted = site.lower()
        return tuple(
            s for s in self.servers.values() if s.site is not None and s.site.lower() == wanted
        )

    def servers_with_role(self, role: str) -> tuple[Server, ...]:
        """The servers having ``role`` (mailbox, hub, edge, legacy), in file order."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (roles: {', '.join(sorted(ROLES))})")
        return tuple(s for s in self.servers.values() if role in s.roles)

    def server_for_domain(self, domain: str) -> Server | None:
        """The legacy/Internet server whose ``local_domains`` holds ``domain`` (lab "MX")."""
        wanted = domain.lower().rstrip(".")
        return next((s for s in self.servers.values() if wanted in s.local_domains), None)

    def site_link_cost(self, first: str, second: str) -> int | None:
        """The cost of the direct site link between two sites, if there is one."""
        pair = {first.lower(), second.lower()}
        return next(
            (link.cost for link in self.site_links if {s.lower() for s in link.sites} == pair),
            None,
        )
