"""A broker outage seen from outside: up goes 0, liveness stays, readiness fails, recovery is automatic."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaAdminClient, TopicPartition

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce
from devtools.localkafka import LocalBroker

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker(tmp_path, kafka):
    """A broker of this test's own, since it gets stopped (the session broker must stay up)."""
    if not kafka.can_restart:
        pytest.skip("outage tests need a local broker they can stop (KLAG_TEST_BOOTSTRAP or Docker in use)")
    broker = LocalBroker(tmp_path / "broker")
    broker.start(timeout=120)
    yield broker
    broker.stop()


def test_broker_outage_and_recovery(tmp_path, own_broker):
    """Stopping the broker turns up to 0 and /ready to 503 while /health and scrapes stay fast; restart recovers."""
    admin = KafkaAdminClient(bootstrap_servers=own_broker.bootstrap)
    try:
        create_topic(admin, "o-t", 1)
        produce(own_broker.bootstrap, "o-t", 0, [now_ms()] * 4)
        commit(admin, "o-g", {TopicPartition("o-t", 0): 1})
    finally:
        admin.close()
    port = free_port()
    config = config_toml(
        port,
        cluster_toml("solo", own_broker.bootstrap, "o-"),
        'staleness_threshold = "4s"',
    )
    exporter = ExporterProcess(tmp_path, config, port)
    try:
        exporter.wait_for(lambda s: s.get("kafka_lag_exporter_up", cluster_name="solo") == 1)
        own_broker.stop()

        s = exporter.wait_for(
            lambda s: s.get("kafka_lag_exporter_up", cluster_name="solo") == 0,
            timeout=30,
            what="up to drop to 0",
        )
        assert not s.find("kafka_consumergroup_group_lag"), "stale lag series must leave /metrics"
        assert s.get("kafka_lag_exporter_last_update_timestamp_seconds", cluster_name="solo") is not None
        assert s.get("kafka_lag_exporter_cycle_failures_total", cluster_name="solo") >= 1

        status, _, body = exporter.get("/health")
        assert (status, body) == (200, b"OK\n")
        status, _, body = exporter.get("/ready")
        assert status == 503
        ready = json.loads(body)
        assert ready["status"] == "not_ready"
        cluster = ready["clusters"]["solo"]
        assert cluster["state"] == "stale"
        assert cluster["consecutive_failures"] >= 1
        assert cluster["last_error"]
        assert cluster["next_attempt_in"] is not None

        started = time.monotonic()
        for _ in range(20):
            exporter.scrape()
        per_scrape = (time.monotonic() - started) / 20
        assert per_scrape < 0.25, f"scrapes slowed to {per_scrape:.3f}s during the outage"

        own_broker.start(timeout=120)
        s = exporter.wait_for(
            lambda s: s.get("kafka_lag_exporter_up", cluster_name="solo") == 1,
            timeout=120,
            what="recovery after the broker restart",
        )
        assert s.get("kafka_consumergroup_group_lag", group="o-g", topic="o-t", partition="0") == 3
        status, _, _ = exporter.get("/ready")
        assert status == 200
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
