"""Time lag on transactional topics, on a real broker: what a read_committed consumer receives.

Control markers and aborted records are never dated; a group followed only by them is caught
up (lag_seconds 0, present); a group held by an open transaction is dated from that
transaction's first record. Offset lag stays high watermark - committed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, List

import pytest
from kafka import KafkaProducer, TopicPartition

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce
from klag_collector.config import Performance
from klag_collector.kafka_io import KafkaIO
from klag_collector.record_age import CaughtUp
from klag_collector.timestamps import FetchItem

pytestmark = pytest.mark.broker

LAG_SECONDS = "kafka_consumergroup_group_lag_seconds"
UNAVAILABLE = dict(cluster_name="it", reason="timestamp_unavailable")


@contextmanager
def transactional(bootstrap: str, txid: str) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=txid, linger_ms=0)
    try:
        producer.init_transactions()
        yield producer
    finally:
        producer.close(timeout=10)


def send(producer: KafkaProducer, topic: str, stamps: List[int]) -> None:
    for stamp in stamps:
        producer.send(topic, b"x", partition=0, timestamp_ms=stamp)
    producer.flush(timeout=30)


def aborted_then_committed(bootstrap: str, topic: str, txid: str, base: int) -> None:
    """Offsets 0-2 aborted (stamped base - 900 s...), 3 the abort marker, 4-5 committed
    (base - 300 s, base - 200 s), 6 the commit marker; high watermark 7."""
    with transactional(bootstrap, txid) as producer:
        producer.begin_transaction()
        send(producer, topic, [base - 900_000, base - 800_000, base - 700_000])
        producer.abort_transaction()
        producer.begin_transaction()
        send(producer, topic, [base - 300_000, base - 200_000])
        producer.commit_transaction()


def kafka_io(bootstrap: str) -> KafkaIO:
    return KafkaIO([bootstrap], {}, Performance(kafka_timeout=15.0))


def leader(admin, topic: str) -> int:
    """The node id leading partition 0 of *topic*."""
    return admin.describe_topics([topic])[0]["partitions"][0]["leader_id"]


@pytest.fixture
def run_exporter(tmp_path, kafka, unique):
    started: List[ExporterProcess] = []

    def start() -> ExporterProcess:
        port = free_port()
        proc = ExporterProcess(tmp_path, config_toml(port, cluster_toml("it", kafka.bootstrap, unique)), port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        assert proc.stop() == 0, proc.log.read_text()[-3000:]


# -- the timestamp fetch itself ------------------------------------------------------------


def test_fetch_skips_aborted_records_and_markers(admin, kafka, unique) -> None:
    """Every offset of an aborted transaction answers the first committed record after it;
    an offset on the commit marker, and the end, are caught up."""
    topic = f"{unique}-t"
    create_topic(admin, topic, 1)
    base = now_ms()
    aborted_then_committed(kafka.bootstrap, topic, f"{unique}-tx", base)
    io, led = kafka_io(kafka.bootstrap), leader(admin, topic)
    try:
        found = io.fetch_timestamps([FetchItem((topic, 0, offset), 7, led) for offset in range(7)])
    finally:
        io.reset()
    assert {o: found[(topic, 0, o)] for o in range(6)} == {
        0: base - 300_000, 1: base - 300_000, 2: base - 300_000, 3: base - 300_000,
        4: base - 300_000, 5: base - 200_000,
    }
    assert isinstance(found[(topic, 0, 6)], CaughtUp)


def test_fetch_of_a_plain_topic_is_unchanged(admin, kafka, unique) -> None:
    """Without transactions every offset answers its own record's time."""
    topic = f"{unique}-t"
    create_topic(admin, topic, 1)
    base = now_ms()
    produce(kafka.bootstrap, topic, 0, [base - 30_000, base - 20_000, base - 10_000])
    io, led = kafka_io(kafka.bootstrap), leader(admin, topic)
    try:
        found = io.fetch_timestamps([FetchItem((topic, 0, offset), 3, led) for offset in (0, 2)])
    finally:
        io.reset()
    assert found == {(topic, 0, 0): base - 30_000, (topic, 0, 2): base - 10_000}
    assert not any(isinstance(v, CaughtUp) for v in found.values())


def test_fetch_held_by_an_open_transaction_dates_from_its_first_record(admin, kafka, unique) -> None:
    """Offsets before, at and inside an open transaction; a committed partition beside it."""
    topic, other = f"{unique}-t", f"{unique}-o"
    create_topic(admin, topic, 1)
    create_topic(admin, other, 1)
    base = now_ms()
    # topic: 0-1 committed (base - 500 s, - 400 s), 2 marker, 3-4 open (base - 120 s, - 60 s).
    with transactional(kafka.bootstrap, f"{unique}-tx") as producer:
        producer.begin_transaction()
        send(producer, topic, [base - 500_000, base - 400_000])
        producer.commit_transaction()
        produce(kafka.bootstrap, other, 0, [base - 50_000])
        producer.begin_transaction()
        send(producer, topic, [base - 120_000, base - 60_000])
        io, led = kafka_io(kafka.bootstrap), leader(admin, topic)
        try:
            found = io.fetch_timestamps(
                [FetchItem((topic, 0, offset), 5, led) for offset in range(5)]
                + [FetchItem((other, 0, 0), 1, leader(admin, other))]
            )
        finally:
            io.reset()
        producer.abort_transaction()
    assert {o: found[(topic, 0, o)] for o in range(5)} == {
        0: base - 500_000, 1: base - 400_000,
        # The marker and the transaction's first offset wait on its first record;
        # an offset inside it waits on the records from there on.
        2: base - 120_000, 3: base - 120_000, 4: base - 60_000,
    }
    assert found[(other, 0, 0)] == base - 50_000


def test_fetch_behind_aborted_records_waits_on_the_open_transaction(admin, kafka, unique) -> None:
    """Aborted records (0-1), their marker (2), then an open transaction (3-4): offsets 0-3
    all wait on the open transaction's first record; the aborted ones are never dated."""
    topic = f"{unique}-t"
    create_topic(admin, topic, 1)
    base = now_ms()
    with transactional(kafka.bootstrap, f"{unique}-tx") as producer:
        producer.begin_transaction()
        send(producer, topic, [base - 900_000, base - 800_000])
        producer.abort_transaction()
        producer.begin_transaction()
        send(producer, topic, [base - 90_000, base - 30_000])
        io, led = kafka_io(kafka.bootstrap), leader(admin, topic)
        try:
            found = io.fetch_timestamps([FetchItem((topic, 0, offset), 5, led) for offset in range(4)])
        finally:
            io.reset()
        producer.abort_transaction()
    assert found == {(topic, 0, offset): base - 90_000 for offset in range(4)}


# -- the exporter, end to end ----------------------------------------------------------------


def test_offset_in_an_aborted_transaction_dates_from_the_next_committed_record(
    admin, kafka, unique, run_exporter
) -> None:
    """(a) Committed at offset 1, inside the aborted transaction: the next record a
    read_committed consumer receives is offset 4 (base - 300 s)."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 1)
    base = now_ms()
    aborted_then_committed(kafka.bootstrap, topic, f"{unique}-tx", base)
    commit(admin, group, {TopicPartition(topic, 0): 1})
    exporter = run_exporter()
    ids = dict(group=group, topic=topic, partition="0")
    s = exporter.wait_for(lambda s: s.get(LAG_SECONDS, **ids) is not None, what="time lag")
    assert s.get(LAG_SECONDS, **ids) == pytest.approx(time.time() - (base - 300_000) / 1000, abs=5)
    assert s.get("kafka_consumergroup_group_lag", **ids) == 6
    assert not s.get("kafka_lag_exporter_skipped_partitions", **UNAVAILABLE)


def test_offset_waiting_on_an_open_transaction_dates_from_its_first_record(
    admin, kafka, unique, run_exporter
) -> None:
    """(c) Committed in front of an open transaction (base - 240 s, - 120 s): its first
    record's age, while the producer keeps it open."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 1)
    base = now_ms()
    produce(kafka.bootstrap, topic, 0, [base - 600_000])
    commit(admin, group, {TopicPartition(topic, 0): 1})
    ids = dict(group=group, topic=topic, partition="0")
    with transactional(kafka.bootstrap, f"{unique}-tx") as producer:
        producer.begin_transaction()
        send(producer, topic, [base - 240_000, base - 120_000])
        exporter = run_exporter()
        s = exporter.wait_for(lambda s: s.get(LAG_SECONDS, **ids) is not None, what="time lag")
        assert s.get(LAG_SECONDS, **ids) == pytest.approx(time.time() - (base - 240_000) / 1000, abs=5)
        assert s.get("kafka_consumergroup_group_lag", **ids) == 2
        assert not s.get("kafka_lag_exporter_skipped_partitions", **UNAVAILABLE)
        producer.abort_transaction()
