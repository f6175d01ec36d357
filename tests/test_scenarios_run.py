"""``exchange-emu scenario run``: the six scenarios through a real lab (etc/lab.toml,
shifted to free ports), narrated from the tracking logs; and the checker itself."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange_emu.directory import load_organization
from exchange_emu.lab.narration import NarratedStep, followed

EXE = str(Path(sys.executable).parent / "exchange-emu")
LAB = Path(__file__).resolve().parent.parent / "etc" / "lab.toml"


def step(name: str, server: str = "hub01") -> NarratedStep:
    return NarratedStep(name, server, "X", "", "")


def test_followed_needs_every_step_in_order_per_server():
    d = [step("D.1"), step("D.2"), step("D.3"), step("D.4.1"), step("D.4.2", "edge01"),
         step("D.4.3"), step("D.5"), step("D.6", "edge01"), step("D.7")]
    assert followed(d, "D") == (True, [])
    assert followed(d[:-1], "D") == (False, ["missing D.7"])
    swapped = [*d[:5], step("D.7"), step("D.4.3"), step("D.5"), step("D.6", "edge01")]
    ok, problems = followed(swapped, "D")
    assert not ok and problems[0].startswith("out of order on hub01")


def _free_offset() -> int:
    ports = [a.port for s in load_organization(LAB).servers.values()
             for a in (s.smtp, s.store_driver, s.admin) if a is not None]
    ports += [c.bind.port for s in load_organization(LAB).servers.values()
              for c in s.receive_connectors]
    ports = sorted({*ports, 8800})
    for _ in range(50):
        offset = random.randrange(10000, 23000)  # all ports below the ephemeral range
        sockets = []
        try:
            for port in ports:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port + offset))
            return offset
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    pytest.skip("no free port range for a second lab")


@pytest.mark.integration
def test_all_six_scenarios_follow_the_documented_steps(tmp_path):
    offset = str(_free_offset())
    lab = subprocess.Popen([EXE, "lab", "--config", str(LAB), "--port-offset", offset],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        seen: list[str] = []
        assert lab.stdout is not None
        for line in lab.stdout:  # bounded by the deadline below
            seen.append(line)
            if sum("store driver connected to" in s for s in seen) >= 3:
                break
            assert time.monotonic() < deadline, "".join(seen)
        result = subprocess.run([EXE, "scenario", "run", "all", "--config", str(LAB),
                                 "--port-offset", offset, "--svg", "run.svg"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().splitlines()[-1] == (
            "6 of 6 scenarios followed the documented steps")
        for scenario in "ABCDEF":
            assert f"-- {scenario} (" in result.stdout
        for name in ("run-ABC.svg", "run-DE.svg", "run-F.svg"):
            assert f"Sequence diagram: {name}" in result.stdout
        _check_diagrams(tmp_path)
    finally:
        os.killpg(lab.pid, signal.SIGINT)
        lab.wait(60)


def _arrows(path: Path) -> tuple[list[tuple[str | None, ...]], list[tuple[str | None, ...]]]:
    """(from, to, label, steps) of each arrow, and (holder, primary, ended) of each shadow."""
    import xml.etree.ElementTree as ET

    groups = list(ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g"))
    arrows = [(g.get("data-from"), g.get("data-to"),
               next(g.iter("{http://www.w3.org/2000/svg}text")).text, g.get("data-steps"))
              for g in groups if g.get("class") == "arrow"]
    shadows = [(g.get("data-holder"), g.get("data-primary"), g.get("data-ended"))
               for g in groups if g.get("class") == "shadow"]
    return arrows, shadows


def _check_diagrams(directory: Path) -> None:
    """``--svg``: the diagram of each message, from the real lab's tracking logs."""
    arrows, shadows = _arrows(directory / "run-ABC.svg")
    assert ("MAPI client", "MBX01", "save to Outbox", "A") in arrows
    transfer = [a for a in arrows if a[2] == "XSHADOW / BDAT / 250"]
    assert len(transfer) == 1 and transfer[0][1] == "HUB03", arrows
    assert transfer[0][3] is not None and "D.4.2" in transfer[0][3].split()
    assert any(a[1] == "MBX02" and a[2] == "deliver (store driver)" for a in arrows), arrows
    assert [(s[1], s[2]) for s in shadows] == [("HUB03", "discarded")], shadows
    arrows, shadows = _arrows(directory / "run-DE.svg")
    assert any(a[:3] == ("EDGE01", "INTERNET01", "BDAT / 250") and "E.5" in (a[3] or "")
               for a in arrows), arrows
    assert ("HUB01", "EDGE01", "XQDISCARD") in [a[:3] for a in arrows]
    assert shadows == [("HUB01", "EDGE01", "discarded")]
    arrows, shadows = _arrows(directory / "run-F.svg")
    assert any(a[:3] == ("INTERNET01", "EDGE01", "BDAT (250 held)") for a in arrows), arrows
    assert any(a[:2] == ("EDGE01", "INTERNET01") and a[2].startswith("250 (delayed ack")
               for a in arrows if a[2]), arrows
    assert shadows == [("EDGE01", "HUB01", "discarded")]
