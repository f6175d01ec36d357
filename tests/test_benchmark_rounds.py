"""How the benchmark suite sums up several rounds (benchmarks/_rounds.py): medians, the
throughput's range, the ratio to Postfix from the same round, and the latency that shadow
redundancy adds — on made-up runs, so every figure is known."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _rounds import added_latency, summarize


def run(system: str, rate: float, ack_p99: float = 10.0, sessions: int = 20,
        commits: float | None = 100.0, peak: int = 1000) -> dict[str, Any]:
    return {"system": system, "sessions": sessions,
            "throughput": {"messages": 2000, "seconds": 2000 / rate, "msg_per_s": rate,
                           "cpu_seconds": 4.0, "cpu_ms_per_message": 2.0,
                           "peak_memory_kib": {"HUB01": peak},
                           "commits": commits, "commits_per_s": commits},
            "latency": {"messages": 500, "ack_ms": [ack_p99 / 2, ack_p99],
                        "e2e_ms": [1.0, 2.0]}}


def test_ratio_is_the_median_of_same_round_ratios_not_the_ratio_of_medians():
    """Postfix swings between rounds; the emulator's figure is compared with the Postfix
    run beside it. Here the medians' ratio would be 600/800 = 0.75, while in every round
    but one the emulator matched Postfix."""
    rounds = [[run("postfix", 800), run("emu", 800)],
              [run("postfix", 500), run("emu", 500)],
              [run("postfix", 900), run("emu", 600)]]
    postfix, emu = summarize(rounds)
    assert postfix["throughput"]["msg_per_s"] == 800
    assert "ratio_to_postfix" not in postfix
    assert emu["throughput"]["msg_per_s"] == 600
    assert emu["throughput"]["msg_per_s_range"] == [500, 800]
    assert emu["ratio_to_postfix"] == 1.0
    assert emu["ratio_to_postfix_range"] == [round(600 / 900, 3), 1.0]
    assert emu["rounds"] == 3


def test_failed_rounds_are_left_out_and_said():
    failed = {"system": "emu", "sessions": 20, "error": "timed out"}
    rounds = [[run("postfix", 800), run("emu", 400, peak=900)],
              [run("postfix", 700), failed],
              [run("postfix", 600), run("emu", 600, peak=1200)]]
    emu = summarize(rounds)[1]
    assert emu["rounds"] == 2
    assert emu["throughput"]["msg_per_s"] == 500
    assert emu["throughput"]["peak_memory_kib"] == {"HUB01": 1200}  # the highest
    assert emu["ratio_to_postfix"] == 0.75  # rounds 1 and 3: 0.5 and 1.0
    assert emu["ratio_to_postfix_range"] == [0.5, 1.0]
    assert emu["error"] == "1 of 3 rounds failed: timed out"
    everything_failed = summarize([[failed], [failed]])[0]
    assert "throughput" not in everything_failed and everything_failed["rounds"] == 0


def test_added_latency_is_p99_ack_with_shadow_minus_without_per_session_count():
    rounds = [[run("emu", 500, ack_p99=45.0), run("emu-noshadow", 900, ack_p99=20.0),
               run("emu", 100, ack_p99=12.0, sessions=1),
               run("emu-noshadow", 300, ack_p99=4.0, sessions=1)],
              [run("emu", 500, ack_p99=41.0), run("emu-noshadow", 900, ack_p99=19.0),
               run("emu", 100, ack_p99=14.0, sessions=1),
               run("emu-noshadow", 300, ack_p99=4.0, sessions=1)]]
    assert added_latency(summarize(rounds)) == {1: 9.0, 20: 23.5}
    assert added_latency(summarize([[run("emu", 500)]])) == {}  # nothing to compare with


def test_added_latency_of_shadow_redundancy_alone():
    rounds = [[run("emu", 500, ack_p99=45.0), run("emu-nodelay", 900, ack_p99=22.0),
               run("emu-noshadow", 950, ack_p99=20.0)]]
    assert added_latency(summarize(rounds), "emu-nodelay") == {20: 2.0}
    assert added_latency(summarize(rounds)) == {20: 25.0}


def test_a_system_without_commit_counters_keeps_none():
    summary = summarize([[run("postfix", 800, commits=None)]])[0]
    assert summary["throughput"]["commits"] is None
    assert summary["throughput"]["commits_per_s"] is None


def test_the_share_of_the_floor_compares_emu_with_the_held_floor_of_the_same_sessions():
    import suite

    runs = [run("emu", 300, sessions=20), run("bare2-hold", 750, sessions=20),
            run("bare2", 1500, sessions=20), run("emu", 90, sessions=1),
            run("bare2", 900, sessions=1)]  # (no held floor with one sender: no share)
    assert suite._share_of_floor(runs) == {20: 0.4}


def test_the_table_gives_the_same_round_ratios_range_beside_their_median():
    """Whether the emulator matched Postfix in every round or in some is read off the
    table: the median of the same-round ratios, then their lowest and highest."""
    import suite

    rounds = [[run("postfix", 800), run("emu", 800)],
              [run("postfix", 500), run("emu", 500)],
              [run("postfix", 900), run("emu", 600)]]
    results = {"started": "2026-11-29 15:00 UTC", "command": "suite.py", "size": 10240,
               "database": "SQLite", "relay": summarize(rounds),
               "machine": {"cpus": 2, "load_average": [0.1, 0.1, 0.1],
                           "load_average_start": [0.1, 0.1, 0.1], "python": "3.11",
                           "postfix": "3.7"}}
    row = next(line for line in suite.markdown(results).splitlines()
               if line.startswith("| exchange-emu (shadow + delayed ack) | 20 |"))
    assert "| 1.00× (0.67–1.00) |" in row
    one_round = dict(results, relay=summarize(rounds[2:]))
    row = next(line for line in suite.markdown(one_round).splitlines()
               if line.startswith("| exchange-emu (shadow + delayed ack) | 20 |"))
    assert "| 0.67× |" in row
