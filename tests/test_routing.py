"""Routing by AD site and send connector (the categorizer's next hops)."""

from __future__ import annotations

from pathlib import Path

from org_files import mixed_role_org

from exchange_emu.directory import load_organization
from exchange_emu.transport.routing import MAILBOX, SMTP, NextHop, Router, RoutingFailure

LAB = Path(__file__).resolve().parent.parent / "etc" / "lab.toml"


def route(server: str, address: str) -> NextHop | RoutingFailure:
    organization = load_organization(LAB)
    return Router(organization, organization.server(server)).route(address)


def test_mailbox_in_this_site_is_delivered_by_the_store_driver():
    hop = route("HUB01", "alice@contoso.test")
    assert isinstance(hop, NextHop)
    assert (hop.name, hop.delivery, [t.server for t in hop.targets]) == ("DB01", MAILBOX,
                                                                          ["MBX01"])


def test_mailbox_in_another_site_goes_to_that_sites_hubs():
    hop = route("HUB01", "carol@contoso.test")
    assert (hop.name, hop.delivery, [t.server for t in hop.targets]) == ("Site-B", SMTP,
                                                                          ["HUB03"])
    hop = route("HUB03", "alice@contoso.test")
    assert [t.server for t in hop.targets] == ["HUB01", "HUB02"]


def test_legacy_mailbox_goes_to_the_legacy_server_without_shadow():
    hop = route("HUB01", "dave@legacy.contoso.test")
    assert [t.server for t in hop.targets] == ["LEGACY01"] and not hop.shadow_capable


def test_internet_mail_leaves_through_the_edge_and_the_edge_smart_host():
    assert [t.server for t in route("HUB01", "erin@fabrikam.test").targets] == ["EDGE01"]
    assert [t.server for t in route("EDGE01", "erin@fabrikam.test").targets] == ["INTERNET01"]
    assert [t.server for t in route("EDGE01", "alice@contoso.test").targets] == [
        "HUB01", "HUB02"]


def test_unknown_recipient_of_an_authoritative_domain_fails():
    failure = route("HUB01", "nobody@contoso.test")
    assert isinstance(failure, RoutingFailure) and not failure.unreachable
    assert failure.reply.startswith("550 5.1.1")


def test_hub_and_mailbox_on_one_server_delivers_through_another_hub(tmp_path):
    config, _ = mixed_role_org(tmp_path)
    organization = load_organization(config)
    hop = Router(organization, organization.server("EX01")).route("bob@contoso.test")
    assert hop.delivery == SMTP and [t.server for t in hop.targets] == ["HUB02"]
    hop = Router(organization, organization.server("HUB02")).route("bob@contoso.test")
    assert hop.delivery == MAILBOX and [t.server for t in hop.targets] == ["EX01"]
    (tmp_path / "alone").mkdir()
    alone, _ = mixed_role_org(tmp_path / "alone", with_hub02=False)
    organization = load_organization(alone)
    hop = Router(organization, organization.server("EX01")).route("bob@contoso.test")
    assert hop.delivery == MAILBOX and [t.server for t in hop.targets] == ["EX01"]
