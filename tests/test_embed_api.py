"""The embedding API as a host program uses it: this module imports only public names.

From klag_collector it takes load_config, make_service and ListenFailed, and then uses
only what the README documents of the service: `root`, `metrics_resource()`,
`collector` and the IService methods. The cluster's Kafka edge is a source of the
test's own, through make_service's documented `source_factory`; the service runs on the
real reactor (a trial TestCase spins it) with its own thread pools.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, List, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from twisted.application.service import IService
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from klag_collector.config import load_config
from klag_collector.service import ListenFailed, make_service

CONFIG = """
[exporter]
poll_interval = "1h"
http_host = "127.0.0.1"
http_port = {port}
[[clusters]]
name = "c"
bootstrap_servers = "127.0.0.1:9"
"""

FAILED_ONCE = b'kafka_lag_exporter_cycle_failures_total{cluster_name="c"} 1.0\n'


class Unreachable:
    """A cluster's Kafka edge whose broker never answers; counts the reads."""

    def __init__(self) -> None:
        self.reads: List[float] = []

    def read(self, now: float) -> Any:
        self.reads.append(now)
        raise ConnectionError("broker down")

    def fetch_timestamps(self, items: Any) -> Any:
        raise AssertionError("no timestamps are fetched without a successful read")

    def reset(self) -> None:
        pass


def get(tree: IResource, path: bytes) -> Tuple[int, bytes]:
    """Status and body of GET `path` on a resource tree, resolved as twisted.web does."""
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    found = getChildForRequest(tree, request)
    body = found.render(request)
    if body == NOT_DONE_YET:
        # A /metrics body not made yet is made in a worker thread; written when it is.
        body = b"".join(request.written)
    return request.responseCode or 200, body


def taken_port() -> socket.socket:
    """A listening socket on 127.0.0.1, so that its port cannot be bound again."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class EmbeddingTests(TestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.config_path = Path(directory) / "klag.toml"
        self.source = Unreachable()

    def config(self, port: int = 8000) -> Any:
        self.config_path.write_text(CONFIG.format(port=port))
        return load_config(str(self.config_path))

    def embedded(self) -> Any:
        return make_service(self.config(), reactor, serve_http=False,
                            source_factory=lambda cluster, performance: self.source)

    def test_options_are_keywords_only(self) -> None:
        """Only config and reactor may be given by position."""
        with self.assertRaises(TypeError):
            make_service(self.config(), reactor, None)  # type: ignore[misc]
        svc = self.embedded()
        self.assertTrue(IService.providedBy(svc))
        self.assertTrue(IResource.providedBy(svc.root))
        self.assertEqual(self.source.reads, [], "nothing is read before the service starts")

    def test_each_metrics_resource_is_new_and_serves_the_same_bytes(self) -> None:
        """metrics_resource() makes a new resource per call; before the first render: 503."""
        svc = self.embedded()
        first, second = svc.metrics_resource(), svc.metrics_resource()
        self.assertIsNot(first, second)
        self.assertEqual(get(first, b""), (503, b"metrics are not rendered yet\n"))
        self.assertEqual(get(second, b""), (503, b"metrics are not rendered yet\n"))

    @defer.inlineCallbacks
    def test_a_host_serves_the_exporter_under_its_own_paths(self):  # type: ignore[no-untyped-def]
        """A host mounts metrics_resource() and root where it likes; its own registry collects
        the same bytes; stopService stops it all."""
        svc = self.embedded()
        host = Resource()
        host.putChild(b"lag", svc.metrics_resource())
        host.putChild(b"klag", svc.root)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(svc.collector)
        svc.startService()
        try:
            for _ in range(500):
                status, metrics = get(host, b"/lag")
                if FAILED_ONCE in metrics:
                    break
                yield task.deferLater(reactor, 0.01, lambda: None)
            self.assertEqual(status, 200)
            self.assertIn(FAILED_ONCE, metrics)
            self.assertIn(b'kafka_lag_exporter_up{cluster_name="c"} 0.0\n', metrics)
            self.assertEqual(metrics, generate_latest(registry))
            status, ready = get(host, b"/klag/ready")
            self.assertEqual(status, 503)
            cluster = json.loads(ready)["clusters"]["c"]
            self.assertEqual((cluster["state"], cluster["consecutive_failures"],
                              cluster["last_error"]), ("failing", 1, "ConnectionError: broker down"))
            status, page = get(host, b"/klag/")
            self.assertEqual(status, 200)
            self.assertIn(b"<tr><td>c</td><td>failing</td><td>ConnectionError: broker down</td></tr>",
                          page)
        finally:
            yield svc.stopService()
        self.assertFalse(svc.running)
        self.assertEqual(len(self.source.reads), 1)

    def test_a_taken_configured_port_raises_listen_failed(self) -> None:
        """The exporter's own site on the config's port: taken, startService raises ListenFailed."""
        with taken_port() as sock:
            port = sock.getsockname()[1]
            svc = make_service(self.config(port), reactor,
                               source_factory=lambda cluster, performance: self.source)
            with self.assertRaises(ListenFailed) as raised:
                svc.startService()
        self.assertEqual(str(raised.exception),
                         f"cannot listen on 127.0.0.1:{port}: address already in use")
        self.assertFalse(svc.running)
        self.assertEqual(self.source.reads, [])
