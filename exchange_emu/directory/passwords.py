"""Mailbox passwords in the organization file: PBKDF2-SHA256, never kept in clear.

``password_hash = "pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>"`` is what a
real organization file holds (``exchange-emu hash-password`` makes one);
``password = "…"`` is a lab convenience, hashed when the file is loaded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 100_000


def hash_password(password: str, *, iterations: int = ITERATIONS,
                  salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((ALGORITHM, str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def is_password_hash(text: str) -> bool:
    parts = text.split("$")
    return len(parts) == 4 and parts[0] == ALGORITHM and parts[1].isdigit()


def verify_password(password_hash: str, password: str) -> bool:
    """Does ``password`` match ``password_hash``? (constant-time comparison)"""
    if not is_password_hash(password_hash):
        return False
    _, iterations, salt, expected = password_hash.split("$")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    return hmac.compare_digest(digest, base64.b64decode(expected))
