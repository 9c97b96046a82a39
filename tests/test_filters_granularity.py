"""Granularity, custom labels and group/topic filters, end to end on /metrics of a real exporter.

One case per feature on the session broker; the rules themselves are unit-tested without
one: the filters in test_selection, granularity and custom labels in test_families.
One data set (names unique to this module) is watched by two exporter processes with the
same filters and labels: one at granularity "topic", one at "partition".
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from kafka import KafkaAdminClient, TopicPartition

from exporter import ExporterProcess, free_port, now_ms
from kafkahelp import commit, create_topic, produce

CLUSTER = "fg"
LABELS = {"environment": "test", "team": "payments"}

# Families with one series per (group, topic, partition): reported at "partition" only.
PARTITION_ONLY = (
    "kafka_consumergroup_group_offset",
    "kafka_consumergroup_group_lag",
    "kafka_consumergroup_group_lag_seconds",
    "kafka_consumergroup_group_messages_lost",
    "kafka_consumergroup_group_retention_margin",
    "kafka_consumergroup_group_lag_retention_ratio",
)
LATEST = "kafka_partition_latest_offset"
EARLIEST = "kafka_partition_earliest_offset"


def _config(port: int, granularity: str, bootstrap: str, prefix: str, labels: str) -> str:
    return f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {port}
granularity = "{granularity}"

[exporter.timestamp_sampling]
cache_ttl = "30s"

[exporter.performance]
kafka_timeout = "10s"

[[clusters]]
name = "{CLUSTER}"
bootstrap_servers = "{bootstrap}"
group_whitelist = ["^{prefix}", "{prefix}-special"]
group_blacklist = ["-skip$"]
topic_whitelist = ["^{prefix}"]
topic_blacklist = ["-skip$"]

[clusters.labels]
{labels}
"""


class Names:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.t1 = f"{prefix}-t1"              # 2 partitions, kept
        self.t2 = f"{prefix}-t2-skip"         # topic blacklisted
        self.idle = f"{prefix}-idle"          # kept, no group reads it
        self.a = f"{prefix}-a"                # kept: lag 3 + 0 on t1, 5 on the blacklisted t2
        self.b = f"{prefix}-b-skip"           # group blacklisted
        self.only_skip = f"{prefix}-onlyskip"  # kept, but its only offsets are on t2
        self.special = f"zz-{prefix}-special-g"  # kept by the unanchored pattern
        self.other = f"zz-{prefix}-other"     # matches no whitelist pattern


@pytest.fixture(scope="module")
def watched(kafka, tmp_path_factory):
    """The data set, and {"topic": exporter, "partition": exporter} watching it."""
    n = Names(f"klagt-fg-{uuid.uuid4().hex[:8]}")
    old = now_ms() - 60_000
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000)
    try:
        create_topic(admin, n.t1, 2)
        create_topic(admin, n.t2, 1)
        create_topic(admin, n.idle, 1)
        produce(kafka.bootstrap, n.t1, 0, [old] * 4)
        produce(kafka.bootstrap, n.t1, 1, [old] * 2)
        produce(kafka.bootstrap, n.t2, 0, [old] * 5)
        produce(kafka.bootstrap, n.idle, 0, [old] * 3)
        t1p0, t1p1, t2p0 = TopicPartition(n.t1, 0), TopicPartition(n.t1, 1), TopicPartition(n.t2, 0)
        commit(admin, n.a, {t1p0: 1, t1p1: 2, t2p0: 0})
        commit(admin, n.b, {t1p0: 0})
        commit(admin, n.only_skip, {t2p0: 1})
        commit(admin, n.special, {t1p0: 2})
        commit(admin, n.other, {t1p0: 0})
    finally:
        admin.close()
    labels = "\n".join(f'{k} = "{v}"' for k, v in LABELS.items())
    exporters = {}
    try:
        for granularity in ("topic", "partition"):
            port = free_port()
            workdir = tmp_path_factory.mktemp(f"exporter-{granularity}")
            exporters[granularity] = ExporterProcess(
                workdir, _config(port, granularity, kafka.bootstrap, n.prefix, labels), port)
        yield n, exporters
    finally:
        for proc in exporters.values():
            assert proc.stop() == 0, proc.log.read_text()[-3000:]


def _collected(n: Names, with_seconds: bool):
    def ready(s) -> bool:
        return (s.get("kafka_consumergroup_group_max_lag", group=n.a) is not None
                and s.get("kafka_consumergroup_group_max_lag", group=n.special) is not None
                and (not with_seconds
                     or (s.get("kafka_consumergroup_group_max_lag_seconds", group=n.a) or 0) > 0
                     and s.get("kafka_consumergroup_group_max_lag_seconds", group=n.special) is not None))
    return ready


@pytest.mark.broker
def test_topic_and_partition_granularity(watched):
    """Granularity "topic": aggregates and watermarks only; "partition": per-partition series too."""
    n, exporters = watched
    s = exporters["topic"].wait_for(_collected(n, True), timeout=60, what="topic-granularity data")
    for name in PARTITION_ONLY:
        assert not s.find(name), f"{name} must not be reported at granularity topic"
        assert f"# TYPE {name} " not in s.text
    assert s.get(LATEST, topic=n.t1, partition="0") == 4
    assert s.get(LATEST, topic=n.t1, partition="1") == 2
    assert s.get(EARLIEST, topic=n.t1, partition="0") == 0
    assert s.get(LATEST, topic=n.idle, partition="0") == 3
    assert s.get("kafka_consumergroup_group_max_lag", group=n.a) == 3
    assert s.get("kafka_consumergroup_group_sum_lag", group=n.a) == 3
    assert s.get("kafka_consumergroup_group_topic_sum_lag", group=n.a, topic=n.t1) == 3
    assert s.get("kafka_consumergroup_group_max_lag_seconds", group=n.a) == pytest.approx(60, abs=30)
    assert s.get("kafka_consumergroup_group_state", group=n.a) == 5
    assert s.get("kafka_consumergroup_group_members", group=n.a) == 0
    assert s.get("kafka_lag_exporter_up", cluster_name=CLUSTER) == 1

    s = exporters["partition"].wait_for(_collected(n, True), timeout=60, what="partition-granularity data")
    p0 = dict(group=n.a, topic=n.t1, partition="0")
    p1 = dict(group=n.a, topic=n.t1, partition="1")
    assert s.get("kafka_consumergroup_group_offset", **p0) == 1
    assert s.get("kafka_consumergroup_group_lag", **p0) == 3
    assert s.get("kafka_consumergroup_group_offset", **p1) == 2
    assert s.get("kafka_consumergroup_group_lag", **p1) == 0
    assert s.get("kafka_consumergroup_group_lag_seconds", **p0) == pytest.approx(60, abs=30)
    assert s.get("kafka_consumergroup_group_lag_seconds", **p1) == 0
    # Two groups at different offsets of one partition (a at 1, special at 2) both get a time lag.
    special = dict(group=n.special, topic=n.t1, partition="0")
    assert s.get("kafka_consumergroup_group_lag_seconds", **special) == pytest.approx(60, abs=30)
    assert s.get("kafka_consumergroup_group_messages_lost", **p0) == 0
    assert s.get("kafka_consumergroup_group_retention_margin", **p0) == 1
    assert s.get("kafka_consumergroup_group_lag_retention_ratio", **p0) == 75
    assert s.get("kafka_consumergroup_group_max_lag", group=n.a) == 3
    assert s.get("kafka_consumergroup_group_sum_lag", group=n.a) == 3
    assert s.get(LATEST, topic=n.idle, partition="0") == 3


@pytest.mark.broker
def test_time_lag_for_groups_at_different_offsets_of_one_partition(watched, kafka, tmp_path):
    """Two groups at different committed offsets of one partition both get a time lag in the same cycle."""
    n, _ = watched
    port = free_port()
    labels = "\n".join(f'{k} = "{v}"' for k, v in LABELS.items())
    proc = ExporterProcess(tmp_path, _config(port, "partition", kafka.bootstrap, n.prefix, labels), port)
    try:
        # Scrapes every 0.3 s catch the first cycle that sampled timestamps (polls are 1 s apart).
        s = proc.wait_for(
            lambda s: s.find("kafka_consumergroup_group_lag_seconds", topic=n.t1, partition="0"),
            timeout=60, what="the first time lag on the shared partition")
        stamped = {l["group"]: v for l, v in
                   s.find("kafka_consumergroup_group_lag_seconds", topic=n.t1, partition="0")}
        assert set(stamped) == {n.a, n.special}, stamped
        # Both records (offsets 1 and 2) were written 60 s before the test started.
        assert stamped[n.a] == pytest.approx(60, abs=30)
        assert stamped[n.special] == pytest.approx(60, abs=30)
    finally:
        assert proc.stop() == 0, proc.log.read_text()[-3000:]


@pytest.mark.broker
def test_custom_labels_on_every_series(watched):
    """The cluster's custom labels are on every series of the cluster, health series included."""
    n, exporters = watched
    for granularity, proc in exporters.items():
        s = proc.wait_for(_collected(n, False), timeout=60, what=f"{granularity} data")
        assert len(s.values) > 20
        for (name, labels), _ in s.values.items():
            got = dict(labels)
            assert got.get("cluster_name") == CLUSTER, (name, got)
            for key, value in LABELS.items():
                assert got.get(key) == value, f"{granularity}: {name} {got} lacks {key}={value}"
        assert s.get("kafka_lag_exporter_up", **LABELS) == 1
        assert s.get("kafka_consumergroup_group_sum_lag", group=n.a, **LABELS) == 3


@pytest.mark.broker
def test_group_and_topic_filters(watched):
    """Group whitelist/blacklist and topic whitelist/blacklist decide which groups, topics and partitions show."""
    n, exporters = watched
    for granularity, proc in exporters.items():
        s = proc.wait_for(_collected(n, False), timeout=60, what=f"{granularity} data")
        groups = {labels["group"] for labels, _ in s.find("kafka_consumergroup_group_state")}
        # ^prefix keeps a, onlyskip; the unanchored "{prefix}-special" keeps zz-...-special-g;
        # -skip$ drops b-skip; zz-...-other matches no whitelist pattern.
        assert groups == {n.a, n.only_skip, n.special}, granularity
        watermark_topics = {labels["topic"] for labels, _ in s.find(LATEST)}
        assert watermark_topics == {n.t1, n.idle}, granularity
        assert {labels["topic"] for labels, _ in s.find(EARLIEST)} == {n.t1, n.idle}
        # The blacklisted topic leaves a's aggregates: lag 5 on t2 is not counted.
        assert s.get("kafka_consumergroup_group_sum_lag", group=n.a) == 3
        assert s.get("kafka_consumergroup_group_max_lag", group=n.a) == 3
        assert [l["topic"] for l, _ in s.find("kafka_consumergroup_group_topic_sum_lag", group=n.a)] == [n.t1]
        # A group whose only offsets are on a blacklisted topic: described, but no lag figures.
        assert s.get("kafka_consumergroup_group_state", group=n.only_skip) == 5
        assert s.get("kafka_consumergroup_group_members", group=n.only_skip) == 0
        assert s.get("kafka_consumergroup_group_sum_lag", group=n.only_skip) is None
        assert s.get("kafka_consumergroup_group_max_lag", group=n.only_skip) is None
        assert s.get("kafka_consumergroup_group_sum_lag", group=n.special) == 2
        assert n.t2 not in s.text and n.b not in s.text and n.other not in s.text
    s = exporters["partition"].scrape()
    rows = {(l["group"], l["topic"], l["partition"]) for l, _ in s.find("kafka_consumergroup_group_lag")}
    assert rows == {(n.a, n.t1, "0"), (n.a, n.t1, "1"), (n.special, n.t1, "0")}


@pytest.mark.subprocess
@pytest.mark.parametrize("label", ["topic", "cluster_name", "group"])
def test_custom_label_clashing_with_builtin_is_config_error(tmp_path, label):
    """A custom label named like a built-in label is refused: exit 2 and one line naming the key."""
    config = tmp_path / "klag.toml"
    config.write_text(_config(free_port(), "partition", "127.0.0.1:9", "x", f'{label} = "orders"'))
    for mode in ([], ["--check"], ["--once"]):
        proc = subprocess.run([sys.executable, "-m", "klag_collector", "-c", str(config), *mode],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (mode, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"clusters[0].labels.{label}" in lines[0]
        assert str(config) in lines[0]
        assert "clashes with a label the exporter sets itself" in lines[0]
        assert proc.stdout == ""
