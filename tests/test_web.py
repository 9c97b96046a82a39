"""The HTTP resources, driven on a task.Clock with fake Kafka edges: no socket, no broker.

Two clusters: "good" answers with one lagging group (whose name needs HTML escaping),
"bad" raises on every read. Requests go through getChildForRequest + render with a
DummyRequest; HEAD and 405 go through a real Site and HTTPChannel over a StringTransport,
since those are answered by twisted.web.server.Request rather than by our resources.
"""

from __future__ import annotations

import gzip
import json
import re
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test._util import _render
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from klag_collector import __version__
from klag_collector.http_channel import HttpLimits
from klag_collector.model import ClusterData, GroupInfo, Member
from klag_collector.render import OPENMETRICS_TYPE, TEXT_TYPE, MetricsRenderer, Variant
from fakes import FakeSource, one_partition_data, pollers_on_clock, run_now
from klag_collector.web import CHUNK, STREAM_OVER, HealthResource, make_root, wants_openmetrics

T0 = 1_700_000_000.0
EVIL = "<script>alert(1)</script>"

CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "partition"
{extra}
[exporter.performance]
kafka_timeout = "5s"
[[clusters]]
name = "good"
bootstrap_servers = "127.0.0.1:1"
[clusters.labels]
env = "test"
[[clusters]]
name = "bad"
bootstrap_servers = "127.0.0.1:2"
"""


def good_data() -> ClusterData:
    """One group (named like an HTML tag) 5 behind on t/0, with a consumer assigned."""
    member = Member(consumer_id="c-1", client_id="app", host="10.0.0.1")
    return one_partition_data(
        GroupInfo(EVIL, "Stable", members=1, assignments={("t", 0): member}), committed=5)


class WebTestCase(SynchronousTestCase):
    """Builds the two pollers, the renderer and the root on one Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.good_source = FakeSource(good_data(), {("t", 0, 5): int((T0 - 42) * 1000)})
        self.bad_source = FakeSource()
        self.bad_source.error = ConnectionError("broker down")
        self.build()

    def build(self, extra: str = "") -> None:
        """(Re)build everything from CONFIG with `extra` lines in [exporter]."""
        cfg, self.pollers = pollers_on_clock(
            CONFIG.format(extra=extra), {"good": self.good_source, "bad": self.bad_source},
            self.clock, on_change=lambda: self.renderer.invalidate(),
        )
        self.good, self.bad = self.pollers
        self.renderer = MetricsRenderer(self.pollers, cfg.exporter.granularity, self.clock, run_now)
        self.root = make_root(self.renderer, self.pollers, cfg.exporter.ready_requires, self.clock)

    def start(self) -> None:
        for p in self.pollers:
            p.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        """Stop both pollers and check they left nothing on the clock."""
        for p in self.pollers:
            self.successResultOf(p.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def request(
        self, path: bytes, headers: Optional[Dict[bytes, bytes]] = None, method: bytes = b"GET"
    ) -> DummyRequest:
        """Resolve `path` from the root as twisted.web does, and render the resource found."""
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.method = method
        for name, value in (headers or {}).items():
            request.requestHeaders.setRawHeaders(name, [value])
        resource = getChildForRequest(self.root, request)
        self.successResultOf(_render(resource, request))
        return request


def body(request: DummyRequest) -> bytes:
    return b"".join(request.written)


def header(request: DummyRequest, name: bytes) -> Optional[bytes]:
    values = request.responseHeaders.getRawHeaders(name)
    return None if values is None else values[-1]


def code(request: DummyRequest) -> int:
    # DummyRequest leaves responseCode None unless a resource sets one; Request means 200.
    return 200 if request.responseCode is None else request.responseCode


@contextmanager
def logged() -> Iterator[List[dict]]:
    """The Twisted log events emitted inside the block."""
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def over_http(root: object, raw: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """Send one raw HTTP/1.0 request to a real Site; return status, headers and body."""
    from klag_collector.service import QuietSite

    site = QuietSite(root, HttpLimits(64, 5.0), timeout=None, reactor=task.Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    channel.connectionLost(Failure(ConnectionDone()))
    head, _, payload = transport.value().partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, payload


class MetricsTests(WebTestCase):
    def test_before_the_first_render_metrics_answers_503(self) -> None:
        """Until the first render there are no bytes to serve, so /metrics says 503."""
        request = self.request(b"/metrics")
        self.assertEqual(code(request), 503)
        self.assertEqual(body(request), b"metrics are not rendered yet\n")

    def test_plain_text_is_the_cached_004_render(self) -> None:
        """Without Accept headers /metrics serves the cached text bytes as 0.0.4 text."""
        self.start()
        request = self.request(b"/metrics")
        self.assertEqual(code(request), 200)
        self.assertEqual(header(request, b"content-type"), b"text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(header(request, b"content-type").decode(), TEXT_TYPE)
        self.assertIsNone(header(request, b"content-encoding"))
        self.assertIs(body(request), self.renderer.current.body(Variant(False, False)))
        text = body(request).decode()
        self.assertIn('kafka_lag_exporter_up{cluster_name="good",env="test"} 1.0\n', text)
        self.assertIn('kafka_lag_exporter_up{cluster_name="bad"} 0.0\n', text)
        self.assertIn(
            'kafka_consumergroup_group_sum_lag{cluster_name="good",env="test",'
            'group="<script>alert(1)</script>"} 5.0\n',
            text,
        )

    def test_gzip_when_the_scraper_accepts_it(self) -> None:
        """Accept-Encoding: gzip gets the pre-gzipped bytes, which unzip to the plain text."""
        self.start()
        request = self.request(b"/metrics", {b"accept-encoding": b"gzip, deflate"})
        self.assertEqual(code(request), 200)
        self.assertEqual(header(request, b"content-encoding"), b"gzip")
        self.assertEqual(header(request, b"content-type").decode(), TEXT_TYPE)
        self.assertEqual(gzip.decompress(body(request)), self.renderer.current.body(Variant(False, False)))
        self.assertEqual(header(request, b"vary"), b"Accept, Accept-Encoding")

    def test_openmetrics_when_the_scraper_asks_for_it(self) -> None:
        """Accept: application/openmetrics-text gets OpenMetrics, ending in # EOF."""
        accept = b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        self.start()
        request = self.request(b"/metrics", {b"accept": accept})
        self.assertEqual(header(request, b"content-type").decode(), OPENMETRICS_TYPE)
        self.assertTrue(OPENMETRICS_TYPE.startswith("application/openmetrics-text"))
        self.assertTrue(body(request).endswith(b"# EOF\n"))
        self.assertEqual(body(request), self.renderer.current.body(Variant(True, False)))
        self.assertIn(b'kafka_lag_exporter_cycle_failures_total{cluster_name="bad"} 1.0\n', body(request))

    def test_openmetrics_gzipped(self) -> None:
        """Both headers together give gzipped OpenMetrics."""
        self.start()
        request = self.request(
            b"/metrics",
            {b"accept": b"application/openmetrics-text", b"accept-encoding": b"gzip"},
        )
        self.assertEqual(header(request, b"content-encoding"), b"gzip")
        self.assertEqual(header(request, b"content-type").decode(), OPENMETRICS_TYPE)
        self.assertTrue(gzip.decompress(body(request)).endswith(b"# EOF\n"))

    def test_a_scrape_calls_no_kafka_and_renders_nothing(self) -> None:
        """Scrapes serve the same cached object and never read from a source."""
        self.start()
        reads = (len(self.good_source.reads), len(self.bad_source.reads))
        first = body(self.request(b"/metrics"))
        second = body(self.request(b"/metrics"))
        self.assertIs(first, second)
        self.assertEqual((len(self.good_source.reads), len(self.bad_source.reads)), reads)

    def test_a_new_cycle_shows_up_in_the_next_scrape(self) -> None:
        """After a cycle with new data, /metrics serves the new figures."""
        self.start()
        before = body(self.request(b"/metrics"))
        self.good_source.data = ClusterData(
            groups={EVIL: GroupInfo(EVIL, "Stable")},
            committed={EVIL: {("t", 0): 10}},
            earliest={("t", 0): 0},
            latest={("t", 0): 10},
        )
        self.clock.advance(10)
        after = body(self.request(b"/metrics")).decode()
        self.assertNotEqual(after.encode(), before)
        self.assertIn(
            'kafka_consumergroup_group_sum_lag{cluster_name="good",env="test",'
            'group="<script>alert(1)</script>"} 0.0\n',
            after,
        )

    def test_head_metrics_over_http_sends_headers_only(self) -> None:
        """HEAD /metrics answers 200 with GET's headers and length but no body."""
        self.start()
        status, headers, payload = over_http(self.root, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], TEXT_TYPE)
        self.assertEqual(int(headers["content-length"]), len(self.renderer.current.body(Variant(False, False))))
        self.assertEqual(payload, b"")

    def test_get_metrics_over_http(self) -> None:
        """A real GET with gzip gets the gzipped bytes and the matching headers."""
        self.start()
        status, headers, payload = over_http(
            self.root, b"GET /metrics HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-encoding"], "gzip")
        self.assertEqual(payload, self.renderer.current.body(Variant(False, True)))

    def test_post_on_metrics_is_405(self) -> None:
        """A non-GET method on a known path is 405, naming GET and HEAD as allowed."""
        self.start()
        status, headers, _ = over_http(self.root, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(status, 405)
        self.assertEqual(set(re.split(r",\s*", headers["allow"])), {"GET", "HEAD"})

    def test_verbs_twisted_does_not_know_are_405_too(self) -> None:
        """PUT and DELETE on a known path are 405 (twisted.web alone would say 501)."""
        for raw in (
            b"PUT /ready HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            b"DELETE /health HTTP/1.0\r\n\r\n",
            b"PATCH / HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        ):
            with self.subTest(raw=raw):
                status, headers, _ = over_http(self.root, raw)
                self.assertEqual(status, 405)
                self.assertEqual(headers["allow"], "GET, HEAD")

    def test_head_on_every_leaf_is_200(self) -> None:
        """HEAD works on /, /health and /ready as well, without a body."""
        self.start()
        for path in (b"/", b"/health", b"/ready"):
            with self.subTest(path=path):
                status, _, payload = over_http(self.root, b"HEAD " + path + b" HTTP/1.0\r\n\r\n")
                self.assertEqual((status, payload), (200, b""))


# Accept headers a stranger may send; prometheus_client's negotiation raises on the first two.
MALFORMED_ACCEPTS = (
    b"text/plain; version=zz",
    b"application/openmetrics-text; version=zz",
    b"application/openmetrics-text; version=1.zz.0",
    b"application/openmetrics-text; version=zz, application/openmetrics-text",
    b"garbage",
    b";;;,,,;",
    b"\xff\xfe/\x00",
)


class NegotiationTests(WebTestCase):
    def test_a_malformed_accept_gets_the_text_format(self) -> None:
        """Every malformed Accept is answered 200 with the 0.0.4 text, never a 500."""
        self.start()
        for accept in MALFORMED_ACCEPTS:
            with self.subTest(accept=accept):
                request = self.request(b"/metrics", {b"accept": accept})
                self.assertEqual(code(request), 200)
                self.assertEqual(header(request, b"content-type").decode(), TEXT_TYPE)
                self.assertEqual(body(request), self.renderer.current.body(Variant(False, False)))

    def test_a_malformed_accept_over_http_logs_nothing(self) -> None:
        """Through a real Site: 200 and the text bytes, and no log event (no traceback)."""
        self.start()
        for accept in MALFORMED_ACCEPTS[:2]:
            with self.subTest(accept=accept), logged() as events:
                status, headers, payload = over_http(
                    self.root, b"GET /metrics HTTP/1.0\r\nAccept: " + accept + b"\r\n\r\n")
                self.assertEqual((status, headers["content-type"]), (200, TEXT_TYPE))
                self.assertEqual(payload, self.renderer.current.body(Variant(False, False)))
                self.assertEqual(events, [])

    def test_wants_openmetrics_on_well_formed_headers(self) -> None:
        """Well-formed headers are negotiated as prometheus_client does."""
        cases = {
            "": False,
            "application/openmetrics-text": True,
            "application/openmetrics-text; version=1.0.0": True,
            "application/openmetrics-text;version=0.0.1": False,
            "text/plain;version=0.0.4": False,
            "text/plain;version=1.0.0,application/openmetrics-text": False,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5": True,
        }
        self.assertEqual({accept: wants_openmetrics(accept) for accept in cases}, cases)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_wants_openmetrics_never_raises(accept: str) -> None:
    """Any Accept text at all is an answer, True or False."""
    assert wants_openmetrics(accept) in (True, False)


class HeadTests(WebTestCase):
    def test_head_logs_nothing_and_gives_get_s_length(self) -> None:
        """HEAD on every leaf, before and after the first render, logs no line and gives the
        status and Content-Length that GET gets, without a body."""
        for started in (False, True):
            if started:
                self.start()
            for path in (b"/", b"/metrics", b"/health", b"/ready"):
                with self.subTest(path=path, started=started), logged() as events:
                    status, headers, payload = over_http(
                        self.root, b"HEAD " + path + b" HTTP/1.0\r\n\r\n")
                    self.assertEqual(events, [])
                get, _, get_payload = over_http(self.root, b"GET " + path + b" HTTP/1.0\r\n\r\n")
                self.assertEqual((status, payload), (get, b""))
                self.assertEqual(int(headers["content-length"]), len(get_payload))
                self.assertGreater(len(get_payload), 0)

    def test_head_on_an_unknown_path_is_a_quiet_404(self) -> None:
        """HEAD on a path not served is 404 without a body or a log line."""
        for path in (b"/nope", b"/metrics/x"):
            with self.subTest(path=path), logged() as events:
                status, _, payload = over_http(self.root, b"HEAD " + path + b" HTTP/1.0\r\n\r\n")
                self.assertEqual((status, payload, events), (404, b"", []))


class PathTests(WebTestCase):
    def test_unknown_path_is_404(self) -> None:
        """A path the exporter does not serve is 404."""
        request = self.request(b"/nope")
        self.assertEqual(code(request), 404)

    def test_a_path_below_a_leaf_is_404(self) -> None:
        """/metrics/extra and /health/x are not /metrics or /health."""
        self.start()
        for path in (b"/metrics/extra", b"/health/x", b"/ready/a/b"):
            with self.subTest(path=path):
                self.assertEqual(code(self.request(path)), 404)

    def test_unknown_path_over_http_is_404(self) -> None:
        """Through a real Site an unknown path is 404 too, for GET and POST alike."""
        for raw in (b"GET /favicon.ico HTTP/1.0\r\n\r\n", b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assertEqual(over_http(self.root, raw)[0], 404)


class HealthTests(WebTestCase):
    def test_health_is_ok_while_every_cluster_fails(self) -> None:
        """/health is 200 OK even when no cluster can be read: Kafka is not liveness."""
        self.good_source.error = ConnectionError("also down")
        self.start()
        self.assertEqual([p.snapshot for p in self.pollers], [None, None])
        request = self.request(b"/health")
        self.assertEqual(code(request), 200)
        self.assertEqual(body(request), b"OK\n")
        self.assertEqual(header(request, b"content-type"), b"text/plain; charset=utf-8")


class ReadyTests(WebTestCase):
    def ready(self) -> Tuple[int, dict]:
        request = self.request(b"/ready")
        self.assertEqual(header(request, b"content-type"), b"application/json")
        return code(request), json.loads(body(request))

    def test_before_any_cycle_every_cluster_is_starting(self) -> None:
        """Before the first cycle nothing is fresh: 503 and state "starting"."""
        status, doc = self.ready()
        self.assertEqual(status, 503)
        self.assertEqual(doc["status"], "not_ready")
        self.assertEqual(
            doc["clusters"]["good"],
            {
                "state": "starting",
                "last_success": None,
                "consecutive_failures": 0,
                "last_error": "",
                "next_attempt_in": None,
            },
        )

    def test_one_fresh_cluster_makes_it_ready(self) -> None:
        """With the default ready_requires one fresh cluster is enough; each state is shown."""
        self.start()
        status, doc = self.ready()
        self.assertEqual(status, 200)
        self.assertEqual(
            doc,
            {
                "status": "ready",
                "clusters": {
                    "good": {
                        "state": "ok",
                        "last_success": T0,
                        "consecutive_failures": 0,
                        "last_error": "",
                        "next_attempt_in": 10.0,
                    },
                    "bad": {
                        "state": "failing",
                        "last_success": None,
                        "consecutive_failures": 1,
                        "last_error": "ConnectionError: broker down",
                        "next_attempt_in": 1.0,
                    },
                },
            },
        )

    def test_stale_data_is_not_ready(self) -> None:
        """When the only fresh cluster goes stale, /ready says "stale" and 503."""
        self.start()
        self.good_source.error = TimeoutError("no answer")
        # One second at a time, so that every retry is scheduled from its own moment.
        self.clock.pump([1.0] * 31)
        status, doc = self.ready()
        self.assertEqual(status, 503)
        good = doc["clusters"]["good"]
        # Ticks at +10, retries at +11, +13, +17, +25; the next one, capped at the poll
        # interval, is due at +35.
        self.assertEqual(
            good,
            {
                "state": "stale",
                "last_success": T0,
                "consecutive_failures": 5,
                "last_error": "TimeoutError: no answer",
                "next_attempt_in": 4.0,
            },
        )
        self.assertEqual(doc["clusters"]["bad"]["state"], "failing")

    def test_recovery_makes_it_ready_again(self) -> None:
        """A stale cluster whose next cycle succeeds is ok again, and /ready is 200."""
        self.start()
        self.good_source.error = TimeoutError("no answer")
        self.clock.pump([1.0] * 31)
        self.good_source.error = None
        self.clock.pump([1.0] * 10)  # the retry at +35, then the tick at +40
        status, doc = self.ready()
        self.assertEqual(status, 200)
        self.assertEqual(doc["clusters"]["good"]["state"], "ok")
        self.assertEqual(doc["clusters"]["good"]["last_success"], T0 + 40)

    def test_ready_requires_all_needs_every_cluster(self) -> None:
        """With ready_requires = "all" one failing cluster makes it 503 until it recovers."""
        self.build('ready_requires = "all"')
        self.start()
        status, doc = self.ready()
        self.assertEqual(status, 503)
        self.assertEqual(doc["status"], "not_ready")
        self.assertEqual(doc["clusters"]["good"]["state"], "ok")
        self.bad_source.error = None
        self.clock.advance(1)  # the first backoff retry
        status, doc = self.ready()
        self.assertEqual(status, 200)
        self.assertEqual({c["state"] for c in doc["clusters"].values()}, {"ok"})


class StatusPageTests(WebTestCase):
    def page(self) -> str:
        request = self.request(b"/")
        self.assertEqual(code(request), 200)
        self.assertEqual(header(request, b"content-type"), b"text/html; charset=utf-8")
        return body(request).decode()

    def test_before_the_first_render_the_page_answers_503(self) -> None:
        """The page is made by the render pass: until the first one, / says 503 as /metrics does."""
        request = self.request(b"/")
        self.assertEqual(code(request), 503)
        self.assertEqual(header(request, b"content-type"), b"text/plain; charset=utf-8")
        self.assertEqual(body(request), b"the status page is not rendered yet\n")

    def test_the_page_is_the_bytes_of_the_last_render(self) -> None:
        """A request serves the page the last render pass made, and builds nothing itself."""
        self.start()
        first = body(self.request(b"/"))
        self.assertIs(first, self.renderer.current.status_page)
        self.assertIs(body(self.request(b"/")), first)

    def test_page_shows_version_and_cluster_states(self) -> None:
        """The page names the version and each cluster with its state and last error."""
        self.start()
        page = self.page()
        self.assertIn(f"<h1>klag-collector {__version__}</h1>", page)
        self.assertIn("<tr><td>good</td><td>ok</td><td></td></tr>", page)
        self.assertIn("<tr><td>bad</td><td>failing</td><td>ConnectionError: broker down</td></tr>", page)
        # Relative, so that the page works when a host daemon mounts it under a sub-path.
        for link in ("metrics", "health", "ready"):
            self.assertIn(f'<a href="{link}">{link}</a>', page)

    def test_group_names_are_html_escaped(self) -> None:
        """A group named like a script tag is shown as text, never as markup."""
        self.start()
        page = self.page()
        self.assertNotIn(EVIL, page)
        self.assertIn(
            "<tr><td>good</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>5</td><td>42.0</td></tr>",
            page,
        )

    def test_unknown_time_lag_is_a_dash_not_zero(self) -> None:
        """A lagging group whose record age is unknown shows "-" seconds, never 0.0."""
        self.good_source.timestamps.clear()
        self.start()
        page = self.page()
        self.assertIn(
            "<tr><td>good</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>5</td><td>-</td></tr>",
            page,
        )

    def test_most_lagging_groups_come_first_and_stale_ones_leave(self) -> None:
        """Groups are ordered by time lag; a stale cluster's groups are not listed."""
        data = good_data()
        self.good_source.data = ClusterData(
            groups={**data.groups, "slow": GroupInfo("slow", "Stable"), "fast": GroupInfo("fast", "Empty")},
            committed={**data.committed, "slow": {("t", 0): 2}, "fast": {("t", 0): 10}},
            earliest=data.earliest,
            latest=data.latest,
        )
        self.good_source.timestamps[("t", 0, 2)] = int((T0 - 600) * 1000)
        self.start()
        groups: List[str] = re.findall(r"<tr><td>good</td><td>([^<]*)</td><td>\d+</td>", self.page())
        self.assertEqual(groups, ["slow", "&lt;script&gt;alert(1)&lt;/script&gt;", "fast"])
        self.good_source.error = TimeoutError("no answer")
        self.clock.pump([1.0] * 31)
        page = self.page()
        self.assertIn("<tr><td>good</td><td>stale</td>", page)
        self.assertEqual(re.findall(r"<tr><td>good</td><td>[^<]*</td><td>\d+</td>", page), [])


# -- large bodies ----------------------------------------------------------------------------

BIG = bytes(range(256)) * 4096 * 2  # 2 MiB: above STREAM_OVER


class Big(HealthResource):
    def render_GET(self, request: Request) -> bytes:
        return BIG


class SlowWire(StringTransport):
    """A transport that takes ROOM bytes, then pauses its producer until drain()."""

    ROOM = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.unread = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.unread += len(data)
        if self.unread > self.ROOM and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.unread = 0
        self.producer.resumeProducing()


class StreamingTests(SynchronousTestCase):
    def connect(self) -> Tuple[object, SlowWire]:
        from klag_collector.service import QuietSite

        site = QuietSite(Big(), HttpLimits(64, 5.0), timeout=None, reactor=task.Clock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        wire = SlowWire()
        channel.makeConnection(wire)
        return channel, wire

    def test_a_large_body_goes_out_as_the_client_takes_it(self) -> None:
        """Over STREAM_OVER a body is written CHUNK by CHUNK while the transport has room, with
        its Content-Length; then the connection serves its next request."""
        self.assertGreater(len(BIG), STREAM_OVER)
        channel, wire = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertLess(len(wire.value()), 3 * CHUNK)
        self.assertTrue(channel.streaming)
        drains = 0
        while channel.streaming and drains < 100:
            wire.drain()
            drains += 1
        self.assertGreaterEqual(drains, len(BIG) // (2 * CHUNK) - 1)
        head, _, payload = wire.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: %d\r\n" % len(BIG), head)
        self.assertEqual(payload, BIG)
        wire.clear()
        channel.dataReceived(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, payload = wire.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nContent-Length: %d\r\n" % len(BIG), head)
        self.assertEqual(payload, b"")

    def test_a_lost_connection_stops_the_body(self) -> None:
        """Once the connection is lost nothing more is written, however often it is resumed."""
        channel, wire = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sent = wire.value()
        channel.stopProducing()  # what the transport does as it loses the connection
        channel.connectionLost(Failure(ConnectionDone()))
        wire.drain()
        self.assertEqual(wire.value(), sent)
        self.assertLess(len(sent), 3 * CHUNK)
