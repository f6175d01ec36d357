"""A small organization with a lab CA on disk, for the TLS tests."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from exchange_emu.directory import Organization, load_organization
from exchange_emu.lab.org_builder import (
    MailboxDatabaseSpec,
    OrgSpec,
    RecipientSpec,
    SendConnectorSpec,
    ServerSpec,
    write_org,
)
from exchange_emu.security.authority import ensure_certificates, issue_certificate, write_pair
from exchange_emu.security.credentials import (
    ServerCredentials,
    load_credentials,
    read_certificates,
    read_private_key,
)


@dataclass
class CertLab:
    organization: Organization
    config: Path

    def credentials(self, name: str) -> ServerCredentials:
        found = load_credentials(self.organization, self.organization.server(name))
        assert found is not None
        return found


def tls_org(directory: Path, ports: dict[str, int] | None = None,
            trust_networks: tuple[str, ...] = (), client_port: int | None = None,
            internet_require_tls: bool = False) -> CertLab:
    """HUB01, HUB02, HUB03 (hubs of Site-A), MBX01 (alice, password P@ssw0rd) and INTERNET01
    (fabrikam.test); HUB02 sends Internet mail to INTERNET01. Certificates made on disk;
    the lab trust rule is off unless ``trust_networks`` says otherwise."""
    ports = ports or {}
    spec = OrgSpec(
        [ServerSpec("MBX01", "mailbox", ports.get("MBX01", 1)),
         ServerSpec("HUB01", "hub", ports.get("HUB01", 2), client_port=client_port),
         ServerSpec("HUB02", "hub", ports.get("HUB02", 3)),
         ServerSpec("HUB03", "hub", ports.get("HUB03", 4)),
         ServerSpec("INTERNET01", "legacy", ports.get("INTERNET01", 5), site=None,
                    version="non-exchange", local_domains=("fabrikam.test",))],
        send_connectors=[SendConnectorSpec("Internet", ("HUB02",), ("INTERNET01",),
                                           require_tls=internet_require_tls)],
        org_server_networks=trust_networks,
        mailbox_databases=[MailboxDatabaseSpec("DB01", "MBX01")],
        recipients=[RecipientSpec("alice@contoso.test", "Alice", database="DB01",
                                  password="P@ssw0rd"),
                    RecipientSpec("bob@contoso.test", "Bob", database="DB01")],
        transport={"ShadowHeartbeatTimeoutInterval": "00:00:01",
                   "QueueGlitchRetryInterval": "00:00:01",
                   "TransientFailureRetryInterval": "00:00:01",
                   "MessageRetryInterval": "00:00:01"},
    )
    directory.mkdir(parents=True, exist_ok=True)
    config = write_org(directory / "tls.toml", spec)
    organization = load_organization(config)
    ensure_certificates(organization)
    return CertLab(organization, config)


def reissue(lab: CertLab, name: str, *, fqdn: str | None = None, expired: bool = False,
            authority_of: CertLab | None = None) -> Path:
    """Replace server ``name``'s certificate: another name, expired, or from another CA."""
    issuer = authority_of or lab
    tls = issuer.organization.tls
    assert tls is not None and tls.ca_key is not None
    ca = read_certificates(tls.ca_certificate, "CA")[0]
    key = read_private_key(tls.ca_key, "CA key")
    server = lab.organization.server(name)
    now = datetime.datetime.now(datetime.UTC)
    window = ({"not_before": now - datetime.timedelta(days=30),
               "not_after": now - datetime.timedelta(days=1)} if expired else {})
    issued = issue_certificate(ca, key, fqdn or server.fqdn, **window)  # type: ignore[arg-type]
    assert server.certificate is not None and server.certificate_key is not None
    write_pair(issued, server.certificate, server.certificate_key)
    return server.certificate


def unchecked_credentials(lab: CertLab, name: str) -> ServerCredentials:
    """A server's credentials as on disk, without the start-up checks (a broken
    certificate, to see what its peers make of it)."""
    server = lab.organization.server(name)
    tls = lab.organization.tls
    assert tls is not None and server.certificate is not None
    assert server.certificate_key is not None
    return ServerCredentials(lab.organization, server,
                             read_certificates(tls.ca_certificate, "CA")[0],
                             tuple(read_certificates(server.certificate, "cert")),
                             read_private_key(server.certificate_key, "key"))
