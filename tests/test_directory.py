"""Tests for the organization file (exchange_emu.directory): Active Directory in one TOML file."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_emu.directory import (
    UNLIMITED,
    Address,
    Organization,
    OrganizationFileError,
    ReceiveConnector,
    SendConnector,
    TransportSettings,
    UnknownServerError,
    format_timespan,
    load_organization,
    organization_from_mapping,
    parse_address,
    parse_byte_size,
    parse_timespan,
)

LAB = Path(__file__).resolve().parents[1] / "etc" / "lab.toml"
TWO_SITE = Path(__file__).resolve().parents[1] / "etc" / "two-site.toml"

# A small valid organization; error tests change one thing in it.
BASE = """\
[organization]
name = "Test"

[[sites]]
name = "S1"

[[accepted_domains]]
domain = "example.test"
type = "Authoritative"

[[servers]]
name = "HUB1"
fqdn = "hub1.example.test"
roles = ["hub"]
site = "S1"
smtp = "127.0.0.1:2525"

[[servers]]
name = "MBX1"
fqdn = "mbx1.example.test"
roles = ["mailbox"]
site = "S1"
store_driver = "127.0.0.1:2601"

[[mailbox_databases]]
name = "DB1"
server = "MBX1"

[[recipients]]
address = "a@example.test"
database = "DB1"
"""


def write(tmp_path: Path, text: str, name: str = "org.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def changed(old: str, new: str) -> str:
    """BASE with one piece of text replaced (which must be there)."""
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def load_error(path: Path) -> str:
    with pytest.raises(OrganizationFileError) as info:
        load_organization(path)
    return str(info.value)


def addresses(org: Organization) -> Iterator[tuple[str, Address]]:
    """Every address of the organization, labelled, in a stable order."""
    if org.lab.admin:
        yield "lab.admin", org.lab.admin
    for server in org.servers.values():
        for kind in ("smtp", "store_driver", "admin"):
            address = getattr(server, kind)
            if address is not None:
                yield f"{server.name}.{kind}", address
        for connector in server.receive_connectors:
            yield f"{server.name}/{connector.name}.bind", connector.bind
    for send in org.send_connectors:
        for index, address in enumerate(send.resolved_smart_hosts(org)):
            yield f"{send.name}.smart_hosts[{index}]", address


# -- the default lab -----------------------------------------------------------------------


def test_lab_file_has_the_documented_servers_and_ports() -> None:
    """etc/lab.toml declares exactly the lab's servers, roles, sites and ports."""
    org = load_organization(LAB)
    found = {
        s.name: (
            sorted(s.roles),
            s.site,
            s.version,
            str(s.smtp) if s.smtp else None,
            str(s.store_driver) if s.store_driver else None,
        )
        for s in org.servers.values()
    }
    assert found == {
        "MBX01": (["mailbox"], "Site-A", "2010", None, "127.0.0.1:2601"),
        "HUB01": (["hub"], "Site-A", "2010", "127.0.0.1:2525", None),
        "HUB02": (["hub"], "Site-A", "2010", "127.0.0.1:2526", None),
        "MBX02": (["mailbox"], "Site-B", "2010", None, "127.0.0.1:2602"),
        "HUB03": (["hub"], "Site-B", "2010", "127.0.0.1:2527", None),
        "EDGE01": (["edge"], None, "2010", "127.0.0.1:2530", None),
        "LEGACY01": (["legacy"], "Site-A", "2007", "127.0.0.1:2540", None),
        "INTERNET01": (["legacy"], None, "non-exchange", "127.0.0.1:2550", None),
    }
    assert org.name == "Contoso"
    assert org.server("MBX01").fqdn == "mbx01.contoso.test"
    assert org.lab.admin == Address("127.0.0.1", 8800)
    assert [str(s.admin) for s in org.servers.values()] == [
        f"127.0.0.1:{port}" for port in range(8801, 8809)
    ]


def test_lab_file_sites_domains_mailboxes() -> None:
    """The lab's sites, site link, accepted domains, databases and recipients."""
    org = load_organization(LAB)
    assert list(org.sites) == ["Site-A", "Site-B"]
    assert [(link.sites, link.cost) for link in org.site_links] == [(("Site-A", "Site-B"), 10)]
    assert org.site_link_cost("site-b", "Site-A") == 10
    assert [(d.domain, d.type) for d in org.accepted_domains] == [
        ("contoso.test", "Authoritative"),
        ("legacy.contoso.test", "Authoritative"),
    ]
    assert {n: db.server for n, db in org.mailbox_databases.items()} == {
        "DB01": "MBX01",
        "DB02": "MBX02",
    }
    assert {a: (r.database, r.server) for a, r in org.recipients.items()} == {
        "alice@contoso.test": ("DB01", "MBX01"),
        "bob@contoso.test": ("DB01", "MBX01"),
        "carol@contoso.test": ("DB02", "MBX02"),
        "dave@legacy.contoso.test": (None, "LEGACY01"),
        "erin@fabrikam.test": (None, "INTERNET01"),
    }
    assert org.server("LEGACY01").local_domains == ("legacy.contoso.test",)
    assert org.server_for_domain("fabrikam.test") == org.server("INTERNET01")


def test_lab_file_routes_internet_mail_through_the_edge() -> None:
    """Hubs send '*' to EDGE01; EDGE01 sends '*' to INTERNET01 and inbound mail to hubs."""
    org = load_organization(LAB)
    routes = {
        tuple(c.source_servers): (c.address_spaces, c.resolved_smart_hosts(org))
        for c in org.send_connectors
    }
    assert routes[("HUB01", "HUB02", "HUB03")] == (("*",), (Address("127.0.0.1", 2530),))
    edge_out = [c for c in org.send_connectors if c.source_servers == ("EDGE01",)]
    assert ("*",) in [c.address_spaces for c in edge_out]
    internet = next(c for c in edge_out if c.address_spaces == ("*",))
    assert internet.resolved_smart_hosts(org) == (Address("127.0.0.1", 2550),)
    inbound = max(edge_out, key=lambda c: c.match_length("contoso.test"))
    assert inbound.address_spaces == ("contoso.test", "legacy.contoso.test")
    assert set(inbound.smart_hosts) <= {s.name for s in org.servers_with_role("hub")}


def test_lab_file_trust_rule_and_edge_connector() -> None:
    """2010 servers trust 127.0.0.0/8 as org servers; the edge takes anonymous mail."""
    org = load_organization(LAB)
    loopback = ipaddress.ip_network("127.0.0.0/8")
    for server in org.servers.values():
        if server.is_exchange_2010 and server.smtp is not None:
            connector = server.receive_connectors[0]
            assert connector.org_server_networks == (loopback,), server.name
            assert connector.is_org_server_address("127.0.0.2")
            assert connector.bind == server.smtp
    assert org.server("EDGE01").receive_connectors[0].allows_anonymous
    assert not org.server("HUB01").receive_connectors[0].allows_anonymous
    assert org.server("INTERNET01").receive_connectors[0].org_server_networks == ()
    client = org.server("HUB01").receive_connectors[1]
    assert (client.name, client.usage, str(client.bind)) == (
        "Client HUB01", "Client", "127.0.0.1:2587")
    assert client.auth_mechanisms == ("LOGIN", "PLAIN")
    assert org.server("EDGE01").receive_connectors[0].max_acknowledgement_delay == 10.0


def test_connector_org_server_networks_override_the_lab_rule(tmp_path: Path) -> None:
    """A connector's own org_server_networks replace [lab]'s; an empty list trusts no one."""
    text = changed(
        "[organization]", '[lab]\norg_server_networks = ["127.0.0.0/8"]\n\n[organization]'
    )
    text = text.replace(
        'smtp = "127.0.0.1:2525"\n',
        'smtp = "127.0.0.1:2525"\n[[servers.receive_connectors]]\norg_server_networks = []\n'
        '[[servers.receive_connectors]]\nname = "Peers"\nbind = "127.0.0.1:2600"\n'
        'org_server_networks = ["10.1.2.3", "fd00::/8"]\n'
        '[[servers.receive_connectors]]\nname = "Lab"\nbind = "127.0.0.1:2700"\n',
    )
    default, peers, lab = load_organization(write(tmp_path, text)).server("HUB1").receive_connectors
    assert default.org_server_networks == ()
    assert not default.is_org_server_address("127.0.0.1")
    assert peers.is_org_server_address("10.1.2.3") and peers.is_org_server_address("fd00::1")
    assert not peers.is_org_server_address("10.1.2.4")
    assert lab.org_server_networks == (ipaddress.ip_network("127.0.0.0/8"),)


def test_lab_file_shortens_transport_timers() -> None:
    """The lab's [transport] table is read with Exchange's names and shortened values."""
    transport = load_organization(LAB).transport
    assert transport.shadow_heartbeat_timeout_interval == 5.0
    assert transport.shadow_heartbeat_retry_count == 3
    assert transport.xqdiscard_max_events == 50
    assert transport.max_dumpster_size_per_database == 18 * 1024 * 1024


def test_lab_data_lands_under_var_of_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data_root "var" resolves against the cwd: ./var/<SERVER>, SQLite queue.db inside."""
    monkeypatch.chdir(tmp_path)
    hub = load_organization(LAB).server("HUB01")
    assert hub.data_dir == tmp_path / "var" / "HUB01"
    assert hub.database_url == f"sqlite:///{tmp_path}/var/HUB01/queue.db"


def test_two_site_sample_runs_one_server_per_host() -> None:
    """etc/two-site.toml: every server on its own host may bind 0.0.0.0:25."""
    org = load_organization(TWO_SITE)
    assert list(org.sites) == ["Dallas", "Seattle"]
    binds = [c.bind for s in org.servers.values() for c in s.receive_connectors]
    assert binds.count(Address("0.0.0.0", 25)) == 4
    assert org.server("DAL-EX01").roles == {"mailbox", "hub"}
    assert org.server("SEA-HUB01").database_url.startswith("postgresql://")
    assert org.transport == TransportSettings()


# -- Exchange defaults ---------------------------------------------------------------------


def test_transport_defaults_are_exchange_2010s() -> None:
    """TransportSettings defaults, and an empty [transport] table, equal Exchange's."""
    expected = {
        "ShadowRedundancyEnabled": True,
        "ShadowHeartbeatTimeoutInterval": 15 * 60.0,
        "ShadowHeartbeatRetryCount": 12,
        "ShadowMessageAutoDiscardInterval": 2 * 86400.0,
        "ShadowRedundancyPromotionEnabled": False,
        "MaxDumpsterSizePerDatabase": 18 * 1024 * 1024,
        "MaxDumpsterTime": 7 * 86400.0,
        "QueueGlitchRetryCount": 4,
        "QueueGlitchRetryInterval": 60.0,
        "TransientFailureRetryAttempts": 6,
        "TransientFailureRetryInterval": 300.0,
        "OutboundConnectionFailureRetryInterval": 600.0,
        "MessageRetryInterval": 900.0,
        "DelayNotificationTimeout": 4 * 3600.0,
        "MessageExpirationTimeout": 2 * 86400.0,
        "XQDiscardMaxEvents": 50,
        "DelayedAckSkipQueueLength": 100,
    }
    assert TransportSettings().to_mapping() == expected
    assert TransportSettings.from_mapping({}) == TransportSettings()


def test_transport_settings_read_exchange_names() -> None:
    """from_mapping takes Exchange's PascalCase names and TimeSpan/size text."""
    settings_ = TransportSettings.from_mapping(
        {
            "ShadowHeartbeatTimeoutInterval": "00:05:00",
            "ShadowHeartbeatRetryCount": 3,
            "MaxDumpsterSizePerDatabase": "36 MB",
            "MessageExpirationTimeout": "1.12:00:00",
            "XQDiscardMaxEvents": 1000,
        }
    )
    assert settings_.shadow_heartbeat_timeout_interval == 300.0
    assert settings_.shadow_heartbeat_retry_count == 3
    assert settings_.max_dumpster_size_per_database == 36 * 1024 * 1024
    assert settings_.message_expiration_timeout == 1.5 * 86400
    assert settings_.xqdiscard_max_events == 1000


def test_receive_connector_defaults_are_exchange_2010s(tmp_path: Path) -> None:
    """A hub without declared connectors gets "Default <NAME>" with Exchange's defaults."""
    org = load_organization(write(tmp_path, BASE))
    (connector,) = org.server("HUB1").receive_connectors
    assert connector == ReceiveConnector(
        name="Default HUB1",
        server="HUB1",
        bind=Address("127.0.0.1", 2525),
        fqdn="hub1.example.test",
    )
    exchange_defaults = {
        "usage": "Default",
        "max_acknowledgement_delay": 30.0,
        "max_message_size": 10485760,
        "max_recipients_per_message": 200,
        "max_inbound_connection": 5000,
        "max_inbound_connection_per_source": 20,
        "max_messages_per_connection": 20,
        "connection_timeout": 600.0,
        "connection_inactivity_timeout": 300.0,
        "max_protocol_errors": 5,
        "max_header_size": 65536,
        "max_hop_count": 60,
        "max_command_line_length": 2048,
        "max_data_line_length": 32768,
        "require_tls": False,
        "auth_mechanisms": (),
        "tls_certificate": None,
        "org_server_networks": (),
    }
    assert {name: getattr(connector, name) for name in exchange_defaults} == exchange_defaults
    assert not connector.allows_anonymous
    assert org.server("MBX1").receive_connectors == ()


def test_server_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 2010, data under ./var/<NAME>, SQLite queue database, no admin endpoint."""
    monkeypatch.chdir(tmp_path)
    hub = load_organization(write(tmp_path, BASE)).server("HUB1")
    assert hub.version == "2010" and hub.is_exchange_2010 and hub.supports_shadow_redundancy
    assert hub.data_dir == tmp_path / "var" / "HUB1"
    assert hub.database_url == f"sqlite:///{tmp_path / 'var' / 'HUB1' / 'queue.db'}"
    assert hub.admin is None


def test_send_connector_defaults(tmp_path: Path) -> None:
    """A send connector costs 1 and carries up to 10 MB unless told otherwise."""
    text = BASE + '[[send_connectors]]\nname = "Out"\naddress_spaces = ["*"]\n'
    text += 'source_servers = ["HUB1"]\n'
    (connector,) = load_organization(write(tmp_path, text)).send_connectors
    assert connector == SendConnector("Out", ("*",), ("HUB1",))
    assert (connector.cost, connector.max_message_size, connector.smart_hosts) == (1, 10485760, ())


# -- port offset ---------------------------------------------------------------------------


def test_port_offset_shifts_every_port_of_the_lab() -> None:
    """Every address of the lab file moves by the port offset, hosts unchanged."""
    base = dict(addresses(load_organization(LAB)))
    shifted = dict(addresses(load_organization(LAB, port_offset=1000)))
    assert len(base) > 20
    assert shifted == {k: Address(a.host, a.port + 1000) for k, a in base.items()}


def test_port_offset_shifts_connector_binds_and_literal_smart_hosts(tmp_path: Path) -> None:
    """Explicit binds, HOST:PORT smart hosts and the lab admin shift too."""
    text = changed("[organization]", '[lab]\nadmin = "127.0.0.1:8800"\n\n[organization]')
    text = text.replace(
        'smtp = "127.0.0.1:2525"\n',
        'smtp = "127.0.0.1:2525"\nadmin = "127.0.0.1:8801"\n'
        '[[servers.receive_connectors]]\nbind = "0.0.0.0:2525"\n'
        '[[servers.receive_connectors]]\nname = "Client HUB1"\nusage = "Client"\n'
        'bind = "127.0.0.1:2587"\n',
    )
    text += '[[send_connectors]]\nname = "Out"\naddress_spaces = ["*"]\n'
    text += 'source_servers = ["HUB1"]\nsmart_hosts = ["[::1]:2550"]\n'
    org = load_organization(write(tmp_path, text), port_offset=7)
    assert dict(addresses(org)) == {
        "lab.admin": Address("127.0.0.1", 8807),
        "HUB1.smtp": Address("127.0.0.1", 2532),
        "HUB1.admin": Address("127.0.0.1", 8808),
        "HUB1/Default HUB1.bind": Address("0.0.0.0", 2532),
        "HUB1/Client HUB1.bind": Address("127.0.0.1", 2594),
        "MBX1.store_driver": Address("127.0.0.1", 2608),
        "Out.smart_hosts[0]": Address("::1", 2557),
    }
    assert org.port_offset == 7


def test_port_offset_out_of_range_is_an_error(tmp_path: Path) -> None:
    """A port pushed past 65535 by the offset is reported at its key."""
    path = write(tmp_path, BASE)
    with pytest.raises(OrganizationFileError) as info:
        load_organization(path, port_offset=63100)
    assert str(info.value) == (
        f"{path}: servers[0].smtp: port 2525 shifted by port offset 63100 is 65625, outside 1-65535"
    )


# -- validation errors ---------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        changed('fqdn = "hub1.example.test"\n', ""),
        "servers[0].fqdn: required key is missing",
        id="missing-required-key",
    ),
    pytest.param(
        changed('name = "Test"\n', ""),
        "organization.name: required key is missing",
        id="missing-organization-name",
    ),
    pytest.param(
        changed('roles = ["hub"]', 'roles = "hub"'),
        "servers[0].roles: expected an array of strings, got string 'hub'",
        id="wrong-type",
    ),
    pytest.param(
        changed('site = "S1"\nsmtp', "site = 1\nsmtp"),
        "servers[0].site: expected a string, got integer 1",
        id="wrong-type-scalar",
    ),
    pytest.param(
        changed('smtp = "127.0.0.1:2525"', 'smpt = "127.0.0.1:2525"'),
        "servers[0].smpt: unknown key (did you mean 'smtp'?)",
        id="unknown-key-suggestion",
    ),
    pytest.param(
        BASE + "\n[tranport]\nShadowRedundancyEnabled = false\n",
        "tranport: unknown key (did you mean 'transport'?)",
        id="unknown-table-suggestion",
    ),
    pytest.param(
        BASE + '\n[transport]\nShadowHeartbeatTimeout = "00:00:05"\n',
        "transport.ShadowHeartbeatTimeout: unknown key "
        "(did you mean 'ShadowHeartbeatTimeoutInterval'?)",
        id="unknown-transport-key",
    ),
    pytest.param(
        changed('address = "a@example.test"', 'address = "a@example.test"\ncolour = "red"'),
        "recipients[0].colour: unknown key (known keys: address, database, display_name, "
        "password, password_hash, server)",
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        changed('smtp = "127.0.0.1:2525"', 'smtp = "abc"'),
        "servers[0].smtp: 'abc' is not HOST:PORT",
        id="bad-address",
    ),
    pytest.param(
        changed('smtp = "127.0.0.1:2525"', 'smtp = "127.0.0.1:70000"'),
        "servers[0].smtp: '127.0.0.1:70000': the port must be a number 1-65535",
        id="bad-port",
    ),
    pytest.param(
        changed('smtp = "127.0.0.1:2525"', 'smtp = "0.0.0.0:2525"'),
        "servers[0].smtp: '0.0.0.0:2525': peers cannot connect to the wildcard address 0.0.0.0",
        id="wildcard-smtp",
    ),
    pytest.param(
        BASE + '\n[transport]\nShadowHeartbeatTimeoutInterval = "15 minutes"\n',
        "transport.ShadowHeartbeatTimeoutInterval: '15 minutes' is not a TimeSpan "
        "[d.]hh:mm:ss[.fff] (e.g. '00:15:00')",
        id="bad-timespan",
    ),
    pytest.param(
        BASE + '\n[transport]\nShadowHeartbeatTimeoutInterval = "00:75:00"\n',
        "transport.ShadowHeartbeatTimeoutInterval: '00:75:00' is not a TimeSpan: "
        "hours must be 0-23, minutes and seconds 0-59",
        id="timespan-out-of-range",
    ),
    pytest.param(
        BASE + "\n[transport]\nMessageExpirationTimeout = 172800\n",
        "transport.MessageExpirationTimeout: expected a TimeSpan string like '00:15:00', "
        "got integer 172800",
        id="timespan-as-number",
    ),
    pytest.param(
        BASE + '\n[transport]\nMaxDumpsterSizePerDatabase = "18 MiB"\n',
        "transport.MaxDumpsterSizePerDatabase: '18 MiB' is not a size like '10MB', '512KB', "
        "'36 MB' or bytes",
        id="bad-size",
    ),
    pytest.param(
        BASE + '\n[transport]\nMaxDumpsterSizePerDatabase = "unlimited"\n',
        "transport.MaxDumpsterSizePerDatabase: 'unlimited' is not allowed for this setting",
        id="unlimited-not-allowed",
    ),
    pytest.param(
        BASE + "\n[transport]\nXQDiscardMaxEvents = 10\n",
        "transport.XQDiscardMaxEvents: 10 is out of range (allowed: 50-1000)",
        id="xqdiscard-range",
    ),
    pytest.param(
        changed('site = "S1"\nsmtp', 'site = "S9"\nsmtp'),
        "servers[0].site: no site named 'S9' (known: S1)",
        id="unknown-site",
    ),
    pytest.param(
        changed('database = "DB1"', 'database = "DB9"'),
        "recipients[0].database: no mailbox database named 'DB9' (known: DB1)",
        id="unknown-database",
    ),
    pytest.param(
        changed('server = "MBX1"', 'server = "HUB1"'),
        "mailbox_databases[0].server: HUB1 is not a mailbox server",
        id="database-on-non-mailbox-server",
    ),
    pytest.param(
        changed('server = "MBX1"', 'server = "MBX7"'),
        "mailbox_databases[0].server: no server named 'MBX7' (did you mean 'MBX1'? "
        "known: HUB1, MBX1)",
        id="database-on-unknown-server",
    ),
    pytest.param(
        BASE + '[[send_connectors]]\nname = "Out"\naddress_spaces = ["*"]\n'
        'source_servers = ["EDGE9"]\n',
        "send_connectors[0].source_servers[0]: no server named 'EDGE9' (known: HUB1, MBX1)",
        id="unknown-connector-source",
    ),
    pytest.param(
        BASE + '[[send_connectors]]\nname = "Out"\naddress_spaces = ["*"]\n'
        'source_servers = ["HUB1"]\nsmart_hosts = ["relay"]\n',
        "send_connectors[0].smart_hosts[0]: no server named 'relay' (known: HUB1, MBX1) "
        "and not HOST:PORT",
        id="unknown-smart-host",
    ),
    pytest.param(
        BASE + '[[servers]]\nname = "hub1"\nfqdn = "x.example.test"\nroles = ["hub"]\n'
        'site = "S1"\nsmtp = "127.0.0.1:2526"\n',
        "servers[2].name: duplicate server name 'hub1' (first at servers[0])",
        id="duplicate-server-name",
    ),
    pytest.param(
        changed('store_driver = "127.0.0.1:2601"', 'store_driver = "127.0.0.1:2525"'),
        "servers[1].store_driver: 127.0.0.1:2525 is already used by servers[0].smtp",
        id="duplicate-port",
    ),
    pytest.param(
        changed(
            'smtp = "127.0.0.1:2525"\n',
            'smtp = "127.0.0.1:2525"\n[[servers.receive_connectors]]\nbind = "0.0.0.0:2525"\n'
            '[[servers.receive_connectors]]\nname = "Other"\nbind = "0.0.0.0:2601"\n',
        ),
        "servers[1].store_driver: 127.0.0.1:2601 is already used by "
        "servers[0].receive_connectors[1].bind",
        id="wildcard-bind-takes-the-port-on-its-host",
    ),
    pytest.param(
        changed('type = "Authoritative"', 'type = "Authorative"'),
        "accepted_domains[0].type: 'Authorative' is not a domain type (did you mean "
        "'Authoritative'? allowed: Authoritative, InternalRelay, ExternalRelay)",
        id="bad-domain-type",
    ),
    pytest.param(
        changed('roles = ["hub"]', 'roles = ["hubb"]'),
        "servers[0].roles[0]: 'hubb' is not a server role (did you mean 'hub'? "
        "allowed: edge, hub, legacy, mailbox)",
        id="bad-role",
    ),
    pytest.param(
        changed('roles = ["hub"]\nsite = "S1"', 'roles = ["edge"]\nsite = "S1"'),
        "servers[0].site: edge transport servers are not members of an AD site",
        id="edge-in-a-site",
    ),
    pytest.param(
        changed('roles = ["hub"]', 'roles = ["legacy"]'),
        "servers[0].version: required key is missing for legacy servers "
        "(one of: 2007, 2003, non-exchange)",
        id="legacy-without-version",
    ),
    pytest.param(
        changed('address = "a@example.test"', 'address = "a@elsewhere.test"'),
        "recipients[0].address: 'elsewhere.test' is not an Authoritative or InternalRelay "
        "accepted domain",
        id="recipient-outside-accepted-domains",
    ),
    pytest.param(
        BASE + '[[site_links]]\nsites = ["S1", "S2"]\n',
        "site_links[0].sites[1]: no site named 'S2' (known: S1)",
        id="site-link-unknown-site",
    ),
    pytest.param(
        changed('domain = "example.test"', 'domain = "example..test"'),
        "accepted_domains[0].domain: 'example..test' is not a domain name",
        id="bad-domain",
    ),
    pytest.param(
        changed(
            'smtp = "127.0.0.1:2525"\n',
            'smtp = "127.0.0.1:2525"\n[[servers.receive_connectors]]\n'
            'max_acknowledgement_delay = "30s"\n',
        ),
        "servers[0].receive_connectors[0].max_acknowledgement_delay: '30s' is not a TimeSpan "
        "[d.]hh:mm:ss[.fff] (e.g. '00:15:00')",
        id="bad-connector-timespan",
    ),
    pytest.param(
        changed(
            'smtp = "127.0.0.1:2525"\n',
            'smtp = "127.0.0.1:2525"\n[[servers.receive_connectors]]\n'
            'max_message_size = "10 MB"\n[[servers.receive_connectors]]\n'
            'bind = "127.0.0.1:2600"\n',
        ),
        "servers[0].receive_connectors[1].name: duplicate receive connector name 'Default HUB1'",
        id="duplicate-connector-name",
    ),
    pytest.param(
        changed(
            'smtp = "127.0.0.1:2525"\n',
            'smtp = "127.0.0.1:2525"\n[[servers.receive_connectors]]\n'
            'org_server_networks = ["10.0.0.300/8"]\n',
        ),
        "servers[0].receive_connectors[0].org_server_networks[0]: '10.0.0.300/8' is not an "
        "IP network like '127.0.0.0/8'",
        id="bad-network",
    ),
    pytest.param(
        changed('name = "Test"', 'name = "Test'),
        None,  # checked separately below: the TOML parser's own words follow
        id="toml-syntax-error",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_mistakes_give_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str | None
) -> None:
    """Each kind of mistake gives exactly its one-line ``<file>: <key>: <problem>`` error."""
    path = write(tmp_path, text)
    message = load_error(path)
    assert "\n" not in message
    if expected is None:
        assert message.startswith(f"{path}: TOML syntax error: ")
        assert "line 2" in message
    else:
        assert message == f"{path}: {expected}"


def test_error_is_a_value_error_with_its_parts(tmp_path: Path) -> None:
    """OrganizationFileError is a ValueError carrying file, key and problem."""
    path = write(tmp_path, changed('smtp = "127.0.0.1:2525"', 'smtp = "abc"'))
    with pytest.raises(ValueError) as info:
        load_organization(path)
    error = info.value
    assert isinstance(error, OrganizationFileError)
    assert (error.file, error.key, error.problem) == (
        str(path),
        "servers[0].smtp",
        "'abc' is not HOST:PORT",
    )


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file part of the error is the path exactly as the caller wrote it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", changed('smtp = "127.0.0.1:2525"', 'smtp = "abc"'), "lab.toml")
    assert (
        load_error(Path("etc/lab.toml")) == "etc/lab.toml: servers[0].smtp: 'abc' is not HOST:PORT"
    )


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    """A missing organization file is an OrganizationFileError, not an OSError."""
    path = tmp_path / "nowhere.toml"
    assert load_error(path) == (
        f"{path}: cannot read the organization file: No such file or directory"
    )


def test_non_utf8_file_is_one_line(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is reported, not a UnicodeDecodeError."""
    path = tmp_path / "org.toml"
    path.write_bytes(b'[organization]\nname = "\xff"\n')
    assert load_error(path).startswith(f"{path}: ")


# -- lookups -------------------------------------------------------------------------------


def test_unknown_server_lists_the_known_names() -> None:
    """server() with an unknown name raises UnknownServerError listing every server."""
    org = load_organization(LAB)
    with pytest.raises(UnknownServerError) as info:
        org.server("HUB9")
    assert str(info.value) == (
        f"no server named 'HUB9' in {LAB} (known: MBX01, HUB01, HUB02, MBX02, HUB03, "
        "EDGE01, LEGACY01, INTERNET01)"
    )
    assert isinstance(info.value, LookupError)


def test_lookups_are_case_insensitive() -> None:
    """Server names, FQDNs, domains and addresses match regardless of case."""
    org = load_organization(LAB)
    assert org.server("hub01").name == "HUB01"
    assert org.server_by_fqdn("EDGE01.Contoso.Test") == org.server("EDGE01")
    assert org.server_by_fqdn("nowhere.contoso.test") is None
    recipient = org.recipient("Alice@CONTOSO.test")
    assert recipient is not None and recipient.server == "MBX01"
    assert org.recipient("zed@contoso.test") is None
    domain = org.accepted_domain("LEGACY.contoso.test")
    assert domain is not None and domain.domain == "legacy.contoso.test"
    assert org.accepted_domain("fabrikam.test") is None
    assert [s.name for s in org.servers_in_site("site-a")] == [
        "MBX01",
        "HUB01",
        "HUB02",
        "LEGACY01",
    ]
    assert [s.name for s in org.servers_with_role("hub")] == ["HUB01", "HUB02", "HUB03"]
    with pytest.raises(ValueError):
        org.servers_with_role("hubs")


def test_wildcard_accepted_domain_covers_subdomains_only(tmp_path: Path) -> None:
    """'*.example.test' matches sub.example.test, not example.test; exact entries win."""
    text = changed(
        "[[servers]]",
        '[[accepted_domains]]\ndomain = "*.example.test"\ntype = "InternalRelay"\n\n[[servers]]',
    )
    org = load_organization(write(tmp_path, text))
    sub = org.accepted_domain("eu.sales.example.test")
    assert sub is not None and sub.type == "InternalRelay"
    exact = org.accepted_domain("example.test")
    assert exact is not None and exact.type == "Authoritative" and exact.default


# -- paths ---------------------------------------------------------------------------------


def test_relative_data_dirs_resolve_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative data_root and data_dir resolve against the cwd at load time, not the file."""
    elsewhere = tmp_path / "files"
    elsewhere.mkdir()
    text = changed("[organization]", '[lab]\ndata_root = "state"\n\n[organization]')
    text = text.replace(
        'smtp = "127.0.0.1:2525"\n', 'smtp = "127.0.0.1:2525"\ndata_dir = "d/hub"\n'
    )
    path = write(elsewhere, text)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    org = load_organization(path)
    assert org.lab.data_root == run / "state"
    assert org.server("HUB1").data_dir == run / "d" / "hub"
    assert org.server("MBX1").data_dir == run / "state" / "MBX1"
    assert org.server("MBX1").database_url == f"sqlite:///{run}/state/MBX1/queue.db"


def test_absolute_data_dir_and_database_url_are_kept(tmp_path: Path) -> None:
    """An absolute data_dir and an explicit SQLAlchemy URL are used as written."""
    text = changed(
        'smtp = "127.0.0.1:2525"\n',
        f'smtp = "127.0.0.1:2525"\ndata_dir = "{tmp_path}/h"\n'
        'database_url = "postgresql://postgres@127.0.0.1:5432/hub1"\n',
    )
    hub = load_organization(write(tmp_path, text)).server("HUB1")
    assert hub.data_dir == tmp_path / "h"
    assert hub.database_url == "postgresql://postgres@127.0.0.1:5432/hub1"


def test_two_servers_cannot_share_a_data_dir(tmp_path: Path) -> None:
    """Each server owns its queue database: a shared data_dir is an error."""
    text = changed('smtp = "127.0.0.1:2525"\n', 'smtp = "127.0.0.1:2525"\ndata_dir = "/x/d"\n')
    text = text.replace(
        'store_driver = "127.0.0.1:2601"\n', 'store_driver = "127.0.0.1:2601"\ndata_dir = "/x/d"\n'
    )
    path = write(tmp_path, text)
    assert load_error(path) == (
        f"{path}: servers[1].data_dir: /x/d is already the data directory of HUB1"
    )


# -- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:15:00", 900.0),
        ("2.00:00:00", 172800.0),
        ("7.00:00:00", 604800.0),
        ("04:00:00", 14400.0),
        ("00:00:25.639", 25.639),
        ("00:00:00", 0.0),
        (" 1.02:03:04.5 ", 93784.5),
    ],
)
def test_parse_timespan(text: str, seconds: float) -> None:
    """TimeSpan text becomes float seconds."""
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["15:00", "-00:15:00", "24:00:00", "00:00:60", "1d", "", "2.:00"])
def test_parse_timespan_rejects(text: str) -> None:
    """Anything but [d.]hh:mm:ss[.fff] within range is a ValueError."""
    with pytest.raises(ValueError):
        parse_timespan(text)


def test_format_timespan() -> None:
    """Seconds print the way Exchange prints a TimeSpan."""
    assert format_timespan(900) == "00:15:00"
    assert format_timespan(172800) == "2.00:00:00"
    assert format_timespan(25.639) == "00:00:25.639"


@given(st.integers(min_value=0, max_value=10**12))
def test_timespan_round_trips(milliseconds: int) -> None:
    """format_timespan output parses back to the same number of seconds."""
    seconds = milliseconds / 1000
    assert parse_timespan(format_timespan(seconds)) == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("18MB", 18 * 1024**2),
        ("10MB", 10485760),
        ("36 MB", 36 * 1024**2),
        ("512KB", 512 * 1024),
        ("1.5GB", 3 * 1024**3 // 2),
        ("100B", 100),
        ("4096", 4096),
        (65536, 65536),
        ("18 MB (18,874,368 bytes)", 18874368),
        ("Unlimited", UNLIMITED),
    ],
)
def test_parse_byte_size(value: str | int, size: int) -> None:
    """ByteQuantifiedSize text or integer bytes become int bytes."""
    assert parse_byte_size(value) == size


@pytest.mark.parametrize("value", ["18 MiB", "-1MB", "MB", "10 XB", -5, "18 MB (1 bytes)"])
def test_parse_byte_size_rejects(value: str | int) -> None:
    """Unknown units, negatives and inconsistent byte counts are ValueErrors."""
    with pytest.raises(ValueError):
        parse_byte_size(value)


def test_address_text_and_endpoints() -> None:
    """Address prints HOST:PORT and gives Twisted endpoint strings, IPv6 escaped."""
    v4 = parse_address("127.0.0.1:2525")
    assert (str(v4), v4.endpoint(), v4.client_endpoint()) == (
        "127.0.0.1:2525",
        "tcp:2525:interface=127.0.0.1",
        "tcp:host=127.0.0.1:port=2525",
    )
    v6 = parse_address("[::1]:25")
    assert v6 == Address("::1", 25)
    assert (str(v6), v6.endpoint()) == ("[::1]:25", "tcp:25:interface=\\:\\:1")
    assert parse_address("Mail.Example.Test:587") == Address("mail.example.test", 587)


# -- robustness ----------------------------------------------------------------------------

_LAB_DATA = tomllib.loads(LAB.read_text(encoding="utf-8"))
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["", "*", "HUB01", "DB01", "Site-A", "127.0.0.1:2525", "00:00:05", "18MB"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


_LAB_PATHS = [p for p in _paths(_LAB_DATA) if p]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(_LAB_PATHS), _VALUES, st.booleans())
def test_any_damage_to_the_lab_gives_an_organization_or_a_file_error(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    """Replacing or deleting any value of the lab never raises anything but the file error."""
    data = copy.deepcopy(_LAB_DATA)
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        org = organization_from_mapping(data, source="etc/lab.toml")
    except OrganizationFileError as error:
        assert str(error).startswith("etc/lab.toml: ")
        assert "\n" not in str(error)
    else:
        assert isinstance(org, Organization)
        assert dataclasses.is_dataclass(org)



def test_passwords_are_hashed_on_load_and_verify(tmp_path: Path) -> None:
    """A lab's clear ``password`` is kept only as a PBKDF2 hash; ``password_hash`` is taken
    as it is; both verify; a malformed hash is a one-line error."""
    from exchange_emu.directory.passwords import hash_password, verify_password

    org = load_organization(LAB)
    alice = org.recipient("alice@contoso.test")
    assert alice is not None and alice.password_hash is not None
    assert "P@ssw0rd" not in alice.password_hash
    assert verify_password(alice.password_hash, "P@ssw0rd")
    assert not verify_password(alice.password_hash, "p@ssw0rd")
    made = hash_password("s3cret", iterations=1000)
    text = LAB.read_text().replace('password = "P@ssw0rd"', f'password_hash = "{made}"', 1)
    path = tmp_path / "lab.toml"
    path.write_text(text)
    again = load_organization(path).recipient("alice@contoso.test")
    assert again is not None and again.password_hash == made
    path.write_text(text.replace(made, "md5$abc"))
    with pytest.raises(OrganizationFileError) as info:
        load_organization(path)
    assert "password_hash: not pbkdf2_sha256$" in str(info.value)
