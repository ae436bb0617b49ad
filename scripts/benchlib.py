"""What the latency benchmarks share: timing functions in alternating blocks in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating_ms(fns: dict[str, Callable[[], object]], blocks: int,
                   per_block: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock ms and median process CPU ms of each function, run in alternating
    blocks after two warm-up calls each. With one thread the CPU time (user + system, so page
    faults count) is the work itself, which other processes' load barely changes."""
    for _ in range(2):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            for _ in range(per_block):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    return ({k: statistics.median(v) * 1e3 for k, v in wall.items()},
            {k: statistics.median(v) * 1e3 for k, v in cpu.items()})
