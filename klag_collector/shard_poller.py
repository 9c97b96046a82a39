"""A cluster's poller in a sharded replica: it reads and reports only the shards it owns.

Its source reads for the shards of the moment (see sharding.ShardScope); each new snapshot
is then cut, in a worker thread, to what the replica owns (shard_view.restrict), and that
cut snapshot is what readers see. When shards are revoked the snapshot being served is cut
again at once, so their series leave /metrics before another replica can have collected
them; shards assigned are collected by the next cycle, and until then the cluster is not
ready.
"""

from __future__ import annotations

import random
from typing import Any, Callable, NamedTuple, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import metrics
from .config import ClusterConfig, ExporterConfig
from .families import Families, Family, Labels, sample_values
from .poller import ClusterPoller, ClusterSnapshot, RunInThread, Source
from .shard_view import restrict
from .sharding import Membership, ShardScope, Shards, no_shard


class ShardReport(NamedTuple):
    """A sharded cluster's standing at one moment, as /ready and the health series show it."""

    membership: Membership
    # the snapshot served covers every shard owned now (a cycle ran since the last assignment)
    collected: bool

    def families(self, base: Labels) -> Families:
        """The replica's own sharding series for the cluster."""
        values = ((metrics.SHARDS_OWNED, len(self.membership.shards.owned)),
                  (metrics.REBALANCES, self.membership.rebalances))
        return {d.name: Family(d, base, [()], sample_values([value])) for d, value in values}


class ShardedPoller(ClusterPoller):
    """A ClusterPoller whose readers see its snapshots cut to the shards the replica owns."""

    def __init__(
        self,
        cluster: ClusterConfig,
        exporter: ExporterConfig,
        source: Source,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        scope: ShardScope,
        membership: Membership,
        on_change: Callable[[], None] = lambda: None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(cluster, exporter, source, clock, run_in_thread, self._changed, jitter)
        # A revoke cuts the served snapshot again from its rows (shard_view.restrict): the
        # aggregate counts are recounted from them, at any granularity.
        self.keep_rows = True
        self._tell = on_change
        self._work = run_in_thread
        self.scope = scope
        self.membership = membership
        # The poller's latest snapshot and the shards its read was for.
        self._read_of: Optional[Tuple[ClusterSnapshot, Shards]] = None
        # What readers see: the latest snapshot cut, and the shards it has whole.
        self._served: Optional[ClusterSnapshot] = None
        self._served_shards = no_shard(scope.current.count)
        # One cut at a time; a change during one asks for another after it.
        self._cutting = False
        self._cut_again = False

    def follow(self, membership: Membership) -> None:
        """The replica's shards are now *membership*'s (on the reactor thread)."""
        revoked = not membership.shards.covers(self.scope.current)
        self.membership = membership
        self.scope.current = membership.shards
        if revoked:
            self._cut()
        else:
            self._tell()

    def fresh_snapshot(self, now: float) -> Optional[ClusterSnapshot]:
        """The cut snapshot, while the poller's own is fresh enough to be reported."""
        served = self._served
        if super().fresh_snapshot(now) is None or served is None:
            return None
        return served if now - served.taken_at <= self.exporter.staleness_threshold else None

    def report(self, now: float) -> ShardReport:
        """Where the cluster stands in the sharding now."""
        collected = (self.membership.settled and self.fresh_snapshot(now) is not None
                     and self._served_shards.covers(self.scope.current))
        return ShardReport(self.membership, collected)

    # -- cutting ----------------------------------------------------------------------

    def _changed(self) -> None:
        snapshot = self.snapshot
        if snapshot is None or (self._read_of is not None and self._read_of[0] is snapshot):
            self._tell()
            return
        read = self.scope.last_read or no_shard(self.scope.current.count)
        self._read_of = (snapshot, read)
        self._cut()

    def _cut(self) -> None:
        if self._cutting:
            self._cut_again = True
            return
        if self._read_of is None:  # nothing collected yet: nothing to cut
            self._tell()
            return
        self._cutting = True
        snapshot, read = self._read_of
        owned = self.scope.current
        cut = self._work(restrict, snapshot, read, owned, self.base_labels,
                         self.exporter.granularity)
        cut.addCallbacks(self._cut_made, self._cut_failed, callbackArgs=(read & owned,))
        cut.addBoth(self._cut_ended)

    def _cut_made(self, served: ClusterSnapshot, shards: Shards) -> None:
        self._served, self._served_shards = served, shards

    def _cut_failed(self, failure: Failure) -> None:
        # Serving what may hold revoked shards would report them twice: serve nothing.
        self.log.failure("cluster {cluster}: cutting the snapshot to the owned shards failed",
                         failure, cluster=self.name)
        self._served, self._served_shards = None, no_shard(self.scope.current.count)

    def _cut_ended(self, _: Any) -> None:
        self._cutting = False
        if self._cut_again:
            self._cut_again = False
            self._cut()
        else:
            self._tell()


def shard_report(poller: ClusterPoller, now: float) -> Optional[ShardReport]:
    """The poller's sharding standing, or None for a poller of an unsharded replica."""
    return poller.report(now) if isinstance(poller, ShardedPoller) else None
