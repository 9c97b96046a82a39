"""Rendering once per change: the bytes, per-cluster caching, and the renderer's coalescing.

The exposition is built per cluster and merged; tests hold it byte for byte equal to what
prometheus_client's two generate_latest functions write for the same data, and count the
per-family line builds to show that a change of health alone rebuilds no lag line.
"""

from __future__ import annotations

import gzip
from array import array
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, exposition
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from klag_collector import metrics, render
from klag_collector.collector import LagCollector, read_clusters
from klag_collector.families import Family, empty_family, sample_values
from klag_collector.model import ClusterData, ClusterHealth, GroupInfo
from klag_collector.poller import ClusterPoller
from klag_collector.render import (
    MetricsRenderer,
    Rendered,
    ReportRenderer,
    Variant,
    family_header,
    lines_by_family,
)
from fakes import FakeSource, HeldRunner, one_partition_data, pollers_on_clock, run_now

T0 = 1_700_000_000.0
HEALTH_FAMILY_NAMES = {definition.name for definition in metrics.HEALTH_FAMILIES}
LAG_FAMILY_NAMES = {definition.name for definition in metrics.LAG_FAMILIES}


# -- the exposition primitives, on hand-made families -----------------------------------

ALL_VARIANTS = [Variant(om, gz) for om in (False, True) for gz in (False, True)]


def fam(name: str, help: str, labels: Sequence[str] = (), rows: Sequence[Any] = (),
        type: str = "gauge", base: Any = ()) -> Family:
    """A family as families.py builds them: a definition, the cluster's labels, and the
    columns of `rows` (label values, value)."""
    return Family(metrics.MetricDef(name, help, tuple(labels), type), tuple(base),
                  [tuple(values) for values, _ in rows], sample_values(value for _, value in rows))


def small_families() -> List[Family]:
    """A gauge with two labelled series and a counter."""
    return [fam("demo_lag", "Lag of a demo group.", ["group"], [(["g1"], 5), (["g2"], 0)]),
            fam("demo_cycles_total", "Demo cycles.", rows=[([], 3)], type="counter")]


class _Families(Collector):
    """prometheus_client's view of the same families: what Family.metric() makes of them."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = families

    def collect(self) -> List[Metric]:
        return [family.metric() for family in self.families]


def bodies_of(families: Sequence[Family]) -> Dict[Variant, bytes]:
    """What the renderer's primitives make of the families, in their order."""
    headers = [family_header(empty_family(f.definition), f.definition.name) for f in families]
    rendered = Rendered(headers, [lines_by_family({f.definition.name: f for f in families})], b"")
    return {variant: rendered.body(variant) for variant in ALL_VARIANTS}


def _awkward_families() -> List[Family]:
    return [
        fam("klag_test_lag", 'Lag "quoted" with a \\ backslash\nand a newline.', ["group", "topic"],
            [(['g"1\\x\ny', "t"], 5), (["ünïcode-group", "t"], 1.5e-7),
             (["big", "t"], 1234567890123.0), (["inf", "t"], float("inf")),
             (["zero", "t"], 0.0), (["minus-zero", "t"], -0.0), (["zero-again", "t"], 0.0)],
            base=[("cluster_name", 'a "b" 100%s \\ c')]),
        fam("klag_test_events_total", "Events.", ["reason"], [(["x"], 3)], type="counter"),
        fam("klag_test_up", "Up.", rows=[([], 1)]),
    ]


class ExpositionTests(SynchronousTestCase):
    def test_four_variants_are_rendered_on_demand_and_kept(self) -> None:
        """A body is made the first time it is asked for, then the same bytes are served."""
        rendered = Rendered([], [], b"")
        self.assertIsNone(rendered.ready(Variant(True, True)))
        body = rendered.body(Variant(True, True))
        self.assertIs(rendered.ready(Variant(True, True)), body)
        self.assertEqual(rendered.asked, {Variant(True, True)})

    def test_variants_are_consistent(self) -> None:
        """The gzipped bodies unzip to the plain ones; only OpenMetrics ends in # EOF."""
        bodies = bodies_of(small_families())
        text, om = bodies[Variant(False, False)], bodies[Variant(True, False)]
        self.assertEqual(gzip.decompress(bodies[Variant(False, True)]), text)
        self.assertEqual(gzip.decompress(bodies[Variant(True, True)]), om)
        self.assertTrue(om.endswith(b"# EOF\n"))
        self.assertNotIn(b"# EOF", text)
        self.assertIn(b'demo_lag{group="g1"} 5.0\n', text)
        self.assertIn(b"demo_cycles_total 3.0\n", text)
        self.assertIn(b"# TYPE demo_cycles counter\n", om)

    def test_bodies_equal_prometheus_client_output(self) -> None:
        """The plain bodies are exactly what prometheus_client's generators produce."""
        families = small_families()
        bodies = bodies_of(families)
        self.assertEqual(bodies[Variant(False, False)],
                         exposition.generate_latest(_Families(families)))  # type: ignore[arg-type]
        self.assertEqual(bodies[Variant(True, False)],
                         openmetrics.generate_latest(_Families(families)))  # type: ignore[arg-type]

    def test_gzip_is_reproducible(self) -> None:
        """Two renders of the same data give byte-identical gzip (no timestamp in the header)."""
        first, second = bodies_of(small_families()), bodies_of(small_families())
        self.assertEqual(first[Variant(False, True)], second[Variant(False, True)])
        self.assertEqual(first[Variant(True, True)], second[Variant(True, True)])
        # Bytes 4..7 of a gzip member are its mtime.
        self.assertEqual(first[Variant(False, True)][4:8], b"\0\0\0\0")

    def test_an_empty_registry_renders(self) -> None:
        """No metrics: empty text, and OpenMetrics that is just # EOF."""
        bodies = bodies_of([])
        self.assertEqual(bodies[Variant(False, False)], b"")
        self.assertEqual(bodies[Variant(True, False)], b"# EOF\n")
        self.assertEqual(gzip.decompress(bodies[Variant(False, True)]), b"")

    def test_a_family_without_lines_is_left_out(self) -> None:
        """A header whose family has no line in any part writes nothing, as merge() drops it."""
        bodies = bodies_of([fam("klag_test_empty", "Nothing.", ["group"])])
        self.assertEqual(bodies[Variant(False, False)], b"")
        self.assertEqual(bodies[Variant(True, False)], b"# EOF\n")


def test_render_is_byte_identical_to_prometheus_client() -> None:
    """Our render writes exactly what both prometheus_client encoders write, escapes included."""
    families = _awkward_families()
    bodies = bodies_of(families)
    assert bodies[Variant(False, False)] == exposition.generate_latest(_Families(families))  # type: ignore[arg-type]
    assert bodies[Variant(True, False)] == openmetrics.generate_latest(_Families(families))  # type: ignore[arg-type]


def test_lines_of_many_rows_are_written_chunk_by_chunk_as_prometheus_client_writes_them() -> None:
    """Three chunks and a bit: small values in the first, large ones in the second, a label
    to escape only in the third; a family without labels crosses chunks too."""
    n = render.CHUNK_ROWS
    rows = [([f"g{i}", "t"], float(i)) for i in range(n)]
    rows += [([f"g{i}", "t"], 1e6 + i) for i in range(n, 2 * n)]
    rows += [([f'g"{i}"\\' if i == 2 * n + 7 else f"g{i}", "t"], 0.5) for i in range(2 * n, 3 * n + 3)]
    families = [fam("klag_test_lag", "Lag.", ["group", "topic"], rows, base=[("cluster_name", "c")]),
                fam("klag_test_counts", "Counts.", rows=[([], float(i)) for i in range(n + 1)])]
    bodies = bodies_of(families)
    assert bodies[Variant(False, False)] == exposition.generate_latest(_Families(families))  # type: ignore[arg-type]
    assert bodies[Variant(True, False)] == openmetrics.generate_latest(_Families(families))  # type: ignore[arg-type]
    chunks = list(render.line_chunks(families[0]))
    assert [chunk.count(b"\n") for chunk in chunks] == [n, n, n, 3]


@given(st.integers(0, 2 * render.CHUNK_ROWS + 4), st.sampled_from(["value", "label", "none"]))
def test_rows_are_compared_chunk_by_chunk_as_whole_families_are(at: int, change: str) -> None:
    rows = [([f"g{i}"], float(i)) for i in range(2 * render.CHUNK_ROWS + 5)]
    changed = list(rows)
    if change == "value":
        changed[at] = (changed[at][0], -1.0)
    elif change == "label":
        changed[at] = (["other"], changed[at][1])
    old, new = fam("klag_test_lag", "Lag.", ["group"], rows), fam("klag_test_lag", "Lag.", ["group"], changed)
    assert render._same_rows(old, new) == (old == new) == (change == "none")
    assert not render._same_rows(old, fam("klag_test_lag", "Lag.", ["group"], changed[:-1]))
    assert not render._same_rows(old, fam("klag_test_lag", "Lag.", ["group"], rows, base=[("c", "x")]))


@given(st.lists(st.text(), min_size=1, max_size=5), st.floats(allow_nan=False), st.text())
def test_render_matches_prometheus_client_for_any_label_value(values, number, base) -> None:
    """Any label value (the cluster's too) and any float render as prometheus_client's."""
    families = [fam("klag_test_any", "Any.", ["group"], [([value], number) for value in values],
                    base=[("cluster_name", base)])]
    bodies = bodies_of(families)
    assert bodies[Variant(False, False)] == exposition.generate_latest(_Families(families))  # type: ignore[arg-type]
    assert bodies[Variant(True, False)] == openmetrics.generate_latest(_Families(families))  # type: ignore[arg-type]


# -- render passes over real pollers: the same bytes as prometheus_client, and the work ----

CLUSTERS_CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "{granularity}"
[exporter.timestamp_sampling]
enabled = {sampling}
{clusters}
"""

CLUSTER_A = """
[[clusters]]
name = "a"
bootstrap_servers = "127.0.0.1:1"
[clusters.labels]
dc = 'east "1"\\'
"""

CLUSTER_B = """
[[clusters]]
name = "b"
bootstrap_servers = "127.0.0.1:2"
"""


@given(st.lists(st.one_of(st.floats(), st.floats(-2e6, 2e6), st.integers(0, 10**7).map(float))))
def test_numbers_are_written_as_prometheus_client_writes_them(values: List[float]) -> None:
    """Lists of small values (the fast path), large, negative, zero, -0.0, inf and nan alike."""
    assert list(render.numbers(array("d", values))) == [floatToGoString(v) for v in values]


def test_numbers_switch_to_go_exponents_at_a_million() -> None:
    assert list(render.numbers(array("d", [999999.5, -0.0, 1e-7]))) == ["999999.5", "-0.0", "1e-07"]
    assert list(render.numbers(array("d", [1e6, 3.0]))) == ["1e+06", "3.0"]


def config_text(clusters: str, granularity: str = "partition", sampling: str = "true") -> str:
    return CLUSTERS_CONFIG.format(granularity=granularity, sampling=sampling, clusters=clusters)


def data(group: str, committed: int) -> ClusterData:
    """One group on one partition t/0 whose end offset is 10."""
    return one_partition_data(GroupInfo(group, "Stable", members=1), committed=committed)


class LineBuilds:
    """Wraps render.line_chunks and keeps every family it was called with."""

    def __init__(self) -> None:
        self.families: List[Family] = []
        self._build = render.line_chunks

    def __call__(self, family: Family) -> Iterator[bytes]:
        self.families.append(family)
        return self._build(family)

    def names(self) -> List[str]:
        """The defined names of the families built so far (counters with their _total)."""
        return sorted(family.definition.name for family in self.families)

    def of_snapshot(self, poller: ClusterPoller) -> int:
        """How many of the families built are the lag families of the poller's snapshot."""
        assert poller.snapshot is not None
        own = [id(family) for family in poller.snapshot.families.values()]
        return sum(1 for family in self.families if id(family) in own)

    def clear(self) -> None:
        self.families = []


class ReportRendererTests(SynchronousTestCase):
    """Two clusters a and b on FakeSources, polled on a Clock, rendered by MetricsRenderer."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.sources = {
            "a": FakeSource(data("ga", 4), {("t", 0, 4): int((T0 - 30) * 1000)}),
            "b": FakeSource(data("gb", 7), {("t", 0, 7): int((T0 - 5) * 1000)}),
        }
        self.builds = LineBuilds()
        self.patch(render, "line_chunks", self.builds)
        self.renderer: Optional[MetricsRenderer] = None
        self.pollers: List[ClusterPoller] = []
        self.held: List[HeldRunner] = []

    def make(self, config: str, runner: Any = run_now) -> List[ClusterPoller]:
        """Pollers of `config` over the sources, added to the ones rendered."""
        if isinstance(runner, HeldRunner):
            self.held.append(runner)
        cfg, pollers = pollers_on_clock(config, self.sources, self.clock, run_in_thread=runner,
                                        on_change=self.invalidate)
        self.pollers.extend(pollers)
        self.renderer = MetricsRenderer(self.pollers, cfg.exporter.granularity, self.clock, run_now)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LagCollector(self.pollers, cfg.exporter.granularity, self.clock))
        return pollers

    def invalidate(self) -> None:
        assert self.renderer is not None
        self.renderer.invalidate()

    def start(self, pollers: Sequence[ClusterPoller]) -> None:
        for poller in pollers:
            poller.startService()
        self.addCleanup(self.stop, pollers)

    def stop(self, pollers: Sequence[ClusterPoller]) -> None:
        """Stop the pollers, letting every held call (cycles, resets) finish meanwhile."""
        stopped = [poller.stopService() for poller in pollers]
        for held in self.held:
            while held.pending:
                held.release()
        for done in stopped:
            self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def current(self) -> Rendered:
        assert self.renderer is not None and self.renderer.current is not None
        return self.renderer.current

    def assert_same_as_prometheus_client(self) -> None:
        """Both plain bodies equal generate_latest's on a registry with the LagCollector."""
        rendered = self.current()
        self.assertEqual(rendered.body(Variant(False, False)), exposition.generate_latest(self.registry))
        self.assertEqual(rendered.body(Variant(True, False)), openmetrics.generate_latest(self.registry))
        self.assertEqual(gzip.decompress(rendered.body(Variant(False, True))), rendered.body(Variant(False, False)))
        self.assertEqual(gzip.decompress(rendered.body(Variant(True, True))), rendered.body(Variant(True, False)))

    def test_two_clusters_render_as_prometheus_client_does(self) -> None:
        """Each family once, both clusters' samples under it, bytes equal to prometheus_client."""
        self.start(self.make(config_text(CLUSTER_A + CLUSTER_B)))
        self.assert_same_as_prometheus_client()
        text = self.current().body(Variant(False, False)).decode()
        self.assertEqual(text.count("# TYPE kafka_consumergroup_group_lag gauge\n"), 1)
        self.assertIn('kafka_consumergroup_group_lag{client_id="",cluster_name="a",consumer_id="",'
                      'dc="east \\"1\\"\\\\",group="ga",member_host="",partition="0",topic="t"}'
                      ' 6.0\n', text)
        self.assertIn('kafka_consumergroup_group_lag{client_id="",cluster_name="b",consumer_id="",'
                      'group="gb",member_host="",partition="0",topic="t"} 3.0\n', text)

    def test_topic_granularity_renders_as_prometheus_client_does(self) -> None:
        """At topic granularity too, and no partition-only family is written."""
        self.start(self.make(config_text(CLUSTER_A + CLUSTER_B, granularity="topic")))
        self.assert_same_as_prometheus_client()
        self.assertNotIn(b"kafka_consumergroup_group_lag{", self.current().body(Variant(False, False)))

    def test_a_stale_cluster_renders_as_prometheus_client_does(self) -> None:
        """Once b is stale its lag lines leave; a's stay; the bytes still match."""
        self.start(self.make(config_text(CLUSTER_A + CLUSTER_B)))
        self.sources["b"].error = ConnectionError("down")
        self.clock.pump([1.0] * 31)
        self.assertIsNone(self.pollers[1].fresh_snapshot(self.clock.seconds()))
        self.assert_same_as_prometheus_client()
        text = self.current().body(Variant(False, False)).decode()
        self.assertIn('kafka_lag_exporter_up{cluster_name="b"} 0.0\n', text)
        self.assertNotIn('group="gb"', text)
        self.assertIn('group="ga"', text)

    def test_clusters_never_collected_render_as_prometheus_client_does(self) -> None:
        """With no cluster ever collected only health families are written, as generate_latest."""
        for source in self.sources.values():
            source.error = ConnectionError("down")
        self.start(self.make(config_text(CLUSTER_A + CLUSTER_B)))
        self.assert_same_as_prometheus_client()
        text = self.current().body(Variant(False, False)).decode()
        typed = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE")}
        # A failed cycle has a duration but no last success.
        self.assertEqual(typed, HEALTH_FAMILY_NAMES - {metrics.LAST_UPDATE.name})

    def test_no_cluster_renders_as_prometheus_client_does(self) -> None:
        """With no cluster at all the text is empty and OpenMetrics is # EOF, as generate_latest."""
        self.renderer = MetricsRenderer([], metrics.Granularity.PARTITION, self.clock, run_now)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LagCollector([], metrics.Granularity.PARTITION, self.clock))
        self.invalidate()
        self.assert_same_as_prometheus_client()
        self.assertEqual(self.current().body(Variant(False, False)), b"")
        self.assertEqual(self.current().body(Variant(True, False)), b"# EOF\n")

    def test_a_skipped_tick_rebuilds_only_the_health_lines(self) -> None:
        """A skipped tick replaces health, not the snapshot: no lag line is built again."""
        held = HeldRunner()
        pollers = self.make(config_text(CLUSTER_A + CLUSTER_B, sampling="false"), held)
        self.start(pollers)
        while held.pending:
            held.release()
        snapshots = [poller.snapshot for poller in pollers]
        self.clock.advance(10)  # both cycles start, held at their read
        self.builds.clear()
        self.clock.advance(10)  # the next ticks find them running: skipped
        self.assertEqual([poller.health.skipped_ticks for poller in pollers], [1, 1])
        self.assertEqual([poller.snapshot for poller in pollers], snapshots)
        # Two changes (one per cluster), each rendering both clusters' health families.
        self.assertEqual(self.builds.names(), sorted(list(HEALTH_FAMILY_NAMES) * 4))
        self.assertEqual([self.builds.of_snapshot(poller) for poller in pollers], [0, 0])
        text = self.current().body(Variant(False, False))
        self.assertIn(b'kafka_lag_exporter_skipped_ticks_total{cluster_name="b"} 1.0\n', text)
        self.assertIn(b'group="gb",member_host="",partition="0",topic="t"} 3.0\n', text)
        self.assert_same_as_prometheus_client()

    def test_a_new_snapshot_rebuilds_only_its_own_clusters_changed_lag_lines(self) -> None:
        """a's next cycle builds again the lines of a's families that changed (its committed
        offset moved), no other; b's, unchanged, are not rebuilt."""
        held_a, held_b = HeldRunner(), HeldRunner()
        a = self.make(config_text(CLUSTER_A, sampling="false"), held_a)[0]
        b = self.make(config_text(CLUSTER_B, sampling="false"), held_b)[0]
        self.start([a, b])
        for held in (held_a, held_b):
            while held.pending:
                held.release()
        a_before, b_snapshot = a.snapshot, b.snapshot
        self.sources["a"].data = data("ga", 9)
        self.clock.advance(10)  # both cycles start, held at their read
        self.builds.clear()
        while held_a.pending:
            held_a.release()
        self.assertIs(b.snapshot, b_snapshot)
        assert a_before is not None and a.snapshot is not None
        changed = sorted(name for name, family in a.snapshot.families.items()
                         if a_before.families[name] != family)
        self.assertEqual(changed, sorted([
            "kafka_consumergroup_group_offset", "kafka_consumergroup_group_lag",
            "kafka_consumergroup_group_max_lag", "kafka_consumergroup_group_sum_lag",
            "kafka_consumergroup_group_topic_sum_lag",
            "kafka_consumergroup_group_lag_retention_ratio",
            "kafka_consumergroup_group_retention_margin"]))
        self.assertEqual(self.builds.of_snapshot(a), len(changed))
        self.assertEqual(self.builds.of_snapshot(b), 0)
        lag_names = [name for name in self.builds.names() if name not in HEALTH_FAMILY_NAMES]
        self.assertEqual(lag_names, changed)
        self.assertIn(b'group="ga",member_host="",partition="0",topic="t"} 1.0\n',
                      self.current().body(Variant(False, False)))
        self.assert_same_as_prometheus_client()

    def test_the_stale_timer_rebuilds_only_the_health_lines(self) -> None:
        """When b turns stale its lag lines leave, and a's kept lines are not built again."""
        a, b = self.make(config_text(CLUSTER_A + CLUSTER_B, sampling="false"))
        self.start([a, b])
        self.sources["b"].error = ConnectionError("down")
        self.clock.pump([1.0] * 30)  # a's cycle at +30 has just made a new snapshot
        self.builds.clear()
        self.clock.advance(0.5)  # b's stale timer, at +30.001, is all that happens
        self.assertIsNone(b.fresh_snapshot(self.clock.seconds()))
        self.assertEqual(self.builds.names(), sorted(list(HEALTH_FAMILY_NAMES) * 2))
        self.assertEqual(self.builds.of_snapshot(a), 0)
        text = self.current().body(Variant(False, False))
        self.assertNotIn(b'group="gb"', text)
        self.assertIn(b'group="ga",member_host="",partition="0",topic="t"} 6.0\n', text)
        self.assert_same_as_prometheus_client()

    def test_a_pass_renders_the_status_page_from_the_same_reports(self) -> None:
        """The pass that renders /metrics renders the status page, with the same moment's states."""
        pollers = self.make(config_text(CLUSTER_A + CLUSTER_B))
        self.sources["b"].error = ConnectionError("broker down")
        self.start(pollers)
        reports = read_clusters(pollers, self.clock.seconds())
        rendered = ReportRenderer(metrics.families_for(metrics.Granularity.PARTITION)).render(reports)
        self.assertEqual(rendered.status_page, self.current().status_page)
        self.assertEqual(*[{v: r.body(v) for v in ALL_VARIANTS} for r in (rendered, self.current())])
        page = rendered.status_page.decode()
        self.assertIn("<tr><td>a</td><td>ok</td><td></td></tr>", page)
        self.assertIn("<tr><td>b</td><td>failing</td><td>ConnectionError: broker down</td></tr>", page)
        self.assertIn("<tr><td>a</td><td>ga</td><td>6</td><td>30.0</td></tr>", page)


# -- MetricsRenderer: one render at a time, bursts coalesced, failures survived ------------


class StubPoller:
    """A poller's public face, as read_clusters reads it; the test sets its health."""

    name = "demo"
    base_labels = (("cluster_name", "demo"),)
    snapshot = None

    def __init__(self) -> None:
        self.health: Any = ClusterHealth()
        self.reads = 0

    def fresh_snapshot(self, now: float) -> None:
        self.reads += 1
        return None

    def state(self, now: float) -> str:
        return "starting"

    def set_generation(self, value: int) -> None:
        """Shown as kafka_lag_exporter_cycle_failures_total, so a render tells which it saw."""
        self.health = ClusterHealth(failures_total=value)


class BrokenHealth:
    """Health whose reading fails, as a bug in a render pass would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def last_duration(self) -> float:
        raise self.error


class UnreadablePoller(StubPoller):
    """A poller whose state cannot be read, as a bug in it would make it."""

    def state(self, now: float) -> str:
        raise KeyError("state")


def generation(value: int) -> bytes:
    return f'kafka_lag_exporter_cycle_failures_total{{cluster_name="demo"}} {value:.1f}\n'.encode()


class RendererTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.poller = StubPoller()
        self.runner = HeldRunner()
        self.builds = LineBuilds()
        self.patch(render, "line_chunks", self.builds)
        self.renderer = self.renderer_on(self.runner)

    def renderer_on(self, runner: Any) -> MetricsRenderer:
        return MetricsRenderer([self.poller], metrics.Granularity.TOPIC, task.Clock(), runner)

    def served(self) -> bytes:
        assert self.renderer.current is not None
        return self.renderer.current.body(Variant(False, False))

    def test_nothing_is_rendered_before_the_first_invalidate(self) -> None:
        """A new renderer has no bytes and is idle, so when_rendered fires at once."""
        self.assertIsNone(self.renderer.current)
        self.assertEqual(self.runner.pending, [])
        self.successResultOf(self.renderer.when_rendered())

    def test_invalidate_renders_in_the_runner(self) -> None:
        """invalidate() reads the reports and hands the pass to the runner; current changes after."""
        self.poller.set_generation(1)
        self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1)
        self.assertEqual(self.poller.reads, 1)
        self.assertIsNone(self.renderer.current)
        self.assertEqual(self.builds.families, [], "nothing renders on the calling thread")
        self.runner.release()
        self.assertIn(generation(1), self.served())

    def test_invalidations_during_a_render_coalesce_into_one_more(self) -> None:
        """Five invalidations during a render give exactly one extra render, after it."""
        self.poller.set_generation(1)
        self.renderer.invalidate()
        self.poller.set_generation(2)
        for _ in range(5):
            self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1, "no second render while one runs")
        self.runner.release()
        self.assertIn(generation(1), self.served())
        self.assertEqual(len(self.runner.pending), 1, "exactly one re-render")
        self.runner.release()
        self.assertEqual(self.runner.pending, [])
        self.assertIn(generation(2), self.served())
        # Each render reads the pollers once and builds each family's lines once, for both
        # formats: two renders in all.
        self.assertEqual(self.poller.reads, 2)
        self.assertEqual(len(self.builds.families), 2 * len(metrics.HEALTH_FAMILIES))

    def test_when_rendered_waits_for_the_last_render(self) -> None:
        """when_rendered() asked during a dirty render fires only after the re-render."""
        self.renderer.invalidate()
        self.poller.set_generation(7)
        self.renderer.invalidate()
        waiting = self.renderer.when_rendered()
        self.assertNoResult(waiting)
        self.runner.release()
        self.assertNoResult(waiting)
        self.runner.release()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIn(generation(7), self.served())

    def test_several_waiters_all_fire(self) -> None:
        """Every when_rendered() Deferred taken during a render fires once it ends."""
        self.renderer.invalidate()
        waiters = [self.renderer.when_rendered() for _ in range(3)]
        self.runner.release()
        self.assertEqual([self.successResultOf(d) for d in waiters], [None, None, None])

    def test_an_invalidate_after_the_burst_starts_a_new_render(self) -> None:
        """Once idle again, the next invalidate() renders again: the renderer is not stuck busy."""
        self.renderer.invalidate()
        self.renderer.invalidate()
        self.runner.release()
        self.runner.release()
        self.poller.set_generation(3)
        self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.release()
        self.assertIn(generation(3), self.served())

    def test_a_failed_render_keeps_the_previous_bytes(self) -> None:
        """A render that raises is logged; the previous render is still served."""
        self.poller.set_generation(1)
        self.renderer.invalidate()
        self.runner.release()
        before = self.renderer.current
        self.poller.health = BrokenHealth(ValueError("render broke"))
        self.renderer.invalidate()
        waiting = self.renderer.when_rendered()
        self.runner.release()
        self.assertIs(self.renderer.current, before)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # And it recovers with the next change.
        self.poller.set_generation(2)
        self.renderer.invalidate()
        self.runner.release()
        self.assertIn(generation(2), self.served())

    def test_a_failed_first_render_leaves_nothing_to_serve(self) -> None:
        """With no earlier render, a failure leaves current None (so /metrics stays 503)."""
        self.poller.health = BrokenHealth(RuntimeError("no data yet"))
        self.renderer.invalidate()
        self.runner.release()
        self.assertIsNone(self.renderer.current)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_dirty_failed_render_still_renders_again(self) -> None:
        """A change during a render that then fails is still rendered afterwards."""
        self.poller.health = BrokenHealth(RuntimeError("transient"))
        self.renderer.invalidate()
        self.poller.set_generation(9)
        self.renderer.invalidate()
        self.runner.release()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.release()
        self.assertIn(generation(9), self.served())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_failure_reading_the_pollers_is_survived_too(self) -> None:
        """A poller that raises when read is logged like a failed render; the renderer goes on."""
        renderer = MetricsRenderer([UnreadablePoller()], metrics.Granularity.TOPIC, task.Clock(),
                                   self.runner)
        renderer.invalidate()
        self.assertEqual(self.runner.pending, [], "no pass is started")
        self.assertIsNone(renderer.current)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.successResultOf(renderer.when_rendered())
        renderer.invalidate()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1, "not stuck busy: read again")

    def test_run_now_renders_synchronously(self) -> None:
        """With run_now, invalidate() renders before it returns."""
        renderer = self.renderer_on(run_now)
        self.poller.set_generation(4)
        renderer.invalidate()
        self.assertIsNotNone(renderer.current)
        self.assertIn(generation(4), renderer.current.body(Variant(False, False)))
        self.successResultOf(renderer.when_rendered())
