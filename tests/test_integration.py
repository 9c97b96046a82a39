"""End to end on a real Apache Kafka broker: the exporter process, its /metrics and --once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce, wait_until

pytestmark = pytest.mark.broker

LAG_SECONDS = "kafka_consumergroup_group_lag_seconds"


@pytest.fixture
def run_exporter(tmp_path, kafka, unique):
    """Starts the exporter on this test's topics and groups; stops it after the test."""
    started = []

    def start(cluster_extra: str = "", exporter_extra: str = "") -> ExporterProcess:
        port = free_port()
        clusters = cluster_toml("it", kafka.bootstrap, unique, cluster_extra)
        proc = ExporterProcess(tmp_path, config_toml(port, clusters, exporter_extra), port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        assert proc.stop() == 0, proc.log.read_text()[-3000:]


def test_exact_offsets_lag_and_time_lag(admin, kafka, unique, run_exporter):
    """Hand-made records and commits give exact offsets, lags and time lags."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 2)
    base = now_ms()
    produce(kafka.bootstrap, topic, 0, [base - 600_000 + i * 10_000 for i in range(10)])
    produce(kafka.bootstrap, topic, 1, [base - 120_000, base - 60_000, base - 30_000])
    commit(admin, group, {TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 3})
    exporter = run_exporter()
    s = exporter.wait_for(lambda s: s.get("kafka_consumergroup_group_max_lag", group=group) is not None)
    scraped_at = time.time()

    p0 = dict(group=group, topic=topic, partition="0")
    p1 = dict(group=group, topic=topic, partition="1")
    assert s.get("kafka_partition_latest_offset", topic=topic, partition="0") == 10
    assert s.get("kafka_partition_earliest_offset", topic=topic, partition="0") == 0
    assert s.get("kafka_partition_latest_offset", topic=topic, partition="1") == 3
    assert s.get("kafka_consumergroup_group_offset", **p0) == 4
    assert s.get("kafka_consumergroup_group_lag", **p0) == 6
    assert s.get("kafka_consumergroup_group_lag", **p1) == 0
    # The committed offset 4 is the record stamped base - 600 s + 40 s.
    expected = scraped_at - (base - 560_000) / 1000
    assert s.get(LAG_SECONDS, **p0) == pytest.approx(expected, abs=5)
    assert s.get(LAG_SECONDS, **p1) == 0
    assert s.get("kafka_consumergroup_group_max_lag", group=group) == 6
    assert s.get("kafka_consumergroup_group_sum_lag", group=group) == 6
    assert s.get("kafka_consumergroup_group_topic_sum_lag", group=group, topic=topic) == 6
    assert s.get("kafka_consumergroup_group_max_lag_seconds", group=group) == s.get(LAG_SECONDS, **p0)
    assert s.get("kafka_consumergroup_group_state", group=group) == 5  # Empty
    assert s.get("kafka_consumergroup_group_members", group=group) == 0
    assert s.get("kafka_lag_exporter_up", cluster_name="it") == 1

    # --once reads the same cluster and must agree with /metrics.
    once = subprocess.run(
        [sys.executable, "-m", "klag_collector", "-c", str(exporter.config), "--once", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert once.returncode == 0, once.stderr
    rows = json.loads(once.stdout)["clusters"]["it"]["groups"][group]["partitions"]
    by_partition = {r["partition"]: r for r in rows}
    assert (by_partition[0]["committed"], by_partition[0]["latest"], by_partition[0]["lag"]) == (4, 10, 6)
    assert (by_partition[1]["committed"], by_partition[1]["lag"], by_partition[1]["lag_seconds"]) == (3, 0, 0.0)
    assert by_partition[0]["lag_seconds"] == pytest.approx(expected, abs=5)
    table = subprocess.run(
        [sys.executable, "-m", "klag_collector", "-c", str(exporter.config), "--once"],
        capture_output=True, text=True, timeout=60,
    )
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if group in line and f"{topic}  0 " in line)
    assert line.split()[6:9] == ["4", "10", "6"]


def test_empty_and_live_groups(admin, kafka, unique, run_exporter):
    """An offsets-only group and a group with a live member are both reported, with members."""
    topic = f"{unique}-t"
    create_topic(admin, topic, 2)
    produce(kafka.bootstrap, topic, 0, [now_ms() - 5000] * 5)
    commit(admin, f"{unique}-empty", {TopicPartition(topic, 0): 1})
    live = f"{unique}-live"
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, group_id=live, client_id="live-client",
        auto_offset_reset="earliest", enable_auto_commit=False,
        # A join that races the topic's metadata gets no partitions until the next refresh.
        metadata_max_age_ms=1000,
    )
    try:
        wait_until(lambda: consumer.poll(200) or consumer.assignment(), timeout=30, what="assignment")
        consumer.commit({TopicPartition(topic, 0): _oam(2), TopicPartition(topic, 1): _oam(0)})
        exporter = run_exporter()
        s = exporter.wait_for(
            lambda s: s.get("kafka_consumergroup_group_members", group=live) == 1
            and s.get("kafka_consumergroup_group_state", group=f"{unique}-empty") is not None
        )
        assert s.get("kafka_consumergroup_group_state", group=live) == 3  # Stable
        assert s.get("kafka_consumergroup_group_state", group=f"{unique}-empty") == 5
        assert s.get("kafka_consumergroup_group_members", group=f"{unique}-empty") == 0
        [(labels, lag)] = s.find("kafka_consumergroup_group_lag", group=live, partition="0")
        assert lag == 3
        assert labels["client_id"] == "live-client"
        assert labels["member_host"] == "127.0.0.1"
        assert labels["consumer_id"].startswith("live-client-")
        [(labels, _)] = s.find("kafka_consumergroup_group_lag", group=f"{unique}-empty")
        assert (labels["client_id"], labels["consumer_id"], labels["member_host"]) == ("", "", "")
    finally:
        consumer.close()


def _oam(offset: int):
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset, "", -1)


def test_retention_loss_is_reported(admin, kafka, unique, run_exporter):
    """Records deleted under a group's committed offset show as data loss, timed from the earliest record."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 1)
    base = now_ms()
    produce(kafka.bootstrap, topic, 0, [base - 100_000 + i * 1000 for i in range(10)])
    commit(admin, group, {TopicPartition(topic, 0): 2})
    admin.delete_records({TopicPartition(topic, 0): 6})
    exporter = run_exporter()
    ids = dict(group=group, topic=topic, partition="0")
    s = exporter.wait_for(lambda s: s.get("kafka_consumergroup_group_messages_lost", **ids) is not None)
    scraped_at = time.time()
    assert s.get("kafka_partition_earliest_offset", topic=topic, partition="0") == 6
    assert s.get("kafka_consumergroup_group_messages_lost", **ids) == 4
    assert s.get("kafka_consumergroup_group_retention_margin", **ids) == -4
    assert s.get("kafka_consumergroup_group_lag_retention_ratio", **ids) == pytest.approx(8 / 4 * 100)
    [(labels, seconds)] = s.find(LAG_SECONDS, **ids)
    assert labels["data_loss_detected"] == "true"
    assert labels["compaction_detected"] == "false"
    # Time lag of the earliest retained record (offset 6), not of the lost one.
    assert seconds == pytest.approx(scraped_at - (base - 94_000) / 1000, abs=5)
    assert s.get("kafka_lag_exporter_data_loss_partitions", cluster_name="it") == 1


def test_deleted_group_and_topic_disappear(admin, kafka, unique, run_exporter):
    """A deleted group and a deleted topic leave /metrics at the next cycle."""
    topic, gone_topic, group = f"{unique}-t", f"{unique}-x", f"{unique}-g"
    create_topic(admin, topic, 1)
    create_topic(admin, gone_topic, 1)
    produce(kafka.bootstrap, topic, 0, [now_ms()] * 3)
    commit(admin, group, {TopicPartition(topic, 0): 1})
    exporter = run_exporter()
    exporter.wait_for(
        lambda s: s.get("kafka_consumergroup_group_lag", group=group, topic=topic, partition="0") == 2
        and s.get("kafka_partition_latest_offset", topic=gone_topic, partition="0") == 0
    )
    admin.delete_groups([group])
    admin.delete_topics([gone_topic])
    s = exporter.wait_for(
        lambda s: not s.find("kafka_consumergroup_group_state", group=group)
        and not s.find("kafka_partition_latest_offset", topic=gone_topic),
        what="group and topic gone",
    )
    assert s.get("kafka_partition_latest_offset", topic=topic, partition="0") == 3
    assert not s.find("kafka_consumergroup_group_lag", group=group)


def test_compacted_topic_is_flagged(admin, kafka, unique, run_exporter):
    """A group on a cleanup.policy=compact topic carries compaction_detected="true"."""
    topic, group = f"{unique}-c", f"{unique}-g"
    create_topic(admin, topic, 1, {"cleanup.policy": "compact"})
    produce(kafka.bootstrap, topic, 0, [now_ms() - 30_000] * 3, key=b"k")
    commit(admin, group, {TopicPartition(topic, 0): 1})
    exporter = run_exporter()
    s = exporter.wait_for(lambda s: s.find(LAG_SECONDS, group=group))
    [(labels, _)] = s.find(LAG_SECONDS, group=group)
    assert labels["compaction_detected"] == "true"
    assert s.get("kafka_lag_exporter_compaction_detected_partitions", cluster_name="it") == 1


def test_time_lag_follows_a_moving_offset(admin, kafka, unique, run_exporter):
    """When the committed offset moves, the next cycles fetch the new record's timestamp."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 1)
    base = now_ms()
    produce(kafka.bootstrap, topic, 0, [base - 300_000, base - 200_000, base - 100_000, base])
    commit(admin, group, {TopicPartition(topic, 0): 0})
    exporter = run_exporter()
    ids = dict(group=group, topic=topic, partition="0")

    def seconds_near(expected_ms: int):
        def check(s) -> bool:
            [(_, value)] = s.find(LAG_SECONDS, **ids) or [({}, None)]
            return value is not None and abs(value - (time.time() - expected_ms / 1000)) < 5

        return check

    exporter.wait_for(seconds_near(base - 300_000), what="time lag of offset 0")
    for offset, stamp in ((1, base - 200_000), (2, base - 100_000)):
        commit(admin, group, {TopicPartition(topic, 0): offset})
        s = exporter.wait_for(seconds_near(stamp), what=f"time lag of offset {offset}")
        assert s.get("kafka_consumergroup_group_lag", **ids) == 4 - offset
    s = exporter.scrape()
    assert s.get("kafka_lag_exporter_timestamp_fetch_errors_total", cluster_name="it") == 0
    assert s.get("kafka_lag_exporter_timestamp_cache_misses_total", cluster_name="it") >= 3


def test_an_offset_on_a_trailing_commit_marker_is_caught_up(admin, kafka, unique, run_exporter):
    """A committed offset on a trailing transaction marker: a read_committed consumer there
    receives nothing, so the time lag is 0 and present, while the offset lag stays
    high watermark - committed (1), as Kafka's tools show it.

    This was "time lag left out, not 0" (counted as timestamp_unavailable for ever) before
    timestamps were read as a read_committed consumer receives records; see the README,
    "Time lag on transactional topics".
    """
    from kafka import KafkaProducer

    topic, group = f"{unique}-tx", f"{unique}-g"
    create_topic(admin, topic, 1)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id=f"{unique}-txid")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for _ in range(3):
            producer.send(topic, b"x", partition=0, timestamp_ms=now_ms() - 60_000)
        producer.commit_transaction()
    finally:
        producer.close()
    # Offsets 0-2 are the records, offset 3 the commit marker; the end offset is 4.
    commit(admin, group, {TopicPartition(topic, 0): 3})
    exporter = run_exporter()
    ids = dict(group=group, topic=topic, partition="0")
    s = exporter.wait_for(lambda s: s.get(LAG_SECONDS, **ids) is not None, what="time lag")
    assert s.get(LAG_SECONDS, **ids) == 0
    assert s.get("kafka_consumergroup_group_lag", **ids) == 1
    assert s.get("kafka_consumergroup_group_max_lag_seconds", group=group) == 0
    assert not s.get("kafka_lag_exporter_skipped_partitions", cluster_name="it", reason="timestamp_unavailable")
    assert s.get("kafka_lag_exporter_timestamp_fetch_errors_total", cluster_name="it") == 0


def test_cleanup_policy_change_is_seen_after_the_cache_ttl(admin, kafka, unique, tmp_path):
    """Topic configs are cached, and a change to cleanup.policy shows once the cache entry expires."""
    from kafka.admin import ConfigResource, ConfigResourceType

    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 1)
    produce(kafka.bootstrap, topic, 0, [now_ms() - 10_000] * 3, key=b"k")
    commit(admin, group, {TopicPartition(topic, 0): 1})
    port = free_port()
    config = config_toml(port, cluster_toml("it", kafka.bootstrap, unique)).replace(
        'kafka_timeout = "5s"', 'kafka_timeout = "5s"\ncompacted_topics_cache_ttl = "3s"'
    )
    exporter = ExporterProcess(tmp_path, config, port)
    try:
        def flags(s):
            return [labels["compaction_detected"] for labels, _ in s.find(LAG_SECONDS, group=group)]

        exporter.wait_for(lambda s: flags(s) == ["false"], what="compaction_detected false")
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": "compact"})]
        )
        s = exporter.wait_for(lambda s: flags(s) == ["true"], timeout=30, what="compaction_detected true")
        assert s.get("kafka_lag_exporter_compaction_detected_partitions", cluster_name="it") == 1
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]


def test_committed_offset_past_the_log_end_is_out_of_range(admin, kafka, unique, run_exporter):
    """A committed offset 5 past the log end is lag 0, has no time lag, and is reported out of range by 5."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 2)
    base = now_ms()
    records = 4  # partition 0 ends at offset 4
    produce(kafka.bootstrap, topic, 0, [base - 60_000 + i * 1000 for i in range(records)])
    produce(kafka.bootstrap, topic, 1, [base - 30_000, base - 20_000, base - 10_000])
    # The broker accepts a commit past the log end (as after a topic was recreated).
    commit(admin, group, {TopicPartition(topic, 0): records + 5, TopicPartition(topic, 1): 1})
    exporter = run_exporter()
    p0 = dict(group=group, topic=topic, partition="0")
    p1 = dict(group=group, topic=topic, partition="1")
    s = exporter.wait_for(lambda s: s.find(LAG_SECONDS, **p1), what="time lag of partition 1")
    scraped_at = time.time()

    assert s.get("kafka_partition_latest_offset", topic=topic, partition="0") == records
    assert s.get("kafka_consumergroup_group_offset", **p0) == records + 5
    assert s.get("kafka_consumergroup_group_lag", **p0) == 0
    assert not s.find(LAG_SECONDS, **p0)
    assert s.get("kafka_consumergroup_group_offset_out_of_range", **p0) == 5
    assert s.get("kafka_lag_exporter_offset_out_of_range_partitions", cluster_name="it") == 1
    # Its unknown time lag has its own gauge: it is not counted as timestamp_unavailable.
    assert s.get("kafka_lag_exporter_skipped_partitions", cluster_name="it",
                 reason="timestamp_unavailable") is None
    assert s.get("kafka_lag_exporter_data_loss_partitions", cluster_name="it") == 0

    # The group's normal partition is unaffected: lag 2 from offset 1, timed from its record.
    assert s.get("kafka_consumergroup_group_offset", **p1) == 1
    assert s.get("kafka_consumergroup_group_lag", **p1) == 2
    assert s.get("kafka_consumergroup_group_offset_out_of_range", **p1) is None
    [(labels, seconds)] = s.find(LAG_SECONDS, **p1)
    assert labels["data_loss_detected"] == "false"
    assert seconds == pytest.approx(scraped_at - (base - 20_000) / 1000, abs=5)
    # Aggregates count the out-of-range partition as lag 0; max_lag_seconds ignores it.
    assert s.get("kafka_consumergroup_group_max_lag", group=group) == 2
    assert s.get("kafka_consumergroup_group_sum_lag", group=group) == 2
    assert s.get("kafka_consumergroup_group_max_lag_seconds", group=group) == seconds
    # Only partition 1's record was ever looked up: none for the offset past the end.
    assert s.get("kafka_lag_exporter_timestamp_cache_entries", cluster_name="it") == 1
