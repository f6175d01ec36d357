"""The lab certificate authority: what ``certs init`` makes, what it refuses to make, and
the one-line errors for certificate files that cannot be used."""

from __future__ import annotations

import datetime
import shutil
import stat
from pathlib import Path

import pytest
from tls_fixtures import reissue, tls_org, unchecked_credentials

from exchange_emu.cli import main
from exchange_emu.directory import OrganizationFileError, load_organization
from exchange_emu.lab.org_builder import OrgSpec, ServerSpec, write_org
from exchange_emu.lab.processes import ServerProcess, free_ports
from exchange_emu.security import CertificateError, ensure_certificates, load_credentials
from exchange_emu.security.authority import issue_certificate, write_pair
from exchange_emu.security.credentials import read_certificates, read_private_key


def test_init_makes_a_ca_and_one_certificate_per_server_once(tmp_path):
    lab = tls_org(tmp_path)  # runs ensure_certificates
    org = lab.organization
    certs = org.tls.directory
    assert certs == tmp_path / "var" / "certs"
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        ["ca.pem", "ca.key"] + [f"{n}.{e}" for n in org.servers for e in ("pem", "key")])
    assert stat.S_IMODE((certs / "HUB01.key").stat().st_mode) == 0o600
    before = (certs / "HUB01.pem").read_bytes()
    assert ensure_certificates(org) == []
    assert (certs / "HUB01.pem").read_bytes() == before
    hub01 = lab.credentials("HUB01")
    assert hub01.certificate.subject.rfc4514_string() == "CN=hub01.contoso.test,O=Contoso"


def test_identify_maps_certificates_to_exchange_servers_only(tmp_path):
    lab = tls_org(tmp_path)
    hub02 = lab.credentials("HUB02")

    def der(name: str) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return unchecked_credentials(lab, name).certificate.public_bytes(Encoding.DER)

    assert hub02.identify(der("HUB01")).server == "HUB01"
    # INTERNET01 has an organization certificate but is not an Exchange server.
    internet = hub02.identify(der("INTERNET01"))
    assert internet.server is None and "names no Exchange server" in internet.reason
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3000)
    assert "expired" in hub02.identify(der("HUB01"), now=later).reason
    reissue(lab, "HUB03", authority_of=tls_org(tmp_path / "other"))
    foreign = hub02.identify(der("HUB03"))
    assert foreign.server is None and "not issued by the organization CA" in foreign.reason


def test_no_certificates_means_no_tls(tmp_path):
    """A lab whose certificates were never made runs in clear (as before certs init)."""
    spec = OrgSpec([ServerSpec("HUB01", "hub", 2525)])
    org = load_organization(write_org(tmp_path / "org.toml", spec))
    assert load_credentials(org, org.server("HUB01")) is None


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("swap-key", "HUB01: key {dir}/HUB01.key does not match certificate {dir}/HUB01.pem"),
        ("other-name", "HUB01: certificate {dir}/HUB01.pem is for hub02.contoso.test, "
                       "not hub01.contoso.test"),
        ("other-ca", "HUB01: certificate {dir}/HUB01.pem is not issued by the organization "
                     "CA {dir}/ca.pem"),
        ("garbage", "HUB01: certificate {dir}/HUB01.pem holds no PEM certificate"),
        ("missing", "HUB01: certificate {dir}/HUB01.pem does not exist "
                    "(run: exchange-emu certs init)"),
        ("directory", "HUB01: certificate {dir}/HUB01.pem cannot be read: Is a directory"),
        ("bad-key", "HUB01: key {dir}/HUB01.key is not an unencrypted PEM private key"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path, damage, expected):
    lab = tls_org(tmp_path)
    certs = lab.organization.tls.directory
    pem, key = certs / "HUB01.pem", certs / "HUB01.key"
    if damage == "swap-key":
        shutil.copy(certs / "HUB02.key", key)
    elif damage == "other-name":
        shutil.copy(certs / "HUB02.pem", pem)
        shutil.copy(certs / "HUB02.key", key)
    elif damage == "other-ca":
        reissue(lab, "HUB01", authority_of=tls_org(tmp_path / "other"))
    elif damage == "garbage":
        pem.write_text("not a certificate\n")
    elif damage == "missing":
        pem.unlink()
    elif damage == "directory":
        pem.unlink()
        pem.mkdir()
    elif damage == "bad-key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CertificateError) as caught:
        load_credentials(lab.organization, lab.organization.server("HUB01"))
    message = str(caught.value)
    assert message.startswith(expected.format(dir=certs))
    assert "\n" not in message


def _byo_org(tmp_path: Path, certificate: Path, key: Path) -> Path:
    text = (f'[organization]\nname = "Contoso"\n[lab]\ndata_root = "{tmp_path}/var"\n'
            f'[tls]\nca_certificate = "{tmp_path}/byo/ca.pem"\n'
            '[[sites]]\nname = "Site-A"\n'
            '[[accepted_domains]]\ndomain = "contoso.test"\ntype = "Authoritative"\n'
            '[[servers]]\nname = "HUB01"\nfqdn = "hub01.contoso.test"\nroles = ["hub"]\n'
            f'site = "Site-A"\nsmtp = "127.0.0.1:2525"\ncertificate = "{certificate}"\n'
            f'key = "{key}"\n')
    path = tmp_path / "byo.toml"
    path.write_text(text)
    return path


def test_bring_your_own_certificates_are_used_and_never_generated(tmp_path):
    made = tls_org(tmp_path / "made")
    byo = tmp_path / "byo"
    byo.mkdir()
    certs = made.organization.tls.directory
    for name in ("ca.pem", "HUB01.pem", "HUB01.key"):
        shutil.copy(certs / name, byo / name)
    org = load_organization(_byo_org(tmp_path, byo / "HUB01.pem", byo / "HUB01.key"))
    assert org.tls.ca_key is None  # a CA of one's own: its key is not ours
    assert ensure_certificates(org) == []
    credentials = load_credentials(org, org.server("HUB01"))
    assert credentials is not None and credentials.server.certificate == byo / "HUB01.pem"
    missing = load_organization(_byo_org(tmp_path, byo / "nope.pem", byo / "HUB01.key"))
    with pytest.raises(CertificateError, match=r"^HUB01: .*nope.pem does not exist$"):
        ensure_certificates(missing)


def test_certificate_without_key_is_a_file_error(tmp_path):
    text = _byo_org(tmp_path, tmp_path / "a.pem", tmp_path / "a.key").read_text()
    (tmp_path / "half.toml").write_text(text.replace(f'key = "{tmp_path}/a.key"\n', ""))
    with pytest.raises(OrganizationFileError, match=r"servers\[0\]\.key: required key is "
                                                    r"missing \(certificate and key go"):
        load_organization(tmp_path / "half.toml")


def test_certs_cli_init_then_show(tmp_path, capsys):
    spec = OrgSpec([ServerSpec("HUB01", "hub", 2525), ServerSpec("HUB02", "hub", 2526)])
    config = write_org(tmp_path / "org.toml", spec)
    assert main(["certs", "init", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"created CA: {tmp_path}/var/certs/ca.pem" in out
    assert "created HUB02: " in out and "(hub02.contoso.test)" in out
    assert main(["certs", "init", "--config", str(config)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    shutil.copy(tmp_path / "var" / "certs" / "HUB02.key", tmp_path / "var" / "certs" /
                "HUB01.key")
    with pytest.raises(SystemExit) as caught:
        main(["certs", "init", "--config", str(config)])
    assert str(caught.value).startswith("exchange-emu: error: HUB01: key ")
    assert main(["certs", "show", "--config", str(config)]) == 1
    assert "HUB02: " in capsys.readouterr().out


@pytest.mark.integration
def test_server_with_a_broken_certificate_exits_with_one_line(tmp_path):
    port = free_ports(1)[0]
    lab = tls_org(tmp_path, {"HUB01": port})
    certs = lab.organization.tls.directory
    shutil.copy(certs / "HUB02.key", certs / "HUB01.key")
    process = ServerProcess("hub", lab.config, "HUB01", tmp_path)
    with pytest.raises(RuntimeError) as caught:
        process.start(timeout=20)
    output = str(caught.value)
    assert f"exchange-hub: error: HUB01: key {certs}/HUB01.key does not match" in output
    assert "Traceback" not in output


def test_tls_table_and_require_tls_in_the_organization_file(tmp_path):
    spec = OrgSpec([ServerSpec("HUB01", "hub", 2525), ServerSpec("HUB02", "hub", 2526)])
    text = write_org(tmp_path / "org.toml", spec).read_text()
    text += (f'\n[tls]\ndirectory = "{tmp_path}/pki"\n'
             '[[send_connectors]]\nname = "Internet"\naddress_spaces = ["*"]\n'
             'source_servers = ["HUB01"]\nsmart_hosts = ["HUB02"]\nrequire_tls = true\n')
    (tmp_path / "org.toml").write_text(text)
    org = load_organization(tmp_path / "org.toml")
    assert org.tls.configured and org.tls.ca_certificate == tmp_path / "pki" / "ca.pem"
    assert org.server("HUB02").certificate == tmp_path / "pki" / "HUB02.pem"
    assert org.send_connectors[0].require_tls
    # A [tls] table promises certificates: a missing CA is an error, not plain text.
    with pytest.raises(CertificateError, match=r"ca\.pem does not exist"):
        load_credentials(org, org.server("HUB01"))
    (tmp_path / "org.toml").write_text(text.replace("[tls]\n", "[tls]\nca_file = 1\n"))
    with pytest.raises(OrganizationFileError, match="ca_file"):
        load_organization(tmp_path / "org.toml")


def _transport_server(config: Path):  # type: ignore[no-untyped-def]
    from twisted.internet import reactor

    from exchange_emu.transport.server import TransportServer

    org = load_organization(config)
    return TransportServer(org, org.server("HUB01"), reactor)


def _connector_settings(server) -> dict:  # type: ignore[no-untyped-def]
    from exchange_emu.listening import Listener

    return {child._inner.factory.settings.connector_name: child._inner.factory.settings
            for child in server if isinstance(child, Listener)}


def test_receive_connector_with_its_own_certificate(tmp_path):
    """tls_certificate on a connector: that certificate (for the connector's FQDN) is the
    one STARTTLS offers there; the server's own is used on its other connectors."""
    lab = tls_org(tmp_path)
    tls = lab.organization.tls
    ca = read_certificates(tls.ca_certificate, "CA")[0]
    issued = issue_certificate(ca, read_private_key(tls.ca_key, "CA key"), "smtp.contoso.test")
    write_pair(issued, tmp_path / "smtp.pem", tmp_path / "smtp.key")
    text = lab.config.read_text().replace(
        'smtp = "127.0.0.1:2"\nsite = "Site-A"\n',
        'smtp = "127.0.0.1:2"\nsite = "Site-A"\n'
        '[[servers.receive_connectors]]\nname = "Default HUB01"\nbind = "127.0.0.1:2"\n'
        '[[servers.receive_connectors]]\nname = "Secure HUB01"\nbind = "127.0.0.1:7"\n'
        'fqdn = "smtp.contoso.test"\nrequire_tls = true\n'
        f'tls_certificate = "{tmp_path}/smtp.pem"\ntls_private_key = "{tmp_path}/smtp.key"\n')
    assert "Secure HUB01" in text
    lab.config.write_text(text)
    settings = _connector_settings(_transport_server(lab.config))

    def offered(name: str) -> str:
        context = settings[name].tls.getContext()
        from OpenSSL import SSL

        connection = SSL.Connection(context, None)
        return connection.get_certificate().to_cryptography().subject.rfc4514_string()

    assert offered("Secure HUB01") == "CN=smtp.contoso.test"
    assert offered("Default HUB01") == "CN=hub01.contoso.test,O=Contoso"
    assert settings["Secure HUB01"].require_tls
    # The connector's certificate must name the connector's FQDN.
    lab.config.write_text(text.replace('fqdn = "smtp.contoso.test"\n', ""))
    with pytest.raises(CertificateError, match=r"is for smtp\.contoso\.test, not hub01"):
        _transport_server(lab.config)


def test_require_tls_connector_needs_a_certificate(tmp_path):
    spec = OrgSpec([ServerSpec("HUB01", "hub", 2525)])
    config = write_org(tmp_path / "org.toml", spec)
    text = config.read_text() + (
        '[[servers.receive_connectors]]\nname = "Default HUB01"\nbind = "127.0.0.1:2525"\n'
        "require_tls = true\n")
    config.write_text(text)
    with pytest.raises(CertificateError, match="'Default HUB01' has require_tls but the "
                                               "server has no certificate"):
        _transport_server(config)
