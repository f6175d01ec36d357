"""Several hosts on one machine: a Linux network namespace per server, joined by veth
links to a bridge (a "switch" namespace), with the test process on the same segment.

    root ns (the test: 10.77.N.1) ──veth── [switch ns: bridge] ──veth── ns HUB01 (10.77.N.10)
                                                                ──veth── ns HUB02 (10.77.N.11) …

Every name carries a random tag, so parallel runs do not collide; ``remove`` deletes
everything made (namespaces take their veth ends with them). A partition is one server's
link on the bridge brought down; healing brings it up again.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import uuid
from collections.abc import Sequence


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no CAP_NET_ADMIN, no iproute2)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def check_available() -> None:
    """Raise NetnsUnavailable with the reason when ``ip netns add`` is not permitted."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (CAP_NET_ADMIN)")
    probe = f"xe-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except FileNotFoundError:
        raise NetnsUnavailable("iproute2 (the ip command) is not installed") from None
    except RuntimeError as e:
        raise NetnsUnavailable(f"ip netns add is not permitted: {e}") from None
    _ip("netns", "del", probe)


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.77.N.0/24 that no address of this (root) namespace is in."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        n = int.from_bytes(os.urandom(1), "big") % 254 + 1
        if f" 10.77.{n}." not in used:
            return ipaddress.IPv4Network(f"10.77.{n}.0/24")
    raise RuntimeError("no free 10.77.N.0/24 subnet")


class Hosts:
    """One namespace ("host") per server name, each with its own address."""

    def __init__(self, names: Sequence[str]) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.gateway = str(hosts[0])  # the test process, in the root namespace
        self.address = {name: str(hosts[9 + i]) for i, name in enumerate(names)}
        self.namespace = {name: f"xe{self.tag}-{name}" for name in names}
        self.switch = f"xe{self.tag}-switch"
        self._switch_port = {name: f"xe{self.tag}{i}s" for i, name in enumerate(names)}
        self._root_link = f"xe{self.tag}r"
        self._made: list[str] = []

    def create(self) -> Hosts:
        prefix = self.subnet.prefixlen
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        # The test's own leg: root side keeps the gateway address.
        _ip("link", "add", self._root_link, "type", "veth", "peer", "name", "uplink",
            "netns", self.switch)
        _ip("-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
        _ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self._root_link)
        _ip("link", "set", self._root_link, "up")
        for name, namespace in self.namespace.items():
            _ip("netns", "add", namespace)
            self._made.append(namespace)
            port = self._switch_port[name]
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{self.address[name]}/{prefix}", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
        return self

    def remove(self) -> None:
        """Delete every namespace and link made (best effort, all of them)."""
        for link in (self._root_link,):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        while self._made:
            subprocess.run(["ip", "netns", "del", self._made.pop()], capture_output=True,
                           timeout=30)

    def exec_prefix(self, name: str) -> list[str]:
        """The argv prefix that runs a command inside ``name``'s namespace."""
        return ["ip", "netns", "exec", self.namespace[name]]

    def partition(self, name: str) -> None:
        """Cut ``name`` off the network: its link on the bridge goes down."""
        _ip("-n", self.switch, "link", "set", self._switch_port[name], "down")

    def heal(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self._switch_port[name], "up")

    def existing_namespaces(self) -> list[str]:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listed.splitlines()
                if line.startswith(f"xe{self.tag}")]
