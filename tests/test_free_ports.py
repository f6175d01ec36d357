"""``free_ports``: the listening ports of labs that run side by side in one process.

The crash matrix runs its cases in threads, each a lab of server processes that are killed
and restarted on the same ports. A port handed to one lab must not be handed to another
while the first lab's server is down: the large matrix once reported 28 messages lost that way
(scenario E's hub delivered them to another case's EDGE01, started on LEGACY01's port)."""

from __future__ import annotations

import threading

from exchange_emu.lab import processes
from exchange_emu.lab.processes import LISTEN_PORTS_FLOOR, RECENT_PORTS, free_ports


def test_no_recent_port_is_handed_out_again() -> None:
    handed = [port for _ in range(300) for port in free_ports(8)]
    assert len(handed) <= RECENT_PORTS
    assert len(set(handed)) == len(handed)
    ceiling = processes._ephemeral_floor()
    assert all(LISTEN_PORTS_FLOOR <= port < ceiling for port in handed)


def test_labs_in_threads_never_share_a_port() -> None:
    handed: list[list[int]] = [[] for _ in range(4)]

    def lab(index: int) -> None:
        for _ in range(100):
            handed[index].extend(free_ports(6))

    threads = [threading.Thread(target=lab, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [port for ports in handed for port in ports]
    assert len(every) == 4 * 100 * 6
    assert len(set(every)) == len(every)


def test_the_memory_of_handed_out_ports_is_bounded() -> None:
    for _ in range(RECENT_PORTS // 50 + 2):
        free_ports(50)
    assert len(processes._recent_ports) == RECENT_PORTS
    assert processes._recent_port_set == set(processes._recent_ports)
