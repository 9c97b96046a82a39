"""Tests for turning a hand-built lag view and health into metric families, and their rendering."""

from __future__ import annotations

import shutil
import subprocess
from typing import Dict, FrozenSet, Iterable, List, Set, Tuple

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from klag_collector import metrics as m
from klag_collector.families import Families, health_families, lag_families, merge
from klag_collector.model import (
    NO_MEMBER,
    CacheStats,
    ClusterHealth,
    GroupLag,
    LagView,
    Member,
    PartitionLag,
    ShareGroupLag,
    SharePartitionLag,
)

BASE = (("cluster_name", "prod-eu"), ("env", "prod"), ("region", "eu-west-1"))
OTHER = (("cluster_name", "staging"), ("env", "stage"), ("region", "us-east-1"))
ALICE = Member(consumer_id="consumer-1-abc", client_id="client-1", host="/10.0.0.5")

Sample3 = Tuple[str, FrozenSet[Tuple[str, str]], float]


def _row(topic: str, partition: int, member: Member, committed: int, earliest: int, latest: int,
         seconds: object, compacted: bool) -> PartitionLag:
    """A partition row of group g whose derived figures follow the spec's formulas."""
    lag = max(0, latest - committed)
    return PartitionLag(
        group="g",
        topic=topic,
        partition=partition,
        member=member,
        committed=committed,
        earliest=earliest,
        latest=latest,
        lag=lag,
        lag_seconds=seconds,  # type: ignore[arg-type]
        messages_lost=max(0, earliest - committed),
        retention_margin=committed - earliest,
        retention_ratio=lag * 100.0 / (latest - earliest),
        data_loss=committed < earliest,
        compacted=compacted,
        offset_out_of_range=max(0, committed - latest),
    )


ROWS = (
    _row("c", 0, ALICE, 7, 0, 10, 3.25, True),  # compacted, lag 3
    _row("t", 0, ALICE, 40, 0, 100, 59.5, False),  # lag 60
    _row("t", 1, NO_MEMBER, 20, 50, 100, 120.0, False),  # data loss, lag 80
    _row("t", 2, ALICE, 95, 0, 100, None, False),  # lag 5, age unknown
    _row("t", 3, ALICE, 105, 0, 100, None, False),  # committed past the log end by 5: lag 0, no age
)

VIEW = LagView(
    partitions=ROWS,
    groups=(
        GroupLag("g", "Stable", 2, 80, 148, 120.0, {"c": 3, "t": 145}),
        GroupLag("idle", "Empty", 0, None, None, None, {}),
    ),
    earliest={("c", 0): 0, ("t", 0): 0, ("t", 1): 50, ("t", 2): 0, ("t", 3): 0, ("u", 0): 5},
    latest={("c", 0): 10, ("t", 0): 100, ("t", 1): 100, ("t", 2): 100, ("t", 3): 100, ("u", 0): 5},
    skipped={"timestamp_unavailable": 1, "watermark_unavailable": 2},
    skipped_groups={"offsets_unavailable": 1},
    compaction_partitions=1,
    data_loss_partitions=1,
    offset_out_of_range_partitions=1,
    share_partitions=(
        SharePartitionLag("sg", "t", 0, 90, 10, 30.0),
        SharePartitionLag("sg", "t", 1, 100, 0, 0.0),
    ),
    share_groups=(
        ShareGroupLag("sg", "Stable", 1, 10, 30.0),
        ShareGroupLag("sg-new", "Empty", 0, None, None),  # no share-partition yet
    ),
)


def samples(families: Dict[str, Metric], d: m.MetricDef) -> Set[Sample3]:
    """The (sample name, labels without the cluster's, value) set of one family."""
    cluster_keys = {k for k, _ in BASE}
    out = set()
    for s in families[d.name].samples:
        labels = frozenset((k, v) for k, v in s.labels.items() if k not in cluster_keys)
        out.add((s.name, labels, s.value))
    return out


def lab(**kw: object) -> FrozenSet[Tuple[str, str]]:
    """A label set from keyword arguments, values as strings."""
    return frozenset((k, str(v)) for k, v in kw.items())


def member_labels(topic: str, partition: int, who: Member) -> Dict[str, object]:
    """The group, partition and member labels of one of group g's rows."""
    return dict(group="g", topic=topic, partition=partition, member_host=who.host,
                consumer_id=who.consumer_id, client_id=who.client_id)


def as_metrics(families: Families) -> Dict[str, Metric]:
    """Each family as the prometheus_client family a registry is given."""
    return {name: family.metric() for name, family in families.items()}


@pytest.fixture
def partition_families() -> Dict[str, Metric]:
    """Families of VIEW at partition granularity."""
    return as_metrics(lag_families(VIEW, BASE, m.Granularity.PARTITION))


@pytest.fixture
def topic_families() -> Dict[str, Metric]:
    """Families of VIEW at topic granularity."""
    return as_metrics(lag_families(VIEW, BASE, m.Granularity.TOPIC))


# --- lag families -----------------------------------------------------------------------


def test_lag_families_are_exactly_the_declared_ones(partition_families: Dict[str, Metric]) -> None:
    """At partition granularity the emitted families are the declared lag families, typed and helped alike."""
    assert list(partition_families) == [d.name for d in m.LAG_FAMILIES]
    for d in m.LAG_FAMILIES:
        family = partition_families[d.name]
        assert (family.type, family.documentation) == (d.type, d.help)


def test_group_lag_samples_carry_member_labels(partition_families: Dict[str, Metric]) -> None:
    """kafka_consumergroup_group_lag has one sample per row, labelled with its member (empty when none)."""
    name = m.GROUP_LAG.name
    assert samples(partition_families, m.GROUP_LAG) == {
        (name, lab(**member_labels("c", 0, ALICE)), 3.0),
        (name, lab(**member_labels("t", 0, ALICE)), 60.0),
        (name, lab(**member_labels("t", 1, NO_MEMBER)), 80.0),
        (name, lab(**member_labels("t", 2, ALICE)), 5.0),
        (name, lab(**member_labels("t", 3, ALICE)), 0.0),
    }
    unassigned = [s for s in partition_families[name].samples if s.labels["partition"] == "1"]
    member = [(s.labels["member_host"], s.labels["consumer_id"], s.labels["client_id"]) for s in unassigned]
    assert member == [("", "", "")]


def test_group_offset_samples_are_committed_offsets(partition_families: Dict[str, Metric]) -> None:
    """kafka_consumergroup_group_offset reports each row's committed offset."""
    name = m.GROUP_OFFSET.name
    assert samples(partition_families, m.GROUP_OFFSET) == {
        (name, lab(**member_labels("c", 0, ALICE)), 7.0),
        (name, lab(**member_labels("t", 0, ALICE)), 40.0),
        (name, lab(**member_labels("t", 1, NO_MEMBER)), 20.0),
        (name, lab(**member_labels("t", 2, ALICE)), 95.0),
        (name, lab(**member_labels("t", 3, ALICE)), 105.0),
    }


def test_lag_seconds_series_has_flags_and_skips_unknown_ages(partition_families: Dict[str, Metric]) -> None:
    """lag_seconds carries "true"/"false" flags and has no series for the rows whose age is unknown or out of range."""
    name = m.GROUP_LAG_SECONDS.name
    def flagged(topic: str, partition: int, who: Member, compaction: str, data_loss: str) -> object:
        return lab(**member_labels(topic, partition, who),
                   compaction_detected=compaction, data_loss_detected=data_loss)

    assert samples(partition_families, m.GROUP_LAG_SECONDS) == {
        (name, flagged("c", 0, ALICE, "true", "false"), 3.25),
        (name, flagged("t", 0, ALICE, "false", "false"), 59.5),
        (name, flagged("t", 1, NO_MEMBER, "false", "true"), 120.0),
    }


def test_retention_families_report_loss_margin_and_ratio(partition_families: Dict[str, Metric]) -> None:
    """messages_lost, retention_margin and lag_retention_ratio are per (group, topic, partition)."""
    ids = {(t, p): lab(group="g", topic=t, partition=p)
           for t, p in [("c", 0), ("t", 0), ("t", 1), ("t", 2), ("t", 3)]}
    lost, margin, ratio = m.GROUP_MESSAGES_LOST, m.GROUP_RETENTION_MARGIN, m.GROUP_LAG_RETENTION_RATIO
    assert samples(partition_families, lost) == {
        (lost.name, ids["c", 0], 0.0), (lost.name, ids["t", 0], 0.0),
        (lost.name, ids["t", 1], 30.0), (lost.name, ids["t", 2], 0.0), (lost.name, ids["t", 3], 0.0),
    }
    assert samples(partition_families, margin) == {
        (margin.name, ids["c", 0], 7.0), (margin.name, ids["t", 0], 40.0),
        (margin.name, ids["t", 1], -30.0), (margin.name, ids["t", 2], 95.0),
        (margin.name, ids["t", 3], 105.0),
    }
    assert samples(partition_families, ratio) == {
        (ratio.name, ids["c", 0], 30.0), (ratio.name, ids["t", 0], 60.0),
        (ratio.name, ids["t", 1], 160.0), (ratio.name, ids["t", 2], 5.0), (ratio.name, ids["t", 3], 0.0),
    }


def test_offset_out_of_range_only_for_partitions_past_the_log_end(partition_families: Dict[str, Metric]) -> None:
    """The out-of-range gauge is committed - latest, present only for the row past the log end."""
    d = m.GROUP_OFFSET_OUT_OF_RANGE
    assert samples(partition_families, d) == {(d.name, lab(group="g", topic="t", partition=3), 5.0)}
    # That row is lag 0, not caught up: no lag_seconds series, not counted as timestamp_unavailable.
    assert not [s for s in partition_families[m.GROUP_LAG_SECONDS.name].samples if s.labels["partition"] == "3"]
    assert VIEW.skipped["timestamp_unavailable"] == 1  # the (t, 2) row only


def test_offset_out_of_range_partitions_is_reported_at_topic_granularity(topic_families: Dict[str, Metric]) -> None:
    """The cluster count is reported at both granularities; the per-partition gauge only at partition."""
    d = m.OFFSET_OUT_OF_RANGE_PARTITIONS
    assert samples(topic_families, d) == {(d.name, lab(), 1.0)}
    assert m.GROUP_OFFSET_OUT_OF_RANGE.name not in topic_families


def test_watermarks_cover_every_partition_read(partition_families: Dict[str, Metric]) -> None:
    """Latest and earliest offsets are reported for all partitions, consumed or not."""
    latest, earliest = m.PARTITION_LATEST_OFFSET, m.PARTITION_EARLIEST_OFFSET
    assert samples(partition_families, latest) == {
        (latest.name, lab(topic="c", partition=0), 10.0),
        (latest.name, lab(topic="t", partition=0), 100.0),
        (latest.name, lab(topic="t", partition=1), 100.0),
        (latest.name, lab(topic="t", partition=2), 100.0),
        (latest.name, lab(topic="t", partition=3), 100.0),
        (latest.name, lab(topic="u", partition=0), 5.0),
    }
    assert samples(partition_families, earliest) == {
        (earliest.name, lab(topic="c", partition=0), 0.0),
        (earliest.name, lab(topic="t", partition=0), 0.0),
        (earliest.name, lab(topic="t", partition=1), 50.0),
        (earliest.name, lab(topic="t", partition=2), 0.0),
        (earliest.name, lab(topic="t", partition=3), 0.0),
        (earliest.name, lab(topic="u", partition=0), 5.0),
    }


def test_group_families_leave_unknown_aggregates_out(partition_families: Dict[str, Metric]) -> None:
    """State and members are reported for every group; max/sum lag only where known."""
    g, idle = lab(group="g"), lab(group="idle")
    assert samples(partition_families, m.GROUP_STATE) == {
        (m.GROUP_STATE.name, g, 3.0), (m.GROUP_STATE.name, idle, 5.0),
    }
    assert samples(partition_families, m.GROUP_MEMBERS) == {
        (m.GROUP_MEMBERS.name, g, 2.0), (m.GROUP_MEMBERS.name, idle, 0.0),
    }
    assert samples(partition_families, m.GROUP_MAX_LAG) == {(m.GROUP_MAX_LAG.name, g, 80.0)}
    assert samples(partition_families, m.GROUP_SUM_LAG) == {(m.GROUP_SUM_LAG.name, g, 148.0)}
    assert samples(partition_families, m.GROUP_MAX_LAG_SECONDS) == {(m.GROUP_MAX_LAG_SECONDS.name, g, 120.0)}
    assert samples(partition_families, m.GROUP_TOPIC_SUM_LAG) == {
        (m.GROUP_TOPIC_SUM_LAG.name, lab(group="g", topic="c"), 3.0),
        (m.GROUP_TOPIC_SUM_LAG.name, lab(group="g", topic="t"), 145.0),
    }


def test_cluster_counts_and_skip_reasons(partition_families: Dict[str, Metric]) -> None:
    """Compaction, data loss and the skipped partitions and groups are reported with their reasons."""
    assert samples(partition_families, m.COMPACTION_PARTITIONS) == {(m.COMPACTION_PARTITIONS.name, lab(), 1.0)}
    assert samples(partition_families, m.DATA_LOSS_PARTITIONS) == {(m.DATA_LOSS_PARTITIONS.name, lab(), 1.0)}
    assert samples(partition_families, m.OFFSET_OUT_OF_RANGE_PARTITIONS) == {
        (m.OFFSET_OUT_OF_RANGE_PARTITIONS.name, lab(), 1.0)
    }
    assert samples(partition_families, m.SKIPPED_PARTITIONS) == {
        (m.SKIPPED_PARTITIONS.name, lab(reason="timestamp_unavailable"), 1.0),
        (m.SKIPPED_PARTITIONS.name, lab(reason="watermark_unavailable"), 2.0),
    }
    assert samples(partition_families, m.SKIPPED_GROUPS) == {
        (m.SKIPPED_GROUPS.name, lab(reason="offsets_unavailable"), 1.0),
    }


def test_every_sample_carries_cluster_and_custom_labels(partition_families: Dict[str, Metric]) -> None:
    """cluster_name and the custom labels are on every sample, ahead of the family's own labels."""
    count = 0
    for name, family in partition_families.items():
        d = next(d for d in m.LAG_FAMILIES if d.name == name)
        for s in family.samples:
            assert list(s.labels) == [k for k, _ in BASE] + list(d.labels)
            assert [s.labels[k] for k, _ in BASE] == [v for _, v in BASE]
            count += 1
    assert count == 56 + 6 + 6  # share groups: 3 per partition, 2-4 per group


def test_topic_granularity_drops_partition_only_families(
    partition_families: Dict[str, Metric], topic_families: Families
) -> None:
    """At topic granularity partition-only families are absent and the others are unchanged."""
    partition_only = {d.name for d in m.LAG_FAMILIES if d.partition_only}
    assert partition_only == {
        m.GROUP_OFFSET.name, m.GROUP_LAG.name, m.GROUP_LAG_SECONDS.name, m.GROUP_MESSAGES_LOST.name,
        m.GROUP_RETENTION_MARGIN.name, m.GROUP_LAG_RETENTION_RATIO.name,
        m.GROUP_OFFSET_OUT_OF_RANGE.name,
        m.SHARE_GROUP_START_OFFSET.name, m.SHARE_GROUP_LAG.name, m.SHARE_GROUP_LAG_SECONDS.name,
    }
    assert set(topic_families) == set(partition_families) - partition_only
    for name, family in topic_families.items():
        assert family.samples == partition_families[name].samples


# --- health families --------------------------------------------------------------------


HEALTH = ClusterHealth(
    last_success=1_700_000_000.0,
    last_duration=1.5,
    consecutive_failures=0,
    failures_total=4,
    skipped_ticks=2,
    cache=CacheStats(entries=10, hits=30, misses=7, fetch_errors=1),
)


def test_health_families_report_up_durations_and_cache() -> None:
    """A fresh cluster is up 1, with its cycle time in ms and s, last update and counters."""
    families = as_metrics(health_families(HEALTH, BASE, fresh=True))
    assert list(families) == [d.name for d in m.HEALTH_FAMILIES]
    got = {name: {(s.name, s.value) for s in f.samples} for name, f in families.items()}
    assert got == {
        "kafka_lag_exporter_up": {("kafka_lag_exporter_up", 1.0)},
        "kafka_consumergroup_poll_time_ms": {("kafka_consumergroup_poll_time_ms", 1500.0)},
        "kafka_lag_exporter_scrape_duration_seconds": {("kafka_lag_exporter_scrape_duration_seconds", 1.5)},
        "kafka_lag_exporter_last_update_timestamp_seconds": {
            ("kafka_lag_exporter_last_update_timestamp_seconds", 1_700_000_000.0)
        },
        "kafka_lag_exporter_cycle_failures_total": {("kafka_lag_exporter_cycle_failures_total", 4.0)},
        "kafka_lag_exporter_skipped_ticks_total": {("kafka_lag_exporter_skipped_ticks_total", 2.0)},
        "kafka_lag_exporter_timestamp_cache_entries": {("kafka_lag_exporter_timestamp_cache_entries", 10.0)},
        "kafka_lag_exporter_timestamp_cache_hits_total": {("kafka_lag_exporter_timestamp_cache_hits_total", 30.0)},
        "kafka_lag_exporter_timestamp_cache_misses_total": {("kafka_lag_exporter_timestamp_cache_misses_total", 7.0)},
        "kafka_lag_exporter_timestamp_fetch_errors_total": {("kafka_lag_exporter_timestamp_fetch_errors_total", 1.0)},
    }
    for f in families.values():
        for s in f.samples:
            assert s.labels == dict(BASE)


def test_counter_families_drop_total_from_the_family_name_only() -> None:
    """Counter families are named without _total, as prometheus_client expects; samples keep it."""
    family = as_metrics(health_families(HEALTH, BASE, fresh=True))[m.CYCLE_FAILURES.name]
    assert (family.name, family.type) == ("kafka_lag_exporter_cycle_failures", "counter")
    assert [s.name for s in family.samples] == ["kafka_lag_exporter_cycle_failures_total"]


def test_stale_cluster_is_down() -> None:
    """A cluster whose data is not fresh reports up 0."""
    families = as_metrics(health_families(HEALTH, BASE, fresh=False))
    assert [s.value for s in families[m.UP.name].samples] == [0.0]


def test_unknown_durations_and_last_update_are_left_out() -> None:
    """Before any cycle finishes, poll_time, scrape_duration and last_update have no sample, never 0."""
    families = as_metrics(health_families(ClusterHealth(), BASE, fresh=False))
    assert families[m.POLL_TIME_MS.name].samples == []
    assert families[m.SCRAPE_DURATION.name].samples == []
    assert families[m.LAST_UPDATE.name].samples == []
    assert [s.value for s in families[m.UP.name].samples] == [0.0]
    assert [s.value for s in families[m.CYCLE_FAILURES.name].samples] == [0.0]


# --- merging and rendering --------------------------------------------------------------


def two_clusters() -> List[Metric]:
    """prod-eu at partition granularity and staging at topic granularity, merged."""
    staging = ClusterHealth(last_success=None, last_duration=None, failures_total=9)
    return merge(
        [
            lag_families(VIEW, BASE, m.Granularity.PARTITION),
            health_families(HEALTH, BASE, fresh=True),
            lag_families(VIEW, OTHER, m.Granularity.TOPIC),
            health_families(staging, OTHER, fresh=False),
        ],
        m.ALL_FAMILIES,
    )


def test_merge_gives_each_family_once_with_both_clusters() -> None:
    """Each family name appears once, in declaration order, holding every cluster's samples."""
    merged = two_clusters()
    names = [f.name for f in merged]
    assert len(names) == len(set(names))
    # Every family families.py builds; the sharding ones come from shard_poller.ShardReport.
    built = m.LAG_FAMILIES + m.HEALTH_FAMILIES
    assert names == [d.name.removesuffix("_total") if d.type == "counter" else d.name
                     for d in built]
    by_name = {f.name: f for f in merged}

    def clusters(name: str) -> List[str]:
        return [s.labels["cluster_name"] for s in by_name[name].samples]

    assert clusters(m.GROUP_STATE.name) == ["prod-eu", "prod-eu", "staging", "staging"]
    assert clusters(m.GROUP_LAG.name) == ["prod-eu"] * 5  # staging reports topic granularity
    assert clusters(m.POLL_TIME_MS.name) == ["prod-eu"]  # staging has no duration yet
    assert clusters("kafka_lag_exporter_cycle_failures") == ["prod-eu", "staging"]
    assert [s.value for s in by_name[m.UP.name].samples] == [1.0, 0.0]


def test_merge_drops_families_without_samples() -> None:
    """A family no cluster reports a sample for is left out of the merge entirely."""
    empty = LagView((), (), {}, {}, {}, {}, 0, 0, 0)
    merged = merge([lag_families(empty, BASE, m.Granularity.PARTITION)], m.ALL_FAMILIES)
    assert [(f.name, [s.value for s in f.samples]) for f in merged] == [
        (m.COMPACTION_PARTITIONS.name, [0.0]),
        (m.DATA_LOSS_PARTITIONS.name, [0.0]),
        (m.OFFSET_OUT_OF_RANGE_PARTITIONS.name, [0.0]),
    ]


class _Fixed:
    """A collector yielding fixed families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)

    def describe(self) -> List[Metric]:
        return []


def _registry(families: Iterable[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))  # type: ignore[arg-type]
    return registry


def _promtool(text: bytes) -> Tuple[int, List[str]]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    lines = (done.stdout + done.stderr).decode().splitlines()
    return done.returncode, [line for line in lines if line.strip()]


@pytest.mark.subprocess
def test_text_output_passes_promtool_but_for_poll_time_ms() -> None:
    """promtool's only complaint is the documented abbreviated unit of kafka_consumergroup_poll_time_ms."""
    code, problems = _promtool(generate_latest(_registry(two_clusters())))
    assert code == 3  # lint problems found: the known one
    assert problems
    for line in problems:
        assert line.startswith("kafka_consumergroup_poll_time_ms "), line
        assert "abbreviated units" in line, line


@pytest.mark.subprocess
def test_text_output_without_poll_time_ms_is_clean() -> None:
    """With the one documented exception removed, promtool finds nothing at all."""
    families = [f for f in two_clusters() if f.name != m.POLL_TIME_MS.name]
    # The sharding families come from shard_poller.ShardReport, not from families.py.
    assert len(families) == len(m.LAG_FAMILIES + m.HEALTH_FAMILIES) - 1
    assert _promtool(generate_latest(_registry(families))) == (0, [])


def test_openmetrics_output_parses_back_to_the_same_samples() -> None:
    """The OpenMetrics rendering parses back into the same families, types and samples."""
    merged = two_clusters()
    text = generate_openmetrics(_registry(merged)).decode()
    assert text.endswith("# EOF\n")
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(parsed) == {f.name for f in merged}
    for family in merged:
        back = parsed[family.name]
        assert back.type == family.type
        assert back.documentation == family.documentation
        assert [(s.name, s.labels, s.value) for s in back.samples] == [
            (s.name, s.labels, s.value) for s in family.samples
        ]


def test_share_group_families(partition_families: Dict[str, Metric], topic_families: Families) -> None:
    """Share groups have their own families: per partition at partition granularity only,
    state numbered as the consumer group states of the same name, no sum without partitions."""

    def values(families: Families, name: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
        fam = families.get(name)
        own = {k for k, _ in BASE}
        return {} if fam is None else {
            tuple((k, v) for k, v in s.labels.items() if k not in own): s.value
            for s in fam.samples
        }

    p0 = (("group", "sg"), ("topic", "t"), ("partition", "0"))
    p1 = (("group", "sg"), ("topic", "t"), ("partition", "1"))
    assert values(partition_families, m.SHARE_GROUP_START_OFFSET.name) == {p0: 90, p1: 100}
    assert values(partition_families, m.SHARE_GROUP_LAG.name) == {p0: 10, p1: 0}
    assert values(partition_families, m.SHARE_GROUP_LAG_SECONDS.name) == {p0: 30.0, p1: 0.0}
    sg, new = (("group", "sg"),), (("group", "sg-new"),)
    for families in (partition_families, topic_families):
        assert values(families, m.SHARE_GROUP_STATE.name) == {sg: 3, new: 5}
        assert values(families, m.SHARE_GROUP_MEMBERS.name) == {sg: 1, new: 0}
        assert values(families, m.SHARE_GROUP_SUM_LAG.name) == {sg: 10}
        assert values(families, m.SHARE_GROUP_MAX_LAG_SECONDS.name) == {sg: 30.0}
    for name in (m.SHARE_GROUP_START_OFFSET.name, m.SHARE_GROUP_LAG.name,
                 m.SHARE_GROUP_LAG_SECONDS.name):
        assert name not in topic_families
    # Share groups are not consumer groups: none of theirs is in a consumer family.
    assert all(s.labels["group"] != "sg" for s in partition_families[m.GROUP_STATE.name].samples)
    assert m.SHARE_GROUP_STATE.help == "Share group state: 0 Unknown, 3 Stable, 4 Dead, 5 Empty."
    assert m.share_group_state_value("Dead") == 4
    assert m.share_group_state_value("Reconciling") == 0  # not a share group state
