"""A mail client that stays connected to the lab for a stream of submissions (scenario A):
one process, one message per line of its input, one answer per line of its output.

    python -m exchange_emu.lab.outbox_client --config ORG --from alice@… --to bob@…
    < one path of an RFC 5322 file per line
    > "OK <item id>" once the item is committed to the Outbox, or "ERR <why>"

The crash matrix uses it instead of one ``exchange-emu send`` process per message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

from exchange_emu.directory import load_organization
from exchange_emu.mailbox.client import SubmitError, submit


async def serve(reactor: Any, config: str, sender: str, recipient: str) -> None:
    organization = load_organization(config)
    while True:
        line = await threads.deferToThread(sys.stdin.readline)
        if not line:
            return
        try:
            done = await submit(reactor, organization, sender, [recipient],
                                Path(line.strip()).read_bytes())
            answer = f"OK {done.item_id}"
        except (SubmitError, OSError) as e:
            answer = f"ERR {e}"
        except Exception as e:  # a dropped connection mid-call, for instance
            answer = f"ERR {type(e).__name__}: {e}"
        sys.stdout.write(answer.replace("\n", " ") + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="submit a stream of messages to Outboxes")
    parser.add_argument("--config", required=True)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", required=True)
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(
        serve(reactor, args.config, args.sender, args.to)), [])


if __name__ == "__main__":
    main()
