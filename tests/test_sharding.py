"""The pure sharding core: Kafka's partitioner hash, which replica reads and reports what.

The hash vectors are Kafka's own: those of UtilsTest.testMurmur2, and, for names outside
ASCII, values printed by org.apache.kafka.common.utils.Utils (kafka-clients 4.4.0):
``Utils.murmur2(s.getBytes(UTF_8))`` and ``Utils.toPositive(h) % 64`` / ``% 7``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, FrozenSet, List, Mapping, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klag_collector import metrics
from klag_collector.families import Families, lag_families
from klag_collector.lag import compute_lag
from klag_collector.model import ClusterData, GroupInfo, ListedGroup, TP
from klag_collector.poller import ClusterSnapshot
from klag_collector.shard_view import restrict
from klag_collector.sharding import (
    Lease, MemberState, Membership, Shards, ShardScope, consumed_partitions, every_shard,
    membership_of, name_hash, no_shard, owned_groups, parse_static_shard, partitions_to_read,
    rebalances_after, shard_of,
)

# (name, Java's signed murmur2, toPositive % 64, toPositive % 7)
JAVA_VECTORS = [
    ("21", -973932308, 44, 3),
    ("foobar", -790332482, 62, 0),
    ("abc", 479470107, 27, 4),
    ("", 275646681, 25, 2),
    ("grüße", 1943707148, 12, 5),
    ("日本語のグループ", 1009277706, 10, 3),
    ("émoji-🎉", -1942016674, 30, 6),
    ("klag-collector", 1844183012, 36, 0),
    ("g\x00x", 1455948995, 3, 4),
    ("ünïcödé-group-名前", 734129782, 54, 1),
]
# UtilsTest.testMurmur2's longer cases, hash only.
KAFKA_UTILS_TEST = [
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
]


@pytest.mark.parametrize("name, signed, mod64, mod7", JAVA_VECTORS)
def test_name_hash_is_kafkas_partitioner_hash(name: str, signed: int, mod64: int, mod7: int) -> None:
    """toPositive(murmur2(UTF-8)) as the Java client computes it, non-ASCII names included."""
    assert name_hash(name) == signed & 0x7FFFFFFF
    assert shard_of(name, 64) == mod64
    assert shard_of(name, 7) == mod7


@pytest.mark.parametrize("name, signed", KAFKA_UTILS_TEST)
def test_name_hash_matches_kafkas_utils_test(name: str, signed: int) -> None:
    """The vectors of Kafka's UtilsTest.testMurmur2, cleared of their sign bit."""
    assert name_hash(name) == signed & 0x7FFFFFFF


def test_a_lone_surrogate_hashes_as_javas_question_mark() -> None:
    """A character UTF-8 cannot encode is "?" in the hashed bytes, as in String.getBytes(UTF_8)."""
    assert name_hash("a\ud800b") == name_hash("a?b")


@given(st.text(max_size=40), st.integers(1, 1024))
def test_every_name_has_one_shard_in_range(name: str, count: int) -> None:
    """Any name, any count: one shard, 0 <= shard < count, the same every time."""
    shard = shard_of(name, count)
    assert 0 <= shard < count
    assert shard_of(name, count) == shard == name_hash(name) % count


@settings(max_examples=60)
@given(st.lists(st.text(max_size=12), max_size=40), st.integers(1, 16), st.data())
def test_replicas_splitting_the_shards_own_each_name_exactly_once(
    names: List[str], count: int, data: st.DataObject
) -> None:
    """However the shards are split among replicas, every name is owned by exactly one."""
    owner = data.draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    replicas = [Shards(count, frozenset(s for s in range(count) if owner[s] == r))
                for r in range(3)]
    for name in names:
        assert sum(r.owns(name) for r in replicas) == 1
    assert sorted(n for r in replicas for n in owned_groups(names, r)) == sorted(names)


def test_static_shard_text() -> None:
    """"i/n" is shard i of n; anything else, or i outside 0..n-1, is None."""
    assert parse_static_shard("0/2") == Shards(2, frozenset({0}))
    assert parse_static_shard(" 1/2 ") == Shards(2, frozenset({1}))
    for bad in ("2/2", "1/0", "-1/2", "a/b", "1", "1/2/3", "", "1 / 2"):
        assert parse_static_shard(bad) is None, bad


def test_shard_sets() -> None:
    """every_shard, no_shard, intersection and cover."""
    assert every_shard(3) == Shards(3, frozenset({0, 1, 2}))
    assert no_shard(3) == Shards(3, frozenset())
    assert Shards(4, frozenset({0, 1})) & Shards(4, frozenset({1, 2})) == Shards(4, frozenset({1}))
    assert every_shard(3).covers(Shards(3, frozenset({2})))
    assert not Shards(3, frozenset({2})).covers(every_shard(3))


# -- reads ---------------------------------------------------------------------------------

# With 2 shards: ga, t1 are shard 1; gb, t2 shard 0 (name_hash, as the vectors above).
SHARD0, SHARD1 = Shards(2, frozenset({0})), Shards(2, frozenset({1}))


def test_the_names_used_below_are_in_the_shards_said() -> None:
    assert [shard_of(n, 2) for n in ("ga", "t1", "gb", "t2")] == [1, 1, 0, 0]


def test_owned_groups_keep_their_order_for_listed_groups_and_names() -> None:
    listed = [ListedGroup("gb"), ListedGroup("ga"), ListedGroup("gc")]  # gc: shard 1
    assert owned_groups(listed, SHARD1) == [ListedGroup("ga"), ListedGroup("gc")]
    assert owned_groups(["gb", "ga", "gc"], SHARD0) == ["gb"]


def test_a_read_asks_for_owned_topics_and_the_partitions_owned_groups_consume() -> None:
    """Every partition of an owned topic, and of other topics only those a group needs."""
    leaders = {("t1", 0): 1, ("t1", 1): 2, ("t2", 0): 1, ("t2", 1): -1}
    committed = {"gb": {("t1", 0): 3}}
    share = {"share-a": {("t1", 0): object()}}
    needed = consumed_partitions(committed, share)
    assert needed == frozenset({("t1", 0)})
    assert partitions_to_read(leaders, SHARD0, needed) == {
        ("t1", 0): 1, ("t2", 0): 1, ("t2", 1): -1}
    assert partitions_to_read(leaders, SHARD1, frozenset()) == {("t1", 0): 1, ("t1", 1): 2}


# -- membership ----------------------------------------------------------------------------


def test_membership_owns_its_assignment_only_while_its_session_is_confirmed() -> None:
    """Assigned shards count while the lease holds and the member is in a generation."""
    assigned = frozenset({1, 3})
    assert membership_of(4, assigned, 2, Lease.VALID, 5) == Membership(
        MemberState.MEMBER, Shards(4, assigned), 5)
    assert membership_of(4, assigned, -1, Lease.VALID, 5) == Membership(
        MemberState.JOINING, no_shard(4), 5)
    assert membership_of(4, assigned, 2, Lease.NONE, 0) == Membership(
        MemberState.JOINING, no_shard(4), 0)
    assert membership_of(4, assigned, 2, Lease.EXPIRED, 1, "e") == Membership(
        MemberState.EXPIRED, no_shard(4), 1, "e")
    assert Membership(MemberState.MEMBER, no_shard(4)).settled
    assert not Membership(MemberState.EXPIRED, no_shard(4)).settled


@pytest.mark.parametrize("count, last, generation, expected", [
    (0, -1, -1, 0),  # not joined yet
    (0, -1, 1, 1),   # the first join
    (1, 1, 1, 1),    # the same generation
    (1, 1, 3, 3),    # two rebalances in one poll (a cooperative move takes two)
    (3, 3, -1, 3),   # out of the group: nothing counted
    (3, -1, 9, 4),   # back in: one rebalance, whatever happened meanwhile
])
def test_rebalances_count_generations(count: int, last: int, generation: int, expected: int) -> None:
    assert rebalances_after(count, last, generation) == expected


def test_a_scope_remembers_what_each_read_was_for() -> None:
    scope = ShardScope(SHARD0)
    assert scope.last_read is None
    assert scope.for_read() == SHARD0
    scope.current = SHARD1
    assert scope.last_read == SHARD0
    assert scope.for_read() == SHARD1 and scope.last_read == SHARD1


# -- cutting a snapshot --------------------------------------------------------------------

BASE = ((metrics.CLUSTER, "c"),)
PARTITION = metrics.Granularity.PARTITION
WATERMARKS = {("t1", 0): (0, 10), ("t1", 1): (2, 8), ("t2", 0): (0, 5), ("t2", 1): (1, 1)}


def data_for(groups: Mapping[str, Mapping[TP, int]], partitions: Mapping[TP, Tuple[int, int]],
             skipped: Mapping[str, int] = {}) -> ClusterData:
    return ClusterData(
        groups={g: GroupInfo(g, "Empty") for g in groups},
        committed={g: dict(offsets) for g, offsets in groups.items()},
        earliest={tp: e for tp, (e, _) in partitions.items()},
        latest={tp: latest for tp, (_, latest) in partitions.items()},
        skipped_groups=dict(skipped),
    )


def snapshot_of(data: ClusterData) -> ClusterSnapshot:
    view = compute_lag(data, None, 1000.0)
    return ClusterSnapshot(view, lag_families(view, BASE, PARTITION), 1000.0)


Sample = Tuple[str, FrozenSet[Tuple[str, str]]]


def samples(found: Families) -> Dict[Sample, float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in found.values() for s in family.metric().samples}


def named(found: Families, definition: metrics.MetricDef) -> Dict[FrozenSet[Tuple[str, str]], float]:
    return {labels: value for (name, labels), value in samples(found).items()
            if name == definition.name}


def labels(**values: str) -> FrozenSet[Tuple[str, str]]:
    return frozenset({**dict(BASE), **values}.items())


def test_a_snapshot_read_for_the_owned_shards_loses_only_other_topics_watermarks() -> None:
    """Shard 0 read gb (on t1/0 and t2/0) and t2 whole; t1/0's watermark series go."""
    read = data_for({"gb": {("t1", 0): 4, ("t2", 0): 5}},
                    {tp: w for tp, w in WATERMARKS.items() if tp != ("t1", 1)})
    snapshot = snapshot_of(read)
    cut = restrict(snapshot, SHARD0, SHARD0, BASE, PARTITION)
    assert named(cut.families, metrics.PARTITION_LATEST_OFFSET) == {
        labels(topic="t2", partition="0"): 5.0, labels(topic="t2", partition="1"): 1.0}
    assert named(cut.families, metrics.PARTITION_EARLIEST_OFFSET) == {
        labels(topic="t2", partition="0"): 0.0, labels(topic="t2", partition="1"): 1.0}
    # The lag of gb on t1/0 (another shard's topic) is its own: 10 - 4.
    assert named(cut.families, metrics.GROUP_LAG) == {
        labels(group="gb", topic="t1", partition="0", member_host="", consumer_id="",
               client_id=""): 6.0,
        labels(group="gb", topic="t2", partition="0", member_host="", consumer_id="",
               client_id=""): 0.0}
    assert cut.view.latest == {("t2", 0): 5, ("t2", 1): 1}
    # Every family but the watermarks' is the snapshot's own object: its lines are kept.
    for name, family in cut.families.items():
        if name not in (metrics.PARTITION_LATEST_OFFSET.name, metrics.PARTITION_EARLIEST_OFFSET.name):
            assert family is snapshot.families[name], name
    assert cut.taken_at == snapshot.taken_at


def test_revoked_shards_leave_with_their_groups_and_the_counts_are_made_again() -> None:
    """Read for both shards, then shard 1 revoked: ga and t1 go; data loss is recounted
    from what stays and the skipped-group count, which cannot be split, is left out."""
    both = every_shard(2)
    read = data_for({"ga": {("t2", 1): 0}, "gb": {("t2", 0): 2, ("t1", 1): 1}}, WATERMARKS,
                    {"offsets_unavailable": 2})
    cut = restrict(snapshot_of(read), both, SHARD0, BASE, PARTITION)
    assert {dict(k)["group"] for k in named(cut.families, metrics.GROUP_LAG)} == {"gb"}
    assert named(cut.families, metrics.GROUP_SUM_LAG) == {labels(group="gb"): 3.0 + 7.0}
    assert {dict(k)["topic"] for k in named(cut.families, metrics.PARTITION_LATEST_OFFSET)} == {"t2"}
    # gb lost data on t1/1 (committed 1 < earliest 2); ga's loss on t2/1 left with ga.
    assert named(cut.families, metrics.DATA_LOSS_PARTITIONS) == {labels(): 1.0}
    assert named(cut.families, metrics.SKIPPED_GROUPS) == {}
    assert [g.group for g in cut.view.groups] == ["gb"]
    assert cut.view.skipped_groups == {}


def test_nothing_owned_reports_no_lag_series_at_all() -> None:
    read = data_for({"ga": {("t1", 0): 1}}, WATERMARKS)
    cut = restrict(snapshot_of(read), SHARD1, no_shard(2), BASE, PARTITION)
    assert {name for name, _ in samples(cut.families)} <= {
        metrics.COMPACTION_PARTITIONS.name, metrics.DATA_LOSS_PARTITIONS.name,
        metrics.OFFSET_OUT_OF_RANGE_PARTITIONS.name}
    assert set(samples(cut.families).values()) == {0.0}


def sharded_read(data: ClusterData, shards: Shards, leaders: Mapping[TP, int]) -> ClusterData:
    """What a read for *shards* gets, as KafkaSource asks it (groups, then partitions)."""
    groups = owned_groups(sorted(data.groups), shards)
    committed = {g: data.committed[g] for g in groups}
    wanted = partitions_to_read(leaders, shards, consumed_partitions(committed))
    return replace(data, groups={g: data.groups[g] for g in groups}, committed=committed,
                   earliest={tp: o for tp, o in data.earliest.items() if tp in wanted},
                   latest={tp: o for tp, o in data.latest.items() if tp in wanted})


OWN_SERIES = [d for d in metrics.LAG_FAMILIES if {metrics.GROUP, metrics.TOPIC} & set(d.labels)]


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["ga", "gb", "gc", "gd", "ge", "orders", "payments", "clicks"]),
        st.dictionaries(st.tuples(st.sampled_from(["t1", "t2", "t3", "t4"]), st.integers(0, 2)),
                        st.integers(0, 12), max_size=5),
        max_size=8),
    st.integers(1, 5),
    st.data(),
)
def test_replicas_together_report_what_one_replica_reports(
    groups: Dict[str, Dict[TP, int]], count: int, data: st.DataObject
) -> None:
    """Split the shards among 3 replicas: each reads and cuts its share, and the union of
    their group and topic series is the unsharded replica's, series for series, none twice."""
    partitions = {(t, p): (p, 10 + p) for t in ("t1", "t2", "t3", "t4") for p in range(3)}
    whole = data_for(groups, partitions)
    expected = {k: v for k, v in samples(snapshot_of(whole).families).items()
                if k[0] in {d.name for d in OWN_SERIES}}
    owner = data.draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    union: Dict[Sample, float] = {}
    leaders = {tp: 1 for tp in partitions}
    for replica in range(3):
        shards = Shards(count, frozenset(s for s in range(count) if owner[s] == replica))
        cut = restrict(snapshot_of(sharded_read(whole, shards, leaders)), shards, shards,
                       BASE, PARTITION)
        for key, value in samples(cut.families).items():
            if key[0] in {d.name for d in OWN_SERIES}:
                assert key not in union, key
                union[key] = value
    assert union == expected
