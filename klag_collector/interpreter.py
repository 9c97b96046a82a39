"""How the exporter's own process sets up the interpreter: `klag-collector` and `twistd klag`
call `tune()`; a host embedding the service keeps its own settings.

The reactor thread answers scrapes while worker threads compute and render tens of thousands
of rows. Both settings shorten how long a scrape waits behind them.
"""

from __future__ import annotations

import gc
import sys

# Seconds a thread holds the GIL before one waiting for it is let in (Python's default is
# 5 ms). A scrape needs the GIL back after each socket call; at 5 ms each it waited 25-100 ms
# behind a render of 60k series, at 0.5 ms it waits 2-30 ms.
SWITCH_INTERVAL = 0.0005
# Allocations between two collections of the youngest generation (Python's default: 700).
# A cycle makes a few hundred thousand objects that hold no reference cycle; at 700 the
# collector ran ~400 times a cycle for a quarter of the cycle's CPU.
YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """Set the switch interval and the collector for a process that is the exporter."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    # What is alive now (modules, classes, the config) lives as long as the process: moved
    # out of the collector's generations, a full collection walks only what cycles made.
    gc.freeze()
