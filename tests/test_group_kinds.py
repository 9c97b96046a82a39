"""Consumer group kinds on a real broker: offsets only, live classic, in rebalance, member gone.

One exporter process watches every group of this module (names share a random prefix);
each test makes its own groups under that prefix and reads the exporter's /metrics.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce, wait_until

pytestmark = pytest.mark.broker

STATE = "kafka_consumergroup_group_state"
MEMBERS = "kafka_consumergroup_group_members"
OFFSET = "kafka_consumergroup_group_offset"
LAG = "kafka_consumergroup_group_lag"
PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, EMPTY = 1, 2, 3, 5


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"klagt-kinds-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def exporter(kafka, prefix, tmp_path_factory):
    """The exporter on this module's groups and topics, polling every second."""
    port = free_port()
    proc = ExporterProcess(tmp_path_factory.mktemp("exporter"),
                           config_toml(port, cluster_toml("kinds", kafka.bootstrap, prefix)), port)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log.read_text()[-3000:]


@pytest.fixture
def topic(kafka, prefix):
    """A fresh 2-partition topic: 5 records on partition 0, 3 on partition 1."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000)
    try:
        create_topic(admin, name, 2)
    finally:
        admin.close()
    produce(kafka.bootstrap, name, 0, [now_ms()] * 5)
    produce(kafka.bootstrap, name, 1, [now_ms()] * 3)
    return name


@pytest.fixture
def consumers():
    """Makes classic-protocol consumers; closes any still open after the test."""
    made = []

    def make(bootstrap: str, topic: str, group: str, client_id: str, **extra) -> KafkaConsumer:
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                 client_id=client_id, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=15000,
                                 # A leader whose metadata lacked the new topic's partitions
                                 # assigns nothing, and rejoins only when its metadata changes:
                                 # refresh every second, not every 5 minutes.
                                 metadata_max_age_ms=1000, **extra)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        try:
            consumer.close(autocommit=False)
        except Exception:
            pass


def _join(consumer: KafkaConsumer, partitions: int, timeout: float = 60) -> None:
    """Poll until the consumer owns `partitions` partitions (poll() is what joins and rejoins)."""
    def owned() -> bool:
        consumer.poll(timeout_ms=200, max_records=1)
        return len(consumer.assignment()) == partitions
    wait_until(owned, timeout=timeout, interval=0, what=f"consumer to own {partitions} partition(s)")


def _commit(consumer: KafkaConsumer, topic: str, offsets: dict) -> None:
    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})


def test_offsets_only_group_is_empty(kafka, admin, exporter, topic):
    """A group with committed offsets and no member: state 5 (Empty), 0 members, lag reported."""
    group = f"{topic}-offsets-only"
    commit(admin, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3})
    s = exporter.wait_for(lambda s: s.get(STATE, group=group) is not None, timeout=60,
                          what="the offsets-only group")
    assert s.get(STATE, group=group) == EMPTY
    assert s.get(MEMBERS, group=group) == 0
    assert s.get(OFFSET, group=group, topic=topic, partition="0") == 2
    assert s.get(LAG, group=group, topic=topic, partition="0") == 3
    assert s.get(LAG, group=group, topic=topic, partition="1") == 0
    assert s.get("kafka_consumergroup_group_sum_lag", group=group) == 3
    # No member owns the partitions: the member labels are empty.
    labels, _ = s.find(LAG, group=group, topic=topic, partition="0")[0]
    assert (labels["member_host"], labels["consumer_id"], labels["client_id"]) == ("", "", "")


def test_live_classic_group_then_member_leaves(kafka, exporter, topic, consumers):
    """A subscribed consumer: Stable with 1 member and its labels on its partitions; after close():
    Empty with 0 members, committed offsets still reported."""
    group, client = f"{topic}-live", f"{topic}-c1"
    consumer = consumers(kafka.bootstrap, topic, group, client)
    _join(consumer, 2)
    _commit(consumer, topic, {0: 1, 1: 3})
    s = exporter.wait_for(
        lambda s: s.get(STATE, group=group) == STABLE
        and s.get(OFFSET, group=group, topic=topic, partition="0") == 1,
        timeout=60, what="the live group to be Stable with its commit")
    assert s.get(MEMBERS, group=group) == 1
    for partition, lag in (("0", 4), ("1", 0)):
        found = s.find(LAG, group=group, topic=topic, partition=partition)
        assert len(found) == 1
        labels, value = found[0]
        assert value == lag
        assert labels["client_id"] == client
        assert labels["member_host"] == "127.0.0.1"
        # The coordinator names a member "<client_id>-<uuid>".
        assert labels["consumer_id"].startswith(f"{client}-"), labels
        assert len(labels["consumer_id"]) > len(client) + 1

    consumer.close(autocommit=False)  # sends LeaveGroup
    s = exporter.wait_for(lambda s: s.get(STATE, group=group) == EMPTY, timeout=60,
                          what="the group to turn Empty after its only member left")
    assert s.get(MEMBERS, group=group) == 0
    assert s.get(OFFSET, group=group, topic=topic, partition="0") == 1
    assert s.get(OFFSET, group=group, topic=topic, partition="1") == 3
    assert s.get(LAG, group=group, topic=topic, partition="0") == 4
    labels, _ = s.find(LAG, group=group, topic=topic, partition="0")[0]
    assert (labels["member_host"], labels["consumer_id"], labels["client_id"]) == ("", "", "")


def test_group_in_rebalance(kafka, exporter, topic, consumers):
    """A second consumer joins while the first does not poll: the group sits in PreparingRebalance
    (state 1) until the first rejoins, then it is Stable with 2 members, one partition each."""
    group = f"{topic}-rebalance"
    # The coordinator waits up to the members' rebalance timeout (max_poll_interval_ms) for
    # the first member to rejoin; it rejoins only from poll(), so holding poll() holds the group.
    hold = dict(max_poll_interval_ms=60000, session_timeout_ms=30000, heartbeat_interval_ms=1000)
    first = consumers(kafka.bootstrap, topic, group, f"{topic}-first", **hold)
    _join(first, 2)
    _commit(first, topic, {0: 2, 1: 1})
    exporter.wait_for(lambda s: s.get(STATE, group=group) == STABLE
                      and s.get(MEMBERS, group=group) == 1, timeout=60, what="one-member Stable group")

    stop = threading.Event()
    second_owned = []

    def run_second() -> None:
        second = consumers(kafka.bootstrap, topic, group, f"{topic}-second", **hold)
        while not stop.is_set():
            second.poll(timeout_ms=200, max_records=1)
        second_owned.append(len(second.assignment()))
        second.close(autocommit=False)

    thread = threading.Thread(target=run_second, name="second-consumer", daemon=True)
    thread.start()
    try:
        s = exporter.wait_for(
            lambda s: s.get(STATE, group=group) in (PREPARING_REBALANCE, COMPLETING_REBALANCE),
            timeout=30, what="the group to be seen rebalancing")
        # Both members are known to the coordinator while it waits for the first to rejoin.
        assert s.get(MEMBERS, group=group) == 2
        # Offsets committed before the rebalance are still reported during it.
        assert s.get(OFFSET, group=group, topic=topic, partition="0") == 2
        assert s.get(LAG, group=group, topic=topic, partition="1") == 2

        _join(first, 1)  # the first member rejoins and gives a partition away
        s = exporter.wait_for(lambda s: s.get(STATE, group=group) == STABLE
                              and s.get(MEMBERS, group=group) == 2, timeout=60,
                              what="the group to settle with two members")
        owners = {s.find(LAG, group=group, topic=topic, partition=p)[0][0]["client_id"]
                  for p in ("0", "1")}
        assert owners == {f"{topic}-first", f"{topic}-second"}
    finally:
        stop.set()
        thread.join(timeout=30)
    assert second_owned == [1]
