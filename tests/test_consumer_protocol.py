"""Consumer groups of the KIP-848 protocol (group.protocol=consumer) on a real Kafka 4 broker.

kafka-python cannot join such a group, so a small Java consumer does (devtools/javadriver.py).
DescribeGroups answers these groups "not a classic group"; the exporter describes them with
ConsumerGroupDescribe and reports them like classic groups.
"""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from devtools.javadriver import GroupDriver
from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import create_topic, produce, wait_until

pytestmark = pytest.mark.broker

STATE = "kafka_consumergroup_group_state"
MEMBERS = "kafka_consumergroup_group_members"
OFFSET = "kafka_consumergroup_group_offset"
LAG = "kafka_consumergroup_group_lag"
LAG_SECONDS = "kafka_consumergroup_group_lag_seconds"
SKIPPED_GROUPS = "kafka_lag_exporter_skipped_groups"
STABLE, EMPTY = 3, 5
AGE_S = 3600


def test_consumer_protocol_group_live_then_empty(kafka, need_kafka_4, admin, unique, tmp_path):
    """Stable with its one member's labels, exact lag and time lag; after the member leaves:
    Empty, 0 members, offsets still reported. Never counted as a describe failure."""
    prefix = unique
    topic, group, client = f"{prefix}-t", f"{prefix}-g", f"{prefix}-c"
    create_topic(admin, topic, 2)
    stamp = now_ms() - AGE_S * 1000
    # Partition 0: 5 records an hour old, one a second; partition 1: 3 records.
    produce(kafka.bootstrap, topic, 0, [stamp + i * 1000 for i in range(5)])
    produce(kafka.bootstrap, topic, 1, [stamp] * 3)
    port = free_port()
    exporter = ExporterProcess(tmp_path,
                               config_toml(port, cluster_toml("kip848", kafka.bootstrap, prefix)),
                               port)
    driver = GroupDriver(kafka.bootstrap, group, topic, client, {0: 1, 1: 3})
    try:
        member_id = driver.wait_ready()
        assert member_id
        s = exporter.wait_for(
            lambda s: s.get(STATE, group=group) == STABLE
            and s.get(OFFSET, group=group, topic=topic, partition="0") == 1,
            timeout=60, what="the consumer-protocol group to be Stable with its commit")
        assert s.get(MEMBERS, group=group) == 1
        assert s.get(SKIPPED_GROUPS, reason="describe_failed") in (None, 0)
        for partition, lag in (("0", 4), ("1", 0)):
            found = s.find(LAG, group=group, topic=topic, partition=partition)
            assert len(found) == 1
            labels, value = found[0]
            assert value == lag
            assert labels["consumer_id"] == member_id
            assert labels["client_id"] == client
            assert labels["member_host"] == "127.0.0.1"
        # Committed offset 1 on partition 0: the next record to read was written at stamp + 1 s.
        seconds = s.get(LAG_SECONDS, group=group, topic=topic, partition="0")
        assert seconds is not None
        assert AGE_S - 1 - 5 <= seconds <= AGE_S - 1 + 120, seconds
        assert s.get("kafka_consumergroup_group_sum_lag", group=group) == 4

        assert driver.close() == 0
        s = exporter.wait_for(lambda s: s.get(STATE, group=group) == EMPTY, timeout=60,
                              what="the group to turn Empty after its only member left")
        assert s.get(MEMBERS, group=group) == 0
        assert s.get(OFFSET, group=group, topic=topic, partition="0") == 1
        assert s.get(OFFSET, group=group, topic=topic, partition="1") == 3
        assert s.get(LAG, group=group, topic=topic, partition="0") == 4
        assert s.get(SKIPPED_GROUPS, reason="describe_failed") in (None, 0)
    finally:
        driver.close()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]


def test_online_migration_from_classic_is_reported_at_every_poll(
        kafka, need_kafka_4, admin, unique, tmp_path):
    """A classic member, then a consumer-protocol member joins (the group turns into a consumer
    group with a classic member), then the classic member leaves: every scrape in between shows
    the group's offsets and a described state, and no describe failure is counted."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 2)
    produce(kafka.bootstrap, topic, 0, [now_ms()] * 6)
    produce(kafka.bootstrap, topic, 1, [now_ms()] * 6)
    port = free_port()
    exporter = ExporterProcess(tmp_path,
                               config_toml(port, cluster_toml("migrate", kafka.bootstrap, unique)),
                               port)
    classic = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=group,
                            client_id=f"{unique}-classic", enable_auto_commit=False,
                            auto_offset_reset="earliest", metadata_max_age_ms=1000,
                            max_poll_records=1)
    stop_polling, stop_sampling = threading.Event(), threading.Event()
    samples: list = []
    driver = None
    try:
        wait_until(lambda: classic.poll(timeout_ms=200) is not None and classic.assignment(),
                   timeout=60, interval=0, what="the classic member to own its partitions")
        classic.commit({TopicPartition(topic, p): OffsetAndMetadata(1, "", -1) for p in (0, 1)})
        exporter.wait_for(lambda s: s.get(OFFSET, group=group, topic=topic, partition="0") == 1,
                          timeout=60, what="the classic group")
        # The classic member must keep polling to take part in the rebalances to come.
        poller = threading.Thread(target=lambda: [classic.poll(timeout_ms=100, max_records=1)
                                                  for _ in iter(stop_polling.is_set, True)])
        poller.start()
        sampler = threading.Thread(target=_sample_until, args=(exporter, group, stop_sampling,
                                                               samples))
        sampler.start()
        driver = GroupDriver(kafka.bootstrap, group, topic, f"{unique}-new", {0: 2, 1: 2})
        driver.wait_ready()
        exporter.wait_for(lambda s: s.get(OFFSET, group=group, topic=topic, partition="0") == 2
                          and s.get(MEMBERS, group=group) == 2,
                          timeout=60, what="both members in the migrated group")
        stop_polling.set()
        poller.join(30)
        classic.close(autocommit=False)
        s = exporter.wait_for(lambda s: s.get(MEMBERS, group=group) == 1
                              and s.get(STATE, group=group) == STABLE,
                              timeout=90, what="the consumer group after the classic member left")
        stop_sampling.set()
        sampler.join(30)
        labels, _ = s.find(LAG, group=group, topic=topic, partition="0")[0]
        assert labels["consumer_id"] == driver.member_id
    finally:
        stop_polling.set()
        stop_sampling.set()
        if driver is not None:
            driver.close()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
    assert len(samples) >= 5, samples
    gaps = [s for s in samples if s[0] is None or s[1] in (None, 0) or s[2]]
    assert not gaps, gaps


def _sample_until(exporter: ExporterProcess, group: str, stop: threading.Event,
                  samples: list) -> None:
    """(offset of partition 0, state, describe failures) at every poll (1 s) until *stop*."""
    while not stop.is_set():
        s = exporter.scrape()
        offsets = s.find(OFFSET, group=group, partition="0")
        samples.append((offsets[0][1] if offsets else None, s.get(STATE, group=group),
                        s.get(SKIPPED_GROUPS, reason="describe_failed")))
        stop.wait(0.5)
