"""Rendering the exposition once per change, and the renderer's coalescing of bursts."""

from __future__ import annotations

import gzip
from typing import Iterable, Optional

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, exposition
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from twisted.trial.unittest import SynchronousTestCase

from klag_collector.render import MetricsRenderer, Rendered, render
from fakes import HeldRunner, run_now


class _Cycles(Collector):
    """A counter as the exporter makes them: plain samples, no _created series."""

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily("demo_cycles", "Demo cycles.", value=3)


def small_registry() -> CollectorRegistry:
    """A gauge with two labelled series and a counter."""
    registry = CollectorRegistry(auto_describe=False)
    lag = Gauge("demo_lag", "Lag of a demo group.", ["group"], registry=registry)
    lag.labels(group="g1").set(5)
    lag.labels(group="g2").set(0)
    registry.register(_Cycles())
    return registry


class Generation(Collector):
    """One gauge whose value the test sets; counts how often it is collected."""

    def __init__(self) -> None:
        self.value = 0.0
        self.collects = 0
        self.error: Optional[Exception] = None

    def collect(self) -> Iterable[Metric]:
        self.collects += 1
        if self.error is not None:
            raise self.error
        yield GaugeMetricFamily("demo_generation", "Which data the render saw.", value=self.value)


class RenderTests(SynchronousTestCase):
    def test_four_variants_are_rendered(self) -> None:
        """render() gives text and OpenMetrics, each plain and gzipped."""
        rendered = render(small_registry())
        self.assertIsInstance(rendered, Rendered)
        self.assertEqual(
            set(rendered.bodies), {(False, False), (False, True), (True, False), (True, True)}
        )

    def test_variants_are_consistent(self) -> None:
        """The gzipped bodies unzip to the plain ones; only OpenMetrics ends in # EOF."""
        rendered = render(small_registry())
        text, om = rendered.body(False, False), rendered.body(True, False)
        self.assertEqual(gzip.decompress(rendered.body(False, True)), text)
        self.assertEqual(gzip.decompress(rendered.body(True, True)), om)
        self.assertTrue(om.endswith(b"# EOF\n"))
        self.assertNotIn(b"# EOF", text)
        self.assertIn(b'demo_lag{group="g1"} 5.0\n', text)
        self.assertIn(b"demo_cycles_total 3.0\n", text)
        self.assertIn(b"# TYPE demo_cycles counter\n", om)

    def test_bodies_equal_prometheus_client_output(self) -> None:
        """The plain bodies are exactly what prometheus_client's generators produce."""
        registry = small_registry()
        rendered = render(registry)
        self.assertEqual(rendered.body(False, False), exposition.generate_latest(registry))
        self.assertEqual(rendered.body(True, False), openmetrics.generate_latest(registry))

    def test_gzip_is_reproducible(self) -> None:
        """Two renders of the same data give byte-identical gzip (no timestamp in the header)."""
        registry = small_registry()
        first, second = render(registry), render(registry)
        self.assertEqual(first.body(False, True), second.body(False, True))
        self.assertEqual(first.body(True, True), second.body(True, True))
        # Bytes 4..7 of a gzip member are its mtime.
        self.assertEqual(first.body(False, True)[4:8], b"\0\0\0\0")

    def test_an_empty_registry_renders(self) -> None:
        """No metrics: empty text, and OpenMetrics that is just # EOF."""
        rendered = render(CollectorRegistry(auto_describe=False))
        self.assertEqual(rendered.body(False, False), b"")
        self.assertEqual(rendered.body(True, False), b"# EOF\n")
        self.assertEqual(gzip.decompress(rendered.body(False, True)), b"")


class RendererTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.source = Generation()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.source)
        self.runner = HeldRunner()
        self.renderer = MetricsRenderer(self.registry, self.runner)

    def served(self) -> bytes:
        assert self.renderer.current is not None
        return self.renderer.current.body(False, False)

    def test_nothing_is_rendered_before_the_first_invalidate(self) -> None:
        """A new renderer has no bytes and is idle, so when_rendered fires at once."""
        self.assertIsNone(self.renderer.current)
        self.assertEqual(self.runner.pending, [])
        self.successResultOf(self.renderer.when_rendered())

    def test_invalidate_renders_in_the_runner(self) -> None:
        """invalidate() hands render() to the runner; current changes when it finishes."""
        self.source.value = 1
        self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1)
        self.assertIs(self.runner.pending[0][1], render)
        self.assertIsNone(self.renderer.current)
        self.assertEqual(self.source.collects, 0, "nothing renders on the calling thread")
        self.runner.release()
        self.assertIn(b"demo_generation 1.0\n", self.served())

    def test_invalidations_during_a_render_coalesce_into_one_more(self) -> None:
        """Five invalidations during a render give exactly one extra render, after it."""
        self.source.value = 1
        self.renderer.invalidate()
        for _ in range(5):
            self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1, "no second render while one runs")
        self.runner.release()
        self.assertEqual(len(self.runner.pending), 1, "exactly one re-render")
        self.source.value = 2
        self.runner.release()
        self.assertEqual(self.runner.pending, [])
        self.assertIn(b"demo_generation 2.0\n", self.served())
        # Each render collects once for both formats: two renders in all.
        self.assertEqual(self.source.collects, 2)

    def test_when_rendered_waits_for_the_last_render(self) -> None:
        """when_rendered() asked during a dirty render fires only after the re-render."""
        self.renderer.invalidate()
        self.renderer.invalidate()
        waiting = self.renderer.when_rendered()
        self.assertNoResult(waiting)
        self.runner.release()
        self.assertNoResult(waiting)
        self.source.value = 7
        self.runner.release()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIn(b"demo_generation 7.0\n", self.served())

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
        self.renderer.invalidate()
        self.assertEqual(len(self.runner.pending), 1)
        self.source.value = 3
        self.runner.release()
        self.assertIn(b"demo_generation 3.0\n", self.served())

    def test_a_failed_render_keeps_the_previous_bytes(self) -> None:
        """A render that raises is logged; the previous render is still served."""
        self.source.value = 1
        self.renderer.invalidate()
        self.runner.release()
        before = self.renderer.current
        self.source.error = ValueError("collector broke")
        self.renderer.invalidate()
        waiting = self.renderer.when_rendered()
        self.runner.release()
        self.assertIs(self.renderer.current, before)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # And it recovers with the next change.
        self.source.error = None
        self.source.value = 2
        self.renderer.invalidate()
        self.runner.release()
        self.assertIn(b"demo_generation 2.0\n", self.served())

    def test_a_failed_first_render_leaves_nothing_to_serve(self) -> None:
        """With no earlier render, a failure leaves current None (so /metrics stays 503)."""
        self.source.error = RuntimeError("no data yet")
        self.renderer.invalidate()
        self.runner.release()
        self.assertIsNone(self.renderer.current)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_dirty_failed_render_still_renders_again(self) -> None:
        """A change during a render that then fails is still rendered afterwards."""
        self.source.error = RuntimeError("transient")
        self.renderer.invalidate()
        self.renderer.invalidate()
        self.runner.release()
        self.assertEqual(len(self.runner.pending), 1)
        self.source.error = None
        self.source.value = 9
        self.runner.release()
        self.assertIn(b"demo_generation 9.0\n", self.served())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_run_now_renders_synchronously(self) -> None:
        """With run_now, invalidate() renders before it returns."""
        renderer = MetricsRenderer(self.registry, run_now)
        self.source.value = 4
        renderer.invalidate()
        self.assertIsNotNone(renderer.current)
        self.assertIn(b"demo_generation 4.0\n", renderer.current.body(False, False))
        self.successResultOf(renderer.when_rendered())


class _Families:
    """A collector yielding fixed families."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _awkward_families():
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    gauge = GaugeMetricFamily("klag_test_lag", 'Lag "quoted" with a \\ backslash\nand a newline.',
                              labels=["group", "topic"])
    gauge.add_metric(['g"1\\x\ny', "t"], 5)
    gauge.add_metric(["ünïcode-group", "t"], 1.5e-7)
    gauge.add_metric(["big", "t"], 1234567890123.0)
    gauge.add_metric(["inf", "t"], float("inf"))
    counter = CounterMetricFamily("klag_test_events", "Events.", labels=["reason"])
    counter.add_metric(["x"], 3)
    bare = GaugeMetricFamily("klag_test_up", "Up.", value=1)
    return [gauge, counter, bare]


def test_render_is_byte_identical_to_prometheus_client() -> None:
    """Our one-pass render writes exactly what both prometheus_client encoders write."""
    from prometheus_client.exposition import generate_latest as text_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    registry = _Families(_awkward_families())
    rendered = render(registry)
    assert rendered.body(False, False) == text_latest(registry)
    assert rendered.body(True, False) == om_latest(registry)


@given(st.lists(st.text(), min_size=1, max_size=5), st.floats(allow_nan=False))
def test_render_matches_prometheus_client_for_any_label_value(values, number) -> None:
    """Any label value and any float render as prometheus_client renders them."""
    from prometheus_client.exposition import generate_latest as text_latest
    from prometheus_client.metrics_core import GaugeMetricFamily
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    family = GaugeMetricFamily("klag_test_any", "Any.", labels=["group"])
    for value in values:
        family.add_metric([value], number)
    registry = _Families([family])
    rendered = render(registry)
    assert rendered.body(False, False) == text_latest(registry)
    assert rendered.body(True, False) == om_latest(registry)
