"""HTTP resources: /metrics, /health, /ready and a status page at /.

/metrics and / serve the bytes of the renderer's last pass; /ready reads the pollers'
state when asked. No Kafka call, no rendering, no gzip on the reactor thread.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Dict, Sequence, Union, cast

from prometheus_client import exposition
from twisted.internet.interfaces import IReactorTime
from twisted.web import pages, resource
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .config import ReadyRequires
from .http_channel import SEND_LIMIT
from .poller import ClusterPoller
from .shard_poller import ShardReport, shard_report
from .render import OPENMETRICS_TYPE, TEXT_TYPE, MetricsRenderer, Variant

log = Logger()



def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header asks for OpenMetrics; anything unparsable means text.

    prometheus_client's negotiation raises on a malformed version (``version=zz``); an
    Accept header is a stranger's input, so any failure there is the text format's answer.
    """
    try:
        _, chosen = exposition.choose_encoder(accept)
    except Exception:  # noqa: BLE001 - whatever it raises, the answer is text
        return False
    return chosen.startswith("application/openmetrics-text")


class _Leaf(resource.Resource):
    """A leaf that answers only its own path; GET (and so HEAD) only, else 405."""

    isLeaf = True

    def render(self, request: Request) -> Union[bytes, int]:
        if any(request.postpath or ()):
            return cast(int, pages.notFound().render(request))  # NOT_DONE_YET: it writes
        if request.method not in (b"GET", b"HEAD"):
            # twisted.web gives 405 only to the verbs it knows (GET, HEAD, POST) and 501 to
            # PUT, DELETE and the rest; any other verb on a known path is a 405 here.
            request.setHeader(b"allow", b"GET, HEAD")
            page = pages.errorPage(405, "Method Not Allowed", "Only GET and HEAD are allowed here.")
            return cast(int, page.render(request))
        body = super().render(request)
        if body == NOT_DONE_YET:  # the resource writes its answer later
            return cast(int, body)
        body = cast(bytes, body)
        if request.method == b"HEAD":
            # twisted.web logs a line for every HEAD answered with a body (which it drops):
            # the length GET would get, and no body.
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        if len(body) > STREAM_OVER:
            _BodyProducer(request, body).start()
            return NOT_DONE_YET
        return body


# Bodies larger than this are written a chunk at a time, as the connection takes them.
# Handed over whole, a body is copied into the transport's buffer in one go: an 8 MB one
# holds the reactor a few ms, and costs 8 MB more per connection still reading it. Up to it,
# a body is one send (http_channel.SEND_LIMIT): each send more is a reactor turn more and the
# GIL to get back from a rendering thread.
STREAM_OVER = SEND_LIMIT
# Streamed in 1 MiB chunks, 50 clients scraping back to back took /health p99 from 18 to
# 48 ms and the reactor's lag p99 from 4 to 12 ms (benchmarks/health_under_load.py).
CHUNK = 64 * 1024


@implementer(IPushProducer)
class _BodyProducer:
    """Writes a body CHUNK by CHUNK whenever the transport has room, then finishes.

    The request's Content-Length is the body's; a lost connection stops it for good.
    """

    def __init__(self, request: Request, body: bytes) -> None:
        self._request = request
        self._body = body
        self._offset = 0
        self._paused = False
        self._stopped = False

    def start(self) -> None:
        self._request.setHeader(b"content-length", b"%d" % len(self._body))
        self._request.registerProducer(self, True)
        self._write()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        self._stopped = True

    def _write(self) -> None:
        while not (self._paused or self._stopped) and self._offset < len(self._body):
            chunk = self._body[self._offset:self._offset + CHUNK]
            self._offset += len(chunk)
            self._request.write(chunk)
        if self._offset >= len(self._body) and not self._stopped:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()


def _not_rendered(request: Request, what: bytes) -> bytes:
    request.setResponseCode(503)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return what + b" not rendered yet\n"


class MetricsResource(_Leaf):
    """Serves the latest pre-rendered exposition in the format and encoding asked for."""

    def __init__(self, renderer: MetricsRenderer) -> None:
        super().__init__()
        self._renderer = renderer

    def render_GET(self, request: Request) -> Union[bytes, int]:
        rendered = self._renderer.current
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        if rendered is None:
            return _not_rendered(request, b"metrics are")
        openmetrics = wants_openmetrics((request.getHeader(b"accept") or b"").decode("latin-1"))
        encodings = (request.getHeader(b"accept-encoding") or b"").decode("latin-1")
        gzipped = exposition.gzip_accepted(encodings)
        content_type = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        request.setHeader(b"content-type", content_type.encode())
        if gzipped:
            request.setHeader(b"content-encoding", b"gzip")
        variant = Variant(openmetrics, gzipped)
        body = rendered.ready(variant)
        if body is not None:
            return body
        # The first ask for this variant since the last pass: it is made off the reactor.
        ended = request.notifyFinish()
        ended.addErrback(lambda _: None)  # the client went away: nothing to answer
        made = self._renderer.make(rendered, variant)
        made.addCallbacks(partial(_send, request, ended), partial(_send_failed, request, ended))
        return NOT_DONE_YET


def _send(request: Request, ended: "defer.Deferred[None]", body: bytes) -> None:
    if ended.called:  # the connection is gone
        return
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"%d" % len(body))
        request.finish()
    else:
        _BodyProducer(request, body).start()


def _send_failed(request: Request, ended: "defer.Deferred[None]", failure: Failure) -> None:
    log.failure("making a /metrics body failed", failure)
    if not ended.called:
        request.setResponseCode(500)
        request.setHeader(b"content-encoding", b"identity")
        request.write(b"metrics body could not be made\n")
        request.finish()


class HealthResource(_Leaf):
    """Liveness: answers while the reactor runs, whatever Kafka does."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK\n"


def cluster_status(poller: ClusterPoller, now: float) -> Dict[str, Any]:
    """One cluster's entry in /ready."""
    health = poller.health
    status: Dict[str, Any] = {
        "state": poller.state(now),
        "last_success": health.last_success,
        "consecutive_failures": health.consecutive_failures,
        "last_error": health.last_error,
        "next_attempt_in": poller.next_attempt_in(now),
    }
    report = shard_report(poller, now)
    if report is not None:
        status["sharding"] = sharding_status(report)
    return status


def sharding_status(report: ShardReport) -> Dict[str, Any]:
    """A sharded cluster's `sharding` entry in /ready: which shards this replica owns."""
    membership = report.membership
    return {
        "state": membership.state,
        "shards": membership.shards.count,
        "owned": sorted(membership.shards.owned),
        "collected": report.collected,
        "rebalances": membership.rebalances,
        "error": membership.error,
    }


def cluster_ready(poller: ClusterPoller, now: float) -> bool:
    """Fresh data; sharded, also a member that collected every shard it owns."""
    report = shard_report(poller, now)
    return poller.fresh_snapshot(now) is not None if report is None else report.collected


def is_ready(pollers: Sequence[ClusterPoller], requires: ReadyRequires, now: float) -> bool:
    """Ready when any (or, with ReadyRequires.ALL, every) cluster is ready (cluster_ready)."""
    ready = [cluster_ready(poller, now) for poller in pollers]
    return all(ready) if requires is ReadyRequires.ALL else any(ready)


class ReadyResource(_Leaf):
    """Readiness with each cluster's state; 200 when ready, else 503.

    Computed when asked: it is a few fields per cluster, and its states must be those of
    the moment even between renders.
    """

    def __init__(
        self, pollers: Sequence[ClusterPoller], requires: ReadyRequires, clock: IReactorTime
    ) -> None:
        super().__init__()
        self._pollers = pollers
        self._requires = requires
        self._clock = clock

    def render_GET(self, request: Request) -> bytes:
        now = self._clock.seconds()
        ready = is_ready(self._pollers, self._requires, now)
        answer = {
            "status": "ready" if ready else "not_ready",
            "clusters": {poller.name: cluster_status(poller, now) for poller in self._pollers},
        }
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer, indent=2).encode() + b"\n"


class StatusPage(_Leaf):
    """The status page, as the last render pass made it (see render.status_page)."""

    def __init__(self, renderer: MetricsRenderer) -> None:
        super().__init__()
        self._renderer = renderer

    def render_GET(self, request: Request) -> bytes:
        rendered = self._renderer.current
        if rendered is None:
            return _not_rendered(request, b"the status page is")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return rendered.status_page


class Root(resource.Resource):
    """The site root: the known paths, 404 for anything else."""

    def __init__(self, children: Dict[bytes, resource.Resource]) -> None:
        super().__init__()
        for path, child in children.items():
            self.putChild(path, child)

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        return pages.notFound()


def make_root(
    renderer: MetricsRenderer,
    pollers: Sequence[ClusterPoller],
    ready_requires: ReadyRequires,
    clock: IReactorTime,
) -> Root:
    """The exporter's whole HTTP tree."""
    return Root(
        {
            b"": StatusPage(renderer),
            b"metrics": MetricsResource(renderer),
            b"health": HealthResource(),
            b"ready": ReadyResource(pollers, ready_requires, clock),
        }
    )
