"""Two clusters in one exporter process: one broker dies, the other cluster is not affected.

The session broker is the cluster that stays up; a LocalBroker of this module's own is
the one that gets stopped and started again (same workdir, so the same port).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaAdminClient, TopicPartition

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce, wait_until
from devtools.localkafka import LocalBroker

pytestmark = pytest.mark.broker

LIVE, DEAD = "live", "dead"
UP = "kafka_lag_exporter_up"
LAST_UPDATE = "kafka_lag_exporter_last_update_timestamp_seconds"
SCRAPE_DURATION = "kafka_lag_exporter_scrape_duration_seconds"
GROUP_LAG = "kafka_consumergroup_group_lag"


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory, kafka):
    """A broker of this module's own, since it gets stopped (the session broker must stay up)."""
    if not kafka.can_restart:
        pytest.skip("multi-cluster outage tests need a local broker (KLAG_TEST_BOOTSTRAP or Docker in use)")
    broker = LocalBroker(tmp_path_factory.mktemp("own-broker"))
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def _seed(bootstrap: str, topic: str, group: str, records: int, committed: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        create_topic(admin, topic, 1)
        produce(bootstrap, topic, 0, [now_ms()] * records)
        commit(admin, group, {TopicPartition(topic, 0): committed})
    finally:
        admin.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, kafka, own_broker):
    """Both clusters seeded (live: lag 3, dead: lag 5) and two exporters on them: "any" and "all"."""
    prefix = f"klagt-clusters-{uuid.uuid4().hex[:8]}"
    names = {
        LIVE: (f"{prefix}-t", f"{prefix}-g"),
        DEAD: (f"{prefix}-t", f"{prefix}-g"),
    }
    _seed(kafka.bootstrap, *names[LIVE], records=7, committed=4)
    _seed(own_broker.bootstrap, *names[DEAD], records=9, committed=4)
    clusters = (cluster_toml(LIVE, kafka.bootstrap, prefix)
                + cluster_toml(DEAD, own_broker.bootstrap, prefix))
    exporters = {}
    try:
        for requires in ("any", "all"):
            port = free_port()
            extra = f'staleness_threshold = "3s"\nready_requires = "{requires}"'
            workdir = tmp_path_factory.mktemp(f"exporter-{requires}")
            exporters[requires] = ExporterProcess(workdir, config_toml(port, clusters, extra), port)
        yield names, exporters
    finally:
        for proc in exporters.values():
            assert proc.stop() == 0, proc.log.read_text()[-3000:]


def _both_up(s) -> bool:
    return s.get(UP, cluster_name=LIVE) == 1 and s.get(UP, cluster_name=DEAD) == 1


def _ready(exporter: ExporterProcess):
    status, _, body = exporter.get("/ready")
    return status, json.loads(body)


def test_two_clusters_reported_side_by_side(setup):
    """Each cluster has its own up, scrape duration, last update and lag series, with its own values."""
    names, exporters = setup
    s = exporters["any"].wait_for(_both_up, timeout=60, what="both clusters up")
    topic, group = names[LIVE]
    assert s.get(GROUP_LAG, cluster_name=LIVE, group=group, topic=topic, partition="0") == 3
    assert s.get(GROUP_LAG, cluster_name=DEAD, group=group, topic=topic, partition="0") == 5
    assert s.get("kafka_partition_latest_offset", cluster_name=LIVE, topic=topic, partition="0") == 7
    assert s.get("kafka_partition_latest_offset", cluster_name=DEAD, topic=topic, partition="0") == 9
    now = time.time()
    for name in (LIVE, DEAD):
        duration = s.get(SCRAPE_DURATION, cluster_name=name)
        assert duration is not None and 0 < duration < 30
        assert s.get("kafka_consumergroup_poll_time_ms", cluster_name=name) == pytest.approx(duration * 1000)
        assert now - 30 < s.get(LAST_UPDATE, cluster_name=name) <= now + 1
    # Exactly one sample per cluster: the figures are per cluster, not one global flag.
    assert len(s.find(UP)) == len(s.find(SCRAPE_DURATION)) == len(s.find(LAST_UPDATE)) == 2
    for requires in ("any", "all"):
        exporters[requires].wait_for(_both_up, timeout=60, what=f"both clusters up ({requires})")
        status, ready = _ready(exporters[requires])
        assert status == 200, ready
        assert {c: v["state"] for c, v in ready["clusters"].items()} == {LIVE: "ok", DEAD: "ok"}


def test_dead_cluster_isolated_then_recovers(setup, own_broker):
    """Stopping one broker: its up goes 0, its lag leaves after 3 s staleness, the other cluster keeps
    updating every second; /ready is 200 with "any" and 503 with "all"; a restart brings it all back."""
    names, exporters = setup
    any_, all_ = exporters["any"], exporters["all"]
    topic, group = names[DEAD]
    for proc in (any_, all_):
        proc.wait_for(_both_up, timeout=60, what="both clusters up before the outage")

    own_broker.stop()
    stopped_at = time.time()
    s = any_.wait_for(lambda s: s.get(UP, cluster_name=DEAD) == 0, timeout=30, what="dead cluster up=0")
    assert s.get(UP, cluster_name=LIVE) == 1
    # Staleness: 3 s after the dead cluster's last success its lag series leave /metrics.
    s = any_.wait_for(lambda s: not s.find(GROUP_LAG, cluster_name=DEAD), timeout=30,
                      what="dead cluster's lag series to leave")
    dead_last = s.get(LAST_UPDATE, cluster_name=DEAD)
    assert dead_last is not None and dead_last <= stopped_at + 1
    assert not s.find("kafka_partition_latest_offset", cluster_name=DEAD)
    assert not s.find("kafka_consumergroup_group_state", cluster_name=DEAD)
    assert s.get(SCRAPE_DURATION, cluster_name=DEAD) is not None  # health series stay
    assert s.get("kafka_lag_exporter_cycle_failures_total", cluster_name=DEAD) >= 1

    # The live cluster keeps its series and its 1 s schedule during the whole outage.
    seen = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        s = any_.scrape()
        assert s.get(UP, cluster_name=LIVE) == 1
        assert s.get(GROUP_LAG, cluster_name=LIVE, group=group, topic=topic, partition="0") == 3
        assert s.get(LAST_UPDATE, cluster_name=DEAD) == dead_last  # frozen at the last success
        seen.append(s.get(LAST_UPDATE, cluster_name=LIVE))
        time.sleep(0.25)
    distinct = sorted(set(seen))
    assert len(distinct) >= 3, f"live cluster updated only at {distinct}"
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    assert max(gaps) < 3.5, f"live cluster's updates were {gaps} s apart (poll_interval 1 s)"
    assert distinct[-1] > time.time() - 3.5

    status, ready = _ready(any_)
    assert status == 200 and ready["status"] == "ready", ready
    assert ready["clusters"][LIVE]["state"] == "ok"
    dead = ready["clusters"][DEAD]
    assert dead["state"] == "stale"
    assert dead["consecutive_failures"] >= 1 and dead["last_error"]
    assert dead["last_success"] == pytest.approx(dead_last, abs=0.01)
    all_.wait_for(lambda s: s.get(UP, cluster_name=DEAD) == 0, timeout=30, what="up=0 on the 'all' exporter")
    status, ready = _ready(all_)
    assert status == 503 and ready["status"] == "not_ready", ready
    assert ready["clusters"][LIVE]["state"] == "ok"
    assert ready["clusters"][DEAD]["state"] in ("stale", "failing")

    own_broker.start(timeout=120)
    # Backoff after several failures may wait up to ~16 s before the next attempt.
    s = any_.wait_for(
        lambda s: s.get(GROUP_LAG, cluster_name=DEAD, group=group, topic=topic, partition="0") == 5,
        timeout=90, what="dead cluster's lag series to come back")
    assert s.get(UP, cluster_name=DEAD) == 1
    assert s.get(LAST_UPDATE, cluster_name=DEAD) > dead_last
    assert s.get(GROUP_LAG, cluster_name=LIVE, group=group, topic=topic, partition="0") == 3
    all_.wait_for(_both_up, timeout=90, what="the 'all' exporter to recover")
    status, ready = _ready(all_)
    assert status == 200, ready
    assert wait_until(lambda: _ready(any_)[1]["clusters"][DEAD]["state"] == "ok", timeout=10)
