"""One cluster's collection loop as a Twisted service.

A LoopingCall ticks every `poll_interval`; each tick starts a cycle unless one is still
running (then the tick is skipped and counted) or a backoff wait is pending. A cycle
reads Kafka in worker threads, computes lag and builds families off the reactor, then
swaps in a new immutable snapshot with one attribute assignment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Protocol

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import families
from .backoff import backoff_delay
from .config import ClusterConfig, ExporterConfig
from .errors import describe_error
from .lag import compute_lag
from .metrics import CLUSTER, Granularity
from .model import ClusterData, ClusterHealth, LagView
from .timestamps import FetchItem, TimestampCache, TimestampSampler

# How long stopService waits for an in-flight cycle before giving up on it.
STOP_GRACE = 5.0

STARTING, OK, FAILING, STALE = "starting", "ok", "failing", "stale"


class Source(Protocol):
    """The blocking Kafka edge a poller reads from (KafkaSource, or a test fake)."""

    def read(self, now: float) -> ClusterData: ...

    def fetch_timestamps(self, items: Any) -> Any: ...

    def reset(self) -> None: ...


# Runs a blocking callable off the reactor thread and returns a Deferred of its result.
RunInThread = Callable[..., "defer.Deferred[Any]"]


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """One successful cycle's result: lag figures and their pre-built families."""

    view: LagView
    families: families.Families
    taken_at: float


def build_snapshot(
    data: ClusterData,
    timestamps: Any,
    now: float,
    base: families.Labels,
    granularity: Granularity,
) -> ClusterSnapshot:
    """Compute lag and build the families; runs in a worker thread."""
    view = compute_lag(data, timestamps, now)
    return ClusterSnapshot(view, families.lag_families(view, base, granularity), now)


class ClusterPoller(service.Service):
    """Polls one cluster; exposes the current snapshot and health to readers."""

    log = Logger()

    def __init__(
        self,
        cluster: ClusterConfig,
        exporter: ExporterConfig,
        source: Source,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        on_change: Callable[[], None] = lambda: None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = cluster.name
        self.cluster = cluster
        self.exporter = exporter
        self.source = source
        self.clock = clock
        self._run = run_in_thread
        self._on_change = on_change
        self._jitter = jitter
        self.base_labels: families.Labels = ((CLUSTER, cluster.name),) + tuple(
            cluster.labels.items()
        )
        sampling = exporter.timestamp_sampling
        self.cache = TimestampCache(sampling.cache_ttl)
        self.sampler: Optional[TimestampSampler] = None
        if sampling.enabled:
            self.sampler = TimestampSampler(
                self.cache, self._fetch_timestamps, sampling.max_concurrent_fetches
            )
        self.snapshot: Optional[ClusterSnapshot] = None
        self.health = ClusterHealth()
        self._loop: Optional[task.LoopingCall] = None
        self._running: Optional[defer.Deferred[None]] = None
        self._retry: Optional[IDelayedCall] = None
        self._stale_call: Optional[IDelayedCall] = None
        self._next_tick_at: Optional[float] = None

    # -- what readers see -------------------------------------------------------

    def fresh_snapshot(self, now: float) -> Optional[ClusterSnapshot]:
        """The current snapshot if it is recent enough to be reported, else None.

        Read once here, so a caller never pairs one snapshot with another's freshness
        when a cycle swaps it meanwhile.
        """
        snap = self.snapshot
        if snap is not None and now - snap.taken_at <= self.exporter.staleness_threshold:
            return snap
        return None

    def is_fresh(self, now: float) -> bool:
        """True when the last successful cycle is recent enough to be reported."""
        return self.fresh_snapshot(now) is not None

    def state(self, now: float) -> str:
        """starting | ok | failing | stale, as /ready reports it."""
        h = self.health
        if self.snapshot is None:
            return FAILING if h.consecutive_failures else STARTING
        if not self.is_fresh(now):
            return STALE
        return FAILING if h.consecutive_failures else OK

    def next_attempt_in(self, now: float) -> Optional[float]:
        """Seconds until the next cycle starts: a backoff retry or the next tick."""
        at = self.health.next_attempt_at if self._retry is not None else self._next_tick_at
        return None if at is None else max(0.0, at - now)

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall.withCount(self._tick)
        self._loop.clock = self.clock
        done = self._loop.start(self.exporter.poll_interval, now=True)
        done.addErrback(self._loop_died)

    def _loop_died(self, failure: Any) -> None:
        # _tick traps everything, so this means a bug; say so loudly rather than let
        # the metrics freeze while the process looks healthy.
        self.log.critical(
            "poll loop of cluster {cluster} died: {failure}", cluster=self.name, failure=failure
        )

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._running is not None:
            try:
                yield self._idle().addTimeout(STOP_GRACE, self.clock)
            except defer.TimeoutError:
                self.log.warn("cluster {cluster}: cycle still running at stop", cluster=self.name)
        # After the last cycle ended, which may have scheduled a retry or a stale check.
        self.cancel_retry()
        yield self._run(self.source.reset)

    # -- the loop -----------------------------------------------------------------

    def _tick(self, count: int) -> None:
        try:
            self._next_tick_at = self.clock.seconds() + self.exporter.poll_interval
            missed = count - 1
            if self._running is not None:
                missed += 1
            if missed:
                self.health = replace(self.health, skipped_ticks=self.health.skipped_ticks + missed)
                self._on_change()
            if self._running is None and self._retry is None:
                self.poll_now()
        except Exception:
            self.log.failure("cluster {cluster}: poll tick failed", cluster=self.name)

    def poll_now(self) -> "defer.Deferred[None]":
        """Start a cycle (unless one runs) and return a Deferred that fires when it ends."""
        if self._running is None:
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            self._retry = None
            self._running = self._cycle()
            self._running.addBoth(self._cycle_ended)
        return self._idle()

    def _idle(self) -> "defer.Deferred[None]":
        waiting: defer.Deferred[None] = defer.Deferred()
        if self._running is None:
            waiting.callback(None)
        else:
            self._running.addBoth(lambda result: (waiting.callback(None), result)[1])
        return waiting

    def _cycle_ended(self, result: Any) -> None:
        self._running = None
        if isinstance(result, Failure):
            # _cycle traps Kafka errors itself; reaching here is a bug, not an outage.
            self.log.failure("cluster {cluster}: cycle bug", result, cluster=self.name)

    @defer.inlineCallbacks
    def _cycle(self):  # type: ignore[no-untyped-def]
        start = self.clock.seconds()
        timeout = self.exporter.performance.kafka_timeout
        try:
            data = yield self._run(self.source.read, start).addTimeout(timeout, self.clock)
            timestamps = None
            if self.sampler is not None:
                timestamps = yield self.sampler.sample(data, self.clock.seconds())
            snapshot = yield self._run(
                build_snapshot,
                data,
                timestamps,
                self.clock.seconds(),
                self.base_labels,
                self.exporter.granularity,
            )
        except Exception as e:
            self._failed(e, start)
        else:
            self._succeeded(snapshot, start)
        self._on_change()

    def _fetch_timestamps(self, batch: "list[FetchItem]") -> "defer.Deferred[Any]":
        timeout = self.exporter.performance.kafka_timeout
        return self._run(self.source.fetch_timestamps, batch).addTimeout(timeout, self.clock)

    def _succeeded(self, snapshot: ClusterSnapshot, start: float) -> None:
        self.snapshot = snapshot
        self.health = replace(
            self.health,
            last_success=snapshot.taken_at,
            last_duration=self.clock.seconds() - start,
            consecutive_failures=0,
            last_error="",
            next_attempt_at=None,
            cache=self.cache.stats(),
        )
        if self._stale_call is not None and self._stale_call.active():
            self._stale_call.cancel()
        # Data turns stale between cycles when Kafka is down; re-render at that moment
        # so the series leave /metrics on time even while retries back off.
        delay = self.exporter.staleness_threshold + 0.001
        self._stale_call = self.clock.callLater(delay, self._on_change)

    def _failed(self, error: Exception, start: float) -> None:
        failures = self.health.consecutive_failures + 1
        now = self.clock.seconds()
        reason = describe_error(error)
        # Only a started poller retries: a one-shot cycle (collect_once) has no next attempt.
        delay = backoff_delay(failures, self._jitter) if self.running else None
        if delay is None:
            self.log.error(
                "cluster {cluster}: collection failed ({reason})", cluster=self.name, reason=reason
            )
        else:
            self.log.error(
                "cluster {cluster}: collection failed ({reason}); retry in {delay:.1f}s",
                cluster=self.name,
                reason=reason,
                delay=delay,
            )
        self.health = replace(
            self.health,
            last_duration=now - start,
            consecutive_failures=failures,
            failures_total=self.health.failures_total + 1,
            last_error=reason,
            next_attempt_at=None if delay is None else now + delay,
            cache=self.cache.stats(),
        )
        # Reconnect from scratch next time: a client that timed out may be wedged.
        self._run(self.source.reset).addErrback(lambda f: None)
        if delay is not None:
            self._retry = self.clock.callLater(delay, self._retry_now)

    def cancel_retry(self) -> None:
        """Forget a pending backoff retry (a one-shot collection has no next attempt)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._stale_call is not None and self._stale_call.active():
            self._stale_call.cancel()

    def _retry_now(self) -> None:
        self._retry = None
        if self._running is None:
            self.poll_now()
