"""10,000 partitions on one broker: fully reported, time lag included, within kafka_timeout,
while another client's requests stay fast.

The partitions live on a broker of this module's own: on the session broker they would make
every other test's metadata ten times larger.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from devtools.localkafka import LocalBroker
from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit

pytestmark = pytest.mark.broker

TOPICS, PER_TOPIC = 20, 500
PARTITIONS = TOPICS * PER_TOPIC
PREFIX = "klagt-scale"
GROUP = f"{PREFIX}-g"
AGE_S = 600
KAFKA_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def big_broker(tmp_path_factory, kafka):
    """A broker with 10,000 partitions of 2 records each, and a group at offset 0 on all."""
    if not kafka.can_restart:
        pytest.skip("the 10,000-partition test needs a local broker of its own")
    broker = LocalBroker(tmp_path_factory.mktemp("big-broker"))
    broker.start(timeout=120)
    try:
        _seed(broker.bootstrap)
        yield broker
    finally:
        broker.stop()


def _seed(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=120_000)
    try:
        for first in range(0, TOPICS, 2):  # larger CreateTopics batches are refused
            admin.create_topics([NewTopic(f"{PREFIX}-{i}", PER_TOPIC, 1)
                                 for i in (first, first + 1)], timeout_ms=120_000)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=100, acks=1,
                                 batch_size=1 << 14)
        stamp = now_ms() - AGE_S * 1000
        for topic in range(TOPICS):
            for partition in range(PER_TOPIC):
                for i in range(2):
                    producer.send(f"{PREFIX}-{topic}", b"x", partition=partition,
                                  timestamp_ms=stamp + i)
        producer.flush(timeout=120)
        producer.close()
        commit(admin, GROUP, {TopicPartition(f"{PREFIX}-{t}", p): 0
                              for t in range(TOPICS) for p in range(PER_TOPIC)}, timeout=120)
    finally:
        admin.close()


class Probe:
    """Another client asking the broker for one topic's metadata every 50 ms."""

    def __init__(self, bootstrap: str) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        self.seconds: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            self.admin.describe_topics([f"{PREFIX}-0"])
            self.seconds.append(time.perf_counter() - began)
            self._stop.wait(0.05)

    def stop(self) -> list:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(60)
            self.admin.close()
        return self.seconds


def test_ten_thousand_partitions_are_reported_with_time_lag_within_kafka_timeout(
        big_broker, tmp_path):
    port = free_port()
    config = config_toml(port, cluster_toml("big", big_broker.bootstrap, PREFIX),
                         kafka_timeout=f"{KAFKA_TIMEOUT_S}s").replace(
                             'poll_interval = "1s"', 'poll_interval = "30s"')
    probe = Probe(big_broker.bootstrap)
    exporter = ExporterProcess(tmp_path, config, port)
    try:
        s = exporter.wait_for(
            lambda s: s.get("kafka_consumergroup_group_sum_lag", group=GROUP) is not None,
            timeout=120, what="the first cycle over 10,000 partitions")
        seconds = probe.stop()
        assert s.get("kafka_consumergroup_group_sum_lag", group=GROUP) == 2 * PARTITIONS
        lag_seconds = s.find("kafka_consumergroup_group_lag_seconds", group=GROUP)
        assert len(lag_seconds) == PARTITIONS
        assert all(AGE_S - 5 <= value <= AGE_S + 300 for _, value in lag_seconds)
        assert s.get("kafka_lag_exporter_skipped_partitions",
                     reason="timestamp_unavailable") in (None, 0)
        duration = s.get("kafka_lag_exporter_scrape_duration_seconds", cluster_name="big")
        assert duration is not None and duration < KAFKA_TIMEOUT_S, duration
        # The broker kept answering the other client while we read it.
        assert seconds and statistics.median(seconds) < 0.5, seconds
        assert max(seconds) < 5, max(seconds)
    finally:
        probe.stop()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
