"""A private Postfix relay for the benchmark suite: it listens on 127.0.0.1:``port`` and
relays everything to ``127.0.0.1:next_port`` (store and forward, Postfix's defaults
otherwise). The traps are those of shared/spec/interop-notes.md; tests/postfix.py is the
interop tests' variant with per-domain routes."""

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


def postfix_tools() -> dict[str, str] | None:
    """Paths of postfix, smtp-source and smtp-sink, or None when one is missing."""
    found = {}
    for tool in ("postfix", "smtp-source", "smtp-sink"):
        path = shutil.which(tool) or next(
            (str(p) for p in (Path("/usr/sbin") / tool, Path("/usr/lib/postfix/sbin") / tool)
             if p.exists()), None)
        if path is None:
            return None
        found[tool] = path
    return found


class PostfixRelay:
    """One private Postfix instance under /var/tmp (its parents must be searchable by the
    ``postfix`` user, so not under a mode-0700 temporary directory)."""

    def __init__(self, port: int, next_port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="exchange-emu-bench-postfix-", dir="/var/tmp"))
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
myhostname = relay.fabrikam.test
mydomain = fabrikam.test
myorigin = fabrikam.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relayhost = [127.0.0.1]:{next_port}
local_transport = smtp:[127.0.0.1]:{next_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
alias_maps =
alias_database =
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
""")
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> PostfixRelay:
        """Check, start, and wait (bounded) until its smtpd answers."""
        for step in ("check", "start"):
            done = self._postfix(step)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {step} failed: {done.stderr} {self.log()}")
        deadline = time.monotonic() + 20
        while True:
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

    def log(self) -> str:
        return self.maillog.read_text() if self.maillog.exists() else ""

    def master_pid(self) -> int | None:
        try:
            return int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        """The master and its live children (smtpd, cleanup, qmgr, smtp, …)."""
        master = self.master_pid()
        if master is None:
            return []
        pids = [master]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def cpu_seconds(self) -> float:
        """CPU of the whole instance: the master's own and its reaped children's
        (cutime/cstime), plus the live children's."""
        total = 0.0
        master = self.master_pid()
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])
            if pid == master:
                ticks += int(fields[13]) + int(fields[14])
            total += ticks / os.sysconf("SC_CLK_TCK")
        return total

    def peak_memory_kib(self) -> dict[str, int]:
        """Peak RSS (VmHWM) per live process name (the largest of each name)."""
        peaks: dict[str, int] = {}
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            name = fields.get("Name", "?").strip()
            hwm = int(fields.get("VmHWM", "0 kB").split()[0])
            peaks[name] = max(peaks.get(name, 0), hwm)
        return peaks
