"""``exchange-emu lab``: every server its own process (default) or all in one; Ctrl-C
stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from org_files import two_site_org

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "exchange-emu")


def run_lab(config: Path, cwd: Path, *extra: str,
            while_running: Any = None) -> tuple[int, list[str]]:
    """Start the lab, wait (bounded) until all five servers run, call ``while_running``
    with the output so far, then Ctrl-C it: SIGINT to its whole process group, as a
    terminal does (every server gets it too, and then the supervisor's SIGTERM)."""
    proc = subprocess.Popen([EXE, "lab", "--config", str(config), *extra], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            names = {seen.split(": ", 1)[0].rsplit(" ", 1)[-1] for seen in lines
                     if "listening on" in seen}
            # ... and the reactors run (signals are handled from then on): every hub has
            # its store-driver link to the mailbox server of its site.
            linked = sum("store driver connected to" in seen for seen in lines)
            if {"MBX01", "HUB01", "HUB02", "MBX02", "HUB03"} <= names and linked >= 3:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "\n".join(lines)
        if while_running is not None:
            while_running(lines)
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(30)  # the output ends with the process: wait for its last lines
    assert not reader.is_alive(), "the lab's output did not end"
    return status, lines


def test_each_server_is_its_own_process_and_ctrl_c_stops_all(tmp_path):
    config, _ = two_site_org(tmp_path)
    status, lines = run_lab(config, tmp_path)
    assert status == 0, "\n".join(lines)
    listening = [line for line in lines if "listening on" in line]
    assert {line.split("]")[0].lstrip("[") for line in listening} == {
        "MBX01", "HUB01", "HUB02", "MBX02", "HUB03"}
    assert lines[-1] == "Exchange lab stopped."
    assert sum("Server Shut Down." in line for line in lines) == 5
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    progress = [line for line in lines if line.startswith("[lab] ")]
    assert progress[-1].startswith("[lab] all 5 servers ready in "), progress
    assert "(5 of 5 servers ready)" in progress[-2]
    assert not any("exited unexpectedly" in line for line in lines)


def test_single_process_lab(tmp_path):
    config, _ = two_site_org(tmp_path)
    status, lines = run_lab(config, tmp_path, "--single-process")
    assert status in (0, -2), "\n".join(lines)  # twistd re-raises the SIGINT
    assert not any(line.startswith("[HUB01]") for line in lines)
    listening = [line for line in lines if "listening on" in line]
    assert len(listening) == 6, "\n".join(listening)  # HUB01 has two connectors


def test_fault_kill_and_start_a_server_of_the_running_lab(tmp_path):
    """exchange-emu fault kill HUB03 crashes that one process (SIGKILL); start brings it
    back; the lab admin endpoint says which servers run."""
    import json
    import urllib.error
    import urllib.request

    from exchange_emu.directory import load_organization

    config, _ = two_site_org(tmp_path)
    admin = load_organization(config).lab.admin

    def running() -> dict[str, bool]:
        with urllib.request.urlopen(f"http://{admin}/servers", timeout=10) as response:
            return {s["name"]: s["running"] for s in json.load(response)}

    def fault(action: str, server: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, "fault", "--config", str(config), action, server],
                              capture_output=True, text=True, timeout=90)

    def exercise(lines: list[str]) -> None:
        assert all(running().values())
        killed = fault("kill", "HUB03")
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout.strip() == "HUB03: kill done; now not running"
        assert running()["HUB03"] is False and running()["HUB01"] is True
        assert fault("kill", "HUB03").stderr.strip() == (
            "exchange-emu: error: HUB03 is not running")
        assert fault("start", "hub03").returncode == 0
        assert running()["HUB03"] is True
        unknown = fault("restart", "HUB9")
        assert unknown.returncode == 2 and "no server named 'HUB9'" in unknown.stderr
        # Another web page in the operator's browser cannot kill a server (CSRF), nor reach
        # the endpoint under a rebound domain name.
        forged = urllib.request.Request(f"http://{admin}/servers/HUB03/kill", method="POST",
                                        headers={"Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 403
        assert "cross-site request guard" in json.load(refused.value)["error"]
        rebound = urllib.request.Request(f"http://{admin}/servers",
                                         headers={"Host": f"rebind.example:{admin.port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 403
        assert running()["HUB03"] is True

    status, lines = run_lab(config, tmp_path, while_running=exercise)
    assert status == 0, "\n".join(lines)
    assert lines[-1] == "Exchange lab stopped."
