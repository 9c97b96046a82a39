"""Setup of cycle_bench's topics, records and groups (runs in a child process).

A child process, so that its clients and buffers do not count in the bench's RSS.
Topics are shared by every size of a --scale run; each size has groups of its own.
"""

from __future__ import annotations

import logging
import math
import pathlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent

# Milliseconds between the timestamps of consecutive records of a partition: record r of R
# is (R - r) minutes old, so a group at offset o lags about (R - o) minutes.
RECORD_SPACING_MS = 60_000
# Topics per CreateTopics request.
CREATE_BATCH = 20


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout carries only the summary (or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Layout(NamedTuple):
    """What the bench builds on the broker: the topics, and the records in each partition."""

    prefix: str
    partitions: int
    per_topic: int
    records: int
    # every row lags (no group at the log end): every row needs a timestamp
    all_lagging: bool

    def topics(self) -> List[Tuple[str, int]]:
        """[(topic, partition count)]: P partitions as topics of `per_topic` (the last may be smaller)."""
        n = math.ceil(self.partitions / self.per_topic)
        return [(f"{self.prefix}-t{i:04d}", min(self.per_topic, self.partitions - i * self.per_topic))
                for i in range(n)]

    def committed_offset(self, group_index: int, topic_count: int, partition: int) -> int:
        """Where group i stands on a partition of its topic, varying per group.

        Groups sharing a topic stand at different offsets (as real groups do); one partition
        in records + 1 has lag 0, unless every row lags (offsets 0..records - 1).
        """
        j = group_index // topic_count
        return (j + partition) % (self.records if self.all_lagging else self.records + 1)


class GroupSet(NamedTuple):
    """One size's groups: `size` groups named `<prefix>-gNNNNN`."""

    prefix: str
    size: int

    def names(self) -> List[str]:
        return [f"{self.prefix}-g{i:05d}" for i in range(self.size)]


def setup_cluster(bootstrap: str, layout: Layout, group_sets: Sequence[GroupSet],
                  reuse: bool) -> Dict[str, Any]:
    """Create topics, produce, commit every group set's offsets. Returns timings and counts."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Setup clients warn about transient states (no node yet, leaders moving) they retry.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="klag-bench-setup",
                             request_timeout_ms=120_000)
    try:
        out = create_topics(admin, layout, reuse)
        out.update(produce(bootstrap, layout, out.pop("created")))
        out["groups"] = [commit_groups(admin, layout, groups, reuse) for groups in group_sets]
    finally:
        admin.close()
    out["topics"] = len(layout.topics())
    return out


def create_topics(admin: Any, layout: Layout, reuse: bool) -> Dict[str, Any]:
    t0 = time.perf_counter()
    topics = layout.topics()
    existing: Dict[str, int] = {}
    if reuse:
        mine = [t for t in admin.list_topics() if t.startswith(layout.prefix + "-t")]
        if mine:
            for t in admin.describe_topics(mine):
                existing[t["name"]] = len(t["partitions"])
    for topic, n in topics:
        if topic in existing and existing[topic] != n:
            raise SystemExit(f"--reuse: topic {topic} has {existing[topic]} partitions, "
                             f"expected {n}; use another --prefix")
    create = [(t, n) for t, n in topics if t not in existing]
    for start in range(0, len(create), CREATE_BATCH):
        chunk = create[start:start + CREATE_BATCH]
        admin.create_topics({t: {"num_partitions": n, "replication_factor": 1} for t, n in chunk},
                            timeout_ms=120_000)
    if create:
        admin.wait_for_topics([t for t, _ in create], timeout_ms=300_000)
    seconds = time.perf_counter() - t0
    log(f"setup: {len(create)} topics created ({len(topics) - len(create)} reused) in {seconds:.1f}s")
    return {"created": create, "reused_topics": len(topics) - len(create),
            "create_topics_s": seconds}


def produce(bootstrap: str, layout: Layout, topics: List[Tuple[str, int]]) -> Dict[str, Any]:
    """One batch of `records` records per partition of the new topics, explicit timestamps."""
    from kafka import KafkaProducer

    t0 = time.perf_counter()
    produced = 0
    errors: List[BaseException] = []
    if topics:
        # Fresh partitions answer NotLeaderForPartition for a moment after wait_for_topics:
        # retry until delivery_timeout; one request in flight keeps each partition's records
        # in order across retries.
        logging.getLogger("kafka.producer").setLevel(logging.ERROR)
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="klag-bench-producer",
                                 acks=1, linger_ms=50, batch_size=64 * 1024,
                                 enable_idempotence=False, max_in_flight_requests_per_connection=1,
                                 retries=1_000_000, retry_backoff_ms=250,
                                 request_timeout_ms=60_000, delivery_timeout_ms=300_000)
        now_ms = int(time.time() * 1000)
        stamps = [now_ms - (layout.records - r) * RECORD_SPACING_MS for r in range(layout.records)]
        try:
            for topic, n in topics:
                for p in range(n):
                    for ts in stamps:
                        producer.send(topic, value=b"klag-bench-record", partition=p,
                                      timestamp_ms=ts).add_errback(errors.append)
                        produced += 1
            producer.flush(timeout=600)
        finally:
            producer.close(timeout=30)
    if errors:
        raise SystemExit(f"setup: {len(errors)} produce errors, first: {errors[0]!r}")
    seconds = time.perf_counter() - t0
    log(f"setup: {produced} records produced in {seconds:.1f}s")
    return {"records_produced": produced, "produce_s": seconds}


def commit_groups(admin: Any, layout: Layout, groups: GroupSet, reuse: bool) -> Dict[str, Any]:
    """Group offsets (alter_group_offsets on empty groups), a few groups in parallel."""
    sys.path.insert(0, str(REPO / "tests"))
    from kafka.structs import TopicPartition
    from kafkahelp import commit

    t0 = time.perf_counter()
    topics = layout.topics()
    have = set()
    if reuse:
        have = {g["group_id"] for g in admin.list_groups()
                if g["group_id"].startswith(groups.prefix + "-g")}
    todo = [(i, g) for i, g in enumerate(groups.names()) if g not in have]

    def commit_one(item: Tuple[int, str]) -> None:
        i, group = item
        topic, n = topics[i % len(topics)]
        offsets = {TopicPartition(topic, p): layout.committed_offset(i, len(topics), p)
                   for p in range(n)}
        commit(admin, group, offsets, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(commit_one, todo))
    seconds = time.perf_counter() - t0
    log(f"setup: {len(todo)} groups {groups.prefix}-g* committed "
        f"({groups.size - len(todo)} reused) in {seconds:.1f}s")
    return {"prefix": groups.prefix, "groups": groups.size, "groups_committed": len(todo),
            "reused_groups": groups.size - len(todo), "commit_s": seconds}


def drop(bootstrap: str, layout: Layout, group_sets: Sequence[GroupSet]) -> Dict[str, Any]:
    """Delete the bench's groups and topics (--drop), so a shared broker is left as it was."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from kafka import KafkaAdminClient

    t0 = time.perf_counter()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="klag-bench-drop",
                             request_timeout_ms=120_000)
    try:
        prefixes = tuple(g.prefix + "-g" for g in group_sets)
        groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(prefixes)]
        if groups:
            admin.delete_groups(groups)
        topics = [t for t in admin.list_topics() if t.startswith(layout.prefix + "-t")]
        for start in range(0, len(topics), CREATE_BATCH):
            admin.delete_topics(topics[start:start + CREATE_BATCH], timeout_ms=120_000)
    finally:
        admin.close()
    seconds = time.perf_counter() - t0
    log(f"drop: {len(groups)} groups and {len(topics)} topics deleted in {seconds:.1f}s")
    return {"groups": len(groups), "topics": len(topics), "s": seconds}
