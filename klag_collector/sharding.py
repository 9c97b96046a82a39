"""Which replica reports what: the shard arithmetic and the filters of a sharded read (pure).

A group belongs to shard ``toPositive(murmur2(utf-8 name)) % count``, Kafka's default
partitioner on the name as a record key, so anyone can compute where a group lives (the
Java client's ``Utils.toPositive(Utils.murmur2(bytes)) % n``). A partition's watermark series
belong to the shard of its topic. No I/O, no clock: the Kafka edge asks these functions what
to read, the sharded poller what to report.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import AbstractSet, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, TypeVar

from kafka.partitioner.default import murmur2

from .model import TP, ListedGroup

# Java's Utils.toPositive: the sign bit cleared, not the absolute value.
_POSITIVE = 0x7FFFFFFF


# Names recur every cycle (a few thousand groups and topics); hashing is pure Python.
@functools.lru_cache(maxsize=1 << 16)
def name_hash(name: str) -> int:
    """Kafka's partitioner hash of *name*: toPositive(murmur2(its UTF-8 bytes)).

    A character UTF-8 cannot encode (a lone surrogate) becomes "?", as Java's
    String.getBytes(UTF_8) makes it.
    """
    return int(murmur2(name.encode("utf-8", "replace"))) & _POSITIVE


def shard_of(name: str, count: int) -> int:
    """The shard of *count* that the group or topic *name* belongs to."""
    return name_hash(name) % count


@dataclass(frozen=True)
class Shards:
    """The shards, of `count`, that one replica reports."""

    count: int
    owned: FrozenSet[int]

    def owns(self, name: str) -> bool:
        """Whether the group (or the topic) *name* is in an owned shard."""
        return shard_of(name, self.count) in self.owned

    def __and__(self, other: "Shards") -> "Shards":
        """The shards both own."""
        return Shards(self.count, self.owned & other.owned)

    def covers(self, other: "Shards") -> bool:
        """Whether every shard of *other* is owned here too."""
        return other.owned <= self.owned


def every_shard(count: int) -> Shards:
    """Every shard of *count*: what one unsharded replica reports."""
    return Shards(count, frozenset(range(count)))


def no_shard(count: int) -> Shards:
    """No shard of *count*: what a replica without a membership reports."""
    return Shards(count, frozenset())


_STATIC = re.compile(r"(\d{1,6})/(\d{1,6})")


def parse_static_shard(text: str) -> Optional[Shards]:
    """``"i/n"`` as the one shard i of n, or None when it is not that (0 <= i < n)."""
    match = _STATIC.fullmatch(text.strip())
    if match is None:
        return None
    shard, count = int(match.group(1)), int(match.group(2))
    return Shards(count, frozenset({shard})) if 0 <= shard < count else None


# -- what a sharded read asks Kafka about -----------------------------------------------

G = TypeVar("G", ListedGroup, str)


def owned_groups(groups: Iterable[G], shards: Shards) -> List[G]:
    """The groups (ListedGroup or names) of the owned shards, in their order."""
    return [g for g in groups if shards.owns(g if isinstance(g, str) else g.name)]


def partitions_to_read(
    leaders: Mapping[TP, int],
    shards: Shards,
    needed: AbstractSet[TP],
) -> Dict[TP, int]:
    """The partitions whose watermarks a sharded read asks for: every partition of an owned
    topic (its watermark series are reported here) and those *needed* for the lag of the
    owned groups, whatever shard their topic is in (their series are reported elsewhere)."""
    return {tp: leader for tp, leader in leaders.items() if tp in needed or shards.owns(tp[0])}


def consumed_partitions(*by_group: Mapping[str, Mapping[TP, object]]) -> FrozenSet[TP]:
    """Every partition some group has an offset on (committed or share start offset)."""
    return frozenset(tp for offsets in by_group for group in offsets.values() for tp in group)


# -- what the coordination says ---------------------------------------------------------


class MemberState(str, enum.Enum):
    """Where a replica stands in the sharding, as /ready shows it."""

    # kafka: not in the coordination group yet (or out of it, rejoining)
    JOINING = "joining"
    # kafka: a member whose session the coordinator confirmed within the session timeout
    MEMBER = "member"
    # kafka: no confirmation for a session timeout (coordinator lost): its shards are dropped
    EXPIRED = "expired"
    # static: the shard named in the config, owned from the start
    STATIC = "static"

    def __str__(self) -> str:
        return self.value


class Membership(NamedTuple):
    """What a replica owns now, and how it got there."""

    state: MemberState
    # the shards it reports now: empty unless state is MEMBER or STATIC
    shards: Shards
    # rebalances of the coordination group this replica took part in
    rebalances: int = 0
    # why it is not a member, while the coordination fails (one line)
    error: str = ""

    @property
    def settled(self) -> bool:
        """Whether its shards are its own: it may say it is ready once it collected them."""
        return self.state in (MemberState.MEMBER, MemberState.STATIC)


def static_membership(shards: Shards) -> Membership:
    return Membership(MemberState.STATIC, shards)


class Lease(enum.Enum):
    """How a member's session stands, as far as the member can tell."""

    # the coordinator never confirmed it yet
    NONE = "none"
    # confirmed within the session timeout: the coordinator counts it as a member
    VALID = "valid"
    # not confirmed for a session timeout: the coordinator may have handed its shards on
    EXPIRED = "expired"


def membership_of(
    count: int, assigned: FrozenSet[int], generation: int, lease: Lease, rebalances: int,
    error: str = "",
) -> Membership:
    """What a member of the coordination group owns: its assigned shards while its session
    is confirmed and it is in a generation of the group, else nothing."""
    if lease is Lease.VALID and generation >= 0:
        return Membership(MemberState.MEMBER, Shards(count, assigned), rebalances, error)
    state = MemberState.EXPIRED if lease is Lease.EXPIRED else MemberState.JOINING
    return Membership(state, no_shard(count), rebalances, error)


def rebalances_after(count: int, last_generation: int, generation: int) -> int:
    """The rebalance count once the member's generation went from *last_generation* to
    *generation*: each generation of the group is one rebalance all members took part in;
    a join after being out of the group (generation -1) is one, whatever it missed."""
    if generation < 0 or generation == last_generation:
        return count
    if last_generation < 0:
        return count + 1
    return count + max(0, generation - last_generation)


class ShardScope:
    """The shards a cluster's reads are for now, handed from the reactor to the read's thread.

    The reactor thread rebinds `current` (one reference: a read never sees half a change); a
    read takes it once, with `for_read()`, which remembers it. Cycles run one at a time and a
    new snapshot is swapped in, on the reactor, after its own read and before the next one
    starts: when a snapshot arrives, `last_read` is the shards it was read for.
    """

    def __init__(self, shards: Shards) -> None:
        self.current = shards
        self.last_read: Optional[Shards] = None

    def for_read(self) -> Shards:
        shards = self.current
        self.last_read = shards
        return shards
