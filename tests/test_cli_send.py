"""``exchange-emu send`` and ``failover`` when things are wrong: one line, exit 2.
(Run as processes: each runs a reactor, which cannot restart inside one process.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from org_files import two_site_org

EXE = str(Path(sys.executable).parent / "exchange-emu")


def run(*args: str) -> tuple[int, list[str]]:
    result = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr.strip().splitlines()


def test_send_from_an_address_without_a_mailbox(tmp_path):
    config, _ = two_site_org(tmp_path)
    status, err = run("send", "--config", str(config), "--from", "nobody@contoso.test",
                      "--to", "carol@contoso.test")
    assert status == 2
    assert err == ["exchange-emu: error: nobody@contoso.test has no mailbox on an Exchange "
                   "2010 mailbox database"]


def test_send_when_the_mailbox_server_is_down(tmp_path):
    config, ports = two_site_org(tmp_path)
    status, err = run("send", "--config", str(config), "--from", "alice@contoso.test",
                      "--to", "carol@contoso.test")
    assert status == 2 and len(err) == 1
    assert err[0].startswith("exchange-emu: error: cannot reach mailbox server MBX01 at "
                             f"127.0.0.1:{ports['MBX01']}")


def test_failover_of_an_unknown_database(tmp_path):
    config, _ = two_site_org(tmp_path)
    status, err = run("failover", "--config", str(config), "DB09", "--lossy")
    assert status == 2
    assert err == ["exchange-emu: error: no mailbox database DB09 (known: DB01, DB02)"]
