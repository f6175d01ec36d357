"""A real headless browser for the web viewer tests: Debian's ``chromium`` driven by
Playwright (no browser download). Missing chromium or Playwright skips the tests with
the reason — and fails them under CI (``EXCHANGE_EMU_REQUIRE_INTEROP=1``), as
tests/postfix.py does for Postfix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE = "EXCHANGE_EMU_REQUIRE_INTEROP"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Screenshots of the browser tests (gitignored)."""


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}; {REQUIRE}=1", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path is None:
        _missing("chromium is not installed (apt-get install chromium)")
    assert path is not None
    return path


def launch_chromium() -> Iterator[Any]:
    """A headless chromium (Playwright ``Browser``) for the duration of a fixture."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        # --disable-gpu: without it, Debian's headless chromium never finishes a screenshot.
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--disable-gpu", "--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and print where it is."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
