"""The Kafka edge: blocking kafka-python calls that read one cluster into plain data.

Every method here blocks and must run in a worker thread, never on the reactor.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, OffsetSpec
from kafka.errors import BrokerResponseError

from . import kafka_clients
from .config import ClusterConfig, Performance
from .model import TP, ClusterData, GroupInfo, Member, RecordKey
from .timestamps import FetchItem

# Groups per DescribeGroups call: bounds one request's size on clusters with thousands of groups.
DESCRIBE_BATCH = 500
# Bytes fetched per partition when sampling timestamps: one small batch is all we need.
SAMPLE_FETCH_BYTES = 16 * 1024
# Empty polls in a row after which the fetch looks for partitions read to their end.
IDLE_POLLS_BEFORE_END_CHECK = 2
# Records one poll may return: enough to answer thousands of partitions in a few polls.
SAMPLE_POLL_RECORDS = 20_000

OFFSETS_UNAVAILABLE = "offsets_unavailable"
DESCRIBE_FAILED = "describe_failed"


def _member(raw: Mapping[str, Any]) -> Member:
    return Member(
        consumer_id=raw.get("member_id") or "",
        client_id=raw.get("client_id") or "",
        # The coordinator reports hosts as "/1.2.3.4"; the slash is noise in a label.
        host=(raw.get("client_host") or "").lstrip("/"),
    )


def group_info(name: str, raw: Mapping[str, Any]) -> GroupInfo:
    """A GroupInfo from one entry of kafka-python's describe_groups() result."""
    assignments: Dict[TP, Member] = {}
    members = raw.get("members") or []
    for m in members:
        member = _member(m)
        assignment = m.get("member_assignment") or {}
        if not isinstance(assignment, Mapping):  # undecodable: the group uses another protocol
            continue
        for entry in assignment.get("assigned_partitions") or []:
            for partition in entry["partitions"]:
                assignments[(entry["topic"], partition)] = member
    return GroupInfo(
        name=name,
        state=raw.get("group_state") or "Unknown",
        members=len(members),
        assignments=assignments,
    )


class KafkaSource:
    """Reads a cluster's groups, offsets, watermarks, topic configs and record timestamps."""

    def __init__(self, cluster: ClusterConfig, performance: Performance) -> None:
        self.cluster = cluster
        self.performance = performance
        self._args: Dict[str, Any] = dict(cluster.kafka_args)
        self._args["bootstrap_servers"] = list(cluster.bootstrap_servers)
        timeout_ms = int(performance.kafka_timeout * 1000)
        self._args.setdefault("request_timeout_ms", timeout_ms)
        # kafka-python's own 30 s bootstrap default would outlast our cycle timeout; ending a
        # little before it lets a failed bootstrap report its cause (kafka_clients.build)
        # instead of losing the race to the cycle's "timed out".
        self._args.setdefault("bootstrap_timeout_ms", int(timeout_ms * 0.8))
        self._admin: Optional[KafkaAdminClient] = None
        self._consumers: List[KafkaConsumer] = []
        self._lock = threading.Lock()
        self._compacted: Dict[str, Tuple[bool, float]] = {}

    # -- clients ------------------------------------------------------------

    def admin(self) -> KafkaAdminClient:
        """The cluster's admin client, created on first use."""
        with self._lock:
            if self._admin is not None:
                return self._admin
        # The constructor blocks until a broker answers: outside the lock, so that reset()
        # after a timed-out cycle never waits for it.
        admin = kafka_clients.build(KafkaAdminClient, self._args)
        with self._lock:
            if self._admin is None:
                self._admin = admin
                return admin
        admin.close()
        return self._admin

    def reset(self) -> None:
        """Drop the clients after a failure, so the next cycle reconnects from scratch."""
        with self._lock:
            admin, self._admin = self._admin, None
            consumers, self._consumers = self._consumers, []
        for client in [admin, *consumers]:
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken client may fail; it is gone either way
                    pass

    # -- one cycle's read -----------------------------------------------------

    def read(self, now: float) -> ClusterData:
        """Steps 1 to 5 of a collection cycle; committed offsets are read before watermarks."""
        admin = self.admin()
        listed = admin.list_groups()
        names = sorted(
            g["group_id"] for g in listed if self.cluster.groups.allows(g["group_id"])
        )
        skipped: Dict[str, int] = {}
        groups = self._describe(admin, names, skipped)
        committed = self._committed(admin, list(groups), skipped)
        for name in [n for n in groups if n not in committed]:
            del groups[name]

        topics = self._topic_partitions(admin)
        partitions = [TopicPartition(t, p) for t, ps in topics.items() for p in ps]
        leaders = {(t, p): leader for t, ps in topics.items() for p, leader in ps.items()}
        earliest = self._offsets(admin, partitions, OffsetSpec.EARLIEST)
        latest = self._offsets(admin, partitions, OffsetSpec.LATEST)
        involved = {tp[0] for offsets in committed.values() for tp in offsets}
        return ClusterData(
            groups=groups,
            committed=committed,
            earliest=earliest,
            latest=latest,
            compacted_topics=frozenset(self._compacted_topics(admin, involved, now)),
            leaders={tp: leader for tp, leader in leaders.items() if leader >= 0},
            skipped_groups=skipped,
        )

    def _describe(
        self, admin: KafkaAdminClient, names: List[str], skipped: Dict[str, int]
    ) -> Dict[str, GroupInfo]:
        groups: Dict[str, GroupInfo] = {}
        for start in range(0, len(names), DESCRIBE_BATCH):
            described = admin.describe_groups(names[start : start + DESCRIBE_BATCH])
            for name, raw in described.items():
                if raw.get("error"):
                    skipped[DESCRIBE_FAILED] = skipped.get(DESCRIBE_FAILED, 0) + 1
                    continue
                groups[name] = group_info(name, raw)
        return groups

    def _committed(
        self, admin: KafkaAdminClient, names: List[str], skipped: Dict[str, int]
    ) -> Dict[str, Dict[TP, int]]:
        if not names:
            return {}
        try:
            raw = admin.list_group_offsets(names)
        except BrokerResponseError:
            # One group's error fails the whole batched request; ask group by group so
            # the others are still reported and only the broken one is left out.
            raw = {}
            for name in names:
                try:
                    raw.update(admin.list_group_offsets([name]))
                except BrokerResponseError:
                    skipped[OFFSETS_UNAVAILABLE] = skipped.get(OFFSETS_UNAVAILABLE, 0) + 1
        result: Dict[str, Dict[TP, int]] = {}
        for name, offsets in raw.items():
            result[name] = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in offsets.items()
                # -1 means "no committed offset": not a position to measure lag from.
                if meta.offset >= 0 and self.cluster.topics.allows(tp.topic)
            }
        return result

    def _topic_partitions(self, admin: KafkaAdminClient) -> Dict[str, Dict[int, int]]:
        """topic -> partition -> leader id (-1 when leaderless), for the kept topics."""
        kept: Dict[str, Dict[int, int]] = {}
        for topic in admin.describe_topics():
            name = topic["name"]
            if topic.get("error_code") or not self.cluster.topics.allows(name):
                continue
            kept[name] = {p["partition_index"]: p["leader_id"] for p in topic["partitions"]}
        return kept

    def _offsets(
        self, admin: KafkaAdminClient, partitions: List[TopicPartition], spec: OffsetSpec
    ) -> Dict[TP, int]:
        if not partitions:
            return {}
        timeout_ms = int(self.performance.offset_fetch_timeout * 1000)
        found = admin.list_partition_offsets({tp: spec for tp in partitions}, timeout_ms=timeout_ms)
        return {(tp.topic, tp.partition): o.offset for tp, o in found.items() if o.offset >= 0}

    def _compacted_topics(
        self, admin: KafkaAdminClient, topics: Iterable[str], now: float
    ) -> Set[str]:
        topics = set(topics)
        # cleanup.policy rarely changes: re-read it only every compacted_topics_cache_ttl.
        ttl = self.performance.compacted_topics_cache_ttl
        due = sorted(
            t for t in topics if t not in self._compacted or now - self._compacted[t][1] >= ttl
        )
        if due:
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, t, {"cleanup.policy": None}) for t in due
            ]
            found = admin.describe_configs(resources, config_filter="all").get("topic", {})
            for topic in due:
                policy = found.get(topic, {}).get("cleanup.policy", {}).get("value") or ""
                self._compacted[topic] = ("compact" in policy, now)
        for gone in set(self._compacted) - topics:
            del self._compacted[gone]
        return {t for t in topics if self._compacted[t][0]}

    # -- timestamps -----------------------------------------------------------

    def fetch_timestamps(self, items: List[FetchItem]) -> Dict[RecordKey, Optional[int]]:
        """Timestamps of the first record at or after each offset, in one batched fetch.

        A key whose partition ends before any record is found maps to None (a miss);
        a key not answered in time is left out (unknown).
        """
        # A fresh consumer per fetch: a reused kafka-python consumer keeps records it
        # buffered for a paused partition and then never fetches that partition again.
        consumer = kafka_clients.build(KafkaConsumer, dict(
            self._args,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=SAMPLE_FETCH_BYTES,
            fetch_max_wait_ms=100,
            max_poll_records=SAMPLE_POLL_RECORDS,
        ))
        with self._lock:
            self._consumers.append(consumer)
        try:
            return self._sample(consumer, items)
        finally:
            with self._lock:
                if consumer in self._consumers:
                    self._consumers.remove(consumer)
            consumer.close()

    def _sample(
        self, consumer: KafkaConsumer, items: List[FetchItem]
    ) -> Dict[RecordKey, Optional[int]]:
        # Groups at different offsets of one partition share a batch: each partition
        # has a queue of wanted offsets, read in ascending order by re-seeking.
        pending: Dict[TopicPartition, List[Tuple[RecordKey, int]]] = {}
        for key, end in sorted(items):
            pending.setdefault(TopicPartition(key[0], key[1]), []).append((key, end))
        sought: Dict[TopicPartition, int] = {}
        consumer.assign(list(pending))
        for tp, queue in pending.items():
            sought[tp] = queue[0][0][2]
            consumer.seek(tp, sought[tp])
        found: Dict[RecordKey, Optional[int]] = {}
        # Return what was found a little before the cycle's own timeout gives up on us.
        deadline = time.monotonic() + 0.8 * self.performance.kafka_timeout
        idle = 0
        while pending and time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=200)
            idle = 0 if records else idle + 1
            for tp, batch in records.items():
                queue = pending.get(tp)
                # Records from before the last seek are not the ones asked for.
                run = [r for r in batch if r.offset >= sought[tp]] if queue else []
                if not run:
                    continue
                # `run` is contiguous from the sought offset: it answers every wanted
                # offset up to its last record (the first record at or after each).
                while queue and queue[0][0][2] <= run[-1].offset:
                    key, _ = queue.pop(0)
                    stamp = next(r for r in run if r.offset >= key[2]).timestamp
                    found[key] = stamp if stamp is not None and stamp >= 0 else None
                if queue:
                    sought[tp] = queue[0][0][2]
                    consumer.seek(tp, sought[tp])
                else:
                    del pending[tp]
                    consumer.pause(tp)
            if idle < IDLE_POLLS_BEFORE_END_CHECK:
                continue
            # Nothing arrives any more: the partitions still pending may have no data record
            # left. position() walks every assigned partition in kafka-python, so checking
            # after every poll (the first ones are empty while fetches are in flight) would
            # cost O(partitions^2).
            for tp in [tp for tp, queue in pending.items() if consumer.position(tp) >= queue[0][1]]:
                # Read up to the end without a data record (transaction markers, or
                # compaction removed the rest): there is nothing to date the lag by.
                for key, _ in pending.pop(tp):
                    found[key] = None
                consumer.pause(tp)
        return found
