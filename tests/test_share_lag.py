"""The pure lag of share groups (klag_collector.share_lag), and its place in compute_lag."""

from __future__ import annotations

import re

import pytest

from klag_collector.config import NameFilter
from klag_collector.lag import compute_lag, timestamp_requests
from klag_collector.model import (
    ClusterData,
    GroupType,
    ListedGroup,
    ShareGroupInfo,
    ShareGroupLag,
    ShareGroupsRead,
    ShareOffset,
    SharePartitionLag,
)
from klag_collector import selection
from klag_collector.share_lag import compute_share_lag, share_offset_lag, share_timestamp_requests

pytestmark = pytest.mark.unit

NOW = 10_000.0


def names(*whitelist: str) -> NameFilter:
    return NameFilter(tuple(map(re.compile, whitelist)), ())


def data(groups: object = None) -> ClusterData:
    return ClusterData(
        groups={}, committed={},
        earliest={("t", 0): 0, ("t", 1): 0, ("t", 2): 20, ("u", 0): 0},
        latest={("t", 0): 10, ("t", 1): 3, ("t", 2): 30, ("u", 0): 5},
        share_groups=groups or {"sg": ShareGroupInfo("sg", "Stable", 2)},  # type: ignore[arg-type]
        share_offsets={"sg": {
            ("t", 0): ShareOffset(4, 6),       # broker lag 6
            ("t", 1): ShareOffset(0, 0),       # broker lag 0 although latest - start = 3
            ("t", 2): ShareOffset(12),         # v0: no broker lag; retention passed the start
            ("x", 0): ShareOffset(1, None),    # no watermark, no broker lag
        }},
    )


def test_lag_is_the_brokers_else_latest_minus_start() -> None:
    assert share_offset_lag(ShareOffset(4, 6), 10) == 6
    assert share_offset_lag(ShareOffset(0, 0), 3) == 0
    assert share_offset_lag(ShareOffset(12), 30) == 18
    assert share_offset_lag(ShareOffset(35), 30) == 0
    assert share_offset_lag(ShareOffset(1), None) is None
    assert share_offset_lag(ShareOffset(1, 5), None) == 5


def test_the_records_to_date_are_those_at_lagging_start_offsets() -> None:
    # t-1 is caught up (broker lag 0); t-2's start is below the earliest: its record is gone.
    assert share_timestamp_requests(data()) == {("t", 0, 4), ("t", 2, 20)}
    assert timestamp_requests(data()) == {("t", 0, 4), ("t", 2, 20)}


def test_exact_figures() -> None:
    stamps = {("t", 0, 4): 9_000_000, ("t", 2, 20): 9_990_500}
    partitions, groups, skipped = compute_share_lag(data(), stamps, NOW)
    assert partitions == (
        SharePartitionLag("sg", "t", 0, 4, 6, 1000.0),
        SharePartitionLag("sg", "t", 1, 0, 0, 0.0),
        SharePartitionLag("sg", "t", 2, 12, 18, 9.5),
    )
    assert groups == (ShareGroupLag("sg", "Stable", 2, 24, 1000.0),)
    assert skipped == {"watermark_unavailable": 1}


def test_unknown_stays_unknown() -> None:
    partitions, groups, skipped = compute_share_lag(data(), {}, NOW)
    assert [p.lag_seconds for p in partitions] == [None, 0.0, None]
    # Only the caught-up partition's 0 is known: no max that would claim "caught up".
    assert groups[0].max_lag_seconds is None and groups[0].sum_lag == 24
    assert skipped == {"watermark_unavailable": 1, "timestamp_unavailable": 2}
    # Sampling off: no time lag, none counted missing.
    partitions, _, skipped = compute_share_lag(data(), None, NOW)
    assert [p.lag_seconds for p in partitions] == [None, None, None]
    assert skipped == {"watermark_unavailable": 1}


def test_a_future_record_counts_as_0_and_a_group_without_partitions_has_no_sum() -> None:
    d = data({"sg": ShareGroupInfo("sg", "Stable", 2),
                           "new": ShareGroupInfo("new", "Empty")})
    partitions, groups, _ = compute_share_lag(d, {("t", 0, 4): 20_000_000}, NOW)
    assert partitions[0].lag_seconds == 0.0
    assert groups[0] == ShareGroupLag("new", "Empty", 0, None, None)


def test_compute_lag_carries_share_groups_and_never_counts_them_skipped() -> None:
    view = compute_lag(data(), {("t", 0, 4): 9_000_000, ("t", 2, 20): 9_990_500}, NOW)
    assert [g.group for g in view.share_groups] == ["sg"]
    assert len(view.share_partitions) == 3
    assert view.groups == () and view.skipped_groups == {}
    assert view.skipped == {"watermark_unavailable": 1}


def test_selection_routes_share_groups_to_the_share_path() -> None:
    listed = [ListedGroup("a"), ListedGroup("s1", GroupType.SHARE),
              ListedGroup("zz-s", GroupType.SHARE), ListedGroup("c", GroupType.CONSUMER)]
    keep = names("^[a-s]")
    assert [g.name for g in selection.groups_to_describe(listed, keep)] == ["a", "c"]
    assert selection.share_groups_to_describe(listed, keep) == ["s1"]
    read = ShareGroupsRead(described={"s1": ShareGroupInfo("s1", "Stable", 1)},
                           offsets={"s1": {("t", 0): ShareOffset(-1), ("t", 1): ShareOffset(2),
                                           ("other", 0): ShareOffset(1)}},
                           asked=("s1", "s2"))
    assert selection.share_groups(read) == {"s1": ShareGroupInfo("s1", "Stable", 1),
                                            "s2": ShareGroupInfo("s2", "Unknown")}
    assert selection.kept_share_offsets(read.offsets, names("^t$")) == {
        "s1": {("t", 1): ShareOffset(2)}}
