"""``exchange-emu scenario run X --fail STEP:ACTION``: run one failure experiment."""

from __future__ import annotations

import sys
from typing import Any

from exchange_emu.directory import Organization
from exchange_emu.lab.experiments import ExperimentError, Outcome, find, run_experiment


def run_failure(organization: Organization, scenario: str, spec: str, timeout: float) -> int:
    """0 when the message ended as Exchange 2010 would leave it, 1 if not, 2 on error."""
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
    return 0 if result.ok else 1
