"""Retry delays after failed collection cycles."""

from __future__ import annotations

from typing import Callable

FIRST_DELAY = 1.0
MAX_DELAY = 300.0


def backoff_delay(failures: int, jitter: Callable[[], float]) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 s doubling to 300 s).

    `jitter()` returns a number in [0, 1); up to a fifth of the delay is shaved off so
    that exporters restarted together do not retry in lockstep.
    """
    if failures < 1:
        return 0.0
    delay = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(failures - 1, 30))
    return delay * (1.0 - 0.2 * jitter())
