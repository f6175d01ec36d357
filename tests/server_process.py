"""Real server processes for integration tests: an organization file on
free loopback ports, and twistd started, killed and restarted for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

from exchange_emu.lab.processes import TWISTD, ServerProcess, free_ports

__all__ = ["TWISTD", "ServerProcess", "free_ports", "run_to_exit", "small_org"]


def small_org(directory: Path, hub_port: int, *, database_url: str | None = None) -> Path:
    """An organization with one hub (HUB01) that trusts loopback as org servers."""
    db_line = f'database_url = "{database_url}"' if database_url else ""
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

[[servers]]
name = "HUB01"
fqdn = "hub01.contoso.test"
roles = ["hub"]
site = "Site-A"
smtp = "127.0.0.1:{hub_port}"
{db_line}
"""
    path = directory / "org.toml"
    path.write_text(text)
    return path


def run_to_exit(
    argv: list[str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
