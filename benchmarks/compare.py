"""Before/after table of two benchmark suite results files (benchmarks/suite.py --json), for
the systems and session counts both have:

    .venv/bin/python benchmarks/compare.py docs/benchmarks-before.json docs/benchmarks.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _runs(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["system"], r["sessions"]): r for r in results["relay"]}


def _cell(run: dict[str, Any] | None, path: tuple[str, ...]) -> str:
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return "–"
        value = value[key]
    if isinstance(value, list):
        return " / ".join(f"{v:.1f}" for v in value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows = [
        "| system | sessions | msg/s before → after | CPU ms/msg before → after | "
        "ack p50 / p99 ms before → after | end-to-end p50 / p99 ms before → after |",
        "|---|---:|---|---|---|---|",
    ]
    old, new = _runs(before), _runs(after)
    for key in sorted(set(old) & set(new)):
        b, a = old[key], new[key]
        cells = []
        for path in (("throughput", "msg_per_s"), ("throughput", "cpu_ms_per_message"),
                     ("latency", "ack_ms"), ("latency", "e2e_ms")):
            cells.append(f"{_cell(b, path)} → {_cell(a, path)}")
        failed = "; ".join(f"{when} failed: {r['error']}" for when, r in (("before", b),
                                                                           ("after", a))
                           if "error" in r)
        rows.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |"
                    + (f" {failed}" if failed else ""))
    for part, path in (("shadow queue", ("shadow_queue", "discards")), ("storm", ("storm",))):
        b_part: Any = before
        a_part: Any = after
        for k in path:
            b_part = b_part.get(k, {}) if isinstance(b_part, dict) else {}
            a_part = a_part.get(k, {}) if isinstance(a_part, dict) else {}
        if b_part and a_part:
            rows.append("")
            rows.append(f"{part}: before {json.dumps(b_part)}; after {json.dumps(a_part)}")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    print(table(json.loads(args.before.read_text()), json.loads(args.after.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
