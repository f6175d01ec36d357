"""TLS contexts for STARTTLS, built from a server's credentials (Twisted/pyOpenSSL).

Receive side: the server's certificate; a client certificate is *requested* (so an Exchange
server of the organization can prove itself) but never required, and a foreign or broken one
does not fail the handshake — the receive policy decides what it proves
(``ServerCredentials.identify``). Send side: to a peer whose name must be verified, the
organization CA is the trust root and ``service_identity`` checks the name
(``optionsForClientTLS``); opportunistic TLS to the Internet encrypts without verifying.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from exchange_emu.directory import Server
from exchange_emu.security.credentials import ServerCredentials, dns_names


def _private_certificate(credentials: ServerCredentials) -> ssl.PrivateCertificate:
    return ssl.PrivateCertificate.loadPEM(credentials.pem_chain() + credentials.pem_key())


def _extra_chain(credentials: ServerCredentials) -> list[Any]:
    return [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)).original
            for c in credentials.chain[1:]]


class _RequestClientCertificate(ssl.CertificateOptions):
    """Server options that ask for a client certificate and accept whatever comes: the
    certificate is judged after the handshake, so a peer with a foreign certificate is
    treated as anonymous instead of being cut off."""

    def __init__(self, authority_pem: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._authority = ssl.Certificate.loadPEM(authority_pem)

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        context = super()._makeContext(skipCiphers)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        context.add_client_ca(self._authority.original)  # hint: the org CA's name
        return context


def server_options(credentials: ServerCredentials) -> ssl.CertificateOptions:
    """The receive connectors' STARTTLS / X-ANONYMOUSTLS context."""
    own = _private_certificate(credentials)
    return _RequestClientCertificate(
        credentials.pem_authority(), privateKey=own.privateKey.original,
        certificate=own.original, extraCertChain=_extra_chain(credentials))


def client_options(credentials: ServerCredentials, hostname: str | None) -> Any:
    """The send side's STARTTLS context: with ``hostname``, the peer's certificate must be
    issued by the organization CA and name ``hostname``; without, encryption only. Either
    way this server presents its own certificate (how it proves itself as an org server)."""
    own = _private_certificate(credentials)
    if hostname is None:
        return ssl.CertificateOptions(privateKey=own.privateKey.original,
                                      certificate=own.original,
                                      extraCertChain=_extra_chain(credentials))
    authority = ssl.Certificate.loadPEM(credentials.pem_authority())
    return VerifyingClientTLS(
        hostname, ssl.optionsForClientTLS(hostname, trustRoot=authority, clientCertificate=own))


# OpenSSL's X509_V_ERR_* codes a lab meets, in words for a queue's LastError.
_VERIFY_ERRORS = {
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "certificate not issued by the organization CA (unknown issuer)",
    21: "certificate not issued by the organization CA (unknown issuer)",
    24: "invalid CA certificate",
    26: "certificate not meant for this purpose",
}


@implementer(IOpenSSLClientConnectionCreator)
class VerifyingClientTLS:
    """``optionsForClientTLS`` (trust root: the organization CA; name check:
    ``service_identity``) that also remembers *why* a peer's certificate was refused
    (``problem``), so a queue's LastError can say more than "verify failed"."""

    def __init__(self, hostname: str, inner: Any) -> None:
        self.hostname = hostname
        self.inner = inner
        self.problem: str | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self.inner.clientConnectionForTLS(tlsProtocol)

        def verify(conn: SSL.Connection, certificate: Any, errno: int, depth: int,
                   ok: int) -> bool:
            cert = certificate.to_cryptography()
            if not ok:
                if self.problem is None:
                    reason = _VERIFY_ERRORS.get(errno, f"X.509 error {errno}")
                    self.problem = f"{reason} ({cert.subject.rfc4514_string()})"
                return False
            if depth != 0:
                return True
            problem = _name_problem(cert, self.hostname)
            if problem is None:
                return True
            self.problem = problem
            tlsProtocol.failVerification(Failure(CertificateNameMismatch(problem)))
            return False

        # Replaces the creator's own callback, whose checks ``verify`` makes itself.
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


class CertificateNameMismatch(Exception):
    """The peer's certificate does not name the host this server meant to reach."""


def _name_problem(certificate: Any, hostname: str) -> str | None:
    """service_identity's verdict on ``certificate`` for ``hostname`` (None: it matches)."""
    try:
        ipaddress.ip_address(hostname)
        is_address = True
    except ValueError:
        is_address = False
    try:
        if is_address:
            verify_certificate_ip_address(certificate, hostname)
        else:
            verify_certificate_hostname(certificate, hostname)
    except (VerificationError, CertificateError) as e:
        names = ", ".join(dns_names(certificate)) or "no name"
        return f"certificate is for {names}, not {hostname} ({type(e).__name__})"
    return None


class ClientContexts:
    """One server's client TLS contexts, built once per peer name and reused: loading the
    certificate and building an OpenSSL context costs milliseconds per session."""

    def __init__(self, credentials: ServerCredentials) -> None:
        self.credentials = credentials
        self._verifying: dict[str, Any] = {}
        self._opportunistic: Any = None

    def verifying(self, hostname: str) -> VerifyingClientTLS:
        """Verify the peer against the organization CA and ``hostname`` (a fresh
        ``problem`` per session, a shared OpenSSL context)."""
        inner = self._verifying.get(hostname)
        if inner is None:
            inner = self._verifying[hostname] = client_options(self.credentials,
                                                               hostname).inner
        return VerifyingClientTLS(hostname, inner)

    def opportunistic(self) -> Any:
        if self._opportunistic is None:
            self._opportunistic = client_options(self.credentials, None)
        return self._opportunistic


def send_tls(contexts: ClientContexts | None, server: Server | None, hostname: str,
             require_tls: bool) -> tuple[Any, bool]:
    """The STARTTLS policy of one outbound session: (client context or None, required).

    - The send connector requires TLS (RequireTLS): the peer's certificate must chain to
      the organization CA and name ``hostname``; without TLS nothing is sent.
    - An Exchange server of the organization: the same verification when it offers
      STARTTLS (and this server proves itself with its own certificate); plain text to one
      that offers no STARTTLS (no certificate, or an older server).
    - Anyone else (the Internet): opportunistic, encryption without verification.
    """
    if contexts is None:
        return None, require_tls
    if require_tls:
        return contexts.verifying(hostname), True
    if server is not None and server.is_exchange:
        return contexts.verifying(server.fqdn), False
    return contexts.opportunistic(), False
