"""A private Postfix relay for the benchmark suite: it listens on 127.0.0.1:``port`` and
relays everything to ``127.0.0.1:next_port`` (store and forward, Postfix's defaults
otherwise), on exchange_emu/lab/private_postfix.py like tests/postfix.py, the interop tests'
variant with per-domain routes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from exchange_emu.lab.private_postfix import PrivatePostfix


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


class PostfixRelay(PrivatePostfix):
    """One private Postfix instance relaying everything to 127.0.0.1:``next_port``."""

    def __init__(self, port: int, next_port: int) -> None:
        super().__init__(port, prefix="exchange-emu-bench-postfix-", main_cf="\n".join([
            "myhostname = relay.fabrikam.test",
            "mydomain = fabrikam.test",
            "myorigin = fabrikam.test",
            f"relayhost = [127.0.0.1]:{next_port}",
            f"local_transport = smtp:[127.0.0.1]:{next_port}",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            "queue_run_delay = 1s",
            ""]))

    def start(self) -> PostfixRelay:  # type: ignore[override]
        super().start()
        return self

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
