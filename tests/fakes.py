"""Test doubles at interfaces klag-collector owns.

`FakeSource` stands in for the Kafka edge in clock-driven tests of the poller. It is
never evidence that a Kafka feature works: that is shown on a real broker.
`pollers_on_clock` builds the pollers of a config text on a task.Clock over such sources,
and `one_partition_data` gives them consumer groups to report.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from klag_collector.config import Config, parse_config
from klag_collector.model import ClusterData, GroupInfo, RecordKey
from klag_collector.record_age import RecordTime
from klag_collector.poller import ClusterPoller, RunInThread, Source


class FakeSource:
    """An in-memory Source: returns `data`, or raises `error`; counts every call."""

    def __init__(
        self,
        data: Optional[ClusterData] = None,
        timestamps: Optional[Dict[RecordKey, RecordTime]] = None,
    ) -> None:
        self.data = data or ClusterData(groups={}, committed={}, earliest={}, latest={})
        self.timestamps: Dict[RecordKey, RecordTime] = dict(timestamps or {})
        self.error: Optional[Exception] = None
        self.reads: List[float] = []
        self.fetches: List[List[Any]] = []
        self.resets = 0

    def read(self, now: float) -> ClusterData:
        self.reads.append(now)
        if self.error is not None:
            raise self.error
        return self.data

    def fetch_timestamps(self, items: List[Any]) -> Dict[RecordKey, RecordTime]:
        self.fetches.append(list(items))
        return {key: self.timestamps.get(key) for key, *_ in items if key in self.timestamps}

    def reset(self) -> None:
        self.resets += 1


def run_now(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
    """A run_in_thread that runs in the calling thread: for clock-driven tests."""
    return defer.maybeDeferred(f, *args)


class InWorkerThread:
    """A run_in_thread that runs each call in a new thread and waits for it to end.

    The calls really leave the calling (reactor) thread, yet in a fixed order, so a
    clock-driven test stays deterministic. `spans` holds each call's start and end
    (time.perf_counter()): between them the calling thread only waits.
    """

    def __init__(self) -> None:
        self.spans: List[Tuple[float, float]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        results: List[Any] = []
        errors: List[BaseException] = []

        def run() -> None:
            try:
                results.append(f(*args))
            except BaseException as e:  # noqa: B902 - handed to the Deferred
                errors.append(e)

        started = time.perf_counter()
        worker = threading.Thread(target=run, name="klag-test-worker")
        worker.start()
        worker.join()
        self.spans.append((started, time.perf_counter()))
        return defer.fail(errors[0]) if errors else defer.succeed(results[0])


class HeldRunner:
    """A run_in_thread whose calls wait until the test releases them, one by one."""

    def __init__(self) -> None:
        self.pending: List[Tuple["defer.Deferred[Any]", Callable[..., Any], Tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((d, f, args))
        return d

    def release(self) -> None:
        """Run the oldest held call and fire its Deferred with the outcome."""
        d, f, args = self.pending.pop(0)
        outcome = defer.maybeDeferred(f, *args)
        if d.called:  # timed out (cancelled) meanwhile: the late outcome goes nowhere
            outcome.addErrback(lambda _: None)
        else:
            outcome.chainDeferred(d)


def one_partition_data(*groups: GroupInfo, committed: int) -> ClusterData:
    """`groups`, each committed at offset `committed` of partition t/0 (offsets 0 to 10, leader 1)."""
    tp = ("t", 0)
    return ClusterData(
        groups={g.name: g for g in groups},
        committed={g.name: {tp: committed} for g in groups},
        earliest={tp: 0},
        latest={tp: 10},
        leaders={tp: 1},
    )


def pollers_on_clock(
    config_text: str,
    sources: Mapping[str, Source],
    clock: IReactorTime,
    run_in_thread: RunInThread = run_now,
    on_change: Callable[[], None] = lambda: None,
    jitter: float = 0.0,
    keep_rows: bool = True,
) -> Tuple[Config, List[ClusterPoller]]:
    """The TOML config `config_text` and a poller per cluster, not started, driven by `clock`.

    Each reads `sources[cluster name]` (a FakeSource, say). `jitter` (in [0, 1), 0 by
    default) is fixed, so that a test knows the retry delays after failures. The snapshots
    keep their partition rows, as `--once`'s do, so that a test reads figures row by row;
    `keep_rows=False` makes them as a serving poller does.
    """
    config = parse_config(config_text, "<test config>", "toml")
    pollers = [
        ClusterPoller(c, config.exporter, sources[c.name], clock, run_in_thread, on_change,
                      lambda: jitter)
        for c in config.clusters
    ]
    for poller in pollers:
        poller.keep_rows = keep_rows
    return config, pollers


def lagging_rows(groups: int, partitions: int, leaders: int,
                 stamp_ms: int) -> Tuple[ClusterData, Dict[RecordKey, Optional[int]]]:
    """`groups` groups, each committed at its own offset (1,000 + its index) on every one of
    `partitions` partitions of topic t (led by `leaders` brokers in turn), all lagging, and
    the timestamp `stamp_ms` of every record they sit at."""
    tps = [("t", p) for p in range(partitions)]
    names = [f"g{i:04d}" for i in range(groups)]
    data = ClusterData(
        groups={name: GroupInfo(name, "Empty") for name in names},
        committed={name: {tp: 1_000 + i for tp in tps} for i, name in enumerate(names)},
        earliest={tp: 0 for tp in tps},
        latest={tp: 1_000_000 for tp in tps},
        leaders={tp: tp[1] % leaders for tp in tps},
    )
    stamps: Dict[RecordKey, Optional[int]] = {
        (tp[0], tp[1], 1_000 + i): stamp_ms for i in range(groups) for tp in tps
    }
    return data, stamps

