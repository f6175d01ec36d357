"""A server's TLS credentials: the organization's CA, its own certificate and key.

Loading checks what would otherwise fail later and obscurely: missing or unreadable files,
a key that does not match its certificate, a certificate not naming the server's FQDN or
not issued by the organization's CA. Each problem is one line (CertificateError).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from exchange_emu.directory import Organization, Server

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class CertificateError(Exception):
    """A certificate or key file that cannot be used, as one line that says what to do."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(
            f"{what} {path} does not exist (run: exchange-emu certs init)") from None
    except OSError as e:
        raise CertificateError(f"{what} {path} cannot be read: {e.strerror or e}") from None


def read_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a server's: its own first, then intermediates)."""
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise CertificateError(f"{what} {path} holds no PEM certificate")
    return certificates


def read_private_key(path: Path, what: str) -> PrivateKey:
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"{what} {path} is not an unencrypted PEM private key "
                               f"({str(e).splitlines()[0] if str(e) else 'unreadable'})"
                               ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise CertificateError(f"{what} {path}: unsupported key type {type(key).__name__}")
    return key


def dns_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its SAN entries, else its subject CN."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in
                 certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower().rstrip(".") for n in names]


def issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    """Whether ``authority`` signed ``certificate``."""
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class PeerIdentity:
    """What a peer's certificate proved: an Exchange server of the organization, or why not."""

    server: str | None
    reason: str


@dataclass(frozen=True)
class ServerCredentials:
    """One server's view of the organization's PKI."""

    organization: Organization
    server: Server
    authority: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """The server's certificate first, then any intermediates (bring your own)."""
    key: PrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def pem_chain(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def pem_key(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def pem_authority(self) -> bytes:
        return self.authority.public_bytes(serialization.Encoding.PEM)

    def identify(self, der: bytes, now: datetime.datetime | None = None) -> PeerIdentity:
        """Map a peer's certificate (DER) to an Exchange server of the organization: it must
        be issued by the organization's CA, valid now, and name a server's FQDN."""
        try:
            peer = x509.load_der_x509_certificate(der)
        except ValueError:
            return PeerIdentity(None, "unreadable certificate")
        names = dns_names(peer)
        shown = names[0] if names else peer.subject.rfc4514_string()
        if not issued_by(peer, self.authority):
            return PeerIdentity(None, f"certificate of {shown} not issued by the organization CA")
        moment = now or datetime.datetime.now(datetime.UTC)
        if not peer.not_valid_before_utc <= moment <= peer.not_valid_after_utc:
            return PeerIdentity(None, f"certificate of {shown} is expired or not yet valid")
        for name in names:
            server = self.organization.server_by_fqdn(name)
            if server is not None and server.is_exchange:
                return PeerIdentity(server.name, f"certificate of {name} ({server.name})")
        return PeerIdentity(None, f"certificate of {shown} names no Exchange server of "
                                  f"the organization")


def load_credentials(organization: Organization, server: Server,
                     certificate: Path | None = None, key_file: Path | None = None,
                     fqdn: str | None = None) -> ServerCredentials | None:
    """The server's credentials; None when the organization has no certificates at all
    (no ``[tls]`` table and no generated CA: TLS stays off, as before ``certs init``).
    ``certificate``/``key_file``/``fqdn``: a receive connector's own certificate instead.
    Raises CertificateError for anything present but unusable."""
    tls = organization.tls
    if tls is None:
        return None
    if not tls.configured and not server.certificate_configured and certificate is None and (
            not tls.ca_certificate.exists()):
        return None
    certificate = certificate or server.certificate
    key_file = key_file or server.certificate_key
    name = fqdn or server.fqdn
    assert certificate is not None and key_file is not None
    authority = read_certificates(tls.ca_certificate, "CA certificate")[0]
    chain = read_certificates(certificate, f"{server.name}: certificate")
    key = read_private_key(key_file, f"{server.name}: key")
    leaf = chain[0]
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise CertificateError(f"{server.name}: key {key_file} does not match "
                               f"certificate {certificate}")
    if name not in dns_names(leaf):
        raise CertificateError(f"{server.name}: certificate {certificate} is for "
                               f"{', '.join(dns_names(leaf)) or 'no DNS name'}, not {name}")
    signer = chain[1] if len(chain) > 1 else authority
    if not issued_by(leaf, signer) or (len(chain) > 1 and not issued_by(chain[-1], authority)):
        raise CertificateError(f"{server.name}: certificate {certificate} is not issued "
                               f"by the organization CA {tls.ca_certificate}")
    return ServerCredentials(organization, server, authority, tuple(chain), key)
