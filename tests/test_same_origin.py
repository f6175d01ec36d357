"""The admin endpoints' guard against cross-site requests and DNS rebinding."""

from __future__ import annotations

import pytest

from exchange_emu.admin.same_origin import refusal


@pytest.mark.parametrize("method, host, origin", [
    (b"GET", "127.0.0.1:8800", None),
    (b"POST", "127.0.0.1:8800", None),                       # the CLI sends no Origin
    (b"POST", "127.0.0.1:8800", "http://127.0.0.1:8800"),    # the lab's own page
    (b"POST", "localhost:8800", "http://localhost:8800"),
    (b"POST", "[::1]:8800", "http://[::1]:8800"),
    (b"GET", "10.77.0.5:8800", "http://evil.example"),       # reads are not a forgery
])
def test_allowed(method: bytes, host: str, origin: str | None) -> None:
    assert refusal(method, host, origin) is None


@pytest.mark.parametrize("method, host, origin, why", [
    (b"POST", "127.0.0.1:8800", "http://evil.example", "cross-site request guard"),
    (b"POST", "127.0.0.1:8800", "http://127.0.0.1:9999", "cross-site request guard"),
    (b"DELETE", "127.0.0.1:8800", "null", "cross-site request guard"),
    (b"GET", "rebind.example:8800", None, "DNS rebinding guard"),
    (b"POST", "rebind.example:8800", "http://rebind.example:8800", "DNS rebinding guard"),
    (b"GET", None, None, "no Host header"),
])
def test_refused(method: bytes, host: str | None, origin: str | None, why: str) -> None:
    problem = refusal(method, host, origin)
    assert problem is not None and why in problem
