"""Errors of the management operations, each with the HTTP status the API answers with."""

from __future__ import annotations


class ManagementError(Exception):
    """An operation refused: str() is one line saying what to do; nothing was changed.

    ``status`` is the HTTP status of the management API: 400 bad input, 404 no such
    queue or message, 409 not possible in the current state, 502 server not running.
    """

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFoundError(ManagementError):
    """No queue, message or connector by that identity (HTTP 404)."""

    status = 404


def parse_result_size(text: str | int | None, default: int = 1000) -> int | None:
    """Exchange's ``-ResultSize``: a positive number or ``unlimited`` (None); default 1000."""
    if text is None or text == "":
        return default
    value = str(text).strip()
    if value.lower() == "unlimited":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ManagementError(f"result size {text!r} is not a positive number or 'unlimited'")
    return int(value)
