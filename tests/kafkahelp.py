"""Small helpers for integration tests against a real broker."""

from __future__ import annotations

import time
from typing import Callable, Mapping, TypeVar

import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.2,
               what: str | None = None) -> T:
    """Call `predicate` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what or getattr(predicate, '__name__', 'condition')}")
        time.sleep(interval)


def create_topic(admin: KafkaAdminClient, name: str, partitions: int,
                 configs: Mapping[str, str] | None = None, timeout: float = 30) -> None:
    """Create a replication-factor-1 topic and return once every partition has a leader."""
    admin.create_topics(
        {name: {"num_partitions": partitions, "replication_factor": 1,
                "configs": dict(configs or {})}},
        timeout_ms=int(timeout * 1000))
    admin.wait_for_topics([name], timeout_ms=int(timeout * 1000))


def produce(bootstrap: str, topic: str, partition: int, timestamps_ms: list[int],
            value: bytes = b"x", key: bytes | None = None) -> list[int]:
    """Write one record per timestamp (as the record's CreateTime) to one partition.

    Returns the offsets the broker assigned, in order.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                             retries=5, request_timeout_ms=15000)
    try:
        futures = [producer.send(topic, value=value, key=key, partition=partition,
                             timestamp_ms=ts)
                   for ts in timestamps_ms]
        producer.flush(timeout=30)
        return [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)


def commit(admin: KafkaAdminClient, group: str,
           offsets: Mapping[TopicPartition, int | OffsetAndMetadata],
           timeout: float = 30) -> None:
    """Commit offsets for an (empty) group, retrying while its coordinator is not ready."""
    oam = {tp: o if isinstance(o, OffsetAndMetadata) else OffsetAndMetadata(o, "", -1)
           for tp, o in offsets.items()}
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = admin.alter_group_offsets(group, oam)
            failed = {tp: err for tp, err in result.items() if err is not Errors.NoError}
            if not failed:
                return
            if not all(issubclass(err, Errors.RetriableError) for err in failed.values()):
                raise AssertionError(f"commit for group {group} failed: {failed}")
            last: object = failed
        except Errors.RetriableError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"commit for group {group} still failing after {timeout}s: {last}")
        time.sleep(0.2)
