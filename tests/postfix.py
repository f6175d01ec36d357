"""A private Postfix instance on loopback for interop tests (Debian's postfix package):
its own config and queue directories under /var/tmp, started and stopped by the test.
The traps are those of shared/spec/interop-notes.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

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


MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One private Postfix: listens on 127.0.0.1:``port``; ``routes`` maps a domain to
    ``host:port`` (texthash transport map, no DNS)."""

    def __init__(self, port: int, routes: dict[str, str]) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="exchange-emu-postfix-", dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        (self.dir / "queue").mkdir(mode=0o755)
        self.maillog = self.dir / "maillog"
        transport = "".join(f"{domain} smtp:[{target.rsplit(':', 1)[0]}]:"
                            f"{target.rsplit(':', 1)[1]}\n" for domain, target in routes.items())
        (self.etc / "transport").write_text(transport)
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
myhostname = mail.fabrikam.test
mydomain = fabrikam.test
myorigin = fabrikam.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains = {" ".join(routes)}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
transport_maps = texthash:{self.etc}/transport
local_transport = error:no local delivery
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
delay_logging_resolution_limit = 6
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
smtp_connect_timeout = 5s
alias_maps =
alias_database =
""")
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> Postfix:
        check = self._postfix("check")
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr} {self.log()}")
        started = self._postfix("start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stderr} {self.log()}")
        deadline = time.monotonic() + 20
        import socket

        while True:  # bounded: until its smtpd answers
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not listen on {self.port}: {self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self._postfix("stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], capture_output=True,
                       timeout=30)

    def queue(self) -> str:
        return subprocess.run(["postqueue", "-c", str(self.etc), "-p"], capture_output=True,
                              text=True, timeout=30).stdout

    def log(self) -> str:
        return self.maillog.read_text() if self.maillog.exists() else ""

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
