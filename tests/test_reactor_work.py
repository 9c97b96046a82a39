"""No per-row work on the reactor thread: a poller's cycles over ~50k group-partition rows.

The reactor thread only starts the Kafka calls and the worker-thread steps and joins
them; what grows with the rows (timestamp planning and the cache, lag, families) runs
in worker threads. Here the worker threads are real (fakes.InWorkerThread) and the
reactor thread is the test's own, which drives a task.Clock.
"""

from __future__ import annotations

import gc
import threading
import time
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from klag_collector import families, poller, timestamps
from klag_collector.model import ClusterData, RecordKey
from klag_collector.timestamps import TimestampCache
from fakes import FakeSource, InWorkerThread, lagging_rows, pollers_on_clock

T0 = 1_700_000_000.0
GROUPS, PARTITIONS, LEADERS = 500, 100, 3

CONFIG = """
[exporter]
poll_interval = "10s"
granularity = "partition"
[exporter.performance]
kafka_timeout = "60s"
[[clusters]]
name = "big"
bootstrap_servers = "127.0.0.1:1"
"""

# The functions whose work grows with the rows, as the cycle reaches them.
PER_ROW: List[Tuple[Any, str]] = [
    (poller, "compute_lag"),
    (families, "lag_families"),
    (timestamps, "timestamp_requests"),
    (timestamps, "batches_by_leader"),
    (TimestampCache, "lookup"),
    (TimestampCache, "store"),
    (TimestampCache, "maybe_sweep"),
    (TimestampCache, "stats"),
]


@lru_cache(maxsize=1)
def many_rows() -> Tuple[ClusterData, Dict[RecordKey, Optional[int]]]:
    """GROUPS x PARTITIONS lagging rows, each at its own offset, and their timestamps."""
    return lagging_rows(GROUPS, PARTITIONS, LEADERS, int(T0 * 1000) - 60_000)


class ReactorWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        data, stamps = many_rows()
        self.source = FakeSource(data, stamps)
        self.runner = InWorkerThread()
        _, (self.poller,) = pollers_on_clock(CONFIG, {"big": self.source}, self.clock, self.runner)

    def two_cycles(self) -> None:
        """The first cycle fetches every timestamp, the second finds them all cached."""
        self.poller.startService()
        self.clock.advance(10)
        self.successResultOf(self.poller.stopService())
        self.assertEqual(self.poller.health.consecutive_failures, 0)
        snapshot = self.poller.snapshot
        assert snapshot is not None
        self.assertEqual(len(snapshot.view.partitions), GROUPS * PARTITIONS)
        self.assertEqual(self.poller.health.cache.hits, GROUPS * PARTITIONS)
        self.assertEqual(len(self.source.fetches), LEADERS)

    def test_per_row_functions_never_run_on_the_reactor_thread(self) -> None:
        """Every per-row function is called, and only ever in a worker thread."""
        reactor_thread = threading.get_ident()
        calls: List[Tuple[str, bool]] = []

        def guarded(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kw: Any) -> Any:
                calls.append((name, threading.get_ident() == reactor_thread))
                return f(*args, **kw)

            return call

        for owner, name in PER_ROW:
            self.patch(owner, name, guarded(name, getattr(owner, name)))
        self.two_cycles()
        self.assertEqual({name for name, _ in calls}, {name for _, name in PER_ROW})
        self.assertEqual(sorted({name for name, on_reactor in calls if on_reactor}), [])

    def test_no_reactor_stretch_of_a_cycle_takes_more_than_a_few_ms(self) -> None:
        """Between two worker-thread calls, the reactor thread is busy for under 20 ms.

        From the end of the first cycle's read (before it, no rows are known) to the end
        of the second cycle, with the garbage collector held off so that a collection it
        happens to start on this thread does not count. The first snapshot is kept
        alive: freeing the one a cycle replaces is a single C-level cascade that holds
        the GIL for as long in whichever thread it runs (about 2 ms per 1,000 rows).
        """
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.poller.startService()
        replaced = self.poller.snapshot
        self.clock.advance(10)
        ended = time.perf_counter()
        self.assertIsNot(self.poller.snapshot, replaced)
        spans = self.runner.spans
        stretches = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])]
        longest = max(stretches + [ended - spans[-1][1]])
        self.assertLess(longest, 0.020, f"{longest * 1000:.1f} ms on the reactor thread at once")
        self.successResultOf(self.poller.stopService())
