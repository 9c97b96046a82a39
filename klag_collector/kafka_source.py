"""The Kafka edge of a poller: one cluster read in turn through Kafka I/O and the cluster's policy.

`kafka_io` asks Kafka and says what it answered; `selection` decides what of it counts.
Every method here blocks and must run in a worker thread, never on the reactor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional

from . import selection
from .config import ClusterConfig, Performance
from .kafka_io import KafkaIO
from .model import ClusterData, ClusterRead, RecordKey
from .timestamps import FetchItem


class KafkaSource:
    """Reads a cluster's groups, offsets, watermarks, topic configs and record timestamps."""

    def __init__(self, cluster: ClusterConfig, performance: Performance) -> None:
        self.cluster = cluster
        self._kafka = KafkaIO(cluster.bootstrap_servers, cluster.kafka_args, performance)
        self._cleanup_policies = selection.CleanupPolicyCache(
            performance.compacted_topics_cache_ttl
        )

    def read(self, now: float) -> ClusterData:
        """Steps 1 to 5 of a collection cycle; committed offsets are read before watermarks."""
        kafka = self._kafka.admin_reads()
        names = selection.groups_to_describe(kafka.group_names(), self.cluster.groups)
        groups = kafka.describe_groups(names)
        offsets = kafka.committed_offsets(list(groups.described))
        topics = kafka.describe_topics()
        partitions = selection.watermark_partitions(topics, self.cluster.topics)
        read = ClusterRead(
            groups=groups,
            offsets=offsets,
            topics=topics,
            earliest=kafka.earliest_offsets(partitions),
            latest=kafka.latest_offsets(partitions),
        )
        data = selection.select(read, self.cluster.topics)
        involved = selection.involved_topics(data.committed)
        policies = kafka.cleanup_policies(self._cleanup_policies.due(involved, now))
        compacted = self._cleanup_policies.update(involved, policies, now)
        return replace(data, compacted_topics=compacted)

    def fetch_timestamps(self, items: List[FetchItem]) -> Dict[RecordKey, Optional[int]]:
        """Timestamps of the first record at or after each offset, in one batched fetch.

        A key whose partition ends before any record is found maps to None (a miss);
        a key not answered in time is left out (unknown).
        """
        return self._kafka.fetch_timestamps(items)

    def reset(self) -> None:
        """Drop the clients after a failure, so the next cycle reconnects from scratch."""
        self._kafka.reset()
