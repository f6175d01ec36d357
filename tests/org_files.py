"""Organization files for integration tests: small Contoso labs on free ports."""

from __future__ import annotations

from pathlib import Path

from exchange_emu.lab.processes import free_ports


def chain_org(directory: Path, *, heartbeat: str = "00:00:01", retry_count: int = 2,
              database_urls: dict[str, str] | None = None,
              internet_sources: tuple[str, ...] = ("HUB02",),
              transport: dict[str, str] | None = None) -> tuple[Path, dict[str, int]]:
    """HUB01 → HUB02 → EDGE01 → INTERNET01 (a foreign sink) for fabrikam.test, and HUB03.

    HUB02 is the only source server of the Internet send connector, so HUB01
    relays Internet mail to HUB02 (same site), HUB02 to EDGE01 (its smart host),
    and EDGE01 to INTERNET01.
    """
    names = ["HUB01", "HUB02", "HUB03", "EDGE01", "INTERNET01"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    urls = database_urls or {}

    def db(name: str) -> str:
        return f'database_url = "{urls[name]}"' if name in urls else ""

    text = f"""
[organization]
name = "Contoso"

[lab]
data_root = "{directory / 'var'}"
org_server_networks = ["127.0.0.0/8"]

[[sites]]
name = "Site-A"

[[accepted_domains]]
domain = "contoso.test"
type = "Authoritative"
default = true

[[servers]]
name = "HUB01"
fqdn = "hub01.contoso.test"
roles = ["hub"]
site = "Site-A"
smtp = "127.0.0.1:{ports['HUB01']}"
{db('HUB01')}

[[servers]]
name = "HUB02"
fqdn = "hub02.contoso.test"
roles = ["hub"]
site = "Site-A"
smtp = "127.0.0.1:{ports['HUB02']}"
{db('HUB02')}

[[servers]]
name = "HUB03"
fqdn = "hub03.contoso.test"
roles = ["hub"]
site = "Site-A"
smtp = "127.0.0.1:{ports['HUB03']}"
{db('HUB03')}

[[servers]]
name = "EDGE01"
fqdn = "edge01.contoso.test"
roles = ["edge"]
smtp = "127.0.0.1:{ports['EDGE01']}"
{db('EDGE01')}

[[servers]]
name = "INTERNET01"
fqdn = "mail.fabrikam.test"
roles = ["legacy"]
version = "non-exchange"
smtp = "127.0.0.1:{ports['INTERNET01']}"
local_domains = ["fabrikam.test"]

[[send_connectors]]
name = "Internet via EDGE01"
address_spaces = ["*"]
source_servers = {list(internet_sources)}
smart_hosts = ["EDGE01"]

[[send_connectors]]
name = "EdgeSync - to Internet"
address_spaces = ["*"]
source_servers = ["EDGE01"]
smart_hosts = ["INTERNET01"]

[transport]
ShadowHeartbeatTimeoutInterval = "{heartbeat}"
ShadowHeartbeatRetryCount = {retry_count}
QueueGlitchRetryInterval = "00:00:01"
TransientFailureRetryInterval = "00:00:01"
MessageRetryInterval = "00:00:01"
""" + "".join(f'{key} = "{value}"\n' for key, value in (transport or {}).items())
    path = directory / "chain.toml"
    path.write_text(text)
    return path, ports
