"""Demo traffic: the klag-exporter test stack's producer and consumers, in Python threads.

The seed stack ran two bash loops around kafka-console-producer/-consumer. This module
replays their phase schedules (PRODUCER_PHASES, CONSUMER_PHASES, both plain data) so
that consumer-group lag visibly rises (slow reads, pauses, bursts) and falls (catch-up):

    traffic = Traffic("127.0.0.1:9092", speed=1.0).start()
    ...
    traffic.stop()

`speed` divides every duration and delay of the schedule and keeps every message count,
so speed=10 plays the same pattern ten times faster (and ten times the rate).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

TEST_TOPIC = "test-topic"
HIGH_VOLUME_TOPIC = "high-volume-topic"
TOPICS: Mapping[str, int] = {TEST_TOPIC: 6, HIGH_VOLUME_TOPIC: 3}

TEST_GROUP = "test-consumer-group"
HIGH_VOLUME_GROUP = "high-volume-consumer"
GROUPS: Mapping[str, str] = {TEST_GROUP: TEST_TOPIC, HIGH_VOLUME_GROUP: HIGH_VOLUME_TOPIC}

# Beside the classic groups, two run by the Java drivers (devtools/javadriver.py), since
# kafka-python can be neither: a KIP-848 consumer-protocol group and a KIP-932 share group,
# each consuming all the time at a steady pace (records per second at speed 1), so their
# lag rises during the producer's bursts and falls again after.
KIP848_GROUP = "kip848-consumer-group"
SHARE_GROUP = "share-group"
JAVA_GROUPS: Mapping[str, Tuple[str, int]] = {
    KIP848_GROUP: (TEST_TOPIC, 15),
    SHARE_GROUP: (HIGH_VOLUME_TOPIC, 5),
}

log = logging.getLogger(__name__)


# -- the schedules ---------------------------------------------------------


@dataclass(frozen=True)
class ProducerPhase:
    """Send `count` messages to each topic in `sends`, spread evenly over `duration` seconds.

    duration 0 with sends is a burst (as fast as possible); no sends is a pause. Several
    sends run side by side (interleaved), like the seed's parallel multi-topic burst.
    """

    name: str
    sends: Tuple[Tuple[str, int], ...] = ()
    duration: float = 0.0


@dataclass(frozen=True)
class Read:
    """One consumer group reads `count` messages, sleeping `delay` seconds after each.

    With `catch_up`, it goes on past `count` until it reaches the partition ends as they
    were when the phase began: that is when lag falls back towards zero.
    """

    group: str
    count: int
    delay: float = 0.0
    catch_up: bool = False


@dataclass(frozen=True)
class ConsumerPhase:
    """Run `reads` side by side, or, without reads, pause for `pause` seconds."""

    name: str
    reads: Tuple[Read, ...] = ()
    pause: float = 0.0


# scripts/producer.sh: one cycle is about 80 s at speed 1.
PRODUCER_PHASES: Tuple[ProducerPhase, ...] = (
    ProducerPhase("low rate: 10 msg/s to test-topic", ((TEST_TOPIC, 300),), 30),
    ProducerPhase("burst: 100 to test-topic", ((TEST_TOPIC, 100),)),
    ProducerPhase("high-volume burst: 200 to high-volume-topic", ((HIGH_VOLUME_TOPIC, 200),)),
    ProducerPhase("medium rate: 20 msg/s to test-topic", ((TEST_TOPIC, 600),), 30),
    ProducerPhase("pause", (), 20),
    ProducerPhase("multi-topic burst: 50 to test-topic, 100 to high-volume-topic",
                  ((TEST_TOPIC, 50), (HIGH_VOLUME_TOPIC, 100))),
)

# scripts/consumer.sh. The seed read so little per cycle that its lag only ever grew;
# here the burst and the two-topic phase catch up, so lag also comes down again.
CONSUMER_PHASES: Tuple[ConsumerPhase, ...] = (
    ConsumerPhase("slow: 5 messages, 0.5 s each", (Read(TEST_GROUP, 5, 0.5),)),
    ConsumerPhase("medium: 20 messages, 0.2 s each", (Read(TEST_GROUP, 20, 0.2),)),
    ConsumerPhase("fast: 50 messages, 0.05 s each", (Read(TEST_GROUP, 50, 0.05),)),
    ConsumerPhase("high-volume: 30 messages", (Read(HIGH_VOLUME_GROUP, 30),)),
    ConsumerPhase("pause", (), 30),
    ConsumerPhase("burst: catch up on test-topic", (Read(TEST_GROUP, 100, catch_up=True),)),
    ConsumerPhase("both topics: 20 from test-topic, catch up on high-volume-topic",
                  (Read(TEST_GROUP, 20), Read(HIGH_VOLUME_GROUP, 40, catch_up=True))),
)


# -- the generator ---------------------------------------------------------

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")
# A catch-up read stops after this many (unscaled) seconds even if it has not caught up.
CATCH_UP_LIMIT = 60.0
# A read stops early when nothing has arrived for this many (unscaled) seconds, like
# kafka-console-consumer --timeout-ms: an empty topic must not stall the schedule.
IDLE_LIMIT = 10.0


@dataclass
class Stats:
    """What the threads have done so far (read it from any thread)."""

    produced: Dict[str, int] = field(default_factory=dict)
    consumed: Dict[str, int] = field(default_factory=dict)
    # (thread, cycle, phase name) of each finished phase, oldest first.
    phases_done: List[Tuple[str, int, str]] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


class Traffic:
    """A producer thread and a consumer thread playing the schedules in a loop until stop()."""

    def __init__(self, bootstrap: str, speed: float = 1.0, *,
                 producer_phases: Sequence[ProducerPhase] = PRODUCER_PHASES,
                 consumer_phases: Sequence[ConsumerPhase] = CONSUMER_PHASES,
                 allow_remote: bool = False, client_config: Optional[Mapping[str, object]] = None):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, not {speed!r}")
        servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
        if not allow_remote and not all(s.startswith(_LOOPBACK) for s in servers):
            # It writes test data into topics named test-topic: never by accident to a real cluster.
            raise ValueError(f"refusing to send demo traffic to {bootstrap} (not loopback); "
                             "pass allow_remote=True to mean it")
        self.bootstrap = bootstrap
        self.speed = float(speed)
        self.producer_phases = tuple(producer_phases)
        self.consumer_phases = tuple(consumer_phases)
        self.client_config = dict(client_config or {})
        self.stats = Stats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._producer = None
        self._consumers: Dict[str, object] = {}
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Traffic":
        """Create the topics if missing, connect the clients, start both threads."""
        if self._threads:
            return self
        from kafka import KafkaConsumer, KafkaProducer

        ensure_topics(self.bootstrap, TOPICS, self.client_config)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id="klag-demo-producer",
                acks=1, linger_ms=5, **self.client_config)
            for group, topic in GROUPS.items():
                self._consumers[group] = KafkaConsumer(
                    topic, bootstrap_servers=self.bootstrap, group_id=group,
                    client_id=f"klag-demo-{group}", auto_offset_reset="earliest",
                    enable_auto_commit=False,
                    # A join that races a just-created topic's metadata gets no partitions
                    # until the next metadata refresh (5 minutes by default).
                    metadata_max_age_ms=2000,
                    **self.client_config)
        except BaseException:
            self._close_clients()
            raise
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=("producer", self._produce_phase,
                                                      self.producer_phases),
                             name="klag-demo-producer", daemon=True),
            threading.Thread(target=self._loop, args=("consumer", self._consume_phase,
                                                      self.consumer_phases),
                             name="klag-demo-consumer", daemon=True),
        ]
        for t in self._threads:
            t.start()
        log.info("demo traffic started on %s (speed x%g)", self.bootstrap, self.speed)
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop both threads, wait for them, close the clients (committing what was read)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                log.warning("%s did not stop within %gs", t.name, timeout)
        self._threads = []
        self._close_clients()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_clients(self) -> None:
        for group, consumer in list(self._consumers.items()):
            try:
                consumer.close(autocommit=True, timeout_ms=5000)  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing consumer %s: %s", group, e)
        self._consumers.clear()
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as e:  # noqa: BLE001
                log.debug("closing producer: %s", e)
            self._producer = None

    # -- the loops -----------------------------------------------------------

    def _loop(self, role: str, run_phase, phases: Sequence) -> None:  # type: ignore[no-untyped-def]
        cycle = 0
        while not self._stop.is_set():
            cycle += 1
            for phase in phases:
                if self._stop.is_set():
                    return
                log.info("%s cycle %d: %s", role, cycle, phase.name)
                try:
                    run_phase(phase)
                except Exception as e:  # noqa: BLE001 - keep the demo going (broker restarts)
                    if self._stop.is_set():
                        return
                    with self._lock:
                        self.stats.errors.append(f"{role}: {phase.name}: {type(e).__name__}: {e}")
                    log.warning("%s phase %r failed: %s: %s", role, phase.name, type(e).__name__, e)
                    self._stop.wait(1.0)
                    continue
                with self._lock:
                    self.stats.phases_done.append((role, cycle, phase.name))

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` (already scaled); True if stop() was called meanwhile."""
        return self._stop.wait(seconds) if seconds > 0 else self._stop.is_set()

    # -- producing -----------------------------------------------------------

    def _produce_phase(self, phase: ProducerPhase) -> None:
        duration = phase.duration / self.speed
        # Every message of every send, each at its due time from the phase start: the
        # sends interleave, and a slow send does not make the schedule drift.
        due = sorted(
            (i * duration / count if duration else 0.0, topic)
            for topic, count in phase.sends for i in range(count))
        start = time.monotonic()
        for at, topic in due:
            if self._wait(start + at - time.monotonic()):
                return
            self._send(topic)
        if phase.sends:
            self._producer.flush(timeout=30)  # type: ignore[union-attr]
        self._wait(start + duration - time.monotonic())

    def _send(self, topic: str) -> None:
        with self._lock:
            self._counter += 1
            counter = self._counter
        value = f"message-{counter}-{time.time_ns()}".encode()
        self._producer.send(topic, value=value)  # type: ignore[union-attr]
        with self._lock:
            self.stats.produced[topic] = self.stats.produced.get(topic, 0) + 1

    # -- consuming -----------------------------------------------------------

    def _consume_phase(self, phase: ConsumerPhase) -> None:
        if not phase.reads:
            self._wait(phase.pause / self.speed)
            return
        if len(phase.reads) == 1:
            self._read(phase.reads[0])
            return
        # Side by side, one thread per group: each consumer is only ever used by one thread.
        errors: List[BaseException] = []

        def run(read: Read) -> None:
            try:
                self._read(read)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(r,), daemon=True,
                                    name=f"klag-demo-{r.group}") for r in phase.reads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _read(self, read: Read) -> None:
        consumer = self._consumers[read.group]
        delay = read.delay / self.speed
        # For catch_up: the partition ends to reach, taken once the group is joined.
        target: Optional[Dict[object, int]] = None
        give_up = time.monotonic() + max(CATCH_UP_LIMIT / self.speed, 10.0)
        idle = max(IDLE_LIMIT / self.speed, 2.0)
        done = 0
        last_commit = last_record = time.monotonic()
        while not self._stop.is_set():
            if read.catch_up and target is None and consumer.assignment():  # type: ignore[attr-defined]
                target = self._ends(consumer)
            if done >= read.count and (not read.catch_up or (
                    target is not None and self._reached(consumer, target))):
                break
            if read.catch_up and done >= read.count and time.monotonic() > give_up:
                log.warning("%s: gave up catching up after %gs", read.group, CATCH_UP_LIMIT / self.speed)
                break
            want = 1 if delay else 500
            if done < read.count:
                want = min(want, read.count - done)
            batches = consumer.poll(timeout_ms=200, max_records=want)  # type: ignore[attr-defined]
            n = sum(len(records) for records in batches.values())
            if not n and time.monotonic() - last_record > idle:
                log.info("%s: nothing to read for %gs, moving on", read.group, idle)
                break
            if n:
                last_record = time.monotonic()
                done += n
                topic = GROUPS[read.group]
                with self._lock:
                    self.stats.consumed[topic] = self.stats.consumed.get(topic, 0) + n
                if delay:
                    self._wait(delay * n)  # "processing" each message
            if time.monotonic() - last_commit >= 0.5:
                consumer.commit()  # type: ignore[attr-defined]
                last_commit = time.monotonic()
        if done:
            consumer.commit()  # type: ignore[attr-defined]

    @staticmethod
    def _ends(consumer) -> Dict[object, int]:  # type: ignore[no-untyped-def]
        parts = consumer.assignment()
        return dict(consumer.end_offsets(list(parts), timeout_ms=10000)) if parts else {}

    @staticmethod
    def _reached(consumer, target: Mapping[object, int]) -> bool:  # type: ignore[no-untyped-def]
        assigned = consumer.assignment()
        return all(consumer.position(tp, timeout_ms=5000) >= end
                   for tp, end in target.items() if tp in assigned)


class JavaGroups:
    """The consumer-protocol and the share group of JAVA_GROUPS, as Java driver processes.

    start() compiles the drivers if needed (a JDK is needed: JavaDriverError otherwise) and
    starts one process per group; stop() closes their stdin, so they leave their groups,
    and kills by PID whichever does not exit.
    """

    def __init__(self, bootstrap: str, speed: float = 1.0, *, allow_remote: bool = False,
                 version: Optional[str] = None) -> None:
        Traffic(bootstrap, speed, allow_remote=allow_remote)  # the same refusals
        self.bootstrap, self.speed, self.version = bootstrap, float(speed), version
        self.drivers: Dict[str, object] = {}
        self.lines: List[Tuple[str, str]] = []  # (group, driver output line)
        self._readers: List[threading.Thread] = []

    def start(self) -> "JavaGroups":
        from devtools.javadriver import GroupDriver, ShareDriver

        ensure_topics(self.bootstrap, TOPICS)
        try:
            for group, (topic, rate) in JAVA_GROUPS.items():
                kind = ShareDriver if group == SHARE_GROUP else GroupDriver
                paced = max(1, round(rate * self.speed))
                if kind is ShareDriver:
                    driver = ShareDriver(self.bootstrap, group, topic, f"klag-demo-{group}",
                                         version=self.version, rate=paced)
                else:
                    driver = GroupDriver(self.bootstrap, group, topic, f"klag-demo-{group}", {},
                                         version=self.version, rate=paced)
                self.drivers[group] = driver
                reader = threading.Thread(target=self._read, args=(group, driver), daemon=True,
                                          name=f"klag-demo-{group}")
                reader.start()
                self._readers.append(reader)
                log.info("%s (%s) consuming %s at %d records/s, pid %d", group,
                         "share group" if kind is ShareDriver else "group.protocol=consumer",
                         topic, paced, driver.proc.pid)  # type: ignore[attr-defined]
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self, group: str, driver) -> None:  # type: ignore[no-untyped-def]
        for line in driver.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append((group, line))
            log.info("%s: %s", group, line)

    @property
    def pids(self) -> Dict[str, int]:
        return {g: d.proc.pid for g, d in self.drivers.items()}  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        return any(d.proc.poll() is None for d in self.drivers.values())  # type: ignore[attr-defined]

    def stop(self, timeout: float = 30) -> None:
        drivers, self.drivers = self.drivers, {}
        for group, driver in drivers.items():
            rc = driver.close(timeout)  # type: ignore[attr-defined]
            log.info("%s: driver exited with %s", group, rc)
        for reader in self._readers:
            reader.join(5)
        self._readers = []


def ensure_topics(bootstrap: str, topics: Mapping[str, int],
                  client_config: Optional[Mapping[str, object]] = None, timeout: float = 30) -> None:
    """Create the missing topics (replication factor 1) and add partitions to short ones."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="klag-demo-admin",
                             request_timeout_ms=int(timeout * 1000), **dict(client_config or {}))
    try:
        existing = set(admin.list_topics())
        missing = {name: {"num_partitions": n, "replication_factor": 1}
                   for name, n in topics.items() if name not in existing}
        if missing:
            # raise_errors=False: another process may create them at the same moment.
            admin.create_topics(missing, timeout_ms=int(timeout * 1000), raise_errors=False)
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout * 1000))
        have = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
        short = {name: n for name, n in topics.items() if have.get(name, n) < n}
        if short:
            admin.create_partitions(short, timeout_ms=int(timeout * 1000))
            admin.wait_for_topics(list(short), timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
