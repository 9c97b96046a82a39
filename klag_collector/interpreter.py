"""How the exporter's own process sets up the interpreter: `klag-collector` and `twistd klag`
call `tune()`; a host embedding the service keeps its own settings.

The reactor thread answers scrapes while worker threads compute and render tens of thousands
of rows: the switch interval and the collector's settings shorten how long a scrape waits
behind them, and one malloc arena keeps the memory the threads free for the next cycle.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys
import threading
import time
from typing import NamedTuple, Optional

# Seconds a thread holds the GIL before one waiting for it is let in (Python's default is
# 5 ms). A scrape needs the GIL back after each socket call; at 5 ms each it waited 25-100 ms
# behind a render of 60k series. At 10k rows, a scrape during a render took p50 3.5 ms at
# 0.5 ms, 2.1 ms at 0.2 ms and 1.9 ms at 0.1 ms; the CPU a minute stayed within the spread of
# runs (a thread is let in only when one waits).
SWITCH_INTERVAL = 0.0002
# Allocations between two collections of the youngest generation (Python's default: 700).
# A cycle makes a few hundred thousand objects that hold no reference cycle; at 700 the
# collector ran ~400 times a cycle for a quarter of the cycle's CPU.
YOUNG_THRESHOLD = 10_000
# The older generations are not collected on the allocator's count. What survives a young
# collection is mostly a snapshot's rows, which die by reference count when the next snapshot
# replaces them; yet at 60k rows a middle collection ran every cycle (up to 20 ms) and an old
# one every other (up to 40 ms), each holding the GIL a scrape waited for, for 70 ms of CPU
# a cycle. Seven cycles left 120 objects in reference cycles: a thread collects everything
# every FULL_COLLECTION_EVERY seconds instead.
NEVER = 1 << 30
FULL_COLLECTION_EVERY = 600.0
# glibc gives each thread that allocates an arena of its own, up to 8 per core, and keeps
# what a cycle freed in each: at 10k rows one arena held RSS at 73 MiB, the default 76-85.
# The GIL lets one thread allocate at a time anyway.
MALLOC_ARENAS = 1
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


class Tuned(NamedTuple):
    """What tune() set; malloc_arenas is None where the C library has no mallopt (not glibc)."""

    switch_interval: float
    young_threshold: int
    full_collection_every: float
    malloc_arenas: Optional[int]


def tune() -> Tuned:
    """Set the switch interval, the collector and malloc for a process that is the exporter."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)
    # What is alive now (modules, classes, the config) lives as long as the process: moved
    # out of the collector's generations, a full collection walks only what cycles made.
    gc.freeze()
    every = FULL_COLLECTION_EVERY
    collecting = functools.partial(_start_collecting, every)
    collecting()
    # twistd forks to become a daemon after building the service: a thread does not follow.
    os.register_at_fork(after_in_child=collecting)
    return Tuned(SWITCH_INTERVAL, YOUNG_THRESHOLD, every, _limit_malloc_arenas(MALLOC_ARENAS))


def _start_collecting(every: float) -> None:
    threading.Thread(target=_collect_every, args=(every,), name="klag-gc", daemon=True).start()


def _collect_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        gc.collect()


def _limit_malloc_arenas(arenas: int) -> Optional[int]:
    # Before the thread pools start: an arena a thread already has stays.
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl, macOS: no such knob
        return None
    return arenas if mallopt(_M_ARENA_MAX, arenas) == 1 else None
