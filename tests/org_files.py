"""Organization files for integration tests: small Contoso labs on free ports."""

from __future__ import annotations

from pathlib import Path

from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    SendConnectorSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.lab.processes import free_ports

FAST_RETRY = {
    "QueueGlitchRetryInterval": "00:00:01",
    "TransientFailureRetryInterval": "00:00:01",
    "MessageRetryInterval": "00:00:01",
}


def small_org(directory: Path, hub_port: int, *, database_url: str | None = None) -> Path:
    """An organization with one hub (HUB01) that trusts loopback as org servers."""
    spec = OrgSpec([ServerSpec("HUB01", "hub", hub_port, database_url=database_url)])
    return write_org(directory / "org.toml", spec)


def chain_org(directory: Path, *, heartbeat: str = "00:00:01", retry_count: int = 2,
              database_urls: dict[str, str] | None = None,
              internet_sources: tuple[str, ...] = ("HUB02",),
              transport: dict[str, str] | None = None,
              ack_delay: str = "00:00:03") -> tuple[Path, dict[str, int]]:
    """HUB01 → HUB02 → EDGE01 → INTERNET01 (a foreign sink) for fabrikam.test, and HUB03.

    HUB02 is the only source server of the Internet send connector (unless
    ``internet_sources`` says otherwise), so HUB01 relays Internet mail to HUB02 (same
    site), HUB02 to EDGE01 (its smart host), and EDGE01 to INTERNET01.
    """
    names = ["HUB01", "HUB02", "HUB03", "EDGE01", "INTERNET01"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    urls = database_urls or {}
    servers = [ServerSpec(n, "hub", ports[n], database_url=urls.get(n), ack_delay=ack_delay)
               for n in ("HUB01", "HUB02", "HUB03")]
    servers += [
        ServerSpec("EDGE01", "edge", ports["EDGE01"], site=None, database_url=urls.get("EDGE01"),
                   ack_delay=ack_delay),
        ServerSpec("INTERNET01", "legacy", ports["INTERNET01"], site=None,
                   version="non-exchange", local_domains=("fabrikam.test",)),
    ]
    spec = OrgSpec(
        servers,
        send_connectors=[
            SendConnectorSpec("Internet via EDGE01", internet_sources, ("EDGE01",)),
            SendConnectorSpec("EdgeSync - to Internet", ("EDGE01",), ("INTERNET01",)),
        ],
        transport={"ShadowHeartbeatTimeoutInterval": heartbeat,
                   "ShadowHeartbeatRetryCount": retry_count, **FAST_RETRY, **(transport or {})},
    )
    return write_org(directory / "chain.toml", spec), ports


def two_site_org(directory: Path, *, heartbeat: str = "00:00:01",
                 retry_count: int = 2) -> tuple[Path, dict[str, int]]:
    """The lab's two sites: Site-A has MBX01 (DB01: alice, bob), HUB01 (with a Client
    submission connector on ports["CLIENT"]; alice's password is P@ssw0rd) and HUB02;
    Site-B has MBX02 (DB02: carol) and HUB03."""
    names = ["MBX01", "HUB01", "HUB02", "MBX02", "HUB03"]
    ports = dict(zip([*names, "CLIENT", "ADMIN"], free_ports(len(names) + 2), strict=True))
    site = {"MBX01": "Site-A", "HUB01": "Site-A", "HUB02": "Site-A", "MBX02": "Site-B",
            "HUB03": "Site-B"}
    spec = OrgSpec(
        [ServerSpec(n, "mailbox" if n.startswith("MBX") else "hub", ports[n], site=site[n],
                    client_port=ports["CLIENT"] if n == "HUB01" else None)
         for n in names],
        sites=("Site-A", "Site-B"),
        admin_port=ports["ADMIN"],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01"),
                           MailboxDatabaseSpec("DB02", "MBX02")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01",
                                  password="P@ssw0rd"),
                    RecipientSpec("bob@contoso.test", "Bob", database="DB01"),
                    RecipientSpec("carol@contoso.test", "Carol", database="DB02")],
        transport={"ShadowHeartbeatTimeoutInterval": heartbeat,
                   "ShadowHeartbeatRetryCount": retry_count, **FAST_RETRY},
    )
    return write_org(directory / "two-site.toml", spec), ports


def mixed_role_org(directory: Path, *, with_hub02: bool = True) -> tuple[Path, dict[str, int]]:
    """Site-A: EX01 carries the hub and mailbox roles (DB01: alice, bob), and (unless
    ``with_hub02`` is false) HUB02 is a second hub."""
    names = ["EX01", "EX01-SD", "HUB02"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    servers = [ServerSpec("EX01", "hub,mailbox", ports["EX01"],
                          store_driver_port=ports["EX01-SD"])]
    if with_hub02:
        servers.append(ServerSpec("HUB02", "hub", ports["HUB02"]))
    spec = OrgSpec(
        servers,
        mailbox_databases=[MailboxDatabaseSpec("DB01", "EX01")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01"),
                    RecipientSpec("bob@contoso.test", "Bob", database="DB01")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:01", **FAST_RETRY},
    )
    return write_org(directory / "mixed.toml", spec), ports


def internet_org(directory: Path) -> tuple[Path, dict[str, int]]:
    """MBX01 (DB01: alice) and HUB01 in Site-A, EDGE01 at the perimeter, and INTERNET01
    (fabrikam.test) — a real MTA such as Postfix listens on ports["INTERNET01"]."""
    names = ["MBX01", "HUB01", "EDGE01", "INTERNET01"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    spec = OrgSpec(
        [ServerSpec("MBX01", "mailbox", ports["MBX01"]),
         ServerSpec("HUB01", "hub", ports["HUB01"]),
         ServerSpec("EDGE01", "edge", ports["EDGE01"], site=None),
         ServerSpec("INTERNET01", "legacy", ports["INTERNET01"], site=None,
                    version="non-exchange", local_domains=("fabrikam.test",))],
        send_connectors=[
            SendConnectorSpec("EdgeSync - Inbound", ("EDGE01",), ("HUB01",), ("contoso.test",)),
            SendConnectorSpec("To Internet via EDGE01", ("HUB01",), ("EDGE01",)),
            SendConnectorSpec("EdgeSync - to Internet", ("EDGE01",), ("INTERNET01",)),
        ],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:02", **FAST_RETRY},
    )
    return write_org(directory / "internet.toml", spec), ports


def legacy_org(directory: Path, version: str = "2003") -> tuple[Path, dict[str, int]]:
    """Site-A: MBX01 (DB01: alice), HUB01, and LEGACY01 — an Exchange 2003 (or 2007)
    server holding legacy.contoso.test (dave)."""
    names = ["MBX01", "HUB01", "LEGACY01"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    spec = OrgSpec(
        [ServerSpec("MBX01", "mailbox", ports["MBX01"]),
         ServerSpec("HUB01", "hub", ports["HUB01"]),
         ServerSpec("LEGACY01", "legacy", ports["LEGACY01"], version=version,
                    local_domains=("legacy.contoso.test",))],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01"),
                    RecipientSpec("dave@legacy.contoso.test", "Dave", server="LEGACY01")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:02", **FAST_RETRY},
    )
    return write_org(directory / "legacy.toml", spec), ports


def two_hub_org(directory: Path, *, ack_delay: str = "00:00:30") -> tuple[Path, dict[str, int]]:
    """Site-A: MBX01 (DB01: alice, bob) and HUB01; Site-B: HUB02 and MBX02 (DB02: carol);
    the lab admin endpoint on ports["ADMIN"]. alice → carol goes HUB01 → HUB02 (the
    Site-B queue on HUB01) → MBX02; stop HUB02 and HUB01's Site-B queue goes to Retry."""
    names = ["MBX01", "HUB01", "HUB02", "MBX02"]
    ports = dict(zip([*names, "ADMIN"], free_ports(len(names) + 1), strict=True))
    site = {"MBX01": "Site-A", "HUB01": "Site-A", "HUB02": "Site-B", "MBX02": "Site-B"}
    spec = OrgSpec(
        [ServerSpec(n, "mailbox" if n.startswith("MBX") else "hub", ports[n], site=site[n],
                    ack_delay=None if n.startswith("MBX") else ack_delay)
         for n in names],
        sites=("Site-A", "Site-B"),
        admin_port=ports["ADMIN"],
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01"),
                           MailboxDatabaseSpec("DB02", "MBX02")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01"),
                    RecipientSpec("bob@contoso.test", "Bob", database="DB01"),
                    RecipientSpec("carol@contoso.test", "Carol", database="DB02")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:02", **FAST_RETRY,
                   "OutboundConnectionFailureRetryInterval": "00:00:01"},
    )
    return write_org(directory / "two-hub.toml", spec), ports
