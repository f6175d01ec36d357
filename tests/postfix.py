"""A private Postfix instance on loopback for interop tests (Debian's postfix package):
its own config and queue directories under /var/tmp, started and stopped by the test.
The traps are those of shared/spec/interop-notes.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from exchange_emu.lab.private_postfix import PrivatePostfix

REQUIRE = "EXCHANGE_EMU_REQUIRE_INTEROP"


def require_postfix() -> None:
    """Skip (with the reason) where Postfix is not installed — fail instead under CI."""
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        reason = "Postfix is not installed (apt-get install postfix swaks)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{reason}; {REQUIRE}=1", pytrace=False)
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root here")


class Postfix(PrivatePostfix):
    """One private Postfix: listens on 127.0.0.1:``port``; ``routes`` maps a domain to
    ``host:port`` (texthash transport map, no DNS)."""

    def __init__(self, port: int, routes: dict[str, str]) -> None:
        transport = "".join(f"{domain} smtp:[{target.rsplit(':', 1)[0]}]:"
                            f"{target.rsplit(':', 1)[1]}\n" for domain, target in routes.items())
        super().__init__(port, main_cf="\n".join([
            "myhostname = mail.fabrikam.test",
            "mydomain = fabrikam.test",
            "myorigin = fabrikam.test",
            f"relay_domains = {' '.join(routes)}",
            "transport_maps = texthash:{etc}/transport",
            "local_transport = error:no local delivery",
            "delay_logging_resolution_limit = 6",
            "minimal_backoff_time = 2s",
            "maximal_backoff_time = 4s",
            "queue_run_delay = 2s",
            "smtp_connect_timeout = 5s",
            ""]))
        (self.etc / "transport").write_text(transport)

    def start(self) -> Postfix:  # type: ignore[override]
        super().start()
        return self

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], capture_output=True,
                       timeout=30)

    def queue(self) -> str:
        return subprocess.run(["postqueue", "-c", str(self.etc), "-p"], capture_output=True,
                              text=True, timeout=30).stdout

    def deliveries(self, to: str) -> list[str]:
        """The maillog lines of deliveries to ``to`` (sent, deferred or bounced)."""
        return [line for line in self.log().splitlines()
                if f"to=<{to}>" in line and "status=" in line]

    def wait_for(self, pattern: str, timeout: float = 60.0) -> list[str]:
        """Wait (bounded) for maillog lines matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log().splitlines() if re.search(pattern, line)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no maillog line matches {pattern!r}:\n{self.log()}")
            time.sleep(0.2)
