"""Load and validate the organization file: Active Directory for Exchange in one TOML file.

Every mistake becomes one OrganizationFileError line naming the file, the key and the
problem; unknown keys are mistakes too. Cross references (sites, servers, databases) are
checked, and so are duplicate names and listening addresses.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from exchange_emu.directory._table import Table, suggest
from exchange_emu.directory.address import Address, parse_address
from exchange_emu.directory.errors import OrganizationFileError
from exchange_emu.directory.model import (
    CONNECTOR_USAGES,
    DOMAIN_TYPES,
    LEGACY_VERSIONS,
    PERMISSION_GROUPS,
    ROLES,
    AcceptedDomain,
    IPNetwork,
    LabSettings,
    MailboxDatabase,
    Organization,
    ReceiveConnector,
    Recipient,
    SendConnector,
    Server,
    Site,
    SiteLink,
    TlsSettings,
)
from exchange_emu.directory.names import (
    domain_matches,
    normalize_address_space,
    normalize_domain,
    normalize_domain_pattern,
    normalize_smtp_address,
)
from exchange_emu.directory.passwords import hash_password, is_password_hash
from exchange_emu.directory.transport_settings import TransportSettings

TOP_KEYS: Final = (
    "organization",
    "lab",
    "sites",
    "site_links",
    "accepted_domains",
    "servers",
    "mailbox_databases",
    "recipients",
    "send_connectors",
    "transport",
    "tls",
)
TLS_KEYS: Final = ("directory", "ca_certificate", "ca_key")
ORGANIZATION_KEYS: Final = ("name",)
LAB_KEYS: Final = ("admin", "data_root", "org_server_networks")
SITE_KEYS: Final = ("name",)
SITE_LINK_KEYS: Final = ("name", "sites", "cost")
ACCEPTED_DOMAIN_KEYS: Final = ("domain", "type", "name", "default")
SERVER_KEYS: Final = (
    "name",
    "fqdn",
    "roles",
    "role",
    "site",
    "version",
    "smtp",
    "store_driver",
    "admin",
    "data_dir",
    "database_url",
    "mailbox_store_url",
    "local_domains",
    "receive_connectors",
    "certificate",
    "key",
)
RECEIVE_CONNECTOR_KEYS: Final = (
    "name",
    "bind",
    "usage",
    "fqdn",
    "permission_groups",
    "org_server_networks",
    "max_acknowledgement_delay",
    "max_message_size",
    "max_recipients_per_message",
    "max_inbound_connection",
    "max_inbound_connection_per_source",
    "max_messages_per_connection",
    "connection_timeout",
    "connection_inactivity_timeout",
    "max_protocol_errors",
    "max_header_size",
    "max_hop_count",
    "max_local_hop_count",
    "tarpit_interval",
    "max_command_line_length",
    "max_data_line_length",
    "pipelining_enabled",
    "chunking_enabled",
    "binary_mime_enabled",
    "eight_bit_mime_enabled",
    "delivery_status_notification_enabled",
    "enhanced_status_codes_enabled",
    "tls_certificate",
    "tls_private_key",
    "require_tls",
    "auth_mechanisms",
    "basic_auth_require_tls",
)
MAILBOX_DATABASE_KEYS: Final = ("name", "server")
RECIPIENT_KEYS: Final = ("address", "display_name", "database", "server", "password",
                          "password_hash")
SEND_CONNECTOR_KEYS: Final = (
    "name",
    "address_spaces",
    "source_servers",
    "smart_hosts",
    "cost",
    "max_message_size",
    "require_tls",
)

SASL_MECHANISMS: Final = ("PLAIN", "LOGIN", "CRAM-MD5", "NTLM", "GSSAPI")
TRANSPORT_ROLES: Final = frozenset({"hub", "edge", "legacy"})
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
_MAX_RECEIVE_SIZE: Final = 2 * 1024**3 - 1  # Exchange: 65536 to 2147483647 bytes


def load_organization(path: str | os.PathLike[str], *, port_offset: int = 0) -> Organization:
    """Read and validate an organization file (``etc/lab.toml``).

    ``port_offset`` is added to every port in the file so two labs can run side by side.
    Raises OrganizationFileError (one line: file, key, problem) on any mistake.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OrganizationFileError(
            file, "", f"cannot read the organization file: {reason}"
        ) from None
    except UnicodeDecodeError as exc:
        raise OrganizationFileError(file, "", f"not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OrganizationFileError(file, "", f"TOML syntax error: {exc}") from None
    return organization_from_mapping(data, source=path, port_offset=port_offset)


def organization_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str | os.PathLike[str] = "<organization>",
    port_offset: int = 0,
) -> Organization:
    """Validate already-parsed TOML data; ``source`` is the name errors report."""
    if isinstance(port_offset, bool) or not isinstance(port_offset, int):
        raise TypeError(f"port_offset must be an int, not {type(port_offset).__name__}")
    return _Loader(data, os.fspath(source), port_offset).load()


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """Problem text for a reference to something the file does not declare."""
    names = list(known)
    listed = ", ".join(names) if names else "none declared"
    hint = suggest(name, names)
    if hint:
        return f"no {kind} named {name!r} (did you mean {hint!r}? known: {listed})"
    return f"no {kind} named {name!r} (known: {listed})"


def _choice(table: Table, key: str, value: str, allowed: Iterable[str], what: str) -> str:
    """``value`` as one of ``allowed`` (case-insensitive), canonical spelling."""
    options = list(allowed)
    for option in options:
        if option.lower() == value.lower():
            return option
    hint = suggest(value, options)
    prefix = f"did you mean {hint!r}? " if hint else ""
    raise table.error(key, f"{value!r} is not {what} ({prefix}allowed: {', '.join(options)})")


class _Loader:
    """One pass over the parsed file, building the frozen Organization."""

    def __init__(self, data: Mapping[str, Any], file: str, port_offset: int) -> None:
        self.file = file
        self.offset = port_offset
        self.root = Table(data, file, "", TOP_KEYS)
        self.sites: dict[str, Site] = {}
        self.servers: dict[str, Server] = {}
        self.server_keys: dict[str, str] = {}  # server name -> "servers[i]"
        self.databases: dict[str, MailboxDatabase] = {}
        self.listeners: list[tuple[Address, str]] = []

    # -- small helpers -------------------------------------------------------------------

    def address(self, table: Table, key: str, *, allow_wildcard: bool = True) -> Address | None:
        """An optional HOST:PORT key, shifted by the port offset."""
        if not table.has(key):
            return None
        text = table.string(key)
        parsed = table.convert(key, text, lambda t: parse_address(t, allow_wildcard=allow_wildcard))
        return table.convert(key, parsed, lambda a: a.shifted(self.offset))

    def networks(self, table: Table, key: str) -> tuple[IPNetwork, ...] | None:
        if not table.has(key):
            return None
        result = []
        for index, text in enumerate(table.strings(key)):
            try:
                result.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise table.error(
                    f"{key}[{index}]", f"{text!r} is not an IP network like '127.0.0.0/8'"
                ) from None
        return tuple(result)

    def name(self, table: Table, key: str = "name", default: str | None = None) -> str:
        value = table.string(key, default)
        if not _NAME.fullmatch(value):
            raise table.error(
                key, f"{value!r} is not a valid name (letters, digits, '-', '_', '.')"
            )
        return value

    def path(self, text: str) -> Path:
        """A path from the file: relative ones resolve against the current directory."""
        return Path(os.path.abspath(os.path.expanduser(text)))

    def optional_path(self, table: Table, key: str) -> Path | None:
        return self.path(table.string(key)) if table.has(key) else None

    def server_ref(self, table: Table, key: str, name: str) -> Server:
        for server in self.servers.values():
            if server.name.lower() == name.lower():
                return server
        raise table.error(key, _unknown("server", name, self.servers))

    # -- the file, table by table ----------------------------------------------------------

    def load(self) -> Organization:
        org_table = self.root.table("organization", ORGANIZATION_KEYS)
        org_name = org_table.string("name")
        lab = self.load_lab()
        self.tls = self.load_tls(lab)
        self.load_sites()
        site_links = self.load_site_links()
        accepted = self.load_accepted_domains()
        for table in self.root.tables("servers", SERVER_KEYS):
            self.load_server(table, lab)
        self.check_unique_storage()
        for table in self.root.tables("mailbox_databases", MAILBOX_DATABASE_KEYS):
            self.load_database(table)
        recipients: dict[str, Recipient] = {}
        for table in self.root.tables("recipients", RECIPIENT_KEYS):
            recipient = self.load_recipient(table, accepted)
            if recipient.address.lower() in recipients:
                raise table.error("address", f"duplicate recipient {recipient.address!r}")
            recipients[recipient.address.lower()] = recipient
        send_connectors = self.load_send_connectors()
        transport_table = self.root.data.get("transport", {})
        if not isinstance(transport_table, Mapping):
            raise self.root.error("transport", "expected a table ([transport])")
        transport = TransportSettings.from_mapping(
            transport_table, file=self.file, path="transport"
        )
        return Organization(
            name=org_name,
            source=Path(self.file),
            sites=MappingProxyType(self.sites),
            site_links=site_links,
            servers=MappingProxyType(self.servers),
            accepted_domains=accepted,
            mailbox_databases=MappingProxyType(self.databases),
            recipients=MappingProxyType(recipients),
            send_connectors=send_connectors,
            transport=transport,
            lab=lab,
            port_offset=self.offset,
            tls=self.tls,
        )

    def load_lab(self) -> LabSettings:
        table = self.root.table("lab", LAB_KEYS)
        admin = self.address(table, "admin")
        if admin is not None:
            self.listen(admin, table.key("admin"))
        return LabSettings(
            data_root=self.path(table.string("data_root", "var")),
            admin=admin,
            org_server_networks=self.networks(table, "org_server_networks") or (),
        )

    def load_tls(self, lab: LabSettings) -> TlsSettings:
        """``[tls]``: the organization's certificate authority (docs/security.md)."""
        configured = "tls" in self.root.data
        table = self.root.table("tls", TLS_KEYS)
        directory = (self.path(table.string("directory")) if table.has("directory")
                     else lab.data_root / "certs")
        ca_certificate = self.optional_path(table, "ca_certificate") or directory / "ca.pem"
        if table.has("ca_key"):
            ca_key: Path | None = self.path(table.string("ca_key"))
        elif table.has("ca_certificate"):
            ca_key = None  # a CA of your own: its key stays elsewhere
        else:
            ca_key = directory / "ca.key"
        return TlsSettings(directory, ca_certificate, ca_key, configured)

    def load_sites(self) -> None:
        for table in self.root.tables("sites", SITE_KEYS):
            name = self.name(table)
            if any(known.lower() == name.lower() for known in self.sites):
                raise table.error("name", f"duplicate site name {name!r}")
            self.sites[name] = Site(name)

    def site_ref(self, table: Table, key: str, name: str) -> str:
        for known in self.sites:
            if known.lower() == name.lower():
                return known
        raise table.error(key, _unknown("site", name, self.sites))

    def load_site_links(self) -> tuple[SiteLink, ...]:
        links: list[SiteLink] = []
        for table in self.root.tables("site_links", SITE_LINK_KEYS):
            names = table.strings("sites", None)
            if len(names) != 2:
                raise table.error("sites", f"a site link joins exactly 2 sites, got {len(names)}")
            first = self.site_ref(table, "sites[0]", names[0])
            second = self.site_ref(table, "sites[1]", names[1])
            if first == second:
                raise table.error("sites", f"a site link joins two sites, got {first!r} twice")
            for link in links:
                if {first, second} == set(link.sites):
                    raise table.error(
                        "sites", f"{first} and {second} are already linked by {link.name!r}"
                    )
            name = table.string("name", f"{first}-{second}")
            if any(link.name.lower() == name.lower() for link in links):
                raise table.error("name", f"duplicate site link name {name!r}")
            cost = table.integer("cost", 100, minimum=1, maximum=99999)
            links.append(SiteLink(sites=(first, second), cost=cost, name=name))
        return tuple(links)

    def load_accepted_domains(self) -> tuple[AcceptedDomain, ...]:
        domains: list[AcceptedDomain] = []
        default_seen: str | None = None
        for table in self.root.tables("accepted_domains", ACCEPTED_DOMAIN_KEYS):
            domain = table.parsed("domain", normalize_domain_pattern)
            if any(d.domain == domain for d in domains):
                raise table.error("domain", f"duplicate accepted domain {domain!r}")
            kind = _choice(table, "type", table.string("type"), DOMAIN_TYPES, "a domain type")
            is_default = table.boolean("default", False)
            if is_default:
                if default_seen is not None:
                    raise table.error("default", f"{default_seen} is already the default domain")
                if domain.startswith("*"):
                    raise table.error("default", "a wildcard domain cannot be the default")
                default_seen = domain
            name = table.string("name", domain)
            domains.append(AcceptedDomain(domain, kind, name, is_default))
        if default_seen is None:
            for index, entry in enumerate(domains):
                if not entry.domain.startswith("*"):
                    domains[index] = replace(entry, default=True)
                    break
        return tuple(domains)

    # -- servers ---------------------------------------------------------------------------

    def load_server(self, table: Table, lab: LabSettings) -> None:
        name = self.name(table)
        for known, key in self.server_keys.items():
            if known.lower() == name.lower():
                raise table.error("name", f"duplicate server name {name!r} (first at {key})")
        fqdn = table.parsed("fqdn", normalize_domain)
        for other in self.servers.values():
            if other.fqdn == fqdn:
                raise table.error("fqdn", f"{fqdn!r} is already the FQDN of {other.name}")
        roles = self.roles(table)
        version = self.version(table, roles)
        site = self.server_site(table, roles)

        smtp = self.address(table, "smtp", allow_wildcard=False)
        is_transport = bool(roles & TRANSPORT_ROLES)
        if is_transport and smtp is None:
            raise table.error("smtp", "required key is missing (transport servers listen for SMTP)")
        if not is_transport and smtp is not None:
            raise table.error("smtp", "only hub, edge and legacy servers have an SMTP address")
        store_driver = self.address(table, "store_driver", allow_wildcard=False)
        if "mailbox" in roles and store_driver is None:
            raise table.error("store_driver", "required key is missing (mailbox servers have one)")
        if "mailbox" not in roles and store_driver is not None:
            raise table.error("store_driver", "only mailbox servers have a store-driver address")
        admin = self.address(table, "admin")

        data_dir = (
            self.path(table.string("data_dir")) if table.has("data_dir") else lab.data_root / name
        )
        database_url = table.string("database_url", f"sqlite:///{data_dir / 'queue.db'}")
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", database_url):
            raise table.error("database_url", f"{database_url!r} is not a SQLAlchemy URL")
        mailbox_store_url = None
        if "mailbox" in roles:
            mailbox_store_url = table.string("mailbox_store_url",
                                             f"sqlite:///{data_dir / 'mailbox.db'}")
            if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", mailbox_store_url):
                raise table.error("mailbox_store_url",
                                  f"{mailbox_store_url!r} is not a SQLAlchemy URL")
        elif table.has("mailbox_store_url"):
            raise table.error("mailbox_store_url", "only mailbox servers have a mailbox store")

        local_domains: list[str] = []
        for index, text in enumerate(table.strings("local_domains")):
            key = f"local_domains[{index}]"
            domain = table.convert(key, text, normalize_domain)
            for other in self.servers.values():
                if domain in other.local_domains:
                    raise table.error(key, f"{domain!r} is already held by {other.name}")
            if domain in local_domains:
                raise table.error(key, f"duplicate domain {domain!r}")
            local_domains.append(domain)
        if local_domains and "legacy" not in roles:
            raise table.error(
                "local_domains", "only legacy servers hold domains (Exchange 2010 uses databases)"
            )

        if table.has("certificate") != table.has("key"):
            missing = "key" if table.has("certificate") else "certificate"
            raise table.error(missing, "required key is missing (certificate and key go together)")
        certificate = self.optional_path(table, "certificate")
        certificate_key = self.optional_path(table, "key")
        server = Server(
            name=name,
            fqdn=fqdn,
            roles=roles,
            site=site,
            data_dir=data_dir,
            database_url=database_url,
            mailbox_store_url=mailbox_store_url,
            version=version,
            smtp=smtp,
            store_driver=store_driver,
            admin=admin,
            local_domains=tuple(local_domains),
            certificate=certificate or self.tls.directory / f"{name}.pem",
            certificate_key=certificate_key or self.tls.directory / f"{name}.key",
            certificate_configured=certificate is not None,
        )
        connectors = self.receive_connectors(table, server, lab)
        server = replace(server, receive_connectors=tuple(c for c, _ in connectors))
        self.register_listeners(table, server, [key for _, key in connectors])
        self.servers[name] = server
        self.server_keys[name] = table.path

    def roles(self, table: Table) -> frozenset[str]:
        if table.has("role") and table.has("roles"):
            raise table.error("role", "give either role or roles, not both")
        key = "role" if table.has("role") else "roles"
        if key == "role":
            names: tuple[str, ...] = (table.string("role"),)
        else:
            names = table.strings("roles", None)
        if not names:
            raise table.error(key, "a server needs at least one role")
        roles: set[str] = set()
        for index, role in enumerate(names):
            item = key if key == "role" else f"roles[{index}]"
            canonical = _choice(table, item, role, sorted(ROLES), "a server role")
            if canonical in roles:
                raise table.error(item, f"duplicate role {canonical!r}")
            roles.add(canonical)
        for lonely in ("edge", "legacy"):
            if lonely in roles and len(roles) > 1:
                raise table.error(key, f"the {lonely} role cannot be combined with other roles")
        return frozenset(roles)

    def version(self, table: Table, roles: frozenset[str]) -> str:
        if "legacy" in roles:
            if not table.has("version"):
                raise table.error(
                    "version",
                    f"required key is missing for legacy servers "
                    f"(one of: {', '.join(LEGACY_VERSIONS)})",
                )
            return _choice(
                table, "version", table.string("version"), LEGACY_VERSIONS, "a legacy version"
            )
        version = table.string("version", "2010")
        if version != "2010":
            raise table.error(
                "version",
                f"{version!r}: mailbox, hub and edge servers are Exchange '2010' "
                "(older servers take the legacy role)",
            )
        return version

    def server_site(self, table: Table, roles: frozenset[str]) -> str | None:
        if "edge" in roles:
            if table.has("site"):
                raise table.error("site", "edge transport servers are not members of an AD site")
            return None
        if not table.has("site"):
            if roles & {"mailbox", "hub"}:
                raise table.error("site", "required key is missing (mailbox and hub servers)")
            return None
        return self.site_ref(table, "site", table.string("site"))

    def receive_connectors(
        self, table: Table, server: Server, lab: LabSettings
    ) -> list[tuple[ReceiveConnector, str]]:
        """The server's receive connectors, each with the key its bind address comes from."""
        tables = table.tables("receive_connectors", RECEIVE_CONNECTOR_KEYS)
        if server.smtp is None:
            if tables:
                raise table.error(
                    "receive_connectors",
                    "only hub, edge and legacy servers have receive connectors",
                )
            return []
        if not tables:
            return [(self.receive_connector(None, server, lab), table.key("smtp"))]
        connectors: list[tuple[ReceiveConnector, str]] = []
        for sub in tables:
            connector = self.receive_connector(sub, server, lab)
            if any(c.name.lower() == connector.name.lower() for c, _ in connectors):
                raise sub.error("name", f"duplicate receive connector name {connector.name!r}")
            bind_key = sub.key("bind") if sub.has("bind") else table.key("smtp")
            connectors.append((connector, bind_key))
        return connectors

    def receive_connector(
        self, table: Table | None, server: Server, lab: LabSettings
    ) -> ReceiveConnector:
        """A declared ``[[servers.receive_connectors]]`` entry, or the automatic default one."""
        assert server.smtp is not None
        sub = table or Table({}, self.file, "", RECEIVE_CONNECTOR_KEYS)
        base = ReceiveConnector(
            name=f"Default {server.name}",
            server=server.name,
            bind=server.smtp,
            fqdn=server.fqdn,
            org_server_networks=lab.org_server_networks if server.is_exchange else (),
        )
        usage = _choice(
            sub, "usage", sub.string("usage", "Default"), CONNECTOR_USAGES, "a connector usage"
        )
        base = replace(base, usage=usage, permission_groups=_default_groups(usage, server))
        if "edge" in server.roles:
            base = replace(base, connection_timeout=300.0, connection_inactivity_timeout=60.0)
        if table is None:
            return base

        groups = base.permission_groups
        if sub.has("permission_groups"):
            groups = tuple(
                _choice(sub, f"permission_groups[{i}]", g, PERMISSION_GROUPS, "a permission group")
                for i, g in enumerate(sub.strings("permission_groups"))
            )
        mechanisms = tuple(
            _choice(sub, f"auth_mechanisms[{i}]", m, SASL_MECHANISMS, "a SASL mechanism")
            for i, m in enumerate(sub.strings("auth_mechanisms"))
        )
        certificate = self.optional_path(sub, "tls_certificate")
        private_key = self.optional_path(sub, "tls_private_key")
        if (certificate is None) != (private_key is None):
            missing = "tls_private_key" if private_key is None else "tls_certificate"
            raise sub.error(missing, "required key is missing (certificate and key go together)")
        require_tls = sub.boolean("require_tls", False)

        bind = self.address(sub, "bind")
        networks = self.networks(sub, "org_server_networks")  # [] means: trust no one
        connector = replace(
            base,
            name=sub.string("name", base.name),
            bind=base.bind if bind is None else bind,
            fqdn=sub.parsed("fqdn", normalize_domain, base.fqdn),
            permission_groups=groups,
            org_server_networks=base.org_server_networks if networks is None else networks,
            max_acknowledgement_delay=sub.timespan(
                "max_acknowledgement_delay", base.max_acknowledgement_delay
            ),
            max_message_size=sub.byte_size(
                "max_message_size",
                base.max_message_size,
                minimum=64 * 1024,
                maximum=_MAX_RECEIVE_SIZE,
            ),
            max_recipients_per_message=sub.integer(
                "max_recipients_per_message", base.max_recipients_per_message, minimum=1
            ),
            max_inbound_connection=sub.integer(
                "max_inbound_connection", base.max_inbound_connection, minimum=1
            ),
            max_inbound_connection_per_source=sub.integer(
                "max_inbound_connection_per_source",
                base.max_inbound_connection_per_source,
                minimum=1,
            ),
            max_messages_per_connection=sub.integer(
                "max_messages_per_connection", base.max_messages_per_connection, minimum=1
            ),
            connection_timeout=sub.timespan(
                "connection_timeout", base.connection_timeout, minimum=1.0
            ),
            connection_inactivity_timeout=sub.timespan(
                "connection_inactivity_timeout", base.connection_inactivity_timeout, minimum=1.0
            ),
            max_protocol_errors=sub.integer(
                "max_protocol_errors", base.max_protocol_errors, minimum=0
            ),
            max_header_size=sub.byte_size(
                "max_header_size", base.max_header_size, minimum=1, maximum=_MAX_RECEIVE_SIZE
            ),
            max_hop_count=sub.integer("max_hop_count", base.max_hop_count, minimum=1, maximum=500),
            max_local_hop_count=sub.integer(
                "max_local_hop_count", base.max_local_hop_count, minimum=0, maximum=50
            ),
            tarpit_interval=sub.timespan("tarpit_interval", base.tarpit_interval),
            max_command_line_length=sub.integer(
                "max_command_line_length", base.max_command_line_length, minimum=512
            ),
            max_data_line_length=sub.integer(
                "max_data_line_length", base.max_data_line_length, minimum=1000
            ),
            pipelining_enabled=sub.boolean("pipelining_enabled", True),
            chunking_enabled=sub.boolean("chunking_enabled", True),
            binary_mime_enabled=sub.boolean("binary_mime_enabled", True),
            eight_bit_mime_enabled=sub.boolean("eight_bit_mime_enabled", True),
            delivery_status_notification_enabled=sub.boolean(
                "delivery_status_notification_enabled", True
            ),
            enhanced_status_codes_enabled=sub.boolean("enhanced_status_codes_enabled", True),
            tls_certificate=certificate,
            tls_private_key=private_key,
            require_tls=require_tls,
            auth_mechanisms=mechanisms,
            basic_auth_require_tls=sub.boolean("basic_auth_require_tls",
                                               base.basic_auth_require_tls),
        )
        if connector.binary_mime_enabled and not connector.chunking_enabled:
            raise sub.error(
                "binary_mime_enabled", "BINARYMIME needs chunking_enabled (BDAT); set it false too"
            )
        if connector.connection_inactivity_timeout > connector.connection_timeout:
            raise sub.error(
                "connection_inactivity_timeout", "must not be longer than connection_timeout"
            )
        return connector

    # -- listening addresses, data directories ---------------------------------------------

    def listen(self, address: Address, key: str, home: str | None = None) -> None:
        """Record a listening address; two listeners on one host and port are an error.

        A wildcard bind (0.0.0.0, ::) counts as the server's own host (``home``), so servers
        on different machines may all listen on 0.0.0.0:25.
        """
        host = home if address.is_wildcard and home else address.host
        for other, other_key in self.listeners:
            if other.port == address.port and other.host == host:
                raise OrganizationFileError(
                    self.file, key, f"{address} is already used by {other_key}"
                )
        self.listeners.append((Address(host, address.port), key))

    def register_listeners(self, table: Table, server: Server, bind_keys: list[str]) -> None:
        home_address = server.smtp or server.store_driver
        home = home_address.host if home_address else None
        smtp_covered = False
        for connector, key in zip(server.receive_connectors, bind_keys, strict=True):
            self.listen(connector.bind, key, home)
            if (
                server.smtp is not None
                and connector.bind.port == server.smtp.port
                and (connector.bind.host == server.smtp.host or connector.bind.is_wildcard)
            ):
                smtp_covered = True
        if server.smtp is not None and not smtp_covered:
            self.listen(server.smtp, table.key("smtp"), home)
        if server.store_driver is not None:
            self.listen(server.store_driver, table.key("store_driver"), home)
        if server.admin is not None:
            self.listen(server.admin, table.key("admin"), home)

    def check_unique_storage(self) -> None:
        seen_dirs: dict[Path, str] = {}
        seen_urls: dict[str, str] = {}
        for server in self.servers.values():
            key = self.server_keys[server.name]
            if server.data_dir in seen_dirs:
                raise OrganizationFileError(
                    self.file,
                    f"{key}.data_dir",
                    f"{server.data_dir} is already the data directory of "
                    f"{seen_dirs[server.data_dir]}",
                )
            if server.database_url in seen_urls:
                raise OrganizationFileError(
                    self.file,
                    f"{key}.database_url",
                    f"already the queue database of {seen_urls[server.database_url]}",
                )
            if server.mailbox_store_url is not None:
                if server.mailbox_store_url in seen_urls or (
                        server.mailbox_store_url == server.database_url):
                    raise OrganizationFileError(
                        self.file, f"{key}.mailbox_store_url",
                        "already in use as another database of the organization")
                seen_urls[server.mailbox_store_url] = server.name
            seen_dirs[server.data_dir] = server.name
            seen_urls[server.database_url] = server.name

    # -- databases, recipients, send connectors --------------------------------------------

    def load_database(self, table: Table) -> None:
        name = self.name(table)
        if any(known.lower() == name.lower() for known in self.databases):
            raise table.error("name", f"duplicate mailbox database name {name!r}")
        server = self.server_ref(table, "server", table.string("server"))
        if "mailbox" not in server.roles:
            raise table.error("server", f"{server.name} is not a mailbox server")
        self.databases[name] = MailboxDatabase(name, server.name)

    def load_recipient(self, table: Table, accepted: tuple[AcceptedDomain, ...]) -> Recipient:
        address = table.parsed("address", normalize_smtp_address)
        domain = address.rpartition("@")[2]
        display_name = table.string("display_name", address.partition("@")[0])
        password_hash = self.load_password(table)
        if table.has("database") == table.has("server"):
            raise table.error(
                "database",
                "give database (Exchange 2010 mailbox) or server (legacy/Internet mailbox), "
                "exactly one",
            )
        if table.has("database"):
            wanted = table.string("database")
            database = next(
                (db for db in self.databases.values() if db.name.lower() == wanted.lower()), None
            )
            if database is None:
                raise table.error("database", _unknown("mailbox database", wanted, self.databases))
            covering = [
                d
                for d in accepted
                if d.type in ("Authoritative", "InternalRelay") and domain_matches(d.domain, domain)
            ]
            if not covering:
                raise table.error(
                    "address",
                    f"{domain!r} is not an Authoritative or InternalRelay accepted domain",
                )
            return Recipient(address, display_name, database.name, database.server,
                             password_hash)
        server = self.server_ref(table, "server", table.string("server"))
        if "legacy" not in server.roles:
            raise table.error(
                "server",
                f"{server.name} is not a legacy server; "
                "Exchange 2010 mailboxes name their database instead",
            )
        if domain not in server.local_domains:
            raise table.error("address", f"{domain!r} is not one of {server.name}'s local_domains")
        return Recipient(address, display_name, None, server.name, password_hash)

    def load_password(self, table: Table) -> str | None:
        """``password_hash`` (PBKDF2), or a lab's clear ``password`` hashed on load."""
        if table.has("password") and table.has("password_hash"):
            raise table.error("password", "give password or password_hash, not both")
        if table.has("password_hash"):
            value = table.string("password_hash")
            if not is_password_hash(value):
                raise table.error("password_hash",
                                  "not pbkdf2_sha256$<iterations>$<salt>$<hash> "
                                  "(make one with exchange-emu hash-password)")
            return value
        if table.has("password"):
            return hash_password(table.string("password"), iterations=1000)
        return None

    def load_send_connectors(self) -> tuple[SendConnector, ...]:
        connectors: list[SendConnector] = []
        for table in self.root.tables("send_connectors", SEND_CONNECTOR_KEYS):
            name = table.string("name")
            if any(c.name.lower() == name.lower() for c in connectors):
                raise table.error("name", f"duplicate send connector name {name!r}")
            spaces = tuple(
                table.convert(f"address_spaces[{i}]", text, normalize_address_space)
                for i, text in enumerate(table.strings("address_spaces", None))
            )
            if not spaces:
                raise table.error("address_spaces", "a send connector needs an address space")
            sources: list[str] = []
            for index, text in enumerate(table.strings("source_servers", None)):
                key = f"source_servers[{index}]"
                server = self.server_ref(table, key, text)
                if not server.roles & TRANSPORT_ROLES:
                    raise table.error(key, f"{server.name} is not a transport server")
                if server.name in sources:
                    raise table.error(key, f"duplicate source server {server.name!r}")
                sources.append(server.name)
            if not sources:
                raise table.error("source_servers", "a send connector needs a source server")
            hosts = tuple(
                self.smart_host(table, f"smart_hosts[{i}]", text, sources)
                for i, text in enumerate(table.strings("smart_hosts"))
            )
            connectors.append(
                SendConnector(
                    name=name,
                    address_spaces=spaces,
                    source_servers=tuple(sources),
                    smart_hosts=hosts,
                    cost=table.integer("cost", 1, minimum=1, maximum=100),
                    max_message_size=table.byte_size(
                        "max_message_size", 10 * 1024 * 1024, allow_unlimited=True, minimum=1
                    ),
                    require_tls=table.boolean("require_tls", False),
                )
            )
        return tuple(connectors)

    def smart_host(self, table: Table, key: str, text: str, sources: list[str]) -> str:
        """A smart host: a server of the file (by name) or HOST:PORT (port offset applied)."""
        if ":" in text:
            parsed = table.convert(key, text, lambda t: parse_address(t, allow_wildcard=False))
            return str(table.convert(key, parsed, lambda a: a.shifted(self.offset)))
        for server in self.servers.values():
            if server.name.lower() == text.lower():
                if server.smtp is None:
                    raise table.error(key, f"{server.name} has no SMTP address")
                if server.name in sources:
                    raise table.error(key, f"{server.name} is a source server of this connector")
                return server.name
        raise table.error(key, _unknown("server", text, self.servers) + " and not HOST:PORT")


def _default_groups(usage: str, server: Server) -> tuple[str, ...]:
    """Exchange's permission groups for a new receive connector of this usage and role."""
    if usage == "Client":
        return ("ExchangeUsers",)
    if usage == "Internet":
        return ("AnonymousUsers",)
    if usage == "Custom":
        return ()
    if "edge" in server.roles:
        return ("AnonymousUsers", "ExchangeServers", "Partners")
    if "legacy" in server.roles:
        return ("AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers")
    return ("ExchangeUsers", "ExchangeServers", "ExchangeLegacyServers")
