"""The exporter as one Twisted service: pollers, renderer and (optionally) the web site.

This is what `klag-collector`, `twistd -n klag` and embedding programs all run.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from prometheus_client.registry import CollectorRegistry
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IReactorCore, IStreamServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from .collector import LagCollector
from .config import Config
from .kafka_source import KafkaSource
from .poller import ClusterPoller
from .render import MetricsRenderer
from .web import make_root


# Seconds stopService waits for each thread pool's threads to finish.
STOP_JOIN_TIMEOUT = 10.0


def _maybe_global_reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


def http_endpoint(reactor: Any, host: str, port: int) -> IStreamServerEndpoint:
    """A TCP endpoint on the configured host; IPv6 literals get a TCP6 endpoint."""
    if ":" in host:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=host)
    return endpoints.TCP4ServerEndpoint(reactor, port, interface=host)


class QuietSite(Site):
    """A Site without per-request access lines: scrapes every few seconds would flood the log."""

    noisy = False

    def log(self, request: object) -> None:
        pass


class KlagService(service.MultiService):
    """Holds one poller per cluster, then the HTTP site, so HTTP stops first."""

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        endpoint: Optional[IStreamServerEndpoint] = None,
        serve_http: bool = True,
        source_factory: Callable[..., Any] = KafkaSource,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor = _maybe_global_reactor(reactor)
        exporter = config.exporter
        self._pools: List[ThreadPool] = []
        self.render_pool = self._pool("klag-render", 1)
        self.registry = CollectorRegistry(auto_describe=False)
        self.renderer = MetricsRenderer(self.registry, self._runner(self.render_pool))
        self.pollers: List[ClusterPoller] = []
        for cluster in config.clusters:
            # Room for every concurrent timestamp fetch, plus the cycle's own read.
            pool = self._pool(
                f"klag-{cluster.name}", exporter.timestamp_sampling.max_concurrent_fetches + 2
            )
            poller = ClusterPoller(
                cluster,
                exporter,
                source_factory(cluster, exporter.performance),
                reactor,
                self._runner(pool),
                on_change=self.renderer.invalidate,
            )
            poller.setServiceParent(self)
            self.pollers.append(poller)
        self.collector = LagCollector(self.pollers, exporter.granularity, reactor)
        self.registry.register(self.collector)
        self.root = make_root(self.renderer, self.pollers, exporter.ready_requires, reactor)
        if serve_http:
            if endpoint is None:
                endpoint = http_endpoint(reactor, exporter.http_host, exporter.http_port)
            self.http = StreamServerEndpointService(endpoint, QuietSite(self.root))
            self.http.setServiceParent(self)
        self.otel: Any = None
        if exporter.otel.enabled:
            # Imports no OpenTelemetry module until it starts (the `otel` extra is optional).
            from .otel import OtelExporterService

            self.otel = OtelExporterService(exporter.otel, self.collector, reactor)
            self.otel.setServiceParent(self)

    def _pool(self, name: str, size: int) -> ThreadPool:
        pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._pools.append(pool)
        return pool

    def _runner(self, pool: ThreadPool) -> Callable[..., "defer.Deferred[Any]"]:
        def run(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
            return deferToThreadPool(self.reactor, pool, f, *args)

        return run

    @defer.inlineCallbacks
    def collect_once(self):  # type: ignore[no-untyped-def]
        """One cycle of every cluster, without starting the loops or the site."""
        for pool in self._pools:
            pool.start()
        try:
            yield defer.gatherResults([p.poll_now() for p in self.pollers])
            for poller in self.pollers:
                poller.cancel_retry()
                yield self._run_default(poller.source.reset)
            yield self.renderer.when_rendered()
        finally:
            yield self._stop_pools()

    def _run_default(self, f: Callable[..., Any]) -> "defer.Deferred[Any]":
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f)

    def startService(self) -> None:
        for pool in self._pools:
            pool.start()
        super().startService()
        self.renderer.invalidate()

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        yield super().stopService()
        yield self.renderer.when_rendered()
        yield self._stop_pools()

    @defer.inlineCallbacks
    def _stop_pools(self):  # type: ignore[no-untyped-def]
        for pool in self._pools:
            # ThreadPool.stop joins its threads, and a thread stuck in a Kafka call may
            # never return: join off the reactor thread, and only for so long.
            joined = self._run_default(pool.stop)
            try:
                yield joined.addTimeout(STOP_JOIN_TIMEOUT, self.reactor)
            except defer.TimeoutError:
                pass


def make_service(config: Config, reactor: Optional[IReactorCore] = None, **kw: Any) -> KlagService:
    """The embedding API: a ready-to-start IService for a host Twisted application."""
    return KlagService(config, reactor, **kw)
