"""Share groups (KIP-932) on a real Kafka 4.4 broker: their own families, never skipped groups.

kafka-python has no share consumer, so a small Java one does (devtools/javadriver.py
ShareDriver): it accepts the records below offset 4 and releases the others, so the start
offset of partition 0 stops at 4 (6 records behind) and partition 1 (3 records) is read to
its end (lag 0). The expected values come from the setup, checked first against what the broker
says (Admin.listShareGroupOffsets in the driver), then against the exporter's /metrics.
"""

from __future__ import annotations


import pytest

from devtools import localkafka
from devtools.javadriver import ShareDriver
from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import create_topic, produce

pytestmark = pytest.mark.broker

START = "kafka_sharegroup_group_start_offset"
LAG = "kafka_sharegroup_group_lag"
LAG_SECONDS = "kafka_sharegroup_group_lag_seconds"
SUM_LAG = "kafka_sharegroup_group_sum_lag"
MAX_LAG_SECONDS = "kafka_sharegroup_group_max_lag_seconds"
STATE = "kafka_sharegroup_group_state"
MEMBERS = "kafka_sharegroup_group_members"
SKIPPED_GROUPS = "kafka_lag_exporter_skipped_groups"
CONSUMER_STATE = "kafka_consumergroup_group_state"
STABLE, EMPTY = 3, 5
AGE_S = 3600
ACCEPT = 4


@pytest.fixture(scope="module")
def need_share_groups():
    major, minor = (int(x) for x in localkafka.kafka_version().split(".")[:2])
    if (major, minor) < (4, 1):
        pytest.skip("share groups (KIP-932) are GA from Kafka 4.1")


def test_share_group_start_offset_lag_and_time_lag(kafka, need_share_groups, admin, unique, tmp_path):
    prefix = unique
    topic, group, client = f"{prefix}-t", f"{prefix}-g", f"{prefix}-c"
    create_topic(admin, topic, 2)
    stamp = now_ms() - AGE_S * 1000
    # Partition 0: 10 records an hour old, one a second; partition 1: 3 records.
    produce(kafka.bootstrap, topic, 0, [stamp + i * 1000 for i in range(10)])
    produce(kafka.bootstrap, topic, 1, [stamp] * 3)
    port = free_port()
    exporter = ExporterProcess(tmp_path,
                               config_toml(port, cluster_toml("share", kafka.bootstrap, prefix)),
                               port)
    driver = ShareDriver(kafka.bootstrap, group, topic, client, ACCEPT, ACCEPT + 3)
    try:
        # The truth, from the broker: start offset 4 and lag 6 on partition 0.
        truth = driver.wait_ready()
        assert truth[0] == (ACCEPT, 10 - ACCEPT)
        # Partition 1 is fully acknowledged: lag 0. Its persisted start offset may still be
        # 0 (Kafka 4.4 moves it lazily): latest - start would claim 3, the broker's lag is 0.
        assert truth[1][1] == 0 and truth[1][0] in (0, 3), truth
        start_1 = truth[1][0]

        s = exporter.wait_for(
            lambda s: s.get(STATE, group=group) == STABLE
            and s.get(START, group=group, topic=topic, partition="0") == ACCEPT
            and s.get(START, group=group, topic=topic, partition="1") == start_1,
            timeout=60, what="the share group to be Stable with its start offsets")
        assert s.get(MEMBERS, group=group) == 1
        assert s.get(LAG, group=group, topic=topic, partition="0") == 10 - ACCEPT
        assert s.get(LAG, group=group, topic=topic, partition="1") == 0
        assert s.get(SUM_LAG, group=group) == 10 - ACCEPT
        # The record at start offset 4 was written at stamp + 4 s.
        seconds = s.get(LAG_SECONDS, group=group, topic=topic, partition="0")
        assert seconds is not None
        assert AGE_S - ACCEPT - 5 <= seconds <= AGE_S - ACCEPT + 120, seconds
        assert s.get(LAG_SECONDS, group=group, topic=topic, partition="1") == 0
        assert s.get(MAX_LAG_SECONDS, group=group) == seconds
        # Not a consumer group, and never a skipped or failed one.
        assert s.get(CONSUMER_STATE, group=group) is None
        assert s.find(SKIPPED_GROUPS) == []
        labels, _ = s.find(STATE, group=group)[0]
        assert labels["cluster_name"] == "share"

        assert driver.close() == 0
        s = exporter.wait_for(lambda s: s.get(STATE, group=group) == EMPTY, timeout=60,
                              what="the share group to turn Empty after its only member left")
        assert s.get(MEMBERS, group=group) == 0
        assert s.get(START, group=group, topic=topic, partition="0") == ACCEPT
        assert s.get(LAG, group=group, topic=topic, partition="0") == 10 - ACCEPT
        assert s.find(SKIPPED_GROUPS) == []
    finally:
        driver.close()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
