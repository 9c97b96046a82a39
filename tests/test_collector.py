"""The prometheus_client Collector over the pollers' snapshots, on a task.Clock."""

from __future__ import annotations

from typing import Any, Dict, List, Set, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from klag_collector import metrics
from klag_collector.collector import LagCollector
from klag_collector.families import empty_family
from klag_collector.model import ClusterData, GroupInfo
from fakes import FakeSource, one_partition_data, pollers_on_clock

T0 = 1_700_000_000.0

CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "{granularity}"
[[clusters]]
name = "a"
bootstrap_servers = "127.0.0.1:1"
[clusters.labels]
dc = "east"
[[clusters]]
name = "b"
bootstrap_servers = "127.0.0.1:2"
"""

HEALTH_NAMES = {empty_family(d).name for d in metrics.HEALTH_FAMILIES}


def data(group: str, committed: int) -> ClusterData:
    """One group on one partition t/0 whose end offset is 10."""
    return one_partition_data(GroupInfo(group, "Stable", members=1), committed=committed)


class Unreadable:
    """A poller stand-in whose every attribute read fails: proves nothing was read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"collector read poller.{name}")


class CollectorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.sources = {
            "a": FakeSource(data("ga", 4), {("t", 0, 4): int((T0 - 30) * 1000)}),
            "b": FakeSource(data("gb", 7), {("t", 0, 7): int((T0 - 5) * 1000)}),
        }

    def make(self, granularity: str = "partition") -> LagCollector:
        cfg, self.pollers = pollers_on_clock(CONFIG.format(granularity=granularity), self.sources,
                                             self.clock)
        for p in self.pollers:
            p.startService()
        self.addCleanup(self.stop)
        return LagCollector(self.pollers, cfg.exporter.granularity, self.clock)

    def stop(self) -> None:
        for p in self.pollers:
            self.successResultOf(p.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])


def by_name(families: List[Any]) -> Dict[str, Any]:
    return {f.name: f for f in families}


def clusters_in(family: Any) -> List[str]:
    return sorted(s.labels["cluster_name"] for s in family.samples)


class DescribeTests(CollectorTestCase):
    def test_describe_reads_no_poller(self) -> None:
        """describe() lists the declared families without touching any poller or collecting."""
        unreadable: Any = Unreadable()
        collector = LagCollector([unreadable], metrics.Granularity.PARTITION, task.Clock())
        described = list(collector.describe())
        self.assertEqual(
            [f.name for f in described],
            [empty_family(d).name for d in metrics.ALL_FAMILIES],
        )
        self.assertEqual([f.samples for f in described], [[]] * len(metrics.ALL_FAMILIES))

    def test_registering_never_collects(self) -> None:
        """Even an auto-describing registry uses describe(), so register() runs no collect()."""
        unreadable: Any = Unreadable()
        collector = LagCollector([unreadable], metrics.Granularity.TOPIC, task.Clock())
        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector)
        self.assertIn("kafka_lag_exporter_up", registry._collector_to_names[collector])
        self.assertIn(
            "kafka_lag_exporter_cycle_failures_total", registry._collector_to_names[collector]
        )

    def test_describe_follows_the_granularity(self) -> None:
        """At topic granularity describe() leaves the partition-only families out."""
        collector = LagCollector([], metrics.Granularity.TOPIC, task.Clock())
        names = {f.name for f in collector.describe()}
        self.assertNotIn("kafka_consumergroup_group_lag", names)
        self.assertIn("kafka_consumergroup_group_sum_lag", names)
        self.assertEqual(len(names), len(metrics.families_for(metrics.Granularity.TOPIC)))


class CollectTests(CollectorTestCase):
    def test_two_clusters_merge_into_one_family_per_name(self) -> None:
        """Each family appears once, holding both clusters' samples."""
        families = list(self.make().collect())
        names = [f.name for f in families]
        self.assertEqual(len(names), len(set(names)))
        fams = by_name(families)
        self.assertEqual(clusters_in(fams["kafka_lag_exporter_up"]), ["a", "b"])
        lag = fams["kafka_consumergroup_group_lag"]
        self.assertEqual(
            sorted((s.labels["cluster_name"], s.labels["group"], s.value) for s in lag.samples),
            [("a", "ga", 6.0), ("b", "gb", 3.0)],
        )
        seconds = fams["kafka_consumergroup_group_lag_seconds"]
        self.assertEqual(sorted(s.value for s in seconds.samples), [5.0, 30.0])
        a_up = [s for s in fams["kafka_lag_exporter_up"].samples if s.labels["cluster_name"] == "a"]
        self.assertEqual(a_up[0].labels, {"cluster_name": "a", "dc": "east"})

    def test_family_order_follows_the_definitions(self) -> None:
        """Families come out in the definitions' order, so renders are stable."""
        families = list(self.make().collect())
        declared = [empty_family(d).name for d in metrics.ALL_FAMILIES]
        names = [f.name for f in families]
        self.assertEqual(names, [n for n in declared if n in names])

    def test_a_stale_cluster_reports_only_health_with_up_0(self) -> None:
        """Once b is stale its lag series are gone and its up is 0; a is unaffected."""
        collector = self.make()
        self.sources["b"].error = ConnectionError("down")
        self.clock.pump([1.0] * 31)
        self.assertIsNone(self.pollers[1].fresh_snapshot(self.clock.seconds()))
        fams = by_name(list(collector.collect()))
        with_b: Set[str] = {name for name, f in fams.items() if "b" in clusters_in(f)}
        self.assertTrue(with_b)
        self.assertLessEqual(with_b, HEALTH_NAMES)
        ups = {s.labels["cluster_name"]: s.value for s in fams["kafka_lag_exporter_up"].samples}
        self.assertEqual(ups, {"a": 1.0, "b": 0.0})
        self.assertEqual(clusters_in(fams["kafka_consumergroup_group_lag"]), ["a"])
        self.assertEqual(clusters_in(fams["kafka_partition_latest_offset"]), ["a"])
        # Its history is still told: the time of its last success.
        last = fams["kafka_lag_exporter_last_update_timestamp_seconds"]
        self.assertEqual({s.labels["cluster_name"]: s.value for s in last.samples}["b"], T0)

    def test_when_every_cluster_is_stale_only_health_families_remain(self) -> None:
        """With no fresh cluster every lag family leaves, the health ones stay."""
        collector = self.make()
        for source in self.sources.values():
            source.error = ConnectionError("down")
        self.clock.pump([1.0] * 31)
        fams = by_name(list(collector.collect()))
        self.assertLessEqual(set(fams), HEALTH_NAMES)
        self.assertIn("kafka_lag_exporter_up", fams)
        self.assertEqual({s.value for s in fams["kafka_lag_exporter_up"].samples}, {0.0})

    def test_a_cluster_that_never_succeeded_has_health_only(self) -> None:
        """A cluster failing from the start reports up 0 and no lag families."""
        self.sources["b"].error = ConnectionError("down")
        fams = by_name(list(self.make().collect()))
        self.assertEqual(clusters_in(fams["kafka_consumergroup_group_lag"]), ["a"])
        failures = {
            s.labels["cluster_name"]: s.value
            for s in fams["kafka_lag_exporter_cycle_failures"].samples
        }
        self.assertEqual(failures, {"a": 0.0, "b": 1.0})

    def test_topic_granularity_has_no_partition_level_family(self) -> None:
        """At topic granularity no partition-only family appears, group aggregates do."""
        fams = by_name(list(self.make("topic").collect()))
        partition_only = {d.name for d in metrics.ALL_FAMILIES if d.partition_only}
        self.assertEqual(set(fams) & partition_only, set())
        sums = {s.labels["group"]: s.value for s in fams["kafka_consumergroup_group_sum_lag"].samples}
        self.assertEqual(sums, {"ga": 6.0, "gb": 3.0})
        self.assertIn("kafka_partition_latest_offset", fams)

    def test_collect_calls_no_kafka(self) -> None:
        """collect() and a full render read no source and schedule nothing."""
        collector = self.make()
        reads = {name: list(s.reads) for name, s in self.sources.items()}
        fetches = {name: len(s.fetches) for name, s in self.sources.items()}
        calls = len(self.clock.getDelayedCalls())
        for _ in range(3):
            list(collector.collect())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        generate_latest(registry)
        self.assertEqual({name: list(s.reads) for name, s in self.sources.items()}, reads)
        self.assertEqual({name: len(s.fetches) for name, s in self.sources.items()}, fetches)
        self.assertEqual(len(self.clock.getDelayedCalls()), calls)

    def test_collect_reflects_the_latest_snapshot(self) -> None:
        """After the next cycle, collect() yields the new figures."""
        collector = self.make()
        self.sources["a"].data = data("ga", 10)
        self.clock.advance(10)
        lag = by_name(list(collector.collect()))["kafka_consumergroup_group_lag"]
        values = {s.labels["group"]: s.value for s in lag.samples}
        self.assertEqual(values, {"ga": 0.0, "gb": 3.0})


class RegistryTests(CollectorTestCase):
    def test_generate_latest_from_a_private_registry(self) -> None:
        """Registered in CollectorRegistry(auto_describe=False), it renders parseable text."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.make())
        text = generate_latest(registry).decode()
        self.assertEqual(
            registry.get_sample_value(
                "kafka_consumergroup_group_sum_lag", {"cluster_name": "a", "dc": "east", "group": "ga"}
            ),
            6.0,
        )
        self.assertEqual(
            registry.get_sample_value("kafka_lag_exporter_cycle_failures_total", {"cluster_name": "b"}),
            0.0,
        )
        self.assertIn('kafka_lag_exporter_up{cluster_name="a",dc="east"} 1.0\n', text)
        parsed: List[Tuple[str, str]] = [
            (f.name, f.type) for f in text_string_to_metric_families(text)
        ]
        self.assertIn(("kafka_lag_exporter_cycle_failures", "counter"), parsed)
        self.assertIn(("kafka_consumergroup_group_lag", "gauge"), parsed)
        self.assertEqual(len(parsed), len(set(parsed)))

    def test_registering_twice_is_refused(self) -> None:
        """Its declared names clash with a second copy, as any prometheus_client collector's do."""
        collector = self.make()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        other = LagCollector(self.pollers, metrics.Granularity.PARTITION, self.clock)
        self.assertRaises(ValueError, registry.register, other)
