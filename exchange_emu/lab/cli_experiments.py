"""``exchange-emu scenario run X --fail STEP:ACTION``: run one failure experiment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from exchange_emu.directory import Organization
from exchange_emu.lab.experiments import ExperimentError, Outcome, find, run_experiment


def run_failure(organization: Organization, scenario: str, spec: str, timeout: float,
                svg: Path | None = None) -> int:
    """0 when the message ended as Exchange 2010 would leave it, 1 if not, 2 on error;
    with ``svg``, the experiment's sequence diagram is written there."""
    from twisted.internet import defer, task

    try:
        find(scenario, spec)
    except ExperimentError as e:
        print(f"exchange-emu: error: {e}", file=sys.stderr)
        return 2
    outcome: list[Outcome | Exception] = []

    async def main(reactor: Any) -> None:
        try:
            outcome.append(await run_experiment(reactor, organization, scenario, spec,
                                                lambda line: print(line, flush=True),
                                                max(timeout, 120.0)))
        except (ExperimentError, OSError) as e:
            outcome.append(e)
        except Exception as e:  # a mailbox submission error and the like: one line
            outcome.append(e)

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)), [])
    except SystemExit as e:  # react() always exits
        if e.code:
            raise
    result = outcome[0] if outcome else ExperimentError("the experiment did not finish")
    if isinstance(result, Exception):
        print(f"exchange-emu: error: {result}", file=sys.stderr)
        return 2
    if svg is not None:
        if not result.message_id.startswith("<"):
            print(f"No diagram: no server ever logged the message ({result.message_id}).")
        else:
            from exchange_emu.lab.scenario_diagram import message_svg

            try:
                svg.write_text(message_svg(organization, result.message_id,
                                           f"Experiment {scenario} --fail {spec}: "
                                           f"{result.message_id}"), "utf-8")
            except OSError as e:
                print(f"exchange-emu: error: cannot write {svg}: {e.strerror}",
                      file=sys.stderr)
                return 2
            print(f"Sequence diagram: {svg}")
    return 0 if result.ok else 1
