"""Streams groups (KIP-1071, group.protocol=streams) on a real Kafka 4 broker.

A Kafka Streams application (devtools/java/StreamsDriver.java) makes the group; kafka-python
cannot. DescribeGroups answers such a group "not a classic group"; the exporter describes it
with StreamsGroupDescribe and reports it like a consumer group.
"""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient

from devtools.javadriver import StreamsDriver
from klag_collector import metrics as m
from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import create_topic, produce, wait_until

pytestmark = pytest.mark.broker

STATE, MEMBERS = m.GROUP_STATE.name, m.GROUP_MEMBERS.name
OFFSET, LAG, LAG_SECONDS = m.GROUP_OFFSET.name, m.GROUP_LAG.name, m.GROUP_LAG_SECONDS.name
SKIPPED_GROUPS = m.SKIPPED_GROUPS.name
STABLE, EMPTY = m.GROUP_STATES["Stable"], m.GROUP_STATES["Empty"]
AGE_S = 1800


def _committed(admin: KafkaAdminClient, group: str) -> dict:
    offsets = admin.list_group_offsets([group]).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def test_streams_group_live_then_empty(kafka, need_kafka_4, admin, unique, tmp_path):
    """Stable with its member's labels on the partitions of its active tasks, exact lag and
    time lag while paused; after the application closes: Empty, 0 members, offsets kept."""
    topic, group, client = f"{unique}-t", f"{unique}-app", f"{unique}-c"
    create_topic(admin, topic, 2)
    produce(kafka.bootstrap, topic, 0, [now_ms()] * 5)
    produce(kafka.bootstrap, topic, 1, [now_ms()] * 3)
    driver = StreamsDriver(kafka.bootstrap, group, topic, client)
    port = free_port()
    exporter = ExporterProcess(tmp_path,
                               config_toml(port, cluster_toml("kip1071", kafka.bootstrap, unique)),
                               port)
    try:
        members = driver.wait_ready()
        assert len(members) == 1
        (member_id, (client_id, host)), = members.items()
        wait_until(lambda: _committed(admin, group) == {0: 5, 1: 3}, timeout=60,
                   what="the application to commit everything it read")
        driver.pause()
        # Written while paused: 4 records on partition 0, the first AGE_S old.
        stamp = now_ms() - AGE_S * 1000
        produce(kafka.bootstrap, topic, 0, [stamp + i * 1000 for i in range(4)])
        s = exporter.wait_for(
            lambda s: s.get(STATE, group=group) == STABLE
            and s.get(LAG, group=group, topic=topic, partition="0") == 4,
            timeout=60, what="the streams group to be Stable with lag 4")
        assert _committed(admin, group) == {0: 5, 1: 3}
        assert s.get(MEMBERS, group=group) == 1
        assert s.get(SKIPPED_GROUPS, reason="describe_failed") in (None, 0)
        for partition, offset, lag in (("0", 5, 4), ("1", 3, 0)):
            found = s.find(LAG, group=group, topic=topic, partition=partition)
            assert len(found) == 1
            labels, value = found[0]
            assert value == lag
            assert (labels["consumer_id"], labels["client_id"], labels["member_host"]) == (
                member_id, client_id, host)
            assert s.get(OFFSET, group=group, topic=topic, partition=partition) == offset
        seconds = s.get(LAG_SECONDS, group=group, topic=topic, partition="0")
        assert seconds is not None
        assert AGE_S - 5 <= seconds <= AGE_S + 120, seconds
        assert s.get(LAG_SECONDS, group=group, topic=topic, partition="1") == 0
        assert s.get("kafka_consumergroup_group_sum_lag", group=group) == 4

        assert driver.close() == 0
        s = exporter.wait_for(lambda s: s.get(STATE, group=group) == EMPTY, timeout=60,
                              what="the streams group to turn Empty after the application closed")
        assert s.get(MEMBERS, group=group) == 0
        assert s.get(LAG, group=group, topic=topic, partition="0") == 4
        labels, _ = s.find(LAG, group=group, topic=topic, partition="0")[0]
        assert (labels["consumer_id"], labels["client_id"], labels["member_host"]) == ("", "", "")
    finally:
        driver.close()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
