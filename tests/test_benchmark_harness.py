"""The benchmark suite (benchmarks/suite.py) on a tiny run: real Postfix, smtp-source,
smtp-sink and server processes, checked for well-formed results — not for timings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = "EXCHANGE_EMU_REQUIRE_INTEROP"
SYSTEMS = {"postfix", "emu", "emu-nodelay", "emu-noshadow", "direct", "bare2-hold"}


def _require_postfix_tools() -> None:
    missing = [tool for tool in ("postfix", "smtp-source", "smtp-sink")
               if shutil.which(tool) is None and not (Path("/usr/sbin") / tool).exists()]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install postfix)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{reason}; {REQUIRE}=1", pytrace=False)
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance and smtp-sink -u nobody need root")


def test_tiny_suite_run_writes_well_formed_results(tmp_path: Path) -> None:
    _require_postfix_tools()
    results_file = tmp_path / "benchmarks.json"
    page = tmp_path / "benchmarks.md"
    image = tmp_path / "benchmarks.png"
    page.write_text("# Benchmarks\n\nWritten by hand.\n\n<!-- suite:begin -->\nan old table\n"
                    "<!-- suite:end -->\n\nAlso by hand.\n")
    done = subprocess.run(
        [sys.executable, "benchmarks/suite.py", "--messages", "12", "--latency-messages", "6",
         "--sessions", "2", "--rounds", "2", "--shadows", "200", "--discard-batch", "50",
         "--storm", "10", "--timeout", "120", "--json", str(results_file), "--markdown", str(page),
         "--plot", str(image)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads(results_file.read_text())
    assert "exchange-emu with delayed acknowledgement relays" in page.read_text()  # vs the floor
    assert results["machine"]["cpus"] >= 1
    assert len(results["machine"]["load_average"]) == 3
    assert {run["system"] for run in results["relay"]} == SYSTEMS
    assert len(results["rounds"]) == 2
    for runs in results["rounds"]:
        assert sorted(run["system"] for run in runs) == sorted(SYSTEMS)
    for run in results["relay"]:  # the medians of the two rounds
        assert "error" not in run, run
        assert run["sessions"] == 2 and run["rounds"] == 2
        low, high = run["throughput"]["msg_per_s_range"]
        assert low <= run["throughput"]["msg_per_s"] <= high
        assert ("ratio_to_postfix" in run) == (run["system"] != "postfix")
        throughput = run["throughput"]
        assert throughput["messages"] == 12
        assert throughput["seconds"] > 0 and throughput["msg_per_s"] > 0
        if run["system"] == "direct":
            assert "latency" not in run
            continue
        latency = run["latency"]
        for p50, p99 in (latency["ack_ms"], latency["e2e_ms"]):
            assert 0 < p50 <= p99
        if run["system"] == "postfix":
            # (A dozen messages can take less than one clock tick of Postfix's CPU.)
            assert throughput["cpu_seconds"] >= 0
            assert "smtpd" in throughput["peak_memory_kib"]
            assert throughput["commits"] is None
        elif run["system"] == "bare2-hold":
            assert throughput["commits"] is None  # (it counts no commits)
            assert set(throughput["peak_memory_kib"]) == {"hop 1", "hop 2"}
            assert min(throughput["peak_memory_kib"].values()) > 0
        else:
            assert throughput["cpu_seconds"] > 0
            assert set(throughput["peak_memory_kib"]) == {"EDGE01", "HUB01"}
            assert min(throughput["peak_memory_kib"].values()) > 0
            # Accepting, routing and sending 12 messages takes several transactions.
            assert throughput["commits"] >= 12
            assert throughput["commits_per_s"] > 0

    shadows = results["shadow_queue"]
    assert [d["shadows"] for d in shadows["discards"]] == [20, 200]
    assert shadows["peak_kib_full"] > 0
    assert [s["messages"] for s in results["storm"]] == [1, 10]
    for storm in results["storm"]:
        assert storm["hub01_queued"] == storm["messages"]
        assert 0 < storm["detect_seconds"] <= storm["total_seconds"]

    text = page.read_text()
    assert "Written by hand." in text and "Also by hand." in text
    assert "an old table" not in text
    assert "| system | sessions | msg/s | ratio to Postfix |" in text
    assert "| Postfix | 2 |" in text
    assert "medians of 2 rounds" in text
    assert "to the sender's acknowledgement at p99" in text and " ms at 2 sessions." in text
    assert "Added by shadow redundancy alone" in text
    assert image.read_bytes().startswith(b"\x89PNG")


def test_tiny_timeline_run_times_every_stage_of_every_message(tmp_path: Path) -> None:
    """benchmarks/timeline.py: the wait in EDGE01's queue, then each of the six stages
    between tracking rows, for all 6 messages (a message missing a row would be missing
    from a stage)."""
    _require_postfix_tools()
    done = subprocess.run(
        [sys.executable, "benchmarks/timeline.py", "--messages", "6", "--sessions", "2",
         "--keep", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stages = [line for line in done.stdout.splitlines() if "→" in line]
    assert len(stages) == 7, done.stdout
    assert all(line.rstrip().endswith("(6 messages)") for line in stages), done.stdout
    assert "EDGE01 RECEIVE → EDGE01 MAIL to HUB01" in stages[0]
    assert "EDGE01 RECEIVE → EDGE01 SEND" in stages[1]
    assert "EDGE01 HADISCARD → EDGE01 RECEIVE F.7" in stages[-1]


def test_a_storm_only_run_leaves_the_relay_plot_alone(tmp_path: Path) -> None:
    """``--systems ""`` (the storm on its own, as docs/benchmarks.md runs it) measures no
    relay: it must not replace the relay plot with an empty one."""
    _require_postfix_tools()
    image = tmp_path / "benchmarks.png"
    image.write_bytes(b"the relay plot")
    page = tmp_path / "storm.md"
    page.write_text("<!-- suite:begin -->\n<!-- suite:end -->\n")
    done = subprocess.run(
        [sys.executable, "benchmarks/suite.py", "--systems", "", "--shadows", "0", "--storm",
         "10", "--timeout", "120", "--json", str(tmp_path / "storm.json"), "--markdown",
         str(page), "--plot", str(image)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert image.read_bytes() == b"the relay plot"
    assert "left as it was" in done.stdout
    assert [s["messages"] for s in json.loads((tmp_path / "storm.json").read_text())["storm"]] \
        == [1, 10]


def test_tiny_run_of_the_stacks_floor(tmp_path: Path) -> None:
    """The bare relays (benchmarks/bare_relay.py) run through the same phases."""
    _require_postfix_tools()
    results_file = tmp_path / "floor.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/suite.py", "--messages", "12", "--latency-messages", "6",
         "--sessions", "2", "--rounds", "1", "--systems", "bare,bare2,bare2-hold-thread",
         "--shadows", "0", "--storm", "0", "--timeout", "120", "--json", str(results_file),
         "--markdown", str(tmp_path / "floor.md"), "--plot", str(tmp_path / "floor.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert {run["system"]: len(run["throughput"]["peak_memory_kib"])
            for run in results["relay"]} == {"bare": 1, "bare2": 2, "bare2-hold-thread": 2}
    for run in results["relay"]:
        assert "error" not in run, run
        assert run["throughput"]["messages"] == 12 and run["throughput"]["msg_per_s"] > 0
        assert min(run["throughput"]["peak_memory_kib"].values()) > 0
        for p50, p99 in (run["latency"]["ack_ms"], run["latency"]["e2e_ms"]):
            assert 0 < p50 <= p99
    assert "the same, commits on a writer thread (floor)" in (tmp_path / "floor.md").read_text()
