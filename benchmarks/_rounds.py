"""Several rounds of the suite's relay runs, summarised: on a shared machine one run moves by
±20%, and Postfix's own figure more, so the suite can repeat every system in turn
(``--rounds``) and report each figure's median, the range of the throughput, and the ratio
to Postfix as the median of the ratios measured *in the same round*, with their range: whether
"at least Postfix" held in every round or only in some is then plain to read.

A summary run has the shape of one round's run (so the table, the plot and
``benchmarks/compare.py`` read either), plus ``rounds``, ``msg_per_s_range``,
``ratio_to_postfix`` and ``ratio_to_postfix_range``.
"""

from __future__ import annotations

import statistics
from typing import Any

SHADOW, NO_SHADOW = "emu", "emu-noshadow"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _same_round_ratios(rounds: list[list[dict[str, Any]]], system: str,
                       sessions: int) -> list[float]:
    ratios = []
    for runs in rounds:
        by_system = {r["system"]: r for r in runs
                     if r["sessions"] == sessions and "throughput" in r}
        if system in by_system and "postfix" in by_system:
            ratios.append(by_system[system]["throughput"]["msg_per_s"]
                          / by_system["postfix"]["throughput"]["msg_per_s"])
    return ratios


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of one system at one session count (runs that failed left out)."""
    done = [r for r in runs if "throughput" in r]
    first = runs[0]
    summary: dict[str, Any] = {"system": first["system"], "sessions": first["sessions"],
                               "rounds": len(done)}
    if not done:
        summary["error"] = runs[-1].get("error", "every round failed")
        return summary
    throughputs = [r["throughput"] for r in done]
    rates = [t["msg_per_s"] for t in throughputs]
    commits = [t["commits_per_s"] for t in throughputs if t["commits_per_s"] is not None]
    peaks: dict[str, int] = {}
    for t in throughputs:
        for name, kib in t["peak_memory_kib"].items():
            peaks[name] = max(peaks.get(name, 0), kib)
    summary["throughput"] = {
        "messages": throughputs[0]["messages"],
        "seconds": _median([t["seconds"] for t in throughputs]),
        "msg_per_s": _median(rates),
        "msg_per_s_range": [min(rates), max(rates)],
        "cpu_seconds": _median([t["cpu_seconds"] for t in throughputs]),
        "cpu_ms_per_message": _median([t["cpu_ms_per_message"] for t in throughputs]),
        "peak_memory_kib": peaks,
        "commits": _median([t["commits"] for t in throughputs]) if commits else None,
        "commits_per_s": _median(commits) if commits else None,
    }
    latencies = [r["latency"] for r in done if "latency" in r]
    if latencies:
        summary["latency"] = {
            "messages": latencies[0]["messages"],
            "ack_ms": [_median([lat["ack_ms"][i] for lat in latencies]) for i in (0, 1)],
            "e2e_ms": [_median([lat["e2e_ms"][i] for lat in latencies]) for i in (0, 1)],
        }
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        summary["error"] = f"{len(errors)} of {len(runs)} rounds failed: {errors[0]}"
    return summary


def summarize(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One summary run per (system, sessions), in the order of the first round."""
    keys = [(r["system"], r["sessions"]) for r in rounds[0]]
    summaries = []
    for system, sessions in keys:
        runs = [r for runs in rounds for r in runs
                if (r["system"], r["sessions"]) == (system, sessions)]
        summary = _summary(runs)
        ratios = _same_round_ratios(rounds, system, sessions)
        if ratios and system != "postfix":
            summary["ratio_to_postfix"] = _median(ratios)
            summary["ratio_to_postfix_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        summaries.append(summary)
    return summaries


def added_latency(summaries: list[dict[str, Any]], system: str = SHADOW) -> dict[int, float]:
    """Sessions -> what shadow redundancy and delayed acknowledgement add to the sender's
    acknowledgement at p99 (emu minus emu-noshadow, milliseconds): issue 8's latency
    target; with ``system`` ``emu-nodelay``, what shadow redundancy alone adds."""
    shadow = system
    p99 = {(r["system"], r["sessions"]): r["latency"]["ack_ms"][1]
           for r in summaries if "latency" in r}
    return {sessions: round(value - p99[(NO_SHADOW, sessions)], 1)
            for (system, sessions), value in sorted(p99.items())
            if system == shadow and (NO_SHADOW, sessions) in p99}
