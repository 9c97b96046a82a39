"""Tests for the pure lag core: hand-built cluster data, a fixed `now`, exact figures."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from hypothesis import given
from hypothesis import strategies as st

from klag_collector.lag import (
    compute_lag,
    partition_lag,
    timestamp_requests,
)
from klag_collector.record_age import (
    TIMESTAMP_UNAVAILABLE,
    WATERMARK_UNAVAILABLE,
    CaughtUp,
    sampled_offset,
    time_lag,
)
from klag_collector.model import (
    NO_MEMBER,
    TP,
    ClusterData,
    GroupInfo,
    GroupLag,
    LagView,
    Member,
    PartitionLag,
)

NOW = 1_700_000_100.0
NOW_MS = 1_700_000_100_000


def cluster(
    committed: Mapping[str, Mapping[TP, int]],
    earliest: Mapping[TP, int],
    latest: Mapping[TP, int],
    groups: Optional[Mapping[str, GroupInfo]] = None,
    **kw: object,
) -> ClusterData:
    """Cluster data whose groups default to one Stable single-member group per committed entry."""
    if groups is None:
        groups = {name: GroupInfo(name=name, state="Stable", members=1) for name in committed}
    return ClusterData(
        groups=groups, committed=committed, earliest=earliest, latest=latest, **kw  # type: ignore[arg-type]
    )


def row(view: LagView, group: str, topic: str, partition: int) -> PartitionLag:
    """The one partition row of `view` for (group, topic, partition)."""
    found = [
        r
        for r in view.partitions
        if (r.group, r.topic, r.partition) == (group, topic, partition)
    ]
    assert len(found) == 1, found
    return found[0]


def group(view: LagView, name: str) -> GroupLag:
    """The one group aggregate of `view` named `name`."""
    found = [g for g in view.groups if g.group == name]
    assert len(found) == 1, found
    return found[0]


# --- offset lag -------------------------------------------------------------------------


def test_lag_is_latest_minus_committed() -> None:
    """A group committed at 40 on a partition ending at 100 lags by 60 messages."""
    data = cluster({"g": {("t", 0): 40}}, {("t", 0): 0}, {("t", 0): 100})
    r = row(compute_lag(data, None, NOW), "g", "t", 0)
    assert (r.committed, r.earliest, r.latest, r.lag) == (40, 0, 100, 60)
    assert (r.messages_lost, r.retention_margin, r.data_loss) == (0, 40, False)
    assert r.retention_ratio == 60.0


def test_committed_past_the_log_end_is_out_of_range_not_caught_up() -> None:
    """A committed offset 20 past the high watermark: lag 0 (never negative), no time lag, out of range 20."""
    data = cluster({"g": {("t", 0): 120}}, {("t", 0): 0}, {("t", 0): 100})
    # Even a timestamp at that offset (there is none on the broker) is not used.
    view = compute_lag(data, {("t", 0, 120): NOW_MS - 5_000, ("t", 0, 100): NOW_MS - 5_000}, NOW)
    r = row(view, "g", "t", 0)
    assert (r.committed, r.latest, r.lag, r.offset_out_of_range) == (120, 100, 0, 20)
    assert r.lag_seconds is None
    assert (r.messages_lost, r.retention_margin, r.data_loss) == (0, 120, False)
    assert r.retention_ratio == 0.0
    # Its time lag is unknown for a known reason with its own gauge: not counted as skipped.
    assert view.skipped == {}
    assert view.offset_out_of_range_partitions == 1
    assert view.data_loss_partitions == 0
    figures = [(r.lag, r.offset_out_of_range) for r in (
        partition_lag("g", ("t", 0), committed, 0, 100, NO_MEMBER, False, None, NOW)
        for committed in (120, 100, 40))]
    assert figures == [(0, 20), (0, 0), (60, 0)]


offsets = st.integers(min_value=-1, max_value=10**12)


@given(offsets, offsets, offsets, st.none() | st.integers(0, NOW_MS * 2) | st.just(CaughtUp(0)))
def test_partition_lag_holds_the_definitions(committed: int, earliest: int, latest: int,
                                             record_time: object) -> None:
    """Every figure of a row as its definition states it, whatever the offsets."""
    stamps = {("t", 0, max(committed, earliest)): record_time}
    r = partition_lag("g", ("t", 0), committed, earliest, latest, NO_MEMBER, True, stamps, NOW)
    assert r.lag == max(0, latest - committed)
    assert r.offset_out_of_range == max(0, committed - latest)
    assert r.messages_lost == max(0, earliest - committed)
    assert r.retention_margin == committed - earliest
    retained = latest - earliest
    assert r.retention_ratio == (r.lag * 100.0 / retained if retained > 0 else 0.0)
    assert r.data_loss is (committed < earliest) and r.compacted is True
    if r.offset_out_of_range:
        assert r.lag_seconds is None
    else:
        assert r.lag_seconds == time_lag(r.lag, record_time, NOW)  # type: ignore[arg-type]


def test_out_of_range_is_computed_with_sampling_off() -> None:
    """Without timestamp sampling the out-of-range figure is still there; nothing is counted as skipped."""
    data = cluster({"g": {("t", 0): 103, ("t", 1): 7}}, {("t", 0): 0, ("t", 1): 0}, {("t", 0): 100, ("t", 1): 10})
    view = compute_lag(data, None, NOW)
    assert (row(view, "g", "t", 0).offset_out_of_range, row(view, "g", "t", 0).lag) == (3, 0)
    assert (row(view, "g", "t", 1).offset_out_of_range, row(view, "g", "t", 1).lag) == (0, 3)
    assert view.offset_out_of_range_partitions == 1
    assert view.skipped == {}


def test_out_of_range_counts_as_zero_lag_and_is_ignored_by_max_lag_seconds() -> None:
    """max_lag and sum_lag count an out-of-range partition as 0; max_lag_seconds ignores it."""
    data = cluster(
        {
            "g": {("t", 0): 90, ("t", 1): 130, ("t", 2): 100},  # lag 10; 30 past the end; caught up
            "only": {("t", 1): 101},  # 1 past the end and nothing else
        },
        {("t", 0): 0, ("t", 1): 0, ("t", 2): 0},
        {("t", 0): 100, ("t", 1): 100, ("t", 2): 100},
    )
    view = compute_lag(data, {("t", 0, 90): NOW_MS - 42_000}, NOW)
    g = group(view, "g")
    assert (g.max_lag, g.sum_lag, g.topic_sum_lag, g.max_lag_seconds) == (10, 10, {"t": 10}, 42.0)
    only = group(view, "only")
    # Lag 0 but no time lag: max_lag_seconds is left out rather than a 0 reading as caught up.
    assert (only.max_lag, only.sum_lag, only.topic_sum_lag, only.max_lag_seconds) == (0, 0, {"t": 0}, None)
    assert [r.offset_out_of_range for r in view.partitions] == [0, 30, 0, 1]
    assert view.offset_out_of_range_partitions == 2
    assert view.skipped == {}
    assert timestamp_requests(data) == {("t", 0, 90)}


# --- time lag ---------------------------------------------------------------------------


def test_caught_up_partition_has_zero_seconds_without_any_timestamp() -> None:
    """Lag 0 gives lag_seconds 0.0 even though no record timestamp was fetched."""
    data = cluster({"g": {("t", 0): 100}}, {("t", 0): 0}, {("t", 0): 100})
    view = compute_lag(data, {}, NOW)
    r = row(view, "g", "t", 0)
    assert r.lag == 0
    assert r.lag_seconds == 0.0
    assert view.skipped == {}
    assert group(view, "g").max_lag_seconds == 0.0


def test_lagging_partition_seconds_is_now_minus_record_time() -> None:
    """Lag > 0 gives now - timestamp/1000 of the record at the committed offset, exactly."""
    data = cluster({"g": {("t", 0): 40}}, {("t", 0): 0}, {("t", 0): 100})
    view = compute_lag(data, {("t", 0, 40): 1_700_000_040_500}, NOW)
    assert row(view, "g", "t", 0).lag_seconds == 59.5
    assert view.skipped == {}


def test_record_at_another_offset_is_not_used() -> None:
    """Only the timestamp keyed at the committed offset counts, not a neighbour's."""
    data = cluster({"g": {("t", 0): 40}}, {("t", 0): 0}, {("t", 0): 100})
    timestamps = {("t", 0, 39): NOW_MS - 1_000, ("t", 0, 40): NOW_MS - 7_000}
    assert row(compute_lag(data, timestamps, NOW), "g", "t", 0).lag_seconds == 7.0


def test_future_record_timestamp_clamps_to_zero() -> None:
    """A record stamped after `now` (producer clock skew) gives 0 seconds, not negative."""
    data = cluster({"g": {("t", 0): 40}}, {("t", 0): 0}, {("t", 0): 100})
    view = compute_lag(data, {("t", 0, 40): NOW_MS + 30_000}, NOW)
    r = row(view, "g", "t", 0)
    assert r.lag == 60
    assert r.lag_seconds == 0.0
    assert time_lag(1, NOW_MS + 1, NOW) == 0.0


def test_data_loss_is_explicit_and_timed_from_the_earliest_record() -> None:
    """Committed below the low watermark: lost messages, negative margin, ratio > 100, age of the low record."""
    data = cluster({"g": {("t", 0): 20}}, {("t", 0): 50}, {("t", 0): 100})
    timestamps = {
        ("t", 0, 20): NOW_MS - 999_000,  # long gone: must not be used
        ("t", 0, 50): NOW_MS - 300_000,
    }
    view = compute_lag(data, timestamps, NOW)
    r = row(view, "g", "t", 0)
    assert r.lag == 80
    assert r.messages_lost == 30
    assert r.retention_margin == -30
    assert r.retention_ratio == 160.0
    assert r.lag_seconds == 300.0
    assert r.data_loss is True
    assert view.data_loss_partitions == 1
    assert sampled_offset(20, 50) == 50


def test_missing_timestamp_leaves_seconds_unknown_and_counts_it() -> None:
    """A lagging partition whose record timestamp is absent gets lag_seconds None, counted once."""
    data = cluster({"g": {("t", 0): 40, ("t", 1): 10}}, {("t", 0): 0, ("t", 1): 0}, {("t", 0): 100, ("t", 1): 10})
    view = compute_lag(data, {}, NOW)
    assert row(view, "g", "t", 0).lag_seconds is None
    assert row(view, "g", "t", 1).lag_seconds == 0.0
    assert view.skipped == {TIMESTAMP_UNAVAILABLE: 1}


def test_timestamp_miss_gives_unknown_seconds() -> None:
    """A look-up that found no time to date by (None in the mapping) gives lag_seconds None, counted."""
    data = cluster({"g": {("t", 0): 40}}, {("t", 0): 0}, {("t", 0): 100})
    view = compute_lag(data, {("t", 0, 40): None}, NOW)
    r = row(view, "g", "t", 0)
    assert r.lag == 60
    assert r.lag_seconds is None
    assert view.skipped == {TIMESTAMP_UNAVAILABLE: 1}
    assert group(view, "g").max_lag_seconds is None


def test_caught_up_answer_gives_zero_seconds_with_the_offset_lag_kept() -> None:
    """Only markers or aborted records ahead (CaughtUp): lag_seconds 0, present and not
    counted; the offset lag stays latest - committed, and the group's max is 0."""
    data = cluster({"g": {("t", 0): 5}}, {("t", 0): 0}, {("t", 0): 6})
    view = compute_lag(data, {("t", 0, 5): CaughtUp(6)}, NOW)
    r = row(view, "g", "t", 0)
    assert (r.lag, r.lag_seconds) == (1, 0.0)
    assert view.skipped == {}
    assert group(view, "g").max_lag_seconds == 0.0


def test_caught_up_is_told_by_its_type_not_its_value() -> None:
    """CaughtUp is 0 seconds whatever offset it carries; a plain int of the same value is a time."""
    assert time_lag(3, CaughtUp(NOW_MS - 60_000), NOW) == 0.0
    assert time_lag(3, CaughtUp(0), NOW) == 0.0
    assert time_lag(3, NOW_MS - 60_000, NOW) == 60.0
    assert repr(CaughtUp(7)) == "CaughtUp(at_offset=7)"


def test_caught_up_partition_does_not_hide_another_lagging_ones_time() -> None:
    """A caught-up partition's 0 and a lagging partition's age: the max is the age."""
    data = cluster({"g": {("t", 0): 5, ("t", 1): 2}}, {("t", 0): 0, ("t", 1): 0}, {("t", 0): 6, ("t", 1): 9})
    view = compute_lag(data, {("t", 0, 5): CaughtUp(6), ("t", 1, 2): NOW_MS - 42_000}, NOW)
    assert group(view, "g").max_lag_seconds == 42.0


def test_sampling_off_computes_no_seconds_and_counts_nothing() -> None:
    """With timestamps=None no row has lag_seconds, caught-up ones included, and nothing is counted."""
    data = cluster({"g": {("t", 0): 40, ("t", 1): 10}}, {("t", 0): 0, ("t", 1): 0}, {("t", 0): 100, ("t", 1): 10})
    view = compute_lag(data, None, NOW)
    assert [r.lag for r in view.partitions] == [60, 0]
    assert [r.lag_seconds for r in view.partitions] == [None, None]
    assert view.skipped == {}
    assert group(view, "g").max_lag_seconds is None


# --- unknown watermarks -----------------------------------------------------------------


def test_missing_watermark_leaves_partition_out_and_counts_it() -> None:
    """A partition without a low or high watermark is left out (never lag 0) and counted."""
    data = cluster(
        {"g": {("t", 0): 40, ("t", 1): 5, ("t", 2): 5}, "h": {("t", 1): 5}},
        {("t", 0): 0, ("t", 2): 0},  # (t, 1) has no low watermark
        {("t", 0): 100, ("t", 1): 50},  # (t, 2) has no high watermark
    )
    view = compute_lag(data, {}, NOW)
    assert [(r.group, r.topic, r.partition) for r in view.partitions] == [("g", "t", 0)]
    assert view.skipped == {WATERMARK_UNAVAILABLE: 3, TIMESTAMP_UNAVAILABLE: 1}
    assert (group(view, "g").max_lag, group(view, "g").sum_lag) == (60, 60)
    h = group(view, "h")
    assert (h.max_lag, h.sum_lag, h.max_lag_seconds, h.topic_sum_lag) == (None, None, None, {})


# --- retention and compaction -----------------------------------------------------------


def test_retention_ratio_is_lag_over_retained_messages() -> None:
    """25 messages of lag on a partition retaining 100 is a ratio of 25 %."""
    data = cluster({"g": {("t", 0): 175}}, {("t", 0): 100}, {("t", 0): 200})
    assert row(compute_lag(data, None, NOW), "g", "t", 0).retention_ratio == 25.0


def test_retention_ratio_is_zero_when_nothing_is_retained() -> None:
    """A partition with high <= low retains nothing, so its ratio is 0 rather than a division error."""
    data = cluster({"g": {("t", 0): 60}}, {("t", 0): 100}, {("t", 0): 100})
    r = row(compute_lag(data, None, NOW), "g", "t", 0)
    assert r.lag == 40
    assert r.retention_ratio == 0.0
    assert partition_lag("g", ("t", 0), 3, 10, 5, NO_MEMBER, False, None, NOW).retention_ratio == 0.0


def test_compaction_flag_comes_from_compacted_topics() -> None:
    """Rows on a topic listed in compacted_topics are flagged and counted; others are not."""
    data = cluster(
        {"g": {("c", 0): 1, ("t", 0): 1}},
        {("c", 0): 0, ("t", 0): 0},
        {("c", 0): 5, ("t", 0): 5},
        compacted_topics=frozenset({"c"}),
    )
    view = compute_lag(data, None, NOW)
    assert row(view, "g", "c", 0).compacted is True
    assert row(view, "g", "t", 0).compacted is False
    assert view.compaction_partitions == 1
    assert view.data_loss_partitions == 0


# --- members and groups -----------------------------------------------------------------


def test_member_assignment_is_carried_and_unassigned_gets_no_member() -> None:
    """An assigned partition carries its member; an unassigned one carries NO_MEMBER."""
    alice = Member(consumer_id="consumer-1-abc", client_id="client-1", host="/10.0.0.5")
    info = GroupInfo(name="g", state="Stable", members=1, assignments={("t", 0): alice})
    data = cluster(
        {"g": {("t", 0): 1, ("t", 1): 1}},
        {("t", 0): 0, ("t", 1): 0},
        {("t", 0): 5, ("t", 1): 5},
        groups={"g": info},
    )
    view = compute_lag(data, None, NOW)
    assert row(view, "g", "t", 0).member == alice
    assert row(view, "g", "t", 1).member is NO_MEMBER


def test_group_aggregates_cover_known_partitions() -> None:
    """max_lag, sum_lag and topic_sum_lag cover all rows; max_lag_seconds only the known seconds."""
    data = cluster(
        {"g": {("t", 0): 90, ("t", 1): 70, ("u", 0): 95}},
        {("t", 0): 0, ("t", 1): 0, ("u", 0): 0},
        {("t", 0): 100, ("t", 1): 100, ("u", 0): 100},
    )
    # (t, 1) lags most but its age is unknown; (u, 0) is the oldest known.
    timestamps = {("t", 0, 90): NOW_MS - 12_000, ("u", 0, 95): NOW_MS - 20_000}
    g = group(compute_lag(data, timestamps, NOW), "g")
    assert (g.state, g.members) == ("Stable", 1)
    assert g.max_lag == 30
    assert g.sum_lag == 45
    assert g.topic_sum_lag == {"t": 40, "u": 5}
    assert g.max_lag_seconds == 20.0


def test_group_without_partitions_keeps_state_and_members_only() -> None:
    """A described group with no committed offsets has None aggregates but its state and members."""
    data = cluster(
        {},
        {},
        {},
        groups={
            "empty": GroupInfo(name="empty", state="Empty", members=0),
            "joining": GroupInfo(name="joining", state="PreparingRebalance", members=3),
        },
    )
    view = compute_lag(data, {}, NOW)
    assert view.partitions == ()
    assert view.groups == (
        GroupLag("empty", "Empty", 0, None, None, None, {}),
        GroupLag("joining", "PreparingRebalance", 3, None, None, None, {}),
    )
    assert view.skipped == {}


def test_skipped_groups_are_passed_through() -> None:
    """Groups the edge could not read are reported with the edge's reasons and counts."""
    data = cluster({}, {}, {}, skipped_groups={"offsets_unavailable": 2, "describe_failed": 1})
    view = compute_lag(data, None, NOW)
    assert view.skipped_groups == {"offsets_unavailable": 2, "describe_failed": 1}
    assert view.groups == ()


def test_watermarks_are_passed_through_for_unconsumed_topics() -> None:
    """Every watermark read is in the view, also for partitions no group consumes."""
    data = cluster({}, {("t", 0): 3, ("u", 1): 7}, {("t", 0): 9, ("u", 1): 8})
    view = compute_lag(data, None, NOW)
    assert view.earliest == {("t", 0): 3, ("u", 1): 7}
    assert view.latest == {("t", 0): 9, ("u", 1): 8}


# --- timestamp requests -----------------------------------------------------------------


def test_timestamp_requests_ask_sampled_offsets_of_lagging_partitions_only() -> None:
    """Requests are the (topic, partition, sampled offset) of lagging rows with known watermarks."""
    data = cluster(
        {
            "g": {
                ("t", 0): 40,  # lagging: its committed offset
                ("t", 1): 20,  # data loss: the low watermark
                ("t", 2): 100,  # caught up: nothing
                ("t", 3): 120,  # ahead of high: nothing
                ("t", 4): 1,  # no high watermark: nothing
            },
            "h": {("t", 0): 40},  # same record as g's: asked once
        },
        {("t", 0): 0, ("t", 1): 50, ("t", 2): 0, ("t", 3): 0, ("t", 4): 0},
        {("t", 0): 100, ("t", 1): 100, ("t", 2): 100, ("t", 3): 100},
    )
    assert timestamp_requests(data) == {("t", 0, 40), ("t", 1, 50)}


def test_timestamp_requests_skip_groups_the_lag_core_does_not_report() -> None:
    """Offsets of a group missing from `groups` produce no row, so no timestamp is fetched for them."""
    data = cluster(
        {"g": {("t", 0): 40}, "ghost": {("t", 0): 30}},
        {("t", 0): 0},
        {("t", 0): 100},
        groups={"g": GroupInfo(name="g", state="Stable", members=1)},
    )
    assert timestamp_requests(data) == {("t", 0, 40)}
    assert [r.group for r in compute_lag(data, None, NOW).partitions] == ["g"]


# --- properties over random cluster data ------------------------------------------------

TOPIC_PARTITIONS = [(t, p) for t in ("a", "b") for p in range(3)]
GROUP_NAMES = ["g0", "g1", "g2"]


@st.composite
def cluster_data(draw: st.DrawFn) -> ClusterData:
    """Random cluster data: low <= high, some watermarks missing, offsets on both sides of them."""
    earliest: Dict[TP, int] = {}
    latest: Dict[TP, int] = {}
    for tp in TOPIC_PARTITIONS:
        low = draw(st.integers(0, 1_000))
        high = low + draw(st.integers(0, 1_000))
        if draw(st.integers(0, 5)):
            earliest[tp] = low
        if draw(st.integers(0, 5)):
            latest[tp] = high
    described = draw(st.lists(st.sampled_from(GROUP_NAMES), unique=True))
    groups = {
        name: GroupInfo(
            name=name,
            state=draw(st.sampled_from(["Stable", "Empty", "PreparingRebalance"])),
            members=draw(st.integers(0, 5)),
        )
        for name in described
    }
    committed = {
        name: {
            tp: draw(st.integers(0, 2_200))
            for tp in draw(st.lists(st.sampled_from(TOPIC_PARTITIONS), unique=True))
        }
        # mostly described groups, sometimes one whose description was not read
        for name in draw(st.lists(st.sampled_from(GROUP_NAMES), unique=True))
    }
    compacted = frozenset(draw(st.lists(st.sampled_from(["a", "b"]), unique=True)))
    return ClusterData(groups, committed, earliest, latest, compacted)


@st.composite
def data_and_timestamps(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """Cluster data, plus None (sampling off) or timestamps for some of its requests."""
    data = draw(cluster_data())
    if draw(st.booleans()):
        return data, None
    timestamps: Dict[tuple, Optional[int]] = {}
    for key in sorted(timestamp_requests(data)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            continue  # not fetched
        timestamps[key] = None if choice == 1 else draw(st.integers(NOW_MS - 10**9, NOW_MS + 10**6))
    return data, timestamps


def reported_ids(data: ClusterData) -> Dict[tuple, int]:
    """(group, topic, partition) -> committed, for every described group's row with both watermarks."""
    return {
        (g, t, p): c
        for g, offsets in data.committed.items()
        if g in data.groups
        for (t, p), c in offsets.items()
        if (t, p) in data.earliest and (t, p) in data.latest
    }


@given(data_and_timestamps())
def test_lag_is_never_negative(case) -> None:  # type: ignore[no-untyped-def]
    """No offset lag, time lag, lost-message count or ratio is ever negative."""
    data, timestamps = case
    for r in compute_lag(data, timestamps, NOW).partitions:
        assert r.lag >= 0
        assert r.lag == max(0, r.latest - r.committed)
        assert r.messages_lost >= 0
        assert r.retention_ratio >= 0
        assert r.lag_seconds is None or r.lag_seconds >= 0


@given(data_and_timestamps())
def test_group_aggregates_match_partition_rows(case) -> None:  # type: ignore[no-untyped-def]
    """sum_lag, max_lag, topic sums and max_lag_seconds equal what the group's rows add up to."""
    data, timestamps = case
    view = compute_lag(data, timestamps, NOW)
    assert [g.group for g in view.groups] == sorted(data.groups)
    for g in view.groups:
        rows = [r for r in view.partitions if r.group == g.group]
        if not rows:
            assert (g.max_lag, g.sum_lag, g.max_lag_seconds, g.topic_sum_lag) == (None, None, None, {})
            continue
        assert g.sum_lag == sum(r.lag for r in rows)
        assert g.max_lag == max(r.lag for r in rows)
        assert g.topic_sum_lag == {
            t: sum(r.lag for r in rows if r.topic == t) for t in {r.topic for r in rows}
        }
        known = [r.lag_seconds for r in rows if r.lag_seconds is not None]
        lagging_known = [r.lag_seconds for r in rows if r.lag > 0 and r.lag_seconds is not None]
        if any(r.lag > 0 for r in rows) and not lagging_known:
            assert g.max_lag_seconds is None, "zeros of caught-up partitions must not stand in"
        else:
            assert g.max_lag_seconds == (max(known) if known else None)
        assert (g.state, g.members) == (data.groups[g.group].state, data.groups[g.group].members)


@given(data_and_timestamps())
def test_caught_up_rows_have_zero_seconds_when_sampling(case) -> None:  # type: ignore[no-untyped-def]
    """With sampling on, lag 0 within the log means lag_seconds 0; past its end, none; with it off, no row has seconds."""
    data, timestamps = case
    view = compute_lag(data, timestamps, NOW)
    for r in view.partitions:
        if timestamps is None or r.committed > r.latest:
            assert r.lag_seconds is None
        elif r.lag == 0:
            assert r.lag_seconds == 0.0


@given(data_and_timestamps())
def test_out_of_range_exactly_when_committed_is_past_the_log_end(case) -> None:  # type: ignore[no-untyped-def]
    """offset_out_of_range is committed - latest exactly when committed > latest, else 0; such rows
    have lag 0, no lag_seconds, no timestamp request, and are counted once in the view."""
    data, timestamps = case
    view = compute_lag(data, timestamps, NOW)
    requests = timestamp_requests(data)
    for r in view.partitions:
        assert r.lag >= 0
        assert r.offset_out_of_range >= 0
        assert (r.offset_out_of_range > 0) == (r.committed > r.latest)
        if r.committed > r.latest:
            assert r.offset_out_of_range == r.committed - r.latest
            assert r.lag == 0
            assert r.lag_seconds is None
            # no timestamp is asked for an offset past the end (another group's sampled offset
            # on the partition is below the end, so it cannot be this one)
            assert (r.topic, r.partition, r.committed) not in requests
        else:
            assert r.offset_out_of_range == 0
    assert view.offset_out_of_range_partitions == sum(
        1 for r in view.partitions if r.committed > r.latest
    )


@given(data_and_timestamps())
def test_reported_rows_are_exactly_those_with_known_watermarks(case) -> None:  # type: ignore[no-untyped-def]
    """Rows with both watermarks are reported; every other committed offset is counted, never shown."""
    data, timestamps = case
    view = compute_lag(data, timestamps, NOW)
    known = reported_ids(data)
    assert {(r.group, r.topic, r.partition): r.committed for r in view.partitions} == known
    total = sum(len(offsets) for g, offsets in data.committed.items() if g in data.groups)
    assert view.skipped.get(WATERMARK_UNAVAILABLE, 0) == total - len(known)
    # Out-of-range rows have no time lag for a known reason: they are not counted as unavailable.
    unknown_seconds = sum(
        1 for r in view.partitions if r.lag_seconds is None and r.offset_out_of_range == 0
    )
    expected = 0 if timestamps is None else unknown_seconds
    assert view.skipped.get(TIMESTAMP_UNAVAILABLE, 0) == expected
    assert all(count > 0 for count in view.skipped.values())


@given(data_and_timestamps())
def test_retention_figures_follow_committed_and_earliest(case) -> None:  # type: ignore[no-untyped-def]
    """retention_margin = committed - earliest, messages_lost = max(0, -margin), data loss counted."""
    data, timestamps = case
    view = compute_lag(data, timestamps, NOW)
    for r in view.partitions:
        tp = (r.topic, r.partition)
        assert (r.earliest, r.latest) == (data.earliest[tp], data.latest[tp])
        assert r.retention_margin == r.committed - r.earliest
        assert r.messages_lost == max(0, -r.retention_margin)
        assert r.data_loss == (r.committed < r.earliest)
        assert r.compacted == (r.topic in data.compacted_topics)
    assert view.data_loss_partitions == sum(1 for r in view.partitions if r.committed < r.earliest)
    assert view.compaction_partitions == sum(1 for r in view.partitions if r.compacted)


@given(data_and_timestamps())
def test_time_lag_uses_the_sampled_record(case) -> None:  # type: ignore[no-untyped-def]
    """A known lag_seconds of a lagging row is now minus the age of the record at its sampled offset."""
    data, timestamps = case
    if timestamps is None:
        return
    for r in compute_lag(data, timestamps, NOW).partitions:
        if r.lag == 0:
            continue
        ts = timestamps.get((r.topic, r.partition, sampled_offset(r.committed, r.earliest)))
        assert r.lag_seconds == (None if ts is None else max(0.0, NOW - ts / 1000.0))


@given(cluster_data())
def test_timestamp_requests_are_the_lagging_rows(data: ClusterData) -> None:
    """Every requested key belongs to a reported row with lag > 0, and every such row is requested."""
    view = compute_lag(data, {}, NOW)
    lagging = {
        (r.topic, r.partition, sampled_offset(r.committed, r.earliest))
        for r in view.partitions
        if r.lag > 0
    }
    assert timestamp_requests(data) == lagging


def test_max_lag_seconds_is_unknown_when_no_lagging_partition_has_a_time() -> None:
    """A group lagging only where time lag is unknown gets no max_lag_seconds, not 0."""
    data = ClusterData(
        groups={"g": GroupInfo("g", "Stable", members=1)},
        committed={"g": {("t", 0): 10, ("t", 1): 2}},
        earliest={("t", 0): 0, ("t", 1): 0},
        latest={("t", 0): 10, ("t", 1): 9},
    )
    [group] = compute_lag(data, {}, NOW).groups
    assert (group.max_lag, group.max_lag_seconds) == (7, None)
