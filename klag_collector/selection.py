"""The cluster's policy over what Kafka answered: which groups, offsets, topics and leaders count.

No I/O, no clock: what Kafka said and `now` are passed in, so every rule is checked in a
test without a broker. A read interleaves the two: group names are filtered before the
groups are described (so the others are never asked about), topics after they are
described, and the topics the kept offsets involve decide whose cleanup.policy is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Dict, FrozenSet, Iterable, List, Mapping, Set, Tuple

from .config import NameFilter
from .model import (
    TP,
    GroupType,
    ClusterData,
    ClusterRead,
    CommittedOffsets,
    GroupDescriptions,
    GroupInfo,
    ListedGroup,
    ShareGroupInfo,
    ShareGroupsRead,
    ShareOffset,
    TopicDescription,
)

# Reasons for leaving a group out, as they appear in the `reason` label.
DESCRIBE_FAILED = "describe_failed"
OFFSETS_UNAVAILABLE = "offsets_unavailable"

# The state of a group whose description failed: it is still reported, offsets and lag.
UNKNOWN_STATE = "Unknown"

# (group, reason): one describe failure, logged once while it lasts
Failure = Tuple[str, str]


def groups_to_describe(
    listed: Iterable[ListedGroup], group_filter: NameFilter
) -> List[ListedGroup]:
    """The listed groups the filter keeps, sorted by name, share groups left out.

    Share groups (KIP-932) are not consumer groups: their members do not commit offsets, and
    OffsetFetch and DescribeGroups do not answer for them. They take the share path
    (`share_groups_to_describe`) and are never counted as skipped.
    """
    return sorted(
        (g for g in listed
         if g.group_type is not GroupType.SHARE and group_filter.allows(g.name)),
        key=lambda g: g.name,
    )


def share_groups_to_describe(
    listed: Iterable[ListedGroup], group_filter: NameFilter
) -> List[str]:
    """The names of the listed share groups the filter keeps, sorted."""
    return sorted(
        g.name for g in listed
        if g.group_type is GroupType.SHARE and group_filter.allows(g.name)
    )


def share_groups(read: ShareGroupsRead) -> Dict[str, ShareGroupInfo]:
    """Every share group asked about: its description, or state Unknown where that failed."""
    return {
        name: read.described.get(name, ShareGroupInfo(name, UNKNOWN_STATE))
        for name in read.asked
    }


def kept_share_offsets(
    by_group: Mapping[str, Mapping[TP, ShareOffset]], topic_filter: NameFilter
) -> Dict[str, Dict[TP, ShareOffset]]:
    """Each share group's start offsets on kept topics.

    -1 means the share-partition has no start offset yet (nothing delivered to the group):
    not a position to measure lag from.
    """
    return {
        name: {
            tp: offset for tp, offset in offsets.items()
            if offset.start_offset >= 0 and topic_filter.allows(tp[0])
        }
        for name, offsets in by_group.items()
    }


def offset_groups(groups: GroupDescriptions) -> List[str]:
    """The groups whose committed offsets are read: every one asked about, described or not.

    A group whose description failed is still a group with offsets; only its state and
    members are unknown.
    """
    return sorted(set(groups.described) | set(groups.failed))


def reported_groups(groups: GroupDescriptions) -> Dict[str, GroupInfo]:
    """Every group asked about: its description, or state Unknown where that failed."""
    found = dict(groups.described)
    for name in groups.failed:
        found.setdefault(
            name,
            GroupInfo(name, UNKNOWN_STATE, group_type=groups.types.get(name, GroupType.CLASSIC)),
        )
    return found


def describe_failures(groups: GroupDescriptions) -> Dict[str, str]:
    """Each group whose description failed, with why."""
    return {name: groups.reasons.get(name, "") for name in groups.failed}


def failures_to_log(
    failures: Mapping[str, str], logged: AbstractSet[Failure]
) -> Tuple[List[Failure], FrozenSet[Failure]]:
    """The (group, reason) failures not logged yet, sorted; and the ones to remember as logged.

    Only this cycle's failures are remembered: one that ends and comes back is logged again.
    """
    now = frozenset(failures.items())
    return sorted(now - logged), now


def kept_offsets(
    by_group: Mapping[str, Mapping[TP, int]], topic_filter: NameFilter
) -> Dict[str, Dict[TP, int]]:
    """Each group's committed offsets on kept topics; a group left with none stays, empty."""
    # The filter's regexes run once per topic, not once per group and partition.
    topics = {tp[0] for offsets in by_group.values() for tp in offsets}
    kept = {topic for topic in topics if topic_filter.allows(topic)}
    return {
        name: {
            tp: offset
            for tp, offset in offsets.items()
            # -1 means "no committed offset": not a position to measure lag from.
            if offset >= 0 and tp[0] in kept
        }
        for name, offsets in by_group.items()
    }


def kept_topics(
    topics: Iterable[TopicDescription], topic_filter: NameFilter
) -> List[TopicDescription]:
    """The topics the filter keeps, less those the metadata answered with an error."""
    return [t for t in topics if not t.error_code and topic_filter.allows(t.name)]


def watermark_partitions(
    topics: Iterable[TopicDescription], topic_filter: NameFilter
) -> Dict[TP, int]:
    """Every partition of every kept topic -> its leader (-1: leaderless)."""
    return {(t.name, p): leader for t in kept_topics(topics, topic_filter)
            for p, leader in t.leaders.items()}


def usable_leaders(topics: Iterable[TopicDescription]) -> Dict[TP, int]:
    """partition -> leader node id, for the partitions that have a leader."""
    return {
        (t.name, partition): leader
        for t in topics
        for partition, leader in t.leaders.items()
        if leader >= 0  # -1: leaderless, no broker to send its fetch to
    }


def known_offsets(answered: Mapping[TP, int]) -> Dict[TP, int]:
    """The watermarks the broker gave; -1 stands for none."""
    return {tp: offset for tp, offset in answered.items() if offset >= 0}


def skipped_groups(groups: GroupDescriptions, offsets: CommittedOffsets) -> Dict[str, int]:
    """reason -> number of groups left out, for the reasons that left any out."""
    counts = {DESCRIBE_FAILED: len(groups.failed), OFFSETS_UNAVAILABLE: len(offsets.unavailable)}
    return {reason: count for reason, count in counts.items() if count}


def involved_topics(committed: Mapping[str, Mapping[TP, int]]) -> Set[str]:
    """The topics some group has a kept committed offset on."""
    return {topic for offsets in committed.values() for topic, _ in offsets}


def select(read: ClusterRead, topic_filter: NameFilter) -> ClusterData:
    """The ClusterData the lag core takes, from one cycle's answers.

    Its compacted_topics is left empty: they come from a CleanupPolicyCache, asked about
    the topics this data involves.
    """
    committed = kept_offsets(read.offsets.by_group, topic_filter)
    return ClusterData(
        # A group whose offsets could not be read has nothing to report lag from; one whose
        # description failed is reported with state Unknown.
        groups={n: info for n, info in reported_groups(read.groups).items() if n in committed},
        committed=committed,
        earliest=known_offsets(read.earliest),
        latest=known_offsets(read.latest),
        leaders=usable_leaders(kept_topics(read.topics, topic_filter)),
        skipped_groups=skipped_groups(read.groups, read.offsets),
        share_groups=share_groups(read.share),
        share_offsets=kept_share_offsets(read.share.offsets, topic_filter),
    )


@dataclass(frozen=True, slots=True)
class CleanupPolicyEntry:
    """What a topic's cleanup.policy said, and when it was read."""

    compacted: bool
    read_at: float


class CleanupPolicyCache:
    """Which topics are compacted, each topic's cleanup.policy re-read every `ttl` seconds.

    cleanup.policy rarely changes, and reading it is a DescribeConfigs request per cycle.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: Dict[str, CleanupPolicyEntry] = {}

    def due(self, topics: Iterable[str], now: float) -> List[str]:
        """The topics whose cleanup.policy must be read now, sorted: unknown or older than ttl."""
        entries = self._entries
        return sorted(t for t in topics if t not in entries or now - entries[t].read_at >= self.ttl)

    def update(
        self, involved: AbstractSet[str], policies: Mapping[str, str], now: float
    ) -> FrozenSet[str]:
        """Record the cleanup.policy values just read; return the compacted involved topics.

        `policies` answers every topic that was due. Topics no longer involved are
        forgotten, so that deleted topics do not pile up and a returning one is re-read.
        """
        for topic, policy in policies.items():
            self._entries[topic] = CleanupPolicyEntry("compact" in policy, now)
        for gone in set(self._entries) - involved:
            del self._entries[gone]
        return frozenset(t for t in involved if self._entries[t].compacted)
