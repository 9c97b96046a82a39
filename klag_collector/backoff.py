"""Retry delays after failed collection cycles."""

from __future__ import annotations

from typing import Callable

FIRST_DELAY = 1.0


def backoff_delay(failures: int, cap: float, jitter: Callable[[], float]) -> float:
    """Seconds to wait after the `failures`-th failure in a row: 1 s doubling, at most `cap`.

    `cap` is the poll interval: a retry is never later than the next tick would be, so data
    is back within one interval of Kafka's return, and a long outage costs one attempt per
    interval, as polling does. `jitter()` returns a number in [0, 1); up to a fifth of a
    delay below the cap is shaved off so that exporters restarted together do not retry in
    lockstep. The cap itself is not shortened: that would make more than one attempt per
    interval.
    """
    if failures < 1:
        return 0.0
    delay = FIRST_DELAY * 2.0 ** min(failures - 1, 30)
    return min(cap, delay * (1.0 - 0.2 * jitter()))
