"""Test doubles at interfaces klag-collector owns, for embedders' tests and ours.

`FakeSource` stands in for the Kafka edge in clock-driven tests of the poller. It is
never evidence that a Kafka feature works: that is shown on a real broker.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer

from .model import ClusterData, RecordKey


class FakeSource:
    """An in-memory Source: returns `data`, or raises `error`; counts every call."""

    def __init__(
        self,
        data: Optional[ClusterData] = None,
        timestamps: Optional[Dict[RecordKey, Optional[int]]] = None,
    ) -> None:
        self.data = data or ClusterData(groups={}, committed={}, earliest={}, latest={})
        self.timestamps: Dict[RecordKey, Optional[int]] = dict(timestamps or {})
        self.error: Optional[Exception] = None
        self.reads: List[float] = []
        self.fetches: List[List[Any]] = []
        self.resets = 0

    def read(self, now: float) -> ClusterData:
        self.reads.append(now)
        if self.error is not None:
            raise self.error
        return self.data

    def fetch_timestamps(self, items: List[Any]) -> Dict[RecordKey, Optional[int]]:
        self.fetches.append(list(items))
        return {key: self.timestamps.get(key) for key, _ in items if key in self.timestamps}

    def reset(self) -> None:
        self.resets += 1


def run_now(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
    """A run_in_thread that runs in the calling thread: for clock-driven tests."""
    return defer.maybeDeferred(f, *args)


class HeldRunner:
    """A run_in_thread whose calls wait until the test releases them, one by one."""

    def __init__(self) -> None:
        self.pending: List[tuple] = []

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
