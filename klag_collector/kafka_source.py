"""The Kafka edge of a poller: one cluster read in turn through Kafka I/O and the cluster's policy.

`kafka_io` asks Kafka and says what it answered; `selection` decides what of it counts.
Every method here blocks and must run in a worker thread, never on the reactor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, FrozenSet, List, Mapping, Optional

from twisted.logger import Logger

from . import selection, sharding
from .config import ClusterConfig, Performance
from .kafka_io import KafkaIO
from .model import ClusterData, ClusterRead, GroupDescriptions, RecordKey
from .record_age import RecordTime
from .sharding import G, ShardScope, Shards
from .timestamps import FetchItem


class KafkaSource:
    """Reads a cluster's groups, offsets, watermarks, topic configs and record timestamps."""

    log = Logger()

    def __init__(
        self, cluster: ClusterConfig, performance: Performance, scope: Optional[ShardScope] = None
    ) -> None:
        self.cluster = cluster
        # Sharded: each read asks only about the groups of the shards the scope names now.
        self._scope = scope
        self._kafka = KafkaIO(cluster.bootstrap_servers, cluster.kafka_args, performance)
        self._cleanup_policies = selection.CleanupPolicyCache(
            performance.compacted_topics_cache_ttl
        )
        # describe failures already logged: each (group, reason) is logged once while it lasts
        self._logged_failures: FrozenSet[selection.Failure] = frozenset()

    def read(self, now: float) -> ClusterData:
        """Steps 1 to 5 of a collection cycle; committed offsets are read before watermarks."""
        shards = self._scope.for_read() if self._scope is not None else None
        kafka = self._kafka.admin_reads()
        every = kafka.listed_groups()
        listed = _owned(selection.groups_to_describe(every, self.cluster.groups), shards)
        groups = kafka.describe_groups(listed)
        share = kafka.read_share_groups(
            _owned(selection.share_groups_to_describe(every, self.cluster.groups), shards)
        )
        self._log_failures(groups, share.failed)
        offsets = kafka.committed_offsets(selection.offset_groups(groups))
        topics = kafka.describe_topics()
        partitions = selection.watermark_partitions(topics, self.cluster.topics)
        if shards is not None:
            needed = sharding.consumed_partitions(offsets.by_group, share.offsets)
            partitions = sharding.partitions_to_read(partitions, shards, needed)
        watermarks = kafka.watermarks(partitions)
        read = ClusterRead(
            groups=groups,
            offsets=offsets,
            topics=topics,
            earliest=watermarks.earliest,
            latest=watermarks.latest,
            share=share,
        )
        data = selection.select(read, self.cluster.topics)
        involved = selection.involved_topics(data.committed)
        policies = kafka.cleanup_policies(self._cleanup_policies.due(involved, now))
        compacted = self._cleanup_policies.update(involved, policies, now)
        return replace(data, compacted_topics=compacted)

    def _log_failures(self, groups: GroupDescriptions, share_failed: Mapping[str, str]) -> None:
        # Group ids are unique across group types, so one remembered set serves both kinds.
        failures = {**selection.describe_failures(groups), **share_failed}
        new, self._logged_failures = selection.failures_to_log(failures, self._logged_failures)
        for group, reason in new:
            if group in share_failed:
                self.log.warn(
                    "cluster {cluster}: share group {group}: {reason}; reporting what was read",
                    cluster=self.cluster.name, group=group, reason=reason,
                )
                continue
            self.log.warn(
                "cluster {cluster}: group {group} could not be described ({reason}); "
                "reporting its offsets and lag with state Unknown",
                cluster=self.cluster.name, group=group, reason=reason,
            )

    def fetch_timestamps(self, items: List[FetchItem]) -> Dict[RecordKey, RecordTime]:
        """Timestamps of the first record at or after each offset, in one batched fetch.

        A key whose partition ends before any record is found maps to None (a miss);
        a key not answered in time is left out (unknown).
        """
        return self._kafka.fetch_timestamps(items)

    def reset(self) -> None:
        """Drop the clients after a failure, so the next cycle reconnects from scratch."""
        self._kafka.reset()


def _owned(groups: List[G], shards: Optional[Shards]) -> List[G]:
    """The groups a read asks about: all of them unsharded, else those of its shards."""
    return groups if shards is None else sharding.owned_groups(groups, shards)
