"""The organization file: Exchange's Active Directory (sites, servers, connectors, settings).

Ground floor of the package: imports nothing else of exchange_emu. Load with
:func:`load_organization`; every mistake in the file is one :class:`OrganizationFileError`
line naming the file, the key and the problem.
"""

from exchange_emu.directory.address import Address, parse_address
from exchange_emu.directory.bytesize import UNLIMITED, format_byte_size, parse_byte_size
from exchange_emu.directory.errors import OrganizationFileError, UnknownServerError
from exchange_emu.directory.loader import load_organization, organization_from_mapping
from exchange_emu.directory.model import (
    CONNECTOR_USAGES,
    DOMAIN_TYPES,
    LEGACY_VERSIONS,
    PERMISSION_GROUPS,
    ROLES,
    AcceptedDomain,
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
from exchange_emu.directory.timespan import format_timespan, parse_timespan
from exchange_emu.directory.transport_settings import EXCHANGE_NAMES, TransportSettings

__all__ = [
    "CONNECTOR_USAGES",
    "DOMAIN_TYPES",
    "EXCHANGE_NAMES",
    "LEGACY_VERSIONS",
    "PERMISSION_GROUPS",
    "ROLES",
    "UNLIMITED",
    "AcceptedDomain",
    "Address",
    "LabSettings",
    "MailboxDatabase",
    "Organization",
    "OrganizationFileError",
    "ReceiveConnector",
    "Recipient",
    "SendConnector",
    "Server",
    "Site",
    "SiteLink",
    "TlsSettings",
    "TransportSettings",
    "UnknownServerError",
    "format_byte_size",
    "format_timespan",
    "load_organization",
    "organization_from_mapping",
    "parse_address",
    "parse_byte_size",
    "parse_timespan",
]
