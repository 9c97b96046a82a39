"""Plain, immutable data read from one cluster in one collection cycle.

Nothing here knows about Kafka clients or Twisted: the Kafka edge fills these records,
the lag core reads them, and tests build them by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Optional, Tuple

# (topic, partition)
TP = Tuple[str, int]
# (topic, partition, offset): the key of a record timestamp
RecordKey = Tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Member:
    """A consumer in a group, as the group coordinator describes it."""

    consumer_id: str
    client_id: str
    host: str


NO_MEMBER = Member(consumer_id="", client_id="", host="")


class GroupType(str, enum.Enum):
    """A group's type as ListGroups (v5+) names it."""

    CLASSIC = "classic"
    CONSUMER = "consumer"
    STREAMS = "streams"
    SHARE = "share"

    def __str__(self) -> str:
        # The value in f-strings and str() on every Python: it is shown in --once.
        return self.value

    @classmethod
    def listed(cls, raw: Optional[str]) -> "GroupType":
        """The type of a ListGroups entry: classic when the broker predates types (or names
        one we do not know, which then takes the classic describe path and its fallback)."""
        try:
            return cls(raw) if raw else cls.CLASSIC
        except ValueError:
            return cls.CLASSIC


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group's state, its members and which member holds which partition."""

    name: str
    state: str
    members: int = 0
    assignments: Mapping[TP, Member] = field(default_factory=dict)
    # share groups are not reported as consumer groups
    group_type: GroupType = GroupType.CLASSIC


@dataclass(frozen=True, slots=True)
class ShareGroupInfo:
    """A share group (KIP-932) as ShareGroupDescribe answered it: its state and member count."""

    name: str
    state: str
    members: int = 0


@dataclass(frozen=True, slots=True)
class ShareOffset:
    """One share-partition as DescribeShareGroupOffsets answered it."""

    # the share-partition start offset: records before it are all acknowledged or archived
    start_offset: int
    # the lag the broker computed (version 1+), None where it gave none (v0, or -1)
    lag: Optional[int] = None


@dataclass(frozen=True, slots=True)
class ClusterData:
    """Everything one cycle read from a cluster, already filtered by the cluster's regexes.

    `committed` maps group -> partition -> committed offset, for groups whose offsets were
    read; a group missing from it had its offsets left unread. Watermarks are given for
    every partition of every kept topic; a partition missing from them could not be read.
    """

    groups: Mapping[str, GroupInfo]
    committed: Mapping[str, Mapping[TP, int]]
    earliest: Mapping[TP, int]
    latest: Mapping[TP, int]
    compacted_topics: frozenset[str] = frozenset()
    # partition -> node id of its leader, to batch requests per broker
    leaders: Mapping[TP, int] = field(default_factory=dict)
    # reason -> number of groups whose offsets or description could not be read
    skipped_groups: Mapping[str, int] = field(default_factory=dict)
    # share groups (KIP-932), kept by the group filter; never counted in skipped_groups
    share_groups: Mapping[str, ShareGroupInfo] = field(default_factory=dict)
    # share group -> partition -> its start offset (and broker lag), on kept topics
    share_offsets: Mapping[str, Mapping[TP, ShareOffset]] = field(default_factory=dict)


class PartitionLag(NamedTuple):
    """Lag figures of one group on one partition (a named tuple: there is one per group and
    partition, and a tuple is made in half the time of a frozen dataclass)."""

    group: str
    topic: str
    partition: int
    member: Member
    committed: int
    earliest: int
    latest: int
    lag: int
    lag_seconds: Optional[float]
    messages_lost: int
    retention_margin: int
    retention_ratio: float
    data_loss: bool
    compacted: bool
    # committed - latest when the committed offset is past the log end (the consumer will
    # reset; lag is 0 and lag_seconds None), else 0
    offset_out_of_range: int = 0


@dataclass(frozen=True, slots=True)
class GroupLag:
    """Per-group aggregates over the group's known partitions."""

    group: str
    state: str
    members: int
    max_lag: Optional[int]
    sum_lag: Optional[int]
    max_lag_seconds: Optional[float]
    topic_sum_lag: Mapping[str, int]
    group_type: GroupType = GroupType.CLASSIC


@dataclass(frozen=True, slots=True)
class SharePartitionLag:
    """Lag figures of one share group on one partition."""

    group: str
    topic: str
    partition: int
    start_offset: int
    lag: int
    # the age of the record at the start offset; 0 when lag is 0, None when unknown
    lag_seconds: Optional[float]


@dataclass(frozen=True, slots=True)
class ShareGroupLag:
    """Per-share-group aggregates over its known partitions."""

    group: str
    state: str
    members: int
    sum_lag: Optional[int]
    max_lag_seconds: Optional[float]


@dataclass(frozen=True, slots=True)
class LagView:
    """The computed lag of one cluster at one instant."""

    partitions: Tuple[PartitionLag, ...]
    groups: Tuple[GroupLag, ...]
    earliest: Mapping[TP, int]
    latest: Mapping[TP, int]
    # reason -> number of partitions left out (or of series left out) because a value was unknown
    skipped: Mapping[str, int]
    # reason -> number of groups left out
    skipped_groups: Mapping[str, int]
    compaction_partitions: int
    data_loss_partitions: int
    # partitions whose committed offset is past the log end
    offset_out_of_range_partitions: int = 0
    share_partitions: Tuple[SharePartitionLag, ...] = ()
    share_groups: Tuple[ShareGroupLag, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a cluster's record-timestamp cache."""

    entries: int = 0
    hits: int = 0
    misses: int = 0
    fetch_errors: int = 0


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    """How a cluster's polling is going; replaced whole at the end of every cycle."""

    last_success: Optional[float] = None
    last_duration: Optional[float] = None
    consecutive_failures: int = 0
    failures_total: int = 0
    skipped_ticks: int = 0
    last_error: str = ""
    next_attempt_at: Optional[float] = None
    cache: CacheStats = CacheStats()


# -- What Kafka answered, before the cluster's policy is applied ----------------------------


@dataclass(frozen=True, slots=True)
class GroupDescriptions:
    """What DescribeGroups (or ConsumerGroupDescribe) answered for the groups asked about."""

    described: Mapping[str, GroupInfo]
    # groups the coordinator answered with an error instead of a description
    failed: Tuple[str, ...] = ()
    # failed group -> why, in a few words (the error's name, or that its type has no describe)
    reasons: Mapping[str, str] = field(default_factory=dict)
    # group -> its type as ListGroups said, for every group asked about
    types: Mapping[str, GroupType] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListedGroup:
    """One group as ListGroups answered it."""

    name: str
    group_type: GroupType = GroupType.CLASSIC


@dataclass(frozen=True, slots=True)
class CommittedOffsets:
    """What OffsetFetch answered: group -> partition -> offset, -1 where none is committed."""

    by_group: Mapping[str, Mapping[TP, int]]
    # groups whose offsets could not be fetched, even when asked for on their own
    unavailable: Tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """One topic of the cluster metadata."""

    name: str
    # 0 when the metadata answered the topic without an error
    error_code: int
    # partition -> node id of its leader, -1 while it has none
    leaders: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class ClusterRead:
    """One cycle's answers from Kafka, in the order they were asked for.

    Groups were filtered by name before being described; everything else is as Kafka said it.
    Watermarks are those of the partitions asked for, -1 where the broker gave none.
    """

    groups: GroupDescriptions
    offsets: CommittedOffsets
    topics: Tuple[TopicDescription, ...]
    earliest: Mapping[TP, int]
    latest: Mapping[TP, int]
    # share groups: described, and their start offsets (neither filtered yet)
    share: "ShareGroupsRead" = field(default_factory=lambda: ShareGroupsRead())


@dataclass(frozen=True, slots=True)
class ShareGroupsRead:
    """What ShareGroupDescribe and DescribeShareGroupOffsets answered for the share groups.

    A share group whose describe failed is absent from `described`, one whose offsets could
    not be read from `offsets`: neither is a skipped consumer group.
    """

    described: Mapping[str, ShareGroupInfo] = field(default_factory=dict)
    offsets: Mapping[str, Mapping[TP, ShareOffset]] = field(default_factory=dict)
    # every share group asked about
    asked: Tuple[str, ...] = ()
    # share group -> why its description or its offsets could not be read
    failed: Mapping[str, str] = field(default_factory=dict)
