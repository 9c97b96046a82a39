"""KafkaSource's composition: Kafka I/O and the cluster's policy called in turn, on stand-in I/O.

What each read answers is in-memory here; the order of the requests, and which names each
one carries, is what is checked. End-to-end reads are shown on a real broker.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

from klag_collector.config import Performance, parse_config
from klag_collector.kafka_io import Watermarks
from klag_collector.kafka_source import KafkaSource
from klag_collector.model import (
    GroupType,
    TP,
    CommittedOffsets,
    GroupDescriptions,
    GroupInfo,
    ListedGroup,
    ShareGroupInfo,
    ShareGroupsRead,
    ShareOffset,
    TopicDescription,
)
from klag_collector.selection import DESCRIBE_FAILED, OFFSETS_UNAVAILABLE

CONFIG = """
[[clusters]]
name = "c"
bootstrap_servers = "127.0.0.1:9"
group_whitelist = ["^app-"]
group_blacklist = ["-skip$"]
topic_whitelist = ["^orders", "^compact"]
"""


class RecordingReads:
    """Stands in for AdminReads: canned answers, every request recorded with its names."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []
        self.policies = {"compact-t": "compact", "orders": "delete"}

    def listed_groups(self) -> List[ListedGroup]:
        self.calls.append(("listed_groups", None))
        return [ListedGroup(n) for n in ("app-a", "app-b-skip", "other", "app-broken")] + [
            ListedGroup("app-share", GroupType.SHARE)]

    def describe_groups(self, groups: Sequence[ListedGroup]) -> GroupDescriptions:
        names = [g.name for g in groups]
        self.calls.append(("describe_groups", names))
        return GroupDescriptions({n: GroupInfo(n, "Empty") for n in names})

    def read_share_groups(self, names: Sequence[str]) -> ShareGroupsRead:
        self.calls.append(("read_share_groups", list(names)))
        return ShareGroupsRead(
            described={n: ShareGroupInfo(n, "Stable", 1) for n in names},
            offsets={n: {("orders", 1): ShareOffset(2, 3), ("internal", 0): ShareOffset(1)}
                     for n in names},
            asked=tuple(names),
        )

    def committed_offsets(self, names: Sequence[str]) -> CommittedOffsets:
        self.calls.append(("committed_offsets", list(names)))
        offsets = {("orders", 0): 3, ("compact-t", 0): 1, ("internal", 0): 2}
        return CommittedOffsets({"app-a": offsets}, unavailable=("app-broken",))

    def describe_topics(self) -> Tuple[TopicDescription, ...]:
        self.calls.append(("describe_topics", None))
        return (
            TopicDescription("orders", 0, {0: 1, 1: -1}),
            TopicDescription("compact-t", 0, {0: 2}),
            TopicDescription("internal", 0, {0: 1}),
        )

    def watermarks(self, leaders: Mapping[TP, int]) -> Watermarks:
        self.calls.append(("watermarks", dict(leaders)))
        # A leaderless partition is not answered.
        return Watermarks({tp: 0 for tp, leader in leaders.items() if leader >= 0},
                          {tp: 5 for tp, leader in leaders.items() if leader >= 0})

    def cleanup_policies(self, topics: Sequence[str]) -> Dict[str, str]:
        self.calls.append(("cleanup_policies", list(topics)))
        return {t: self.policies[t] for t in topics}


class RecordingIO:
    def __init__(self) -> None:
        self.reads = RecordingReads()

    def admin_reads(self) -> RecordingReads:
        return self.reads


def source_on(io: RecordingIO, cache_ttl: float = 300) -> KafkaSource:
    cluster = parse_config(CONFIG, "t.toml", "toml").clusters[0]
    source = KafkaSource(cluster, Performance(compacted_topics_cache_ttl=cache_ttl))
    source._kafka = io  # type: ignore[assignment]
    return source


def test_a_read_asks_only_for_what_the_policy_keeps() -> None:
    """Filtered group names are described; watermarks of kept topics; policies of involved ones."""
    io = RecordingIO()
    data = source_on(io).read(now=1000)
    kept = ["app-a", "app-broken"]
    partitions = {("orders", 0): 1, ("orders", 1): -1, ("compact-t", 0): 2}
    assert io.reads.calls == [
        ("listed_groups", None),
        ("describe_groups", kept),
        ("read_share_groups", ["app-share"]),
        ("committed_offsets", kept),
        ("describe_topics", None),
        ("watermarks", partitions),
        ("cleanup_policies", ["compact-t", "orders"]),
    ]
    assert set(data.groups) == {"app-a"}
    assert data.committed == {"app-a": {("orders", 0): 3, ("compact-t", 0): 1}}
    assert data.leaders == {("orders", 0): 1, ("compact-t", 0): 2}
    assert data.compacted_topics == frozenset({"compact-t"})
    assert data.skipped_groups == {OFFSETS_UNAVAILABLE: 1}
    # The share group: described, its start offsets on kept topics only, never skipped.
    assert data.share_groups == {"app-share": ShareGroupInfo("app-share", "Stable", 1)}
    assert data.share_offsets == {"app-share": {("orders", 1): ShareOffset(2, 3)}}


def test_cleanup_policies_are_read_again_only_after_the_ttl() -> None:
    io = RecordingIO()
    source = source_on(io, cache_ttl=300)
    source.read(now=1000)
    io.reads.policies["orders"] = "compact"
    io.reads.calls.clear()
    assert source.read(now=1299).compacted_topics == frozenset({"compact-t"})
    assert [c for c in io.reads.calls if c[0] == "cleanup_policies"] == [("cleanup_policies", [])]
    assert source.read(now=1300).compacted_topics == frozenset({"compact-t", "orders"})
    assert io.reads.calls[-1] == ("cleanup_policies", ["compact-t", "orders"])


class FailingReads(RecordingReads):
    """app-broken's description fails; its offsets can be read."""

    def describe_groups(self, groups: Sequence[ListedGroup]) -> GroupDescriptions:
        names = [g.name for g in groups]
        self.calls.append(("describe_groups", names))
        return GroupDescriptions(
            {n: GroupInfo(n, "Empty") for n in names if n != "app-broken"},
            failed=("app-broken",), reasons={"app-broken": "GroupIdNotFoundError"},
            types={n: GroupType.CLASSIC for n in names})

    def committed_offsets(self, names: Sequence[str]) -> CommittedOffsets:
        self.calls.append(("committed_offsets", list(names)))
        return CommittedOffsets({n: {("orders", 0): 3} for n in names})


def test_a_failed_description_is_reported_with_its_offsets_and_logged_once() -> None:
    from twisted.logger import Logger

    io = RecordingIO()
    io.reads = FailingReads()
    source = source_on(io)
    events: List[Dict[str, Any]] = []
    source.log = Logger(observer=events.append)
    for now in (1000, 1001, 1002):
        data = source.read(now=now)
    assert ("committed_offsets", ["app-a", "app-broken"]) in io.reads.calls
    assert data.groups["app-broken"].state == "Unknown"
    assert data.committed["app-broken"] == {("orders", 0): 3}
    assert data.skipped_groups == {DESCRIBE_FAILED: 1}
    assert [(e["group"], e["reason"]) for e in events] == [("app-broken", "GroupIdNotFoundError")]


class ShareFailingReads(RecordingReads):
    """The share group's offsets cannot be read: the coordinator answers with an error."""

    def read_share_groups(self, names: Sequence[str]) -> ShareGroupsRead:
        read = super().read_share_groups(names)
        return ShareGroupsRead(described=read.described, offsets={}, asked=read.asked,
                               failed={n: "DescribeShareGroupOffsets: NotCoordinatorError"
                                       for n in names})


def test_a_share_group_read_failure_is_logged_once_and_never_a_skipped_group() -> None:
    from twisted.logger import Logger

    io = RecordingIO()
    io.reads = ShareFailingReads()
    source = source_on(io)
    events: List[Dict[str, Any]] = []
    source.log = Logger(observer=events.append)
    for now in (1000, 1001):
        data = source.read(now=now)
    assert data.share_groups["app-share"].state == "Stable"
    assert data.share_offsets.get("app-share", {}) == {}
    assert DESCRIBE_FAILED not in data.skipped_groups
    assert [(e["group"], e["reason"]) for e in events] == [
        ("app-share", "DescribeShareGroupOffsets: NotCoordinatorError")]
