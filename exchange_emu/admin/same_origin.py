"""Admin endpoints answer only their own page and command-line clients.

The lab's admin endpoint and each server's management endpoint change things (kill a
server, remove a message) on a plain HTTP POST. Without a check, any web page open in the
operator's browser could send such a POST to 127.0.0.1 (cross-site request forgery), or
reach the endpoint under its own domain name after re-pointing that name at 127.0.0.1 (DNS
rebinding). So, as an Exchange administrator's remote PowerShell is not open to any web
page either:

- the ``Host`` header must name the endpoint by an IP address or ``localhost`` (a domain
  name is refused: it is how DNS rebinding arrives);
- a request that changes something (any method but GET and HEAD) carrying an ``Origin``
  header (browsers send one) must come from the endpoint's own origin.

Command-line clients send no ``Origin`` and use the address itself, so they pass.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from twisted.web import server

SAFE_METHODS = (b"GET", b"HEAD")


def _host_name(host: str) -> str:
    """``127.0.0.1:8800`` → ``127.0.0.1``; ``[::1]:8800`` → ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_address_or_localhost(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def refusal(method: bytes, host: str | None, origin: str | None) -> str | None:
    """Why this request is refused, or None when it may proceed."""
    if not host:
        return "no Host header; use http://<address>:<port>/ of the admin endpoint"
    if not _is_address_or_localhost(_host_name(host)):
        return (f"Host {host!r} is not accepted (DNS rebinding guard); use the endpoint's "
                "IP address or localhost")
    if method in SAFE_METHODS or origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return (f"a {method.decode(errors='replace')} from the web page of {origin} is "
                "refused (cross-site request guard); use the lab's own page or the CLI")
    return None


class SameOriginRequest(server.Request):
    """A twisted.web request that is answered 403 when :func:`refusal` says so."""

    def process(self) -> None:
        host = self.getHeader(b"host")
        origin = self.getHeader(b"origin")
        problem = refusal(self.method, host.decode("latin-1") if host else None,
                          origin.decode("latin-1") if origin else None)
        if problem is None:
            super().process()
            return
        self.site = self.channel.site  # type: ignore[attr-defined]
        self.setResponseCode(403)
        self.setHeader(b"content-type", b"application/json")
        self.write(json.dumps({"error": problem}).encode())
        self.finish()


def guarded_site(root: Any) -> server.Site:
    """A quiet twisted.web Site for an admin endpoint, with the same-origin guard."""
    site = server.Site(root, requestFactory=SameOriginRequest)
    site.noisy = False
    return site
