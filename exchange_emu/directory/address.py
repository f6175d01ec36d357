"""Network endpoints of the organization's servers (``HOST:PORT``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from exchange_emu.directory.names import normalize_domain

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Address:
    """A TCP endpoint: an SMTP listener, a store-driver endpoint or an admin interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        """Whether the host is 0.0.0.0 or :: (listen on every interface)."""
        return self.host in WILDCARD_HOSTS

    def endpoint(self) -> str:
        """Twisted server endpoint string: ``tcp:2525:interface=127.0.0.1``."""
        return f"tcp:{self.port}:interface={_escape(self.host)}"

    def client_endpoint(self) -> str:
        """Twisted client endpoint string: ``tcp:host=127.0.0.1:port=2525``."""
        return f"tcp:host={_escape(self.host)}:port={self.port}"

    def shifted(self, offset: int) -> Address:
        """The same host with the port moved by ``offset`` (two labs side by side)."""
        port = self.port + offset
        if not 1 <= port <= 65535:
            raise ValueError(
                f"port {self.port} shifted by port offset {offset} is {port}, outside 1-65535"
            )
        return Address(self.host, port)


def _escape(host: str) -> str:
    return host.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def parse_address(text: str, *, allow_wildcard: bool = True) -> Address:
    """Parse ``HOST:PORT`` (IPv6 as ``[::1]:25``); raise ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not HOST:PORT")
    stripped = text.strip()
    if stripped.startswith("["):
        host, sep, port_text = stripped[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not HOST:PORT")
    else:
        host, sep, port_text = stripped.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{text!r} is not HOST:PORT")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number 1-65535")
    host = _normalize_host(host, text)
    if host in WILDCARD_HOSTS and not allow_wildcard:
        raise ValueError(f"{text!r}: peers cannot connect to the wildcard address {host}")
    return Address(host, int(port_text))


def _normalize_host(host: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return normalize_domain(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not a host name or IP address") from None
