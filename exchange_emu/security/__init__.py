"""Certificates and TLS: the organization's certificate authority, server certificates,
STARTTLS contexts, and how a peer proves it is an Exchange server of the organization.

Exchange 2010 servers of one organization authenticate each other (Kerberos inside AD, the
edge subscription's certificates at the perimeter); the emulator uses one lab certificate
authority per organization and a certificate per server instead (docs/security.md).
"""

from exchange_emu.security.authority import ensure_certificates, issue_certificate
from exchange_emu.security.credentials import CertificateError, ServerCredentials, load_credentials

__all__ = [
    "CertificateError",
    "ServerCredentials",
    "ensure_certificates",
    "issue_certificate",
    "load_credentials",
]
