"""A private Postfix instance on loopback (Debian's postfix package), for interop tests and
the benchmark suite: its own configuration and queue directories under /var/tmp, started and
stopped by its owner. The traps are those of shared/spec/interop-notes.md (the directories
must be searchable by the ``postfix`` user, so not under a mode-0700 temporary directory).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
"""master.cf with the SMTP listener on ``{listen}`` and no chroot."""


class PrivatePostfix:
    """One private Postfix listening on 127.0.0.1:``port``; ``main_cf`` is the instance's own
    settings (hostname, routing, retry timers; ``{etc}`` in it is the configuration
    directory), added to the directories, logging and loopback settings every instance
    needs."""

    def __init__(self, port: int, main_cf: str, prefix: str = "exchange-emu-postfix-") -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        (self.dir / "queue").mkdir(mode=0o755)
        self.maillog = self.dir / "maillog"
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
alias_maps =
alias_database =
{main_cf.replace("{etc}", str(self.etc))}""")
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c <this instance> args…``."""
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> None:
        """Check, start, and wait (bounded, 20 s) until its smtpd answers with 220."""
        for step in ("check", "start"):
            done = self.postfix(step)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {step} failed: {done.stderr} {self.log()}")
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not listen on {self.port}: {self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the instance and remove its directories."""
        self.postfix("stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        """The instance's maillog so far."""
        return self.maillog.read_text() if self.maillog.exists() else ""
