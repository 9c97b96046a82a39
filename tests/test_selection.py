"""The cluster's policy over Kafka's answers: hand-built answers, a fixed `now`, exact results."""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Set, Tuple

from hypothesis import given
from hypothesis import strategies as st

from klag_collector.config import NameFilter
from klag_collector.lag import compute_lag
from klag_collector.model import (
    GroupType,
    TP,
    ClusterRead,
    CommittedOffsets,
    GroupDescriptions,
    GroupInfo,
    ListedGroup,
    TopicDescription,
)
from klag_collector.selection import (
    DESCRIBE_FAILED,
    OFFSETS_UNAVAILABLE,
    CleanupPolicyCache,
    describe_failures,
    failures_to_log,
    groups_to_describe,
    offset_groups,
    involved_topics,
    kept_offsets,
    kept_topics,
    known_offsets,
    select,
    skipped_groups,
    usable_leaders,
    watermark_partitions,
)

NOW = 1_700_000_100.0


def name_filter(whitelist: Sequence[str], blacklist: Sequence[str] = ()) -> NameFilter:
    return NameFilter(tuple(map(re.compile, whitelist)), tuple(map(re.compile, blacklist)))


EVERYTHING = name_filter([".*"])
# The filters of tests/test_filters_granularity.py, with "p" for the prefix.
GROUPS = name_filter(["^p", "p-special"], ["-skip$"])
TOPICS = name_filter(["^p"], ["-skip$"])


def topic(name: str, leaders: Mapping[int, int], error_code: int = 0) -> TopicDescription:
    return TopicDescription(name=name, error_code=error_code, leaders=leaders)


def read(
    offsets: Mapping[str, Mapping[TP, int]],
    topics: Sequence[TopicDescription] = (),
    earliest: Mapping[TP, int] | None = None,
    latest: Mapping[TP, int] | None = None,
    failed: Tuple[str, ...] = (),
    unavailable: Tuple[str, ...] = (),
) -> ClusterRead:
    """Answers whose groups are the ones with offsets, plus those whose offsets were unavailable."""
    names = [*offsets, *unavailable]
    return ClusterRead(
        groups=GroupDescriptions({n: GroupInfo(n, "Empty") for n in names}, failed),
        offsets=CommittedOffsets(offsets, unavailable),
        topics=tuple(topics),
        earliest=earliest or {},
        latest=latest or {},
    )


def described(names: List[str], group_filter: NameFilter) -> List[str]:
    """groups_to_describe over classic groups of these names: the names it keeps."""
    return [g.name for g in groups_to_describe([ListedGroup(n) for n in names], group_filter)]


# --- the data set of the broker test, without the broker -------------------------------


def test_filters_keep_the_groups_topics_and_partitions_of_the_broker_test() -> None:
    """The broker test's data set: exactly its kept groups, offsets, topics and lag figures."""
    listed = ["p-a", "p-b-skip", "p-onlyskip", "zz-p-special-g", "zz-p-other"]
    # ^p keeps p-a and p-onlyskip; the unanchored "p-special" keeps zz-p-special-g;
    # -skip$ drops p-b-skip; zz-p-other matches no whitelist pattern.
    assert described(listed, GROUPS) == ["p-a", "p-onlyskip", "zz-p-special-g"]

    topics = [
        topic("p-t1", {0: 1, 1: 1}),
        topic("p-t2-skip", {0: 1}),
        topic("p-idle", {0: 1}),
        topic("__consumer_offsets", {0: 1}),
    ]
    partitions = watermark_partitions(topics, TOPICS)
    assert partitions == {("p-t1", 0): 1, ("p-t1", 1): 1, ("p-idle", 0): 1}
    answers = read(
        {
            "p-a": {("p-t1", 0): 1, ("p-t1", 1): 2, ("p-t2-skip", 0): 0},
            "p-onlyskip": {("p-t2-skip", 0): 1},
            "zz-p-special-g": {("p-t1", 0): 2},
        },
        topics,
        earliest={tp: 0 for tp in partitions},
        latest={("p-t1", 0): 4, ("p-t1", 1): 2, ("p-idle", 0): 3},
    )
    data = select(answers, TOPICS)

    # A group whose only offsets are on a blacklisted topic: described, with no offsets.
    assert data.committed == {
        "p-a": {("p-t1", 0): 1, ("p-t1", 1): 2},
        "p-onlyskip": {},
        "zz-p-special-g": {("p-t1", 0): 2},
    }
    assert set(data.groups) == {"p-a", "p-onlyskip", "zz-p-special-g"}
    assert data.leaders == {("p-t1", 0): 1, ("p-t1", 1): 1, ("p-idle", 0): 1}
    assert {t for t, _ in data.latest} == {t for t, _ in data.earliest} == {"p-t1", "p-idle"}
    assert data.skipped_groups == {}

    view = compute_lag(data, None, NOW)
    by_group = {g.group: g for g in view.groups}
    # The blacklisted topic leaves p-a's aggregates: its lag of 5 on p-t2-skip is not counted.
    assert (by_group["p-a"].sum_lag, by_group["p-a"].max_lag) == (3, 3)
    assert by_group["p-a"].topic_sum_lag == {"p-t1": 3}
    assert (by_group["p-onlyskip"].sum_lag, by_group["p-onlyskip"].max_lag) == (None, None)
    assert by_group["zz-p-special-g"].sum_lag == 2
    rows = {(r.group, r.topic, r.partition) for r in view.partitions}
    assert rows == {("p-a", "p-t1", 0), ("p-a", "p-t1", 1), ("zz-p-special-g", "p-t1", 0)}


# --- group names ------------------------------------------------------------------------


def test_groups_to_describe_are_sorted_and_unanchored() -> None:
    """Patterns are searched, not matched: "b" keeps "abc"; the blacklist wins over the whitelist."""
    kept = described(["zeta", "abc", "b-x", "c"], name_filter(["b", "^z"], ["-x$"]))
    assert kept == ["abc", "zeta"]


def test_an_empty_whitelist_keeps_nothing() -> None:
    assert described(["a", "b"], name_filter([])) == []


# Names and literal patterns over a small alphabet, so that they often overlap.
NAMES = st.text(alphabet="ab-", max_size=5)
PATTERNS = st.lists(st.text(alphabet="ab-", min_size=1, max_size=2), max_size=3)


def literal_filter(whitelist: List[str], blacklist: List[str]) -> NameFilter:
    return name_filter([re.escape(p) for p in whitelist], [re.escape(p) for p in blacklist])


def allowed(name: str, whitelist: List[str], blacklist: List[str]) -> bool:
    """The filter's rule, stated with substrings instead of regexes."""
    return any(w in name for w in whitelist) and not any(b in name for b in blacklist)


@given(st.lists(NAMES), PATTERNS, PATTERNS)
def test_described_groups_are_exactly_the_whitelisted_and_not_blacklisted(
    listed: List[str], whitelist: List[str], blacklist: List[str]
) -> None:
    kept = described(listed, literal_filter(whitelist, blacklist))
    assert kept == sorted(n for n in listed if allowed(n, whitelist, blacklist))


# --- committed offsets ------------------------------------------------------------------


def test_offsets_without_a_commit_and_on_other_topics_are_left_out() -> None:
    """-1 (nothing committed) and blacklisted topics go; offset 0 stays."""
    kept = kept_offsets(
        {"g": {("p-t", 0): -1, ("p-t", 1): 0, ("p-t", 2): 7, ("p-x-skip", 0): 3, ("q", 0): 1}},
        TOPICS,
    )
    assert kept == {"g": {("p-t", 1): 0, ("p-t", 2): 7}}


OFFSETS = st.dictionaries(
    NAMES,
    st.dictionaries(st.tuples(NAMES, st.integers(0, 3)), st.integers(-2, 10), max_size=6),
    max_size=4,
)


@given(OFFSETS, PATTERNS, PATTERNS)
def test_kept_offsets_are_exactly_the_committed_ones_on_kept_topics(
    by_group: Dict[str, Dict[TP, int]], whitelist: List[str], blacklist: List[str]
) -> None:
    kept = kept_offsets(by_group, literal_filter(whitelist, blacklist))
    assert set(kept) == set(by_group)  # a group's kept offsets may be none, the group stays
    for name, offsets in by_group.items():
        assert kept[name] == {
            tp: o for tp, o in offsets.items() if o >= 0 and allowed(tp[0], whitelist, blacklist)
        }


def test_involved_topics_are_those_of_the_kept_offsets() -> None:
    committed = {"a": {("t", 0): 1, ("u", 3): 0}, "b": {("t", 1): 4}, "c": {}}
    assert involved_topics(committed) == {"t", "u"}


# --- topics, partitions and leaders -----------------------------------------------------


def test_a_topic_answered_with_an_error_is_dropped() -> None:
    """Error code 3 (unknown topic) on a whitelisted topic: no watermarks, no leaders."""
    topics = [topic("p-ok", {0: 1}), topic("p-broken", {0: 2}, error_code=3)]
    assert [t.name for t in kept_topics(topics, TOPICS)] == ["p-ok"]
    assert watermark_partitions(topics, TOPICS) == {("p-ok", 0): 1}
    assert usable_leaders(kept_topics(topics, TOPICS)) == {("p-ok", 0): 1}


def test_leaderless_partitions_are_named_with_leader_minus_one() -> None:
    """Leader -1: the partition is named, so that its unknown watermarks are counted; it has
    no broker to ask them of or to fetch from."""
    topics = [topic("p-t", {0: 2, 1: -1, 2: 3})]
    assert watermark_partitions(topics, TOPICS) == {("p-t", 0): 2, ("p-t", 1): -1, ("p-t", 2): 3}
    assert usable_leaders(topics) == {("p-t", 0): 2, ("p-t", 2): 3}


def test_select_keeps_leaders_of_kept_topics_only() -> None:
    topics = [topic("p-t", {0: 1, 1: -1}), topic("p-t-skip", {0: 1}), topic("q", {0: 2})]
    assert select(read({}, topics), TOPICS).leaders == {("p-t", 0): 1}


def test_watermarks_the_broker_had_none_for_are_left_out() -> None:
    assert known_offsets({("t", 0): 0, ("t", 1): -1, ("t", 2): 12}) == {("t", 0): 0, ("t", 2): 12}
    data = select(read({}, earliest={("t", 0): -1}, latest={("t", 0): 5}), EVERYTHING)
    assert (data.earliest, data.latest) == ({}, {("t", 0): 5})


TOPIC_LISTS = st.lists(
    st.builds(
        TopicDescription,
        name=NAMES,
        error_code=st.sampled_from([0, 0, 3]),
        leaders=st.dictionaries(st.integers(0, 3), st.integers(-1, 2), max_size=4),
    ),
    max_size=5,
    unique_by=lambda t: t.name,
)


@given(TOPIC_LISTS, PATTERNS, PATTERNS)
def test_nothing_outside_the_topic_filter_survives(
    topics: List[TopicDescription], whitelist: List[str], blacklist: List[str]
) -> None:
    topic_filter = literal_filter(whitelist, blacklist)
    good = {t.name for t in topics if t.error_code == 0 and allowed(t.name, whitelist, blacklist)}
    partitions = watermark_partitions(topics, topic_filter)
    assert partitions == {(t.name, p): leader for t in topics if t.name in good
                          for p, leader in t.leaders.items()}
    leaders = select(read({}, topics), topic_filter).leaders
    assert leaders == {
        (t.name, p): leader
        for t in topics if t.name in good
        for p, leader in t.leaders.items() if leader >= 0
    }


# --- groups left out, counted by reason -------------------------------------------------


def test_describe_failures_are_counted() -> None:
    answers = read({"ok": {("t", 0): 1}}, failed=("broken-1", "broken-2"))
    data = select(answers, EVERYTHING)
    assert data.skipped_groups == {DESCRIBE_FAILED: 2}
    assert set(data.groups) == {"ok"}


def test_a_group_whose_offsets_are_unavailable_is_left_out_and_counted() -> None:
    """Described, but its offsets could not be fetched: no group row, counted once."""
    answers = read({"ok": {("t", 0): 1}}, unavailable=("no-offsets",))
    assert set(answers.groups.described) == {"ok", "no-offsets"}
    data = select(answers, EVERYTHING)
    assert set(data.groups) == {"ok"}
    assert set(data.committed) == {"ok"}
    assert data.skipped_groups == {OFFSETS_UNAVAILABLE: 1}


def test_both_reasons_are_counted_apart_and_none_is_no_entry() -> None:
    groups = GroupDescriptions({}, failed=("a", "b", "c"))
    assert skipped_groups(groups, CommittedOffsets({}, unavailable=("d",))) == {
        DESCRIBE_FAILED: 3,
        OFFSETS_UNAVAILABLE: 1,
    }
    assert skipped_groups(GroupDescriptions({}), CommittedOffsets({})) == {}


def test_select_leaves_compaction_to_the_cleanup_policy_cache() -> None:
    data = select(read({"g": {("t", 0): 1}}), EVERYTHING)
    assert data.compacted_topics == frozenset()


# --- the cleanup.policy cache -----------------------------------------------------------


def test_every_topic_is_due_at_first() -> None:
    assert CleanupPolicyCache(ttl=300).due({"b", "a", "c"}, NOW) == ["a", "b", "c"]


def test_a_policy_is_due_again_once_ttl_has_passed() -> None:
    """Read at 100 with a ttl of 300: not due at 399.9, due at 400."""
    cache = CleanupPolicyCache(ttl=300)
    assert cache.update({"t"}, {"t": "compact"}, now=100) == frozenset({"t"})
    assert cache.due({"t"}, now=399.9) == []
    assert cache.due({"t"}, now=400) == ["t"]


def test_within_ttl_the_cached_answer_is_used() -> None:
    """No policy read at 200: the topic compacted at 100 is still reported compacted."""
    cache = CleanupPolicyCache(ttl=300)
    cache.update({"t", "u"}, {"t": "compact", "u": "delete"}, now=100)
    assert cache.update({"t", "u"}, {}, now=200) == frozenset({"t"})


def test_topics_are_due_by_their_own_read_time() -> None:
    cache = CleanupPolicyCache(ttl=300)
    cache.update({"t"}, {"t": "delete"}, now=100)
    cache.update({"t", "u"}, {"u": "delete"}, now=250)
    assert cache.due({"t", "u"}, now=400) == ["t"]
    assert cache.due({"t", "u"}, now=550) == ["t", "u"]


def test_a_topic_no_longer_involved_is_forgotten() -> None:
    """Forgotten at 101, the topic is due again when it returns, long before its ttl."""
    cache = CleanupPolicyCache(ttl=300)
    cache.update({"t", "gone"}, {"t": "delete", "gone": "compact"}, now=100)
    assert cache.update({"t"}, {}, now=101) == frozenset()
    assert cache.due({"t", "gone"}, now=102) == ["gone"]


def test_a_policy_change_is_seen_at_the_next_read() -> None:
    cache = CleanupPolicyCache(ttl=300)
    cache.update({"t"}, {"t": "delete"}, now=100)
    assert cache.update({"t"}, {"t": "compact"}, now=400) == frozenset({"t"})


def test_compacted_means_the_policy_includes_compact() -> None:
    cache = CleanupPolicyCache(ttl=300)
    policies = {
        "c": "compact", "cd": "compact,delete", "dc": "delete,compact", "d": "delete", "none": "",
    }
    assert cache.update(set(policies), policies, NOW) == frozenset({"c", "cd", "dc"})


@given(st.lists(st.sets(NAMES, max_size=4), min_size=1, max_size=5))
def test_cache_holds_exactly_the_involved_topics_of_the_last_cycle(cycles: List[Set[str]]) -> None:
    """Read each cycle as due: after a cycle, nothing involved is due, everything else is."""
    cache = CleanupPolicyCache(ttl=300)
    for i, involved in enumerate(cycles):
        now = NOW + i
        due = cache.due(involved, now)
        cache.update(involved, {t: "compact" for t in due}, now)
        assert cache.due(involved, now) == []
    others = {"x-" + t for t in cycles[-1]} | (set().union(*cycles) - cycles[-1])
    assert cache.due(others, NOW + len(cycles)) == sorted(others)


# --- groups of every type; describe failures ----------------------------------------------


def test_share_groups_are_not_described_and_every_other_type_is() -> None:
    """Share groups have no consumer lag: left out here, so never counted as skipped."""
    listed = [ListedGroup("s", GroupType.SHARE), ListedGroup("k", GroupType.CONSUMER), ListedGroup("c"),
              ListedGroup("st", GroupType.STREAMS)]
    kept = groups_to_describe(listed, EVERYTHING)
    assert [(g.name, g.group_type) for g in kept] == [
        ("c", "classic"), ("k", "consumer"), ("st", "streams")]


def test_a_group_whose_description_failed_is_still_reported_with_state_unknown() -> None:
    groups = GroupDescriptions(
        {"ok": GroupInfo("ok", "Stable", 1)},
        failed=("bad",),
        reasons={"bad": "GroupIdNotFoundError: not a classic group"},
        types={"ok": GroupType.CLASSIC, "bad": GroupType.STREAMS},
    )
    assert offset_groups(groups) == ["bad", "ok"]
    offsets = CommittedOffsets({"ok": {("t", 0): 1}, "bad": {("t", 0): 2}})
    data = select(ClusterRead(groups, offsets, (topic("t", {0: 1}),), {("t", 0): 0},
                              {("t", 0): 5}), EVERYTHING)
    assert data.groups["bad"] == GroupInfo("bad", "Unknown", group_type=GroupType.STREAMS)
    assert data.committed["bad"] == {("t", 0): 2}
    # Still counted, as it was when such a group was left out.
    assert data.skipped_groups == {DESCRIBE_FAILED: 1}
    view = compute_lag(data, {}, NOW)
    assert {(r.group, r.lag) for r in view.partitions} == {("ok", 4), ("bad", 3)}
    assert {g.group: g.state for g in view.groups} == {"ok": "Stable", "bad": "Unknown"}


def test_each_describe_failure_is_logged_once_while_it_lasts() -> None:
    def failing(reasons: Dict[str, str]) -> Dict[str, str]:
        return describe_failures(GroupDescriptions({}, failed=tuple(reasons), reasons=reasons))

    new, logged = failures_to_log(failing({"a": "X", "b": "Y"}), frozenset())
    assert new == [("a", "X"), ("b", "Y")]
    new, logged = failures_to_log(failing({"a": "X", "b": "Y"}), logged)
    assert new == []
    # b fails for another reason: logged again; a recovered, then fails again: logged again.
    new, logged = failures_to_log(failing({"b": "Z"}), logged)
    assert new == [("b", "Z")]
    new, logged = failures_to_log(failing({"a": "X", "b": "Z"}), logged)
    assert new == [("a", "X")]
