"""Errors raised while reading the organization file ("Active Directory")."""

from __future__ import annotations


class OrganizationFileError(ValueError):
    """A mistake in the organization file, reported as one line.

    ``str()`` is ``<file>: <key>: <problem>``, for example
    ``etc/lab.toml: servers[2].smtp: 'abc' is not HOST:PORT``; the key part is left out
    when the mistake concerns the whole file (missing file, TOML syntax error).
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class UnknownServerError(LookupError):
    """No server of the organization has the name asked for (``Get-ExchangeServer`` fails)."""

    def __init__(self, name: str, source: str, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no server named {name!r} in {source} (known: {listed})")
