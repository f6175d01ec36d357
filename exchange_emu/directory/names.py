"""Domain names, SMTP addresses and send-connector address spaces."""

from __future__ import annotations

import re

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCAL_PART = re.compile(r"[^\s@<>()\[\],;:\"\\]+")


def normalize_domain(text: str) -> str:
    """Return ``text`` as a lower-case DNS domain name, or raise ValueError."""
    domain = text.strip().lower().rstrip(".") if isinstance(text, str) else ""
    if (
        not domain
        or len(domain) > 253
        or not all(_LABEL.fullmatch(label) for label in domain.split("."))
    ):
        raise ValueError(f"{text!r} is not a domain name")
    return domain


def normalize_domain_pattern(text: str) -> str:
    """Return a domain or a ``*.domain`` wildcard (accepted domains), lower-cased."""
    stripped = text.strip() if isinstance(text, str) else ""
    if stripped.startswith("*."):
        return "*." + normalize_domain(stripped[2:])
    return normalize_domain(stripped)


def normalize_address_space(text: str) -> str:
    """Return an SMTP address space: ``*``, a domain, or ``*.domain`` (send connectors)."""
    if isinstance(text, str) and text.strip() == "*":
        return "*"
    if isinstance(text, str) and ":" in text:
        raise ValueError(
            f"{text!r}: write the address space without a type or cost "
            "(e.g. 'fabrikam.test'; the cost is the connector's cost key)"
        )
    try:
        return normalize_domain_pattern(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an address space ('*', a domain or '*.domain')"
        ) from None


def domain_matches(pattern: str, domain: str) -> bool:
    """Whether ``domain`` falls under ``pattern`` (``*``, ``*.sub`` = subdomains only, exact)."""
    domain = domain.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def normalize_smtp_address(text: str) -> str:
    """Return ``local@domain`` with the domain lower-cased, or raise ValueError."""
    if not isinstance(text, str) or text.count("@") != 1:
        raise ValueError(f"{text!r} is not an SMTP address local@domain")
    local, _, domain = text.strip().partition("@")
    if not _LOCAL_PART.fullmatch(local):
        raise ValueError(f"{text!r} is not an SMTP address local@domain")
    try:
        return f"{local}@{normalize_domain(domain)}"
    except ValueError:
        raise ValueError(f"{text!r} is not an SMTP address: bad domain {domain!r}") from None
