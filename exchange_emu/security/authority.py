"""The lab certificate authority: one CA per organization, one certificate per server.

``exchange-emu certs init`` (and ``exchange-emu lab`` when files are missing) makes the CA
and a certificate for every server of the organization file, whose subject and DNS name are
the server's FQDN; each is usable as TLS server and as TLS client certificate. Files that
already exist are never overwritten, and certificates the file names itself (bring your own)
are never generated.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange_emu.directory import Organization
from exchange_emu.security.credentials import (
    CertificateError,
    PrivateKey,
    read_certificates,
    read_private_key,
)

CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM bytes."""

    certificate: bytes
    key: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_authority(organization_name: str) -> Issued:
    """A self-signed root CA named after the organization."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_name),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization_name} Exchange Lab CA"),
    ])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_certificate(ca_certificate: x509.Certificate, ca_key: PrivateKey, fqdn: str, *,
                      organization_name: str = "", not_before: datetime.datetime | None = None,
                      not_after: datetime.datetime | None = None) -> Issued:
    """A server certificate for ``fqdn`` (subject CN and DNS name), server and client use."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - datetime.timedelta(hours=1)
    end = not_after or start + SERVER_LIFETIME
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]
    if organization_name:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_name))
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name(attributes))
        .issuer_name(ca_certificate.subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_certificate.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_pair(issued: Issued, certificate: Path, key: Path) -> None:
    """Write a certificate (world-readable) and its key (owner only)."""
    certificate.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(issued.key)
    certificate.write_bytes(issued.certificate)


def ensure_certificates(organization: Organization) -> list[str]:
    """Make what is missing: the CA, then a certificate for each server without one.

    Returns one line per file pair written. Raises CertificateError (one line) when a
    certificate is missing that the emulator may not make: a bring-your-own server
    certificate, or a server certificate when the CA's key is not available.
    """
    tls = organization.tls
    if tls is None:
        return []
    made: list[str] = []
    ca_missing = not tls.ca_certificate.exists()
    if ca_missing:
        if tls.ca_key is None:
            raise CertificateError(f"CA certificate {tls.ca_certificate} does not exist "
                                   "(and [tls] names no ca_key to make one with)")
        if tls.ca_key.exists():
            raise CertificateError(f"CA key {tls.ca_key} exists but its certificate "
                                   f"{tls.ca_certificate} does not: restore it or delete both")
        write_pair(create_authority(organization.name), tls.ca_certificate, tls.ca_key)
        made.append(f"CA: {tls.ca_certificate} (key {tls.ca_key})")
    ca_certificate = read_certificates(tls.ca_certificate, "CA certificate")[0]
    ca_key: PrivateKey | None = None
    for server in organization.servers.values():
        assert server.certificate is not None and server.certificate_key is not None
        have_cert, have_key = server.certificate.exists(), server.certificate_key.exists()
        if have_cert and have_key:
            continue
        if server.certificate_configured or have_cert != have_key:
            missing = server.certificate if not have_cert else server.certificate_key
            raise CertificateError(f"{server.name}: {missing} does not exist")
        if tls.ca_key is None:
            raise CertificateError(f"{server.name}: {server.certificate} does not exist and "
                                   "[tls] names no ca_key to issue it with")
        if ca_key is None:
            ca_key = read_private_key(tls.ca_key, "CA key")
        issued = issue_certificate(ca_certificate, ca_key, server.fqdn,
                                   organization_name=organization.name)
        write_pair(issued, server.certificate, server.certificate_key)
        made.append(f"{server.name}: {server.certificate} ({server.fqdn})")
    return made
