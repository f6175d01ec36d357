"""The categorizer's routing: from a recipient to the next hop (Exchange 2010
routes by Active Directory site, protocol.md §9).

On a hub:
- a mailbox in a database of this site → the database's mailbox server
  (store-driver delivery, scenario C);
- a mailbox in another site → the hubs of that site (hub→hub over SMTP, D);
- a recipient held by a legacy server → that server (no shadow redundancy, E);
- an unknown recipient of an Authoritative domain → NDR 5.1.1;
- anything else → the best-matching send connector: its smart hosts when this
  server is a source server of it, else a source server of it (a hub of this
  site, the hubs of its site, or an edge).
An edge has no site and no mailboxes: it routes by send connector only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_emu.directory import Address, Organization, SendConnector, Server

MAILBOX = "mailbox"
SMTP = "smtp"
LOCAL = "local"


@dataclass(frozen=True)
class Target:
    """A server a next hop can be reached at."""

    address: Address
    server: str | None = None  # the org server's name, when it is one
    fqdn: str = ""


@dataclass(frozen=True)
class NextHop:
    """A delivery queue's next hop (Get-Queue's NextHopDomain and DeliveryType)."""

    name: str
    delivery: str  # MAILBOX (store driver) or SMTP
    targets: tuple[Target, ...]
    delivery_type: str  # Exchange's DeliveryType, for the admin surface
    shadow_capable: bool = True
    """Some target may speak XSHADOW (an Exchange 2010 transport server, or unknown)."""
    require_tls: bool = False
    """The send connector's RequireTLS: verified TLS or nothing is sent."""


@dataclass(frozen=True)
class RoutingFailure:
    """No next hop: the recipient fails (NDR) or waits in the Unreachable queue."""

    reply: str  # "550 5.1.1 ..." — the NDR's diagnostic
    unreachable: bool = False


class Router:
    """Routing decisions of one transport server, from the organization file."""

    def __init__(self, organization: Organization, server: Server) -> None:
        self.organization = organization
        self.server = server
        self._by_domain: dict[str, NextHop | RoutingFailure] = {}
        """Send-connector routes by domain: they depend on the organization file only."""

    def route(self, address: str) -> NextHop | RoutingFailure:
        org = self.organization
        domain = address.rpartition("@")[2].lower()
        recipient = org.recipient(address)
        if self.server.has_role("legacy"):
            return self._legacy_route(address, domain, recipient)
        if self.server.site is not None and recipient is not None:
            if recipient.database is not None:
                return self._to_mailbox(recipient.database)
            holder = org.server(recipient.server)
            # Exchange 2003/2007 servers of the organization are routed to directly;
            # a non-Exchange server's recipients are reached like any Internet domain.
            if holder.is_exchange and holder.name != self.server.name:
                return self._to_server(holder)
        accepted = org.accepted_domain(domain)
        if (
            self.server.site is not None
            and recipient is None
            and accepted is not None
            and accepted.type == "Authoritative"
        ):
            return RoutingFailure("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found")
        return self._by_send_connector(domain)

    def _legacy_route(self, address: str, domain: str, recipient: Any) -> NextHop | RoutingFailure:
        """An Exchange 2003/2007 server or a plain MTA: its own domains are delivered
        locally; Exchange 2010 mailboxes through a 2010 hub (older servers cannot talk
        to 2010 mailbox servers); the rest by send connector or, as a stand-in for DNS
        MX, to the server holding the domain."""
        if domain in self.server.local_domains:
            if recipient is None or recipient.server != self.server.name:
                return RoutingFailure("550 5.1.1 User unknown")
            return NextHop("Local Delivery", LOCAL, (), "MapiDelivery", shadow_capable=False)
        if self.server.is_exchange and recipient is not None and recipient.database:
            database = self.organization.database(recipient.database)
            assert database is not None
            site = self.organization.server(database.server).site
            if site is not None:
                return self._to_site(site)
        holder = self.organization.server_for_domain(domain)
        if self._best_connector(domain) is None and holder is not None and holder.smtp:
            return NextHop(holder.fqdn, SMTP, (_target(holder),), "DnsConnectorDelivery",
                           shadow_capable=holder.supports_shadow_redundancy)
        if self._best_connector(domain) is None and self.server.site is not None:
            return self._to_site(self.server.site)  # an Exchange org's hubs take it
        return self._by_send_connector(domain)

    def _to_mailbox(self, database_name: str) -> NextHop | RoutingFailure:
        org = self.organization
        database = org.database(database_name)
        assert database is not None
        mailbox_server = org.server(database.server)
        if mailbox_server.name == self.server.name:
            # Hub and mailbox on one server: deliver through another hub of the site, so
            # the shadow copy is never on the same box; locally only when alone.
            others = self._other_hubs(self.server.site)
            if others:
                return NextHop(f"{database.name} via another hub", SMTP,
                               tuple(_target(s) for s in others), "SmtpRelayWithinAdSite")
        if mailbox_server.site == self.server.site:
            if mailbox_server.store_driver is None:
                return RoutingFailure(
                    f"451 4.4.0 DSN; no store driver endpoint for {database.server}",
                    unreachable=True,
                )
            target = Target(mailbox_server.store_driver, mailbox_server.name, mailbox_server.fqdn)
            return NextHop(database.name, MAILBOX, (target,), "SmtpDeliveryToMailbox",
                           shadow_capable=False)
        assert mailbox_server.site is not None
        return self._to_site(mailbox_server.site)

    def _other_hubs(self, site: str | None) -> list[Server]:
        if site is None:
            return []
        return [
            s for s in self.organization.servers_in_site(site)
            if s.has_role("hub") and s.smtp is not None and s.name != self.server.name
        ]

    def _to_site(self, site: str) -> NextHop | RoutingFailure:
        hubs = self._other_hubs(site)
        if not hubs:
            return RoutingFailure(f"451 4.4.0 Unable to route: no hub in site {site}",
                                  unreachable=True)
        targets = tuple(_target(s) for s in hubs)
        return NextHop(site, SMTP, targets, "SmtpRelayToRemoteAdSite")

    def _to_server(self, server: Server) -> NextHop | RoutingFailure:
        if (
            server.site is not None
            and self.server.site is not None
            and server.site != self.server.site
            and server.has_role("hub") is False
            and server.is_exchange_2010
        ):
            return self._to_site(server.site)
        if server.smtp is None:
            return RoutingFailure(f"451 4.4.0 Unable to route: {server.name} has no SMTP address",
                                  unreachable=True)
        delivery_type = (
            "SmtpRelayToTiRg" if server.has_role("legacy") and server.is_exchange
            else "SmtpRelayWithinAdSite" if server.site == self.server.site
            else "SmtpRelayToServers"
        )
        return NextHop(server.fqdn, SMTP, (_target(server),), delivery_type,
                       shadow_capable=server.supports_shadow_redundancy)

    def _by_send_connector(self, domain: str) -> NextHop | RoutingFailure:
        route = self._by_domain.get(domain)
        if route is None:
            if len(self._by_domain) >= 10_000:  # bounded: a flood of random domains
                self._by_domain.clear()
            route = self._by_domain[domain] = self._connector_route(domain)
        return route

    def _connector_route(self, domain: str) -> NextHop | RoutingFailure:
        connector = self._best_connector(domain)
        if connector is None:
            return RoutingFailure(
                "550 5.4.4 ROUTING.NoConnectorForAddressType; unable to route", unreachable=True
            )
        if self.server.name in connector.source_servers:
            return self._to_smart_hosts(connector, domain)
        sources = [self.organization.server(n) for n in connector.source_servers]
        same_site = [s for s in sources if s.site is not None and s.site == self.server.site]
        if same_site:
            targets = tuple(_target(s) for s in same_site if s.smtp is not None)
            return NextHop(connector.name, SMTP, targets, "SmtpRelayWithinAdSiteToEdge"
                           if any(s.has_role("edge") for s in same_site)
                           else "SmtpRelayWithinAdSite")
        by_site = sorted(
            (s for s in sources if s.site is not None),
            key=lambda s: self._site_cost(s.site),
        )
        if by_site:
            assert by_site[0].site is not None
            return self._to_site(by_site[0].site)
        edges = tuple(_target(s) for s in sources if s.smtp is not None)
        if not edges:
            return RoutingFailure("451 4.4.0 Unable to route: no source server", unreachable=True)
        return NextHop(connector.name, SMTP, edges, "SmtpRelayToEdge")

    def _to_smart_hosts(self, connector: SendConnector, domain: str) -> NextHop | RoutingFailure:
        org = self.organization
        targets: list[Target] = []
        for host in connector.smart_hosts:
            if ":" in host:
                from exchange_emu.directory import parse_address

                targets.append(Target(parse_address(host), None, host.rpartition(":")[0]))
            else:
                server = org.server(host)
                if server.smtp is not None:
                    targets.append(_target(server))
        if not connector.smart_hosts:
            # No smart host: the lab's stand-in for DNS MX is the server holding the domain.
            holder = org.server_for_domain(domain)
            if holder is not None and holder.smtp is not None:
                targets.append(_target(holder))
        if not targets:
            return RoutingFailure(f"451 4.4.0 DNS query failed for {domain}", unreachable=True)
        name = connector.name if connector.smart_hosts else domain
        shadow = any(
            t.server is None or org.server(t.server).supports_shadow_redundancy for t in targets
        )
        return NextHop(name, SMTP, tuple(targets),
                       "SmartHostConnectorDelivery" if connector.smart_hosts
                       else "DnsConnectorDelivery", shadow_capable=shadow,
                       require_tls=connector.require_tls)

    def _best_connector(self, domain: str) -> SendConnector | None:
        candidates = [c for c in self.organization.send_connectors if c.matches(domain)]
        if not candidates:
            return None
        # Most specific address space first, then lowest cost; prefer a connector
        # this server is a source of when they tie.
        return min(
            candidates,
            key=lambda c: (-c.match_length(domain), c.cost,
                           self.server.name not in c.source_servers),
        )

    def _site_cost(self, site: str | None) -> int:
        if site is None or self.server.site is None:
            return 1 << 30
        if site == self.server.site:
            return 0
        cost = self.organization.site_link_cost(self.server.site, site)
        return cost if cost is not None else 1 << 29


def _target(server: Server) -> Target:
    assert server.smtp is not None
    return Target(server.smtp, server.name, server.fqdn)
