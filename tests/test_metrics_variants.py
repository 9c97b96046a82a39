"""Which /metrics bodies a render pass makes: the ones asked for, and others on first ask,
off the reactor."""

from __future__ import annotations

import gzip
from typing import Dict, Optional

from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from klag_collector.render import FIRST_VARIANTS, MetricsRenderer, Variant
from klag_collector.web import make_root
from fakes import FakeSource, HeldRunner, one_partition_data, pollers_on_clock, run_now
from klag_collector.model import GroupInfo

T0 = 1_700_000_000.0
CONFIG = """
[exporter]
poll_interval = "10s"
[[clusters]]
name = "c"
bootstrap_servers = "127.0.0.1:1"
"""
OPENMETRICS = b"application/openmetrics-text;version=1.0.0"


class VariantTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        source = FakeSource(one_partition_data(GroupInfo("g", "Stable"), committed=4),
                            {("t", 0, 4): int((T0 - 10) * 1000)})
        cfg, self.pollers = pollers_on_clock(CONFIG, {"c": source}, self.clock,
                                             on_change=lambda: self.renderer.invalidate())
        self.runner = HeldRunner()
        self.renderer = MetricsRenderer(self.pollers, cfg.exporter.granularity, self.clock,
                                        self.runner)
        self.root = make_root(self.renderer, self.pollers, cfg.exporter.ready_requires, self.clock)
        for poller in self.pollers:
            poller.startService()
        self.addCleanup(lambda: [self.successResultOf(p.stopService()) for p in self.pollers])
        self.release_all()

    def release_all(self) -> None:
        while self.runner.pending:
            self.runner.release()

    def get(self, headers: Dict[bytes, bytes], method: bytes = b"GET") -> DummyRequest:
        request = DummyRequest([b"metrics"])
        request.method = method
        for name, value in headers.items():
            request.requestHeaders.setRawHeaders(name, [value])
        self.answer: Optional[object] = getChildForRequest(self.root, request).render(request)
        return request

    def test_a_pass_makes_only_what_prometheus_asks_for_first(self) -> None:
        rendered = self.renderer.current
        assert rendered is not None
        self.assertEqual(FIRST_VARIANTS, {Variant(openmetrics=True, gzipped=True)})
        self.assertIsNotNone(rendered.ready(Variant(True, True)))
        for other in (Variant(False, False), Variant(False, True), Variant(True, False)):
            self.assertIsNone(rendered.ready(other))

    def test_another_variant_is_made_off_the_reactor_then_kept(self) -> None:
        """The first text scrape waits for a worker to make the body; the second is served
        from memory; the next pass makes it beforehand."""
        request = self.get({})
        self.assertEqual(self.answer, NOT_DONE_YET)
        self.assertEqual(request.written, [])
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.release()
        self.assertEqual(request.finished, 1)
        text = b"".join(request.written)
        self.assertIn(b'kafka_consumergroup_group_sum_lag{cluster_name="c",group="g"} 6.0\n', text)
        again = self.get({})
        self.assertEqual(self.answer, text)
        self.assertEqual(self.runner.pending, [])
        self.renderer.invalidate()
        self.release_all()
        rendered = self.renderer.current
        assert rendered is not None
        # The pass made what the last one was asked for: the text body only.
        self.assertIsNotNone(rendered.ready(Variant(False, False)))
        self.assertIsNone(rendered.ready(Variant(True, True)))
        self.assertEqual(again.written, [])

    def test_a_pass_nobody_scraped_is_followed_by_one_making_the_same(self) -> None:
        """Polls faster than scrapes: a pass without a scrape keeps the variants made."""
        for _ in range(3):
            self.renderer.invalidate()
            self.release_all()
        rendered = self.renderer.current
        assert rendered is not None
        self.assertEqual(rendered.made, {Variant(True, True)})

    def test_head_of_a_variant_not_made_yet_has_its_length_and_no_body(self) -> None:
        request = self.get({b"accept": OPENMETRICS}, method=b"HEAD")
        self.runner.release()
        rendered = self.renderer.current
        assert rendered is not None
        length = len(rendered.body(Variant(True, False)))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-length"),
                         [b"%d" % length])
        self.assertEqual(request.written, [])
        self.assertEqual(request.finished, 1)

    def test_a_client_gone_before_the_body_is_made_gets_nothing(self) -> None:
        request = self.get({b"accept-encoding": b"gzip"})
        # What twisted.web does when the connection is lost before the answer.
        request.processingFailed(Failure(ConnectionDone("gone")))
        self.runner.release()
        self.assertEqual(request.written, [])

    def test_served_gzip_unzips_to_the_served_text(self) -> None:
        text_request = self.get({})
        self.runner.release()
        gz_request = self.get({b"accept-encoding": b"gzip"})
        self.runner.release()
        self.assertEqual(gzip.decompress(b"".join(gz_request.written)),
                         b"".join(text_request.written))


def test_run_now_answers_at_once() -> None:
    """With a synchronous runner (as in --once and most tests) the body comes back directly."""
    clock = task.Clock()
    clock.advance(T0)
    cfg, pollers = pollers_on_clock(CONFIG, {"c": FakeSource()}, clock)
    renderer = MetricsRenderer(pollers, cfg.exporter.granularity, clock, run_now)
    renderer.invalidate()
    assert renderer.current is not None
    assert renderer.current.ready(Variant(True, True)) is not None
